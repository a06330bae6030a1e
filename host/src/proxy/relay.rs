//! Stateful proxying (RFC 3261 §16.6–16.10, Kamailio's tm): a relay is a
//! server transaction's branches on client transactions, responses
//! forwarded or kept for selection, the failure hook, CANCEL, and the
//! final-response timers; a branch whose next hop is a name waits for its
//! lookup, and moves on to the name's next target after a 503 or a
//! timeout (RFC 3263 §4.3).

use std::cmp::Reverse;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::sip::{HeaderName, Message, Method};
use crate::transaction::TxId;
use crate::transport::Target;

use super::checks::{self, DEFAULT_MAX_FORWARDS};
use super::effects::{Effects, Parked};
use super::hooks::Hooks;
use super::replies::make_reply;
use super::request::{Action, Hook, RequestCtx, TxVars};
use super::routing::{next_hop, Destination};

/// Kamailio's defaults: fr_inv_timer (an INVITE branch that rang) and
/// fr_timer (any branch before its first answer).
pub const DEFAULT_FR_INVITE: Duration = Duration::from_secs(120);
pub const DEFAULT_FR: Duration = Duration::from_secs(30);
/// Rounds of on-failure relaying one transaction may go through.
const MAX_FAILURE_ROUNDS: u32 = 8;

/// A relayed request: its server transaction's context.
pub(super) struct Relay<P> {
    /// The request as the route hook left it (on-failure may edit it).
    req: RequestCtx,
    /// The routing version the transaction started on: every hook of the
    /// transaction runs on it, even after a reload.
    pinned: P,
    vars: TxVars,
    branches: Vec<Branch>,
    /// A final response went upstream.
    final_sent: bool,
    /// The caller cancelled (or a 2xx/6xx ended the others).
    canceled: bool,
    invite: bool,
    /// (fr_inv, fr) for this transaction.
    fr: (Duration, Duration),
    fr_deadline: Option<Instant>,
    failure_rounds: u32,
    /// The request as bytes while the relay only waits for 2xx
    /// retransmissions (see [`Relay::freeze`]); `req.msg` is empty then.
    frozen: Option<Bytes>,
}

#[derive(Default)]
struct Branch {
    /// The client transaction of the target being tried.
    client: Option<TxId>,
    target: Option<Target>,
    provisional: bool,
    /// CANCEL asked before a provisional: sent when one arrives (§9.1).
    cancel_pending: bool,
    answered_2xx: bool,
    /// Its final non-2xx response (received or synthesized).
    final_response: Option<Message>,
    /// That response is ours (the branch timed out, or could not be sent),
    /// not one received from downstream.
    synthesized: bool,
    /// The branch's request, routed but without our Via, while its name is
    /// being resolved or other targets of it are left to try. Boxed: most
    /// branches go to one address and never hold one, and a relay's
    /// branches live as long as its transaction (32 s over UDP).
    retry: Option<Box<Retry>>,
    /// Its target is a flow (RFC 5626): the connection the peer opened.
    flow: bool,
}

struct Retry {
    msg: Message,
    /// Targets not tried yet, in RFC 3263 order.
    targets: VecDeque<Target>,
    resolving: bool,
}

impl Branch {
    fn pending(&self) -> bool {
        !self.answered_2xx && self.final_response.is_none()
    }

    fn ended(req: &Message, code: u16, reason: &str) -> Branch {
        Branch {
            final_response: make_reply(req, code, reason, &[]),
            synthesized: true,
            ..Branch::default()
        }
    }

    /// Whether another target of the branch's name may still be tried:
    /// the branch is pending, no target answered, and one is left.
    fn can_fail_over(&self) -> bool {
        self.pending()
            && !self.provisional
            && self.retry.as_ref().is_some_and(|r| !r.targets.is_empty())
    }
}

