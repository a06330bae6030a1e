//! wisp's bundled routing: the request route of Kamailio's default config
//! (`request_route` and its REQINIT, WITHINDLG and RELAY blocks, and the
//! failure route FAIL_ONE), ported. Requests are relayed statefully.
//!
//! Tenant params (see docs/configuration.md): `FAILOVER` (comma-separated
//! URIs tried one after the other when an INVITE fails with 486, 408 or
//! 5xx), `PARALLEL` (URIs an INVITE is forked to beside its Request-URI),
//! `FR_INV_TIMER_MS` and `FR_TIMER_MS` (Kamailio's `t_set_fr`).
//!
//! Registrar, location and authentication come with the services that
//! back them; until then requests for this proxy's own users are refused.

use wisp_sdk::prelude::*;

struct DefaultRouting;

impl Router for DefaultRouting {
    fn route(req: &Request) -> Result<()> {
        // route(REQINIT): loop and sanity checks.
        if let Err(rejection) = req.max_forwards(max_forwards_limit()) {
            return req.reject(&rejection);
        }
        if let Err(rejection) = req.sanity_check() {
            log::info(&format!("malformed request: {}", rejection.reason));
            return req.reject(&rejection);
        }

        // A CANCEL that matched a relayed INVITE was handled by the host
        // (200, then CANCEL on every pending branch). One that reaches the
        // script matches no transaction: relay it statelessly (RFC 3261 §16.10).
        if req.is_method(&["CANCEL"]) {
            return req.forward();
        }

        // route(WITHINDLG)
        if req.has_to_tag() {
            return within_dialog(req);
        }

        // Initial requests: keep dialog-forming ones on this proxy.
        if req.is_method(&["INVITE", "SUBSCRIBE"]) {
            req.record_route()?;
        }

        // Requests for this proxy's own domain need the location service.
        if req.uri_is_myself() {
            return local(req);
        }

        relay(req)
    }

    /// failure_route[FAIL_ONE]: serial forking to the `FAILOVER` URIs. A
    /// cancelled transaction never gets here (`t_is_canceled` is the host's).
    fn on_failure(req: &Request, best: &Response) -> Result<()> {
        if !req.is_method(&["INVITE"]) || !fails_over(best.status()) {
            return Ok(());
        }
        let Some(next) = next_failover() else {
            return Ok(());
        };
        log::info(&format!(
            "{} from the last branch: trying {next}",
            best.status()
        ));
        req.set_uri(&next)?;
        req.relay()
    }
}

/// route(RELAY): stateful relay (`t_relay()`), with the timers and the
/// parallel branches the params ask for. The failure route is always armed.
fn relay(req: &Request) -> Result<()> {
    if let Some((invite_ms, final_ms)) = fr_timers() {
        req.set_timers(invite_ms, final_ms);
    }
    if req.is_method(&["INVITE"]) {
        for uri in uri_list("PARALLEL") {
            req.append_branch(&uri)?;
        }
        if let Some(failover) = config::param("FAILOVER") {
            vars::set(FAILOVER_VAR, Some(&failover));
        }
    }
    req.relay()
}

/// The per-transaction variable holding the `FAILOVER` URIs not tried yet.
const FAILOVER_VAR: &str = "failover";

/// Whether a final answer calls for the next `FAILOVER` URI
/// (`t_check_status("486|408|5[0-9][0-9]")`).
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

/// `FR_INV_TIMER_MS` and `FR_TIMER_MS` (`t_set_fr`), when either is set;
/// the one left out keeps Timer B/F's default of 32 s.
fn fr_timers() -> Option<(u32, u32)> {
    let ms = |name| config::param(name).and_then(|v| v.trim().parse::<u32>().ok());
    let (invite, other) = (ms("FR_INV_TIMER_MS"), ms("FR_TIMER_MS"));
    if invite.is_none() && other.is_none() {
        return None;
    }
    Some((
        invite.unwrap_or(DEFAULT_FR_MS),
        other.unwrap_or(DEFAULT_FR_MS),
    ))
}

/// Timer B/F with the default T1: 64 × 500 ms.
const DEFAULT_FR_MS: u32 = 32_000;

fn max_forwards_limit() -> u32 {
    config::param("MAX_FORWARDS")
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

/// route(WITHINDLG): requests inside a dialog follow its Route set.
fn within_dialog(req: &Request) -> Result<()> {
    if req.loose_route() {
        if req.is_method(&["ACK"]) {
            // The ACK of a 2xx is a transaction of its own: relayed
            // statelessly (the ACK of a negative answer never gets here).
            return req.forward();
        }
        return req.relay();
    }
    if req.is_method(&["ACK"]) {
        // An ACK without Route: stateless relay to the R-URI, as Kamailio
        // does when no transaction matched.
        return req.forward();
    }
    req.reply(404, "Not here")
}

/// Requests addressed to this proxy itself.
fn local(req: &Request) -> Result<()> {
    if req.is_method(&["OPTIONS"]) && req.uri_user().is_none() {
        return req.reply(200, "OK");
    }
    if req.is_method(&["REGISTER"]) {
        return req.reply(501, "Registrar Not Enabled");
    }
    if req.uri_user().is_none() {
        return req.reply(484, "Address Incomplete");
    }
    req.reply(404, "Not Found")
}

wisp_sdk::export_router!(DefaultRouting);
