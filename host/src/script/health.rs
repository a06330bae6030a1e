//! How one component version is doing: hook calls and failures (for canary
//! rollback), and crash-loop backoff (for isolation).
//!
//! A guest that fails hook after hook would otherwise spend a worker's
//! time up to its deadline on every request, at the cost of every other
//! tenant on that worker. After `crash_loop_failures` failures in a row
//! the version is suspended: its new requests are answered 503 at once.
//! When the suspension ends, the next failure suspends it again for twice
//! as long (up to `max_backoff_ms`); a success ends the probation.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::limits::Limits;

pub struct Health {
    born: Instant,
    calls: AtomicU64,
    failures: AtomicU64,
    in_a_row: AtomicU32,
    /// Milliseconds since `born` until which new requests are refused.
    suspended_until_ms: AtomicU64,
    /// The next suspension's length, in ms.
    backoff_ms: AtomicU64,
    /// Suspended before and not yet succeeded since: one failure suspends.
    probation: AtomicBool,
    threshold: u32,
    base_backoff_ms: u64,
    max_backoff_ms: u64,
    /// Failures on two workers at once must not both start a suspension
    /// (doubling the backoff twice); failures are rare, so a lock is fine.
    failing: Mutex<()>,
}

/// Calls and failures of a version so far.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct HealthCounts {
    pub calls: u64,
    pub failures: u64,
}

impl Health {
    pub fn new(limits: &Limits) -> Health {
        Health {
            born: Instant::now(),
            calls: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            in_a_row: AtomicU32::new(0),
            suspended_until_ms: AtomicU64::new(0),
            backoff_ms: AtomicU64::new(limits.backoff_ms),
            probation: AtomicBool::new(false),
            threshold: limits.crash_loop_failures.max(1),
            base_backoff_ms: limits.backoff_ms,
            max_backoff_ms: limits.max_backoff_ms.max(limits.backoff_ms),
            failing: Mutex::new(()),
        }
    }

    fn now_ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.born).as_millis() as u64
    }

    /// How long the version stays suspended, if it is.
    pub fn suspended(&self, now: Instant) -> Option<Duration> {
        let until = self.suspended_until_ms.load(Ordering::Relaxed);
        let now = self.now_ms(now);
        (until > now).then(|| Duration::from_millis(until - now))
    }

    pub fn succeeded(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if self.in_a_row.load(Ordering::Relaxed) != 0 {
            self.in_a_row.store(0, Ordering::Relaxed);
        }
        if self.probation.load(Ordering::Relaxed) {
            self.probation.store(false, Ordering::Relaxed);
            self.backoff_ms
                .store(self.base_backoff_ms, Ordering::Relaxed);
        }
    }

    /// Counts a failure; returns the suspension it started, if any.
    pub fn failed(&self, now: Instant) -> Option<Duration> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.failures.fetch_add(1, Ordering::Relaxed);
        let _one_at_a_time = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        let in_a_row = self.in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
        if in_a_row < self.threshold && !self.probation.load(Ordering::Relaxed) {
            return None;
        }
        if self.suspended(now).is_some() {
            return None; // calls already under way when it was suspended
        }
        self.in_a_row.store(0, Ordering::Relaxed);
        self.probation.store(true, Ordering::Relaxed);
        let backoff = self.backoff_ms.load(Ordering::Relaxed);
        self.backoff_ms
            .store((backoff * 2).min(self.max_backoff_ms), Ordering::Relaxed);
        self.suspended_until_ms
            .store(self.now_ms(now) + backoff, Ordering::Relaxed);
        Some(Duration::from_millis(backoff))
    }

    pub fn counts(&self) -> HealthCounts {
        HealthCounts {
            calls: self.calls.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
        }
    }
}

/// Where a tenant's hook time goes, second by second: for its budget
/// (`hook_budget_ms_per_s`) and for the server, which confines a slow
/// tenant to a lane of its own so that it delays only its own calls.
///
/// One per tenant (every version and worker of the tenant charges the
/// same), lock-free: a hook call adds its duration to the current second.
/// Seconds are counted from the tenant's first message, so the budget
/// comes back at the next whole second of that count.
pub struct HookTime {
    born: Instant,
    /// The second (since `born`) that `used_us` counts.
    second: AtomicU64,
    used_us: AtomicU64,
    /// The second before, whole.
    previous_us: AtomicU64,
    /// Calls of the current second that took [`SLOW_CALL`] or more, and
    /// their time.
    slow_calls: AtomicU64,
    slow_us: AtomicU64,
    /// A moving mean of one hook call, in µs (weight 1/8).
    mean_us: AtomicU64,
    /// The tenant is confined until this second (exclusive).
    confined_until: AtomicU64,
}

