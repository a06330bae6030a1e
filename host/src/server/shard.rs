//! A shard: the transactions of the calls hashed to it (a worker), and
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

/// Messages waiting for one shard before new ones are dropped (overload).
const QUEUE_LIMIT: usize = 8192;

/// What a shard's holder does with its messages.
pub(super) trait Handler {
    type Message;
    fn handle(&mut self, msg: Self::Message);
    /// Fires the timers that are due.
    fn expire(&mut self);
}

pub(super) struct Shard<H: Handler> {
    worker: Mutex<H>,
    pending: Mutex<VecDeque<H::Message>>,
}

impl<H: Handler> Shard<H> {
    pub(super) fn new(worker: H) -> Shard<H> {
        Shard {
            worker: Mutex::new(worker),
            pending: Mutex::new(VecDeque::new()),
        }
    }

    /// Queues a message for the next [`Shard::drain`]; false when the
    /// queue is full and the message was dropped.
    pub(super) fn enqueue(&self, msg: H::Message) -> bool {
        let mut pending = lock(&self.pending);
        if pending.len() >= QUEUE_LIMIT {
            tracing::warn!("shard queue full: dropping a message");
            return false;
        }
        pending.push_back(msg);
        true
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
                let Some(msg) = next else { break };
                guarded(|| worker.handle(msg));
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::{channel, Receiver, Sender};
    use std::sync::{Arc, Mutex};

    /// What a receiving thread does with a message.
    fn submit<H: Handler>(shard: &Shard<H>, msg: H::Message) {
        if shard.enqueue(msg) {
            shard.drain();
        }
    }

    /// Records what it handles; message 0 waits for a go-ahead, holding
    /// the shard meanwhile.
    struct Recorder {
        handled: Arc<Mutex<Vec<u32>>>,
        started: Sender<()>,
        go: Receiver<()>,
        expired: usize,
    }

    impl Handler for Recorder {
        type Message = u32;
        fn handle(&mut self, msg: u32) {
            if msg == 0 {
                self.started.send(()).expect("test alive");
                self.go.recv().expect("test alive");
            }
            if msg == 99 {
                panic!("a bug in handling");
            }
            self.handled.lock().expect("lock").push(msg);
        }
        fn expire(&mut self) {
            self.expired += 1;
        }
    }

    #[test]
    fn a_busy_shard_queues_for_its_holder_in_order() {
        let handled = Arc::new(Mutex::new(Vec::new()));
        let (started_tx, started) = channel();
        let (go, go_rx) = channel();
        let shard = Arc::new(Shard::new(Recorder {
            handled: handled.clone(),
            started: started_tx,
            go: go_rx,
            expired: 0,
        }));
        let holder = {
            let shard = shard.clone();
            std::thread::spawn(move || submit(&shard, 0))
        };
        started.recv().expect("message 0 is being handled");
        // The shard is held: these return at once, queued for the holder.
        for msg in 1..=5 {
            submit(&shard, msg);
        }
        shard.drain();
        assert_eq!(*handled.lock().expect("lock"), Vec::<u32>::new());
        go.send(()).expect("holder alive");
        holder.join().expect("holder thread");
        assert_eq!(*handled.lock().expect("lock"), vec![0, 1, 2, 3, 4, 5]);
        // A panic costs its message only; the shard goes on.
        submit(&shard, 99);
        submit(&shard, 6);
        assert_eq!(*handled.lock().expect("lock"), vec![0, 1, 2, 3, 4, 5, 6]);
        assert!(lock(&shard.worker).expired >= 3);
    }
}
