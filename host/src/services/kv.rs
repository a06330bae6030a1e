//! A key-value store with expiry, per tenant, in memory (Kamailio's htable).
//!
//! Hooks on every receiving thread use it, so the keys are split in
//! [`SHARDS`] by a keyed hash of tenant and key, each shard behind a lock
//! of its own: two calls meet on a lock only when their keys fall in the
//! same shard, and one tenant's keys spread over all of them.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Keys kept per tenant at most; past it, expired keys are dropped and then
/// new keys are refused (a guest cannot grow the host without bound). The
/// bound holds per shard (`MAX_KEYS / SHARDS` of a tenant's keys in each),
/// so a tenant near it may see a key refused a little before the total.
pub const MAX_KEYS: usize = 100_000;

/// Shards of the store.
pub const SHARDS: usize = 32;
const PER_SHARD: usize = MAX_KEYS / SHARDS;
/// Longest key and value accepted, in bytes.
pub const MAX_LEN: usize = 4096;

struct Entry {
    value: String,
    expires: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|at| now < at)
    }
}

/// A tenant's keys in one shard.
#[derive(Default)]
struct Table {
    keys: HashMap<String, Entry>,
    /// No key expires before this (None: none expires). When the table is
    /// full it says whether a sweep could free anything, so that a guest
    /// hammering a full table of live keys costs one comparison per call,
    /// not a sweep of thousands under the shard's lock.
    next_expiry: Option<Instant>,
}

impl Table {
    fn insert(&mut self, key: &str, entry: Entry) {
        if let Some(at) = entry.expires {
            self.next_expiry = Some(self.next_expiry.map_or(at, |n| n.min(at)));
        }
        self.keys.insert(key.to_owned(), entry);
    }

    /// Drops expired keys.
    fn sweep(&mut self, now: Instant) {
        self.keys.retain(|_, e| e.live(now));
        self.next_expiry = self.keys.values().filter_map(|e| e.expires).min();
    }

    /// Whether `key` fits: present already, or room left after dropping
    /// expired keys.
    fn make_room(&mut self, key: &str, now: Instant) -> bool {
        if self.keys.len() < PER_SHARD || self.keys.contains_key(key) {
            return true;
        }
        if self.next_expiry.is_some_and(|at| at <= now) {
            self.sweep(now);
        }
        self.keys.len() < PER_SHARD
    }
}

/// Each tenant's keys of one shard.
type Tables = HashMap<String, Table>;

/// One shard, on a cache line of its own so that threads working on
/// neighbouring shards do not contend for the line holding both locks.
#[derive(Default)]
#[repr(align(64))]
struct Shard(Mutex<Tables>);

/// Every tenant's table.
pub struct Kv {
    shards: Box<[Shard]>,
    /// Random keys: a guest chooses its keys and must not be able to pile
    /// them (and other tenants' calls) onto one shard.
    hasher: RandomState,
}

impl Default for Kv {
    fn default() -> Self {
        Kv {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            hasher: RandomState::new(),
        }
    }
}

fn expiry(now: Instant, ttl_seconds: u32) -> Option<Instant> {
    (ttl_seconds > 0).then(|| now + Duration::from_secs(u64::from(ttl_seconds)))
}

impl Kv {
    /// The shard of a tenant's key.
    fn lock(&self, tenant: &str, key: &str) -> MutexGuard<'_, Tables> {
        let i = (self.hasher.hash_one((tenant, key)) % SHARDS as u64) as usize;
        lock(&self.shards[i])
    }

    pub fn get(&self, tenant: &str, key: &str, now: Instant) -> Option<String> {
        let tables = self.lock(tenant, key);
        let entry = tables.get(tenant)?.keys.get(key)?;
        entry.live(now).then(|| entry.value.clone())
    }

    /// Sets a key; false when refused (too long, or the table is full).
    pub fn set(
        &self,
        tenant: &str,
        key: &str,
        value: &str,
        ttl_seconds: u32,
        now: Instant,
    ) -> bool {
        if key.len() > MAX_LEN || value.len() > MAX_LEN {
            return false;
        }
        let mut tables = self.lock(tenant, key);
        let table = table_of(&mut tables, tenant);
        if !table.make_room(key, now) {
            return false;
        }
        table.insert(
            key,
            Entry {
                value: value.to_owned(),
                expires: expiry(now, ttl_seconds),
            },
        );
        true
    }

    pub fn delete(&self, tenant: &str, key: &str, now: Instant) -> bool {
        let mut tables = self.lock(tenant, key);
        tables
            .get_mut(tenant)
            .and_then(|t| t.keys.remove(key))
            .is_some_and(|e| e.live(now))
    }

    /// Adds `delta` to an integer value (missing, expired or not a number:
    /// 0); a new key gets `ttl_seconds`, an existing one keeps its expiry.
    /// None when the key cannot be stored.
    pub fn incr(
        &self,
        tenant: &str,
        key: &str,
        delta: i64,
        ttl_seconds: u32,
        now: Instant,
    ) -> Option<i64> {
        if key.len() > MAX_LEN {
            return None;
        }
        let mut tables = self.lock(tenant, key);
        let table = table_of(&mut tables, tenant);
        let (current, expires) = match table.keys.get(key) {
            Some(e) if e.live(now) => (e.value.parse::<i64>().unwrap_or(0), e.expires),
            _ => (0, expiry(now, ttl_seconds)),
        };
        if !table.make_room(key, now) {
            return None;
        }
        let value = current.saturating_add(delta);
        table.insert(
            key,
            Entry {
                value: value.to_string(),
                expires,
            },
        );
        Some(value)
    }

    /// Drops expired keys, and tables left empty (the purge timer). One
    /// shard at a time: hooks wait at most for one shard's sweep.
    pub fn purge(&self, now: Instant) {
        for shard in self.shards.iter() {
            let mut tables = lock(shard);
            for table in tables.values_mut() {
                table.sweep(now);
            }
            tables.retain(|_, t| !t.keys.is_empty());
        }
    }

    /// Keys a tenant holds now, expired or not.
    pub fn len(&self, tenant: &str) -> usize {
        self.shards
            .iter()
            .map(|s| lock(s).get(tenant).map_or(0, |t| t.keys.len()))
            .sum()
    }
}

