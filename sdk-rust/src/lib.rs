//! Write wisp routing components in Rust.
//!
//! A routing component is a `cdylib` crate built with
//! `cargo build --release --target wasm32-wasip2`. It implements [`Router`]
//! and names its type with [`export_router!`]:
//!
//! ```no_run
//! use wisp_sdk::prelude::*;
//!
//! struct Hello;
//!
//! impl Router for Hello {
//!     fn route(req: &Request) -> Flow {
//!         req.max_forwards(None)?; // 483 Too Many Hops, by itself
//!         if *req.method() == Method::Options && req.uri_is_myself() {
//!             return req.reply(200, "OK");
//!         }
//!         if *req.method() == Method::Register {
//!             // The 200 OK listing the bindings, or the refusal.
//!             return req.send(registrar::save(req, &SaveOptions::default())?);
//!         }
//!         registrar::lookup(req)?; // 404 Not Found, by itself
//!         req.relay()
//!     }
//!
//!     // Optional: serial forking when the callee is busy.
//!     fn on_failure(req: &Request, best: &Response) -> Flow {
//!         if best.status() == 486 && !vars::is_set("retried") {
//!             vars::set_flag("retried")?;
//!             return req.relay_to("voicemail.example.com");
//!         }
//!         Ok(()) // the best response goes upstream
//!     }
//! }
//!
//! wisp_sdk::export_router!(Hello);
//! ```
//!
//! # Deciding, and Kamailio's `exit`
//!
//! A hook decides what happens to its request by what it returns. The
//! decisions ([`Request::reply`], [`Request::relay`],
//! [`Request::forward`], [`Request::exit`], ...) return a [`Flow`] that is
//! an `Err(Exit)`: `return req.reply(404, "Not Found");` ends the route,
//! and a sub-route written as `fn name(req: &Request) -> Flow` is called
//! as `name(req)?;`, which stops the caller when it decided, as
//! Kamailio's `route(NAME);` followed by its `exit`. Host calls that fail
//! give an [`Error`]; `?` turns it into an exit too: a refusal
//! ([`Error::Refused`]: 483 from `max_forwards`, a challenge from
//! `auth::authorize`, 404 from `registrar::lookup`...) is answered with
//! the reply it carries, as Kamailio's `if (!check()) { send_reply();
//! exit; }`, and any other error is logged and answered 500.
//!
//! Falling off the end of a hook (`Ok(())`) does what Kamailio does at the
//! end of the route: the request is dropped in [`Router::route`], the
//! response kept in [`Router::on_reply`], the best response sent upstream
//! in [`Router::on_failure`].
//!
//! Every request but ACK gets a server transaction when it arrives, so a
//! 1xx or 2xx reply is stateful: retransmissions of the request are
//! answered from the transaction. A refusal (300–699) is sent once,
//! statelessly, as `sl_send_reply` does: a retransmission is routed
//! again. [`Request::relay`] proxies statefully (Kamailio's
//! `t_relay`) and brings in the other hooks: `on_branch` for each outgoing
//! branch, `on_reply` for each response, `on_failure` when no branch
//! succeeded. [`Request::forward`] stays stateless. The [`vars`] of a
//! transaction are kept across all its hooks; `docs/transactions.md` in
//! the wisp repository tells the whole story, and `docs/wit.md` maps the
//! calls to Kamailio's script functions one by one.

// The generated export macro names this crate by its public path, which
// must also resolve inside the crate itself.
extern crate self as wisp_sdk;

mod fields;
mod flow;
mod request;
mod response;
mod services;

pub use bindings::wisp::proxy::proxy::{Hooks, RouteCheck};
pub use bindings::wisp::proxy::sip::{
    Endpoint, Header, Method, Relay, Reply, RequestInfo, Transport, UriParts,
};
pub use fields::{Fields, Message};
pub use flow::{Error, Exit, Flow, Result};
pub use request::Request;
pub use response::Response;
pub use services::{acc, auth, dispatcher, kv, nat, permissions, ratelimit, registrar};

