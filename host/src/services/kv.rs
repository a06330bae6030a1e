//! A key-value store with expiry, per tenant, in memory (Kamailio's htable).
//! With `[cluster]` the keys are in Redis instead ([`shared::kv`](crate::services::shared::kv)).
//!
//! Each tenant has a store of its own, made on its first key: [`SHARDS`]
//! maps, each behind a lock of its own, chosen by a keyed hash of the key.
//! Two calls meet on a lock only when they are the same tenant's and their
//! keys fall in the same shard: a tenant hammering its keys never holds a
//! lock another tenant needs. The tenants' stores are found in a map read
//! under a shared lock, taken for writing only when a tenant writes its
//! first key and when the purge drops an emptied store.
//!
//! A tenant's keys are bounded by its [`Quota`]: how many keys, and how
//! many bytes they take (key, value and [`ENTRY_OVERHEAD`] each), counted
//! exactly across its shards. Past the quota a write is refused with
//! [`KvError::Quota`] and nothing grows; expired keys count until they are
//! swept (by the purge timer, or by a write that finds its shard full).

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

/// Shards of one tenant's store.
pub const SHARDS: usize = 8;
/// Longest key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 1024;
/// Longest value accepted, in bytes.
pub const MAX_VALUE_LEN: usize = 4096;
/// What a key costs beyond its text, in bytes counted against
/// [`Quota::bytes`]: the map's slot, two string headers and the expiry.
pub const ENTRY_OVERHEAD: usize = 96;

/// How much of the store a tenant may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Keys at most.
    pub keys: usize,
    /// Bytes at most: keys, values and [`ENTRY_OVERHEAD`] per key.
    pub bytes: usize,
}

/// Why a write was refused; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    #[error("kv key of {0} bytes is longer than {MAX_KEY_LEN}")]
    KeyTooLong(usize),
    #[error("kv value of {0} bytes is longer than {MAX_VALUE_LEN}")]
    ValueTooLong(usize),
    #[error("kv quota reached ({keys} keys, {bytes} bytes at most)")]
    Quota { keys: usize, bytes: usize },
    /// `incr` on a value that is not an integer.
    #[error("kv value of {0} is not an integer")]
    NotInteger(String),
    /// The store could not answer (with `[cluster]`: Redis failed);
    /// nothing changed.
    #[error("kv store unavailable: {0}")]
    Unavailable(String),
}

struct Entry {
    value: String,
    expires: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|at| now < at)
    }
}

/// The bytes a key and its value count for.
fn cost(key: &str, value: &str) -> usize {
    key.len() + value.len() + ENTRY_OVERHEAD
}

/// A tenant's keys in one shard.
#[derive(Default)]
struct Table {
    keys: HashMap<String, Entry>,
    /// No key expires before this (None: none expires). It says whether a
    /// sweep could free anything, so that a guest hammering a full store
    /// of live keys costs one comparison per call, not a sweep of the
    /// shard under its lock.
    next_expiry: Option<Instant>,
}

impl Table {
    /// Drops expired keys; what they took is given back to `usage`.
    fn sweep(&mut self, now: Instant, usage: &Usage) {
        let mut freed = (0, 0);
        self.keys.retain(|key, e| {
            let live = e.live(now);
            if !live {
                freed.0 += 1;
                freed.1 += cost(key, &e.value);
            }
            live
        });
        usage.release(freed.0, freed.1);
        self.next_expiry = self.keys.values().filter_map(|e| e.expires).min();
    }

    /// Stores `value` under `key` if the quota has room for the change.
    fn put(
        &mut self,
        usage: &Usage,
        quota: Quota,
        key: &str,
        value: String,
        expires: Option<Instant>,
        now: Instant,
    ) -> Result<(), KvError> {
        let new = cost(key, &value);
        let old = self.keys.get(key).map(|e| cost(key, &e.value));
        let added_keys = usize::from(old.is_none());
        if !usage.reserve(quota, added_keys, new, old.unwrap_or(0)) {
            // Expired keys of this shard may make the room.
            if self.next_expiry.is_none_or(|at| at > now) {
                return Err(quota.exceeded());
            }
            self.sweep(now, usage);
            let old = self.keys.get(key).map(|e| cost(key, &e.value));
            let added_keys = usize::from(old.is_none());
            if !usage.reserve(quota, added_keys, new, old.unwrap_or(0)) {
                return Err(quota.exceeded());
            }
        }
        if let Some(at) = expires {
            self.next_expiry = Some(self.next_expiry.map_or(at, |n| n.min(at)));
        }
        self.keys.insert(key.to_owned(), Entry { value, expires });
        Ok(())
    }
}

impl Quota {
    fn exceeded(self) -> KvError {
        KvError::Quota {
            keys: self.keys,
            bytes: self.bytes,
        }
    }
}

