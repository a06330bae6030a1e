//! A worker: the transactions of the calls hashed to one shard, their
//! hooks, and the transaction layer's timers. It runs on whichever thread
//! holds its shard (see `shard.rs`).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use crate::script::{Action, HookError, Pool, RequestCtx, Source, TxVars};
use crate::sip::{self, HeaderName, Message};
use crate::tenancy::Selected;
use crate::transaction::{Event, Incoming, ResponseDisposition, Transactions, TxId};

use super::stateful::ProxyTx;
use super::stateless::{make_reply, reply_target, stamp_received};
use super::Proxy;

pub(super) struct Worker {
    pub(super) proxy: Arc<Proxy>,
    pub(super) txs: Transactions,
    /// Relayed requests, by their server transaction.
    pub(super) contexts: HashMap<TxId, ProxyTx>,
    /// Client transaction → (server transaction, branch index).
    pub(super) branch_of: HashMap<TxId, (TxId, usize)>,
    /// Final-response timers (fr_timer / fr_inv_timer), checked lazily
    /// against the context's current deadline.
    pub(super) fr_timers: BinaryHeap<Reverse<(Instant, TxId)>>,
    /// Unique branch parameters: worker-and-process prefix plus a counter.
    branch_prefix: String,
    branch_seq: u64,
}

impl Worker {
    pub(super) fn new(proxy: Arc<Proxy>, index: usize) -> Worker {
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ u64::from(std::process::id()).rotate_left(32);
        Worker {
            txs: Transactions::new(proxy.timers),
            proxy,
            contexts: HashMap::new(),
            branch_of: HashMap::new(),
            fr_timers: BinaryHeap::new(),
            branch_prefix: format!("z9hG4bKwsp{nonce:x}.{index}."),
            branch_seq: 0,
        }
    }

    /// Handles one message of this shard's calls.
    pub(super) fn handle(&mut self, msg: Message, source: Source) {
        let now = Instant::now();
        if msg.is_request() {
            self.on_request(now, msg, source);
        } else {
            self.on_response(now, msg, source.remote);
        }
    }

    /// Fires the transaction and final-response timers that are due.
    pub(super) fn expire(&mut self) {
        let now = Instant::now();
        self.txs.handle_timeout(now);
        self.fire_fr_timers(now);
        self.flush(now);
    }

    pub(super) fn next_branch(&mut self) -> String {
        self.branch_seq += 1;
        format!("{}{}", self.branch_prefix, self.branch_seq)
    }

    /// Sends what the transaction layer queued and handles its events,
    /// until neither is left (an event may queue more).
    pub(super) fn flush(&mut self, now: Instant) {
        loop {
            let mut progressed = false;
            while let Some(t) = self.txs.poll_transmit() {
                progressed = true;
                if let Err(err) = self.proxy.transports.send(t.target, t.data) {
                    tracing::debug!(%err, "transaction send failed");
                    self.txs.handle_transport_error(now, t.tx);
                }
            }
            while let Some(event) = self.txs.poll_event() {
                progressed = true;
                self.on_event(now, event);
            }
            if !progressed {
                return;
            }
        }
    }

    fn on_request(&mut self, now: Instant, msg: Message, source: Source) {
        let mut req = RequestCtx::new(msg, source);
        if let Err(err) = sip::validate(&req.msg) {
            tracing::debug!(remote = %source.remote, %err, "malformed request");
            self.proxy.reply(&req, 400, &err.to_string(), &[]);
            return;
        }
        stamp_received(&mut req.msg, &req.source);
        let reply_to = reply_target(&req.msg, &req.source);
        match self.txs.handle_request(now, &req.msg, reply_to) {
            Err(err) => self.proxy.reply(&req, 400, &err.to_string(), &[]),
            Ok(Incoming::Retransmission) | Ok(Incoming::AckOfNon2xx(_)) => {}
            Ok(Incoming::Ack2xx) => self.route(now, None, req),
            Ok(Incoming::New(tx)) => self.route(now, Some(tx), req),
            Ok(Incoming::Cancel { cancel, invite }) => self.on_cancel(now, cancel, invite, req),
        }
        self.flush(now);
    }

    /// RFC 3261 §16.10: a CANCEL for a relayed INVITE is answered here and
    /// sent down every pending branch; one for a transaction we do not know
    /// goes to the route hook, which forwards it statelessly.
    fn on_cancel(&mut self, now: Instant, cancel: TxId, invite: Option<TxId>, req: RequestCtx) {
        match invite {
            Some(invite) => {
                self.answer(now, Some(cancel), &req, 200, "OK", &[]);
                self.cancel_all(now, invite);
            }
            None => self.route(now, Some(cancel), req),
        }
    }

