//! wisp's bundled routing: Kamailio 3.1's default config
//! (`/etc/kamailio/kamailio.cfg`), ported route by route. Each
//! `route[NAME]` is a function named after it; `docs/porting-from-kamailio.md`
//! shows the two side by side.
//!
//! Features are switched on by tenant params named after the config's
//! defines: `WITH_AUTH`, `WITH_IPAUTH`, `WITH_USRLOCDB`, `WITH_PSTN`,
//! `WITH_NAT` (`params = { WITH_AUTH = "yes" }`). Without any, it is the
//! config with every `#!define` commented out: a registrar and proxy for
//! the local domain that relays to other domains for trusted sources only
//! (`trusted` in the host's configuration). Other params: see
//! docs/configuration.md (`MAX_FORWARDS`, `FAILOVER`, `PARALLEL`,
//! `FR_INV_TIMER_MS`, `FR_TIMER_MS`, `PSTN_GW_IP`, `PSTN_GW_PORT`,
//! `REG_*_EXPIRES`, `REG_MAX_CONTACTS`).
//!
//! Kamailio's `exit` is [`Flow::Exit`]: a route that answered, relayed or
//! dropped the request returns it, and [`run!`] stops the caller there.

use wisp_sdk::prelude::*;
use wisp_sdk::registrar::{LookupError, SaveOptions};

/// What a route tells its caller: go on with the next statement, or stop
/// (Kamailio's `exit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Next,
    Exit,
}
use Flow::{Exit, Next};

/// `route(NAME);` — runs a sub-route and stops the caller on `exit`.
macro_rules! run {
    ($route:expr) => {
        if $route? == Exit {
            return Ok(Exit);
        }
    };
}

// Flags of the default config.
/// `setflag(1)`: account this transaction.
const FLT_ACC: u8 = 1;
/// `setflag(2)`: account a missed call.
const FLT_ACCMISSED: u8 = 2;
/// `setflag(3)`: account a failed transaction.
const FLT_ACCFAILED: u8 = 3;
/// `setflag(5)`: the caller is behind NAT.
const FLT_NATS: u8 = 5;
/// `setbflag(6)`: the callee is behind NAT.
const FLB_NATB: u8 = 6;

struct DefaultRouting;

impl Router for DefaultRouting {
    /// The main `route { ... }` block.
    fn route(req: &Request) -> Result<()> {
        request_route(req).map(|_| ())
    }

    /// `onreply_route[REPLY_ONE]`: accounting of answered calls and hung-up
    /// calls (`acc` with `log_flag` 1).
    fn on_reply(req: &Request, res: &Response) -> bool {
        reply_one(req, res);
        true
    }

    /// `failure_route[FAIL_ONE]`.
    fn on_failure(req: &Request, best: &Response) -> Result<()> {
        fail_one(req, best).map(|_| ())
    }
}

fn request_route(req: &Request) -> Result<Flow> {
    run!(reqinit(req));
    run!(nat(req));
    run!(withindlg(req));

    // A CANCEL matching a relayed INVITE was handled by the host (200,
    // then CANCEL on every pending branch: `t_check_trans(); t_relay()`).
    // One that reaches the script matches no transaction: dropped, as
    // Kamailio's config does (`if (t_check_trans()) ...; exit;`), so that
    // no one can have us send CANCELs anywhere.
    if req.is_method(&["CANCEL"]) {
        return Ok(Exit);
    }
    // t_check_trans(): retransmissions were absorbed by the host.

    run!(auth(req));

    // Preloaded Route headers are not followed on initial requests.
    req.remove_header("Route");
    if req.is_method(&["INVITE", "SUBSCRIBE"]) {
        req.record_route()?;
    }
    if req.is_method(&["INVITE"]) {
        vars::set_flag(FLT_ACC); // do accounting
    }

    run!(sipout(req));
    run!(presence(req));
    run!(registrar(req));

    if req.uri_user().is_none() {
        // wisp answers keepalive OPTIONS to itself (siputils' options_reply).
        if req.is_method(&["OPTIONS"]) {
            req.reply(200, "OK")?;
            return Ok(Exit);
        }
        req.reply(484, "Address Incomplete")?;
        return Ok(Exit);
    }

    run!(pstn(req));
    run!(location(req));
    relay(req)
}

