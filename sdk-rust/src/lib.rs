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
//!     fn route(req: &Request) -> Result<()> {
//!         if req.method() == "OPTIONS" {
//!             return req.reply(200, "OK");
//!         }
//!         req.relay()
//!     }
//!
//!     // Optional: serial forking when the callee is busy.
//!     fn on_failure(req: &Request, best: &Response) -> Result<()> {
//!         if best.status() == 486 && vars::get("retried").is_none() {
//!             vars::set("retried", Some("1"));
//!             return req.relay_to("voicemail.example.com");
//!         }
//!         Ok(())
//!     }
//! }
//!
//! wisp_sdk::export_router!(Hello);
//! ```
//!
//! Every request but ACK gets a server transaction when it arrives, so
//! [`Request::reply`] is stateful: retransmissions of the request are
//! answered from the transaction. [`Request::relay`] proxies statefully
//! (Kamailio's `t_relay`) and brings in the other hooks: `on_branch` for
//! each outgoing branch, `on_reply` for each response, `on_failure` when
//! no branch succeeded. [`Request::forward`] stays stateless. The [`vars`]
//! of a transaction are kept across all its hooks; `docs/transactions.md`
//! in the wisp repository tells the whole story.
//!
//! The calls mirror Kamailio's script functions; `docs/wit.md` in the wisp
//! repository maps them one by one.

// The generated export macro names this crate by its public path, which
// must also resolve inside the crate itself.
extern crate self as wisp_sdk;

mod request;
mod response;
mod services;

pub use request::{Endpoint, Error, Rejection, Request, Result, Transport};
pub use response::Response;
pub use services::{acc, auth, kv, nat, permissions, ratelimit, registrar};

/// Raw bindings generated from the `wisp:proxy` WIT package. Prefer the
/// wrappers in this crate; these are here for what they do not cover.
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "router",
        pub_export_macro: true,
        export_macro_name: "__export_router_bindings",
        default_bindings_module: "wisp_sdk::bindings",
        runtime_path: "wisp_sdk::__private::wit_bindgen::rt",
    });
}

#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;

    use super::bindings::wisp::proxy::types;

    /// Runs the user's route hook; an error it returns is logged, since a
    /// route that fails half-way should be visible to the operator.
    pub fn run_route<R: super::Router>(raw: &types::Request) {
        let req = super::Request::new(raw);
        if let Err(err) = R::route(&req) {
            super::log::error(&format!("route failed: {err}"));
        }
    }

    /// Runs the user's reply hook.
    pub fn run_on_reply<R: super::Router>(req: &types::Request, res: &types::Response) -> bool {
        R::on_reply(&super::Request::new(req), &super::Response::new(res))
    }

    /// Runs the user's failure hook; an error it returns is logged (the
    /// best response then goes upstream, unless the hook replied).
    pub fn run_on_failure<R: super::Router>(req: &types::Request, best: &types::Response) {
        let req = super::Request::new(req);
        if let Err(err) = R::on_failure(&req, &super::Response::new(best)) {
            super::log::error(&format!("on_failure failed: {err}"));
        }
    }

    /// Runs the user's branch hook; an error it returns is logged.
    pub fn run_on_branch<R: super::Router>(req: &types::Request, index: u32) {
        let req = super::Request::new(req);
        if let Err(err) = R::on_branch(&req, index) {
            super::log::error(&format!("on_branch failed: {err}"));
        }
    }
}

/// A routing script: the hooks the proxy calls. Only `route` is required;
/// the others default to what Kamailio does without the matching
/// `t_on_reply`, `t_on_failure` or `t_on_branch`.
pub trait Router {
    /// Called for every request the proxy does not absorb itself (ACK of a
    /// negative final, retransmissions and CANCELs matching a transaction
    /// are handled by the host), like Kamailio's `request_route`. Returning
    /// without replying, relaying or forwarding drops the request
    /// (Kamailio's `exit`); an error is logged and drops it too.
    fn route(req: &Request) -> Result<()>;

    /// Each response a relayed branch receives, before it goes upstream or
    /// is kept for response selection (`onreply_route`). `req` is the
    /// request as relayed. Edits to `res` change what goes upstream.
    /// Returning false drops a provisional response (`drop` in an
    /// `onreply_route`); a final response is never dropped.
    fn on_reply(req: &Request, res: &Response) -> bool {
        let _ = (req, res);
        true
    }

    /// Every branch ended without a 2xx (`failure_route`); `best` is the
    /// response chosen to go upstream (RFC 3261 §16.7). Relay again (to a
    /// new destination, or after [`Request::append_branch`]) for serial
    /// forking, or reply; doing neither sends `best` upstream. Not called
    /// for a transaction the caller cancelled (Kamailio's `t_is_canceled`).
    fn on_failure(req: &Request, best: &Response) -> Result<()> {
        let _ = (req, best);
        Ok(())
    }

