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
 *   if (req.method() === "OPTIONS") return req.reply(200, "OK");
 *   req.relay();
 * }
 *
 * // Serial forking when the callee is busy.
 * export function onFailure(req: Request, best: Response) {
 *   if (best.status() === 486 && vars.get("retried") === undefined) {
 *     vars.set("retried", "1");
 *     req.relay("sip:voicemail@example.com");
 *   }
 * }
 * ```
 *
 * `wisp-js build route.ts -o route.wasm` makes a component of it. The calls
 * mirror Kamailio's script functions and the Rust SDK (`wisp-sdk`); the raw
 * bindings, typed from the WIT package, are in the `wisp:proxy/*` modules.
 *
 * Every request but ACK gets a server transaction when it arrives, so
 * `reply` is stateful; `relay` proxies statefully (Kamailio's `t_relay`)
 * and brings in the other hooks; `forward` stays stateless. The {@link vars}
 * of a transaction are kept across all its hooks.
 */

import * as types from "wisp:proxy/types@0.1.0";
import * as proxy from "wisp:proxy/proxy@0.1.0";
import * as rr from "wisp:proxy/rr@0.1.0";
import * as tm from "wisp:proxy/tm@0.1.0";
import * as rawVars from "wisp:proxy/vars@0.1.0";
import * as rawConfig from "wisp:proxy/config@0.1.0";
import * as rawLog from "wisp:proxy/log@0.1.0";
import * as rawRegistrar from "wisp:proxy/registrar@0.1.0";
import * as rawAuth from "wisp:proxy/auth@0.1.0";
import * as rawKv from "wisp:proxy/kv@0.1.0";
import * as rawPermissions from "wisp:proxy/permissions@0.1.0";
import * as rawNat from "wisp:proxy/nat@0.1.0";
import * as rawAcc from "wisp:proxy/acc@0.1.0";
import * as rawRatelimit from "wisp:proxy/ratelimit@0.1.0";

export type RawRequest = types.Request;
export type RawResponse = types.Response;
export type Endpoint = types.Endpoint;
export type Transport = types.Transport;
export type Header = types.Header;
export type HostError = types.Error;
/** A check that failed and the reply it calls for. */
export type Rejection = proxy.Rejection;

/** Headers for a reply: `[name, value]` pairs or `{ name, value }` records. */
export type Headers = ReadonlyArray<readonly [string, string] | Header>;

/** A host call refused what it was asked (the WIT `error` variant). */
export class WispError extends Error {
  /** `"invalid"`, `"not-allowed"` or `"transport"`. */
  readonly kind: HostError["tag"];
  /** What the host said. */
  readonly detail: string;

  constructor(error: HostError) {
    super(`${describe(error.tag)}: ${error.val}`);
    this.name = "WispError";
    this.kind = error.tag;
    this.detail = error.val;
  }
}

function describe(tag: HostError["tag"]): string {
  switch (tag) {
    case "invalid":
      return "invalid argument";
    case "not-allowed":
      return "not allowed";
    case "transport":
      return "transport error";
  }
}

/** The value an `err` of a WIT result was thrown with. */
function payload(thrown: unknown): unknown {
  if (thrown !== null && typeof thrown === "object" && "payload" in thrown) {
    return (thrown as { payload: unknown }).payload;
  }
  return thrown;
}

function isHostError(value: unknown): value is HostError {
  return (
    value !== null &&
    typeof value === "object" &&
    "tag" in value &&
    "val" in value &&
    typeof (value as { val: unknown }).val === "string"
  );
}

function isRejection(value: unknown): value is Rejection {
  return value !== null && typeof value === "object" && "code" in value && "reason" in value;
}

/** Runs a host call returning `result<_, error>`; an `err` becomes a WispError. */
function hostCall<T>(call: () => T): T {
  try {
    return call();
  } catch (thrown) {
    const value = payload(thrown);
    if (isHostError(value)) throw new WispError(value);
    throw thrown;
  }
}

/** Runs a check returning `result<_, rejection>`: the rejection, or undefined. */
function check(call: () => void): Rejection | undefined {
  try {
    call();
    return undefined;
  } catch (thrown) {
    const value = payload(thrown);
    if (isRejection(value)) return value;
    throw thrown;
  }
}

function toHeaders(headers: Headers): Header[] {
  return headers.map((h) =>
    Array.isArray(h) ? { name: h[0], value: h[1] } : { name: (h as Header).name, value: (h as Header).value },
  );
}

