/// <reference path="../generated/router.d.ts" />
/**
 * Write wisp routing components in JavaScript or TypeScript.
 *
 * A routing module exports a `route` function that receives a {@link Request},
 * and optionally `onReply`, `onFailure` and `onBranch`:
 *
 * ```ts
 * import { Request, Response, vars } from "@wisp/sdk";
 *
 * export function route(req: Request) {
 *   req.maxForwards();                          // 483 when exhausted
 *   if (req.isMethod("OPTIONS")) req.reply(200);
 *   req.relay();
 * }
 *
 * // Serial forking when the callee is busy.
 * export function onFailure(req: Request, best: Response) {
 *   if (best.status() === 486 && !vars.has("retried")) {
 *     vars.set("retried");
 *     req.relay("sip:voicemail@example.com");
 *   }
 * }
 * ```
 *
 * `wisp-js build route.ts -o route.wasm` makes a component of it for the
 * world `wisp:proxy/router@0.2.3`. A hook decides by calling one of the
 * decisions (`req.reply`, `req.relay`, `req.forward`, {@link exit}): they
 * never return, so a sub-route that decides stops its callers too, like
 * Kamailio's `exit`. A hook that returns without deciding drops the request
 * (`route`), keeps the response (`onReply`) or sends the best response
 * upstream (`onFailure`). A refused check ({@link WispError} of kind
 * `"refused"`) that escapes a hook becomes the reply it carries; any other
 * error is logged and answered 500 (`route`) or ignored (the other hooks).
 * A transaction runs every hook until one of its hooks calls {@link arm}
 * (`arm({ onFailure: true })` before `req.relay()`), then the armed ones.
 */

import type * as sip from "wisp:proxy/sip@0.2.3";
import * as rawProxy from "wisp:proxy/proxy@0.2.3";
import * as rawVars from "wisp:proxy/vars@0.2.3";
import * as rawConfig from "wisp:proxy/config@0.2.3";
import * as rawLog from "wisp:proxy/log@0.2.3";
import * as rawRegistrar from "wisp:proxy/registrar@0.2.3";
import * as rawAuth from "wisp:proxy/auth@0.2.3";
import * as rawKv from "wisp:proxy/kv@0.2.3";
import * as rawPermissions from "wisp:proxy/permissions@0.2.3";
import * as rawNat from "wisp:proxy/nat@0.2.3";
import * as rawAcc from "wisp:proxy/acc@0.2.3";
import * as rawRatelimit from "wisp:proxy/ratelimit@0.2.3";
import * as rawDispatcher from "wisp:proxy/dispatcher@0.2.3";

export type RawRequest = sip.Request;
export type RawResponse = sip.Response;
export type RawFields = sip.Fields;
export type Endpoint = sip.Endpoint;
export type Transport = sip.Transport;
export type Header = sip.Header;
export type UriParts = sip.UriParts;
/** An answer to a request: `{ code, reason?, headers }`. */
export type Reply = sip.Reply;
/** What `looseRoute` found: `"none"`, `"unverified"` or `"verified"`. */
export type RouteCheck = rawProxy.RouteCheck;
export type Located = rawRegistrar.Located;
/** `"start"`, `"stop"` or `"failed"`. */
export type AccEvent = rawAcc.Event;
/** The hooks {@link arm} arms: `{ onReply?, onFailure?, onBranch? }`; a hook left out is not armed. */
export type Hooks = rawProxy.Hooks;
/** The records {@link acc.account} asks of the host: `{ answered?, failed? }`. */
export type Accounted = rawAcc.Accounted;

/**
 * A request method: the RFC 3261 methods and extensions in capitals
 * ("INVITE", "ACK", ...), any other token as written.
 */
export type Method =
  | "INVITE"
  | "ACK"
  | "BYE"
  | "CANCEL"
  | "REGISTER"
  | "OPTIONS"
  | "INFO"
  | "UPDATE"
  | "PRACK"
  | "SUBSCRIBE"
  | "NOTIFY"
  | "PUBLISH"
  | "MESSAGE"
  | "REFER"
  | (string & {});

/** Headers for a reply: `[name, value]` pairs or `{ name, value }` records. */
export type Headers = ReadonlyArray<readonly [string, string] | Header>;

/** What the route hook receives about a request, read without host calls. */
export interface RequestInfo {
  method: Method;
  /** To carries a tag: the request belongs to a dialog (`has_totag()`). */
  inDialog: boolean;
  /** The Request-URI named this proxy on arrival (`uri == myself`). */
  uriIsMyself: boolean;
  /** Where the request came from (`$si`, `$sp`, `$proto`). */
  source: Endpoint;
  /** The source is in the `trusted` addresses of the configuration. */
  sourceTrusted: boolean;
}