/// Raw bindings generated from the `wisp:proxy@0.2.3` WIT package (world
/// `router`). Prefer the wrappers in this crate; these are here for what
/// they do not cover.
// Generated code: the lowering of `registrar.save` takes its record's
// fields as arguments.
#[allow(clippy::too_many_arguments)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "router",
        pub_export_macro: true,
        export_macro_name: "__export_router_bindings",
        default_bindings_module: "wisp_sdk::bindings",
        runtime_path: "wisp_sdk::__private::wit_bindgen::rt",
        additional_derives: [PartialEq, Eq],
    });
}

#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;

    use super::bindings::wisp::proxy::sip;
    use super::{log, Exit, Request, Response};
    use sip::{Action, FailureAction, ReplyVerdict};

    /// Runs the user's route hook. Falling off its end drops the request
    /// (the end of Kamailio's `request_route`); a failure is logged and
    /// answered 500, since a route that fails half-way must be visible to
    /// the operator and the caller must not wait for a timeout.
    pub fn run_route<R: super::Router>(raw: &sip::Request, info: sip::RequestInfo) -> Action {
        match R::route(&Request::with_info(raw, info)) {
            Ok(()) => Action::Drop,
            Err(Exit::Decided(action)) => action,
            Err(Exit::Failed(err)) => {
                log::error(&format!("route failed: {err}"));
                Action::Reply(sip::Reply::new(500, "Server Internal Error"))
            }
        }
    }

    /// Runs the user's reply hook: `exit()` drops a provisional response,
    /// anything else keeps it (a reply hook can neither answer nor relay).
    pub fn run_on_reply<R: super::Router>(req: &sip::Request, res: &sip::Response) -> ReplyVerdict {
        match R::on_reply(&Request::new(req), &Response::new(res)) {
            Ok(()) => ReplyVerdict::Keep,
            Err(Exit::Decided(Action::Drop)) => ReplyVerdict::Drop,
            Err(Exit::Decided(action)) => {
                log::error(&format!(
                    "on_reply can only keep or drop a response, not {}",
                    action_name(&action)
                ));
                ReplyVerdict::Keep
            }
            Err(Exit::Failed(err)) => {
                log::error(&format!("on_reply failed: {err}"));
                ReplyVerdict::Keep
            }
        }
    }

    /// Runs the user's failure hook: a reply or a relay (serial forking)
    /// is what it returns; falling off its end, `exit()` or a failure
    /// send the best response upstream (Kamailio's `exit` in a
    /// `failure_route`).
    pub fn run_on_failure<R: super::Router>(
        req: &sip::Request,
        best: &sip::Response,
    ) -> FailureAction {
        match R::on_failure(&Request::new(req), &Response::new(best)) {
            Ok(()) | Err(Exit::Decided(Action::Drop)) => FailureAction::Upstream,
            Err(Exit::Decided(Action::Reply(reply))) => FailureAction::Reply(reply),
            Err(Exit::Decided(Action::Relay(relay))) => FailureAction::Relay(relay),
            Err(Exit::Decided(action @ Action::Forward(_))) => {
                log::error(&format!(
                    "on_failure cannot {}: the best response goes upstream",
                    action_name(&action)
                ));
                FailureAction::Upstream
            }
            Err(Exit::Failed(err)) => {
                log::error(&format!("on_failure failed: {err}"));
                FailureAction::Upstream
            }
        }
    }

    /// Runs the user's branch hook: it edits the branch and decides
    /// nothing, so a decision is logged as the mistake it is.
    pub fn run_on_branch<R: super::Router>(req: &sip::Request, index: u32) {
        match R::on_branch(&Request::new(req), index) {
            Ok(()) | Err(Exit::Decided(Action::Drop)) => {}
            Err(Exit::Decided(action)) => log::error(&format!(
                "on_branch edits its branch and cannot {}",
                action_name(&action)
            )),
            Err(Exit::Failed(err)) => log::error(&format!("on_branch failed: {err}")),
        }
    }

    fn action_name(action: &Action) -> &'static str {
        match action {
            Action::Reply(_) => "reply",
            Action::Relay(_) => "relay",
            Action::Forward(_) => "forward",
            Action::Drop => "drop",
        }
    }
}

