// wisp's default routing in TypeScript: Kamailio 3.1's default config,
// ported route by route, the same as guests/default (Rust). Each
// route[NAME] is a function named after it; docs/porting-from-kamailio.md
// shows the config and the ports side by side.
//
// Features are switched on by tenant params named after the config's
// defines: WITH_AUTH, WITH_IPAUTH, WITH_USRLOCDB, WITH_PSTN, WITH_NAT. Other
// params (docs/configuration.md): FAILOVER, PARALLEL, PSTN_GW_IP,
// PSTN_GW_PORT; MAX_FORWARDS, FR_INV_TIMER_MS, FR_TIMER_MS, REG_*_EXPIRES
// and REG_MAX_CONTACTS are applied by the host.
//
// Kamailio's `exit` is built in: req.reply, req.relay, req.forward and
// exit() do not return, so a sub-route that decides stops its callers too.
// A refused check (max-forwards, sanity, lookup) answers with the reply it
// carries; saveAndReply and authorizeOrChallenge have the host answer (the
// 200 OK or refusal of a REGISTER, the challenge) and stop the hook.

import {
  Request,
  Response,
  WispError,
  acc,
  arm,
  auth as digest,
  config,
  exit,
  log,
  nat as nathelper,
  permissions,
  registrar as usrloc,
  vars,
  type Hooks,
} from "@wisp/sdk";

// Flags of the default config: a flag is a transaction variable that is set.
// The accounting flags (1: log_flag, 2: log_missed_flag, 3:
// failed_transaction_flag) are the host's: acc.account, whose records the
// host writes when the transaction ends, as Kamailio's acc module does.
/** setflag(5): the caller is behind NAT. */
const FLT_NATS = "flt_nats";
/** setbflag(6): the callee is behind NAT. */
const FLB_NATB = "flb_natb";
/** The transaction variable holding the FAILOVER URIs not tried yet. */
const FAILOVER_VAR = "failover";

/** The main `route { ... }` block. */
export function route(req: Request): void {
  reqinit(req);
  nat(req);
  withindlg(req);

  // A CANCEL matching a relayed INVITE was handled by the host; one that
  // reaches the script matches no transaction: dropped, as Kamailio's
  // config does, so that no one can have us send CANCELs anywhere.
  if (req.isMethod("CANCEL")) exit();

  auth(req);

  // Preloaded Route headers are not followed on initial requests.
  req.fields.remove("Route");
  if (req.isMethod("INVITE", "SUBSCRIBE")) req.recordRoute();
  if (req.isMethod("INVITE")) acc.account({ answered: true }); // setflag(FLT_ACC): do accounting

  sipout(req);
  presence(req);
  registrar(req);

  if (req.uriUser() === undefined) {
    // wisp answers keepalive OPTIONS to itself (siputils' options_reply).
    if (req.isMethod("OPTIONS")) req.reply(200, "OK");
    req.reply(484, "Address Incomplete");
  }

  pstn(req);
  location(req);
  relay(req);
}

/**
 * route[RELAY]: stateful relay (`t_relay()`), with the parallel branches
 * and failover the params ask for; the timers are the host's (FR_*_MS).
 * The reply and failure hooks are armed when they have work
 * (`t_on_reply("REPLY_ONE")` for a callee behind NAT,
 * `t_on_failure("FAIL_ONE")` for an INVITE with FAILOVER URIs), and the
 * branch hook never (`#t_on_branch("BRANCH_ONE")`, commented out in the
 * config too): a hook not armed costs nothing.
 */
function relay(req: Request): never {
  // WITH_NAT: route(RTPPROXY) would anchor the media here; wisp has no
  // media relay, so only the signalling is fixed (see route[NAT]).
  const hooks: Hooks = {};
  // The flag is read only where it can be set: config is read once per
  // instance, a variable is a call to the host.
  if (config.enabled("WITH_NAT") && vars.has(FLB_NATB)) hooks.onReply = true;
  if (req.isMethod("INVITE")) {
    for (const uri of list(config.param("PARALLEL"))) {
      // Past the branch limit (a lookup may have used it up) the call goes
      // on with the branches it has.
      try {
        req.appendBranch(uri);
      } catch (err) {
        log.warn(`PARALLEL ${uri}: ${err}`);
      }
    }
    const failover = list(config.param("FAILOVER"));
    if (failover.length > 0) {
      vars.set(FAILOVER_VAR, failover.join(","));
      hooks.onFailure = true;
    }
  }
  arm(hooks);
  req.relay();
}

