//! Rate limits by any key a tenant's routing chooses (Kamailio's
//! pipelimit): `check(key, limit, window)` counts one hit of the key and
//! says whether it is within `limit` hits per `window`.
//!
//! Each key is a token bucket: `limit` hits at once, refilled evenly over
//! `window` (so `limit` per `window` sustained). Keys are the tenant's
//! own: two tenants' same key are two buckets. They are kept by a keyed
//! hash (no key text is stored), at most [`MAX_KEYS`] per tenant; past it
//! the tenant's oldest key is forgotten (it starts again with a full
//! bucket), so a guest cannot grow the host's memory. Keys whose bucket
//! is full again are purged.
//!
//! With `[cluster]` the hits are counted in Redis across the nodes
//! ([`crate::services::shared::ratelimit`]); these buckets then serve only while
//! Redis fails.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::transport::bounded::Bounded;
use crate::transport::flood::Bucket;

/// Keys kept per tenant at most (about 40 bytes each).
pub const MAX_KEYS: usize = 16_384;
/// The longest window, in seconds (a day).
pub const MAX_WINDOW_S: u32 = 86_400;
/// Keys are split by their hash into this many tables, each behind its
/// own lock; each holds `MAX_KEYS / SHARDS` of a tenant's keys.
const SHARDS: usize = 16;
const PER_SHARD: usize = MAX_KEYS / SHARDS;

/// One key's bucket and the parameters it was last checked with (for the
/// purge).
struct Limited {
    bucket: Bucket,
    rate: f64,
    capacity: f64,
}

/// Each tenant's keys of one shard.
type Tables = HashMap<String, Bounded<u64, Limited>>;

/// The rate limits of every tenant.
pub struct RateLimits {
    shards: Box<[Mutex<Tables>]>,
    hasher: RandomState,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            shards: (0..SHARDS).map(|_| Mutex::new(Tables::new())).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl RateLimits {
    fn lock(&self, i: usize) -> MutexGuard<'_, Tables> {
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a hit of `tenant`'s `key` against `limit` per
    /// `window_s` seconds (0 counts as 1, past a day as a day): true when
    /// within it (counted), false when past it. A limit of 0 allows
    /// nothing.
    pub fn check(&self, tenant: &str, key: &str, limit: u32, window_s: u32, now: Instant) -> bool {
        if limit == 0 {
            return false;
        }
        let window = Duration::from_secs(u64::from(window_s.clamp(1, MAX_WINDOW_S)));
        let capacity = f64::from(limit);
        let rate = capacity / window.as_secs_f64();
        let hash = self.hasher.hash_one((tenant, key));
        let mut shard = self.lock((hash % SHARDS as u64) as usize);
        if !shard.contains_key(tenant) {
            shard.insert(tenant.to_owned(), Bounded::new(PER_SHARD));
        }
        let Some(table) = shard.get_mut(tenant) else {
            return true;
        };
        if let Some(limited) = table.get_mut(&hash) {
            limited.rate = rate;
            limited.capacity = capacity;
            return limited.bucket.take(rate, capacity, now);
        }
        let mut bucket = Bucket::full(capacity, now);
        let allowed = bucket.take(rate, capacity, now);
        table.insert(
            hash,
            Limited {
                bucket,
                rate,
                capacity,
            },
        );
        allowed
    }

    /// Forgets the keys whose bucket is full again (as good as new), and
    /// the tables of tenants left with none.
    pub fn purge(&self, now: Instant) {
        for i in 0..SHARDS {
            let mut shard = self.lock(i);
            shard.retain(|_, table| {
                table.retain(|_, l| !l.bucket.is_full(l.rate, l.capacity, now));
                !table.is_empty()
            });
        }
    }

    /// Keys kept for `tenant` now.
    pub fn keys(&self, tenant: &str) -> usize {
        (0..SHARDS)
            .map(|i| self.lock(i).get(tenant).map_or(0, Bounded::len))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_per_window() {
        let limits = RateLimits::default();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limits.check("acme", "user:alice", 3, 60, t0));
        }
        assert!(!limits.check("acme", "user:alice", 3, 60, t0));
        // Another key, another tenant: buckets of their own.
        assert!(limits.check("acme", "user:bob", 3, 60, t0));
        for _ in 0..3 {
            assert!(limits.check("other", "user:alice", 3, 60, t0));
        }
        // One hit comes back every 20 s.
        assert!(!limits.check("acme", "user:alice", 3, 60, t0 + Duration::from_secs(19)));
        assert!(limits.check("acme", "user:alice", 3, 60, t0 + Duration::from_secs(21)));
        assert!(!limits.check("acme", "user:alice", 3, 60, t0 + Duration::from_secs(22)));
        assert!(!limits.check("acme", "k", 0, 60, t0), "a limit of 0");
        assert!(limits.check("acme", "w", 1, 0, t0), "a window of 0 is 1 s");
        assert!(limits.check("acme", "w", 1, 0, t0 + Duration::from_millis(1001)));
    }

    #[test]
    fn a_tenant_cannot_grow_the_table() {
        let limits = RateLimits::default();
        let now = Instant::now();
        for i in 0..100_000 {
            limits.check("greedy", &format!("key{i}"), 10, 60, now);
        }
        assert!(limits.keys("greedy") <= MAX_KEYS);
        assert!(limits.keys("greedy") > MAX_KEYS / 2);
        limits.check("modest", "k", 10, 60, now);
        assert_eq!(limits.keys("modest"), 1, "others keep their keys");
        limits.purge(now + Duration::from_secs(7));
        assert_eq!(limits.keys("greedy"), 0, "full again: purged");
        assert!(limits.lock(0).is_empty() || limits.keys("greedy") == 0);
    }
}
