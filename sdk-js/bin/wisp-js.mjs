#!/usr/bin/env node
// wisp-js: build wisp routing components from JavaScript or TypeScript.
//
//   wisp-js types                      regenerate generated/ from the WIT package
//   wisp-js build route.ts -o out.wasm [--no-check] [--wit DIR]
//
// build: type-checks with tsc, wraps the module's hooks in an entry that
// exports all four of the world wisp:proxy/router@0.2.3 (route, and
// onReply, onFailure, onBranch when the module has them, else the SDK's
// defaults), turning the decisions they throw into the action, verdict or
// failure action each export returns, bundles with esbuild
// (the `wisp:proxy/*` imports stay external), and makes a component with
// componentize-js (StarlingMonkey), with wasi:http/fetch left out since
// wisp does not link them. Nothing is downloaded: AOT (weval) stays off.

import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { performance } from "node:perf_hooks";

const SDK_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const DEFAULT_WIT = resolve(SDK_ROOT, "..", "wit");
const GENERATED = join(SDK_ROOT, "generated");
const SDK_ENTRY = join(SDK_ROOT, "src", "index.ts");
const WORLD = "router";

function usage(code) {
  const out = code === 0 ? console.log : console.error;
  out(`usage:
  wisp-js build <route.ts|route.js> -o <out.wasm> [--no-check] [--wit <dir>]
  wisp-js types [--wit <dir>]`);
  process.exit(code);
}

function parseArgs(argv) {
  const opts = { command: argv[0], inputs: [], out: undefined, check: true, wit: DEFAULT_WIT };
  for (let i = 1; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "-o" || arg === "--out") opts.out = argv[++i];
    else if (arg === "--wit") opts.wit = resolve(argv[++i] ?? usage(2));
    else if (arg === "--no-check") opts.check = false;
    else if (arg === "-h" || arg === "--help") usage(0);
    else if (arg.startsWith("-")) {
      console.error(`wisp-js: unknown option ${arg}`);
      usage(2);
    } else opts.inputs.push(arg);
  }
  return opts;
}

function newestMtime(dir) {
  let newest = 0;
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    const st = statSync(path);
    newest = Math.max(newest, st.isDirectory() ? newestMtime(path) : st.mtimeMs);
  }
  return newest;
}

/** Generates the TypeScript declarations of the WIT package (jco guest-types). */
async function generateTypes(wit, { force = false } = {}) {
  const stamp = join(GENERATED, `${WORLD}.d.ts`);
  if (!force && existsSync(stamp) && statSync(stamp).mtimeMs >= newestMtime(wit)) return;
  rmSync(GENERATED, { recursive: true, force: true });
  mkdirSync(GENERATED, { recursive: true });
  const { execFileSync } = await import("node:child_process");
  const jcoDir = join(SDK_ROOT, "node_modules", "@bytecodealliance", "jco");
  const jcoBin = JSON.parse(readFileSync(join(jcoDir, "package.json"), "utf8")).bin;
  const jco = join(jcoDir, typeof jcoBin === "string" ? jcoBin : jcoBin.jco);
  execFileSync(process.execPath, [jco, "guest-types", wit, "--world-name", WORLD, "-o", GENERATED, "-q"], {
    stdio: ["ignore", "ignore", "inherit"],
  });
  if (!existsSync(stamp)) throw new Error(`type generation did not produce ${stamp}`);
}

/** Type-checks the routing module against the SDK and the generated WIT types. */
async function typeCheck(input) {
  const ts = (await import("typescript")).default;
  const options = {
    strict: true,
    noEmit: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.ESNext,
    moduleResolution: ts.ModuleResolutionKind.Bundler,
    allowJs: true,
    checkJs: false,
    skipLibCheck: true,
    lib: ["lib.es2022.d.ts", "lib.esnext.disposable.d.ts"],
    types: [],
    baseUrl: SDK_ROOT,
    paths: { "@wisp/sdk": [SDK_ENTRY] },
  };
  const program = ts.createProgram([input], options);
  const diagnostics = ts.getPreEmitDiagnostics(program);
  if (diagnostics.length > 0) {
    const host = {
      getCanonicalFileName: (f) => f,
      getCurrentDirectory: () => process.cwd(),
      getNewLine: () => "\n",
    };
    console.error(ts.formatDiagnosticsWithColorAndContext(diagnostics, host));
    throw new Error(`${diagnostics.length} type error(s); fix them or pass --no-check`);
  }
}

