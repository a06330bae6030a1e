//! Deadlines of every transaction in one binary heap, with lazy
//! invalidation: stopping or re-arming a timer only forgets its stamp in
//! the transaction's [`Slots`]; the stale heap entry is dropped when it
//! reaches the top (or when stale entries outnumber live ones). Arming and
//! firing cost O(log n); no per-transaction runtime timers exist.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use super::TxId;

/// The timers of RFC 3261 §17 and RFC 6026 (table 4 of Appendix A).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimerKind {
    /// INVITE request retransmit (client, unreliable transports).
    A,
    /// INVITE client timeout in Calling.
    B,
    /// INVITE client wait in Completed.
    D,
    /// Non-INVITE request retransmit (client, unreliable transports).
    E,
    /// Non-INVITE client timeout.
    F,
    /// INVITE final response retransmit (server, unreliable transports).
    G,
    /// INVITE server wait for ACK.
    H,
    /// INVITE server wait in Confirmed.
    I,
    /// Non-INVITE server wait in Completed.
    J,
    /// Non-INVITE client wait in Completed.
    K,
    /// INVITE server wait in Accepted (RFC 6026).
    L,
    /// INVITE client wait in Accepted (RFC 6026).
    M,
}

/// A transaction runs at most one timer of each slot at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Slot {
    Retransmit = 0,
    Timeout = 1,
    Cleanup = 2,
}

impl TimerKind {
    pub(super) fn slot(self) -> Slot {
        match self {
            TimerKind::A | TimerKind::E | TimerKind::G => Slot::Retransmit,
            TimerKind::B | TimerKind::F | TimerKind::H => Slot::Timeout,
            _ => Slot::Cleanup,
        }
    }
}

/// The stamps of a transaction's armed timers, one per [`Slot`].
#[derive(Debug, Default)]
pub(super) struct Slots([Option<u64>; 3]);

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Entry {
    pub(super) deadline: Instant,
    stamp: u64,
    pub(super) tx: TxId,
    pub(super) kind: TimerKind,
}

impl Entry {
    /// Whether the transaction still waits for this timer.
    pub(super) fn is_live(&self, slots: &Slots) -> bool {
        slots.0[self.kind.slot() as usize] == Some(self.stamp)
    }
}

#[derive(Debug, Default)]
pub(super) struct Schedule {
    heap: BinaryHeap<Reverse<Entry>>,
    next_stamp: u64,
    /// Armed timers over all transactions.
    live: usize,
}

impl Schedule {
    /// Arms `kind` (replacing whatever ran in its slot) at `deadline`.
    pub(super) fn arm(&mut self, slots: &mut Slots, tx: TxId, kind: TimerKind, deadline: Instant) {
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        let slot = &mut slots.0[kind.slot() as usize];
        if slot.is_none() {
            self.live += 1;
        }
        *slot = Some(stamp);
        self.heap.push(Reverse(Entry {
            deadline,
            stamp,
            tx,
            kind,
        }));
    }

    pub(super) fn stop(&mut self, slots: &mut Slots, slot: Slot) {
        if slots.0[slot as usize].take().is_some() {
            self.live -= 1;
        }
    }

    pub(super) fn stop_all(&mut self, slots: &mut Slots) {
        for slot in [Slot::Retransmit, Slot::Timeout, Slot::Cleanup] {
            self.stop(slots, slot);
        }
    }

    /// The earliest entry, live or not.
    pub(super) fn peek(&self) -> Option<&Entry> {
        self.heap.peek().map(|Reverse(e)| e)
    }

    pub(super) fn pop(&mut self) -> Option<Entry> {
        self.heap.pop().map(|Reverse(e)| e)
    }

    /// Drops stale entries from the top so that `peek` is live, and
    /// rebuilds the heap when stale entries dominate (bounded memory when
    /// many transactions end long before their timeouts).
    pub(super) fn prune(&mut self, is_live: impl Fn(&Entry) -> bool) {
        if self.heap.len() > 2 * self.live + 1024 {
            let entries = std::mem::take(&mut self.heap).into_vec();
            self.heap = entries
                .into_iter()
                .filter(|Reverse(e)| is_live(e))
                .collect();
        }
        while let Some(Reverse(e)) = self.heap.peek() {
            if is_live(e) {
                break;
            }
            self.heap.pop();
        }
    }

    /// Heap entries (live and stale), for tests.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.heap.len()
    }
}
