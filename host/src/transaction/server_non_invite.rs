//! Non-INVITE server transaction (RFC 3261 §17.2.2, figure 8).
//!
//! ```text
//!   request ─▶ Trying ──TU 1xx──▶ Proceeding ──TU 200-699──▶ Completed ──J──▶ gone
//!   request again:  absorbed      last 1xx re-sent           final re-sent
//! ```
//!
//! Over UDP with an RFC 3261 branch, the table ends the transaction when
//! its final is sent and a record stands in for Completed (`finished.rs`).

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

    /// A response from the TU. `linger`: a final keeps the transaction in
    /// Completed for Timer J; without it the table ends the transaction and
    /// keeps a record of the final instead (`finished.rs`).
    pub(super) fn respond(
        &mut self,
        ctx: &mut Ctx,
        code: u16,
        data: Bytes,
        linger: bool,
    ) -> Result<(), TxError> {
        match self.state {
            State::Trying | State::Proceeding => {
                ctx.send(data.clone());
                self.last = Some(data);
                if code < 200 {
                    self.state = State::Proceeding;
                } else {
                    self.state = State::Completed;
                    if linger {
                        ctx.linger(TimerKind::J, ctx.timers.j, true);
                    }
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
