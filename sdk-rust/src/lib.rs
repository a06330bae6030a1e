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
//!         req.forward()
//!     }
//! }
//!
//! wisp_sdk::export_router!(Hello);
//! ```
//!
//! The calls mirror Kamailio's script functions; `docs/wit.md` in the wisp
//! repository maps them one by one.

// The generated export macro names this crate by its public path, which
// must also resolve inside the crate itself.
extern crate self as wisp_sdk;

mod request;

pub use request::{Endpoint, Error, Rejection, Request, Result, Transport};

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

    /// Runs the user's route hook; an error it returns is logged, since a
    /// route that fails half-way should be visible to the operator.
    pub fn run_route<R: super::Router>(raw: &super::bindings::wisp::proxy::types::Request) {
        let req = super::Request::new(raw);
        if let Err(err) = R::route(&req) {
            super::log::error(&format!("route failed: {err}"));
        }
    }
}

/// A routing script: the hooks the proxy calls.
pub trait Router {
    /// Called for every request the proxy does not absorb itself, like
    /// Kamailio's `request_route`. Returning without replying or forwarding
    /// drops the request (Kamailio's `exit`).
    fn route(req: &Request) -> Result<()>;
}

/// Exports a [`Router`] implementation as the component's hooks.
#[macro_export]
macro_rules! export_router {
    ($router:ty) => {
        #[doc(hidden)]
        struct __WispExport;

        impl $crate::bindings::Guest for __WispExport {
            fn route(req: &$crate::bindings::wisp::proxy::types::Request) {
                $crate::__private::run_route::<$router>(req)
            }
        }

        $crate::bindings::__export_router_bindings!(__WispExport with_types_in $crate::bindings);
    };
}

/// The tenant's parameters from the config file (`params = { KEY = "value" }`).
pub mod config {
    use super::bindings::wisp::proxy::config as raw;

    /// The value of a parameter, if set.
    pub fn param(name: &str) -> Option<String> {
        raw::param(name)
    }

    /// Whether a parameter is switched on ("yes", "true", "1", "on"), the way
    /// `#!define WITH_AUTH` switches a feature on in Kamailio's config.
    pub fn enabled(name: &str) -> bool {
        raw::enabled(name)
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
    pub use crate::{config, is_myself, log, Request, Result, Router};
}