/// A hook call this long holds a thread that receives everyone's traffic
/// too long (a normal one takes microseconds).
pub const SLOW_CALL: Duration = Duration::from_millis(5);
/// A tenant is confined to a lane of its own when, within one second, at
/// least [`CONFINE_SLOW_CALLS`] of its hook calls took [`SLOW_CALL`] or
/// more and together this long. Time is wall-clock time: a quick hook
/// whose thread was preempted looks slow too, hence several calls and a
/// sum no short stall of a busy machine reaches.
pub const CONFINE_SLOW: Duration = Duration::from_millis(100);
pub const CONFINE_SLOW_CALLS: u64 = 3;
/// Seconds a tenant stays confined after the last sign of slowness.
pub const CONFINE_HOLD_S: u64 = 5;

impl Default for HookTime {
    fn default() -> Self {
        HookTime::new(Instant::now())
    }
}

impl HookTime {
    pub fn new(born: Instant) -> HookTime {
        HookTime {
            born,
            second: AtomicU64::new(0),
            used_us: AtomicU64::new(0),
            previous_us: AtomicU64::new(0),
            slow_calls: AtomicU64::new(0),
            slow_us: AtomicU64::new(0),
            mean_us: AtomicU64::new(0),
            confined_until: AtomicU64::new(0),
        }
    }

