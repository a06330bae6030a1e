//! A shard: the transactions of the calls hashed to it (a worker), and
//! the messages waiting for it. Every shard belongs to one lane (one
//! tenant's, or the common lane for what has no tenant; see `lanes.rs`).
//!
//! A thread handles a shard's messages holding its lock. When another
//! thread holds it (a hook is running for another message of the shard's
//! calls), the message waits in the shard's queue and the holder handles it
//! before letting go: no thread ever blocks on a busy shard, and a shard's
//! messages are handled one at a time, in the order they arrived. A holder
//! may be told to stop between two messages (its tenant was confined to a
//! lane of its own): it leaves the rest to the lane's thread.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, TryLockError};
use std::time::Instant;

use super::alarm::Alarm;

/// Messages waiting for one shard before new ones are dropped (overload).
const QUEUE_LIMIT: usize = 8192;

/// What a shard's holder does with its messages.
pub(super) trait Handler {
    type Message;
    fn handle(&mut self, msg: Self::Message);
    /// Fires the timers that are due.
    fn expire(&mut self);
    /// When [`Handler::expire`] has something to do next.
    fn next_due(&self) -> Option<Instant>;
}

pub(super) struct Shard<H: Handler> {
    worker: Mutex<H>,
    pending: Mutex<VecDeque<H::Message>>,
    /// Messages waiting in every shard of the lane (one count per lane).
    queued: Arc<AtomicUsize>,
    /// At most this many in the whole lane.
    lane_limit: usize,
    /// When the worker's timers are next due, in µs since [`base`]
    /// (`u64::MAX`: none), so that the timer thread passes idle shards by
    /// without taking them, and sleeps until the earliest.
    due_us: AtomicU64,
    /// The timer thread's, told when `due_us` moves before it.
    alarm: Arc<Alarm>,
}

/// The instant shards count their timers from.
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

pub(super) fn micros(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(base()).as_micros()).unwrap_or(u64::MAX - 1)
}

impl<H: Handler> Shard<H> {
    pub(super) fn new(
        worker: H,
        queued: Arc<AtomicUsize>,
        lane_limit: usize,
        alarm: Arc<Alarm>,
    ) -> Shard<H> {
        Shard {
            worker: Mutex::new(worker),
            pending: Mutex::new(VecDeque::new()),
            queued,
            lane_limit,
            due_us: AtomicU64::new(0),
            alarm,
        }
    }

    /// When the worker's timers are next due (µs since [`base`]).
    pub(super) fn due_us(&self) -> u64 {
        self.due_us.load(Ordering::SeqCst)
    }

    /// Queues a message that no thread is about to handle (a lookup's
    /// answer, news of a connection): the timer thread will, unless a
    /// receiving thread holds the shard first.
    pub(super) fn post(&self, msg: H::Message) -> bool {
        let queued = self.enqueue(msg);
        if queued {
            self.alarm.ring();
        }
        queued
    }

