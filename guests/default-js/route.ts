// wisp's default routing in TypeScript: Kamailio 3.1's default config,
// ported route by route, the same as guests/default (Rust). Each
// route[NAME] is a function named after it; docs/porting-from-kamailio.md
// shows the config and the Rust port side by side.
//
// Features are switched on by tenant params named after the config's
// defines: WITH_AUTH, WITH_IPAUTH, WITH_USRLOCDB, WITH_PSTN, WITH_NAT. Other
// params (docs/configuration.md): MAX_FORWARDS, FAILOVER, PARALLEL,
// FR_INV_TIMER_MS, FR_TIMER_MS, PSTN_GW_IP, PSTN_GW_PORT, REG_*_EXPIRES,
// REG_MAX_CONTACTS.
//
// Kamailio's `exit` is EXIT: a route that answered, relayed or dropped the
// request returns it, and its caller stops there.

import {
  Request,
  Response,
  acc,
  auth as digest,
  config,
  log,
  nat as nathelper,
  permissions,
  registrar as usrloc,
  vars,
} from "@wisp/sdk";

/** What a route tells its caller: go on (NEXT) or stop (EXIT, Kamailio's `exit`). */
type Flow = "next" | "exit";
const NEXT: Flow = "next";
const EXIT: Flow = "exit";

// Flags of the default config.
/** setflag(1): account this transaction. */
const FLT_ACC = 1;
/** setflag(2): account a missed call. */
const FLT_ACCMISSED = 2;
/** setflag(3): account a failed transaction. */
const FLT_ACCFAILED = 3;
/** setflag(5): the caller is behind NAT. */
const FLT_NATS = 5;
/** setbflag(6): the callee is behind NAT. */
const FLB_NATB = 6;

/** The main `route { ... }` block. */
export function route(req: Request): void {
  requestRoute(req);
}

/** onreply_route[REPLY_ONE]. */
export function onReply(req: Request, res: Response): boolean {
  replyOne(req, res);
  return true;
}

/** failure_route[FAIL_ONE]. */
export function onFailure(req: Request, best: Response): void {
  failOne(req, best);
}

function requestRoute(req: Request): Flow {
  if (reqinit(req) === EXIT) return EXIT;
  if (nat(req) === EXIT) return EXIT;
  if (withindlg(req) === EXIT) return EXIT;

  // A CANCEL matching a relayed INVITE was handled by the host; one that
  // reaches the script matches no transaction: dropped, as Kamailio's
  // config does, so that no one can have us send CANCELs anywhere.
  if (req.isMethod("CANCEL")) return EXIT;

  if (auth(req) === EXIT) return EXIT;

  // Preloaded Route headers are not followed on initial requests.
  req.removeHeader("Route");
  if (req.isMethod("INVITE", "SUBSCRIBE")) req.recordRoute();
  if (req.isMethod("INVITE")) vars.setFlag(FLT_ACC); // do accounting

  if (sipout(req) === EXIT) return EXIT;
  if (presence(req) === EXIT) return EXIT;
  if (registrar(req) === EXIT) return EXIT;

  if (req.uriUser() === undefined) {
    // wisp answers keepalive OPTIONS to itself (siputils' options_reply).
    if (req.isMethod("OPTIONS")) {
      req.reply(200, "OK");
      return EXIT;
    }
    req.reply(484, "Address Incomplete");
    return EXIT;
  }

  if (pstn(req) === EXIT) return EXIT;
  if (location(req) === EXIT) return EXIT;
  return relay(req);
}

/**
 * route[RELAY]: stateful relay (`t_relay()`), with the timers and the
 * parallel branches the params ask for. The reply and failure hooks are
 * always armed.
 */
function relay(req: Request): Flow {
  const timers = frTimers();
  if (timers) req.setTimers(timers[0], timers[1]);
  if (req.isMethod("INVITE")) {
    for (const uri of uriList("PARALLEL")) {
      // Past the branch limit (a lookup may have used it up) the call goes
      // on with the branches it has.
      try {
        req.appendBranch(uri);
      } catch (err) {
        log.warn(`PARALLEL ${uri}: ${err}`);
      }
    }
    const failover = config.param("FAILOVER");
    if (failover !== undefined) vars.set(FAILOVER_VAR, failover);
  }
  try {
    req.relay();
  } catch (err) {
    // sl_reply_error()
    log.info(`relay failed: ${err}`);
    req.reply(500, "Server Internal Error");
  }
  return EXIT;
}

/** route[REQINIT]: loop and sanity checks. */
function reqinit(req: Request): Flow {
  const hops = req.maxForwards(maxForwardsLimit());
  if (hops) {
    req.reject(hops);
    return EXIT;
  }
  const insane = req.sanityCheck();
  if (insane) {
    const source = req.source();
    log.info(`Malformed SIP message from ${source.ip}:${source.port}: ${insane.reason}`);
    req.reject(insane);
    return EXIT;
  }
  return NEXT;
}

