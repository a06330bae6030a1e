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
//! docs/configuration.md (`FAILOVER`, `PARALLEL`, `PSTN_GW_IP`,
//! `PSTN_GW_PORT`; `MAX_FORWARDS`, `FR_INV_TIMER_MS`, `FR_TIMER_MS` and
//! `REG_*` are read by the host as the defaults of the calls here).
//!
//! Kamailio's `route(NAME);` is `name(req)?;`: a sub-route that answered,
//! relayed or dropped the request returns that decision as an `Err`, and
//! `?` stops the caller there, as Kamailio's `exit` does. A check that
//! fails with a reply to send (483, a challenge, 404...) answers by
//! itself through the same `?`.

use std::sync::OnceLock;

use wisp_sdk::nat::NatSigns;
use wisp_sdk::prelude::*;
use wisp_sdk::registrar::SaveFlags;

// Flags of the default config: a flag is a transaction variable that is set.
// The accounting flags (1: log_flag, 2: log_missed_flag, 3:
// failed_transaction_flag) are the host's: `acc::account`, whose records
// the host writes when the transaction ends, as Kamailio's acc module does.
/// `setflag(5)`: the caller is behind NAT.
const FLT_NATS: &str = "flt_nats";
/// `setbflag(6)`: the callee is behind NAT.
const FLB_NATB: &str = "flb_natb";
/// The transaction variable holding the `FAILOVER` URIs not tried yet.
const FAILOVER_VAR: &str = "failover";

/// The tenant params this routing reads, read once per instance, as
/// Kamailio's preprocessor fixes the `#!define`s when it reads its config:
/// a tenant's params are fixed for the life of an instance (changing them
/// loads new instances). Asked on every request instead, the names were
/// compared and the URI lists split again each time: a tenth of an
/// INVITE's route hook (issue #15).
struct Settings {
    /// `WITH_NAT`.
    nat: bool,
    /// `WITH_AUTH`.
    auth: bool,
    /// `WITH_IPAUTH`.
    ipauth: bool,
    /// `WITH_USRLOCDB`.
    usrlocdb: bool,
    /// `WITH_PSTN`.
    pstn: bool,
    /// `PSTN_GW_IP`, trimmed; none when unset or blank.
    pstn_gw_ip: Option<String>,
    /// `PSTN_GW_PORT`, trimmed (default 5060).
    pstn_gw_port: String,
    /// `PARALLEL`: URIs to fork an INVITE to.
    parallel: Vec<String>,
    /// `FAILOVER`, comma-joined as [`FAILOVER_VAR`] keeps it; empty when
    /// there is none.
    failover: String,
}

impl Settings {
    fn read() -> Settings {
        let param = |name| config::param(name).unwrap_or_default();
        let trimmed = |value: String| value.trim().to_owned();
        let pstn_gw_ip = Some(trimmed(param("PSTN_GW_IP"))).filter(|ip| !ip.is_empty());
        let pstn_gw_port = config::param("PSTN_GW_PORT").unwrap_or_else(|| "5060".into());
        Settings {
            nat: config::enabled("WITH_NAT"),
            auth: config::enabled("WITH_AUTH"),
            ipauth: config::enabled("WITH_IPAUTH"),
            usrlocdb: config::enabled("WITH_USRLOCDB"),
            pstn: config::enabled("WITH_PSTN"),
            pstn_gw_ip,
            pstn_gw_port: trimmed(pstn_gw_port),
            parallel: uri_list(&param("PARALLEL")),
            failover: uri_list(&param("FAILOVER")).join(","),
        }
    }
}

/// This instance's [`Settings`].
fn settings() -> &'static Settings {
    static SETTINGS: OnceLock<Settings> = OnceLock::new();
    SETTINGS.get_or_init(Settings::read)
}

struct DefaultRouting;

