//! wisp's bundled routing: the request route of Kamailio's default config
//! (`request_route` and its REQINIT, WITHINDLG and RELAY blocks), ported.
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

        // CANCEL goes where its INVITE went (stateless relay).
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

        // route(RELAY)
        req.forward()
    }
}

fn max_forwards_limit() -> u32 {
    config::param("MAX_FORWARDS")
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

/// route(WITHINDLG): requests inside a dialog follow its Route set.
fn within_dialog(req: &Request) -> Result<()> {
    if req.loose_route() {
        return req.forward();
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