/** Final-response timers of a relay, in milliseconds (`t_set_fr`). */
export interface Timeouts {
  /** An INVITE branch after a provisional (`fr_inv_timer`; default `FR_INV_TIMER_MS`, else 120000). */
  inviteMs?: number;
  /** Any other branch (`fr_timer`; default `FR_TIMER_MS`, else 30000). */
  finalMs?: number;
}

/** The kind of a {@link WispError}, as the WIT `error` variant names it. */
export type ErrorKind = sip.Error["tag"];

/** A host call did not do what it was asked (the WIT `sip.error`). */
export class WispError extends Error {
  /** `"invalid"`, `"not-allowed"`, `"unavailable"` or `"refused"`. */
  readonly kind: ErrorKind;
  /** What the host said; for `"refused"`, the code and reason of the reply. */
  readonly detail: string;
  /** For `"refused"`: the reply the request calls for (483, 401 challenge, 404...). */
  readonly reply: Reply | undefined;

  constructor(error: sip.Error) {
    const detail =
      error.tag === "refused" ? `${error.val.code} ${error.val.reason ?? ""}`.trimEnd() : error.val;
    super(`${describe(error.tag)}: ${detail}`);
    this.name = "WispError";
    this.kind = error.tag;
    this.detail = detail;
    this.reply = error.tag === "refused" ? error.val : undefined;
  }
}

function describe(kind: ErrorKind): string {
  switch (kind) {
    case "invalid":
      return "invalid argument";
    case "not-allowed":
      return "not allowed";
    case "unavailable":
      return "unavailable";
    case "refused":
      return "refused";
  }
}

function isHostError(value: unknown): value is sip.Error {
  if (value === null || typeof value !== "object" || !("tag" in value) || !("val" in value)) return false;
  const { tag, val } = value as { tag: unknown; val: unknown };
  if (tag === "refused") return val !== null && typeof val === "object" && "code" in val;
  return (tag === "invalid" || tag === "not-allowed" || tag === "unavailable") && typeof val === "string";
}

/** Runs a host call returning `result<_, error>`: an `err` becomes a WispError. */
function hostCall<T>(call: () => T): T {
  try {
    return call();
  } catch (thrown) {
    // componentize-js throws an `err` as an Error carrying it as `payload`.
    const value =
      thrown !== null && typeof thrown === "object" && "payload" in thrown
        ? (thrown as { payload: unknown }).payload
        : thrown;
    if (isHostError(value)) throw new WispError(value);
    throw thrown;
  }
}

function toHeaders(headers: Headers): Header[] {
  return headers.map((h) => (isPair(h) ? { name: h[0], value: h[1] } : { name: h.name, value: h.value }));
}

function isPair(h: readonly [string, string] | Header): h is readonly [string, string] {
  return Array.isArray(h);
}

const METHODS: Record<string, Method> = {
  invite: "INVITE",
  ack: "ACK",
  bye: "BYE",
  cancel: "CANCEL",
  register: "REGISTER",
  options: "OPTIONS",
  info: "INFO",
  update: "UPDATE",
  prack: "PRACK",
  subscribe: "SUBSCRIBE",
  notify: "NOTIFY",
  publish: "PUBLISH",
  message: "MESSAGE",
  refer: "REFER",
};

function methodName(method: sip.Method): Method {
  return method.tag === "other" ? method.val : (METHODS[method.tag] ?? method.tag.toUpperCase());
}

function toInfo(raw: sip.RequestInfo): RequestInfo {
  return {
    method: methodName(raw.method),
    inDialog: raw.inDialog,
    uriIsMyself: raw.uriIsMyself,
    source: raw.source,
    sourceTrusted: raw.sourceTrusted,
  };
}

/**
 * What a decision throws, to be caught by the SDK's hook wrapper: `action`
 * undefined is {@link exit}. Not an Error, so `catch (e) { if (e instanceof
 * Error) ... }` lets it through; a catch-all must rethrow it.
 */
class Decision {
  constructor(readonly action: sip.Action | undefined) {}
}

/**
 * Stops the hook here without a decision (Kamailio's `exit` after no
 * `t_relay`): `route` drops the request, `onReply` keeps the response,
 * `onFailure` sends the best response upstream.
 */
export function exit(): never {
  throw new Decision(undefined);
}

/** `[Symbol.dispose]` as the bindings name it (SpiderMonkey may lack Symbol.dispose). */
const DISPOSE: symbol = (Symbol as { dispose?: symbol }).dispose ?? Symbol.for("dispose");

/** The fields handles taken during the current hook call, released when it ends. */
const taken: RawFields[] = [];

function releaseFields(): void {
  for (const raw of taken.splice(0)) {
    const dispose = (raw as unknown as Record<symbol, (() => void) | undefined>)[DISPOSE];
    dispose?.call(raw);
  }
}