impl Router for DefaultRouting {
    /// The main `route { ... }` block.
    fn route(req: &Request) -> Flow {
        reqinit(req)?;
        nat(req)?;
        withindlg(req)?;

        // A CANCEL matching a relayed INVITE was handled by the host (200,
        // then CANCEL on every pending branch: `t_check_trans(); t_relay()`).
        // One that reaches the script matches no transaction: dropped, as
        // Kamailio's config does (`if (t_check_trans()) ...; exit;`), so that
        // no one can have us send CANCELs anywhere.
        if *req.method() == Method::Cancel {
            return req.exit();
        }
        // t_check_trans(): retransmissions were absorbed by the host.

        auth(req)?;

        // Preloaded Route headers are not followed on initial requests.
        req.remove_header("Route")?;
        if matches!(req.method(), Method::Invite | Method::Subscribe) {
            req.record_route()?;
        }
        if *req.method() == Method::Invite {
            acc::account(acc::Accounted::ANSWERED); // setflag(FLT_ACC): do accounting
        }

        sipout(req)?;
        presence(req)?;
        registrar(req)?;

        if req.uri_user().is_none() {
            // wisp answers keepalive OPTIONS to itself (siputils' options_reply).
            if *req.method() == Method::Options {
                return req.reply(200, "OK");
            }
            return req.reply(484, "Address Incomplete");
        }

        pstn(req)?;
        location(req)?;
        relay(req)
    }

    /// onreply_route[REPLY_ONE], armed by route[RELAY] for a callee behind
    /// NAT: its Contact is fixed (`WITH_NAT`; Kamailio also anchors media
    /// here, wisp has no media relay). Final answers are accounted by the
    /// host (`acc::account`).
    fn on_reply(_req: &Request, res: &Response) -> Flow {
        if settings().nat && vars::is_set(FLB_NATB) {
            nat::fix_reply_contact(res);
        }
        Ok(())
    }

    /// failure_route[FAIL_ONE], armed by route[RELAY] for an INVITE with
    /// `FAILOVER` URIs: serial forking to them
    /// (`t_check_status("486|408|5[0-9][0-9]")`, then a new branch); else
    /// the best response goes upstream, and the host accounts the missed
    /// call or failed transaction (`acc::account`). A cancelled
    /// transaction never gets here (`t_is_canceled()` is the host's).
    fn on_failure(req: &Request, best: &Response) -> Flow {
        let status = best.status();
        let fails_over = status == 486 || status == 408 || (500..600).contains(&status);
        if *req.method() == Method::Invite && fails_over {
            if let Some(next) = next_failover()? {
                log::info(&format!("{status} from the last branch: trying {next}"));
                req.set_uri(&next)?;
                return req.relay();
            }
        }
        Ok(())
    }
}

/// route[RELAY]: stateful relay (`t_relay()`), with the parallel branches
/// the params ask for; the timers are the tenant's `FR_INV_TIMER_MS` and
/// `FR_TIMER_MS` (`t_set_fr`). The reply and failure hooks are armed when
/// they have work (`t_on_reply("REPLY_ONE")` for a callee behind NAT,
/// `t_on_failure("FAIL_ONE")` for an INVITE with `FAILOVER` URIs), and the
/// branch hook never (`#t_on_branch("BRANCH_ONE")`, commented out in the
/// config too): a hook not armed costs nothing. A relay the host cannot
/// make is answered 500 (`sl_reply_error()`).
fn relay(req: &Request) -> Flow {
    // WITH_NAT: route(RTPPROXY) would anchor the media here; wisp has no
    // media relay, so only the signalling is fixed (see route[NAT]).
    let settings = settings();
    let mut hooks = Hooks::empty();
    // The flag is read only where it can be set: settings are read once
    // per instance, a variable is a call to the host.
    if settings.nat && vars::is_set(FLB_NATB) {
        hooks |= Hooks::ON_REPLY;
    }
    if *req.method() == Method::Invite {
        for uri in &settings.parallel {
            // Past the branch limit (a lookup may have used it up) the
            // call goes on with the branches it has.
            if let Err(err) = req.append_branch(uri) {
                log::warn(&format!("PARALLEL {uri}: {err}"));
            }
        }
        if !settings.failover.is_empty() {
            vars::set(FAILOVER_VAR, &settings.failover)?;
            hooks |= Hooks::ON_FAILURE;
        }
    }
    arm(hooks);
    req.relay()
}

