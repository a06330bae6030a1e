//! Hook deadlines, kept by a thread that wakes only when one may be due.
//!
//! wasmtime stops a guest at an epoch deadline: compiled guest code checks
//! the engine's epoch counter, and a store whose deadline the counter has
//! reached calls back into the host, which stops the hook or lets it go on
//! ([`Deadline::expired`]). The counter used to advance every 25 ms from a
//! thread of its own, busy or idle: 40 wake-ups a second at some 57 µs of
//! CPU each on a virtual machine, about 2.2 ms a second, twice what
//! Kamailio's 16 Hz timer costs it idle (issue #15).
//!
//! Here every warm instance has a [`Slot`] saying when the hook it runs is
//! due (nothing while it is idle). The watchdog sleeps until the earliest
//! due time of a running hook, and no longer than the shortest deadline in
//! use: a hook that starts while it sleeps is due no sooner than it wakes.
//! It advances the epoch only when a hook is past due; that hook's store
//! stops it, and any other running at that moment finds its time not up
//! and goes on. So a hook is stopped as soon as the watchdog wakes after
//! its deadline, not up to two ticks late, and the watchdog wakes once per
//! shortest deadline (20 times a second at the default 50 ms) however many
//! hooks run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::Thread;
use std::time::{Duration, Instant};

use anyhow::Context;

/// A slot's due time when no hook runs on it.
const IDLE: u64 = u64::MAX;

/// `at` in nanoseconds since `start` (the watchdog's), short of [`IDLE`].
fn nanos_since(start: Instant, at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(start).as_nanos()).unwrap_or(IDLE - 1)
}

/// When the hook running on one instance is due, read by the watchdog.
struct Slot {
    /// Nanoseconds since the watchdog's start; [`IDLE`] when no hook runs.
    due: AtomicU64,
    /// The hook deadline of the instance's tenant, in nanoseconds: the
    /// watchdog sleeps no longer than the shortest of these.
    span: u64,
}

