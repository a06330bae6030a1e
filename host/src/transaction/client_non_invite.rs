//! Non-INVITE client transaction (RFC 3261 §17.1.2, figure 6).
//!
//! ```text
//!            send request; E (unreliable), F
//!   Trying ──1xx──▶ Proceeding                       (1xx: to TU)
//!     │ E: resend, E=min(2E,T2)   │ E: resend, E=T2
//!     │ F: Timeout                │ F: Timeout
//!     └─────── 200-699 ───────────┴──▶ Completed ──K──▶ gone (final: to TU)
//! ```

use std::time::Duration;

use bytes::Bytes;

use super::machine::{double, Ctx};
use super::schedule::TimerKind;
use super::{Event, ResponseDisposition, State};
use crate::sip::Message;

pub(super) struct NonInviteClient {
    state: State,
    /// The request as sent, for retransmissions; let go in Completed,
    /// which waits out Timer K with nothing but the key.
    bytes: Option<Bytes>,
    interval: Duration,
}

impl NonInviteClient {
    /// Sends the request and starts timers E (unreliable only) and F.
    pub(super) fn start(ctx: &mut Ctx, request: &Message) -> NonInviteClient {
        let bytes = request.to_bytes();
        ctx.send(bytes.clone());
        let interval = ctx.timers.e;
        if !ctx.reliable() {
            ctx.arm_retransmit(TimerKind::E, interval);
        }
        ctx.arm(TimerKind::F, ctx.timers.f);
        NonInviteClient {
            state: State::Trying,
            bytes: Some(bytes),
            interval,
        }
    }

    pub(super) fn state(&self) -> State {
        self.state
    }

    pub(super) fn on_response(&mut self, ctx: &mut Ctx, code: u16) -> ResponseDisposition {
        match (self.state, code) {
            (State::Trying | State::Proceeding, 100..=199) => {
                self.state = State::Proceeding;
                ResponseDisposition::Deliver
            }
            (State::Trying | State::Proceeding, _) => {
                self.state = State::Completed;
                self.bytes = None;
                ctx.linger(TimerKind::K, ctx.timers.k, true);
                ResponseDisposition::Deliver
            }
            _ => ResponseDisposition::Absorbed,
        }
    }

    pub(super) fn on_timer(&mut self, ctx: &mut Ctx, kind: TimerKind) {
        match (self.state, kind) {
            (State::Trying | State::Proceeding, TimerKind::E) => {
                if let Some(bytes) = &self.bytes {
                    ctx.send(bytes.clone());
                }
                self.interval = if self.state == State::Proceeding {
                    ctx.timers.t2
                } else {
                    double(self.interval, Some(ctx.timers.t2))
                };
                ctx.arm_retransmit(TimerKind::E, self.interval);
            }
            (State::Trying | State::Proceeding, TimerKind::F) => {
                ctx.event(Event::Timeout(ctx.id));
                ctx.terminate();
            }
            (State::Completed, TimerKind::K) => ctx.terminate(),
            _ => {}
        }
    }
}