/**
 * The request being routed. Reading is lazy on the host side: only the
 * headers you ask for are parsed. Valid only during the hook call. In
 * `onReply` and `onFailure` it is the request as relayed; in `onBranch`,
 * that branch's copy.
 */
export class Request {
  /** The raw resource, for calls the wrapper does not cover. */
  readonly raw: RawRequest;
  #method: string | undefined;

  constructor(raw: RawRequest) {
    this.raw = raw;
  }

  /** The method (`$rm`), e.g. "INVITE". */
  method(): string {
    return (this.#method ??= this.raw.method());
  }

  /** Whether the method is one of `methods` (`is_method("INVITE|BYE")`). */
  isMethod(...methods: string[]): boolean {
    return methods.includes(this.method());
  }

  /** The Request-URI (`$ru`). */
  uri(): string {
    return this.raw.uri();
  }

  /** Replaces the Request-URI (`$ru = "..."`); throws WispError if invalid. */
  setUri(uri: string): void {
    hostCall(() => this.raw.setUri(uri));
  }

  /** The user part of the Request-URI (`$rU`). */
  uriUser(): string | undefined {
    return this.raw.uriUser();
  }

  /** The host part of the Request-URI (`$rd`). */
  uriHost(): string {
    return this.raw.uriHost();
  }

  /** The first value of a header (`$hdr(Name)`); compact names work too. */
  header(name: string): string | undefined {
    return this.raw.header(name);
  }

  /** Every value of a header, comma-separated lists split. */
  headerValues(name: string): string[] {
    return this.raw.headerValues(name);
  }

  /** The names of all headers in order. */
  headerNames(): string[] {
    return this.raw.headerNames();
  }

  /** Appends a header (`append_hf("Name: value\r\n")`); throws WispError if refused. */
  appendHeader(name: string, value: string): void {
    hostCall(() => this.raw.appendHeader(name, value));
  }

  /** Removes every header of that name (`remove_hf`); returns how many. */
  removeHeader(name: string): number {
    return this.raw.removeHeader(name);
  }

  /** The body (`$rb`). */
  body(): Uint8Array {
    return this.raw.body();
  }

  /** Where the request came from (`$si`, `$sp`, `$proto`). */
  source(): Endpoint {
    return this.raw.source();
  }

  /** Whether To carries a tag: the request belongs to a dialog (`has_totag()`). */
  hasToTag(): boolean {
    return this.raw.hasToTag();
  }

  /**
   * Answers on the request's server transaction (`sl_send_reply` /
   * `t_reply(code, reason)`), with extra headers if given: a retransmitted
   * request gets the same answer, and over UDP a final answer to INVITE is
   * retransmitted until the ACK. From `onFailure`, it answers the caller
   * instead of the best branch response. An ACK is never answered.
   */
  reply(code: number, reason: string, headers: Headers = []): void {
    hostCall(() => proxy.reply(this.raw, code, reason, toHeaders(headers)));
  }

  /**
   * Answers with the reply a failed check calls for, with the headers it
   * needs (a 420 lists the Unsupported extensions).
   */
  reject(rejection: Rejection): void {
    hostCall(() => proxy.reply(this.raw, rejection.code, rejection.reason, rejection.headers));
  }

  /**
   * Forwards statelessly (`forward()`): to `destination` (a SIP URI or
   * `host:port`) when given, else the first Route, else the Request-URI.
   * No transaction follows: responses go back by Via, no hook sees them.
   * Prefer `relay` except for ACK and stray CANCEL.
   */
  forward(destination?: string): void {
    hostCall(() => proxy.forward(this.raw, destination));
  }

  /** Forwards to an explicit destination (`$du`); same as `forward(destination)`. */
  forwardTo(destination: string): void {
    this.forward(destination);
  }

  /**
   * Relays statefully (`t_relay()`): one branch to `destination` (a SIP
   * URI or `host:port`) when given, else the first Route, else the
   * Request-URI, plus one per `appendBranch`, all in parallel. INVITEs are
   * answered 100 Trying; responses pass through `onReply`, and when every
   * branch failed, `onFailure` runs. Called from `onFailure`, it starts new
   * branches (serial forking). An ACK is forwarded statelessly.
   */
  relay(destination?: string): void {
    hostCall(() => tm.relay(this.raw, destination));
  }

  /** Relays with the first branch sent to `destination` (`$du = ...; t_relay()`). */
  relayTo(destination: string): void {
    this.relay(destination);
  }

  /**
   * Adds a branch to the next `relay` (`append_branch(uri)`): a copy of
   * the request with `uri` as its Request-URI.
   */
  appendBranch(uri: string): void {
    hostCall(() => tm.appendBranch(this.raw, uri));
  }

  /**
   * How long the transaction waits for a final answer, in milliseconds
   * (`t_set_fr(inviteMs, finalMs)`): `inviteMs` once an INVITE branch had
   * a provisional, `finalMs` otherwise. Pending branches are then cancelled
   * and count as 408. The defaults are Kamailio's: 120 s (`fr_inv_timer`)
   * and 30 s (`fr_timer`).
   */
  setTimers(inviteMs: number, finalMs: number): void {
    tm.setTimers(this.raw, inviteMs, finalMs);
  }

  /**
   * Checks and decrements Max-Forwards (`mf_process_maxfwd_header(limit)`).
   * Returns the 483 rejection when no hops are left, else undefined.
   */
  maxForwards(limit: number): Rejection | undefined {
    return check(() => proxy.maxForwards(this.raw, limit));
  }

  /** Checks what a proxy must refuse (`sanity_check()`): a rejection or undefined. */
  sanityCheck(): Rejection | undefined {
    return check(() => proxy.sanityCheck(this.raw));
  }

  /** Adds Record-Route so the dialog stays on this proxy (`record_route()`). */
  recordRoute(): void {
    hostCall(() => rr.recordRoute(this.raw));
  }

  /** Follows the Route set of an in-dialog request (`loose_route()`). */
  looseRoute(): boolean {
    return rr.looseRoute(this.raw);
  }

  /**
   * Whether `looseRoute` followed a Route this proxy record-routed for this
   * dialog itself (its integrity parameter checks), rather than one the
   * sender wrote.
   */
  routeVerified(): boolean {
    return rr.routeVerified(this.raw);
  }

  /**
   * Whether the request came from a trusted source (`trusted` in the
   * configuration): relayed without authentication by default routing.
   */
  sourceTrusted(): boolean {
    return proxy.sourceTrusted(this.raw);
  }

  /** Whether the Request-URI names this proxy (`uri == myself`). */
  uriIsMyself(): boolean {
    return this.raw.uriIsMyself();
  }

  /** The From URI (`$fu`). */
  fromUri(): string {
    return this.raw.fromUri();
  }

  /** The To URI (`$tu`). */
  toUri(): string {
    return this.raw.toUri();
  }

  /** The user of the From URI (`$fU`). */
  fromUser(): string | undefined {
    return proxy.parseUri(this.raw.fromUri())?.user;
  }

  /** The host of the From URI (`$fd`); empty when From is unparsable. */
  fromHost(): string {
    return proxy.parseUri(this.raw.fromUri())?.host ?? "";
  }

  /** The user of the To URI (`$tU`). */
  toUser(): string | undefined {
    return proxy.parseUri(this.raw.toUri())?.user;
  }

  /** The host of the To URI (`$td`). */
  toHost(): string {
    return proxy.parseUri(this.raw.toUri())?.host ?? "";
  }

  /** Whether the From URI names this proxy (`from_uri == myself`). */
  fromIsMyself(): boolean {
    return proxy.isMyself(this.raw.fromUri());
  }
}

/**
 * A response of one branch of the transaction, as `onReply` and `onFailure`
 * see it. Reading is lazy on the host side; edits change the response that
 * goes upstream. Valid only during the hook call.
 */
export class Response {
  /** The raw resource, for calls the wrapper does not cover. */
  readonly raw: RawResponse;