    /// Each branch just before it is sent (`branch_route`): `req` is that
    /// branch's copy, to edit; `index` counts the transaction's branches
    /// from 0, across serial forks.
    fn on_branch(req: &Request, index: u32) -> Result<()> {
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
            fn route(req: &$crate::bindings::wisp::proxy::types::Request) {
                $crate::__private::run_route::<$router>(req)
            }

            fn on_reply(
                req: &$crate::bindings::wisp::proxy::types::Request,
                res: &$crate::bindings::wisp::proxy::types::Response,
            ) -> bool {
                $crate::__private::run_on_reply::<$router>(req, res)
            }

            fn on_failure(
                req: &$crate::bindings::wisp::proxy::types::Request,
                best: &$crate::bindings::wisp::proxy::types::Response,
            ) {
                $crate::__private::run_on_failure::<$router>(req, best)
            }

            fn on_branch(req: &$crate::bindings::wisp::proxy::types::Request, index: u32) {
                $crate::__private::run_on_branch::<$router>(req, index)
            }
        }

        $crate::bindings::__export_router_bindings!(__WispExport with_types_in $crate::bindings);
    };
}

/// Variables and flags of the current transaction, kept from `route`
/// through `on_branch`, `on_reply` and `on_failure` (Kamailio's `$avp(name)`
/// and `setflag`/`isflagset`). Each transaction starts with none; outside a
/// hook nothing is kept, since instances are pooled and reused.
pub mod vars {
    use super::bindings::wisp::proxy::vars as raw;

    /// A variable set earlier in this transaction (`$avp(name)`).
    pub fn get(name: &str) -> Option<String> {
        raw::get(name)
    }

    /// Sets a variable, or clears it with `None` (`$avp(name) = value` /
    /// `$avp(name) = $null`).
    pub fn set(name: &str, value: Option<&str>) {
        raw::set(name, value)
    }

    /// Sets flag `flag`, 0 to 63 (`setflag(n)`).
    pub fn set_flag(flag: u8) {
        raw::set_flag(flag)
    }

    /// Clears flag `flag` (`resetflag(n)`).
    pub fn reset_flag(flag: u8) {
        raw::reset_flag(flag)
    }

    /// Whether flag `flag` is set (`isflagset(n)`).
    pub fn is_flag_set(flag: u8) -> bool {
        raw::is_flag_set(flag)
    }
}

/// The tenant's parameters from the config file (`params = { KEY = "value" }`).
///
/// The answers are kept in the instance: a tenant's params are fixed for the
/// life of an instance (changing them loads a new version with new
/// instances), and the default routing reads half a dozen of them per
/// request, each a host call otherwise.
pub mod config {
    use std::cell::RefCell;

    use super::bindings::wisp::proxy::config as raw;

    /// A name asked before and what the host said. A routing script asks
    /// for a handful of names, so a list beats a map.
    enum Answer {
        Param(Option<String>),
        Enabled(bool),
    }

    thread_local! {
        static ASKED: RefCell<Vec<(Box<str>, Answer)>> = const { RefCell::new(Vec::new()) };
    }

    fn cached<T>(
        name: &str,
        read: impl Fn(&Answer) -> Option<T>,
        ask: impl FnOnce() -> Answer,
    ) -> T {
        ASKED.with_borrow_mut(|asked| {
            if let Some(value) = asked
                .iter()
                .filter(|(n, _)| **n == *name)
                .find_map(|(_, answer)| read(answer))
            {
                return value;
            }
            let answer = ask();
            let value = read(&answer).expect("the answer asked for");
            asked.push((name.into(), answer));
            value
        })
    }

    /// The value of a parameter, if set.
    pub fn param(name: &str) -> Option<String> {
        cached(
            name,
            |a| match a {
                Answer::Param(v) => Some(v.clone()),
                Answer::Enabled(_) => None,
            },
            || Answer::Param(raw::param(name)),
        )
    }

    /// Whether a parameter is switched on ("yes", "true", "1", "on"), the way
    /// `#!define WITH_AUTH` switches a feature on in Kamailio's config.
    pub fn enabled(name: &str) -> bool {
        cached(
            name,
            |a| match a {
                Answer::Enabled(on) => Some(*on),
                Answer::Param(_) => None,
            },
            || Answer::Enabled(raw::enabled(name)),
        )
    }
}

/// Writing to the proxy's log, tagged with the tenant (Kamailio's `xlog`).
pub mod log {
    use super::bindings::wisp::proxy::log::{write, Level};

    pub fn error(message: &str) {
        write(Level::Error, message)
    }
    pub fn warn(message: &str) {
        write(Level::Warn, message)
    }
    pub fn info(message: &str) {
        write(Level::Info, message)
    }
    pub fn debug(message: &str) {
        write(Level::Debug, message)
    }
}

/// Whether a URI names this proxy (Kamailio's `uri == myself`).
pub fn is_myself(uri: &str) -> bool {
    bindings::wisp::proxy::proxy::is_myself(uri)
}

/// Everything a routing script usually needs, in one import.
pub mod prelude {
    pub use crate::{
        acc, auth, config, is_myself, kv, log, nat, permissions, ratelimit, registrar, vars,
        Request, Response, Result, Router,
    };
}