/**
 * The headers and body of one message, request or response (the WIT
 * `fields` resource). Names match case-insensitively, compact forms too
 * ("f" finds From). Valid for the hook call it was taken in.
 */
export class Fields {
  /** The raw resource, for calls the wrapper does not cover. */
  readonly raw: RawFields;

  constructor(raw: RawFields) {
    this.raw = raw;
  }

  /** The first value of a header (`$hdr(Name)`). */
  get(name: string): string | undefined {
    return this.raw.get(name);
  }

  /** Every value of a header in order, comma-separated lists split. */
  getAll(name: string): string[] {
    return this.raw.getAll(name);
  }

  /** Whether the message has a header of that name (`is_present_hf`). */
  has(name: string): boolean {
    return this.raw.has(name);
  }

  /** The names of all headers, in order. */
  names(): string[] {
    return this.raw.names();
  }

  /** Adds a header after the others (`append_hf`); throws WispError if refused. */
  append(name: string, value: string): void {
    hostCall(() => this.raw.append(name, value));
  }

  /** Replaces every header of that name with one holding `value`. */
  set(name: string, value: string): void {
    hostCall(() => this.raw.set(name, value));
  }

  /** Removes every header of that name (`remove_hf`); how many there were. */
  remove(name: string): number {
    return hostCall(() => this.raw.remove(name));
  }

  /** The body (`$rb`). */
  body(): Uint8Array {
    return this.raw.body();
  }

  /** The body as text (UTF-8). */
  text(): string {
    return new TextDecoder().decode(this.raw.body());
  }

  /**
   * Replaces the body, and Content-Type when `contentType` is given (an
   * empty body removes it). Content-Length is the host's.
   */
  setBody(body: Uint8Array | string, contentType?: string): void {
    const bytes = typeof body === "string" ? new TextEncoder().encode(body) : body;
    hostCall(() => this.raw.setBody(contentType, bytes));
  }
}

// The engine's WHATWG encoding API (StarlingMonkey has it; lib ES2022 does not declare it).
declare class TextDecoder {
  decode(input: Uint8Array): string;
}
declare class TextEncoder {
  encode(input: string): Uint8Array;
}

/** A message's fields, taken from the host once and released after the hook. */
function takeFields(raw: RawRequest | RawResponse): Fields {
  const fields = raw.fields();
  taken.push(fields);
  return new Fields(fields);
}

/**
 * The URI of From or To, as text and in parts, each asked of the host when
 * first read (the parts in one call, without the text parsed again).
 */
class Address {
  #uri: string | null = null;
  #parts: UriParts | undefined | null = null;
  readonly #readUri: () => string;
  readonly #readParts: () => UriParts | undefined;

  constructor(readUri: () => string, readParts: () => UriParts | undefined) {
    this.#readUri = readUri;
    this.#readParts = readParts;
  }

  get uri(): string {
    return (this.#uri ??= this.#readUri());
  }

  /** The URI's parts; undefined when the header cannot be parsed. */
  get parts(): UriParts | undefined {
    if (this.#parts === null) {
      this.#parts = this.#readParts();
    }
    return this.#parts;
  }
}

/**
 * The request being routed; in `onReply` and `onFailure`, the request as
 * relayed; in `onBranch`, that branch's copy. Valid during the hook call.
 */
export class Request {
  /** The raw resource, for calls the wrapper does not cover. */
  readonly raw: RawRequest;
  #info: RequestInfo | undefined;
  #method: Method | undefined;
  #fields: Fields | undefined;
  // From and To, asked of the host once per hook: the host owns both
  // headers, so they cannot change while the hook runs.
  #from: Address | undefined;
  #to: Address | undefined;

  constructor(raw: RawRequest, info?: sip.RequestInfo) {
    this.raw = raw;
    this.#info = info && toInfo(info);
  }

  /** What the route hook received: method, inDialog, uriIsMyself, source, sourceTrusted. */
  get info(): RequestInfo {
    return (this.#info ??= toInfo(this.raw.info()));
  }

  /** Its headers and body. */
  get fields(): Fields {
    return (this.#fields ??= takeFields(this.raw));
  }

  /** The method (`$rm`), e.g. "INVITE"; outside `route`, one host call instead of the whole info. */
  get method(): Method {
    return this.#info?.method ?? (this.#method ??= methodName(this.raw.method()));
  }

  /** Whether the method is one of `methods` (`is_method("INVITE|BYE")`). */
  isMethod(...methods: Method[]): boolean {
    return methods.includes(this.method);
  }

  /** The Request-URI (`$ru`). */
  uri(): string {
    return this.raw.uri();
  }

  /** The Request-URI's parts; undefined when it is not a SIP URI. */
  uriParts(): UriParts | undefined {
    return this.raw.uriParts();
  }

  /** The user part of the Request-URI (`$rU`). */
  uriUser(): string | undefined {
    return this.raw.uriParts()?.user;
  }

  /** The host part of the Request-URI (`$rd`); empty when it is not a SIP URI. */
  uriHost(): string {
    return this.raw.uriParts()?.host ?? "";
  }

  /** Replaces the Request-URI (`$ru = "..."`); throws WispError if invalid. */
  setUri(uri: string): void {
    hostCall(() => this.raw.setUri(uri));
  }

  get #fromAddress(): Address {
    return (this.#from ??= new Address(
      () => this.raw.fromUri(),
      () => this.raw.fromParts(),
    ));
  }

