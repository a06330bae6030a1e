//! Non-INVITE server transaction (RFC 3261 §17.2.2, figure 8).
//!
//! ```text
//!   request ─▶ Trying ──TU 1xx──▶ Proceeding ──TU 200-699──▶ Completed ──J──▶ gone
//!   request again:  absorbed      last 1xx re-sent           final re-sent
//! ```

use bytes::Bytes;

use super::machine::Ctx;
use super::schedule::TimerKind;
use super::{State, TxError};

pub(super) struct NonInviteServer {
    state: State,
    last: Option<Bytes>,
}

impl NonInviteServer {
    pub(super) fn start() -> NonInviteServer {
        NonInviteServer {
            state: State::Trying,
            last: None,
        }
    }

    pub(super) fn state(&self) -> State {
        self.state
    }

    /// A retransmission of the request.
    pub(super) fn on_request(&mut self, ctx: &mut Ctx) {
        if let Some(last) = &self.last {
            ctx.send(last.clone());
        }
    }

    pub(super) fn respond(&mut self, ctx: &mut Ctx, code: u16, data: Bytes) -> Result<(), TxError> {
        match self.state {
            State::Trying | State::Proceeding => {
                ctx.send(data.clone());
                self.last = Some(data);
                if code < 200 {
                    self.state = State::Proceeding;
                } else {
                    self.state = State::Completed;
                    ctx.linger(TimerKind::J, ctx.timers.j, true);
                }
                Ok(())
            }
            state => Err(TxError::WrongState(state)),
        }
    }

    pub(super) fn on_timer(&mut self, ctx: &mut Ctx, kind: TimerKind) {
        if (self.state, kind) == (State::Completed, TimerKind::J) {
            ctx.terminate();
        }
    }
}