/// route[REQINIT]: loop and sanity checks. `mf_process_maxfwd_header`
/// answers 483 by itself (limit: the param `MAX_FORWARDS`, else 10), and
/// `sanity_check` the reply its failure calls for.
fn reqinit(req: &Request) -> Flow {
    req.max_forwards(None)?;
    req.sanity_check().inspect_err(|err| {
        let source = req.source();
        log::info(&format!(
            "Malformed SIP message from {}:{}: {err}",
            source.ip, source.port
        ));
    })?;
    Ok(())
}

/// route[WITHINDLG]: requests inside a dialog follow its Route set, when
/// the Route is one we record-routed for the dialog ourselves (its
/// integrity tag checks) or the sender is trusted or authenticates.
/// Anything else is a request dressed up as in-dialog to be relayed
/// without authentication (toll fraud): refused.
fn withindlg(req: &Request) -> Flow {
    if !req.in_dialog() {
        return Ok(());
    }
    match req.loose_route() {
        RouteCheck::None => {
            if *req.method() == Method::Ack {
                // An ACK without Route matches nothing of ours (the ACK of a
                // refusal we sent is absorbed here): dropped, as Kamailio's
                // config does after `t_check_trans()`.
                return req.exit();
            }
            return req.reply(404, "Not here");
        }
        RouteCheck::Unverified if !req.source_trusted() => {
            if *req.method() == Method::Ack {
                return req.exit();
            }
            if !settings().auth {
                return req.reply(403, "Not relaying");
            }
            auth(req)?;
            if !req.from_is_myself() {
                // auth() lets outsiders reach our domain: a Route to
                // follow is not that.
                return req.reply(403, "Not relaying");
            }
        }
        RouteCheck::Unverified | RouteCheck::Verified => {}
    }
    if *req.method() == Method::Bye {
        // setflag(FLT_ACC): do accounting ...
        // setflag(FLT_ACCFAILED): ... even if the transaction fails
        acc::account(acc::Accounted::ANSWERED | acc::Accounted::FAILED);
    }
    if *req.method() == Method::Ack {
        // The ACK of a 2xx is a transaction of its own: relayed
        // statelessly (the ACK of a negative answer never gets here).
        return req.forward();
    }
    relay(req)
}

/// route[REGISTRAR]: REGISTER requests are handled by the location
/// service; the expiry limits are the tenant's `REG_*` params.
fn registrar(req: &Request) -> Flow {
    if *req.method() != Method::Register {
        return Ok(());
    }
    let mut flags = SaveFlags::empty();
    if settings().nat && vars::is_set(FLT_NATS) {
        flags |= SaveFlags::NAT; // setbflag(6): the binding keeps the source
    }
    if settings().usrlocdb {
        flags |= SaveFlags::PERSISTENT;
    }
    let options = SaveOptions {
        flags,
        ..SaveOptions::default()
    };
    // save("location"): answers with its 200 OK, or the refusal
    // (sl_reply_error()), by itself; then exit.
    registrar::save_and_reply(req, &options)
}

/// route[LOCATION]: the Request-URI becomes the user's registered
/// contacts. No binding answers 404 and no binding allowing the method
/// 405, by themselves; a failed store answers 500 (Kamailio answers -3
/// with 404 too, but a failed store says nothing about the user).
fn location(req: &Request) -> Flow {
    if registrar::lookup(req)?.nat {
        vars::set_flag(FLB_NATB)?;
    }
    if *req.method() == Method::Invite {
        acc::account(acc::Accounted::FAILED); // setflag(FLT_ACCMISSED)
    }
    Ok(())
}

/// route[PRESENCE]: no presence server here (`WITH_PRESENCE` is not
/// ported): PUBLISH is refused, SUBSCRIBE goes to the user like any request.
fn presence(req: &Request) -> Flow {
    if !matches!(req.method(), Method::Publish | Method::Subscribe) {
        return Ok(());
    }
    if *req.method() == Method::Publish || req.uri_user().is_none() {
        return req.reply(404, "Not here");
    }
    Ok(())
}