/// The watchdog's shared part: the instances' slots.
struct Shared {
    start: Instant,
    /// Every live instance's slot; one whose instance is gone (the only
    /// reference left is this one) is dropped at the next look.
    slots: Mutex<Vec<Arc<Slot>>>,
    /// The longest the watchdog sleeps now (the shortest span), in
    /// nanoseconds: an instance with a shorter deadline wakes it.
    period: AtomicU64,
    thread: Thread,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Slot>>> {
        // A panic while holding the lock leaves only a Vec behind: still valid.
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Shared {
    /// The last engine, pool and instance are gone: the watchdog, which
    /// may sleep without a timeout, wakes to find that out and ends.
    fn drop(&mut self) {
        self.thread.unpark();
    }
}

/// The thread that stops hooks past their deadline, for one engine.
#[derive(Clone)]
pub(crate) struct Watchdog(Arc<Shared>);

impl Watchdog {
    /// Starts the watchdog thread of `engine`, which must have epoch
    /// interruption on.
    pub(crate) fn start(engine: &wasmtime::Engine) -> anyhow::Result<Watchdog> {
        let engine = engine.weak();
        let (tx, rx) = std::sync::mpsc::sync_channel::<std::sync::Weak<Shared>>(1);
        let thread = std::thread::Builder::new()
            .name("wisp-watchdog".into())
            .spawn(move || {
                if let Ok(shared) = rx.recv() {
                    watch(&shared, &engine);
                }
            })
            .context("cannot start the hook watchdog thread")?;
        let shared = Arc::new(Shared {
            start: Instant::now(),
            slots: Mutex::new(Vec::new()),
            period: AtomicU64::new(IDLE),
            thread: thread.thread().clone(),
        });
        // The thread has not looked at anything yet; it only waits for this.
        let _ = tx.send(Arc::downgrade(&shared));
        Ok(Watchdog(shared))
    }

    /// A deadline for a new instance whose hooks get `span` each.
    pub(crate) fn deadline(&self, span: Duration) -> Deadline {
        let span = u64::try_from(span.as_nanos()).unwrap_or(IDLE - 1);
        let slot = Arc::new(Slot {
            due: AtomicU64::new(IDLE),
            span,
        });
        let shorter = {
            let mut slots = self.0.lock();
            slots.push(slot.clone());
            // Under the lock, as the watchdog sets it: a shorter deadline
            // than it sleeps for must wake it now.
            span < self.0.period.load(Ordering::Relaxed)
        };
        if shorter {
            self.0.thread.unpark();
        }
        Deadline {
            slot,
            start: self.0.start,
        }
    }
}

/// The watchdog thread's loop, until its engine is gone.
fn watch(shared: &std::sync::Weak<Shared>, engine: &wasmtime::EngineWeak) {
    loop {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let now = nanos_since(shared.start, Instant::now());
        let look = {
            let mut slots = shared.lock();
            slots.retain(|slot| Arc::strong_count(slot) > 1);
            let look = look(
                now,
                slots
                    .iter()
                    .map(|slot| (slot.due.load(Ordering::Acquire), slot.span)),
            );
            shared.period.store(look.period, Ordering::Relaxed);
            look
        };
        drop(shared);
        if look.past_due {
            let Some(engine) = engine.upgrade() else {
                return;
            };
            engine.increment_epoch();
        }
        match look.next {
            Some(next) => std::thread::park_timeout(Duration::from_nanos(next - now)),
            // No instance: nothing can run until one is made, which wakes
            // this thread (`Watchdog::deadline`), as does the end.
            None => std::thread::park(),
        }
    }
}

/// What the watchdog does when it looks at the slots at `now`.
#[derive(Debug, PartialEq, Eq)]
struct Look {
    /// A running hook is past due: advance the epoch.
    past_due: bool,
    /// When to look again (nanoseconds since the start); none when there
    /// is no instance.
    next: Option<u64>,
    /// The shortest span, the longest it sleeps ([`IDLE`] if none).
    period: u64,
}

/// Looks at the slots' `(due, span)` at `now`: the next look is at the
/// earliest due time ahead, and no later than the shortest span from now
/// (a hook that starts meanwhile is due no sooner). A hook past due but
/// still running (its store stops it when the guest next checks the epoch;
/// a host call may delay that) is looked at again a period later.
fn look(now: u64, slots: impl Iterator<Item = (u64, u64)>) -> Look {
    let mut past_due = false;
    let mut ahead = IDLE;
    let mut period = IDLE;
    for (due, span) in slots {
        period = period.min(span.max(1));
        if due == IDLE {
            continue;
        }
        if due <= now {
            past_due = true;
        } else {
            ahead = ahead.min(due);
        }
    }
    let next = (period != IDLE).then(|| ahead.min(now.saturating_add(period)));
    Look {
        past_due,
        next,
        period,
    }
}

/// One instance's deadline, kept in its store: its slot, which only this
/// instance's thread writes.
pub(crate) struct Deadline {
    slot: Arc<Slot>,
    /// The watchdog's start, which the slot's times count from.
    start: Instant,
}

impl Deadline {
    /// A deadline no watchdog looks at, until the pool gives the instance
    /// its own (and for tests that run a store by hand).
    pub(crate) fn unwatched() -> Deadline {
        Deadline {
            slot: Arc::new(Slot {
                due: AtomicU64::new(IDLE),
                span: IDLE,
            }),
            start: Instant::now(),
        }
    }

    /// A hook (or an instantiation) starts that must end by `due`.
    pub(crate) fn start(&mut self, due: Instant) {
        let nanos = nanos_since(self.start, due);
        self.slot.due.store(nanos, Ordering::Release);
    }

    /// The hook ended.
    pub(crate) fn end(&mut self) {
        self.slot.due.store(IDLE, Ordering::Release);
    }

    /// When the running hook is due; none while idle.
    fn due(&self) -> Option<Instant> {
        match self.slot.due.load(Ordering::Relaxed) {
            IDLE => None,
            nanos => Some(self.start + Duration::from_nanos(nanos)),
        }
    }

    /// At an epoch change (the watchdog found some hook past due): whether
    /// this instance's hook is. One past its time gets back what `owed`
    /// gives (the host's time it waited for storage, given once) and goes
    /// on if that puts its end ahead of `now`.
    pub(crate) fn expired(&mut self, now: Instant, mut owed: impl FnMut() -> Duration) -> bool {
        let Some(mut due) = self.due() else {
            // No hook runs: nothing to stop.
            return false;
        };
        if now < due {
            return false;
        }
        while due <= now {
            let more = owed();
            if more.is_zero() {
                return true;
            }
            due += more;
        }
        self.start(due);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn without_instances_it_sleeps_until_woken() {
        let look = look(5 * MS, std::iter::empty());
        assert_eq!(
            look,
            Look {
                past_due: false,
                next: None,
                period: IDLE,
            }
        );
    }

    #[test]
    fn idle_instances_are_looked_at_once_per_shortest_deadline() {
        let slots = [(IDLE, 50 * MS), (IDLE, 20 * MS), (IDLE, 1000 * MS)];
        let look = look(7 * MS, slots.into_iter());
        assert!(!look.past_due);
        assert_eq!(look.next, Some(27 * MS));
        assert_eq!(look.period, 20 * MS);
    }

    #[test]
    fn a_running_hook_is_looked_at_when_it_is_due() {
        // Due at 30 ms, sooner than a period from now: woken for it.
        let look = look(10 * MS, [(30 * MS, 50 * MS), (IDLE, 50 * MS)].into_iter());
        assert_eq!(look.next, Some(30 * MS));
        assert!(!look.past_due);
    }

    #[test]
    fn a_hook_past_due_advances_the_epoch_and_is_looked_at_a_period_later() {
        let look = look(
            60 * MS,
            [(60 * MS, 50 * MS), (70 * MS, 50 * MS), (IDLE, 50 * MS)].into_iter(),
        );
        assert!(look.past_due);
        // The one at 70 ms comes first; the past one does not make it spin.
        assert_eq!(look.next, Some(70 * MS));
        let look = look_again(60 * MS, 50 * MS);
        assert!(look.past_due);
        assert_eq!(look.next, Some(110 * MS));
    }

    fn look_again(now: u64, span: u64) -> Look {
        look(now, [(now - 1, span)].into_iter())
    }

    /// The bound the watchdog keeps: however a hook's start falls between
    /// two looks, the look after it comes no later than its due time.
    #[test]
    fn no_hook_is_due_before_the_next_look() {
        let span = 50 * MS;
        let mut now = 0;
        for started in (0..200).map(|i| i * 3 * MS + 7) {
            let mut next = look(now, [(IDLE, span)].into_iter()).next.expect("a slot");
            while next <= started {
                now = next;
                next = look(now, [(IDLE, span)].into_iter()).next.expect("a slot");
            }
            // The hook starts at `started`, after the look at `now`.
            assert!(
                next <= started + span,
                "look at {next}, due {}",
                started + span
            );
        }
    }

    fn deadline_at(due: Instant) -> Deadline {
        let mut deadline = Deadline::unwatched();
        deadline.start(due);
        deadline
    }

    #[test]
    fn a_hook_is_stopped_at_its_deadline_and_not_before() {
        let t0 = Instant::now();
        let mut deadline = deadline_at(t0 + Duration::from_millis(50));
        let nothing = || Duration::ZERO;
        assert!(!deadline.expired(t0 + Duration::from_millis(49), nothing));
        assert!(deadline.expired(t0 + Duration::from_millis(50), nothing));
        deadline.end();
        assert!(!deadline.expired(t0 + Duration::from_secs(9), nothing));
        assert_eq!(deadline.slot.due.load(Ordering::Relaxed), IDLE);
    }

    #[test]
    fn storage_time_moves_the_deadline_once() {
        let t0 = Instant::now();
        let mut deadline = deadline_at(t0 + Duration::from_millis(50));
        let mut credit = Some(Duration::from_millis(30));
        let mut owed = || credit.take().unwrap_or_default();
        // Past 50 ms, the 30 ms waited for storage are given back...
        assert!(!deadline.expired(t0 + Duration::from_millis(60), &mut owed));
        assert_eq!(deadline.due(), Some(t0 + Duration::from_millis(80)));
        let slot_due = deadline.slot.due.load(Ordering::Relaxed);
        assert_eq!(
            slot_due,
            nanos_since(deadline.start, t0 + Duration::from_millis(80))
        );
        // ...once.
        assert!(deadline.expired(t0 + Duration::from_millis(80), &mut owed));
    }

    #[test]
    fn a_late_look_gives_back_what_is_owed_before_stopping() {
        let t0 = Instant::now();
        let mut deadline = deadline_at(t0 + Duration::from_millis(50));
        let mut credits = vec![Duration::from_millis(10), Duration::from_millis(10)];
        // Looked at 65 ms: 50 + 10 is past, 50 + 10 + 10 is not.
        assert!(!deadline.expired(t0 + Duration::from_millis(65), || {
            credits.pop().unwrap_or_default()
        }));
        assert_eq!(deadline.due(), Some(t0 + Duration::from_millis(70)));
    }

    #[test]
    fn a_new_shorter_deadline_wakes_the_watchdog_and_a_gone_instance_is_forgotten() {
        let engine = wasmtime::Engine::new(wasmtime::Config::new().epoch_interruption(true))
            .expect("engine");
        let watchdog = Watchdog::start(&engine).expect("watchdog");
        let long = watchdog.deadline(Duration::from_secs(1));
        let short = watchdog.deadline(Duration::from_millis(20));
        // The watchdog looks (at once: it was woken) and settles on 20 ms.
        let settled = |period: u64, slots: usize| {
            (0..500).any(|_| {
                std::thread::sleep(Duration::from_millis(2));
                watchdog.0.period.load(Ordering::Relaxed) == period
                    && watchdog.0.lock().len() == slots
            })
        };
        assert!(settled(20 * MS, 2));
        drop(short);
        assert!(settled(1000 * MS, 1), "the 20 ms instance is forgotten");
        drop(long);
    }

    /// A guest that never ends is stopped: the watchdog advances the
    /// epoch past its store's deadline (one epoch ahead), which nothing
    /// else advances here.
    #[test]
    fn a_hook_past_due_is_stopped() {
        let engine = wasmtime::Engine::new(wasmtime::Config::new().epoch_interruption(true))
            .expect("engine");
        let watchdog = Watchdog::start(&engine).expect("watchdog");
        let span = Duration::from_millis(20);
        let mut deadline = watchdog.deadline(span);
        // (module (func (export "spin") (loop (br 0))))
        let spin: &[u8] = &[
            0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
            0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type: () -> ()
            0x03, 0x02, 0x01, 0x00, // one function of that type
            0x07, 0x08, 0x01, 0x04, b's', b'p', b'i', b'n', 0x00, 0x00, // export
            0x0a, 0x09, 0x01, 0x07, 0x00, 0x03, 0x40, 0x0c, 0x00, 0x0b, 0x0b, // loop
        ];
        let module = wasmtime::Module::new(&engine, spin).expect("module");
        let mut store = wasmtime::Store::new(&engine, ());
        store.set_epoch_deadline(1);
        store.epoch_deadline_trap();
        let instance = wasmtime::Instance::new(&mut store, &module, &[]).expect("instance");
        let spin = instance
            .get_typed_func::<(), ()>(&mut store, "spin")
            .expect("spin");
        // Should the watchdog fail, the test ends anyway, and fails.
        let rescued = Arc::new(std::sync::atomic::AtomicBool::new(false));
        {
            let (engine, rescued) = (engine.clone(), rescued.clone());
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs(10));
                rescued.store(true, Ordering::Relaxed);
                engine.increment_epoch();
            });
        }
        let started = Instant::now();
        deadline.start(started + span);
        let err = spin.call(&mut store, ()).expect_err("stopped");
        deadline.end();
        assert_eq!(
            err.downcast_ref::<wasmtime::Trap>(),
            Some(&wasmtime::Trap::Interrupt)
        );
        assert!(started.elapsed() >= span, "stopped before its deadline");
        assert!(
            !rescued.load(Ordering::Relaxed),
            "the watchdog did not stop it"
        );
    }
}
