//! When the timer thread runs next.
//!
//! The timer thread fires the timers of shards nobody holds and hands
//! them the lookup answers queued for them. It used to wake every 10 ms
//! whatever was due, and on a virtual machine a wake-up costs some 30 µs
//! of CPU: 2–3 µs per registration at 1000 a second (issue #15), and 100
//! wake-ups a second for an idle proxy. Now it sleeps until the earliest
//! timer of any shard, and what makes something due sooner wakes it: a
//! shard whose next timer moved before the alarm ([`Alarm::due`], after
//! each drain), a lookup answer or failed connection queued for a shard
//! ([`Alarm::ring`]).
//!
//! Instants are µs since `shard::base`, as shards count their timers.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::thread::Thread;
use std::time::Duration;

/// Between two rounds at least this long: timers due within it fire
/// together (a busy shard fires its own after each message anyway).
pub(super) const MIN_GAP: Duration = Duration::from_millis(10);
/// At most this long without a round: the lanes' confinement is looked
/// at again, and a timer nobody announced still fires.
pub(super) const MAX_SLEEP: Duration = Duration::from_secs(1);

/// The alarm while the timer thread is in a round (it looks at every
/// shard before it sleeps), or set as early as it may be: no shard needs
/// to wake it. (A shard woke it for nothing after nearly every message of
/// a call load otherwise: some timer is always due within [`MIN_GAP`].)
const AWAKE: u64 = 0;

pub(super) struct Alarm {
    /// When the timer thread wakes next, or [`AWAKE`].
    at_us: AtomicU64,
    /// Something waits for a round now (not for a timer).
    urgent: AtomicBool,
    thread: OnceLock<Thread>,
}

impl Alarm {
    pub(super) fn new() -> Alarm {
        Alarm {
            at_us: AtomicU64::new(AWAKE),
            urgent: AtomicBool::new(false),
            thread: OnceLock::new(),
        }
    }

    /// A shard's next timer is now `due_us` (stored before this call,
    /// `SeqCst`): wakes the timer thread to set its alarm again when that
    /// is before it.
    pub(super) fn due(&self, due_us: u64) {
        if due_us < self.at_us.load(Ordering::SeqCst) {
            self.wake();
        }
    }

    /// Asks for a round now (or right after the one running): a message
    /// was queued for a shard that nobody may be holding.
    pub(super) fn ring(&self) {
        self.urgent.store(true, Ordering::SeqCst);
        self.wake();
    }

    fn wake(&self) {
        if let Some(thread) = self.thread.get() {
            thread.unpark();
        }
    }

    /// The timer thread, for ever: a `round` (which fires what is due),
    /// then sleep until the earliest timer of `next_due` (at least
    /// [`MIN_GAP`] and at most [`MAX_SLEEP`] after the round), or until
    /// rung.
    pub(super) fn run(
        &self,
        now_us: impl Fn() -> u64,
        mut round: impl FnMut(),
        next_due: impl Fn() -> u64,
    ) -> ! {
        let _ = self.thread.set(std::thread::current());
        let (gap, most) = (MIN_GAP.as_micros() as u64, MAX_SLEEP.as_micros() as u64);
        loop {
            self.at_us.store(AWAKE, Ordering::SeqCst);
            self.urgent.store(false, Ordering::SeqCst);
            round();
            let now = now_us();
            let (earliest, latest) = (now.saturating_add(gap), now.saturating_add(most));
            let mut at = self.set(earliest, latest, &next_due);
            loop {
                let now = now_us();
                if now >= at || self.urgent.load(Ordering::SeqCst) {
                    break;
                }
                std::thread::park_timeout(Duration::from_micros(at - now));
                if now_us() < at && !self.urgent.load(Ordering::SeqCst) {
                    // Woken before the alarm: a shard's timer moved
                    // earlier (or a wake-up for nothing).
                    at = self.set(earliest, at, &next_due);
                }
            }
        }
    }

