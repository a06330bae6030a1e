// wisp's default routing in TypeScript: the relaying part of Kamailio's
// default config (`request_route` and its REQINIT, WITHINDLG and RELAY
// blocks, and the failure route FAIL_ONE). guests/default (Rust) also ports
// the registrar, location, AUTH, NAT and PSTN routes; this port does not
// yet. Requests are relayed statefully.
//
// Tenant params (see docs/configuration.md): FAILOVER (comma-separated URIs
// tried one after the other when an INVITE fails with 486, 408 or 5xx),
// PARALLEL (URIs an INVITE is forked to beside its Request-URI),
// FR_INV_TIMER_MS and FR_TIMER_MS (Kamailio's `t_set_fr`).
//
// Requests for this proxy's own users are refused here: the location
// service (`wisp:proxy/registrar`) is used by the Rust port only.

import { Request, Response, config, log, vars } from "@wisp/sdk";

export function route(req: Request): void {
  // route(REQINIT): loop and sanity checks.
  const hops = req.maxForwards(maxForwardsLimit());
  if (hops) return req.reject(hops);
  const insane = req.sanityCheck();
  if (insane) {
    log.info(`malformed request: ${insane.reason}`);
    return req.reject(insane);
  }

  // A CANCEL that matched a relayed INVITE was handled by the host (200,
  // then CANCEL on every pending branch). One that reaches the script
  // matches no transaction: relay it statelessly (RFC 3261 §16.10).
  if (req.isMethod("CANCEL")) return req.forward();

  // route(WITHINDLG)
  if (req.hasToTag()) return withinDialog(req);

  // Initial requests: keep dialog-forming ones on this proxy.
  if (req.isMethod("INVITE", "SUBSCRIBE")) req.recordRoute();

  // Requests for this proxy's own domain need the location service.
  if (req.uriIsMyself()) return local(req);

  relay(req);
}

/**
 * failure_route[FAIL_ONE]: serial forking to the FAILOVER URIs. A cancelled
 * transaction never gets here (`t_is_canceled` is the host's).
 */
export function onFailure(req: Request, best: Response): void {
  if (!req.isMethod("INVITE") || !failsOver(best.status())) return;
  const next = nextFailover();
  if (next === undefined) return;
  log.info(`${best.status()} from the last branch: trying ${next}`);
  req.setUri(next);
  req.relay();
}

/**
 * route(RELAY): stateful relay (`t_relay()`), with the timers and the
 * parallel branches the params ask for. The failure route is always armed.
 */
function relay(req: Request): void {
  const timers = frTimers();
  if (timers) req.setTimers(timers[0], timers[1]);
  if (req.isMethod("INVITE")) {
    for (const uri of uriList("PARALLEL")) req.appendBranch(uri);
    const failover = config.param("FAILOVER");
    if (failover !== undefined) vars.set(FAILOVER_VAR, failover);
  }
  req.relay();
}

/** The per-transaction variable holding the FAILOVER URIs not tried yet. */
const FAILOVER_VAR = "failover";

/** Whether a final answer calls for the next FAILOVER URI (`t_check_status("486|408|5[0-9][0-9]")`). */
function failsOver(status: number): boolean {
  return status === 486 || status === 408 || (status >= 500 && status < 600);
}

/** Pops the next URI off the transaction's failover list. */
function nextFailover(): string | undefined {
  const list = vars.get(FAILOVER_VAR);
  if (list === undefined) return undefined;
  const uris = splitList(list);
  const next = uris.shift();
  const rest = uris.join(",");
  vars.set(FAILOVER_VAR, rest === "" ? undefined : rest);
  return next;
}

/** A comma-separated list param, blanks trimmed and empty entries skipped. */
function uriList(name: string): string[] {
  const value = config.param(name);
  return value === undefined ? [] : splitList(value);
}

function splitList(value: string): string[] {
  return value
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
}

/** Timer B/F with the default T1: 64 × 500 ms. */
const DEFAULT_FR_MS = 32_000;

/**
 * FR_INV_TIMER_MS and FR_TIMER_MS (`t_set_fr`), when either is set; the one
 * left out keeps Timer B/F's default of 32 s.
 */
function frTimers(): [number, number] | undefined {
  const invite = u32Param("FR_INV_TIMER_MS");
  const other = u32Param("FR_TIMER_MS");
  if (invite === undefined && other === undefined) return undefined;
  return [invite ?? DEFAULT_FR_MS, other ?? DEFAULT_FR_MS];
}

/** A param parsed like Rust's `str::parse::<u32>` (after trimming), else undefined. */
function u32Param(name: string): number | undefined {
  const text = (config.param(name) ?? "").trim();
  const value = /^\+?[0-9]+$/.test(text) ? Number(text) : NaN;
  return value <= 0xffffffff ? value : undefined;
}

function maxForwardsLimit(): number {
  // Like Rust's `str::parse::<u32>`: digits only, within u32.
  const text = config.param("MAX_FORWARDS") ?? "";
  const value = /^\+?[0-9]+$/.test(text) ? Number(text) : NaN;
  return value <= 0xffffffff ? value : 10;
}

/** route(WITHINDLG): requests inside a dialog follow its Route set. */
function withinDialog(req: Request): void {
  if (req.looseRoute()) {
    // The ACK of a 2xx is a transaction of its own: relayed statelessly
    // (the ACK of a negative answer never gets here).
    if (req.isMethod("ACK")) return req.forward();
    return req.relay();
  }
  if (req.isMethod("ACK")) {
    // An ACK without Route: stateless relay to the R-URI, as Kamailio does
    // when no transaction matched.
    return req.forward();
  }
  req.reply(404, "Not here");
}

/** Requests addressed to this proxy itself. */
function local(req: Request): void {
  if (req.isMethod("OPTIONS") && req.uriUser() === undefined) return req.reply(200, "OK");
  if (req.isMethod("REGISTER")) return req.reply(501, "Registrar Not Enabled");
  if (req.uriUser() === undefined) return req.reply(484, "Address Incomplete");
  req.reply(404, "Not Found");
}
