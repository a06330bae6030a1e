//! Non-INVITE server transactions that have sent their final response, kept
//! as small records rather than as transactions.
//!
//! In Completed (RFC 3261 §17.2.2) such a transaction only re-sends its
//! final response to a retransmitted request until Timer J (32 s over UDP).
//! It sends nothing on its own and the TU has nothing left to do with it, so
//! the table ends it ([`super::Event::Terminated`]) as soon as the final is
//! sent and keeps only its key, its destination and the response's bytes.
//! Timer J being the same for every record, they expire in the order they
//! were made: a queue, not timers.
//!
//! What the records may hold is bounded for the whole process
//! ([`FinishedLimit`]), which also counts the INVITE server transactions
//! answered 2xx while they wait in Accepted for Timer L (they stay
//! transactions: the table ends its oldest when a record cannot make room,
//! see `Transactions::hold_answered`). Past the bound a table lets its
//! oldest record go before its Timer J. A retransmission arriving after
//! that is handled as a new request, which is what a stateless server does
//! with every one (RFC 3261 §16.11); it is also what any retransmission
//! after Timer J gets.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use hashbrown::HashTable;

use super::hash::KeyedState;
use super::key::ServerKey;
use super::TxId;
use crate::transport::Target;

/// How many records every table of a process may hold together.
#[derive(Debug)]
pub struct FinishedLimit {
    max: usize,
    held: AtomicUsize,
}

impl FinishedLimit {
    pub fn new(max: usize) -> Arc<FinishedLimit> {
        Arc::new(FinishedLimit {
            max,
            held: AtomicUsize::new(0),
        })
    }

    /// Records held in every table sharing this limit.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Counts one more record, or false when the limit is reached.
    fn take(&self) -> bool {
        let before = self.held.fetch_add(1, Ordering::Relaxed);
        if before >= self.max {
            self.held.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    fn give(&self, n: usize) {
        self.held.fetch_sub(n, Ordering::Relaxed);
    }
}

/// What a retransmitted request gets again.
pub(super) struct Record {
    /// The transaction it was (transmits name it; it is not reused).
    pub(super) tx: TxId,
    pub(super) target: Target,
    pub(super) response: Bytes,
}

struct Entry {
    key: ServerKey,
    record: Record,
}

/// One table's records.
pub(super) struct Finished {
    /// Found by the hash of their key, which `order` keeps to let them go:
    /// no second copy of the key, no allocation per record.
    records: HashTable<Entry>,
    hasher: KeyedState,
    /// Oldest first, which is also the order of their expiry.
    order: VecDeque<(Instant, u64, TxId)>,
    limit: Arc<FinishedLimit>,
    /// Answered INVITE transactions of this table the limit counts
    /// ([`Finished::hold_answered`]).
    answered: usize,
}

impl Finished {
    pub(super) fn new(limit: Arc<FinishedLimit>) -> Finished {
        Finished {
            records: HashTable::new(),
            hasher: KeyedState::default(),
            order: VecDeque::new(),
            limit,
            answered: 0,
        }
    }

    pub(super) fn get(&self, key: &ServerKey) -> Option<&Record> {
        let hash = self.hasher.hash_one(key);
        self.records
            .find(hash, |e| e.key == *key)
            .map(|e| &e.record)
    }

    /// Keeps `record` under `key` until `expires`. When the process holds
    /// all it may, this table's oldest record goes first; a table that has
    /// none keeps nothing.
    pub(super) fn insert(&mut self, expires: Instant, key: ServerKey, record: Record) {
        let room = self.limit.take() || (self.let_oldest_go() && self.limit.take());
        if !room {
            return;
        }
        let hash = self.hasher.hash_one(&key);
        if let Ok(old) = self.records.find_entry(hash, |e| e.key == key) {
            // Not reached (a retransmission finds the record before a
            // transaction could be made with its key); the replaced
            // record's queue entry then finds nothing to free.
            old.remove();
            self.limit.give(1);
        }
        self.order.push_back((expires, hash, record.tx));
        let hasher = &self.hasher;
        self.records
            .insert_unique(hash, Entry { key, record }, |e| hasher.hash_one(&e.key));
    }

    /// Counts an INVITE server transaction answered 2xx (in Accepted
    /// until Timer L) against the limit, letting this table's oldest
    /// record go when the process holds all it may; false when there is
    /// still no room (the caller then ends the transaction).
    pub(super) fn hold_answered(&mut self) -> bool {
        let room = self.limit.take() || (self.let_oldest_go() && self.limit.take());
        if room {
            self.answered += 1;
        }
        room
    }

    /// An answered INVITE transaction counted by `hold_answered` ended.
    pub(super) fn release_answered(&mut self) {
        self.answered -= 1;
        self.limit.give(1);
    }

    /// When the oldest record expires.
    pub(super) fn next_expiry(&self) -> Option<Instant> {
        self.order.front().map(|(at, _, _)| *at)
    }

    /// Lets every record expired at `now` go.
    pub(super) fn expire(&mut self, now: Instant) {
        while self.next_expiry().is_some_and(|at| at <= now) {
            self.pop();
        }
    }

    pub(super) fn len(&self) -> usize {
        self.records.len()
    }

    pub(super) fn answered(&self) -> usize {
        self.answered
    }

    /// Lets the oldest record go; false when there is none.
    fn let_oldest_go(&mut self) -> bool {
        while !self.order.is_empty() {
            if self.pop() {
                return true;
            }
        }
        false
    }

    /// Pops the oldest queue entry; true when it still named a record.
    fn pop(&mut self) -> bool {
        let Some((_, hash, tx)) = self.order.pop_front() else {
            return false;
        };
        match self.records.find_entry(hash, |e| e.record.tx == tx) {
            Ok(entry) => {
                entry.remove();
                self.limit.give(1);
                true
            }
            Err(_) => false,
        }
    }
}

impl Drop for Finished {
    fn drop(&mut self) {
        self.limit.give(self.records.len() + self.answered);
    }
}