/// route[RELAY]: stateful relay (`t_relay()`), with the timers and the
/// parallel branches the params ask for. The reply and failure hooks are
/// always armed (`t_on_reply("REPLY_ONE")`, `t_on_failure("FAIL_ONE")`).
fn relay(req: &Request) -> Result<Flow> {
    // WITH_NAT: route(RTPPROXY) would anchor the media here; wisp has no
    // media relay, so only the signalling is fixed (see route[NAT]).
    if let Some((invite_ms, final_ms)) = fr_timers() {
        req.set_timers(invite_ms, final_ms);
    }
    if req.is_method(&["INVITE"]) {
        for uri in uri_list("PARALLEL") {
            // Past the branch limit (a lookup may have used it up) the
            // call goes on with the branches it has.
            if let Err(err) = req.append_branch(&uri) {
                log::warn(&format!("PARALLEL {uri}: {err}"));
            }
        }
        if let Some(failover) = config::param("FAILOVER") {
            vars::set(FAILOVER_VAR, Some(&failover));
        }
    }
    if let Err(err) = req.relay() {
        // sl_reply_error()
        log::info(&format!("relay failed: {err}"));
        req.reply(500, "Server Internal Error")?;
    }
    Ok(Exit)
}

/// route[REQINIT]: loop and sanity checks.
fn reqinit(req: &Request) -> Result<Flow> {
    if let Err(rejection) = req.max_forwards(max_forwards_limit()) {
        req.reject(&rejection)?;
        return Ok(Exit);
    }
    if let Err(rejection) = req.sanity_check() {
        let source = req.source();
        log::info(&format!(
            "Malformed SIP message from {}:{}: {}",
            source.ip, source.port, rejection.reason
        ));
        req.reject(&rejection)?;
        return Ok(Exit);
    }
    Ok(Next)
}

/// route[WITHINDLG]: requests inside a dialog follow its Route set, when
/// the Route is one we record-routed for the dialog ourselves (its
/// integrity tag checks) or the sender is trusted or authenticates.
/// Anything else is a request dressed up as in-dialog to be relayed
/// without authentication (toll fraud): refused.
fn withindlg(req: &Request) -> Result<Flow> {
    if !req.has_to_tag() {
        return Ok(Next);
    }
    if req.loose_route() {
        if !req.route_verified() && !req.source_trusted() {
            if req.is_method(&["ACK"]) {
                return Ok(Exit);
            }
            if !config::enabled("WITH_AUTH") {
                req.reply(403, "Not relaying")?;
                return Ok(Exit);
            }
            run!(auth(req));
            if !req.from_is_myself() {
                // auth() lets outsiders reach our domain: a Route to
                // follow is not that.
                req.reply(403, "Not relaying")?;
                return Ok(Exit);
            }
        }
        if req.is_method(&["BYE"]) {
            vars::set_flag(FLT_ACC); // do accounting ...
            vars::set_flag(FLT_ACCFAILED); // ... even if the transaction fails
        }
        if req.is_method(&["ACK"]) {
            // The ACK of a 2xx is a transaction of its own: relayed
            // statelessly (the ACK of a negative answer never gets here).
            req.forward()?;
            return Ok(Exit);
        }
        return relay(req);
    }
    if req.is_method(&["ACK"]) {
        // An ACK without Route matches nothing of ours (the ACK of a
        // refusal we sent is absorbed here): dropped, as Kamailio's
        // config does after `t_check_trans()`.
        return Ok(Exit);
    }
    req.reply(404, "Not here")?;
    Ok(Exit)
}

/// route[REGISTRAR]: REGISTER requests are handled by the location service.
fn registrar(req: &Request) -> Result<Flow> {
    if !req.is_method(&["REGISTER"]) {
        return Ok(Next);
    }
    if vars::is_flag_set(FLT_NATS) {
        vars::set_flag(FLB_NATB);
    }
    let options = SaveOptions {
        persistent: config::enabled("WITH_USRLOCDB"),
        nat: vars::is_flag_set(FLB_NATB),
        default_expires: param_u32("REG_DEFAULT_EXPIRES", 3600),
        min_expires: param_u32("REG_MIN_EXPIRES", 60),
        max_expires: param_u32("REG_MAX_EXPIRES", 3600),
        max_contacts: param_u32("REG_MAX_CONTACTS", 0),
    };
    if let Err(rejection) = registrar::save(req, options) {
        req.reject(&rejection)?; // sl_reply_error()
    }
    Ok(Exit)
}

/// route[LOCATION]: the Request-URI becomes the user's registered contacts.
fn location(req: &Request) -> Result<Flow> {
    match registrar::lookup(req) {
        Ok(found) => {
            if found.nat {
                vars::set_flag(FLB_NATB);
            }
        }
        Err(LookupError::NotFound) => {
            req.reply(404, "Not Found")?;
            return Ok(Exit);
        }
        // Kamailio's default config answers -3 with 404 too; a failed
        // store says nothing about the user: 500.
        Err(LookupError::Storage) => {
            req.reply(500, "Server Internal Error")?;
            return Ok(Exit);
        }
        Err(LookupError::MethodNotAllowed) => {
            req.reply(405, "Method Not Allowed")?;
            return Ok(Exit);
        }
    }
    if req.is_method(&["INVITE"]) {
        vars::set_flag(FLT_ACCMISSED);
    }
    Ok(Next)
}

