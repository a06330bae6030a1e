//! The SIP transaction layer (RFC 3261 §17, with the Accepted state of
//! RFC 6026), written sans-IO in the manner of quinn-proto: it never reads
//! a clock or a socket.
//!
//! # Driving it
//!
//! One [`Transactions`] table per worker (no locks inside). The driver:
//!
//! - feeds received messages: requests to [`Transactions::handle_request`],
//!   responses to [`Transactions::handle_response`];
//! - lets the Transaction User (the proxy core) act:
//!   [`Transactions::respond`] on server transactions,
//!   [`Transactions::send_request`] to start client transactions,
//!   [`Transactions::cancel_request`] to build a CANCEL;
//! - after each call, drains [`Transactions::poll_transmit`] (messages to
//!   send) and [`Transactions::poll_event`] (what the TU must know), and
//!   sleeps until [`Transactions::poll_timeout`], then calls
//!   [`Transactions::handle_timeout`] with the current time;
//! - reports failed sends with [`Transactions::handle_transport_error`].
//!
//! Time is only what the caller passes as `now`, so tests run on a fake
//! clock (a base `Instant` plus durations) to the millisecond.
//!
//! # What the layer does
//!
//! - Retransmits requests (Timers A, E) and INVITE final responses (G) on
//!   unreliable transports only (`Target::transport` not a stream);
//!   re-sends the last response when a request is retransmitted.
//! - Times out: B (INVITE, Calling) and F (non-INVITE) give
//!   [`Event::Timeout`]; H (no ACK for a non-2xx) gives [`Event::NoAck`].
//! - Generates the ACK for non-2xx finals on client INVITE transactions
//!   (§17.1.1.3) and re-sends it for each retransmitted final.
//! - Absorbs retransmissions and the ACK of non-2xx finals; keeps
//!   transactions in Completed/Confirmed/Accepted for Timers D, I, K, L, M
//!   (D, I, K are zero on reliable transports), then removes them.
//! - Ends a non-INVITE server transaction as soon as it sends its final
//!   response, and keeps for Timer J (zero on reliable transports) only a
//!   record that re-sends that response to a retransmitted request
//!   (`finished.rs`; RFC 2543 peers' transactions stay in Completed).
//!   The records of a process are bounded ([`FinishedLimit`]); past the
//!   bound the oldest goes first.
//!
//! Every transaction ends with exactly one [`Event::Terminated`], after
//! any `Timeout`, `NoAck` or `TransportError` for it; after that its
//! [`TxId`] is unknown (`state` gives `None`) and never reused.
//!
//! # Matching
//!
//! (`key.rs`) RFC 3261 branch + sent-by + method for requests whose branch
//! has the magic cookie and a unique part, the RFC 2543 rules of §17.2.3
//! otherwise (RFC 4475 badbranch: the bare cookie is not a branch); branch
//! + CSeq method for responses.
//!
//! # What the TU must do
//!
//! - Branches: every request it sends on a client transaction carries its
//!   own Via on top with `branch=z9hG4bK<unique>` (unique per transaction;
//!   [`TxError::NoRfc3261Branch`] otherwise). A CANCEL reuses the INVITE's
//!   branch ([`Transactions::cancel_request`] builds it); an ACK for a 2xx
//!   is not a transaction: forward it statelessly (§16.11 branch rules).
//! - INVITE server transactions do not send 100 Trying by themselves: a
//!   proxy answers 100 at once (§16.2) through `respond`.
//! - [`Incoming::Cancel`]: answer the CANCEL's own transaction (200, or
//!   481 when `invite` is `None`); if the INVITE is still
//!   [`State::Proceeding`], cancel its client branches and answer it 487.
//! - [`Event::Timeout`] of a client transaction: treat as a 408 from that
//!   branch (§16.7 step 2 / §16.8). [`Event::TransportError`] of a client
//!   transaction: a 503 from that branch (try the next target, RFC 3263);
//!   of a server transaction: nothing can be sent upstream any more.
//!   [`Event::NoAck`]: nothing to do but log. [`Event::Terminated`]: drop
//!   whatever the TU keeps for that id (branch tables, forking context).
//! - Responses delivered on a client INVITE: forward them upstream on the
//!   server transaction (`respond`), including 2xx retransmissions in
//!   Accepted. `handle_response` giving `None` is a stray: forward a 2xx
//!   statelessly, drop the rest (§16.7).
//! - Timer C (§16.6 step 11, > 3 min) is the TU's: client INVITE
//!   transactions in Proceeding have no timer of their own.

