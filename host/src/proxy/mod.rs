//! The proxy core (RFC 3261 §16): what happens to each message between the
//! transport and the routing hooks, as a sans-IO state machine
//! ([`Core`]) over the transaction layer. The server drives it: it feeds
//! messages, time and lookup answers in, and sends what comes out.
//!
//! ```text
//! message ─▶ request: validate ─▶ transaction ─▶ route hook
//!                        ─▶ reply | relay (branches, on-branch) | forward | drop
//!          response: client transaction ─▶ on-reply ─▶ upstream / selection ─▶ on-failure
//! next hop is a name ─▶ Event::Resolve ─▶ (parked) ─▶ handle_resolved
//! ```

mod admission;
pub mod branch;
pub mod checks;
mod core;
mod effects;
pub mod flow;
mod hooks;
mod locality;
mod relay;
mod replies;
mod request;
mod routing;
mod secret;
mod stateless;

#[cfg(test)]
mod tests;

pub use self::core::Core;
pub use admission::{Admission, ProxyLimits, Refused};
pub use effects::{Event, LookupId, Transmit, MAX_PARKED};
pub use hooks::{HookFailed, Hooks, Routed};
pub use locality::Locality;
pub use relay::{DEFAULT_FR, DEFAULT_FR_INVITE};
pub use replies::reply_target;
pub use request::{Accounted, Action, Armed, BranchTarget, Hook, RequestCtx, Source, TxVars};
pub use routing::{loose_route, Destination, LooseRoute};