fn lock(shard: &Shard) -> MutexGuard<'_, Tables> {
    // A panic while holding a shard leaves maps that are still whole.
    shard.0.lock().unwrap_or_else(|e| e.into_inner())
}

/// A tenant's table in a shard, made on its first key.
fn table_of<'a>(tables: &'a mut Tables, tenant: &str) -> &'a mut Table {
    tables.entry(tenant.to_owned()).or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_expire_and_tenants_are_apart() {
        let kv = Kv::default();
        let t0 = Instant::now();
        assert!(kv.set("a", "k", "v", 10, t0));
        assert!(kv.set("a", "forever", "x", 0, t0));
        assert_eq!(kv.get("a", "k", t0).as_deref(), Some("v"));
        assert_eq!(kv.get("b", "k", t0), None);
        let later = t0 + Duration::from_secs(10);
        assert_eq!(kv.get("a", "k", later), None);
        assert_eq!(kv.get("a", "forever", later).as_deref(), Some("x"));
        assert_eq!(kv.incr("a", "n", 2, 5, t0), Some(2));
        assert_eq!(kv.incr("a", "n", -5, 5, t0), Some(-3));
        assert_eq!(
            kv.incr("a", "n", 1, 5, t0 + Duration::from_secs(5)),
            Some(1)
        );
        assert!(kv.delete("a", "forever", later));
        assert!(!kv.delete("a", "forever", later));
        assert!(!kv.set("a", &"k".repeat(MAX_LEN + 1), "v", 0, t0));
        kv.purge(later);
        assert_eq!(kv.get("a", "k", t0), None);
    }

    /// A tenant's keys stay bounded, expired keys make room, and another
    /// tenant is not refused for it.
    #[test]
    fn tables_are_bounded_per_tenant() {
        let kv = Kv::default();
        let t0 = Instant::now();
        let mut kept = 0;
        for i in 0..2 * MAX_KEYS {
            if kv.set("a", &i.to_string(), "v", 10, t0) {
                kept += 1;
            }
        }
        // Every shard is full: exactly the bound, no more.
        assert_eq!(kept, MAX_KEYS);
        assert_eq!(kv.len("a"), MAX_KEYS);
        assert!(!kv.set("a", "one more", "v", 0, t0));
        assert_eq!(kv.incr("a", "one more", 1, 0, t0), None);
        // A key already there can still change.
        assert!(kv.set("a", "0", "w", 10, t0));
        assert!(kv.set("b", "k", "v", 0, t0));
        // Once they expire, their room is free again.
        let later = t0 + Duration::from_secs(10);
        assert!(kv.set("a", "one more", "v", 0, later));
        kv.purge(later);
        assert_eq!(kv.len("a"), 1);
    }

    /// Counting from many threads at once loses no increment.
    #[test]
    fn concurrent_increments_add_up() {
        let kv = Kv::default();
        let t0 = Instant::now();
        std::thread::scope(|s| {
            for t in 0..4 {
                let kv = &kv;
                s.spawn(move || {
                    for i in 0..1000 {
                        kv.incr("a", "total", 1, 0, t0);
                        kv.incr("a", &format!("k{}", i % 50), 1, 0, t0);
                        kv.set("a", &format!("t{t}-{i}"), "x", 0, t0);
                    }
                });
            }
        });
        assert_eq!(kv.get("a", "total", t0).as_deref(), Some("4000"));
        assert_eq!(kv.get("a", "k7", t0).as_deref(), Some("80"));
        assert_eq!(kv.len("a"), 1 + 50 + 4000);
    }
}
