//! wisp: a SIP proxy whose routing runs as sandboxed WebAssembly components.
//!
//! Modules follow the data path of a message:
//! [`transport`] (sockets, framing) → [`sip`] (parsing) → [`proxy`] (RFC 3261
//! §16 core) → [`script`] (the tenant's wasm route hook, which calls the
//! [`services`]: location, digest auth, ...) → back out through
//! [`transport`]. [`tenancy`] picks the tenant and version for each request
//! and swaps them at runtime; [`admin`] and [`metrics`] expose it to
//! operators. [`dns`] locates servers by name (RFC 3263) off the receiving
//! threads. [`server`] wires them together from a [`config`].

pub mod admin;
#[cfg(feature = "count-allocations")]
pub mod alloc_count;
pub mod allocator;
pub mod cluster;
pub mod config;
pub mod dns;
pub mod metrics;
pub mod proxy;
pub mod random;
pub mod script;
pub mod server;
pub mod services;
pub mod sip;
pub mod tenancy;
pub mod transaction;
pub mod transport;