/** route[REQINIT]: loop and sanity checks (483, 400, 420 by the host). */
function reqinit(req: Request): void {
  req.maxForwards();
  try {
    req.sanityCheck();
  } catch (err) {
    if (err instanceof WispError) {
      const { ip, port } = req.info.source;
      log.info(`Malformed SIP message from ${ip}:${port}: ${err.detail}`);
    }
    throw err;
  }
}

/**
 * route[WITHINDLG]: requests inside a dialog follow its Route set, when the
 * Route is one we record-routed for the dialog ourselves (its integrity tag
 * checks) or the sender is trusted or authenticates. Anything else is a
 * request dressed up as in-dialog to be relayed without authentication
 * (toll fraud): refused.
 */
function withindlg(req: Request): void {
  if (!req.info.inDialog) return;
  const route = req.looseRoute();
  if (route === "none") {
    // An ACK without Route matches nothing of ours (the ACK of a refusal we
    // sent is absorbed by the host): dropped, as Kamailio's config does.
    if (req.isMethod("ACK")) exit();
    req.reply(404, "Not here");
  }
  if (route === "unverified" && !req.info.sourceTrusted) {
    if (req.isMethod("ACK")) exit();
    if (!config.enabled("WITH_AUTH")) req.reply(403, "Not relaying");
    auth(req);
    // auth() lets outsiders reach our domain: a Route to follow is not that.
    if (!req.fromIsMyself()) req.reply(403, "Not relaying");
  }
  if (req.isMethod("BYE")) {
    // setflag(FLT_ACC): do accounting ...
    // setflag(FLT_ACCFAILED): ... even if the transaction fails
    acc.account({ answered: true, failed: true });
  }
  // The ACK of a 2xx is a transaction of its own: relayed statelessly.
  if (req.isMethod("ACK")) req.forward();
  relay(req);
}

/** route[REGISTRAR]: REGISTER requests are handled by the location service. */
function registrar(req: Request): void {
  if (!req.isMethod("REGISTER")) return;
  // setbflag(FLB_NATB) when the caller is behind NAT; the expiry limits
  // are the host's (REG_* params). save("location"): answers with its
  // 200 OK, or the refusal (sl_reply_error()), by itself; then exit.
  usrloc.saveAndReply(req, { persistent: config.enabled("WITH_USRLOCDB"), nat: config.enabled("WITH_NAT") && vars.has(FLT_NATS) });
}

/**
 * route[LOCATION]: the Request-URI becomes the user's registered contacts
 * (404 or 405 by the host; 500 when the store failed, where Kamailio's
 * config answers 404: a failed store says nothing about the user).
 */
function location(req: Request): void {
  if (usrloc.lookup(req).nat) vars.set(FLB_NATB);
  if (req.isMethod("INVITE")) acc.account({ failed: true }); // setflag(FLT_ACCMISSED)
}

/**
 * route[PRESENCE]: no presence server here (WITH_PRESENCE is not ported):
 * PUBLISH is refused, SUBSCRIBE goes to the user like any request.
 */
function presence(req: Request): void {
  if (req.isMethod("PUBLISH") || (req.isMethod("SUBSCRIBE") && req.uriUser() === undefined)) {
    req.reply(404, "Not here");
  }
}

/**
 * route[AUTH] (WITH_AUTH): REGISTERs authenticate against the To domain;
 * other requests from our own domain against the From domain, and requests
 * from elsewhere must be for our domain (no open relay).
 * authorizeOrChallenge answers with the challenge by itself (www_challenge,
 * proxy_challenge: 401 or 407) when the credentials do not check.
 */