    /// Queues a message for the next [`Shard::drain`]; false when the
    /// shard's or the lane's queue is full and the message was dropped.
    pub(super) fn enqueue(&self, msg: H::Message) -> bool {
        let mut pending = lock(&self.pending);
        if pending.len() >= QUEUE_LIMIT || self.queued.load(Ordering::Relaxed) >= self.lane_limit {
            tracing::debug!("shard queue full: dropping a message");
            return false;
        }
        pending.push_back(msg);
        self.queued.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Whether a drain has something to do: messages waiting, or timers
    /// due at `now`.
    pub(super) fn needs_drain(&self, now: Instant) -> bool {
        self.due_us.load(Ordering::Relaxed) <= micros(now) || !lock(&self.pending).is_empty()
    }

    /// Handles the queued messages and fires the timers that are due,
    /// unless another thread holds the shard (it will do both). `stop`,
    /// asked before each message, ends the drain early: true then when
    /// messages were left behind for another thread.
    pub(super) fn drain(&self, stop: &dyn Fn() -> bool) -> bool {
        self.run(stop).1
    }

    /// Drains the shard if it has messages waiting: whether it handled
    /// any, and whether it left some (as [`Shard::drain`]). So a thread
    /// with nothing else to do handles what another thread queued and has
    /// not come to yet.
    pub(super) fn take_over(&self, stop: &dyn Fn() -> bool) -> (bool, bool) {
        if lock(&self.pending).is_empty() {
            return (false, false);
        }
        self.run(stop)
    }

    /// [`Shard::drain`], telling also whether a message was handled.
    fn run(&self, stop: &dyn Fn() -> bool) -> (bool, bool) {
        let mut handled = false;
        loop {
            let mut worker = match self.worker.try_lock() {
                Ok(worker) => worker,
                Err(TryLockError::WouldBlock) => return (handled, false),
                Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            };
            let mut stopped = false;
            loop {
                if stop() {
                    stopped = true;
                    break;
                }
                let next = lock(&self.pending).pop_front();
                let Some(msg) = next else { break };
                self.queued.fetch_sub(1, Ordering::Relaxed);
                handled = true;
                guarded(|| worker.handle(msg));
            }
            if !stopped {
                guarded(|| worker.expire());
            }
            let due = worker.next_due().map_or(u64::MAX, micros);
            self.due_us.store(due, Ordering::SeqCst);
            drop(worker);
            self.alarm.due(due);
            let left = !lock(&self.pending).is_empty();
            if stopped {
                return (handled, left);
            }
            // A message queued after the last look, while we still held the
            // shard, found it busy: it is ours to handle.
            if !left {
                return (handled, false);
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
            shard.drain(&|| false);
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
        fn next_due(&self) -> Option<Instant> {
            None
        }
    }

    /// A shard of a [`Recorder`]: what it handled, told when message 0
    /// starts, and the go-ahead for message 0.
    #[allow(clippy::type_complexity)]
    fn recorded_shard() -> (
        Arc<Shard<Recorder>>,
        Arc<Mutex<Vec<u32>>>,
        Receiver<()>,
        Sender<()>,
    ) {
        let handled = Arc::new(Mutex::new(Vec::new()));
        let (started_tx, started) = channel();
        let (go, go_rx) = channel();
        let shard = Arc::new(Shard::new(
            Recorder {
                handled: handled.clone(),
                started: started_tx,
                go: go_rx,
                expired: 0,
            },
            Arc::new(AtomicUsize::new(0)),
            100,
            Arc::new(Alarm::new()),
        ));
        (shard, handled, started, go)
    }

    #[test]
    fn a_busy_shard_queues_for_its_holder_in_order() {
        let (shard, handled, started, go) = recorded_shard();
        let holder = {
            let shard = shard.clone();
            std::thread::spawn(move || submit(&shard, 0))
        };
        started.recv().expect("message 0 is being handled");
        // The shard is held: these return at once, queued for the holder.
        for msg in 1..=5 {
            submit(&shard, msg);
        }
        assert!(!shard.drain(&|| false), "held: nothing to do here");
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

    #[test]
    fn a_stopped_drain_leaves_the_rest_and_the_lane_is_bounded() {
        let handled = Arc::new(Mutex::new(Vec::new()));
        let (started, _) = channel();
        let (_go, go) = channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let shard = Shard::new(
            Recorder {
                handled: handled.clone(),
                started,
                go,
                expired: 0,
            },
            queued.clone(),
            3,
            Arc::new(Alarm::new()),
        );
        assert!(shard.enqueue(1) && shard.enqueue(2) && shard.enqueue(3));
        assert!(!shard.enqueue(4), "the lane holds 3");
        assert_eq!(queued.load(Ordering::Relaxed), 3);
        let count = std::cell::Cell::new(0);
        let one = || {
            count.set(count.get() + 1);
            count.get() > 1
        };
        assert!(shard.drain(&one), "stopped after one, two left");
        assert_eq!(*handled.lock().expect("lock"), vec![1]);
        assert!(shard.needs_drain(Instant::now()));
        assert!(!shard.drain(&|| false));
        assert_eq!(*handled.lock().expect("lock"), vec![1, 2, 3]);
        assert_eq!(queued.load(Ordering::Relaxed), 0);
        assert!(!shard.needs_drain(Instant::now()), "no timer, no message");
    }

    #[test]
    fn a_thread_takes_over_what_waits_in_a_shard_nobody_holds() {
        let (shard, handled, started, go) = recorded_shard();
        assert_eq!(shard.take_over(&|| false), (false, false), "nothing waits");
        assert_eq!(lock(&shard.worker).expired, 0, "an idle shard is not taken");
        // Queued by a thread that has not come to it yet.
        assert!(shard.enqueue(1) && shard.enqueue(2));
        assert_eq!(shard.take_over(&|| false), (true, false));
        assert_eq!(*handled.lock().expect("lock"), vec![1, 2]);
        // Held by another thread: left to it.
        let holder = {
            let shard = shard.clone();
            std::thread::spawn(move || submit(&shard, 0))
        };
        started.recv().expect("message 0 is being handled");
        assert!(shard.enqueue(3));
        assert_eq!(shard.take_over(&|| false), (false, false), "held");
        go.send(()).expect("holder alive");
        holder.join().expect("holder thread");
        assert_eq!(*handled.lock().expect("lock"), vec![1, 2, 0, 3]);
    }
}