mod client_invite;
mod client_non_invite;
mod finished;
pub mod hash;
mod key;
mod machine;
mod schedule;
mod server_invite;
mod server_non_invite;
mod timers;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::sip::{Message, Method};
use crate::transport::Target;

use client_invite::InviteClient;
use client_non_invite::NonInviteClient;
use finished::{Finished, Record};
use hash::KeyedMap;
use key::{ClientKey, LegacyKey, RequestKey, ServerKey};
use machine::Ctx;
use schedule::{Schedule, Slots};
use server_invite::InviteServer;
use server_non_invite::NonInviteServer;

pub use finished::FinishedLimit;
pub use key::{is_rfc3261_branch, MAGIC_COOKIE};
pub use schedule::TimerKind;
pub use timers::{Timers, TimersError};

/// The finished records a table made with [`Transactions::new`] may hold.
pub const DEFAULT_FINISHED: usize = 200_000;

/// A transaction's handle. Never reused within one [`Transactions`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxId(u64);

impl fmt::Display for TxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tx{}", self.0)
    }
}

/// The four transaction machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    InviteClient,
    NonInviteClient,
    InviteServer,
    NonInviteServer,
}

/// Transaction states (RFC 3261 §17 figures 5-8, RFC 6026 Accepted). A
/// terminated transaction is removed: [`Transactions::state`] gives `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// INVITE client, before any response.
    Calling,
    /// Non-INVITE client or server, before any response.
    Trying,
    /// A provisional response was received (client) or sent (server); an
    /// INVITE server transaction starts here.
    Proceeding,
    /// A final response (non-2xx for INVITE) was received or sent; waiting
    /// for retransmissions (client) or for the ACK (INVITE server).
    Completed,
    /// RFC 6026: a 2xx to an INVITE was received (client) or sent (server).
    Accepted,
    /// INVITE server: the ACK for the non-2xx final arrived.
    Confirmed,
}

/// What a received request was to the layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming {
    /// A new server transaction: the TU must handle the request and answer
    /// through [`Transactions::respond`].
    New(TxId),
    /// A retransmission, absorbed; the last response (if any) was queued
    /// again for transmit.
    Retransmission,
    /// The ACK of a non-2xx final of this INVITE server transaction:
    /// absorbed (the transaction is Confirmed, or gone on a reliable
    /// transport).
    AckOfNon2xx(TxId),
    /// An ACK matching no transaction in Completed: the ACK of a 2xx,
    /// which the TU forwards statelessly, end to end.
    Ack2xx,
    /// A new CANCEL: it has its own non-INVITE server transaction `cancel`
    /// (the TU answers it, 200 or 481); `invite` is the INVITE server
    /// transaction it targets, if any (§9.2).
    Cancel { cancel: TxId, invite: Option<TxId> },
}

/// What a received response was to the layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseDisposition {
    /// Give it to the TU: provisional, final, and 2xx retransmissions in
    /// Accepted (a proxy forwards each).
    Deliver,
    /// A retransmitted final (the ACK was re-sent for an INVITE), or a
    /// response the state no longer wants.
    Absorbed,
    /// It names a transaction of ours but comes from another address
    /// than the one the request went to: forged (its branch guessed or
    /// seen), or from a peer that answers from elsewhere. Dropped; the
    /// transaction does not see it.
    Foreign,
}

