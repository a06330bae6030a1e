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
}
