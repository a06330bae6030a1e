//! The routing hooks as the proxy core sees them: a trait, implemented
//! with wasm components by `tenancy` and `script`, and by scripted fakes in
//! the core's tests. The core calls them synchronously while it handles a
//! message and carries out what they decide afterwards.

use std::net::SocketAddr;

use crate::sip::Message;

use super::request::{Action, RequestCtx, TxVars};

/// Kamailio's routes: `request_route`, `branch_route`, `onreply_route` and
/// `failure_route`.
pub trait Hooks {
    /// What a transaction keeps of its routing between hooks: the version
    /// of the routing its route hook ran on, so that its later hooks run on
    /// the same one even after a reload.
    type Pinned;

    /// The route hook for a new request (and for an ACK of a 2xx, or a
    /// CANCEL matching no transaction, which have no state).
    fn route(&mut self, req: RequestCtx, vars: &mut TxVars) -> (RequestCtx, Routed<Self::Pinned>);

    /// The branch hook, before branch `index` of a relay is sent: it may
    /// edit the branch's copy of the request.
    fn on_branch(
        &mut self,
        pinned: &Self::Pinned,
        req: RequestCtx,
        index: u32,
        vars: &mut TxVars,
    ) -> (RequestCtx, Result<(), HookFailed>);

    /// The reply hook, for each response above 100 of a branch. `Ok(false)`
    /// drops a provisional response (finals are kept whatever it says).
    fn on_reply(
        &mut self,
        pinned: &Self::Pinned,
        req: RequestCtx,
        res: Message,
        source: SocketAddr,
        vars: &mut TxVars,
    ) -> (RequestCtx, Message, Result<bool, HookFailed>);

    /// The failure hook, when every branch ended without a 2xx: `best` is
    /// the response that would go upstream. A `Relay` action starts new
    /// branches (serial forking); a `Reply` answers instead of `best`.
    fn on_failure(
        &mut self,
        pinned: &Self::Pinned,
        req: RequestCtx,
        best: Message,
        vars: &mut TxVars,
    ) -> (RequestCtx, Message, Result<Vec<Action>, HookFailed>);

    /// A reply with `code` went upstream for a request routed on `pinned`
    /// (per-tenant reply counters).
    fn replied(&mut self, pinned: &Self::Pinned, code: u16);

    /// The final answer of a relayed transaction that asked for
    /// accounting of it (`acc.account`) went upstream: `req` is the
    /// request as relayed, `answer` the response when one was relayed
    /// (none for a reply of the failure hook). Writes the record
    /// (Kamailio's acc, at the end of the transaction).
    fn account(
        &mut self,
        pinned: &Self::Pinned,
        req: &Message,
        code: u16,
        reason: &str,
        answer: Option<&Message>,
    );
}

/// What the route hook came to.
pub enum Routed<P> {
    /// The hook ran and asked for these actions, in order.
    Actions { pinned: P, actions: Vec<Action> },
    /// No routing takes the request: answer it with this code (404, 403).
    NoRouting(u16),
    /// The routing could not run now (busy, or suspended after a crash
    /// loop): answer 503 with `Retry-After: retry_after` seconds.
    Overloaded { pinned: P, retry_after: u64 },
    /// The hook failed (trap, deadline): answer 500.
    Failed { pinned: P },
}

/// A hook other than route failed; the core logs it and goes on as if the
/// hook had not asked for anything.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct HookFailed(pub String);