/// What the TU must know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Timer B or F: the client transaction got no (final) response. A
    /// proxy treats it as a 408 from that branch (§16.7 step 2).
    Timeout(TxId),
    /// Sending failed (reported through `handle_transport_error`).
    TransportError(TxId),
    /// Timer H: no ACK came for the non-2xx final of an INVITE server
    /// transaction.
    NoAck(TxId),
    /// The transaction is gone; its id will not appear again.
    Terminated(TxId),
}

/// A message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub tx: TxId,
    pub target: Target,
    /// The serialized message.
    pub data: Bytes,
}

/// Why a call was refused. The layer's state is unchanged when an error is
/// returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    #[error("no such transaction")]
    UnknownTransaction,
    #[error("not a request")]
    NotARequest,
    #[error("not a response")]
    NotAResponse,
    #[error("status code {0} is not in 100-699")]
    BadStatus(u16),
    #[error("missing or malformed {0}")]
    BadHeader(&'static str),
    #[error("the top Via has no RFC 3261 branch (z9hG4bK + unique part)")]
    NoRfc3261Branch,
    #[error("an ACK has no client transaction: the layer sends the ACK of non-2xx finals, the TU sends the ACK of a 2xx directly")]
    AckHasNoTransaction,
    #[error("a client transaction with this branch and method exists")]
    BranchInUse,
    #[error("not a server transaction")]
    NotServer,
    #[error("not a client INVITE transaction")]
    NotClientInvite,
    #[error("not allowed in state {0:?}")]
    WrongState(State),
    #[error("no provisional response yet: the CANCEL must wait for one (RFC 3261 §9.1)")]
    NoProvisionalYet,
}

enum Machine {
    InviteClient(InviteClient),
    NonInviteClient(NonInviteClient),
    InviteServer(InviteServer),
    NonInviteServer(NonInviteServer),
}

/// Where a transaction is indexed, and what RFC 2543 matching compares
/// beyond the hashed key.
enum Index {
    Client(ClientKey),
    Server(ServerKey),
    /// Boxed: RFC 2543 peers are rare, and inline it would make every
    /// transaction as large.
    Legacy(Box<Legacy>),
}

struct Legacy {
    key: LegacyKey,
    to_tag: Option<String>,
    cseq_method: Method,
    /// To tag of the last response sent (an ACK must carry it).
    response_to_tag: Option<String>,
}

struct Tx {
    target: Target,
    slots: Slots,
    index: Index,
    machine: Machine,
    /// An INVITE server transaction answered 2xx, counted with the
    /// finished records (see [`Transactions::hold_answered`]).
    answered: bool,
}

impl Tx {
    fn kind(&self) -> Kind {
        match self.machine {
            Machine::InviteClient(_) => Kind::InviteClient,
            Machine::NonInviteClient(_) => Kind::NonInviteClient,
            Machine::InviteServer(_) => Kind::InviteServer,
            Machine::NonInviteServer(_) => Kind::NonInviteServer,
        }
    }

    fn state(&self) -> State {
        match &self.machine {
            Machine::InviteClient(m) => m.state(),
            Machine::NonInviteClient(m) => m.state(),
            Machine::InviteServer(m) => m.state(),
            Machine::NonInviteServer(m) => m.state(),
        }
    }
}

/// Every transaction of one worker, their timers and their output queues.
pub struct Transactions {
    timers: Timers,
    txs: KeyedMap<TxId, Tx>,
    clients: KeyedMap<ClientKey, TxId>,
    servers: KeyedMap<ServerKey, TxId>,
    legacy: KeyedMap<LegacyKey, Vec<TxId>>,
    /// Non-INVITE server transactions that sent their final response.
    finished: Finished,
    /// INVITE server transactions answered 2xx, oldest first (Timer L is
    /// the same for all); entries of transactions already gone are
    /// skipped when met.
    answered: VecDeque<TxId>,
    schedule: Schedule,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    next_id: u64,
}