impl<P> Relay<P> {
    /// `tm.relay` from the route hook: 100 Trying for an INVITE, then a
    /// branch per target. None when the request was answered instead
    /// (Max-Forwards exhausted).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start<H: Hooks<Pinned = P>>(
        fx: &mut Effects,
        hooks: &mut H,
        now: Instant,
        tx: TxId,
        mut req: RequestCtx,
        pinned: P,
        vars: TxVars,
    ) -> Option<Relay<P>> {
        if let Err(rejection) = checks::max_forwards(&mut req, DEFAULT_MAX_FORWARDS) {
            fx.answer(
                now,
                Some(tx),
                &req,
                rejection.code,
                &rejection.reason,
                &rejection.headers,
            );
            return None;
        }
        let invite = req.msg.method() == Some(&Method::Invite);
        if invite {
            hooks.replied(&pinned, 100);
            fx.answer(now, Some(tx), &req, 100, "Trying", &[]);
        }
        let fr = req.fr_timers.unwrap_or((DEFAULT_FR_INVITE, DEFAULT_FR));
        Some(Relay {
            req,
            pinned,
            vars,
            branches: Vec::new(),
            final_sent: false,
            canceled: false,
            invite,
            fr,
            fr_deadline: None,
            failure_rounds: 0,
            frozen: None,
        })
    }

    /// Whether the relay is over: a final response went upstream and no
    /// branch is pending, nor (INVITE) answered 2xx, whose
    /// retransmissions it forwards. A non-INVITE's client transactions
    /// absorb retransmitted finals themselves.
    pub(super) fn finished(&self) -> bool {
        self.final_sent
            && !self
                .branches
                .iter()
                .any(|b| b.pending() || (self.invite && b.answered_2xx))
    }

    /// An INVITE relay that forwarded a 2xx and has no branch pending only
    /// waits, as long as its server transaction (32 s over UDP), for 2xx
    /// retransmissions: its request is kept as the bytes it serializes to,
    /// a fraction of the parsed message, and parsed again if one comes.
    pub(super) fn freeze(&mut self) {
        if self.frozen.is_some() || !self.final_sent || self.branches.iter().any(Branch::pending) {
            return;
        }
        let msg = std::mem::replace(&mut self.req.msg, Message::new_response(0, ""));
        self.frozen = Some(msg.to_bytes());
        self.req.path = Vec::new();
        self.req.branches = Vec::new();
        self.req.dst_uri = None;
    }

    /// The request parsed again from what [`Relay::freeze`] kept.
    fn thaw(&mut self) {
        if let Some(bytes) = self.frozen.take() {
            match crate::sip::parse(bytes) {
                Ok(msg) => self.req.msg = msg,
                Err(err) => tracing::warn!(%err, "a relay's own request does not parse again"),
            }
        }
    }

    /// Whether its final-response timer is set for `deadline` (else the
    /// timer's heap entry is stale).
    pub(super) fn waits_for(&self, deadline: Instant) -> bool {
        !self.final_sent && self.fr_deadline == Some(deadline)
    }

    /// Client transactions of the branches, for forgetting them.
    pub(super) fn clients(&self) -> impl Iterator<Item = TxId> + '_ {
        self.branches.iter().filter_map(|b| b.client)
    }

    /// Sends the branches of one relay: `destination` (or the next hop of
    /// the request) and every appended branch, each through on-branch.
    pub(super) fn add_branches<H: Hooks<Pinned = P>>(
        &mut self,
        fx: &mut Effects,
        hooks: &mut H,
        now: Instant,
        tx: TxId,
        destination: Option<String>,
    ) {
        // The first branch: the guest's destination, else the one a lookup
        // set ($du), with the lookup's Path; then the appended branches.
        let first = destination.or_else(|| self.req.dst_uri.take());
        let mut targets = vec![(None, first, std::mem::take(&mut self.req.path))];
        targets.extend(
            self.req
                .branches
                .drain(..)
                .map(|b| (Some(b.uri), b.destination, b.path)),
        );
        let deadline = now + self.fr.1;
        self.fr_deadline = Some(deadline);
        fx.fr_timers.push(Reverse((deadline, tx)));
        let breadths = checks::share_breadth(
            checks::max_breadth(&self.req.msg, fx.admission.limits.max_breadth),
            targets.len(),
        );
        for ((uri, destination, path), breadth) in targets.into_iter().zip(breadths) {
            let index = self.branches.len();
            let Some(breadth) = breadth else {
                // RFC 5393 §5.3.3: no breadth left for this branch.
                self.branches
                    .push(Branch::ended(&self.req.msg, 440, "Max-Breadth Exceeded"));
                continue;
            };
            let (branch, next) = self.new_branch(hooks, index, uri, destination, &path, breadth);
            self.branches.push(branch);
            match next {
                Next::Send(msg, target) => {
                    let (source, record_route) = (self.req.source, self.req.record_route);
                    let loop_hash = self.req.loop_hash;
                    let sent = self.branches.get_mut(index).is_some_and(|branch| {
                        send_branch(
                            fx,
                            now,
                            (tx, index),
                            branch,
                            msg,
                            target,
                            (record_route, loop_hash),
                            &source,
                        )
                    });
                    if !sent {
                        self.end_branch(index, 503, "Service Unavailable");
                    }
                }
                Next::Resolve(name) => self.resolve_branch(fx, tx, index, name),
                Next::Ended => {}
            }
        }
        // The context lives as long as the server transaction (32 s over
        // UDP); the branches are built, and later hooks read the request
        // seldom: its parsed views would be most of what it holds.
        self.req.msg.shed_views();
    }

    /// A branch's request: the hook's request with the branch's URI and
    /// Path, through on-branch, routed to its next hop; and what to do
    /// with it.
    fn new_branch<H: Hooks<Pinned = P>>(
        &mut self,
        hooks: &mut H,
        index: usize,
        uri: Option<String>,
        destination: Option<String>,
        path: &[String],
        breadth: u32,
    ) -> (Branch, Next) {
        let mut copy = self.req.clone();
        if let Some(uri) = uri {
            if let Err(err) = copy.msg.set_uri(&uri) {
                tracing::info!(%err, "bad branch URI");
                return (
                    Branch::ended(&self.req.msg, 400, "Bad Branch URI"),
                    Next::Ended,
                );
            }
        }
        // A binding's Path is the branch's Route set (RFC 3327 §5.3).
        for route in path.iter().rev() {
            if let Err(err) = copy.msg.prepend_header(HeaderName::Route, route) {
                tracing::info!(%err, "bad Path of a binding");
                return (Branch::ended(&self.req.msg, 500, "Bad Path"), Next::Ended);
            }
        }
        if self.vars.runs(Hook::OnBranch) {
            let index32 = u32::try_from(index).unwrap_or(u32::MAX);
            let result;
            (copy, result) = hooks.on_branch(&self.pinned, copy, index32, &mut self.vars);
            if let Err(err) = result {
                tracing::warn!(%err, "branch hook failed");
                return (
                    Branch::ended(&self.req.msg, 500, "Server Internal Error"),
                    Next::Ended,
                );
            }
        }
        let mut msg = copy.msg;
        if let Err(err) = checks::set_max_breadth(&mut msg, breadth) {
            tracing::warn!(%err, "cannot set Max-Breadth");
        }
        let hop = match next_hop(&mut msg, destination.as_deref()) {
            Ok(hop) => hop,
            Err(err) => {
                tracing::info!(%err, "cannot send a branch");
                return (
                    Branch::ended(&self.req.msg, 503, "Service Unavailable"),
                    Next::Ended,
                );
            }
        };
        match hop.literal_target() {
            Some(target) => (
                Branch {
                    flow: hop.flow,
                    ..Branch::default()
                },
                Next::Send(msg, target),
            ),
            None => {
                let branch = Branch {
                    retry: Some(Box::new(Retry {
                        msg,
                        targets: VecDeque::new(),
                        resolving: true,
                    })),
                    ..Branch::default()
                };
                (branch, Next::Resolve(hop))
            }
        }
    }

    /// Parks a branch until its next hop's name is resolved.
    fn resolve_branch(&mut self, fx: &mut Effects, tx: TxId, index: usize, name: Destination) {
        if fx
            .lookup(name, false, Parked::Branch { tx, index })
            .is_none()
        {
            tracing::warn!("too many lookups waiting; branch fails");
            self.end_branch(index, 503, "Service Unavailable");
        }
    }

    /// The lookup of branch `index` came back.
    pub(super) fn resolved<H: Hooks<Pinned = P>>(
        &mut self,
        fx: &mut Effects,
        hooks: &mut H,
        now: Instant,
        tx: TxId,
        index: usize,
        result: Result<Vec<Target>, String>,
    ) {
        let Some(branch) = self.branches.get_mut(index) else {
            return;
        };
        if !branch.retry.as_ref().is_some_and(|r| r.resolving) {
            return;
        }
        if !branch.pending() {
            // Ended while its name was looked up (CANCEL, final-response timer).
            branch.retry = None;
            return;
        }
        let Some(retry) = branch.retry.as_mut() else {
            return;
        };
        retry.resolving = false;
        match result {
            Ok(targets) => {
                retry.targets = targets.into();
                self.try_next_target(fx, now, tx, index);
            }
            Err(err) => {
                tracing::info!(%err, "branch destination not resolved");
                self.end_branch(index, 503, "Service Unavailable");
            }
        }
        self.check_done(fx, hooks, now, tx);
    }

    /// Sends branch `index` to the next target it has left; when none is
    /// left or none can be sent to, the branch ends with 503.
    fn try_next_target(&mut self, fx: &mut Effects, now: Instant, tx: TxId, index: usize) {
        let source = self.req.source;
        let record_route = self.req.record_route;
        let Some(branch) = self.branches.get_mut(index) else {
            return;
        };
        if self.canceled {
            // Nothing was sent on this target yet: there is nothing to cancel.
            branch.retry = None;
            branch.final_response = make_reply(&self.req.msg, 487, "Request Terminated", &[]);
            branch.synthesized = true;
            return;
        }
        while let Some(retry) = branch.retry.as_mut() {
            let Some(target) = retry.targets.pop_front() else {
                break;
            };
            // The last target takes the message; earlier ones a copy.
            let msg = if retry.targets.is_empty() {
                branch.retry.take().map(|r| r.msg)
            } else {
                Some(retry.msg.clone())
            };
            let Some(msg) = msg else { break };
            if send_branch(
                fx,
                now,
                (tx, index),
                branch,
                msg,
                target,
                (record_route, self.req.loop_hash),
                &source,
            ) {
                return;
            }
        }
        branch.retry = None;
        if branch.pending() {
            branch.final_response = make_reply(&self.req.msg, 503, "Service Unavailable", &[]);
            branch.synthesized = true;
        }
    }

    /// Ends a pending branch with a response of our own.
    fn end_branch(&mut self, index: usize, code: u16, reason: &str) {
        let synthesized = make_reply(&self.req.msg, code, reason, &[]);
        if let Some(branch) = self.branches.get_mut(index) {
            if branch.pending() {
                branch.retry = None;
                branch.final_response = synthesized;
                branch.synthesized = true;
            }
        }
    }

    /// A response delivered on branch `index` (our Via still on top).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_response<H: Hooks<Pinned = P>>(
        &mut self,
        fx: &mut Effects,
        hooks: &mut H,
        now: Instant,
        tx: TxId,
        index: usize,
        mut msg: Message,
        source: SocketAddr,
    ) {
        self.thaw();
        msg.remove_first_value(&HeaderName::Via);
        let status = msg.status().unwrap_or(500);
        let mut keep = true;
        if status > 100 && self.vars.runs(Hook::OnReply) {
            let origin = self.req.source;
            let req = std::mem::replace(&mut self.req, placeholder_request(origin));
            let (req, res, result) = hooks.on_reply(&self.pinned, req, msg, source, &mut self.vars);
            self.req = req;
            msg = res;
            match result {
                Ok(k) => keep = k || status >= 200,
                Err(err) => tracing::warn!(%err, "reply hook failed"),
            }
        }
        let Some(branch) = self.branches.get_mut(index) else {
            return;
        };
        match status {
            100 => {}
            101..=199 => {
                if !branch.provisional {
                    branch.provisional = true;
                    // A target that answered is the one: no failover after this.
                    branch.retry = None;
                    if branch.cancel_pending {
                        branch.cancel_pending = false;
                        send_cancel(fx, now, branch);
                    }
                    if self.invite && !self.final_sent {
                        let deadline = now + self.fr.0;
                        self.fr_deadline = Some(deadline);
                        fx.fr_timers.push(Reverse((deadline, tx)));
                    }
                }
                if keep && !self.final_sent {
                    hooks.replied(&self.pinned, status);
                    fx.respond(now, tx, msg);
                }
            }
            200..=299 => {
                branch.answered_2xx = true;
                branch.retry = None;
                // Every 2xx goes upstream (§16.7 step 5), retransmissions too.
                hooks.replied(&self.pinned, status);
                if !self.final_sent {
                    let reason = msg.reason().unwrap_or_default();
                    self.account(hooks, status, reason, Some(&msg));
                }
                fx.respond(now, tx, msg);
                if !self.final_sent {
                    self.final_sent = true;
                    self.cancel_pending_branches(fx, now);
                }
            }
            _ => {
                // RFC 3263 §4.3: a 503 from one server of a name sends the
                // request to the next one.
                if status == 503 && branch.can_fail_over() && !(self.canceled || self.final_sent) {
                    tracing::debug!(%tx, index, "503 from a target; trying the next one");
                    self.try_next_target(fx, now, tx, index);
                } else {
                    if branch.pending() {
                        branch.retry = None;
                        branch.final_response = Some(msg);
                        branch.synthesized = false;
                    }
                    if status >= 600 && !self.final_sent {
                        self.cancel_pending_branches(fx, now);
                    }
                }
            }
        }
        self.check_done(fx, hooks, now, tx);
    }

    /// A client transaction timed out or could not send: the branch moves
    /// on to its name's next target, or ends with `code` (§16.7 step 2,
    /// §16.8).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn branch_failed<H: Hooks<Pinned = P>>(
        &mut self,
        fx: &mut Effects,
        hooks: &mut H,
        now: Instant,
        tx: TxId,
        index: usize,
        code: u16,
        reason: &str,
    ) {
        tracing::debug!(%tx, index, code, "branch failed");
        let Some(branch) = self.branches.get(index) else {
            return;
        };
        // RFC 5626 §5.3: what could not be sent to a flow (a WebSocket
        // client's connection, which only the client can open again)
        // failed for good.
        let (code, reason) = match branch.target {
            Some(t) if code == 503 && (branch.flow || !t.transport.can_connect()) => {
                (430, "Flow Failed")
            }
            _ => (code, reason),
        };
        if branch.can_fail_over() && !(self.canceled || self.final_sent) {
            self.try_next_target(fx, now, tx, index);
        } else {
            self.end_branch(index, code, reason);
        }
        self.check_done(fx, hooks, now, tx);
    }

    /// The caller's CANCEL: every pending branch is cancelled; their 487s
    /// make the answer upstream.
    pub(super) fn cancel<H: Hooks<Pinned = P>>(
        &mut self,
        fx: &mut Effects,
        hooks: &mut H,
        now: Instant,
        tx: TxId,
    ) {
        if !self.final_sent {
            self.cancel_pending_branches(fx, now);
            self.check_done(fx, hooks, now, tx);
        }
    }

    fn cancel_pending_branches(&mut self, fx: &mut Effects, now: Instant) {
        self.canceled = true;
        for branch in self.branches.iter_mut().filter(|b| b.pending()) {
            if branch.provisional {
                send_cancel(fx, now, branch);
            } else if branch.client.is_some() {
                branch.cancel_pending = true;
            } else {
                // Still waiting for its name: nothing went out to cancel.
                // (The 487 is made only here: making a reply parses the
                // request's views, which it would then keep for the
                // transaction's life.)
                branch.retry = None;
                branch.final_response = make_reply(&self.req.msg, 487, "Request Terminated", &[]);
                branch.synthesized = true;
            }
        }
    }

    /// The final-response timer ran out (`deadline` is the one it was set
    /// for): pending branches are cancelled and end as 408.
    pub(super) fn fr_expired<H: Hooks<Pinned = P>>(
        &mut self,
        fx: &mut Effects,
        hooks: &mut H,
        now: Instant,
        tx: TxId,
        deadline: Instant,
    ) {
        if self.fr_deadline != Some(deadline) || self.final_sent {
            return;
        }
        tracing::debug!(%tx, "final response timer ran out");
        self.fr_deadline = None;
        for branch in self.branches.iter_mut().filter(|b| b.pending()) {
            if branch.provisional {
                send_cancel(fx, now, branch);
            }
            branch.retry = None;
            branch.final_response = make_reply(&self.req.msg, 408, "Request Timeout", &[]);
            branch.synthesized = true;
        }
        self.check_done(fx, hooks, now, tx);
    }

    /// When every branch has ended without a 2xx: on-failure (which may
    /// start new branches), then the best response upstream (§16.7 steps
    /// 6–7).
    pub(super) fn check_done<H: Hooks<Pinned = P>>(
        &mut self,
        fx: &mut Effects,
        hooks: &mut H,
        now: Instant,
        tx: TxId,
    ) {
        loop {
            if self.final_sent || self.branches.iter().any(Branch::pending) {
                return;
            }
            let (mut best, synthesized) = best_response(&self.branches)
                .or_else(|| make_reply(&self.req.msg, 500, "No Branch", &[]).map(|m| (m, true)))
                .unwrap_or_else(|| (Message::new_response(500, "No Branch"), true));
            if !self.canceled
                && self.failure_rounds < MAX_FAILURE_ROUNDS
                && self.vars.runs(Hook::OnFailure)
            {
                self.failure_rounds += 1;
                let source = self.req.source;
                let req = std::mem::replace(&mut self.req, placeholder_request(source));
                let (req, res, result) = hooks.on_failure(&self.pinned, req, best, &mut self.vars);
                self.req = req;
                best = res;
                match result {
                    Ok(actions) => match self.failure_action(actions) {
                        Some(Action::Relay { destination }) => {
                            self.add_branches(fx, hooks, now, tx, destination);
                            // New branches may all have failed at once: look again.
                            continue;
                        }
                        Some(Action::Reply {
                            code,
                            reason,
                            headers,
                        }) => {
                            self.final_sent = true;
                            if self.req.msg.method() != Some(&Method::Ack) {
                                hooks.replied(&self.pinned, code);
                            }
                            self.account(hooks, code, &reason, None);
                            let req = self.req.clone();
                            fx.answer(now, Some(tx), &req, code, &reason, &headers);
                            return;
                        }
                        _ => {}
                    },
                    Err(err) => tracing::warn!(%err, "failure hook failed"),
                }
            }
            self.final_sent = true;
            // §16.7 step 6: a 503 from downstream becomes a 500 upstream, so
            // the caller does not take this proxy for unavailable. Our own
            // 503 (no target could be reached) says what it means.
            if best.status() == Some(503) && !synthesized {
                if let Some(internal) = make_reply(&self.req.msg, 500, "Server Internal Error", &[])
                {
                    best = internal;
                }
            }
            if let Some(code) = best.status() {
                hooks.replied(&self.pinned, code);
                self.account(hooks, code, best.reason().unwrap_or_default(), Some(&best));
            }
            fx.respond(now, tx, best);
            return;
        }
    }

    /// Has the hooks write the transaction's record of its final answer
    /// going upstream (`code`, and the response when one was relayed),
    /// when the routing asked for one (`acc.account`).
    fn account<H: Hooks<Pinned = P>>(
        &self,
        hooks: &mut H,
        code: u16,
        reason: &str,
        answer: Option<&Message>,
    ) {
        if self.vars.accounted.records(code) {
            hooks.account(&self.pinned, &self.req.msg, code, reason, answer);
        }
    }

    /// The first relay or reply the failure hook asked for.
    fn failure_action(&self, actions: Vec<Action>) -> Option<Action> {
        actions.into_iter().find(|action| match action {
            Action::Forward { .. } => {
                tracing::warn!("forward is not possible in on-failure; use relay");
                false
            }
            _ => true,
        })
    }
}