    fn second_of(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.born).as_secs()
    }

    /// Moves on to second `now` when it is a new one. Two threads may
    /// race here: one wins and the other's charge may land in either
    /// second, which the budget tolerates.
    fn roll(&self, now: u64) {
        let current = self.second.load(Ordering::Relaxed);
        if now > current
            && self
                .second
                .compare_exchange(current, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let used = self.used_us.swap(0, Ordering::Relaxed);
            self.slow_calls.store(0, Ordering::Relaxed);
            self.slow_us.store(0, Ordering::Relaxed);
            let previous = if now == current + 1 { used } else { 0 };
            self.previous_us.store(previous, Ordering::Relaxed);
        }
    }

    /// Counts one hook call that took `took`, ending at `now`; true when
    /// it confined a tenant that was not confined.
    pub fn charge(&self, now: Instant, took: Duration) -> bool {
        let second = self.second_of(now);
        self.roll(second);
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.used_us.fetch_add(us, Ordering::Relaxed);
        let mean = self.mean_us.load(Ordering::Relaxed);
        self.mean_us.store(
            mean - mean / 8 + us.min(u64::MAX / 8) / 8,
            Ordering::Relaxed,
        );
        if took < SLOW_CALL {
            return false;
        }
        let calls = self.slow_calls.fetch_add(1, Ordering::Relaxed) + 1;
        let slow = self
            .slow_us
            .fetch_add(us, Ordering::Relaxed)
            .saturating_add(us);
        let confine_us = CONFINE_SLOW.as_micros() as u64;
        if calls >= CONFINE_SLOW_CALLS && slow >= confine_us {
            let was = self
                .confined_until
                .swap(second + CONFINE_HOLD_S, Ordering::Relaxed);
            return was <= second;
        }
        false
    }

    /// Whether the tenant's messages belong on a lane of its own now.
    pub fn confined(&self, now: Instant) -> bool {
        self.second_of(now) < self.confined_until.load(Ordering::Relaxed)
    }

    /// Hook time used in the current second.
    pub fn used(&self, now: Instant) -> Duration {
        self.roll(self.second_of(now));
        Duration::from_micros(self.used_us.load(Ordering::Relaxed))
    }

    /// Hook time used in the second before the current one.
    pub fn used_before(&self, now: Instant) -> Duration {
        self.roll(self.second_of(now));
        Duration::from_micros(self.previous_us.load(Ordering::Relaxed))
    }

    /// A moving mean of one hook call.
    pub fn mean(&self) -> Duration {
        Duration::from_micros(self.mean_us.load(Ordering::Relaxed))
    }

    /// When the tenant has used `budget_ms` of hook time in the current
    /// second: how long until the next one (its Retry-After).
    pub fn over_budget(&self, now: Instant, budget_ms: u64) -> Option<Duration> {
        let used = self.used(now);
        if used < Duration::from_millis(budget_ms) {
            return None;
        }
        let into = now.saturating_duration_since(self.born);
        let next = Duration::from_secs(into.as_secs() + 1);
        Some(next.saturating_sub(into))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            crash_loop_failures: 3,
            backoff_ms: 100,
            max_backoff_ms: 300,
            ..Limits::default()
        }
    }

    #[test]
    fn a_crash_loop_suspends_with_doubling_backoff() {
        let h = Health::new(&limits());
        let t0 = Instant::now();
        assert_eq!(h.failed(t0), None);
        assert_eq!(h.failed(t0), None);
        assert_eq!(h.failed(t0), Some(Duration::from_millis(100)));
        assert!(h.suspended(t0).is_some());
        let later = t0 + Duration::from_millis(150);
        assert_eq!(h.suspended(later), None);
        // On probation: one more failure suspends, for twice as long.
        assert_eq!(h.failed(later), Some(Duration::from_millis(200)));
        let later = later + Duration::from_millis(250);
        assert_eq!(h.failed(later), Some(Duration::from_millis(300)), "capped");
        let later = later + Duration::from_millis(350);
        assert_eq!(h.failed(later), Some(Duration::from_millis(300)));
        assert_eq!(h.counts().failures, 6);
    }

    #[test]
    fn a_success_ends_the_probation() {
        let h = Health::new(&limits());
        let t0 = Instant::now();
        for _ in 0..3 {
            h.failed(t0);
        }
        let later = t0 + Duration::from_millis(150);
        h.succeeded();
        assert_eq!(h.failed(later), None, "back to counting failures in a row");
        assert_eq!(h.failed(later), None);
        assert_eq!(
            h.failed(later),
            Some(Duration::from_millis(100)),
            "base again"
        );
        assert_eq!(h.counts().calls, 7);
    }

    #[test]
    fn failures_apart_do_not_suspend() {
        let h = Health::new(&limits());
        let t0 = Instant::now();
        for _ in 0..10 {
            assert_eq!(h.failed(t0), None);
            assert_eq!(h.failed(t0), None);
            h.succeeded();
        }
        assert_eq!(h.suspended(t0), None);
    }

    #[test]
    fn hook_time_counts_by_second_and_confines_the_slow() {
        let t0 = Instant::now();
        let time = HookTime::new(t0);
        let ms = Duration::from_millis;
        assert!(!time.charge(t0, Duration::from_micros(20)));
        assert!(!time.confined(t0));
        assert_eq!(time.over_budget(t0, 1), None);
        // 40 calls of 1 ms: quick ones, however many.
        for _ in 0..40 {
            assert!(!time.charge(t0 + ms(100), ms(1)));
        }
        assert_eq!(time.over_budget(t0 + ms(100), 100), None);
        let left = time.over_budget(t0 + ms(100), 40).expect("40 ms used");
        assert_eq!(left, ms(900), "until the next second");
        // A second later the budget is back; the second before is kept.
        assert_eq!(time.over_budget(t0 + ms(1100), 40), None);
        assert_eq!(
            time.used_before(t0 + ms(1100)),
            Duration::from_micros(40_020)
        );
        assert!(!time.confined(t0 + ms(1100)));
        // Slow calls confine, for CONFINE_HOLD_S seconds: not one (a
        // stall), but three adding up to 100 ms.
        assert!(!time.charge(t0 + ms(1200), ms(40)));
        assert!(!time.charge(t0 + ms(1250), ms(40)));
        assert!(!time.confined(t0 + ms(1250)));
        assert!(time.charge(t0 + ms(1300), ms(40)));
        assert!(!time.charge(t0 + ms(1350), ms(40)), "already confined");
        assert!(time.confined(t0 + ms(1300)));
        assert!(time.confined(t0 + ms(5900)));
        assert!(!time.confined(t0 + ms(6000)));
        // Short stalls of a busy machine do not.
        let time = HookTime::new(t0);
        for _ in 0..10 {
            assert!(!time.charge(t0, ms(6)));
        }
        assert!(!time.confined(t0));
        // A second skipped: nothing was used in it.
        assert_eq!(time.used_before(t0 + ms(3500)), Duration::ZERO);
        assert!(time.mean() > Duration::ZERO);
    }
}
