//! The proxy core (RFC 3261 §16) as a sans-IO state machine, driven the way
//! [`Transactions`] is: messages, lookup answers and time come in through
//! `handle_*(now, …)`; messages to send, names to look up and the next
//! deadline come out through [`Core::poll_transmit`], [`Core::poll_event`]
//! and [`Core::poll_timeout`]. Hooks are called through [`Hooks`] while a
//! message is handled. The core never reads a clock, a socket or a
//! resolver, so forking, CANCEL and the timers are tested on a fake clock.

use std::cmp::Reverse;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::sip::{self, HeaderName, Message, Method};
use crate::transaction::hash::KeyedMap;
use crate::transaction::{Event as TxEvent, Incoming, ResponseDisposition, Transactions, TxId};
use crate::transport::Target;

use super::admission::Admission;
use super::branch;
use super::checks;
use super::effects::{Effects, Event, LookupId, Parked, Transmit};
use super::hooks::{Hooks, Routed};
use super::locality::Locality;
use super::relay::Relay;
use super::replies::{make_reply, reply_target, stamp_received};
use super::request::{Action, RequestCtx, Source, TxVars};

/// How many times its own size a request over UDP from an untrusted,
/// unauthenticated source may get back in one reply of ours.
pub const AMPLIFICATION: usize = 3;

/// The proxy transactions of one shard's calls, over their transactions.
pub struct Core<P> {
    pub(super) fx: Effects,
    /// Relayed requests, by their server transaction.
    pub(super) relays: KeyedMap<TxId, Relay<P>>,
}

impl<P> Core<P> {
    /// `shard` names this core in the branch of every request it relays
    /// (see [`super::branch`]), so that its responses can be brought back
    /// to it.
    pub fn new(
        txs: Transactions,
        locality: Arc<Locality>,
        shard: usize,
        admission: Arc<Admission>,
    ) -> Core<P> {
        Core {
            fx: Effects::new(txs, locality, shard, admission),
            relays: KeyedMap::default(),
        }
    }

    /// A message received from `source`, parsed.
    pub fn handle<H: Hooks<Pinned = P>>(
        &mut self,
        now: Instant,
        msg: Message,
        source: Source,
        hooks: &mut H,
    ) {
        if msg.is_request() {
            self.on_request(now, msg, source, hooks);
        } else {
            self.on_response(now, msg, source.remote, hooks);
        }
        self.pump(now, hooks);
    }

    /// Fires the transaction and final-response timers due at `now`.
    pub fn handle_timeout<H: Hooks<Pinned = P>>(&mut self, now: Instant, hooks: &mut H) {
        self.fx.txs.handle_timeout(now);
        self.pump(now, hooks);
        while let Some(Reverse((deadline, tx))) = self.fx.fr_timers.peek().copied() {
            if deadline > now {
                break;
            }
            self.fx.fr_timers.pop();
            if let Some(relay) = self.relays.get_mut(&tx) {
                relay.fr_expired(&mut self.fx, hooks, now, tx, deadline);
            }
            self.settle(tx);
            self.pump(now, hooks);
        }
    }

    /// Sending a message of transaction `tx` failed.
    pub fn handle_transport_error<H: Hooks<Pinned = P>>(
        &mut self,
        now: Instant,
        tx: TxId,
        hooks: &mut H,
    ) {
        self.fx.txs.handle_transport_error(now, tx);
        self.pump(now, hooks);
    }

    /// A connection to `target` could not be opened: the branches waiting
    /// on it fail at once (503, or 430 for a flow) and may fail over.
    pub fn handle_connection_failed<H: Hooks<Pinned = P>>(
        &mut self,
        now: Instant,
        target: Target,
        hooks: &mut H,
    ) {
        self.fx.txs.handle_connection_failed(now, target);
        self.pump(now, hooks);
    }

    /// The answer to lookup `id`: the targets to try in order, or why
    /// there are none.
    pub fn handle_resolved<H: Hooks<Pinned = P>>(
        &mut self,
        now: Instant,
        id: LookupId,
        result: Result<Vec<Target>, String>,
        hooks: &mut H,
    ) {
        match self.fx.parked.remove(&id) {
            None => {}
            Some(Parked::Branch { tx, index }) => {
                if let Some(relay) = self.relays.get_mut(&tx) {
                    relay.resolved(&mut self.fx, hooks, now, tx, index, result);
                }
                self.settle(tx);
            }
            Some(Parked::Forward { req, msg, branch }) => {
                self.forward_resolved(&req, msg, &branch, result)
            }
            Some(Parked::Response { msg }) => self.response_resolved(msg, result),
        }
        self.pump(now, hooks);
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.fx.poll_transmit()
    }