  get #toAddress(): Address {
    return (this.#to ??= new Address(
      () => this.raw.toUri(),
      () => this.raw.toParts(),
    ));
  }

  /** The From URI (`$fu`); empty when From cannot be parsed. */
  fromUri(): string {
    return this.#fromAddress.uri;
  }

  /** The user of the From URI (`$fU`). */
  fromUser(): string | undefined {
    return this.#fromAddress.parts?.user;
  }

  /** The host of the From URI (`$fd`); empty when From cannot be parsed. */
  fromHost(): string {
    return this.#fromAddress.parts?.host ?? "";
  }

  /** Whether the From URI names this proxy (`from_uri == myself`). */
  fromIsMyself(): boolean {
    return rawProxy.isMyself(this.#fromAddress.uri);
  }

  /** The To URI (`$tu`). */
  toUri(): string {
    return this.#toAddress.uri;
  }

  /** The user of the To URI (`$tU`). */
  toUser(): string | undefined {
    return this.#toAddress.parts?.user;
  }

  /** The host of the To URI (`$td`). */
  toHost(): string {
    return this.#toAddress.parts?.host ?? "";
  }

  /**
   * Checks and decrements Max-Forwards (`mf_process_maxfwd_header`),
   * adding it with `limit` when absent (default: `MAX_FORWARDS`, else 10).
   * Throws a refused WispError (483) when no hops are left.
   */
  maxForwards(limit?: number): void {
    hostCall(() => rawProxy.maxForwards(this.raw, limit));
  }

  /** Checks what a proxy must refuse (`sanity_check()`); throws a refused WispError (400, 420...). */
  sanityCheck(): void {
    hostCall(() => rawProxy.sanityCheck(this.raw));
  }

  /** Adds Record-Route so the dialog stays on this proxy (`record_route()`). */
  recordRoute(): void {
    hostCall(() => rawProxy.recordRoute(this.raw));
  }

  /**
   * Follows the Route set of an in-dialog request (`loose_route()`):
   * `"none"` (no Route), `"unverified"` (followed a Route we cannot vouch
   * for) or `"verified"` (one this proxy record-routed for this dialog).
   */
  looseRoute(): RouteCheck {
    return rawProxy.looseRoute(this.raw);
  }

  /** Adds a branch to the next relay (`append_branch(uri)`); throws WispError past the limits. */
  appendBranch(uri: string): void {
    hostCall(() => rawProxy.appendBranch(this.raw, uri));
  }

  /**
   * Answers and stops the hook (`sl_send_reply`, `t_reply`): with a code
   * and optional reason (the standard phrase) and headers, or with a
   * {@link Reply} a service handed back (`registrar.save`). A 1xx or 2xx
   * goes on the request's server transaction (retransmissions get the
   * same answer); a refusal (300–699) is sent once, statelessly, and a
   * retransmission is routed again. From `onFailure`, answers the caller
   * instead of the best response.
   */
  reply(code: number, reason?: string, headers?: Headers): never;
  reply(reply: Reply): never;
  reply(code: number | Reply, reason?: string, headers: Headers = []): never {
    const reply = typeof code === "number" ? { code, reason, headers: toHeaders(headers) } : code;
    throw new Decision({ tag: "reply", val: reply });
  }

  /**
   * Relays statefully and stops the hook (`t_relay()`): to `destination`
   * (a SIP URI or `host:port`), else where `lookup`/`looseRoute` pointed,
   * else the first Route, else the Request-URI; plus one branch per
   * `appendBranch`, in parallel. From `onFailure`, new branches (serial
   * forking).
   */
  relay(destination?: string, timeouts: Timeouts = {}): never {
    throw new Decision({
      tag: "relay",
      val: { destination, inviteTimeoutMs: timeouts.inviteMs, finalTimeoutMs: timeouts.finalMs },
    });
  }

  /**
   * Forwards statelessly and stops the hook (`forward()`): to
   * `destination`, else as `relay` would choose. No transaction follows.
   * `route` only.
   */
  forward(destination?: string): never {
    throw new Decision({ tag: "forward", val: destination });
  }
}

