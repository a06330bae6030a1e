//! INVITE client transaction (RFC 3261 §17.1.1, figure 5, with the
//! Accepted state of RFC 6026 §7.2).
//!
//! ```text
//!            send INVITE; A (unreliable), B
//!   Calling ──1xx──▶ Proceeding ──1xx──▶ Proceeding        (1xx: to TU)
//!      │ A: resend, A*=2       │
//!      │ B: Timeout            ├──2xx──▶ Accepted ──M──▶ gone   (2xx: to TU, again in Accepted)
//!      └──────────── both ─────┴─300-699─▶ Completed ──D──▶ gone (ACK sent; final re-sends ACK)
//! ```

use std::time::Duration;

use bytes::Bytes;

use super::machine::{double, Ctx};
use super::schedule::{Slot, TimerKind};
use super::{Event, ResponseDisposition, State, TxError};
use crate::sip::{HeaderName, Message, Method};

pub(super) struct InviteClient {
    state: State,
    /// What Calling and Proceeding need; let go once a final response
    /// came, so that a transaction waiting out Timer D or M is small.
    live: Option<Box<Live>>,
    /// The ACK for the non-2xx final, once built (all Completed keeps).
    ack: Option<Bytes>,
}

struct Live {
    /// The INVITE, for the ACK of a non-2xx final or a CANCEL.
    request: Message,
    /// As sent, for retransmissions.
    bytes: Bytes,
    interval: Duration,
}

impl InviteClient {
    /// Sends the INVITE and starts timers A (unreliable only) and B.
    pub(super) fn start(ctx: &mut Ctx, mut request: Message) -> InviteClient {
        let bytes = request.to_bytes();
        // Kept until the transaction ends, for an ACK or a CANCEL: their
        // views are parsed again then, if ever.
        request.shed_views();
        ctx.send(bytes.clone());
        let interval = ctx.timers.a;
        if !ctx.reliable() {
            ctx.arm_retransmit(TimerKind::A, interval);
        }
        ctx.arm(TimerKind::B, ctx.timers.b);
        InviteClient {
            state: State::Calling,
            live: Some(Box::new(Live {
                request,
                bytes,
                interval,
            })),
            ack: None,
        }
    }

    pub(super) fn state(&self) -> State {
        self.state
    }

    pub(super) fn on_response(
        &mut self,
        ctx: &mut Ctx,
        msg: &Message,
        code: u16,
    ) -> ResponseDisposition {
        use ResponseDisposition::{Absorbed, Deliver};
        match (self.state, code) {
            (State::Calling | State::Proceeding, 100..=199) => {
                // No retransmissions and no Timer B once a 1xx came: the TU
                // runs Timer C (§16.6 step 11).
                self.state = State::Proceeding;
                ctx.stop(Slot::Retransmit);
                ctx.stop(Slot::Timeout);
                Deliver
            }
            (State::Calling | State::Proceeding, 200..=299) => {
                self.state = State::Accepted;
                self.live = None;
                ctx.linger(TimerKind::M, ctx.timers.m, false);
                Deliver
            }
            (State::Calling | State::Proceeding, _) => {
                self.state = State::Completed;
                self.ack = self
                    .live
                    .take()
                    .and_then(|live| build_ack(&live.request, msg))
                    .map(|m| m.to_bytes());
                if let Some(ack) = &self.ack {
                    ctx.send(ack.clone());
                }
                ctx.linger(TimerKind::D, ctx.timers.d, true);
                Deliver
            }
            (State::Completed, 300..) => {
                if let Some(ack) = &self.ack {
                    ctx.send(ack.clone());
                }
                Absorbed
            }
            // 2xx retransmissions (RFC 6026 Timer M), or a 2xx after a
            // non-2xx from a misbehaving peer: the proxy forwards every 2xx.
            (State::Accepted | State::Completed, 200..=299) => Deliver,
            _ => Absorbed,
        }
    }

    pub(super) fn on_timer(&mut self, ctx: &mut Ctx, kind: TimerKind) {
        match (self.state, kind) {
            (State::Calling, TimerKind::A) => {
                if let Some(live) = &mut self.live {
                    ctx.send(live.bytes.clone());
                    live.interval = double(live.interval, None);
                    ctx.arm_retransmit(TimerKind::A, live.interval);
                }
            }
            (State::Calling, TimerKind::B) => {
                ctx.event(Event::Timeout(ctx.id));
                ctx.terminate();
            }
            (State::Completed, TimerKind::D) | (State::Accepted, TimerKind::M) => ctx.terminate(),
            _ => {}
        }
    }

    /// The CANCEL for this INVITE (§9.1): allowed once a provisional
    /// response came and before a final one.
    pub(super) fn cancel(&self) -> Result<Message, TxError> {
        match self.state {
            State::Proceeding => {}
            State::Calling => return Err(TxError::NoProvisionalYet),
            state => return Err(TxError::WrongState(state)),
        }
        let request = &self
            .live
            .as_ref()
            .ok_or(TxError::WrongState(self.state))?
            .request;
        let to = request
            .header(&HeaderName::To)
            .ok_or(TxError::BadHeader("To"))?;
        derived_request(request, Method::Cancel, to, "70")
    }
}

/// A request built from `invite` as §9.1 (CANCEL) and §17.1.1.3 (ACK) say:
/// same Request-URI, Call-ID, From and CSeq number, the INVITE's top Via
/// only, its Route headers, the given To and Max-Forwards.
fn derived_request(
    invite: &Message,
    method: Method,
    to: &str,
    max_forwards: &str,
) -> Result<Message, TxError> {
    let uri = invite.uri().ok_or(TxError::NotARequest)?;
    let seq = invite.cseq().map_err(|_| TxError::BadHeader("CSeq"))?.seq;
    let via = invite
        .values(&HeaderName::Via)
        .next()
        .ok_or(TxError::BadHeader("Via"))?;
    let from = invite
        .header(&HeaderName::From)
        .ok_or(TxError::BadHeader("From"))?;
    let call_id = invite.call_id().ok_or(TxError::BadHeader("Call-ID"))?;
    let cseq = format!("{seq} {method}");
    let mut m = Message::new_request(method, uri).map_err(|_| TxError::NotARequest)?;
    let mut add = |name: HeaderName, value: &str| {
        m.append_header(name, value)
            .map_err(|_| TxError::BadHeader("header value"))
    };
    add(HeaderName::Via, via)?;
    add(HeaderName::MaxForwards, max_forwards)?;
    for route in invite.header_lines(&HeaderName::Route) {
        add(HeaderName::Route, route)?;
    }
    add(HeaderName::From, from)?;
    add(HeaderName::To, to)?;
    add(HeaderName::CallId, call_id)?;
    add(HeaderName::CSeq, &cseq)?;
    Ok(m)
}

/// The ACK for a non-2xx final response (§17.1.1.3): To from the response
/// (with its tag).
fn build_ack(invite: &Message, response: &Message) -> Option<Message> {
    let to = response.header(&HeaderName::To)?;
    let max_forwards = invite.header(&HeaderName::MaxForwards).unwrap_or("70");
    derived_request(invite, Method::Ack, to, max_forwards).ok()
}