/// route[AUTH] (`WITH_AUTH`): REGISTERs authenticate against the To
/// domain; other requests from our own domain against the From domain,
/// and requests from elsewhere must be for our domain (no open relay).
/// `authorize_or_challenge` answers with the challenge by itself
/// (`www_challenge`, `proxy_challenge`) when the credentials do not check.
fn auth(req: &Request) -> Flow {
    if !settings().auth {
        return Ok(());
    }
    if *req.method() == Method::Register {
        let user = auth::authorize_or_challenge(req, &req.to_host())?;
        if Some(user) != req.to_user() {
            return req.reply(403, "Forbidden auth ID");
        }
        return Ok(());
    }

    if settings().ipauth && permissions::allow_source_address(req) {
        // source IP allowed
        return Ok(());
    }

    if req.from_is_myself() {
        // authenticate if from local subscriber
        let user = auth::authorize_or_challenge(req, &req.from_host())?;
        let claimed = if *req.method() == Method::Publish {
            req.to_user()
        } else {
            req.from_user()
        };
        if Some(user) != claimed {
            return req.reply(403, "Forbidden auth ID");
        }
        auth::consume_credentials(req);
        // caller authenticated
    } else if !req.uri_is_myself() {
        // caller is not a local subscriber and calls a foreign
        // destination: not an open relay here
        return req.reply(403, "Not relaying");
    }
    Ok(())
}

/// route[NAT] (`WITH_NAT`): caller NAT detection.
fn nat(req: &Request) -> Flow {
    if !settings().nat {
        return Ok(());
    }
    nat::force_rport(req);
    // nat_uac_test("19"): private Contact, Via address or port differing
    // from the source.
    let signs = NatSigns::PRIVATE_CONTACT | NatSigns::VIA_ADDRESS_DIFFERS;
    if nat::uac_test(req, signs | NatSigns::VIA_PORT_DIFFERS) {
        if *req.method() != Method::Register {
            nat::fix_contact(req);
        }
        // fix_nated_register(): route(REGISTRAR) saves the source address.
        vars::set_flag(FLT_NATS)?;
    }
    Ok(())
}

/// route[SIPOUT]: routing to foreign domains. Without `WITH_AUTH` only a
/// trusted source may have us relay there (`trusted` in the host's
/// configuration): a wisp on a public address is no open relay.
fn sipout(req: &Request) -> Flow {
    if req.uri_is_myself() {
        return Ok(());
    }
    if !settings().auth && !req.source_trusted() {
        return req.reply(403, "Not relaying");
    }
    req.append_header("P-hint", "outbound")?;
    relay(req)
}

/// route[PSTN] (`WITH_PSTN`): numbers in international format go to the
/// gateway `PSTN_GW_IP` (`PSTN_GW_PORT`, default 5060), for local users only.
fn pstn(req: &Request) -> Flow {
    let settings = settings();
    if !settings.pstn {
        return Ok(());
    }
    let Some(gw) = &settings.pstn_gw_ip else {
        log::warn("SCRIPT: PSTN routing enabled but PSTN_GW_IP not defined");
        return Ok(());
    };
    let Some(number) = req.uri_user().filter(|u| is_pstn_number(u)) else {
        return Ok(());
    };
    // only local users allowed to call
    if !req.from_is_myself() {
        return req.reply(403, "Not Allowed");
    }
    let port = &settings.pstn_gw_port;
    req.set_uri(&format!("sip:{number}@{gw}:{port}"))?;
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

/// Pops the next URI off the transaction's failover list (set by
/// route[RELAY] from `FAILOVER`, its entries trimmed).
fn next_failover() -> wisp_sdk::Result<Option<String>> {
    let Some(list) = vars::get(FAILOVER_VAR) else {
        return Ok(None);
    };
    match list.split_once(',') {
        Some((next, rest)) => {
            vars::set(FAILOVER_VAR, rest)?;
            Ok(Some(next.to_owned()))
        }
        None => {
            vars::remove(FAILOVER_VAR);
            Ok(Some(list))
        }
    }
}

/// A comma-separated list param's entries, blanks trimmed and empty ones
/// skipped.
fn uri_list(value: &str) -> Vec<String> {
    let uris = value.split(',').map(str::trim).filter(|s| !s.is_empty());
    uris.map(str::to_owned).collect()
}

wisp_sdk::export_router!(DefaultRouting);