/**
 * A response of one branch, as `onReply` and `onFailure` see it. Edits
 * change the response that goes upstream. Valid during the hook call.
 */
export class Response {
  /** The raw resource, for calls the wrapper does not cover. */
  readonly raw: RawResponse;
  #fields: Fields | undefined;
  #status: number | undefined;

  constructor(raw: RawResponse) {
    this.raw = raw;
  }

  /** Its headers and body. */
  get fields(): Fields {
    return (this.#fields ??= takeFields(this.raw));
  }

  /** The status code (`$rs`), e.g. 486. */
  status(): number {
    return (this.#status ??= this.raw.status());
  }

  /** Whether the status is one of `codes` (`t_check_status("486|408")`). */
  isStatus(...codes: number[]): boolean {
    return codes.includes(this.status());
  }

  /** The reason phrase (`$rr`). */
  reason(): string {
    return this.raw.reason();
  }

  /** The address it came from. */
  source(): Endpoint {
    return this.raw.source();
  }
}

/** Whether a URI names this proxy (Kamailio's `uri == myself`). */
export function isMyself(uri: string): boolean {
  return rawProxy.isMyself(uri);
}

/** The parts of a SIP URI; undefined when it is not one. */
export function parseUri(uri: string): UriParts | undefined {
  return rawProxy.parseUri(uri);
}

/**
 * Arms the hooks the current transaction runs besides `route`, in place
 * of those armed before (Kamailio's `t_on_reply`, `t_on_failure`,
 * `t_on_branch`); a hook left out is not armed. Until a hook of the
 * transaction arms some, it runs every hook (the SDK's defaults for those
 * the module leaves out); a routing that arms only the hooks it uses
 * spares the host a call per response or branch it would not use. A hook
 * not armed is not called: the response is kept, the best response goes
 * upstream, the branch goes as it is.
 *
 * ```ts
 * arm({ onFailure: true }); // then req.relay()
 * ```
 */
export function arm(hooks: Hooks): void {
  const { onReply = false, onFailure = false, onBranch = false } = hooks;
  rawProxy.arm({ onReply, onFailure, onBranch });
}

/**
 * Variables of the current transaction, kept from `route` through
 * `onBranch`, `onReply` and `onFailure` (Kamailio's `$avp(name)`; a flag is
 * a variable that is set). Module-level variables are not kept: instances
 * are pooled and reused.
 */
export const vars = {
  /** A variable set earlier in this transaction. */
  get(name: string): string | undefined {
    return rawVars.get(name);
  },
  /** Whether a variable is set (`isflagset`). */
  has(name: string): boolean {
    return rawVars.get(name) !== undefined;
  },
  /** Sets a variable (`setflag` with no value); throws WispError past the tenant's limits. */
  set(name: string, value = "1"): void {
    hostCall(() => rawVars.set(name, value));
  },
  /** Removes a variable (`resetflag`); whether it was set. */
  remove(name: string): boolean {
    return rawVars.remove(name);
  },
};

// The tenant's params are fixed for the life of an instance (new params
// load a new version), so each is asked of the host once: a host call
// costs a JS guest several µs, and routes read the same params per request.
const params = new Map<string, string | undefined>();
const switches = new Map<string, boolean>();

/** The tenant's parameters from the config file (`params = { KEY = "value" }`). */
export const config = {
  /** The value of a parameter, if set. */
  param(name: string): string | undefined {
    if (!params.has(name)) params.set(name, rawConfig.param(name));
    return params.get(name);
  },
  /** Whether a parameter is switched on ("yes", "true", "1", "on"), like `#!define`. */
  enabled(name: string): boolean {
    let on = switches.get(name);
    if (on === undefined) switches.set(name, (on = rawConfig.enabled(name)));
    return on;
  },
};

/** Writing to the proxy's log, tagged with the tenant (Kamailio's `xlog`). */
export const log = {
  error(message: string): void {
    rawLog.write("error", message);
  },
  warn(message: string): void {
    rawLog.write("warn", message);
  },
  info(message: string): void {
    rawLog.write("info", message);
  },
  debug(message: string): void {
    rawLog.write("debug", message);
  },
};

/** How `registrar.save` and `registrar.saveAndReply` differ from the tenant's defaults (`REG_*` params). */
export interface SaveOptions {
  /** Keep the bindings across restarts (`WITH_USRLOCDB`): written to the database within the host's `location_write_interval_ms`, so a crash loses at most that much. Without it they live in memory only. */
  persistent?: boolean;
  /** The UA is behind NAT: requests go to the REGISTER's source address. */
  nat?: boolean;
  /** Expiry when the REGISTER gives none (`REG_DEFAULT_EXPIRES`, else 3600). */
  defaultExpires?: number;
  /** Shorter expiries are refused with 423 (`REG_MIN_EXPIRES`, else 60). */
  minExpires?: number;
  /** Longer expiries are cut to this (`REG_MAX_EXPIRES`, else 3600). */
  maxExpires?: number;
  /** Most bindings per address of record (`REG_MAX_CONTACTS`, else the tenant limit). */
  maxContacts?: number;
}

function saveOptions(options: SaveOptions): rawRegistrar.SaveOptions {
  const { persistent = false, nat = false, ...limits } = options;
  return { flags: { persistent, nat }, ...limits };
}

/** The location service (Kamailio's registrar and usrloc). */
export const registrar = {
  /**
   * Saves the bindings of a REGISTER (`save("location")`) and returns the
   * 200 OK to answer with (`req.reply(registrar.save(req))`). Throws a
   * refused WispError (400, 403, 423, 503) or an unavailable one.
   */
  save(req: Request, options: SaveOptions = {}): Reply {
    return hostCall(() => rawRegistrar.save(req.raw, saveOptions(options)));
  },
  /**
   * {@link registrar.save}, with the reply sent by the host (since WIT
   * 0.2.2), as Kamailio's `save("location")` sends its own: the REGISTER
   * is answered with the 200 OK or the refusal (400, 403, 423, 503), and
   * the hook stops there, as {@link exit} does (`route` returns `drop`).
   * The reply never crosses into the guest and back, which makes a
   * registration cheaper than `req.reply(registrar.save(req))`. Throws a
   * WispError, answering nothing (500 from `route`), when the store failed
   * (unavailable), or outside `route` and `onFailure` (not-allowed).
   */
  saveAndReply(req: Request, options: SaveOptions = {}): never {
    hostCall(() => rawRegistrar.saveAndReply(req.raw, saveOptions(options)));
    exit();
  },
  /**
   * Points the request at the user's contacts (`lookup("location")`).
   * Throws a refused WispError (404, 405), or an unavailable one when the
   * store failed.
   */
  lookup(req: Request): Located {
    return hostCall(() => rawRegistrar.lookup(req.raw));
  },
  /** Removes every binding of a user (`unregister`); how many there were. */
  unregister(user: string): number {
    return hostCall(() => rawRegistrar.unregister(user));
  },
  /** Whether a user has a live binding (`registered()`). */
  registered(user: string): boolean {
    return hostCall(() => rawRegistrar.registered(user));
  },
};

/** Digest authentication against the subscribers of `wisp user add`. */
export const auth = {
  /**
   * Checks the credentials for `realm` (`auth_check`): the authenticated
   * user (`$au`). Throws a refused WispError carrying the challenge (401
   * for a REGISTER, else 407) when they are missing or wrong.
   */
  authorize(req: Request, realm: string): string {
    return hostCall(() => rawAuth.authorize(req.raw, realm));
  },
  /**
   * {@link auth.authorize}, with the challenge sent by the host (since WIT
   * 0.2.2), as Kamailio's `auth_challenge` sends its own: the
   * authenticated user (`$au`); when the credentials are missing or wrong,
   * the request is answered with the 401 (REGISTER) or 407 challenge and
   * the hook stops there, as {@link exit} does (`route` returns `drop`).
   * The challenge never crosses into the guest and back. Throws a
   * WispError, answering nothing, when the subscriber store failed
   * (unavailable), or outside `route` and `onFailure` (not-allowed).
   */
  authorizeOrChallenge(req: Request, realm: string): string {
    const user = hostCall(() => rawAuth.authorizeOrChallenge(req.raw, realm));
    if (user === undefined) exit();
    return user;
  },
  /** Removes the credentials used, so they are not relayed (`consume_credentials()`). */
  consumeCredentials(req: Request): void {
    rawAuth.consumeCredentials(req.raw);
  },
};

/** The tenant's key-value store with expiry (Kamailio's htable). */
export const kv = {
  /** A value that has not expired (`$sht(table=>key)`). */
  get(key: string): string | undefined {
    return rawKv.get(key);
  },
  /** Sets a key, for `ttlSeconds` if given; throws WispError past the quota. */
  set(key: string, value: string, ttlSeconds?: number): void {
    hostCall(() => rawKv.set(key, value, ttlSeconds));
  },
  /** Removes a key; whether it was there. */
  delete(key: string): boolean {
    return rawKv.delete(key);
  },
  /** Adds `delta` to an integer value (missing: 0) and returns the result (`$shtinc`). */
  incr(key: string, delta: number | bigint = 1, ttlSeconds?: number): number {
    return Number(hostCall(() => rawKv.incr(key, BigInt(delta), ttlSeconds)));
  },
};

/** IP allow-lists (Kamailio's permissions). */
export const permissions = {
  /** The source IP is in the tenant's `IPAUTH_ALLOW` (`allow_source_address()`). */
  allowSourceAddress(req: Request): boolean {
    return rawPermissions.allowSourceAddress(req.raw);
  },
};

/** A sign of a client behind NAT (`nat_uac_test` 1, 2, 4, 16). */
export type NatSign = keyof rawNat.NatSigns;

/** NAT helpers (Kamailio's nathelper and `force_rport`). */
export const nat = {
  /** Whether any of `signs` holds (`nat_uac_test("19")` is privateContact, viaAddressDiffers, viaPortDiffers). */
  uacTest(req: Request, ...signs: NatSign[]): boolean {
    const wanted: rawNat.NatSigns = {};
    for (const sign of signs) wanted[sign] = true;
    return rawNat.uacTest(req.raw, wanted);
  },
  /** Rewrites the Contact to the source address (`fix_nated_contact()`); false without one. */
  fixContact(req: Request): boolean {
    return rawNat.fixContact(req.raw);
  },
  /** Answers to the source port even without `;rport` (`force_rport()`). */
  forceRport(req: Request): void {
    rawNat.forceRport(req.raw);
  },
  /** `fix_nated_contact()` in `onReply`: the Contact gets the response's source address. */
  fixReplyContact(res: Response): boolean {
    return rawNat.fixReplyContact(res.raw);
  },
};

/** Accounting records under the log target `wisp::acc` (Kamailio's acc). */
export const acc = {
  /** Writes one record of `req` and its final answer `res` (`acc_log_request`). */
  report(req: Request, event: AccEvent, res: Response): void {
    rawAcc.report(req.raw, event, res.raw);
  },
  /**
   * Has the host write the current transaction's record by itself when
   * its final answer goes upstream (Kamailio's acc flags: `setflag` with
   * `log_flag`, `log_missed_flag`, `failed_transaction_flag`), without an
   * `onReply` or `onFailure`: `answered` writes `start` for a 2xx to an
   * INVITE and `stop` for a 2xx to a BYE, `failed` writes `failed` for a
   * final answer above 299. Adds to the events asked before.
   *
   * ```ts
   * acc.account({ answered: true }); // setflag(FLT_ACC)
   * ```
   */
  account(events: Accounted): void {
    const { answered = false, failed = false } = events;
    rawAcc.account({ answered, failed });
  },
};

/**
 * Rate limits by any key, and the proxy's ban list (Kamailio's pipelimit,
 * and pike's bans in an htable `ipban`). A ban drops the address's
 * messages on arrival, before any hook.
 */
export const ratelimit = {
  /** Counts a hit of `key`: true while within `limit` per `windowSeconds`, false past it. */
  check(key: string, limit: number, windowSeconds: number): boolean {
    return rawRatelimit.check(key, limit, windowSeconds);
  },
  /** Bans an IP address for `seconds` (at most a day); throws WispError when refused. */
  ban(ip: string, seconds: number): void {
    hostCall(() => rawRatelimit.ban(ip, seconds));
  },
  /** Bans the address the request came from. */
  banSource(req: Request, seconds: number): void {
    ratelimit.ban(req.info.source.ip, seconds);
  },
  /** The seconds left of the ban on `ip`; undefined when it is not banned. */
  banned(ip: string): number | undefined {
    return rawRatelimit.banned(ip);
  },
  /** Lifts a ban this tenant set; whether there was one. */
  unban(ip: string): boolean {
    return rawRatelimit.unban(ip);
  },
};

/** How `dispatcher.select` chooses (`ds_select_dst`'s algorithm). */
export type DispatcherAlgorithm = rawDispatcher.Algorithm;
/** What `dispatcher.select` and `next` do with their choice: `"destination"` (`$du`), `"request-uri"` or `"none"`. */
export type DispatcherTarget = rawDispatcher.Target;
/** A destination's state: `"up"`, `"down"` or `"disabled"`. */
export type DispatcherState = rawDispatcher.State;
/** A destination of a set: `{ set, uri, weight, priority, attrs, state }`. */
export type Destination = rawDispatcher.Destination;

/**
 * Destination sets and load balancing (Kamailio's dispatcher): the
 * tenant's sets from its `dispatcher` section, probed with OPTIONS by the
 * host.
 */
export const dispatcher = {
  /**
   * Chooses a destination of `set` that is up by `algorithm` and does
   * `target` with it (`ds_select_dst`); the others up are kept for
   * `next`. Throws a refused WispError (503) when none is up, which
   * answers the request if it escapes the hook.
   */
  select(
    req: Request,
    set: number,
    algorithm: DispatcherAlgorithm,
    target: DispatcherTarget = "destination",
  ): Destination {
    return hostCall(() => rawDispatcher.select(req.raw, set, algorithm, target));
  },
  /** The next destination still up (`ds_next_dst`, in `onFailure`); undefined when none is left. */
  next(req: Request): Destination | undefined {
    return rawDispatcher.next(req.raw);
  },
  /** The destination chosen last in this transaction. */
  current(): Destination | undefined {
    return rawDispatcher.current();
  },
  /** Sets a destination's state (`ds_mark_dst`); throws WispError for an unknown one. */
  mark(set: number, uri: string, state: DispatcherState): void {
    hostCall(() => rawDispatcher.mark(set, uri, state));
  },
  /** Marks the destination chosen last down (`ds_mark_dst("ip")`); false when there is none. */
  markCurrentDown(): boolean {
    const d = rawDispatcher.current();
    if (d === undefined) return false;
    try {
      rawDispatcher.mark(d.set, d.uri, "down");
      return true;
    } catch {
      return false;
    }
  },
  /** The destinations of a set with their states. */
  destinations(set: number): Destination[] {
    return rawDispatcher.destinations(set);
  },
};

/** `route`: decide by `req.reply`, `req.relay`, `req.forward`; returning drops the request. */
export type RouteFn = (req: Request) => void;
/** `onReply`: return `"drop"` to drop a provisional response; anything else keeps it. */
export type OnReplyFn = (req: Request, res: Response) => sip.ReplyVerdict | void;
/** `onFailure`: `req.relay` again or `req.reply`; returning sends `best` upstream. */
export type OnFailureFn = (req: Request, best: Response) => void;
/** `onBranch`: edit the branch's copy of the request before it is sent. */
export type OnBranchFn = (req: Request, index: number) => void;

function describeError(err: unknown): string {
  if (err instanceof WispError) return `failed: ${err.message}`;
  return `threw: ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`;
}

/**
 * Runs a hook and turns how it ended into what the world's export returns:
 * a decision (or `exit()`), a refused check (its reply, when `refusal`
 * maps it), or an error (logged, then `failed`).
 */
function runHook<T>(
  name: string,
  hook: () => T,
  decided: (action: sip.Action | undefined) => T,
  refusal: ((reply: Reply) => T) | undefined,
  failed: T,
): T {
  try {
    return hook();
  } catch (err) {
    if (err instanceof Decision) return decided(err.action);
    if (err instanceof WispError && err.reply !== undefined && refusal !== undefined) return refusal(err.reply);
    log.error(`${name} ${describeError(err)}`);
    return failed;
  } finally {
    releaseFields();
  }
}

const SERVER_ERROR: sip.Action = { tag: "reply", val: { code: 500, headers: [] } };

/** Runs the user's route hook (the entry `wisp-js build` makes calls it). */
export function runRoute(route: RouteFn, raw: RawRequest, info: sip.RequestInfo): sip.Action {
  return runHook<sip.Action>(
    "route",
    () => {
      route(new Request(raw, info));
      return { tag: "drop" };
    },
    (action) => action ?? { tag: "drop" },
    (reply) => ({ tag: "reply", val: reply }),
    SERVER_ERROR,
  );
}

/** Runs the user's `onReply`, or keeps every response when there is none. */
export function runOnReply(hook: OnReplyFn | undefined, req: RawRequest, res: RawResponse): sip.ReplyVerdict {
  if (hook === undefined) return "keep";
  return runHook<sip.ReplyVerdict>(
    "onReply",
    () => (hook(new Request(req), new Response(res)) === "drop" ? "drop" : "keep"),
    (action) => {
      if (action !== undefined) log.error("onReply cannot reply, relay or forward: the response is kept");
      return "keep";
    },
    undefined,
    "keep",
  );
}

/** Runs the user's `onFailure`; without it, or when it returns, `best` goes upstream. */
export function runOnFailure(hook: OnFailureFn | undefined, req: RawRequest, best: RawResponse): sip.FailureAction {
  if (hook === undefined) return { tag: "upstream" };
  return runHook<sip.FailureAction>(
    "onFailure",
    () => {
      hook(new Request(req), new Response(best));
      return { tag: "upstream" };
    },
    (action) => {
      if (action === undefined) return { tag: "upstream" };
      if (action.tag === "reply" || action.tag === "relay") return action;
      log.error(`onFailure cannot ${action.tag}: the best response goes upstream`);
      return { tag: "upstream" };
    },
    (reply) => ({ tag: "reply", val: reply }),
    { tag: "upstream" },
  );
}

/** Runs the user's `onBranch`, if any. */
export function runOnBranch(hook: OnBranchFn | undefined, req: RawRequest, index: number): void {
  if (hook === undefined) return;
  runHook<void>(
    "onBranch",
    () => hook(new Request(req), index),
    (action) => {
      if (action !== undefined) log.error(`onBranch cannot ${action.tag}: the branch goes as it is`);
    },
    undefined,
    undefined,
  );
}