/// A [`Ctx`] for transaction `$id`, borrowing the table's fields other
/// than `txs` (so that the transaction itself can be borrowed alongside).
macro_rules! ctx {
    ($self:ident, $now:expr, $id:expr, $target:expr, $slots:expr) => {
        Ctx {
            now: $now,
            timers: &$self.timers,
            id: $id,
            target: $target,
            slots: $slots,
            schedule: &mut $self.schedule,
            transmits: &mut $self.transmits,
            events: &mut $self.events,
            terminated: false,
        }
    };
}

impl Transactions {
    /// A table whose finished records count against a limit of its own,
    /// [`DEFAULT_FINISHED`].
    pub fn new(timers: Timers) -> Transactions {
        Transactions::sharing(timers, FinishedLimit::new(DEFAULT_FINISHED))
    }

    /// A table whose finished records count against `limit`, which other
    /// tables of the process may share.
    pub fn sharing(timers: Timers, limit: Arc<FinishedLimit>) -> Transactions {
        Transactions {
            timers,
            txs: KeyedMap::default(),
            clients: KeyedMap::default(),
            servers: KeyedMap::default(),
            legacy: KeyedMap::default(),
            finished: Finished::new(limit),
            answered: VecDeque::new(),
            schedule: Schedule::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            next_id: 0,
        }
    }

    pub fn timers(&self) -> &Timers {
        &self.timers
    }

    /// A received request (parsed and validated), `source` being where
    /// responses go (the peer, on the transport it came on). Err when the
    /// headers matching needs (Via, and for RFC 2543 peers CSeq, Call-ID,
    /// From, To) are missing or malformed: the TU answers 400 statelessly.
    pub fn handle_request(
        &mut self,
        now: Instant,
        msg: &Message,
        source: Target,
    ) -> Result<Incoming, TxError> {
        let method = msg.method().ok_or(TxError::NotARequest)?;
        let key = RequestKey::of(msg)?;
        let found = self.find_server(&key, method);
        let out = match (method, found) {
            (Method::Ack, None) => Incoming::Ack2xx,
            (Method::Ack, Some(id)) => self
                .run(now, id, |m, ctx| match m {
                    Machine::InviteServer(s) => s.on_ack(ctx),
                    _ => Incoming::Ack2xx,
                })
                .unwrap_or(Incoming::Ack2xx),
            (_, Some(id)) => {
                self.run(now, id, |m, ctx| match m {
                    Machine::InviteServer(s) => s.on_invite(ctx),
                    Machine::NonInviteServer(s) => s.on_request(ctx),
                    _ => {}
                });
                Incoming::Retransmission
            }
            (_, None) => {
                if let RequestKey::Rfc3261(k) = &key {
                    if let Some(r) = self.finished.get(k) {
                        self.transmits.push_back(Transmit {
                            tx: r.tx,
                            target: r.target,
                            data: r.response.clone(),
                        });
                        return Ok(Incoming::Retransmission);
                    }
                }
                let id = self.next_id();
                let index = match key {
                    RequestKey::Rfc3261(k) => Index::Server(k),
                    RequestKey::Rfc2543 {
                        key,
                        to_tag,
                        cseq_method,
                    } => Index::Legacy(Box::new(Legacy {
                        key,
                        to_tag,
                        cseq_method,
                        response_to_tag: None,
                    })),
                };
                // Look for the INVITE before the CANCEL is indexed.
                let invite = (*method == Method::Cancel)
                    .then(|| self.find_cancelled(&index))
                    .flatten();
                let machine = if *method == Method::Invite {
                    Machine::InviteServer(InviteServer::start(self.timers.g))
                } else {
                    Machine::NonInviteServer(NonInviteServer::start())
                };
                self.insert(
                    id,
                    Tx {
                        target: source,
                        slots: Slots::default(),
                        index,
                        machine,
                        answered: false,
                    },
                );
                match method {
                    Method::Cancel => Incoming::Cancel { cancel: id, invite },
                    _ => Incoming::New(id),
                }
            }
        };
        self.after();
        Ok(out)
    }