/// What a tenant's keys take, across its shards.
#[derive(Default)]
struct Usage {
    keys: AtomicUsize,
    bytes: AtomicUsize,
    /// Whether the last write was refused for the quota: the warning is
    /// logged when a tenant reaches its quota, not on every refused write.
    full: AtomicBool,
}

impl Usage {
    /// Takes room for a write that adds `keys` keys and replaces `old`
    /// bytes with `new`; false (nothing taken) when the quota has none.
    /// Each counter stays within its bound whatever the other shards do.
    fn reserve(&self, quota: Quota, keys: usize, new: usize, old: usize) -> bool {
        if keys > 0
            && self
                .keys
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n + keys <= quota.keys).then_some(n + keys)
                })
                .is_err()
        {
            return false;
        }
        let grown = self
            .bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                let after = n.saturating_sub(old).saturating_add(new);
                // Shrinking is always allowed, even past a lowered quota.
                (after <= quota.bytes || new <= old).then_some(after)
            });
        if grown.is_err() {
            self.keys.fetch_sub(keys, Ordering::AcqRel);
            return false;
        }
        true
    }

    fn release(&self, keys: usize, bytes: usize) {
        self.keys.fetch_sub(keys, Ordering::AcqRel);
        self.bytes.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// One shard, on a cache line of its own so that threads working on
/// neighbouring shards do not contend for the line holding both locks.
#[derive(Default)]
#[repr(align(64))]
struct Shard(Mutex<Table>);

/// One tenant's keys.
struct Store {
    shards: [Shard; SHARDS],
    usage: Usage,
}

impl Store {
    fn new() -> Store {
        Store {
            shards: Default::default(),
            usage: Usage::default(),
        }
    }
}

/// Every tenant's store.
pub struct Kv {
    tenants: RwLock<HashMap<String, Arc<Store>>>,
    /// Random keys: a guest chooses its keys and must not be able to pile
    /// them onto one shard.
    hasher: RandomState,
}

impl Default for Kv {
    fn default() -> Self {
        Kv {
            tenants: RwLock::new(HashMap::new()),
            hasher: RandomState::new(),
        }
    }
}

/// When a key set now for `ttl_seconds` expires; none: never (until the
/// proxy stops). A TTL of 0 has expired already.
fn expiry(now: Instant, ttl_seconds: Option<u32>) -> Option<Instant> {
    ttl_seconds.map(|ttl| now + Duration::from_secs(u64::from(ttl)))
}

impl Kv {
    /// A tenant's store, if it has written a key.
    fn store(&self, tenant: &str) -> Option<Arc<Store>> {
        self.tenants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(tenant)
            .cloned()
    }

    /// A tenant's store, made on its first write.
    fn store_for_write(&self, tenant: &str) -> Arc<Store> {
        if let Some(store) = self.store(tenant) {
            return store;
        }
        self.tenants
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(tenant.to_owned())
            .or_insert_with(|| Arc::new(Store::new()))
            .clone()
    }

    /// The shard of a key in a tenant's store.
    fn lock<'a>(&self, store: &'a Store, key: &str) -> MutexGuard<'a, Table> {
        let i = (self.hasher.hash_one(key) % SHARDS as u64) as usize;
        lock(&store.shards[i])
    }

    pub fn get(&self, tenant: &str, key: &str, now: Instant) -> Option<String> {
        let store = self.store(tenant)?;
        let table = self.lock(&store, key);
        let entry = table.keys.get(key)?;
        entry.live(now).then(|| entry.value.clone())
    }

    /// Sets a key, within the tenant's quota.
    pub fn set(
        &self,
        tenant: &str,
        quota: Quota,
        key: &str,
        value: &str,
        ttl_seconds: Option<u32>,
        now: Instant,
    ) -> Result<(), KvError> {
        check_key(key)?;
        if value.len() > MAX_VALUE_LEN {
            return Err(KvError::ValueTooLong(value.len()));
        }
        let store = self.store_for_write(tenant);
        let mut table = self.lock(&store, key);
        let done = table.put(
            &store.usage,
            quota,
            key,
            value.to_owned(),
            expiry(now, ttl_seconds),
            now,
        );
        note_quota(tenant, &store.usage, &done);
        done
    }

    pub fn delete(&self, tenant: &str, key: &str, now: Instant) -> bool {
        let Some(store) = self.store(tenant) else {
            return false;
        };
        let mut table = self.lock(&store, key);
        let Some(entry) = table.keys.remove(key) else {
            return false;
        };
        store.usage.release(1, cost(key, &entry.value));
        entry.live(now)
    }

    /// Adds `delta` to an integer value (missing or expired: 0); a new key
    /// gets `ttl_seconds`, an existing one keeps its expiry. A value that
    /// is not an integer is left as it is.
    pub fn incr(
        &self,
        tenant: &str,
        quota: Quota,
        key: &str,
        delta: i64,
        ttl_seconds: Option<u32>,
        now: Instant,
    ) -> Result<i64, KvError> {
        check_key(key)?;
        let store = self.store_for_write(tenant);
        let mut table = self.lock(&store, key);
        let (current, expires) = match table.keys.get(key) {
            Some(e) if e.live(now) => match e.value.trim().parse::<i64>() {
                Ok(n) => (n, e.expires),
                Err(_) => return Err(KvError::NotInteger(format!("{key:?}"))),
            },
            _ => (0, expiry(now, ttl_seconds)),
        };
        let value = current.saturating_add(delta);
        let done = table
            .put(&store.usage, quota, key, value.to_string(), expires, now)
            .map(|()| value);
        note_quota(tenant, &store.usage, &done);
        done
    }

    /// Drops expired keys, and the stores of tenants left without keys
    /// (the purge timer). One shard at a time: hooks wait at most for one
    /// shard's sweep.
    pub fn purge(&self, now: Instant) {
        let stores: Vec<Arc<Store>> = self
            .tenants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for store in &stores {
            for shard in &store.shards {
                lock(shard).sweep(now, &store.usage);
            }
        }
        drop(stores);
        // Only a store nobody holds (a write in flight holds its Arc) and
        // that is empty goes: its tenant's next write makes a new one.
        self.tenants
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, store| {
                Arc::strong_count(store) > 1 || store.usage.keys.load(Ordering::Acquire) > 0
            });
    }

    /// Keys a tenant holds now, expired or not.
    pub fn len(&self, tenant: &str) -> usize {
        self.store(tenant)
            .map_or(0, |s| s.usage.keys.load(Ordering::Acquire))
    }

    /// Bytes a tenant's keys take now, as counted against its quota.
    pub fn bytes(&self, tenant: &str) -> usize {
        self.store(tenant)
            .map_or(0, |s| s.usage.bytes.load(Ordering::Acquire))
    }
}