/// A routing script: the hooks the proxy calls. Only `route` is required;
/// the others default to what Kamailio does without the matching
/// `t_on_reply`, `t_on_failure` or `t_on_branch`.
pub trait Router {
    /// Decides what happens to a request (Kamailio's `request_route`).
    /// Called for every request the proxy does not absorb itself (ACK of
    /// a negative final, retransmissions and CANCELs matching a
    /// transaction are the host's). `Ok(())` drops the request, as the end
    /// of Kamailio's route does; see the [crate] docs for the rest.
    fn route(req: &Request) -> Flow;

    /// Each response above 100 a relayed branch receives, before it goes
    /// upstream or is kept for response selection (`onreply_route`).
    /// `req` is the request as relayed; edits to `res` change what goes
    /// upstream. `Ok(())` keeps the response; [`Request::exit`] drops a
    /// provisional one (`drop` in an `onreply_route`; a final response is
    /// always kept).
    fn on_reply(req: &Request, res: &Response) -> Flow {
        let _ = (req, res);
        Ok(())
    }

    /// Every branch ended without a 2xx (`failure_route`); `best` is the
    /// response chosen to go upstream (RFC 3261 §16.7). Relay again (to a
    /// new destination, or after [`Request::append_branch`]) for serial
    /// forking, or reply; `Ok(())` sends `best` upstream. Not called for a
    /// transaction the caller cancelled (Kamailio's `t_is_canceled`).
    fn on_failure(req: &Request, best: &Response) -> Flow {
        let _ = (req, best);
        Ok(())
    }

    /// Each branch just before it is sent (`branch_route`): `req` is that
    /// branch's copy, to edit; `index` counts the transaction's branches
    /// from 0, across serial forks. It decides nothing: a failure is
    /// logged and the branch goes as it is.
    fn on_branch(req: &Request, index: u32) -> Flow {
        let _ = (req, index);
        Ok(())
    }
}

/// Exports a [`Router`] implementation as the component's hooks: all four
/// of them, the ones the type does not override with their defaults.
#[macro_export]
macro_rules! export_router {
    ($router:ty) => {
        #[doc(hidden)]
        struct __WispExport;

        impl $crate::bindings::Guest for __WispExport {
            fn route(
                req: &$crate::bindings::wisp::proxy::sip::Request,
                info: $crate::bindings::wisp::proxy::sip::RequestInfo,
            ) -> $crate::bindings::wisp::proxy::sip::Action {
                $crate::__private::run_route::<$router>(req, info)
            }

            fn on_reply(
                req: &$crate::bindings::wisp::proxy::sip::Request,
                res: &$crate::bindings::wisp::proxy::sip::Response,
            ) -> $crate::bindings::wisp::proxy::sip::ReplyVerdict {
                $crate::__private::run_on_reply::<$router>(req, res)
            }

            fn on_failure(
                req: &$crate::bindings::wisp::proxy::sip::Request,
                best: &$crate::bindings::wisp::proxy::sip::Response,
            ) -> $crate::bindings::wisp::proxy::sip::FailureAction {
                $crate::__private::run_on_failure::<$router>(req, best)
            }

            fn on_branch(req: &$crate::bindings::wisp::proxy::sip::Request, index: u32) {
                $crate::__private::run_on_branch::<$router>(req, index)
            }
        }

        $crate::bindings::__export_router_bindings!(__WispExport with_types_in $crate::bindings);
    };
}

/// Variables of the current transaction, kept from `route` through
/// `on_branch`, `on_reply` and `on_failure` (Kamailio's `$avp(name)`, and
/// its flags: a flag is a variable that is set). Each transaction starts
/// with none; outside a hook nothing is kept, since instances are pooled
/// and reused.
pub mod vars {
    use super::bindings::wisp::proxy as raw;
    use super::{Error, Result};

    /// A variable set earlier in this transaction (`$avp(name)`).
    pub fn get(name: &str) -> Option<String> {
        raw::vars::get(name)
    }

    /// Sets a variable (`$avp(name) = value`). Refused past the tenant's
    /// `vars_per_transaction` or `var_bytes_per_transaction`.
    pub fn set(name: &str, value: &str) -> Result<()> {
        raw::vars::set(name, value).map_err(Error::from)
    }

    /// Removes a variable (`$avp(name) = $null`, `resetflag`); whether it
    /// was set.
    pub fn remove(name: &str) -> bool {
        raw::vars::remove(name)
    }