/// route[PRESENCE]: no presence server here (`WITH_PRESENCE` is not
/// ported): PUBLISH is refused, SUBSCRIBE goes to the user like any request.
fn presence(req: &Request) -> Result<Flow> {
    if !req.is_method(&["PUBLISH", "SUBSCRIBE"]) {
        return Ok(Next);
    }
    if req.is_method(&["PUBLISH"]) || req.uri_user().is_none() {
        req.reply(404, "Not here")?;
        return Ok(Exit);
    }
    Ok(Next)
}

/// route[AUTH] (`WITH_AUTH`): REGISTERs authenticate against the To
/// domain; other requests from our own domain against the From domain,
/// and requests from elsewhere must be for our domain (no open relay).
fn auth(req: &Request) -> Result<Flow> {
    if !config::enabled("WITH_AUTH") {
        return Ok(Next);
    }
    if req.is_method(&["REGISTER"]) {
        let realm = req.to_host();
        let auth::Outcome::Authorized(user) = auth::www_authorize(req, &realm) else {
            auth::www_challenge(req, &realm);
            return Ok(Exit);
        };
        if Some(user) != req.to_user() {
            req.reply(403, "Forbidden auth ID")?;
            return Ok(Exit);
        }
        return Ok(Next);
    }

    if config::enabled("WITH_IPAUTH") && permissions::allow_source_address(req) {
        // source IP allowed
        return Ok(Next);
    }

    if req.from_is_myself() {
        // authenticate if from local subscriber
        let realm = req.from_host();
        let auth::Outcome::Authorized(user) = auth::proxy_authorize(req, &realm) else {
            auth::proxy_challenge(req, &realm);
            return Ok(Exit);
        };
        let claimed = if req.is_method(&["PUBLISH"]) {
            req.to_user()
        } else {
            req.from_user()
        };
        if Some(user) != claimed {
            req.reply(403, "Forbidden auth ID")?;
            return Ok(Exit);
        }
        auth::consume_credentials(req);
        // caller authenticated
    } else if !req.uri_is_myself() {
        // caller is not a local subscriber and calls a foreign
        // destination: not an open relay here
        req.reply(403, "Not relaying")?;
        return Ok(Exit);
    }
    Ok(Next)
}

/// route[NAT] (`WITH_NAT`): caller NAT detection.
fn nat(req: &Request) -> Result<Flow> {
    if !config::enabled("WITH_NAT") {
        return Ok(Next);
    }
    nat::force_rport(req);
    // nat_uac_test("19"): private Contact, Via address or port differing
    // from the source.
    if nat::uac_test(
        req,
        nat::CONTACT_PRIVATE | nat::VIA_ADDRESS_DIFFERS | nat::VIA_PORT_DIFFERS,
    ) {
        if !req.is_method(&["REGISTER"]) {
            nat::fix_contact(req);
        }
        // fix_nated_register(): route(REGISTRAR) saves the source address.
        vars::set_flag(FLT_NATS);
    }
    Ok(Next)
}

/// route[SIPOUT]: routing to foreign domains. Without `WITH_AUTH` only a
/// trusted source may have us relay there (`trusted` in the host's
/// configuration): a wisp on a public address is no open relay.
fn sipout(req: &Request) -> Result<Flow> {
    if req.uri_is_myself() {
        return Ok(Next);
    }
    if !config::enabled("WITH_AUTH") && !req.source_trusted() {
        req.reply(403, "Not relaying")?;
        return Ok(Exit);
    }
    req.append_header("P-hint", "outbound")?;
    relay(req)
}

/// route[PSTN] (`WITH_PSTN`): numbers in international format go to the
/// gateway `PSTN_GW_IP` (`PSTN_GW_PORT`, default 5060), for local users only.
fn pstn(req: &Request) -> Result<Flow> {
    if !config::enabled("WITH_PSTN") {
        return Ok(Next);
    }
    let Some(gw) = config::param("PSTN_GW_IP").filter(|g| !g.trim().is_empty()) else {
        log::warn("SCRIPT: PSTN routing enabled but PSTN_GW_IP not defined");
        return Ok(Next);
    };
    let Some(number) = req.uri_user().filter(|u| is_pstn_number(u)) else {
        return Ok(Next);
    };
    // only local users allowed to call
    if !req.from_is_myself() {
        req.reply(403, "Not Allowed")?;
        return Ok(Exit);
    }
    let port = config::param("PSTN_GW_PORT").unwrap_or_else(|| "5060".into());
    req.set_uri(&format!("sip:{number}@{}:{}", gw.trim(), port.trim()))?;
    relay(req)
}

