//! What handling a message leaves behind besides a relay's own state: the
//! transaction layer, messages to send, names to look up and what waits
//! for them, which relay a client transaction belongs to, and the
//! final-response timers. Relays get it as `&mut Effects` next to
//! `&mut self`, so no relay is ever taken out of its table to be worked on.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::sip::{write, HeaderName, Message, Via};
use crate::transaction::hash::KeyedMap;
use crate::transaction::{State, Transactions, TxId};
use crate::transport::{listener_for, Target, Transport};

use super::admission::Admission;
use super::branch;
use super::checks;
use super::flow;
use super::locality::Locality;
use super::replies::{is_unroutable, make_reply, reply_target};
use super::request::{RequestCtx, Source};
use super::routing::Destination;
use super::secret;

/// Lookups one shard keeps waiting at once; past it, what needs a name
/// fails at once (503 for a request), so a flood of names under a DNS
/// server that never answers cannot grow memory without bound.
pub const MAX_PARKED: usize = 4096;

/// A message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The transaction sending it, to be told with
    /// [`super::Core::handle_transport_error`] when sending fails.
    pub tx: Option<TxId>,
    pub target: Target,
    pub data: Bytes,
}

/// Names one lookup: answered with [`super::Core::handle_resolved`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LookupId(pub u64);

/// What the driver must do for the core.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Resolve `destination` (a host name) by RFC 3263: §4 for a request,
    /// §5 (`response`) for the sent-by of a Via.
    Resolve {
        id: LookupId,
        destination: Destination,
        response: bool,
    },
}

/// What waits for a lookup.
pub(super) enum Parked {
    /// Branch `index` of the relay of server transaction `tx`; its request
    /// waits in the branch.
    Branch { tx: TxId, index: usize },
    /// A stateless forward: the request as the hook left it (to answer if
    /// the name fails), the copy routed to its next hop, and its branch.
    Forward {
        req: Box<RequestCtx>,
        msg: Message,
        branch: String,
    },
    /// A response going up to a Via that names a host.
    Response { msg: Message },
}

pub(super) struct Effects {
    pub(super) txs: Transactions,
    pub(super) locality: Arc<Locality>,
    pub(super) admission: Arc<Admission>,
    /// Server transactions counted against the limits, with the source
    /// they count for (None: a trusted source).
    pub(super) admitted: KeyedMap<TxId, Option<IpAddr>>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    pub(super) parked: KeyedMap<LookupId, Parked>,
    next_lookup: u64,
    /// Client transaction → (server transaction, branch index).
    pub(super) branch_of: KeyedMap<TxId, (TxId, usize)>,
    /// Final-response timers (fr_timer / fr_inv_timer) by deadline; an
    /// entry is stale when its relay's deadline moved on.
    pub(super) fr_timers: BinaryHeap<Reverse<(Instant, TxId)>>,
    /// Branch ids: the shard's number and a counter.
    shard: usize,
    branch_seq: u64,
}

impl Effects {
    pub(super) fn new(
        txs: Transactions,
        locality: Arc<Locality>,
        shard: usize,
        admission: Arc<Admission>,
    ) -> Self {
        Effects {
            txs,
            locality,
            admission,
            admitted: KeyedMap::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            parked: KeyedMap::default(),
            next_lookup: 0,
            branch_of: KeyedMap::default(),
            fr_timers: BinaryHeap::new(),
            shard,
            branch_seq: 0,
        }
    }

    pub(super) fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub(super) fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The branch of a new client transaction for a request whose loop
    /// hash is `loop_hash` and whose top Via (as received) is `below`.
    pub(super) fn next_branch(&mut self, loop_hash: u32, below: Option<&Via>) -> String {
        self.branch_seq += 1;
        let mut id = String::with_capacity(48);
        write::push_decimal(&mut id, self.shard as u64);
        id.push('-');
        write::push_decimal(&mut id, self.branch_seq);
        branch::make(&id, loop_hash, below)
    }

    /// Queues a message that no transaction sends.
    pub(super) fn send(&mut self, target: Target, data: Bytes) {
        self.transmits.push_back(Transmit {
            tx: None,
            target,
            data,
        });
    }

    /// Moves what the transaction layer queued behind what is queued
    /// already, keeping the order in which things were decided.
    pub(super) fn take_tx_transmits(&mut self) {
        while let Some(t) = self.txs.poll_transmit() {
            self.transmits.push_back(Transmit {
                tx: Some(t.tx),
                target: t.target,
                data: t.data,
            });
        }
    }

    /// Asks the driver to resolve `destination`; None when too many
    /// lookups wait already.
    pub(super) fn lookup(
        &mut self,
        destination: Destination,
        response: bool,
        parked: Parked,
    ) -> Option<LookupId> {
        if self.parked.len() >= MAX_PARKED {
            return None;
        }
        self.next_lookup += 1;
        let id = LookupId(self.next_lookup);
        self.parked.insert(id, parked);
        self.events.push_back(Event::Resolve {
            id,
            destination,
            response,
        });
        Some(id)
    }