    /// Sets the alarm to the earliest timer, within `earliest..=latest`.
    /// Each value is published before `next_due` is read again: a shard
    /// that stores an earlier timer after the read sees the alarm in
    /// [`Alarm::due`] and wakes the thread; one that stored it before is
    /// seen by the read. The alarm only moves earlier, so it ends. At
    /// `earliest` it cannot move: [`AWAKE`] is published then.
    fn set(&self, earliest: u64, latest: u64, next_due: &impl Fn() -> u64) -> u64 {
        let mut at = next_due().clamp(earliest, latest);
        loop {
            let published = if at <= earliest { AWAKE } else { at };
            self.at_us.store(published, Ordering::SeqCst);
            let wanted = next_due().clamp(earliest, latest);
            if wanted >= at {
                return at;
            }
            at = wanted;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::time::Instant;

    struct Fixture {
        alarm: Alarm,
        start: Instant,
        due: AtomicU64,
        rounds: AtomicUsize,
        /// When the last round ran.
        last_us: AtomicU64,
        /// Times the thread read the shards' timers: once or twice a
        /// round, and once each time it was woken.
        looks: AtomicUsize,
    }

    impl Fixture {
        fn now(&self) -> u64 {
            self.start.elapsed().as_micros() as u64
        }
        fn rounds(&self) -> usize {
            self.rounds.load(Ordering::SeqCst)
        }
        /// Waits (10 s at most) for `n` rounds in all.
        fn wait_for(&self, n: usize) -> bool {
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.rounds() < n {
                if Instant::now() > deadline {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            true
        }
    }

    fn started() -> Arc<Fixture> {
        let f = Arc::new(Fixture {
            alarm: Alarm::new(),
            start: Instant::now(),
            due: AtomicU64::new(u64::MAX),
            rounds: AtomicUsize::new(0),
            last_us: AtomicU64::new(0),
            looks: AtomicUsize::new(0),
        });
        let g = f.clone();
        std::thread::spawn(move || {
            g.alarm.run(
                || g.now(),
                || {
                    // Fires the timer when due, as a worker's round would.
                    let now = g.now();
                    if g.due.load(Ordering::SeqCst) <= now {
                        g.due.store(u64::MAX, Ordering::SeqCst);
                    }
                    g.last_us.store(now, Ordering::SeqCst);
                    g.rounds.fetch_add(1, Ordering::SeqCst);
                },
                || {
                    g.looks.fetch_add(1, Ordering::SeqCst);
                    g.due.load(Ordering::SeqCst)
                },
            )
        });
        assert!(f.wait_for(1), "no first round");
        f
    }

    #[test]
    fn with_nothing_due_it_sleeps_and_a_ring_wakes_it() {
        let f = started();
        std::thread::sleep(Duration::from_millis(200));
        // Nothing due: the next round is MAX_SLEEP after the first.
        assert_eq!(f.rounds(), 1, "woke with nothing due");
        f.alarm.ring();
        assert!(f.wait_for(2), "a ring did not wake it");
    }

    #[test]
    fn an_earlier_timer_is_fired_at_its_time_not_at_the_alarm() {
        let f = started();
        std::thread::sleep(Duration::from_millis(20));
        // Due in 50 ms: well before the alarm (MAX_SLEEP after the round).
        let due = f.now() + 50_000;
        f.due.store(due, Ordering::SeqCst);
        f.alarm.due(due);
        assert!(f.wait_for(2), "the timer never fired");
        // Not before the timer: the wake-up only set the alarm again.
        assert!(
            f.last_us.load(Ordering::SeqCst) >= due,
            "a round before the timer was due"
        );
        assert_eq!(f.due.load(Ordering::SeqCst), u64::MAX, "not fired");
    }

    #[test]
    fn a_later_timer_does_not_wake_it() {
        let f = started();
        std::thread::sleep(Duration::from_millis(20));
        let later = f.now() + 10 * MAX_SLEEP.as_micros() as u64;
        f.due.store(later, Ordering::SeqCst);
        f.alarm.due(later);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(f.rounds(), 1);
    }

    #[test]
    fn timers_due_within_the_gap_do_not_wake_it() {
        let f = started();
        // Due at once, again and again (a busy call load): one round per
        // MIN_GAP at most, and no wake-up per announcement (hundreds of
        // them here). Setting the alarm takes two or three looks, and an
        // announcement made while it is set may wake the thread once.
        let begin = f.rounds();
        let looked = f.looks.load(Ordering::SeqCst);
        let until = Instant::now() + Duration::from_millis(200);
        while Instant::now() < until {
            let now = f.now();
            f.due.store(now, Ordering::SeqCst);
            f.alarm.due(now);
            std::thread::sleep(Duration::from_micros(200));
        }
        let rounds = f.rounds() - begin;
        let most = (200 / MIN_GAP.as_millis() as usize) + 2;
        assert!(rounds <= most, "{rounds} rounds in 200 ms");
        assert!(rounds >= 1, "the timers never fired");
        let looks = f.looks.load(Ordering::SeqCst) - looked;
        assert!(
            looks <= 5 * (rounds + 1),
            "woken {looks} times for {rounds} rounds"
        );
    }
}
