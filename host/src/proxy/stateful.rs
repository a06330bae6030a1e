//! Stateful proxying (RFC 3261 §16.6–16.10, Kamailio's tm): branches on
//! client transactions, responses forwarded or kept for selection, the
//! failure hook, CANCEL, and final-response timers.

use std::cmp::Reverse;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::script::{Action, Pool, RequestCtx, TxVars};
use crate::sip::{HeaderName, Message, Method};
use crate::transaction::TxId;
use crate::transport::Target;

use super::checks::{self, DEFAULT_MAX_FORWARDS};
use super::stateless::make_reply;
use super::worker::Worker;

/// Kamailio's defaults: fr_inv_timer (an INVITE branch that rang) and
/// fr_timer (any branch before its first answer).
const DEFAULT_FR_INVITE: Duration = Duration::from_secs(120);
const DEFAULT_FR: Duration = Duration::from_secs(30);
/// Rounds of on-failure relaying one transaction may go through.
const MAX_FAILURE_ROUNDS: u32 = 8;

/// A relayed request: its server transaction's context.
pub(super) struct ProxyTx {
    /// The request as the route hook left it (on-failure may edit it).
    req: RequestCtx,
    /// The routing version the transaction started on: every hook of the
    /// transaction runs on it, even after a reload.
    pool: Arc<Pool>,
    vars: TxVars,
    pub(super) branches: Vec<Branch>,
    /// A final response went upstream.
    final_sent: bool,
    /// The caller cancelled (or a 2xx/6xx ended the others).
    canceled: bool,
    invite: bool,
    /// (fr_inv, fr) for this transaction.
    fr: (Duration, Duration),
    fr_deadline: Option<Instant>,
    failure_rounds: u32,
}

pub(super) struct Branch {
    /// None when the branch could not be sent.
    pub(super) client: Option<TxId>,
    target: Option<Target>,
    provisional: bool,
    /// CANCEL asked before a provisional: sent when one arrives (§9.1).
    cancel_pending: bool,
    answered_2xx: bool,
    /// Its final non-2xx response (received or synthesized).
    final_response: Option<Message>,
}

impl Branch {
    fn pending(&self) -> bool {
        !self.answered_2xx && self.final_response.is_none()
    }
}

impl Worker {
    /// `tm.relay` from the route hook: 100 Trying for an INVITE, then a
    /// client transaction per branch.
    pub(super) fn start_relay(
        &mut self,
        now: Instant,
        tx: TxId,
        mut req: RequestCtx,
        destination: Option<String>,
        pool: Arc<Pool>,
        vars: TxVars,
    ) {
        if let Err(rejection) = checks::max_forwards(&mut req, DEFAULT_MAX_FORWARDS) {
            self.answer(
                now,
                Some(tx),
                &req,
                rejection.code,
                &rejection.reason,
                &rejection.headers,
            );
            return;
        }
        let invite = req.msg.method() == Some(&Method::Invite);
        if invite {
            self.answer_for(&pool, now, Some(tx), &req, 100, "Trying", &[]);
        }
        let fr = req.fr_timers.unwrap_or((DEFAULT_FR_INVITE, DEFAULT_FR));
        let ctx = ProxyTx {
            req,
            pool,
            vars,
            branches: Vec::new(),
            final_sent: false,
            canceled: false,
            invite,
            fr,
            fr_deadline: None,
            failure_rounds: 0,
        };
        self.contexts.insert(tx, ctx);
        self.add_branches(now, tx, destination);
        // The context lives as long as the server transaction (32 s over
        // UDP); the branches are built, and later hooks read the request
        // seldom: its parsed views would be most of what it holds.
        if let Some(ctx) = self.contexts.get_mut(&tx) {
            ctx.req.msg.shed_views();
        }
        self.check_done(now, tx);
    }

