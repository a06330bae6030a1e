//! What a state machine may do when it handles an input: send bytes, arm
//! and stop its timers, report events, terminate. The four machines
//! (client/server × INVITE/non-INVITE) only see this context; the table in
//! `mod.rs` applies the result.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::schedule::{Schedule, Slot, Slots, TimerKind};
use super::{Event, Timers, Transmit, TxId};
use crate::transport::Target;

pub(super) struct Ctx<'a> {
    pub(super) now: Instant,
    pub(super) timers: &'a Timers,
    pub(super) id: TxId,
    pub(super) target: Target,
    pub(super) slots: &'a mut Slots,
    pub(super) schedule: &'a mut Schedule,
    pub(super) transmits: &'a mut VecDeque<Transmit>,
    pub(super) events: &'a mut VecDeque<Event>,
    /// Set by `terminate`: the table removes the transaction afterwards.
    pub(super) terminated: bool,
}

impl Ctx<'_> {
    /// Whether the transport is reliable (no retransmissions, zero
    /// cleanup timers D, I, J, K).
    pub(super) fn reliable(&self) -> bool {
        self.target.transport.is_stream()
    }

    pub(super) fn send(&mut self, data: Bytes) {
        self.transmits.push_back(Transmit {
            tx: self.id,
            target: self.target,
            data,
        });
    }

    pub(super) fn event(&mut self, event: Event) {
        self.events.push_back(event);
    }

    /// Arms `kind` to fire after `after`. A duration too large for an
    /// `Instant` never fires.
    pub(super) fn arm(&mut self, kind: TimerKind, after: Duration) {
        match self.now.checked_add(after) {
            Some(at) => self.schedule.arm(self.slots, self.id, kind, at),
            None => self.schedule.stop(self.slots, kind.slot()),
        }
    }

    /// Retransmit timers use at least 1 ms, so a zero value set in code
    /// cannot retransmit in a loop.
    pub(super) fn arm_retransmit(&mut self, kind: TimerKind, interval: Duration) {
        self.arm(kind, interval.max(Duration::from_millis(1)));
    }

    pub(super) fn stop(&mut self, slot: Slot) {
        self.schedule.stop(self.slots, slot);
    }

    /// Stops the retransmit and timeout timers and waits `after` (zero on a
    /// reliable transport when `unreliable_only`) before terminating.
    pub(super) fn linger(&mut self, kind: TimerKind, after: Duration, unreliable_only: bool) {
        self.stop(Slot::Retransmit);
        self.stop(Slot::Timeout);
        if after.is_zero() || (unreliable_only && self.reliable()) {
            self.terminate();
        } else {
            self.arm(kind, after);
        }
    }

    pub(super) fn terminate(&mut self) {
        self.schedule.stop_all(self.slots);
        self.terminated = true;
    }
}

/// The next retransmit interval: doubled, capped when asked.
pub(super) fn double(interval: Duration, cap: Option<Duration>) -> Duration {
    let next = interval.saturating_mul(2);
    match cap {
        Some(cap) => next.min(cap),
        None => next,
    }
}