/**
 * route[WITHINDLG]: requests inside a dialog follow its Route set, when the
 * Route is one we record-routed for the dialog ourselves (its integrity tag
 * checks) or the sender is trusted or authenticates. Anything else is a
 * request dressed up as in-dialog to be relayed without authentication
 * (toll fraud): refused.
 */
function withindlg(req: Request): Flow {
  if (!req.hasToTag()) return NEXT;
  if (req.looseRoute()) {
    if (!req.routeVerified() && !req.sourceTrusted()) {
      if (req.isMethod("ACK")) return EXIT;
      if (!config.enabled("WITH_AUTH")) {
        req.reply(403, "Not relaying");
        return EXIT;
      }
      if (auth(req) === EXIT) return EXIT;
      if (!req.fromIsMyself()) {
        // auth() lets outsiders reach our domain: a Route to follow is not that.
        req.reply(403, "Not relaying");
        return EXIT;
      }
    }
    if (req.isMethod("BYE")) {
      vars.setFlag(FLT_ACC); // do accounting ...
      vars.setFlag(FLT_ACCFAILED); // ... even if the transaction fails
    }
    if (req.isMethod("ACK")) {
      // The ACK of a 2xx is a transaction of its own: relayed statelessly.
      req.forward();
      return EXIT;
    }
    return relay(req);
  }
  if (req.isMethod("ACK")) {
    // An ACK without Route matches nothing of ours (the ACK of a refusal we
    // sent is absorbed here): dropped, as Kamailio's config does.
    return EXIT;
  }
  req.reply(404, "Not here");
  return EXIT;
}

/** route[REGISTRAR]: REGISTER requests are handled by the location service. */
function registrar(req: Request): Flow {
  if (!req.isMethod("REGISTER")) return NEXT;
  if (vars.isFlagSet(FLT_NATS)) vars.setFlag(FLB_NATB);
  const rejection = usrloc.save(req, {
    persistent: config.enabled("WITH_USRLOCDB"),
    nat: vars.isFlagSet(FLB_NATB),
    defaultExpires: u32Param("REG_DEFAULT_EXPIRES") ?? 3600,
    minExpires: u32Param("REG_MIN_EXPIRES") ?? 60,
    maxExpires: u32Param("REG_MAX_EXPIRES") ?? 3600,
    maxContacts: u32Param("REG_MAX_CONTACTS") ?? 0,
  });
  if (rejection) req.reject(rejection); // sl_reply_error()
  return EXIT;
}

/** route[LOCATION]: the Request-URI becomes the user's registered contacts. */
function location(req: Request): Flow {
  const found = usrloc.lookup(req);
  if (found === "not-found") {
    req.reply(404, "Not Found");
    return EXIT;
  }
  // Kamailio's default config answers -3 with 404 too; a failed store
  // says nothing about the user: 500.
  if (found === "storage") {
    req.reply(500, "Server Internal Error");
    return EXIT;
  }
  if (found === "method-not-allowed") {
    req.reply(405, "Method Not Allowed");
    return EXIT;
  }
  if (found.nat) vars.setFlag(FLB_NATB);
  if (req.isMethod("INVITE")) vars.setFlag(FLT_ACCMISSED);
  return NEXT;
}

/**
 * route[PRESENCE]: no presence server here (WITH_PRESENCE is not ported):
 * PUBLISH is refused, SUBSCRIBE goes to the user like any request.
 */
function presence(req: Request): Flow {
  if (!req.isMethod("PUBLISH", "SUBSCRIBE")) return NEXT;
  if (req.isMethod("PUBLISH") || req.uriUser() === undefined) {
    req.reply(404, "Not here");
    return EXIT;
  }
  return NEXT;
}

/**
 * route[AUTH] (WITH_AUTH): REGISTERs authenticate against the To domain;
 * other requests from our own domain against the From domain, and requests
 * from elsewhere must be for our domain (no open relay).
 */
function auth(req: Request): Flow {
  if (!config.enabled("WITH_AUTH")) return NEXT;
  if (req.isMethod("REGISTER")) {
    const realm = req.toHost();
    const outcome = digest.wwwAuthorize(req, realm);
    if (outcome.tag !== "authorized") {
      digest.wwwChallenge(req, realm);
      return EXIT;
    }
    if (outcome.val !== req.toUser()) {
      req.reply(403, "Forbidden auth ID");
      return EXIT;
    }
    return NEXT;
  }

  if (config.enabled("WITH_IPAUTH") && permissions.allowSourceAddress(req)) {
    // source IP allowed
    return NEXT;
  }

  if (req.fromIsMyself()) {
    // authenticate if from local subscriber
    const realm = req.fromHost();
    const outcome = digest.proxyAuthorize(req, realm);
    if (outcome.tag !== "authorized") {
      digest.proxyChallenge(req, realm);
      return EXIT;
    }
    const claimed = req.isMethod("PUBLISH") ? req.toUser() : req.fromUser();
    if (outcome.val !== claimed) {
      req.reply(403, "Forbidden auth ID");
      return EXIT;
    }
    digest.consumeCredentials(req);
    // caller authenticated
  } else if (!req.uriIsMyself()) {
    // not a local subscriber and a foreign destination: not an open relay
    req.reply(403, "Not relaying");
    return EXIT;
  }
  return NEXT;
}