    /// Sets a flag (`setflag`, `setbflag`): a variable set to "1".
    pub fn set_flag(name: &str) -> Result<()> {
        set(name, "1")
    }

    /// Whether a variable or flag is set (`isflagset`, `isbflagset`).
    pub fn is_set(name: &str) -> bool {
        raw::vars::get(name).is_some()
    }
}

/// The tenant's parameters from the config file (`params = { KEY = "value" }`).
///
/// The answers are kept in the instance: a tenant's params are fixed for the
/// life of an instance (changing them loads a new version with new
/// instances), and a routing script reads several of them per request,
/// each a host call otherwise.
pub mod config {
    use std::cell::RefCell;

    use super::bindings::wisp::proxy as raw;

    /// Names asked before and what the host said. A routing script asks
    /// for a handful of names, so lists beat maps.
    type Asked<T> = RefCell<Vec<(Box<str>, T)>>;

    thread_local! {
        static PARAMS: Asked<Option<String>> = const { RefCell::new(Vec::new()) };
        static ENABLED: Asked<bool> = const { RefCell::new(Vec::new()) };
    }

    fn cached<T: Clone>(asked: &Asked<T>, name: &str, ask: impl FnOnce() -> T) -> T {
        let mut asked = asked.borrow_mut();
        if let Some((_, value)) = asked.iter().find(|(n, _)| **n == *name) {
            return value.clone();
        }
        let value = ask();
        asked.push((name.into(), value.clone()));
        value
    }

    /// The value of a parameter, if set.
    pub fn param(name: &str) -> Option<String> {
        PARAMS.with(|asked| cached(asked, name, || raw::config::param(name)))
    }

    /// Whether a parameter is switched on ("yes", "true", "1", "on"), the way
    /// `#!define WITH_AUTH` switches a feature on in Kamailio's config.
    pub fn enabled(name: &str) -> bool {
        ENABLED.with(|asked| cached(asked, name, || raw::config::enabled(name)))
    }
}

/// Writing to the proxy's log, tagged with the tenant (Kamailio's `xlog`).
pub mod log {
    use super::bindings::wisp::proxy as raw;
    use raw::log::Level;

    /// Something failed (`xlog("L_ERR", ...)`).
    pub fn error(message: &str) {
        raw::log::write(Level::Error, message)
    }
    /// Something looks wrong (`xlog("L_WARN", ...)`).
    pub fn warn(message: &str) {
        raw::log::write(Level::Warn, message)
    }
    /// Worth knowing (`xlog(...)`, `L_INFO`).
    pub fn info(message: &str) {
        raw::log::write(Level::Info, message)
    }
    /// For debugging (`xdbg(...)`).
    pub fn debug(message: &str) {
        raw::log::write(Level::Debug, message)
    }
}

/// Whether a URI names this proxy: a listening address, an alias, or a
/// domain of this tenant (Kamailio's `uri == myself`).
pub fn is_myself(uri: &str) -> bool {
    bindings::wisp::proxy::proxy::is_myself(uri)
}

/// The parts of a SIP URI (user, host, port); None when it is not one.
pub fn parse_uri(uri: &str) -> Option<UriParts> {
    bindings::wisp::proxy::proxy::parse_uri(uri)
}

/// Arms the hooks the current transaction runs besides `route`, in place
/// of those armed before (Kamailio's `t_on_reply`, `t_on_failure`,
/// `t_on_branch`). Until a hook of the transaction arms some, it runs
/// every hook the router has; a routing that arms only the hooks it uses
/// spares the host a call per response or branch it would not use.
///
/// ```ignore
/// wisp_sdk::arm(Hooks::ON_FAILURE); // then req.relay()
/// ```
pub fn arm(hooks: Hooks) {
    bindings::wisp::proxy::proxy::arm(hooks)
}

/// Everything a routing script usually needs, in one import.
pub mod prelude {
    pub use crate::registrar::SaveOptions;
    pub use crate::{
        acc, arm, auth, config, dispatcher, is_myself, kv, log, nat, parse_uri, permissions,
        ratelimit, registrar, vars, Error, Exit, Flow, Hooks, Message, Method, Relay, Reply,
        Request, Response, RouteCheck, Router,
    };
}