/// What stands in for a relay's request while a hook holds it (hooks take
/// the request by value and give it back): empty, so it allocates nothing.
fn placeholder_request(source: super::request::Source) -> RequestCtx {
    RequestCtx::new(Message::new_response(0, ""), source)
}

/// What comes of a new branch.
enum Next {
    /// Its next hop is an address.
    Send(Message, Target),
    /// Its next hop is a name: its request waits in the branch.
    Resolve(Destination),
    /// It ended before it could be sent.
    Ended,
}

/// Sends a branch's request to `target` on a client transaction of its
/// own; false when it cannot go there.
#[allow(clippy::too_many_arguments)]
fn send_branch(
    fx: &mut Effects,
    now: Instant,
    (tx, index): (TxId, usize),
    branch: &mut Branch,
    msg: Message,
    target: Target,
    (record_route, loop_hash): (bool, u32),
    source: &super::request::Source,
) -> bool {
    let via_branch = fx.next_branch(loop_hash, msg.top_via().ok());
    let msg = match fx.prepare(msg, record_route, source, target, branch.flow, &via_branch) {
        Ok(msg) => msg,
        Err(err) => {
            tracing::info!(%err, "cannot send a branch to this target");
            return false;
        }
    };
    match fx.txs.send_request(now, msg, target) {
        Ok(client) => {
            fx.take_tx_transmits();
            if let Some(old) = branch.client.replace(client) {
                fx.branch_of.remove(&old);
            }
            branch.target = Some(target);
            fx.branch_of.insert(client, (tx, index));
            true
        }
        Err(err) => {
            tracing::warn!(%err, "transaction layer refused a branch");
            false
        }
    }
}