    /// Sends the branches of one relay: `destination` (or the next hop of
    /// the request) and every appended branch, each through on-branch.
    fn add_branches(&mut self, now: Instant, tx: TxId, destination: Option<String>) {
        let Some(mut ctx) = self.contexts.remove(&tx) else {
            return;
        };
        // The first branch: the guest's destination, else the one a lookup
        // set ($du), with the lookup's Path; then the appended branches.
        let first = destination.or_else(|| ctx.req.dst_uri.take());
        let mut targets = vec![(None, first, std::mem::take(&mut ctx.req.path))];
        targets.extend(
            ctx.req
                .branches
                .drain(..)
                .map(|b| (Some(b.uri), b.destination, b.path)),
        );
        let deadline = now + ctx.fr.1;
        ctx.fr_deadline = Some(deadline);
        self.fr_timers.push(Reverse((deadline, tx)));
        for (uri, destination, path) in targets {
            let index = ctx.branches.len();
            let branch = self.send_branch(now, &mut ctx, index, uri, destination, &path);
            if let Some(client) = branch.client {
                self.branch_of.insert(client, (tx, index));
            }
            ctx.branches.push(branch);
        }
        self.contexts.insert(tx, ctx);
    }

    fn send_branch(
        &mut self,
        now: Instant,
        ctx: &mut ProxyTx,
        index: usize,
        uri: Option<String>,
        destination: Option<String>,
        path: &[String],
    ) -> Branch {
        let failed = |ctx: &ProxyTx, code, reason| Branch {
            client: None,
            target: None,
            provisional: false,
            cancel_pending: false,
            answered_2xx: false,
            final_response: make_reply(&ctx.req.msg, code, reason, &[]),
        };
        let mut copy = ctx.req.clone();
        if let Some(uri) = uri {
            if let Err(err) = copy.msg.set_uri(&uri) {
                tracing::info!(%err, "bad branch URI");
                return failed(ctx, 400, "Bad Branch URI");
            }
        }
        // A binding's Path is the branch's Route set (RFC 3327 §5.3).
        for route in path.iter().rev() {
            if let Err(err) = copy.msg.prepend_header(HeaderName::Route, route) {
                tracing::info!(%err, "bad Path of a binding");
                return failed(ctx, 500, "Bad Path");
            }
        }
        let pool = ctx.pool.clone();
        let index32 = u32::try_from(index).unwrap_or(u32::MAX);
        let (copy, result) = pool.on_branch(copy, index32, &mut ctx.vars);
        if let Err(err) = result {
            tracing::warn!(tenant = %pool.guest().tenant, %err, "branch hook failed");
            return failed(ctx, 500, "Server Internal Error");
        }
        let branch = self.next_branch();
        let (target, msg) = match self.proxy.prepare(copy, destination.as_deref(), &branch) {
            Ok(ready) => ready,
            Err(err) => {
                tracing::info!(%err, "cannot send a branch");
                return failed(ctx, 503, "Service Unavailable");
            }
        };
        match self.txs.send_request(now, msg, target) {
            Ok(client) => Branch {
                client: Some(client),
                target: Some(target),
                provisional: false,
                cancel_pending: false,
                answered_2xx: false,
                final_response: None,
            },
            Err(err) => {
                tracing::warn!(%err, "transaction layer refused a branch");
                failed(ctx, 500, "Server Internal Error")
            }
        }
    }

