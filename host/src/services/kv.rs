//! A key-value store with expiry, per tenant, in memory (Kamailio's htable).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys kept per tenant at most; past it, expired keys are dropped and then
/// new keys are refused (a guest cannot grow the host without bound).
pub const MAX_KEYS: usize = 100_000;
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

/// Every tenant's table.
#[derive(Default)]
pub struct Kv {
    tables: Mutex<HashMap<String, HashMap<String, Entry>>>,
}

fn expiry(now: Instant, ttl_seconds: u32) -> Option<Instant> {
    (ttl_seconds > 0).then(|| now + Duration::from_secs(u64::from(ttl_seconds)))
}

impl Kv {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<String, Entry>>> {
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, tenant: &str, key: &str, now: Instant) -> Option<String> {
        let tables = self.lock();
        let entry = tables.get(tenant)?.get(key)?;
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
        let mut tables = self.lock();
        let table = tables.entry(tenant.to_owned()).or_default();
        if !make_room(table, key, now) {
            return false;
        }
        table.insert(
            key.to_owned(),
            Entry {
                value: value.to_owned(),
                expires: expiry(now, ttl_seconds),
            },
        );
        true
    }

    pub fn delete(&self, tenant: &str, key: &str, now: Instant) -> bool {
        let mut tables = self.lock();
        tables
            .get_mut(tenant)
            .and_then(|t| t.remove(key))
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
        let mut tables = self.lock();
        let table = tables.entry(tenant.to_owned()).or_default();
        let (current, expires) = match table.get(key) {
            Some(e) if e.live(now) => (e.value.parse::<i64>().unwrap_or(0), e.expires),
            _ => (0, expiry(now, ttl_seconds)),
        };
        if !make_room(table, key, now) {
            return None;
        }
        let value = current.saturating_add(delta);
        table.insert(
            key.to_owned(),
            Entry {
                value: value.to_string(),
                expires,
            },
        );
        Some(value)
    }

    /// Drops expired keys (the purge timer).
    pub fn purge(&self, now: Instant) {
        for table in self.lock().values_mut() {
            table.retain(|_, e| e.live(now));
        }
    }
}

/// Whether `key` fits: present already, or room left after dropping expired keys.
fn make_room(table: &mut HashMap<String, Entry>, key: &str, now: Instant) -> bool {
    if table.contains_key(key) || table.len() < MAX_KEYS {
        return true;
    }
    table.retain(|_, e| e.live(now));
    table.len() < MAX_KEYS
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
}