  constructor(raw: RawResponse) {
    this.raw = raw;
  }

  /** The status code (`$rs`), e.g. 486. */
  status(): number {
    return this.raw.status();
  }

  /** The reason phrase (`$rr`). */
  reason(): string {
    return this.raw.reason();
  }

  /** Whether the status is one of `codes` (`t_check_status("486|408")`). */
  isStatus(...codes: number[]): boolean {
    return codes.includes(this.status());
  }

  /** The first value of a header (`$hdr(Name)`); compact names work too. */
  header(name: string): string | undefined {
    return this.raw.header(name);
  }

  /** Every value of a header, comma-separated lists split. */
  headerValues(name: string): string[] {
    return this.raw.headerValues(name);
  }

  /** The names of all headers in order. */
  headerNames(): string[] {
    return this.raw.headerNames();
  }

  /** Appends a header (`append_hf` in an `onreply_route`); throws WispError if refused. */
  appendHeader(name: string, value: string): void {
    hostCall(() => this.raw.appendHeader(name, value));
  }

  /** Removes every header of that name (`remove_hf`); returns how many. */
  removeHeader(name: string): number {
    return this.raw.removeHeader(name);
  }

  /** The body (`$rb`). */
  body(): Uint8Array {
    return this.raw.body();
  }
}

/** Whether a URI names this proxy (Kamailio's `uri == myself`). */
export function isMyself(uri: string): boolean {
  return proxy.isMyself(uri);
}

/**
 * Variables and flags of the current transaction, kept from `route` through
 * `onBranch`, `onReply` and `onFailure` (Kamailio's `$avp(name)` and
 * `setflag`/`isflagset`). Each transaction starts with none; module-level
 * variables are not kept, since instances are pooled and reused.
 */
export const vars = {
  /** A variable set earlier in this transaction (`$avp(name)`). */
  get(name: string): string | undefined {
    return rawVars.get(name);
  },
  /** Sets a variable, or clears it with `undefined` (`$avp(name) = $null`). */
  set(name: string, value: string | undefined): void {
    rawVars.set(name, value);
  },
  /** Sets flag `flag`, 0 to 63 (`setflag(n)`). */
  setFlag(flag: number): void {
    rawVars.setFlag(flag);
  },
  /** Clears flag `flag` (`resetflag(n)`). */
  resetFlag(flag: number): void {
    rawVars.resetFlag(flag);
  },
  /** Whether flag `flag` is set (`isflagset(n)`). */
  isFlagSet(flag: number): boolean {
    return rawVars.isFlagSet(flag);
  },
};

/** The tenant's parameters from the config file (`params = { KEY = "value" }`). */
export const config = {
  /** The value of a parameter, if set. */
  param(name: string): string | undefined {
    return rawConfig.param(name);
  },
  /** Whether a parameter is switched on ("yes", "true", "1", "on"), like `#!define`. */
  enabled(name: string): boolean {
    return rawConfig.enabled(name);
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

export type SaveOptions = rawRegistrar.SaveOptions;
export type Located = rawRegistrar.Located;
export type LookupError = rawRegistrar.LookupError;
export type AuthOutcome = rawAuth.Outcome;
export type AccEvent = rawAcc.Event;

/** The location service (Kamailio's registrar/usrloc). */
export const registrar = {
  /** Kamailio's registrar defaults: 3600 s by default and at most, 60 s at least. */
  defaults(): SaveOptions {
    return {
      persistent: true,
      nat: false,
      defaultExpires: 3600,
      minExpires: 60,
      maxExpires: 3600,
      maxContacts: 0,
    };
  },
  /**
   * Saves the bindings of a REGISTER and queues the 200 OK listing them
   * (`save("location")`). Returns the rejection to answer with
   * (`sl_reply_error()`, via `req.reject`), or undefined when saved.
   */
  save(req: Request, options: SaveOptions): Rejection | undefined {
    return check(() => {
      rawRegistrar.save(req.raw, options);
    });
  },
  /**
   * Points the request at the user's contacts (`lookup("location")`): what
   * was found, or why nothing was ("not-found", "method-not-allowed", "storage").
   */
  lookup(req: Request): Located | LookupError {
    try {
      return rawRegistrar.lookup(req.raw);
    } catch (thrown) {
      const value = payload(thrown);
      if (value === "not-found" || value === "method-not-allowed" || value === "storage") return value;
      throw thrown;
    }
  },
  /** Whether a user has a live binding (`registered()`). */
  registered(user: string): boolean {
    return rawRegistrar.registered(user);
  },
};

/** Digest authentication against the subscribers of `wisp user add`. */
export const auth = {
  /** `www_authorize(realm, "subscriber")`. */
  wwwAuthorize(req: Request, realm: string): AuthOutcome {
    return rawAuth.wwwAuthorize(req.raw, realm);
  },
  /** `proxy_authorize(realm, "subscriber")`. */
  proxyAuthorize(req: Request, realm: string): AuthOutcome {
    return rawAuth.proxyAuthorize(req.raw, realm);
  },
  /** Queues a 401 challenge (`www_challenge(realm, "0")`). */
  wwwChallenge(req: Request, realm: string): void {
    rawAuth.wwwChallenge(req.raw, realm);
  },
  /** Queues a 407 challenge (`proxy_challenge(realm, "0")`). */
  proxyChallenge(req: Request, realm: string): void {
    rawAuth.proxyChallenge(req.raw, realm);
  },
  /** `consume_credentials()`. */
  consumeCredentials(req: Request): void {
    rawAuth.consumeCredentials(req.raw);
  },
};

/** The tenant's key-value store with expiry (Kamailio's htable). */
export const kv = {
  get(key: string): string | undefined {
    return rawKv.get(key);
  },
  set(key: string, value: string, ttlSeconds = 0): void {
    rawKv.set(key, value, ttlSeconds);
  },
  delete(key: string): boolean {
    return rawKv.delete(key);
  },
  incr(key: string, delta: bigint, ttlSeconds = 0): bigint {
    return rawKv.incr(key, delta, ttlSeconds);
  },
};

/** IP allow-lists (Kamailio's permissions). */
export const permissions = {
  /** The source IP is in the tenant's `IPAUTH_ALLOW` (`allow_source_address()`). */
  allowSourceAddress(req: Request): boolean {
    return rawPermissions.allowSourceAddress(req.raw);
  },
};

/** NAT helpers (Kamailio's nathelper and `force_rport`). */
export const nat = {
  CONTACT_PRIVATE: 1,
  VIA_ADDRESS_DIFFERS: 2,
  VIA_PRIVATE: 4,
  VIA_PORT_DIFFERS: 16,
  /** `nat_uac_test(tests)`. */
  uacTest(req: Request, tests: number): boolean {
    return rawNat.uacTest(req.raw, tests);
  },
  /** `fix_nated_contact()`. */
  fixContact(req: Request): boolean {
    return rawNat.fixContact(req.raw);
  },
  /** `force_rport()`. */
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
  /** One record of `req` and its final answer `res`. */
  report(req: Request, event: AccEvent, res: Response): void {
    rawAcc.report(req.raw, event, res.raw);
  },
};

/**
 * Rate limits by any key, and the proxy's ban list (Kamailio's pipelimit,
 * and pike's bans in an htable `ipban`). Keys are the tenant's own; a ban
 * drops the address's messages on arrival, before any hook.
 */
export const ratelimit = {
  /** Counts a hit of `key`: true while within `limit` per `windowSeconds`, false past it. */
  check(key: string, limit: number, windowSeconds: number): boolean {
    return rawRatelimit.check(key, limit, windowSeconds);
  },
  /** Bans an IP address for `seconds` (at most a day); false when refused. */
  ban(ip: string, seconds: number): boolean {
    return rawRatelimit.ban(ip, seconds);
  },
  /** Bans the address the request came from. */
  banSource(req: Request, seconds: number): boolean {
    return rawRatelimit.ban(req.source().ip, seconds);
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

/** The signature of a routing module's `route` export. */
export type RouteFn = (req: Request) => void;
/** `onReply`: return false to drop a provisional response. */
export type OnReplyFn = (req: Request, res: Response) => boolean | void;
/** `onFailure`: relay again, reply, or neither to send `best` upstream. */
export type OnFailureFn = (req: Request, best: Response) => void;
/** `onBranch`: edit the branch's copy of the request before it is sent. */
export type OnBranchFn = (req: Request, index: number) => void;

/**
 * Runs a hook: a WispError escaping it is logged and swallowed, as the Rust
 * SDK does with an `Err`; any other exception is a bug: it is logged and
 * rethrown, so the hook traps (for `route`, the request is answered 500).
 */
function runHook<T>(name: string, hook: () => T, fallback: T): T {
  try {
    return hook();
  } catch (err) {
    if (err instanceof WispError) {
      log.error(`${name} failed: ${err.message}`);
      return fallback;
    }
    log.error(`${name} threw: ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`);
    throw err;
  }
}

/**
 * Runs the user's route hook (called by the entry `wisp-js build` makes).
 * A WispError escaping the hook is logged and the request dropped, as the
 * Rust SDK does with an `Err`; any other exception is a bug: it is logged
 * and rethrown, so the hook traps and the request is answered 500.
 */
export function runRoute(route: RouteFn, raw: RawRequest): void {
  runHook("route", () => route(new Request(raw)), undefined);
}

/**
 * Runs the user's `onReply`, or keeps every response when there is none.
 * Only an explicit `false` drops a provisional.
 */
export function runOnReply(hook: OnReplyFn | undefined, req: RawRequest, res: RawResponse): boolean {
  if (hook === undefined) return true;
  return runHook("onReply", () => hook(new Request(req), new Response(res)) !== false, true);
}

/** Runs the user's `onFailure`, if any; without it `best` goes upstream. */
export function runOnFailure(hook: OnFailureFn | undefined, req: RawRequest, best: RawResponse): void {
  if (hook === undefined) return;
  runHook("onFailure", () => hook(new Request(req), new Response(best)), undefined);
}

/** Runs the user's `onBranch`, if any. */
export function runOnBranch(hook: OnBranchFn | undefined, req: RawRequest, index: number): void {
  if (hook === undefined) return;
  runHook("onBranch", () => hook(new Request(req), index), undefined);
}