    /// The TU answers on a server transaction: the response is queued for
    /// the request's source and drives the state (1xx: Proceeding; INVITE
    /// 2xx: Accepted, Timer L; INVITE 300-699: Completed, G and H;
    /// non-INVITE final: Completed, J). After an INVITE's 2xx, more 2xx
    /// may be sent (RFC 6026); any other response after a final is refused.
    pub fn respond(&mut self, now: Instant, tx: TxId, response: Message) -> Result<(), TxError> {
        let code = response.status().ok_or(TxError::NotAResponse)?;
        if !(100..=699).contains(&code) {
            return Err(TxError::BadStatus(code));
        }
        let t = self.txs.get_mut(&tx).ok_or(TxError::UnknownTransaction)?;
        if !matches!(t.kind(), Kind::InviteServer | Kind::NonInviteServer) {
            return Err(TxError::NotServer);
        }
        let data = response.to_bytes();
        // A final on a non-INVITE server transaction over UDP leaves a
        // record behind it instead of the transaction.
        let keep = (code >= 200
            && matches!(t.machine, Machine::NonInviteServer(_))
            && matches!(t.index, Index::Server(_))
            && !t.target.transport.is_stream()
            && !self.timers.j.is_zero())
        .then(|| now.checked_add(self.timers.j))
        .flatten()
        .map(|expires| (expires, data.clone()));
        let mut ctx = ctx!(self, now, tx, t.target, &mut t.slots);
        let result = match &mut t.machine {
            Machine::InviteServer(s) => s.respond(&mut ctx, code, data),
            Machine::NonInviteServer(s) => s.respond(&mut ctx, code, data, keep.is_none()),
            _ => Err(TxError::NotServer),
        };
        let terminated = ctx.terminated;
        let answered = result.is_ok()
            && !terminated
            && (200..300).contains(&code)
            && matches!(t.machine, Machine::InviteServer(_))
            && !t.answered;
        if let (Ok(()), Some((expires, response))) = (&result, keep) {
            if let Some(Tx {
                index: Index::Server(key),
                target,
                ..
            }) = self.remove(tx)
            {
                let record = Record {
                    tx,
                    target,
                    response,
                };
                self.finished.insert(expires, key, record);
            }
            self.after();
            return result;
        }
        if result.is_ok() {
            if let Some(Tx {
                index: Index::Legacy(legacy),
                ..
            }) = self.txs.get_mut(&tx)
            {
                legacy.response_to_tag = response
                    .to()
                    .ok()
                    .and_then(|to| to.tag().map(str::to_string));
            }
        }
        if terminated {
            self.remove(tx);
        } else if answered {
            self.hold_answered(tx);
        }
        self.after();
        result
    }

    /// Starts a client transaction: `request` (with the TU's Via on top,
    /// whose RFC 3261 branch identifies the transaction) is queued for
    /// `target`, and retransmitted per Timer A or E on UDP.
    pub fn send_request(
        &mut self,
        now: Instant,
        request: Message,
        target: Target,
    ) -> Result<TxId, TxError> {
        let method = request.method().ok_or(TxError::NotARequest)?;
        if *method == Method::Ack {
            return Err(TxError::AckHasNoTransaction);
        }
        let key = ClientKey::of_request(&request)?;
        if self.clients.contains_key(&key) {
            return Err(TxError::BranchInUse);
        }
        let id = self.next_id();
        let invite = *method == Method::Invite;
        let mut slots = Slots::default();
        let mut ctx = ctx!(self, now, id, target, &mut slots);
        let machine = if invite {
            Machine::InviteClient(InviteClient::start(&mut ctx, request))
        } else {
            Machine::NonInviteClient(NonInviteClient::start(&mut ctx, &request))
        };
        self.insert(
            id,
            Tx {
                target,
                slots,
                index: Index::Client(key),
                machine,
                answered: false,
            },
        );
        self.after();
        Ok(id)
    }