    /// Picks the tenant and its version, runs the route hook and carries
    /// out what it decided.
    fn route(&mut self, now: Instant, tx: Option<TxId>, req: RequestCtx) {
        let tenant = match self.proxy.tenancy.select(&req.msg, &req.source) {
            Selected::Tenant(tenant) => tenant,
            Selected::Unknown(code) => {
                let reason = if code == 403 {
                    "Forbidden"
                } else {
                    "Not Found"
                };
                tracing::debug!(
                    uri = req.msg.uri().unwrap_or(""),
                    "no tenant for the request"
                );
                self.answer(now, tx, &req, code, reason, &[]);
                return;
            }
        };
        tenant.metrics.requests.inc();
        let pool = tenant.pick(req.msg.call_id());
        let mut vars = TxVars::default();
        let (req, result) = pool.route(req, &mut vars);
        match result {
            Ok(((), actions)) => self.execute(now, tx, req, actions, pool, vars),
            Err(err) if err.is_overload() => {
                tracing::debug!(tenant = %tenant.name, %err, "not routed; answering 503");
                let wait = match &err {
                    HookError::Suspended(left) => left.as_secs() + 1,
                    _ => 5,
                };
                let retry_after = [(HeaderName::parse("Retry-After"), wait.to_string())];
                self.answer_for(
                    &pool,
                    now,
                    tx,
                    &req,
                    503,
                    "Service Unavailable",
                    &retry_after,
                );
            }
            Err(err) => {
                tracing::warn!(tenant = %tenant.name, version = pool.guest().version, %err, "route hook failed; answering 500");
                self.answer_for(&pool, now, tx, &req, 500, "Server Internal Error", &[]);
            }
        }
    }

    /// Answers a request and counts the reply for the tenant.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn answer_for(
        &mut self,
        pool: &Pool,
        now: Instant,
        tx: Option<TxId>,
        req: &RequestCtx,
        code: u16,
        reason: &str,
        headers: &[(HeaderName, String)],
    ) {
        if req.msg.method() != Some(&sip::Method::Ack) {
            pool.guest().metrics.reply(code);
        }
        self.answer(now, tx, req, code, reason, headers);
    }

    /// Carries out the route hook's actions in order. A request neither
    /// answered nor relayed leaves no state behind.
    fn execute(
        &mut self,
        now: Instant,
        tx: Option<TxId>,
        mut req: RequestCtx,
        actions: Vec<Action>,
        pool: Arc<Pool>,
        vars: TxVars,
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
                    self.answer_for(&pool, now, tx, &req, code, &reason, &headers);
                    answered = true;
                }
                Action::Relay { destination } => match tx {
                    // An ACK has no transaction: relaying it is a stateless forward.
                    Some(tx) if !answered => {
                        if actions.next().is_some() {
                            tracing::debug!("actions after a relay are ignored");
                        }
                        self.start_relay(now, tx, req, destination, pool, vars);
                        return;
                    }
                    _ => self.forward(now, tx, &mut req, destination, &mut answered),
                },
                Action::Forward { destination } => {
                    self.forward(now, tx, &mut req, destination, &mut answered)
                }
            }
        }
        if !answered {
            if let Some(tx) = tx {
                self.txs.forget(tx);
            }
        }
    }

    fn forward(
        &mut self,
        now: Instant,
        tx: Option<TxId>,
        req: &mut RequestCtx,
        destination: Option<String>,
        answered: &mut bool,
    ) {
        let destination = destination.or_else(|| req.dst_uri.clone());
        if let Err(err) = self.proxy.forward(req, destination.as_deref()) {
            tracing::info!(remote = %req.source.remote, %err, "cannot forward");
            self.answer(now, tx, req, 500, "Cannot Forward", &[]);
            *answered = true;
        }
    }

    /// Answers on the server transaction, or statelessly without one.
    pub(super) fn answer(
        &mut self,
        now: Instant,
        tx: Option<TxId>,
        req: &RequestCtx,
        code: u16,
        reason: &str,
        headers: &[(HeaderName, String)],
    ) {
        let Some(tx) = tx else {
            self.proxy.reply(req, code, reason, headers);
            return;
        };
        if let Some(response) = make_reply(&req.msg, code, reason, headers) {
            self.respond(now, tx, response);
        }
    }

    /// Sends a response on a server transaction.
    pub(super) fn respond(&mut self, now: Instant, tx: TxId, response: Message) {
        if let Err(err) = self.txs.respond(now, tx, response) {
            tracing::debug!(%err, "response not sent on its transaction");
        }
    }

    fn on_response(&mut self, now: Instant, msg: Message, source: std::net::SocketAddr) {
        if let Err(err) = sip::validate(&msg) {
            tracing::debug!(%err, "dropping a malformed response");
            return;
        }
        match self.txs.handle_response(now, &msg) {
            // No transaction: a 2xx retransmitted after ours ended, or the
            // answer to a statelessly forwarded request (RFC 3261 §16.7).
            None => self.proxy.relay_response(msg),
            Some((_, ResponseDisposition::Absorbed)) => {}
            Some((client, ResponseDisposition::Deliver)) => {
                // Responses to our own CANCELs end here.
                if let Some(&(tx, index)) = self.branch_of.get(&client) {
                    self.on_branch_response(now, tx, index, msg, source);
                }
            }
        }
        self.flush(now);
    }

    fn on_event(&mut self, now: Instant, event: Event) {
        match event {
            Event::Timeout(tx) => self.branch_failed(now, tx, 408, "Request Timeout"),
            Event::TransportError(tx) => self.branch_failed(now, tx, 503, "Service Unavailable"),
            Event::NoAck(tx) => tracing::debug!(%tx, "no ACK for a final response"),
            Event::Terminated(tx) => {
                self.branch_of.remove(&tx);
                if let Some(ctx) = self.contexts.remove(&tx) {
                    for client in ctx.branches.iter().filter_map(|b| b.client) {
                        self.branch_of.remove(&client);
                    }
                }
            }
        }
    }
}