pub(crate) fn check_key(key: &str) -> Result<(), KvError> {
    if key.len() > MAX_KEY_LEN {
        return Err(KvError::KeyTooLong(key.len()));
    }
    Ok(())
}

/// Warns when a tenant reaches its quota (once, until a write succeeds).
fn note_quota<T>(tenant: &str, usage: &Usage, done: &Result<T, KvError>) {
    match done {
        Err(err @ KvError::Quota { .. }) => {
            if !usage.full.swap(true, Ordering::Relaxed) {
                tracing::warn!(tenant, %err, "kv: writes refused until keys expire or are deleted");
            }
        }
        Ok(_) => {
            if usage.full.load(Ordering::Relaxed) {
                usage.full.store(false, Ordering::Relaxed);
            }
        }
        Err(_) => {}
    }
}

fn lock(shard: &Shard) -> MutexGuard<'_, Table> {
    // A panic while holding a shard leaves a map that is still whole.
    shard.0.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUOTA: Quota = Quota {
        keys: 1000,
        bytes: 1 << 20,
    };

    #[test]
    fn values_expire_and_tenants_are_apart() {
        let kv = Kv::default();
        let t0 = Instant::now();
        assert!(kv.set("a", QUOTA, "k", "v", Some(10), t0).is_ok());
        assert!(kv.set("a", QUOTA, "forever", "x", None, t0).is_ok());
        assert_eq!(kv.get("a", "k", t0).as_deref(), Some("v"));
        assert_eq!(kv.get("b", "k", t0), None);
        let later = t0 + Duration::from_secs(10);
        assert_eq!(kv.get("a", "k", later), None);
        assert_eq!(kv.get("a", "forever", later).as_deref(), Some("x"));
        assert_eq!(kv.incr("a", QUOTA, "n", 2, Some(5), t0), Ok(2));
        assert_eq!(kv.incr("a", QUOTA, "n", -5, Some(5), t0), Ok(-3));
        assert_eq!(
            kv.incr("a", QUOTA, "n", 1, Some(5), t0 + Duration::from_secs(5)),
            Ok(1)
        );
        assert!(
            matches!(
                kv.incr("a", QUOTA, "k", 1, None, t0),
                Err(KvError::NotInteger(_))
            ),
            "a value that is no integer is not counted from 0"
        );
        assert_eq!(kv.get("a", "k", t0).as_deref(), Some("v"), "and stays");
        assert!(kv.set("a", QUOTA, "gone", "x", Some(0), t0).is_ok());
        assert_eq!(kv.get("a", "gone", t0), None, "a TTL of 0 has expired");
        assert!(kv.delete("a", "forever", later));
        assert!(!kv.delete("a", "forever", later));
        assert_eq!(
            kv.set("a", QUOTA, &"k".repeat(MAX_KEY_LEN + 1), "v", None, t0),
            Err(KvError::KeyTooLong(MAX_KEY_LEN + 1))
        );
        assert_eq!(
            kv.set("a", QUOTA, "k", &"v".repeat(MAX_VALUE_LEN + 1), None, t0),
            Err(KvError::ValueTooLong(MAX_VALUE_LEN + 1))
        );
        kv.purge(later);
        assert_eq!(kv.get("a", "k", t0), None);
    }

    /// A tenant's keys stay within its quota of keys, exactly; expired
    /// keys make room; another tenant is not refused for it.
    #[test]
    fn keys_are_bounded_per_tenant() {
        let kv = Kv::default();
        let t0 = Instant::now();
        let kept = (0..2 * QUOTA.keys)
            .filter(|i| {
                kv.set("a", QUOTA, &i.to_string(), "v", Some(10), t0)
                    .is_ok()
            })
            .count();
        assert_eq!(kept, QUOTA.keys);
        assert_eq!(kv.len("a"), QUOTA.keys);
        assert_eq!(
            kv.set("a", QUOTA, "one more", "v", None, t0),
            Err(KvError::Quota {
                keys: QUOTA.keys,
                bytes: QUOTA.bytes
            })
        );
        assert!(kv.incr("a", QUOTA, "one more", 1, None, t0).is_err());
        // A key already there can still change.
        assert!(kv.set("a", QUOTA, "0", "w", Some(10), t0).is_ok());
        assert!(kv.set("b", QUOTA, "k", "v", None, t0).is_ok());
        // Once they expire, their room is free again: the purge sweeps
        // them all, a write sweeps its own shard.
        let later = t0 + Duration::from_secs(10);
        assert!(kv.set("a", QUOTA, "one more", "v", None, later).is_ok());
        kv.purge(later);
        assert_eq!(kv.len("a"), 1);
        assert_eq!(kv.bytes("a"), cost("one more", "v"));
        // Deleting the last key lets the purge drop the tenant's store.
        assert!(kv.delete("a", "one more", later));
        assert_eq!((kv.len("a"), kv.bytes("a")), (0, 0));
        kv.purge(later);
        assert!(kv.store("a").is_none());
        assert!(kv.store("b").is_some());
    }

    /// Big values reach the byte quota before the key quota; shrinking a
    /// value gives its bytes back.
    #[test]
    fn bytes_are_bounded_per_tenant() {
        let kv = Kv::default();
        let t0 = Instant::now();
        let quota = Quota {
            keys: 1000,
            bytes: 64 << 10,
        };
        let big = "x".repeat(MAX_VALUE_LEN);
        let kept = (0..100)
            .filter(|i| kv.set("a", quota, &format!("k{i}"), &big, None, t0).is_ok())
            .count();
        let each = cost("k10", &big);
        assert!(kept >= (64 << 10) / (each + 1) - 1, "{kept}");
        assert!(kv.bytes("a") <= quota.bytes, "{}", kv.bytes("a"));
        assert!(kv.set("a", quota, "k0", "short", None, t0).is_ok());
        assert!(kv.set("a", quota, "k-new", &big, None, t0).is_ok());
        assert!(kv.set("a", quota, "k-new2", &big, None, t0).is_err());
        assert!(kv.bytes("a") <= quota.bytes);
        assert_eq!(kv.bytes("b"), 0);
    }

    /// Counting from many threads at once loses no increment, and the
    /// quota's counts match the keys.
    #[test]
    fn concurrent_increments_add_up() {
        let kv = Kv::default();
        let t0 = Instant::now();
        let quota = Quota {
            keys: 100_000,
            bytes: 64 << 20,
        };
        std::thread::scope(|s| {
            for t in 0..4 {
                let kv = &kv;
                s.spawn(move || {
                    for i in 0..1000 {
                        kv.incr("a", quota, "total", 1, None, t0).expect("room");
                        kv.incr("a", quota, &format!("k{}", i % 50), 1, None, t0)
                            .expect("room");
                        kv.set("a", quota, &format!("t{t}-{i}"), "x", None, t0)
                            .expect("room");
                        kv.set("b", quota, &format!("t{t}-{i}"), "x", None, t0)
                            .expect("room");
                    }
                });
            }
        });
        assert_eq!(kv.get("a", "total", t0).as_deref(), Some("4000"));
        assert_eq!(kv.get("a", "k7", t0).as_deref(), Some("80"));
        assert_eq!(kv.len("a"), 1 + 50 + 4000);
        let bytes = cost("total", "4000")
            + (0..50).map(|i| cost(&format!("k{i}"), "80")).sum::<usize>()
            + (0..4)
                .flat_map(|t| (0..1000).map(move |i| cost(&format!("t{t}-{i}"), "x")))
                .sum::<usize>();
        assert_eq!(kv.bytes("a"), bytes);
        assert_eq!(kv.len("b"), 4000);
    }
}