    /// A received response, from `from`. `None` when it matches no client
    /// transaction (a stray: a proxy forwards a stray 2xx statelessly,
    /// §16.7). Besides the branch and method of §17.1.3, a response must
    /// come from the address its request went to (on a connection, that
    /// is the connection's peer; over UDP a peer may answer from another
    /// port, not from another host).
    pub fn handle_response(
        &mut self,
        now: Instant,
        msg: &Message,
        from: IpAddr,
    ) -> Option<(TxId, ResponseDisposition)> {
        let code = msg.status().filter(|c| (100..=699).contains(c))?;
        let key = ClientKey::of_response(msg)?;
        let id = *self.clients.get(&key)?;
        let expected = self.txs.get(&id)?.target.addr.ip();
        if expected.to_canonical() != from.to_canonical() {
            return Some((id, ResponseDisposition::Foreign));
        }
        let out = self.run(now, id, |m, ctx| match m {
            Machine::InviteClient(c) => c.on_response(ctx, msg, code),
            Machine::NonInviteClient(c) => c.on_response(ctx, code),
            _ => ResponseDisposition::Absorbed,
        });
        self.after();
        out.map(|d| (id, d))
    }

    /// The CANCEL for a client INVITE transaction (§9.1): same Request-URI,
    /// Call-ID, From, To and CSeq number, the INVITE's top Via only (same
    /// branch), its Route headers, Max-Forwards 70. The TU sends it with
    /// [`Transactions::send_request`] to the same target. Refused before a
    /// provisional response ([`TxError::NoProvisionalYet`]: ask again when
    /// the first 1xx is delivered) and after a final one.
    pub fn cancel_request(&self, tx: TxId) -> Result<Message, TxError> {
        match self.txs.get(&tx).map(|t| &t.machine) {
            None => Err(TxError::UnknownTransaction),
            Some(Machine::InviteClient(c)) => c.cancel(),
            Some(_) => Err(TxError::NotClientInvite),
        }
    }

    /// Sending a message of `tx` failed: [`Event::TransportError`], and the
    /// transaction is terminated (§17.1.4, §17.2.4). Unknown ids are
    /// ignored.
    pub fn handle_transport_error(&mut self, _now: Instant, tx: TxId) {
        if self.txs.contains_key(&tx) {
            self.events.push_back(Event::TransportError(tx));
            self.remove(tx);
            self.after();
        }
    }

    /// A connection to `target` could not be opened: every client
    /// transaction sent to it and still waiting for a first response fails
    /// as its send would have (§17.1.4), rather than waiting for Timer B
    /// or F on a reliable transport that will never deliver.
    pub fn handle_connection_failed(&mut self, now: Instant, target: Target) {
        let failed: Vec<TxId> = self
            .txs
            .iter()
            .filter(|(_, tx)| {
                tx.target == target
                    && matches!(tx.kind(), Kind::InviteClient | Kind::NonInviteClient)
                    && matches!(tx.state(), State::Calling | State::Trying)
            })
            .map(|(id, _)| *id)
            .collect();
        for tx in failed {
            self.handle_transport_error(now, tx);
        }
    }