    /// The next thing the driver must do for the core.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.fx.poll_event()
    }

    /// When [`Core::handle_timeout`] is next due (possibly early: a
    /// final-response timer that moved leaves its old deadline behind).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let fr = self.fx.fr_timers.peek().map(|Reverse((d, _))| *d);
        match (self.fx.txs.poll_timeout(), fr) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Live transactions and relays, for tests and stats.
    pub fn len(&self) -> (usize, usize) {
        (self.fx.txs.len(), self.relays.len())
    }

    /// Handles what the transaction layer reported, until nothing is left
    /// (a timeout may start new branches, whose sends may fail...).
    fn pump<H: Hooks<Pinned = P>>(&mut self, now: Instant, hooks: &mut H) {
        loop {
            self.fx.take_tx_transmits();
            let Some(event) = self.fx.txs.poll_event() else {
                return;
            };
            self.on_tx_event(now, event, hooks);
        }
    }

    fn on_tx_event<H: Hooks<Pinned = P>>(&mut self, now: Instant, event: TxEvent, hooks: &mut H) {
        match event {
            TxEvent::Timeout(client) => {
                self.branch_failed(now, client, 408, "Request Timeout", hooks)
            }
            TxEvent::TransportError(client) => {
                self.branch_failed(now, client, 503, "Service Unavailable", hooks)
            }
            TxEvent::NoAck(tx) => tracing::debug!(%tx, "no ACK for a final response"),
            TxEvent::Terminated(tx) => {
                self.fx.release(tx);
                self.fx.branch_of.remove(&tx);
                if let Some(relay) = self.relays.remove(&tx) {
                    for client in relay.clients() {
                        self.fx.branch_of.remove(&client);
                    }
                }
            }
        }
    }

    fn branch_failed<H: Hooks<Pinned = P>>(
        &mut self,
        now: Instant,
        client: TxId,
        code: u16,
        reason: &str,
        hooks: &mut H,
    ) {
        let Some(&(tx, index)) = self.fx.branch_of.get(&client) else {
            return;
        };
        if let Some(relay) = self.relays.get_mut(&tx) {
            relay.branch_failed(&mut self.fx, hooks, now, tx, index, code, reason);
        }
        self.settle(tx);
    }

    fn on_request<H: Hooks<Pinned = P>>(
        &mut self,
        now: Instant,
        msg: Message,
        source: Source,
        hooks: &mut H,
    ) {
        let mut req = RequestCtx::new(msg, source);
        req.received_len = req.msg.wire_len();
        if let Err(err) = sip::validate(&req.msg) {
            tracing::debug!(remote = %source.remote, %err, "malformed request");
            self.fx.reply(&req, 400, &err.to_string(), &[]);
            return;
        }
        let ack = req.msg.method() == Some(&Method::Ack);
        // RFC 3261 §16.3 step 4: a request that comes back with one of our
        // Vias and the same loop hash went round in a loop (a spiral, whose
        // Request-URI changed on the way, goes on).
        req.loop_hash = branch::loop_hash(&req.msg);
        if branch::has_looped(&req.msg, req.loop_hash) {
            tracing::info!(remote = %source.remote, call_id = req.msg.call_id().unwrap_or(""), "loop detected");
            if !ack {
                self.fx.reply(&req, 482, "Loop Detected", &[]);
            }
            return;
        }
        if let Err(err) =
            checks::cap_max_forwards(&mut req.msg, self.fx.admission.limits.max_forwards)
        {
            self.fx.reply(&req, 400, &err, &[]);
            return;
        }
        stamp_received(&mut req.msg, &req.source);
        // Another node of the cluster sent it for a flow this node holds.
        if let Some(flow) = super::routing::flow_route(&req.msg, &self.fx.locality) {
            req.dst_uri = Some(format!("{};ob", flow.uri()));
        }
        let reply_to = reply_target(&req.msg, &req.source);
        let incoming = self.fx.txs.handle_request(now, &req.msg, reply_to);
        self.fx.take_tx_transmits();
        match incoming {
            Err(err) => self.fx.reply(&req, 400, &err.to_string(), &[]),
            Ok(Incoming::Retransmission) | Ok(Incoming::AckOfNon2xx(_)) => {}
            Ok(Incoming::Ack2xx) => self.route(now, None, req, hooks),
            Ok(Incoming::New(tx)) => {
                if self.admit(tx, &req) {
                    self.route(now, Some(tx), req, hooks)
                }
            }
            // RFC 3261 §16.10: a CANCEL for a relayed INVITE is answered
            // here and sent down every pending branch; one for a
            // transaction we do not know goes to the route hook, which
            // forwards it statelessly.
            Ok(Incoming::Cancel {
                cancel,
                invite: Some(invite),
            }) => {
                self.fx.answer(now, Some(cancel), &req, 200, "OK", &[]);
                if let Some(relay) = self.relays.get_mut(&invite) {
                    relay.cancel(&mut self.fx, hooks, now, invite);
                }
                self.settle(invite);
            }
            Ok(Incoming::Cancel {
                cancel,
                invite: None,
            }) => {
                if self.admit(cancel, &req) {
                    self.route(now, Some(cancel), req, hooks)
                }
            }
        }
    }

    /// Counts a new server transaction against the limits; past them the
    /// request is answered 503 without one, and false.
    fn admit(&mut self, tx: TxId, req: &RequestCtx) -> bool {
        let source = (!req.source.trusted).then(|| req.source.remote.ip());
        match self.fx.admission.admit(source) {
            Ok(()) => {
                self.fx.admitted.insert(tx, source);
                true
            }
            Err(refused) => {
                tracing::info!(remote = %req.source.remote, ?refused, "too many transactions");
                self.fx.txs.forget(tx);
                let retry_after = [(HeaderName::parse("Retry-After"), "5".to_owned())];
                self.fx
                    .reply(req, 503, "Too Many Transactions", &retry_after);
                false
            }
        }
    }

    /// Runs the route hook and carries out what it decided.
    fn route<H: Hooks<Pinned = P>>(
        &mut self,
        now: Instant,
        tx: Option<TxId>,
        req: RequestCtx,
        hooks: &mut H,
    ) {
        let mut vars = TxVars::default();
        let (req, routed) = hooks.route(req, &mut vars);
        match routed {
            Routed::Actions { pinned, actions } => {
                self.execute(now, tx, req, actions, pinned, vars, hooks)
            }
            Routed::NoRouting(code) => {
                let reason = if code == 403 {
                    "Forbidden"
                } else {
                    "Not Found"
                };
                self.fx.answer(now, tx, &req, code, reason, &[]);
            }
            Routed::Overloaded {
                pinned,
                retry_after,
            } => {
                let retry_after = [(HeaderName::parse("Retry-After"), retry_after.to_string())];
                self.answer_for(
                    hooks,
                    &pinned,
                    now,
                    tx,
                    &req,
                    503,
                    "Service Unavailable",
                    &retry_after,
                );
            }
            Routed::Failed { pinned } => {
                self.answer_for(
                    hooks,
                    &pinned,
                    now,
                    tx,
                    &req,
                    500,
                    "Server Internal Error",
                    &[],
                );
            }
        }
    }

    /// Answers a request and counts the reply for the routing.
    #[allow(clippy::too_many_arguments)]
    fn answer_for<H: Hooks<Pinned = P>>(
        &mut self,
        hooks: &mut H,
        pinned: &P,
        now: Instant,
        tx: Option<TxId>,
        req: &RequestCtx,
        code: u16,
        reason: &str,
        headers: &[(HeaderName, String)],
    ) {
        let too_large = self.amplifies(req, code, reason, headers);
        let (code, reason, headers) = if too_large {
            tracing::info!(remote = %req.source.remote, code, "reply to an unauthenticated request too large for UDP: 500 instead");
            (
                500,
                "Reply Too Large For An Unauthenticated Request",
                &[][..],
            )
        } else {
            (code, reason, headers)
        };
        if req.msg.method() != Some(&Method::Ack) {
            hooks.replied(pinned, code);
        }
        // A routing's refusal is sent once, like Kamailio's sl_send_reply:
        // a refused INVITE's transaction would retransmit it (11 times over
        // UDP) to a source that may be spoofed, and any refused request's
        // would be kept 32 s (Timer H or J), a challenged REGISTER's too;
        // the sender's own retransmissions bring the answer again, the same
        // but for a digest challenge's fresh nonce.
        if code >= 300 {
            if let Some(tx) = tx {
                self.fx.txs.forget(tx);
            }
            self.fx.reply(req, code, reason, headers);
            return;
        }
        self.fx.answer(now, tx, req, code, reason, headers);
    }

    /// Whether our reply would make a request amplify: over UDP, from a
    /// source neither trusted nor authenticated (its address may be
    /// spoofed), a reply more than [`AMPLIFICATION`] times the request's
    /// size (a REGISTER query of a user with many bindings, say).
    fn amplifies(
        &self,
        req: &RequestCtx,
        code: u16,
        reason: &str,
        headers: &[(HeaderName, String)],
    ) -> bool {
        if req.source.trusted || req.authenticated || req.source.transport.is_stream() {
            return false;
        }
        make_reply(&req.msg, code, reason, headers)
            .is_some_and(|reply| reply.wire_len() > AMPLIFICATION * req.received_len.max(1))
    }

    /// Carries out the route hook's actions in order. A request neither
    /// answered nor relayed leaves no state behind.
    #[allow(clippy::too_many_arguments)]
    fn execute<H: Hooks<Pinned = P>>(
        &mut self,
        now: Instant,
        tx: Option<TxId>,
        mut req: RequestCtx,
        actions: Vec<Action>,
        pinned: P,
        vars: TxVars,
        hooks: &mut H,
    ) {
        let mut answered = false;
        let mut actions = actions.into_iter();
        while let Some(action) = actions.next() {
            match action {
                Action::Reply {
                    code,
                    reason,
                    headers,
                } => {
                    self.answer_for(hooks, &pinned, now, tx, &req, code, &reason, &headers);
                    answered = true;
                }
                Action::Relay { destination } => match tx {
                    // An ACK has no transaction: relaying it is a stateless forward.
                    Some(tx) if !answered => {
                        if actions.next().is_some() {
                            tracing::debug!("actions after a relay are ignored");
                        }
                        self.start_relay(now, tx, req, destination, pinned, vars, hooks);
                        return;
                    }
                    _ => answered |= self.forward(now, tx, &mut req, destination),
                },
                Action::Forward { destination } => {
                    answered |= self.forward(now, tx, &mut req, destination)
                }
            }
        }
        if !answered {
            if let Some(tx) = tx {
                self.fx.txs.forget(tx);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn start_relay<H: Hooks<Pinned = P>>(
        &mut self,
        now: Instant,
        tx: TxId,
        req: RequestCtx,
        destination: Option<String>,
        pinned: P,
        vars: TxVars,
        hooks: &mut H,
    ) {
        let Some(relay) = Relay::start(&mut self.fx, hooks, now, tx, req, pinned, vars) else {
            return;
        };
        let relay = self.relays.entry(tx).or_insert(relay);
        relay.add_branches(&mut self.fx, hooks, now, tx, destination);
        relay.check_done(&mut self.fx, hooks, now, tx);
        self.settle(tx);
    }

    /// A relay whose answer upstream was a failure (or any final of a
    /// non-INVITE) and whose branches have all ended has nothing left to
    /// do: its request, branches and
    /// responses go now, not when its server transaction ends (32 s over
    /// UDP). The transactions themselves, small, absorb what comes late.
    /// A relay that forwarded a 2xx to an INVITE stays, for the 2xx
    /// retransmissions, its request frozen to bytes.
    fn settle(&mut self, tx: TxId) {
        let Some(relay) = self.relays.get_mut(&tx) else {
            return;
        };
        if relay.finished() {
            self.relays.remove(&tx);
        } else {
            relay.freeze();
        }
        // A relay's final-response timers (30 s, 120 s once an INVITE
        // rang) outlive most relays or are moved: their stale entries go
        // when they outnumber the relays, not at their deadlines.
        if self.fx.fr_timers.len() > 2 * self.relays.len() + 1024 {
            let relays = &self.relays;
            self.fx.fr_timers.retain(|Reverse((deadline, tx))| {
                relays.get(tx).is_some_and(|r| r.waits_for(*deadline))
            });
        }
    }

    fn on_response<H: Hooks<Pinned = P>>(
        &mut self,
        now: Instant,
        msg: Message,
        source: SocketAddr,
        hooks: &mut H,
    ) {
        if let Err(err) = sip::validate(&msg) {
            tracing::debug!(%err, "dropping a malformed response");
            return;
        }
        let delivered = self.fx.txs.handle_response(now, &msg, source.ip());
        self.fx.take_tx_transmits();
        match delivered {
            Some((_, ResponseDisposition::Foreign)) => {
                tracing::info!(%source, status = msg.status().unwrap_or(0), "dropping a response from another address than its request went to");
            }
            // No transaction: a 2xx retransmitted after ours ended, or the
            // answer to a statelessly forwarded request (RFC 3261 §16.7).
            None => self.relay_response(msg),
            Some((_, ResponseDisposition::Absorbed)) => {}
            Some((client, ResponseDisposition::Deliver)) => {
                // Responses to our own CANCELs end here.
                let Some(&(tx, index)) = self.fx.branch_of.get(&client) else {
                    return;
                };
                if let Some(relay) = self.relays.get_mut(&tx) {
                    relay.on_response(&mut self.fx, hooks, now, tx, index, msg, source);
                }
                self.settle(tx);
            }
        }
    }
}
