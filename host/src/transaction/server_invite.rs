//! INVITE server transaction (RFC 3261 §17.2.1, figure 7, with the
//! Accepted state of RFC 6026 §7.1).
//!
//! ```text
//!   INVITE ─▶ Proceeding ──TU 1xx──▶ Proceeding   (INVITE again: last 1xx re-sent)
//!                 │──TU 2xx──▶ Accepted ──L──▶ gone (INVITE absorbed; TU 2xx sent; ACK to TU)
//!                 └──TU 300-699──▶ Completed      (G: resend final, G=min(2G,T2); INVITE: resend)
//!                                    │ H: NoAck ──▶ gone
//!                                    └ ACK ──▶ Confirmed ──I──▶ gone (ACK absorbed)
//! ```

use std::time::Duration;

use bytes::Bytes;

use super::machine::{double, Ctx};
use super::schedule::{Slot, TimerKind};
use super::{Event, Incoming, State, TxError};

pub(super) struct InviteServer {
    state: State,
    /// The last response sent, re-sent on INVITE retransmissions.
    last: Option<Bytes>,
    interval: Duration,
}

impl InviteServer {
    /// `g`: the first interval of Timer G.
    pub(super) fn start(g: Duration) -> InviteServer {
        InviteServer {
            state: State::Proceeding,
            last: None,
            interval: g,
        }
    }

    pub(super) fn state(&self) -> State {
        self.state
    }

    /// A retransmission of the INVITE.
    pub(super) fn on_invite(&mut self, ctx: &mut Ctx) {
        if matches!(self.state, State::Proceeding | State::Completed) {
            if let Some(last) = &self.last {
                ctx.send(last.clone());
            }
        }
    }

    /// An ACK that matched this transaction.
    pub(super) fn on_ack(&mut self, ctx: &mut Ctx) -> Incoming {
        match self.state {
            State::Completed => {
                // Confirmed absorbs ACKs with nothing but its key.
                self.state = State::Confirmed;
                self.last = None;
                ctx.linger(TimerKind::I, ctx.timers.i, true);
                Incoming::AckOfNon2xx(ctx.id)
            }
            // Only RFC 2543 matching gets here: the ACK of a 2xx goes end
            // to end (RFC 6026 §8.7: passed to the TU).
            State::Accepted => Incoming::Ack2xx,
            _ => Incoming::Retransmission,
        }
    }

    pub(super) fn respond(&mut self, ctx: &mut Ctx, code: u16, data: Bytes) -> Result<(), TxError> {
        match (self.state, code) {
            (State::Proceeding, 100..=199) => {
                ctx.send(data.clone());
                self.last = Some(data);
            }
            (State::Proceeding, 200..=299) => {
                ctx.send(data);
                self.last = None;
                self.state = State::Accepted;
                ctx.linger(TimerKind::L, ctx.timers.l, false);
            }
            // RFC 6026 §8.5: further 2xx from the TU (forked branches,
            // retransmissions relayed by a proxy) go out.
            (State::Accepted, 200..=299) => ctx.send(data),
            (State::Proceeding, _) => {
                ctx.send(data.clone());
                self.last = Some(data);
                self.state = State::Completed;
                if !ctx.reliable() {
                    ctx.arm_retransmit(TimerKind::G, self.interval);
                }
                ctx.arm(TimerKind::H, ctx.timers.h);
            }
            (state, _) => return Err(TxError::WrongState(state)),
        }
        Ok(())
    }

    pub(super) fn on_timer(&mut self, ctx: &mut Ctx, kind: TimerKind) {
        match (self.state, kind) {
            (State::Completed, TimerKind::G) => {
                if let Some(last) = &self.last {
                    ctx.send(last.clone());
                }
                self.interval = double(self.interval, Some(ctx.timers.t2));
                ctx.arm_retransmit(TimerKind::G, self.interval);
            }
            (State::Completed, TimerKind::H) => {
                ctx.stop(Slot::Retransmit);
                ctx.event(Event::NoAck(ctx.id));
                ctx.terminate();
            }
            (State::Confirmed, TimerKind::I) | (State::Accepted, TimerKind::L) => ctx.terminate(),
            _ => {}
        }
    }
}