    /// Ends a transaction the TU handles without state (a request it
    /// forwarded statelessly, or dropped): [`Event::Terminated`] and it is
    /// gone, so a retransmission of the request is a new request again.
    pub fn forget(&mut self, tx: TxId) {
        if self.txs.contains_key(&tx) {
            self.remove(tx);
            self.after();
        }
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The earliest timer deadline of any transaction or finished record.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timer = self.schedule.peek().map(|e| e.deadline);
        match (timer, self.finished.next_expiry()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Fires every timer due at `now`, in deadline order, and lets the
    /// finished records expired at `now` go.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.finished.expire(now);
        while let Some(e) = self.schedule.peek() {
            if e.deadline > now {
                break;
            }
            let Some(e) = self.schedule.pop() else { break };
            let Some(tx) = self.txs.get_mut(&e.tx) else {
                continue;
            };
            if !e.is_live(&tx.slots) {
                continue;
            }
            self.schedule.stop(&mut tx.slots, e.kind.slot());
            let id = e.tx;
            let mut ctx = ctx!(self, now, id, tx.target, &mut tx.slots);
            match &mut tx.machine {
                Machine::InviteClient(c) => c.on_timer(&mut ctx, e.kind),
                Machine::NonInviteClient(c) => c.on_timer(&mut ctx, e.kind),
                Machine::InviteServer(s) => s.on_timer(&mut ctx, e.kind),
                Machine::NonInviteServer(s) => s.on_timer(&mut ctx, e.kind),
            }
            if ctx.terminated {
                self.remove(id);
            }
        }
        self.after();
    }

    /// What the TU must know, in order.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub fn state(&self, tx: TxId) -> Option<State> {
        self.txs.get(&tx).map(Tx::state)
    }

    pub fn kind(&self, tx: TxId) -> Option<Kind> {
        self.txs.get(&tx).map(Tx::kind)
    }

    /// Live transactions.
    pub fn len(&self) -> usize {
        self.txs.len()
    }

    /// Records of finished non-INVITE server transactions.
    pub fn finished(&self) -> usize {
        self.finished.len()
    }

    /// INVITE server transactions answered 2xx, waiting in Accepted for
    /// Timer L and counted with the finished records.
    pub fn answered(&self) -> usize {
        self.finished.answered()
    }

    pub fn is_empty(&self) -> bool {
        self.txs.is_empty()
    }

    fn next_id(&mut self) -> TxId {
        self.next_id += 1;
        TxId(self.next_id)
    }

    /// Runs a machine input on an existing transaction and removes it if
    /// it terminated.
    fn run<R>(
        &mut self,
        now: Instant,
        id: TxId,
        f: impl FnOnce(&mut Machine, &mut Ctx) -> R,
    ) -> Option<R> {
        let tx = self.txs.get_mut(&id)?;
        let mut ctx = ctx!(self, now, id, tx.target, &mut tx.slots);
        let out = f(&mut tx.machine, &mut ctx);
        if ctx.terminated {
            self.remove(id);
        }
        Some(out)
    }

    fn insert(&mut self, id: TxId, tx: Tx) {
        match &tx.index {
            Index::Client(k) => {
                self.clients.insert(k.clone(), id);
            }
            Index::Server(k) => {
                self.servers.insert(k.clone(), id);
            }
            Index::Legacy(l) => self.legacy.entry(l.key.clone()).or_default().push(id),
        }
        self.txs.insert(id, tx);
    }

    /// An INVITE server transaction that sent its 2xx waits in Accepted
    /// for Timer L (32 s), absorbing retransmissions of the INVITE and
    /// taking the 2xx retransmissions and the ACK to the TU. It counts
    /// with the finished records, not as a transaction in progress: when
    /// the process holds all the finished state it may, this table's
    /// oldest record goes, else its oldest answered INVITE ends before
    /// Timer L, else this one ends now. An INVITE retransmitted after
    /// that is handled as a new request, as after Timer L.
    fn hold_answered(&mut self, id: TxId) {
        let room = self.finished.hold_answered()
            || (self.end_oldest_answered() && self.finished.hold_answered());
        if !room {
            self.remove(id);
            return;
        }
        // `respond` just answered on `id`, and it is not in the queue yet:
        // making room never ends it.
        if let Some(tx) = self.txs.get_mut(&id) {
            tx.answered = true;
            self.answered.push_back(id);
        }
    }