    /// Answers a request statelessly. ACK is never answered.
    pub(super) fn reply(
        &mut self,
        req: &RequestCtx,
        code: u16,
        reason: &str,
        headers: &[(HeaderName, String)],
    ) {
        let Some(response) = make_reply(&req.msg, code, reason, headers) else {
            return;
        };
        let target = reply_target(&req.msg, &req.source);
        self.send(target, response.to_bytes());
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
            self.reply(req, code, reason, headers);
            return;
        };
        if let Some(response) = make_reply(&req.msg, code, reason, headers) {
            self.respond(now, tx, response);
        }
    }

    /// Sends a response on a server transaction.
    ///
    /// An INVITE answered 2xx no longer counts against the limits: it
    /// waits in Accepted with the finished records (see the transaction
    /// layer's `hold_answered`).
    pub(super) fn respond(&mut self, now: Instant, tx: TxId, response: Message) {
        let success = response.status().is_some_and(|c| (200..300).contains(&c));
        if let Err(err) = self.txs.respond(now, tx, response) {
            tracing::debug!(%err, "response not sent on its transaction");
        }
        // Only a 2xx can have moved it to Accepted: the other responses
        // (most of them) spare the lookup.
        if success && self.txs.state(tx) == Some(State::Accepted) {
            self.release(tx);
        }
        self.take_tx_transmits();
    }

    /// Gives back what `tx` counted against the limits, if anything.
    pub(super) fn release(&mut self, tx: TxId) {
        if let Some(source) = self.admitted.remove(&tx) {
            self.admission.release(source);
        }
    }

    /// Makes a request routed to its next hop ready to leave towards
    /// `target`: Record-Route if asked, our Via with `branch` on top.
    /// `to_flow`: the target is a flow (RFC 5626), the connection the
    /// peer opened, as a binding of an outbound registration names it.
    pub(super) fn prepare(
        &self,
        mut msg: Message,
        record_route: bool,
        source: &Source,
        target: Target,
        to_flow: bool,
        branch: &str,
    ) -> Result<Message, String> {
        if is_unroutable(target.addr.ip()) {
            return Err(format!("will not send to {}", target.addr));
        }
        let out = listener_for(self.locality.listeners(), &target).map_err(|e| e.to_string())?;
        let me = self.locality.address_towards(out, target.addr.ip());
        if record_route {
            self.record_route(&mut msg, source, out, &me, target, to_flow)?;
        }
        // RFC 5393: every request leaves with a Max-Breadth; one branch
        // keeps what the request had (relayed branches have their share).
        let breadth = checks::max_breadth(&msg, self.admission.limits.max_breadth);
        if !checks::has_max_breadth(&msg, breadth) {
            checks::set_max_breadth(&mut msg, breadth)?;
        }
        let mut via = String::with_capacity(32 + me.len() + branch.len());
        for part in [
            "SIP/2.0/",
            target.transport.via_name(),
            " ",
            &me,
            ";branch=",
            branch,
            ";rport",
        ] {
            via.push_str(part);
        }
        msg.prepend_header(HeaderName::Via, &via)
            .map_err(|e| e.to_string())?;
        Ok(msg)
    }

    /// Adds our Record-Route; twice when the request changes listener
    /// (transport or address family), so that each side of the dialog
    /// reaches us on the socket it knows (Kamailio's double RR). The
    /// entry facing a flow — a WebSocket peer, or a peer on a stream whose
    /// Contact says `ob` (RFC 5626 §5.3) — carries the token of its flow,
    /// so both entries are there whenever one side is a flow.
    fn record_route(
        &self,
        msg: &mut Message,
        source: &Source,
        out: usize,
        me: &str,
        target: Target,
        to_flow: bool,
    ) -> Result<(), String> {
        let from_flow = flow::needs_token(source.transport)
            || source.transport.is_stream() && contact_says_ob(msg);
        let inbound_flow = from_flow.then_some(Target {
            transport: source.transport,
            addr: source.remote,
        });
        let tag = secret::route_tag(msg.call_id().unwrap_or(""));
        if source.listener != out || inbound_flow.is_some() {
            let inbound_me = self
                .locality
                .address_towards(source.listener, source.remote.ip());
            let value = rr_value(&inbound_me, source.transport, inbound_flow, &tag);
            msg.prepend_header(HeaderName::RecordRoute, &value)
                .map_err(|e| e.to_string())?;
        }
        let outbound_flow = (to_flow || flow::needs_token(target.transport)).then_some(target);
        msg.prepend_header(
            HeaderName::RecordRoute,
            &rr_value(me, target.transport, outbound_flow, &tag),
        )
        .map_err(|e| e.to_string())
    }
}

/// Whether the request's Contact URI has `ob`: its UA keeps the
/// connection as a flow (RFC 5626 §5.3).
fn contact_says_ob(msg: &Message) -> bool {
    msg.values(&HeaderName::Contact)
        .next()
        .filter(|c| crate::sip::mentions(c, "ob"))
        .and_then(|c| crate::sip::NameAddr::parse(c).ok())
        .is_some_and(|c| c.uri.param("ob").is_some())
}

/// Record-Route value naming us on one socket, with the flow token of the
/// connection it faces when that is a flow, and the dialog's integrity
/// tag (`ri`, see [`secret::route_tag`]).
fn rr_value(me: &str, transport: Transport, flow: Option<Target>, tag: &str) -> String {
    let user = flow.map(flow::token);
    let mut value = String::with_capacity(64 + me.len());
    value.push_str("<sip:");
    if let Some(user) = &user {
        value.push_str(user);
        value.push('@');
    }
    value.push_str(me);
    if transport != Transport::Udp {
        value.push_str(";transport=");
        value.push_str(transport.name());
    }
    for part in [";lr;ri=", tag, ">"] {
        value.push_str(part);
    }
    value
}