    /// A response delivered on branch `index` of `tx` (our Via still on top).
    pub(super) fn on_branch_response(
        &mut self,
        now: Instant,
        tx: TxId,
        index: usize,
        mut msg: Message,
        source: std::net::SocketAddr,
    ) {
        let Some(mut ctx) = self.contexts.remove(&tx) else {
            return;
        };
        msg.pop_first_value(&HeaderName::Via);
        let status = msg.status().unwrap_or(500);
        let mut keep = true;
        if status > 100 {
            let pool = ctx.pool.clone();
            let (req, res, result) = pool.on_reply(ctx.req, msg, source, &mut ctx.vars);
            ctx.req = req;
            msg = res;
            match result {
                Ok((k, _)) => keep = k || status >= 200,
                Err(err) => {
                    tracing::warn!(tenant = %pool.guest().tenant, %err, "reply hook failed")
                }
            }
        }
        let Some(branch) = ctx.branches.get_mut(index) else {
            self.contexts.insert(tx, ctx);
            return;
        };
        match status {
            100 => {}
            101..=199 => {
                if !branch.provisional {
                    branch.provisional = true;
                    if branch.cancel_pending {
                        branch.cancel_pending = false;
                        send_cancel(self, now, branch);
                    }
                    if ctx.invite && !ctx.final_sent {
                        let deadline = now + ctx.fr.0;
                        ctx.fr_deadline = Some(deadline);
                        self.fr_timers.push(Reverse((deadline, tx)));
                    }
                }
                if keep && !ctx.final_sent {
                    ctx.pool.guest().metrics.reply(status);
                    self.respond(now, tx, msg);
                }
            }
            200..=299 => {
                branch.answered_2xx = true;
                // Every 2xx goes upstream (§16.7 step 5), retransmissions too.
                ctx.pool.guest().metrics.reply(status);
                self.respond(now, tx, msg);
                if !ctx.final_sent {
                    ctx.final_sent = true;
                    self.cancel_pending_branches(now, &mut ctx);
                }
            }
            _ => {
                if branch.final_response.is_none() {
                    branch.final_response = Some(msg);
                }
                if status >= 600 && !ctx.final_sent {
                    self.cancel_pending_branches(now, &mut ctx);
                }
            }
        }
        self.contexts.insert(tx, ctx);
        self.check_done(now, tx);
    }

    /// A client transaction timed out or could not send: its branch ends
    /// with `code` (§16.7 step 2, §16.8).
    pub(super) fn branch_failed(&mut self, now: Instant, client: TxId, code: u16, reason: &str) {
        let Some(&(tx, index)) = self.branch_of.get(&client) else {
            return;
        };
        tracing::debug!(%client, code, "branch failed");
        if let Some(ctx) = self.contexts.get_mut(&tx) {
            let synthesized = make_reply(&ctx.req.msg, code, reason, &[]);
            if let Some(branch) = ctx.branches.get_mut(index) {
                if branch.pending() {
                    branch.final_response = synthesized;
                }
            }
        }
        self.check_done(now, tx);
    }

    /// The caller's CANCEL: every pending branch is cancelled; their 487s
    /// make the answer upstream.
    pub(super) fn cancel_all(&mut self, now: Instant, tx: TxId) {
        let Some(mut ctx) = self.contexts.remove(&tx) else {
            return;
        };
        if !ctx.final_sent {
            ctx.canceled = true;
            self.cancel_pending_branches(now, &mut ctx);
        }
        self.contexts.insert(tx, ctx);
    }

    fn cancel_pending_branches(&mut self, now: Instant, ctx: &mut ProxyTx) {
        ctx.canceled = true;
        for branch in ctx.branches.iter_mut().filter(|b| b.pending()) {
            if branch.provisional {
                send_cancel(self, now, branch);
            } else {
                branch.cancel_pending = true;
            }
        }
    }

    /// Final-response timers that ran out: pending branches are cancelled
    /// and end as 408.
    pub(super) fn fire_fr_timers(&mut self, now: Instant) {
        while let Some(Reverse((deadline, tx))) = self.fr_timers.peek().copied() {
            if deadline > now {
                return;
            }
            self.fr_timers.pop();
            let Some(mut ctx) = self.contexts.remove(&tx) else {
                continue;
            };
            if ctx.fr_deadline == Some(deadline) && !ctx.final_sent {
                tracing::debug!(%tx, "final response timer ran out");
                ctx.fr_deadline = None;
                let timeout = make_reply(&ctx.req.msg, 408, "Request Timeout", &[]);
                for branch in ctx.branches.iter_mut().filter(|b| b.pending()) {
                    if branch.provisional {
                        send_cancel(self, now, branch);
                    }
                    branch.final_response = timeout.clone();
                }
            }
            self.contexts.insert(tx, ctx);
            self.check_done(now, tx);
        }
    }