function auth(req: Request): void {
  if (!config.enabled("WITH_AUTH")) return;
  if (req.isMethod("REGISTER")) {
    if (digest.authorizeOrChallenge(req, req.toHost()) !== req.toUser()) req.reply(403, "Forbidden auth ID");
    return;
  }
  // source IP allowed
  if (config.enabled("WITH_IPAUTH") && permissions.allowSourceAddress(req)) return;
  if (req.fromIsMyself()) {
    // authenticate if from local subscriber
    const claimed = req.isMethod("PUBLISH") ? req.toUser() : req.fromUser();
    if (digest.authorizeOrChallenge(req, req.fromHost()) !== claimed) req.reply(403, "Forbidden auth ID");
    digest.consumeCredentials(req);
    // caller authenticated
  } else if (!req.info.uriIsMyself) {
    // not a local subscriber and a foreign destination: not an open relay
    req.reply(403, "Not relaying");
  }
}

/** route[NAT] (WITH_NAT): caller NAT detection. */
function nat(req: Request): void {
  if (!config.enabled("WITH_NAT")) return;
  nathelper.forceRport(req);
  // nat_uac_test("19")
  if (nathelper.uacTest(req, "privateContact", "viaAddressDiffers", "viaPortDiffers")) {
    if (!req.isMethod("REGISTER")) nathelper.fixContact(req);
    // fix_nated_register(): route(REGISTRAR) saves the source address.
    vars.set(FLT_NATS);
  }
}

/**
 * route[SIPOUT]: routing to foreign domains. Without WITH_AUTH only a trusted
 * source may have us relay there (`trusted` in the host's configuration): a
 * wisp on a public address is no open relay.
 */
function sipout(req: Request): void {
  if (req.info.uriIsMyself) return;
  if (!config.enabled("WITH_AUTH") && !req.info.sourceTrusted) req.reply(403, "Not relaying");
  req.fields.append("P-hint", "outbound");
  relay(req);
}

/**
 * route[PSTN] (WITH_PSTN): numbers in international format go to the
 * gateway PSTN_GW_IP (PSTN_GW_PORT, default 5060), for local users only.
 */
function pstn(req: Request): void {
  if (!config.enabled("WITH_PSTN")) return;
  const gw = config.param("PSTN_GW_IP")?.trim();
  if (!gw) {
    log.warn("SCRIPT: PSTN routing enabled but PSTN_GW_IP not defined");
    return;
  }
  const number = req.uriUser();
  if (number === undefined || !/^(\+|00)[1-9][0-9]{3,20}$/.test(number)) return;
  // only local users allowed to call
  if (!req.fromIsMyself()) req.reply(403, "Not Allowed");
  req.setUri(`sip:${number}@${gw}:${config.param("PSTN_GW_PORT")?.trim() ?? "5060"}`);
  relay(req);
}

/**
 * onreply_route[REPLY_ONE], armed by route[RELAY] for a callee behind NAT:
 * its Contact is fixed (WITH_NAT; no media relay). Final answers are
 * accounted by the host (acc.account).
 */
export function onReply(_req: Request, res: Response): void {
  if (config.enabled("WITH_NAT") && vars.has(FLB_NATB)) nathelper.fixReplyContact(res);
}

/**
 * failure_route[FAIL_ONE], armed by route[RELAY] for an INVITE with
 * FAILOVER URIs: serial forking to them on 486, 408 and 5xx
 * (`t_check_status`); else the best response goes upstream, and the host
 * accounts the missed call or failed transaction (acc.account). A
 * cancelled transaction never gets here (`t_is_canceled` is the host's).
 */
export function onFailure(req: Request, best: Response): void {
  const status = best.status();
  if (req.isMethod("INVITE") && (status === 486 || status === 408 || (status >= 500 && status < 600))) {
    const [next, ...rest] = list(vars.get(FAILOVER_VAR));
    if (next !== undefined) {
      if (rest.length > 0) vars.set(FAILOVER_VAR, rest.join(","));
      else vars.remove(FAILOVER_VAR);
      log.info(`${status} from the last branch: trying ${next}`);
      req.setUri(next);
      req.relay();
    }
  }
}

/** A comma-separated list, blanks trimmed and empty entries skipped. */
function list(value = ""): string[] {
  return value
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
}