/** Bundles the routing module and the SDK into one ES module. */
async function bundle(input, outFile) {
  const esbuild = await import("esbuild");
  // The component must export all four hooks of the world; the ones the
  // module leaves out get the SDK's defaults (keep every reply, send the
  // best response upstream, leave branches as they are). The SDK's run*
  // functions catch the decisions the hooks throw (req.reply, req.relay,
  // exit...) and return them as the world's action types.
  const entry = `import * as user from ${JSON.stringify(input)};
import { runRoute, runOnReply, runOnFailure, runOnBranch } from "@wisp/sdk";
const hook = user["route"] ?? Reflect.get(user, "default");
if (typeof hook !== "function") {
  throw new Error("the routing module must export a route(req) function");
}
function optional(name) {
  const fn = Reflect.get(user, name);
  if (fn !== undefined && typeof fn !== "function") {
    throw new Error(\`the routing module's \${name} export must be a function\`);
  }
  return fn;
}
const onReplyHook = optional("onReply");
const onFailureHook = optional("onFailure");
const onBranchHook = optional("onBranch");
export function route(raw, info) {
  return runRoute(hook, raw, info);
}
export function onReply(req, res) {
  return runOnReply(onReplyHook, req, res);
}
export function onFailure(req, best) {
  return runOnFailure(onFailureHook, req, best);
}
export function onBranch(req, index) {
  runOnBranch(onBranchHook, req, index);
}
`;
  await esbuild.build({
    stdin: { contents: entry, resolveDir: dirname(input), sourcefile: "wisp-entry.js", loader: "js" },
    bundle: true,
    format: "esm",
    platform: "neutral",
    target: "es2022",
    outfile: outFile,
    external: ["wisp:*"],
    alias: { "@wisp/sdk": SDK_ENTRY },
    logLevel: "warning",
  });
}

async function build(opts) {
  if (opts.inputs.length !== 1 || !opts.out) usage(2);
  const input = resolve(opts.inputs[0]);
  const out = resolve(opts.out);
  if (!existsSync(input)) throw new Error(`${input} does not exist`);
  const t0 = performance.now();
  await generateTypes(opts.wit);
  if (opts.check && /\.(ts|mts|cts|tsx)$/.test(input)) await typeCheck(input);
  const t1 = performance.now();
  const work = mkdtempSync(join(tmpdir(), "wisp-js-"));
  try {
    const bundled = join(work, "route.js");
    await bundle(input, bundled);
    const t2 = performance.now();
    const { componentize } = await import("@bytecodealliance/componentize-js");
    const { component } = await componentize({
      sourcePath: bundled,
      witPath: opts.wit,
      worldName: WORLD,
      // wisp links WASI p2 (cli, io, clocks, random) but not wasi:http.
      disableFeatures: ["http", "fetch-event"],
      enableAot: false,
    });
    mkdirSync(dirname(out), { recursive: true });
    writeFileSync(out, component);
    const t3 = performance.now();
    const ms = (a, b) => `${Math.round(b - a)} ms`;
    console.error(
      `wisp-js: ${relative(process.cwd(), out) || out} (${(component.length / 1048576).toFixed(1)} MiB): ` +
        `types+check ${ms(t0, t1)}, bundle ${ms(t1, t2)}, componentize ${ms(t2, t3)}`,
    );
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  switch (opts.command) {
    case "build":
      return build(opts);
    case "types":
      return generateTypes(opts.wit, { force: true });
    case "-h":
    case "--help":
      return usage(0);
    default:
      return usage(2);
  }
}

main().catch((err) => {
  console.error(`wisp-js: ${err?.message ?? err}`);
  process.exit(1);
});
