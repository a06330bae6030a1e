//! A shard: the transactions of the calls hashed to it (a [`Worker`]), and
//! the messages waiting for it.
//!
//! Whichever thread received a message handles it, holding the shard's
//! lock. When another thread holds it (a hook is running for another
//! message of the shard's calls), the message waits in the shard's queue
//! and the holder handles it before letting go: no thread ever blocks on a
//! busy shard (a slow or hostile hook holds up only its own shard, never a
//! receiving thread), and a shard's messages are handled one at a time, in
//! the order they arrived.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, MutexGuard, TryLockError};

use crate::script::Source;
use crate::sip::Message;

use super::worker::Worker;

/// Messages waiting for one shard before new ones are dropped (overload).
const QUEUE_LIMIT: usize = 8192;

pub(super) struct Shard {
    worker: Mutex<Worker>,
    pending: Mutex<VecDeque<(Message, Source)>>,
}

impl Shard {
    pub(super) fn new(worker: Worker) -> Shard {
        Shard {
            worker: Mutex::new(worker),
            pending: Mutex::new(VecDeque::new()),
        }
    }

    /// Handles a message now, or queues it for the thread that holds the
    /// shard.
    pub(super) fn submit(&self, msg: Message, source: Source) {
        {
            let mut pending = lock(&self.pending);
            if pending.len() >= QUEUE_LIMIT {
                tracing::warn!(remote = %source.remote, "shard queue full: dropping a message");
                return;
            }
            pending.push_back((msg, source));
        }
        self.drain();
    }

    /// Handles every queued message and fires the timers that are due,
    /// unless another thread holds the shard (it will do both).
    pub(super) fn drain(&self) {
        loop {
            let mut worker = match self.worker.try_lock() {
                Ok(worker) => worker,
                Err(TryLockError::WouldBlock) => return,
                Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            };
            loop {
                let next = lock(&self.pending).pop_front();
                let Some((msg, source)) = next else { break };
                guarded(|| worker.handle(msg, source));
            }
            guarded(|| worker.expire());
            drop(worker);
            // A message queued after the last look, while we still held the
            // shard, found it busy: it is ours to handle.
            if lock(&self.pending).is_empty() {
                return;
            }
        }
    }
}

/// Runs one step of a worker; a panic (a bug) is logged and costs that
/// message, not the thread that received it.
fn guarded(step: impl FnOnce()) {
    if catch_unwind(AssertUnwindSafe(step)).is_err() {
        tracing::error!("bug: a panic while handling a message; the message is dropped");
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