fn send_cancel(fx: &mut Effects, now: Instant, branch: &mut Branch) {
    let (Some(client), Some(target)) = (branch.client, branch.target) else {
        return;
    };
    match fx.txs.cancel_request(client) {
        Ok(cancel) => {
            if let Err(err) = fx.txs.send_request(now, cancel, target) {
                tracing::debug!(%err, "CANCEL not sent");
            }
            fx.take_tx_transmits();
        }
        Err(err) => tracing::debug!(%err, "no CANCEL for this branch"),
    }
}

/// RFC 3261 §16.7 step 6: a 6xx if any, else the lowest class; 401 and
/// 407 challenges of every branch are merged into the chosen one. Also
/// whether the chosen one is ours.
fn best_response(branches: &[Branch]) -> Option<(Message, bool)> {
    let finals: Vec<(&Message, bool)> = branches
        .iter()
        .filter_map(|b| b.final_response.as_ref().map(|m| (m, b.synthesized)))
        .collect();
    let class = |m: &Message| m.status().unwrap_or(500) / 100;
    let (chosen, synthesized) = finals
        .iter()
        .find(|(m, _)| class(m) == 6)
        .or_else(|| finals.iter().min_by_key(|(m, _)| class(m)))
        .copied()?;
    let mut best = chosen.clone();
    if matches!(best.status(), Some(401 | 407)) {
        for (other, _) in finals.iter().filter(|(m, _)| !std::ptr::eq(*m, chosen)) {
            for name in [HeaderName::WwwAuthenticate, HeaderName::ProxyAuthenticate] {
                for value in other.header_lines(&name) {
                    let _ = best.append_header(name.clone(), value);
                }
            }
        }
    }
    Some((best, synthesized))
}