    /// When every branch has ended without a 2xx: on-failure, then the best
    /// response upstream (§16.7 steps 6–7).
    fn check_done(&mut self, now: Instant, tx: TxId) {
        let Some(mut ctx) = self.contexts.remove(&tx) else {
            return;
        };
        if ctx.final_sent || ctx.branches.iter().any(Branch::pending) {
            self.contexts.insert(tx, ctx);
            return;
        }
        let mut best = best_response(&ctx.branches)
            .or_else(|| make_reply(&ctx.req.msg, 500, "No Branch", &[]))
            .unwrap_or_else(|| Message::new_response(500, "No Branch"));
        if !ctx.canceled && ctx.failure_rounds < MAX_FAILURE_ROUNDS {
            ctx.failure_rounds += 1;
            let pool = ctx.pool.clone();
            let (req, res, result) = pool.on_failure(ctx.req, best, &mut ctx.vars);
            ctx.req = req;
            best = res;
            match result {
                Ok(((), actions)) => {
                    for action in actions {
                        match action {
                            Action::Relay { destination } => {
                                self.contexts.insert(tx, ctx);
                                self.add_branches(now, tx, destination);
                                self.check_done(now, tx);
                                return;
                            }
                            Action::Reply {
                                code,
                                reason,
                                headers,
                            } => {
                                ctx.final_sent = true;
                                let req = ctx.req.clone();
                                let pool = ctx.pool.clone();
                                self.contexts.insert(tx, ctx);
                                self.answer_for(
                                    &pool,
                                    now,
                                    Some(tx),
                                    &req,
                                    code,
                                    &reason,
                                    &headers,
                                );
                                return;
                            }
                            Action::Forward { .. } => {
                                tracing::warn!("forward is not possible in on-failure; use relay");
                            }
                        }
                    }
                }
                Err(err) => {
                    tracing::warn!(tenant = %pool.guest().tenant, %err, "failure hook failed")
                }
            }
        }
        ctx.final_sent = true;
        // §16.7 step 6: a 503 from downstream becomes a 500 upstream, so the
        // caller does not take this proxy for unavailable.
        if best.status() == Some(503) {
            if let Some(internal) = make_reply(&ctx.req.msg, 500, "Server Internal Error", &[]) {
                best = internal;
            }
        }
        if let Some(code) = best.status() {
            ctx.pool.guest().metrics.reply(code);
        }
        self.contexts.insert(tx, ctx);
        self.respond(now, tx, best);
    }
}

fn send_cancel(worker: &mut Worker, now: Instant, branch: &mut Branch) {
    let (Some(client), Some(target)) = (branch.client, branch.target) else {
        return;
    };
    match worker.txs.cancel_request(client) {
        Ok(cancel) => {
            if let Err(err) = worker.txs.send_request(now, cancel, target) {
                tracing::debug!(%err, "CANCEL not sent");
            }
        }
        Err(err) => tracing::debug!(%err, "no CANCEL for this branch"),
    }
}

/// RFC 3261 §16.7 step 6: a 6xx if any, else the lowest class; 401 and
/// 407 challenges of every branch are merged into the chosen one.
fn best_response(branches: &[Branch]) -> Option<Message> {
    let finals: Vec<&Message> = branches
        .iter()
        .filter_map(|b| b.final_response.as_ref())
        .collect();
    let class = |m: &Message| m.status().unwrap_or(500) / 100;
    let chosen = finals
        .iter()
        .find(|m| class(m) == 6)
        .or_else(|| finals.iter().min_by_key(|m| class(m)))?;
    let mut best = (*chosen).clone();
    if matches!(best.status(), Some(401 | 407)) {
        for other in finals.iter().filter(|m| !std::ptr::eq(**m, *chosen)) {
            for name in [HeaderName::WwwAuthenticate, HeaderName::ProxyAuthenticate] {
                for value in other.header_lines(&name) {
                    let _ = best.append_header(name.clone(), value);
                }
            }
        }
    }
    Some(best)
}