/// `$rU =~ "^(\+|00)[1-9][0-9]{3,20}$"`: a number in international format.
fn is_pstn_number(user: &str) -> bool {
    let digits = user
        .strip_prefix('+')
        .or_else(|| user.strip_prefix("00"))
        .unwrap_or("");
    let mut chars = digits.chars();
    matches!(chars.next(), Some('1'..='9'))
        && (4..=21).contains(&digits.len())
        && digits.chars().all(|c| c.is_ascii_digit())
}

/// onreply_route[REPLY_ONE]: the Contact of a callee behind NAT is fixed
/// (`WITH_NAT`; Kamailio also anchors media here, wisp has no media relay),
/// and final answers are accounted (`acc` `log_flag`): a 2xx to an INVITE
/// starts a call, a 2xx to a BYE ends it.
fn reply_one(req: &Request, res: &Response) {
    if config::enabled("WITH_NAT") && vars::is_flag_set(FLB_NATB) {
        nat::fix_reply_contact(res);
    }
    let status = res.status();
    if !(200..300).contains(&status) || !vars::is_flag_set(FLT_ACC) {
        return;
    }
    let event = if req.is_method(&["INVITE"]) {
        acc::Event::Start
    } else if req.is_method(&["BYE"]) {
        acc::Event::Stop
    } else {
        return;
    };
    acc::report(req, event, res);
}

/// failure_route[FAIL_ONE]: serial forking to the `FAILOVER` URIs
/// (`t_check_status("486|408|5[0-9][0-9]")`, then a new branch), else
/// accounting of the missed call or failed transaction. A cancelled
/// transaction never gets here (`t_is_canceled()` is the host's).
fn fail_one(req: &Request, best: &Response) -> Result<Flow> {
    let status = best.status();
    if req.is_method(&["INVITE"]) && fails_over(status) {
        if let Some(next) = next_failover() {
            log::info(&format!("{status} from the last branch: trying {next}"));
            req.set_uri(&next)?;
            req.relay()?;
            return Ok(Exit);
        }
    }
    if vars::is_flag_set(FLT_ACCMISSED) || vars::is_flag_set(FLT_ACCFAILED) {
        acc::report(req, acc::Event::Failed, best);
    }
    Ok(Next)
}

/// The per-transaction variable holding the `FAILOVER` URIs not tried yet.
const FAILOVER_VAR: &str = "failover";

/// Whether a final answer calls for the next `FAILOVER` URI.
fn fails_over(status: u16) -> bool {
    status == 486 || status == 408 || (500..600).contains(&status)
}

/// Pops the next URI off the transaction's failover list.
fn next_failover() -> Option<String> {
    let list = vars::get(FAILOVER_VAR)?;
    let mut uris = split_list(&list);
    if uris.is_empty() {
        vars::set(FAILOVER_VAR, None);
        return None;
    }
    let next = uris.remove(0);
    let rest = uris.join(",");
    vars::set(FAILOVER_VAR, (!rest.is_empty()).then_some(rest.as_str()));
    Some(next)
}

/// A comma-separated list param, blanks trimmed and empty entries skipped.
fn uri_list(name: &str) -> Vec<String> {
    config::param(name)
        .map(|v| split_list(&v))
        .unwrap_or_default()
}

fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A numeric param, or its default when unset or not a number.
fn param_u32(name: &str, default: u32) -> u32 {
    config::param(name)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// `FR_INV_TIMER_MS` and `FR_TIMER_MS` (`t_set_fr`), when either is set;
/// the one left out keeps its default (120 s and 30 s).
fn fr_timers() -> Option<(u32, u32)> {
    let ms = |name| config::param(name).and_then(|v| v.trim().parse::<u32>().ok());
    let (invite, other) = (ms("FR_INV_TIMER_MS"), ms("FR_TIMER_MS"));
    if invite.is_none() && other.is_none() {
        return None;
    }
    Some((
        invite.unwrap_or(DEFAULT_FR_INV_MS),
        other.unwrap_or(DEFAULT_FR_MS),
    ))
}

/// The host's defaults, Kamailio's fr_inv_timer and fr_timer: `set_timers`
/// sets both, so the one left out must be given as the host would have it.
const DEFAULT_FR_INV_MS: u32 = 120_000;
const DEFAULT_FR_MS: u32 = 30_000;

fn max_forwards_limit() -> u32 {
    param_u32("MAX_FORWARDS", 10)
}

wisp_sdk::export_router!(DefaultRouting);