    /// Ends the oldest answered INVITE transaction still in the table;
    /// false when there is none.
    fn end_oldest_answered(&mut self) -> bool {
        self.skip_gone_answered();
        match self.answered.pop_front() {
            Some(id) => self.remove(id).is_some(),
            None => false,
        }
    }

    /// Drops the queue's front entries of transactions already gone (ids
    /// are never reused, so one still in the table is still answered).
    /// They end in the order they were answered (Timer L), so the front
    /// is where they gather.
    fn skip_gone_answered(&mut self) {
        while self
            .answered
            .front()
            .is_some_and(|id| !self.txs.contains_key(id))
        {
            self.answered.pop_front();
        }
    }

    /// Removes a transaction, its index entries and timers, and reports
    /// [`Event::Terminated`]. Gives what it was.
    fn remove(&mut self, id: TxId) -> Option<Tx> {
        let mut tx = self.txs.remove(&id)?;
        if tx.answered {
            self.finished.release_answered();
            self.skip_gone_answered();
        }
        self.schedule.stop_all(&mut tx.slots);
        match &tx.index {
            Index::Client(k) => {
                if self.clients.get(k) == Some(&id) {
                    self.clients.remove(k);
                }
            }
            Index::Server(k) => {
                if self.servers.get(k) == Some(&id) {
                    self.servers.remove(k);
                }
            }
            Index::Legacy(l) => {
                if let Some(ids) = self.legacy.get_mut(&l.key) {
                    ids.retain(|&x| x != id);
                    if ids.is_empty() {
                        self.legacy.remove(&l.key);
                    }
                }
            }
        }
        self.events.push_back(Event::Terminated(id));
        Some(tx)
    }

    /// Keeps the earliest heap entry live, so `poll_timeout` is exact.
    fn after(&mut self) {
        let txs = &self.txs;
        self.schedule
            .prune(|e| txs.get(&e.tx).is_some_and(|t| e.is_live(&t.slots)));
    }

    /// The server transaction a request belongs to (§17.2.3).
    fn find_server(&self, key: &RequestKey, method: &Method) -> Option<TxId> {
        match key {
            RequestKey::Rfc3261(k) => self.servers.get(k).copied(),
            RequestKey::Rfc2543 {
                key,
                to_tag,
                cseq_method,
            } => self.legacy.get(key)?.iter().copied().find(|id| {
                let Some(tx) = self.txs.get(id) else {
                    return false;
                };
                let Index::Legacy(l) = &tx.index else {
                    return false;
                };
                let (tx_to_tag, tx_method, response_to_tag) =
                    (&l.to_tag, &l.cseq_method, &l.response_to_tag);
                if *method == Method::Ack {
                    // CSeq number (in the key) but not method; the To tag
                    // of the response the transaction sent.
                    tx.kind() == Kind::InviteServer && response_to_tag == to_tag
                } else {
                    tx_method == cseq_method && tx_to_tag == to_tag
                }
            }),
        }
    }

    /// The INVITE server transaction a new CANCEL (indexed as `index`)
    /// targets (§9.2).
    fn find_cancelled(&self, index: &Index) -> Option<TxId> {
        let id = match index {
            Index::Server(k) => self.servers.get(&k.with_method(Method::Invite)).copied(),
            Index::Legacy(l) => self.legacy.get(&l.key)?.iter().copied().find(|id| {
                self.txs.get(id).is_some_and(|tx| {
                    tx.kind() == Kind::InviteServer
                        && matches!(&tx.index, Index::Legacy(t) if t.to_tag == l.to_tag)
                })
            }),
            Index::Client(_) => None,
        }?;
        (self.kind(id) == Some(Kind::InviteServer)).then_some(id)
    }

    /// Heap entries, live or stale (tests check memory stays bounded).
    #[cfg(test)]
    fn scheduled(&self) -> usize {
        self.schedule.len()
    }
}