/** route[NAT] (WITH_NAT): caller NAT detection. */
function nat(req: Request): Flow {
  if (!config.enabled("WITH_NAT")) return NEXT;
  nathelper.forceRport(req);
  // nat_uac_test("19")
  const tests =
    nathelper.CONTACT_PRIVATE | nathelper.VIA_ADDRESS_DIFFERS | nathelper.VIA_PORT_DIFFERS;
  if (nathelper.uacTest(req, tests)) {
    if (!req.isMethod("REGISTER")) nathelper.fixContact(req);
    // fix_nated_register(): route(REGISTRAR) saves the source address.
    vars.setFlag(FLT_NATS);
  }
  return NEXT;
}

/**
 * route[SIPOUT]: routing to foreign domains. Without WITH_AUTH only a trusted
 * source may have us relay there (`trusted` in the host's configuration): a
 * wisp on a public address is no open relay.
 */
function sipout(req: Request): Flow {
  if (req.uriIsMyself()) return NEXT;
  if (!config.enabled("WITH_AUTH") && !req.sourceTrusted()) {
    req.reply(403, "Not relaying");
    return EXIT;
  }
  req.appendHeader("P-hint", "outbound");
  return relay(req);
}

/**
 * route[PSTN] (WITH_PSTN): numbers in international format go to the
 * gateway PSTN_GW_IP (PSTN_GW_PORT, default 5060), for local users only.
 */
function pstn(req: Request): Flow {
  if (!config.enabled("WITH_PSTN")) return NEXT;
  const gw = (config.param("PSTN_GW_IP") ?? "").trim();
  if (gw === "") {
    log.warn("SCRIPT: PSTN routing enabled but PSTN_GW_IP not defined");
    return NEXT;
  }
  const number = req.uriUser();
  if (number === undefined || !/^(\+|00)[1-9][0-9]{3,20}$/.test(number)) return NEXT;
  // only local users allowed to call
  if (!req.fromIsMyself()) {
    req.reply(403, "Not Allowed");
    return EXIT;
  }
  const port = (config.param("PSTN_GW_PORT") ?? "5060").trim();
  req.setUri(`sip:${number}@${gw}:${port}`);
  return relay(req);
}

/**
 * onreply_route[REPLY_ONE]: the Contact of a callee behind NAT is fixed
 * (WITH_NAT; no media relay), and final answers are accounted: a 2xx to an
 * INVITE starts a call, a 2xx to a BYE ends it.
 */
function replyOne(req: Request, res: Response): void {
  if (config.enabled("WITH_NAT") && vars.isFlagSet(FLB_NATB)) nathelper.fixReplyContact(res);
  const status = res.status();
  if (status < 200 || status >= 300 || !vars.isFlagSet(FLT_ACC)) return;
  if (req.isMethod("INVITE")) acc.report(req, "start", res);
  else if (req.isMethod("BYE")) acc.report(req, "stop", res);
}

/**
 * failure_route[FAIL_ONE]: serial forking to the FAILOVER URIs, else
 * accounting of the missed call or failed transaction. A cancelled
 * transaction never gets here (`t_is_canceled` is the host's).
 */
function failOne(req: Request, best: Response): Flow {
  const status = best.status();
  if (req.isMethod("INVITE") && failsOver(status)) {
    const next = nextFailover();
    if (next !== undefined) {
      log.info(`${status} from the last branch: trying ${next}`);
      req.setUri(next);
      req.relay();
      return EXIT;
    }
  }
  if (vars.isFlagSet(FLT_ACCMISSED) || vars.isFlagSet(FLT_ACCFAILED)) {
    acc.report(req, "failed", best);
  }
  return NEXT;
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

/**
 * The host's defaults, Kamailio's fr_inv_timer and fr_timer: `setTimers`
 * sets both, so the one left out must be given as the host would have it.
 */
const DEFAULT_FR_INV_MS = 120_000;
const DEFAULT_FR_MS = 30_000;

/**
 * FR_INV_TIMER_MS and FR_TIMER_MS (`t_set_fr`), when either is set; the one
 * left out keeps its default (120 s and 30 s).
 */
function frTimers(): [number, number] | undefined {
  const invite = u32Param("FR_INV_TIMER_MS");
  const other = u32Param("FR_TIMER_MS");
  if (invite === undefined && other === undefined) return undefined;
  return [invite ?? DEFAULT_FR_INV_MS, other ?? DEFAULT_FR_MS];
}

/** A param parsed like Rust's `str::parse::<u32>` (after trimming), else undefined. */
function u32Param(name: string): number | undefined {
  const text = (config.param(name) ?? "").trim();
  const value = /^\+?[0-9]+$/.test(text) ? Number(text) : NaN;
  return value <= 0xffffffff ? value : undefined;
}

function maxForwardsLimit(): number {
  return u32Param("MAX_FORWARDS") ?? 10;
}
