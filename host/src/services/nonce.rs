//! Digest nonces: issued by the host, valid for a while, and each
//! nonce-count accepted once (RFC 7616 §3.3, §5.12: replay protection).
//!
//! Every receiving thread issues and checks nonces inside its hooks, so
//! the table is split in [`SHARDS`] by a keyed hash of the nonce, each
//! behind a lock of its own: two threads meet on a lock only when their
//! nonces fall in the same shard.
//!
//! With `[cluster]` a nonce is issued into Redis (`wisp:nonce:{nonce}`,
//! `"{expiry unix ms}:{last nonce-count}"`, kept for its lifetime and the
//! stale grace), so that a challenge from one node is answered at another;
//! using a nonce-count is one script, atomic across nodes. The expiry is
//! the issuing node's wall clock: the nodes' clocks must agree (NTP). While
//! Redis is away, nonces are issued and checked in this node's table as on
//! a node alone: a client that answers the node that challenged it still
//! authenticates; its answer at another node is challenged again.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::cluster::Cluster;
use crate::transaction::hash::KeyedState;

/// How long a nonce is accepted by default (Kamailio's `nonce_expire`).
pub const NONCE_LIFETIME: Duration = Duration::from_secs(30);

/// How long an expired nonce is still recognised, so that a client using
/// it is told `stale=true` (retry with the new nonce, the password was
/// right) rather than challenged as if it had never authenticated.
pub const STALE_GRACE: Duration = Duration::from_secs(3600);

/// Nonces remembered at most; past it the oldest issued is forgotten (a
/// client with a forgotten nonce is challenged again). Those are the
/// expired ones first when every tenant's nonces live as long.
const MAX_NONCES: usize = 100_000;

/// Shards of the table; each remembers `MAX_NONCES / SHARDS` nonces, and
/// the one forgotten is the oldest of its shard.
pub const SHARDS: usize = 32;
const PER_SHARD: usize = MAX_NONCES / SHARDS;

/// What the store says about a nonce and nonce-count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    Fresh,
    /// Issued by us but past its lifetime: challenge with stale=true.
    Stale,
    /// Never issued (or forgotten, e.g. across a restart).
    Unknown,
    /// The nonce-count was already used, or the nonce without qop was.
    Replayed,
}

struct Issued {
    expires: Instant,
    /// Highest nonce-count seen; 0 before any use.
    last_nc: u32,
}

/// The nonces of one shard, and the order they were issued in, so that
/// forgetting the oldest of a full shard is one step, not a sweep of
/// thousands under the lock (a flood of challenges fills the table).
#[derive(Default)]
struct Table {
    /// Keyed by what clients present: foldhash with a random seed.
    issued: HashMap<Arc<str>, Issued, KeyedState>,
    /// The keys of `issued`, oldest first.
    order: VecDeque<Arc<str>>,
}

/// One shard, on a cache line of its own so that threads working on
/// neighbouring shards do not contend for the line holding both locks.
#[derive(Default)]
#[repr(align(64))]
struct Shard(Mutex<Table>);

/// The nonces issued by this process, shared by every worker.
pub struct Nonces {
    shards: Box<[Shard]>,
    /// Keyed with random keys: nonces are random, but a client chooses
    /// what it presents, and must not steer lookups to one shard.
    hasher: KeyedState,
    /// With `[cluster]`: where nonces are issued and used.
    cluster: OnceLock<Arc<Cluster>>,
}

impl Default for Nonces {
    fn default() -> Self {
        Nonces {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            hasher: KeyedState::default(),
            cluster: OnceLock::new(),
        }
    }
}

/// Uses a nonce-count of a nonce in Redis. KEYS: the nonce. ARGV: now
/// (unix ms), the nonce-count. Returns 1 fresh, 0 replayed, -1 stale,
/// -2 unknown.
const CONSUME: &str = r"
local v = redis.call('GET', KEYS[1])
if v == false then return -2 end
local exp, nc = string.match(v, '^(%d+):(%d+)$')
if exp == nil then return -2 end
if tonumber(ARGV[1]) >= tonumber(exp) then return -1 end
if tonumber(ARGV[2]) <= tonumber(nc) then return 0 end
redis.call('SET', KEYS[1], exp .. ':' .. ARGV[2], 'KEEPTTL')
return 1
";

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn redis_key(nonce: &str) -> String {
    format!("wisp:nonce:{nonce}")
}

impl Nonces {
    /// Issues and checks nonces in the cluster's Redis from now on.
    pub fn join(&self, cluster: Arc<Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    /// Issues `nonce` in Redis; false when Redis cannot have it.
    fn issue_shared(&self, cluster: &Cluster, nonce: &str, lifetime: Duration) -> bool {
        let expires = unix_ms().saturating_add(u64::try_from(lifetime.as_millis()).unwrap_or(0));
        let keep = lifetime + STALE_GRACE;
        let mut set = redis::cmd("SET");
        set.arg(redis_key(nonce))
            .arg(format!("{expires}:0"))
            .arg("PX")
            .arg(u64::try_from(keep.as_millis()).unwrap_or(u64::MAX));
        match cluster.query::<()>(set) {
            Ok(()) => true,
            Err(err) => {
                tracing::debug!(%err, "nonce issued on this node only");
                false
            }
        }
    }

    /// What Redis says of `nonce` (peek: `nc` None; use: `Some`).
    fn check_shared(&self, cluster: &Cluster, nonce: &str, nc: Option<u32>) -> NonceCheck {
        // Only nonces of ours have this shape: nothing else reaches Redis.
        if nonce.len() != 32 || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
            return NonceCheck::Unknown;
        }
        let now = unix_ms();
        let Some(nc) = nc else {
            let got: Result<Option<String>, _> = cluster.query(redis::Cmd::get(redis_key(nonce)));
            let expires = got
                .ok()
                .flatten()
                .and_then(|v| v.split_once(':').and_then(|(e, _)| e.parse::<u64>().ok()));
            return match expires {
                None => NonceCheck::Unknown,
                Some(e) if now >= e => NonceCheck::Stale,
                Some(_) => NonceCheck::Fresh,
            };
        };
        let mut consume = redis::cmd("EVAL");
        consume
            .arg(CONSUME)
            .arg(1)
            .arg(redis_key(nonce))
            .arg(now)
            .arg(nc);
        match cluster.query::<i64>(consume) {
            Ok(1) => NonceCheck::Fresh,
            Ok(0) => NonceCheck::Replayed,
            Ok(-1) => NonceCheck::Stale,
            Ok(_) => NonceCheck::Unknown,
            Err(err) => {
                tracing::debug!(%err, "nonce not checked in the cluster");
                NonceCheck::Unknown
            }
        }
    }

    fn lock(&self, nonce: &str) -> MutexGuard<'_, Table> {
        let i = (self.hasher.hash_one(nonce) % SHARDS as u64) as usize;
        lock(&self.shards[i])
    }

    /// A new nonce, good for `lifetime`: 128 random bits, hex.
    pub fn issue(&self, now: Instant, lifetime: Duration) -> String {
        let mut bytes = [0u8; 16];
        crate::random::fill(&mut bytes);
        let nonce = crate::sip::write::hex(&bytes);
        if let Some(cluster) = self.cluster.get() {
            if self.issue_shared(cluster, &nonce, lifetime) {
                return nonce;
            }
        }
        let key: Arc<str> = Arc::from(nonce.as_str());
        let mut table = self.lock(&nonce);
        while table.issued.len() >= PER_SHARD {
            let Some(oldest) = table.order.pop_front() else {
                break;
            };
            table.issued.remove(&oldest);
        }
        table.order.push_back(key.clone());
        table.issued.insert(
            key,
            Issued {
                expires: now + lifetime,
                last_nc: 0,
            },
        );
        nonce
    }

    /// Checks a nonce without using it up.
    pub fn peek(&self, nonce: &str, now: Instant) -> NonceCheck {
        let local = match self.lock(nonce).issued.get(nonce) {
            None => NonceCheck::Unknown,
            Some(i) if now >= i.expires => NonceCheck::Stale,
            Some(_) => NonceCheck::Fresh,
        };
        match (local, self.cluster.get()) {
            (NonceCheck::Unknown, Some(cluster)) => self.check_shared(cluster, nonce, None),
            _ => local,
        }
    }

    /// Uses a nonce with nonce-count `nc` (None without qop, where a
    /// nonce is good once). Call only once the digest was verified, so
    /// that a forged request cannot burn a client's nonce-count.
    pub fn consume(&self, nonce: &str, nc: Option<u32>, now: Instant) -> NonceCheck {
        let mut table = self.lock(nonce);
        let Some(entry) = table.issued.get_mut(nonce) else {
            drop(table);
            return match self.cluster.get() {
                Some(cluster) => self.check_shared(cluster, nonce, Some(nc.unwrap_or(1).max(1))),
                None => NonceCheck::Unknown,
            };
        };
        if now >= entry.expires {
            return NonceCheck::Stale;
        }
        let nc = nc.unwrap_or(1).max(1);
        if nc <= entry.last_nc {
            return NonceCheck::Replayed;
        }
        entry.last_nc = nc;
        NonceCheck::Fresh
    }

    /// Forgets nonces expired for longer than [`STALE_GRACE`] (the purge timer).
    /// One shard at a time: hooks wait at most for one shard's sweep.
    pub fn purge(&self, now: Instant) {
        for shard in self.shards.iter() {
            let table = &mut *lock(shard);
            table.issued.retain(|_, i| now < i.expires + STALE_GRACE);
            let issued = &table.issued;
            table.order.retain(|n| issued.contains_key(n));
        }
    }

    /// Nonces remembered now.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).issued.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn lock(shard: &Shard) -> MutexGuard<'_, Table> {
    // A panic while holding a shard leaves a table that is still whole.
    shard.0.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_used_once_and_nonces_expire() {
        let nonces = Nonces::default();
        let t0 = Instant::now();
        let n = nonces.issue(t0, NONCE_LIFETIME);
        assert_eq!(n.len(), 32);
        assert_ne!(n, nonces.issue(t0, NONCE_LIFETIME));
        assert_eq!(nonces.peek(&n, t0), NonceCheck::Fresh);
        assert_eq!(nonces.consume(&n, Some(1), t0), NonceCheck::Fresh);
        assert_eq!(nonces.consume(&n, Some(1), t0), NonceCheck::Replayed);
        assert_eq!(nonces.consume(&n, Some(3), t0), NonceCheck::Fresh);
        assert_eq!(nonces.consume(&n, Some(2), t0), NonceCheck::Replayed);
        let later = t0 + NONCE_LIFETIME;
        assert_eq!(nonces.peek(&n, later), NonceCheck::Stale);
        assert_eq!(nonces.consume(&n, Some(4), later), NonceCheck::Stale);
        // Still known as stale after a purge, until the grace period ends.
        nonces.purge(later);
        assert_eq!(nonces.peek(&n, later), NonceCheck::Stale);
        let much_later = later + STALE_GRACE;
        nonces.purge(much_later);
        assert_eq!(nonces.peek(&n, much_later), NonceCheck::Unknown);
        assert_eq!(nonces.peek("deadbeef", t0), NonceCheck::Unknown);
    }

    #[test]
    fn without_qop_a_nonce_is_good_once() {
        let nonces = Nonces::default();
        let t0 = Instant::now();
        let n = nonces.issue(t0, Duration::from_secs(5));
        assert_eq!(nonces.consume(&n, None, t0), NonceCheck::Fresh);
        assert_eq!(nonces.consume(&n, None, t0), NonceCheck::Replayed);
        assert_eq!(
            nonces.peek(&n, t0 + Duration::from_secs(5)),
            NonceCheck::Stale
        );
    }

    /// The table stays bounded: past its size the oldest of a shard is
    /// forgotten (and is unknown after), the newest are kept.
    #[test]
    fn memory_is_bounded_and_the_oldest_go_first() {
        let nonces = Nonces::default();
        let t0 = Instant::now();
        let first = nonces.issue(t0, NONCE_LIFETIME);
        let mut last = String::new();
        // Twice the bound: every shard fills, and `first` is the oldest
        // of its shard.
        for i in 1..2 * MAX_NONCES as u64 {
            last = nonces.issue(t0 + Duration::from_micros(i), NONCE_LIFETIME);
        }
        assert_eq!(nonces.len(), MAX_NONCES);
        assert_eq!(nonces.peek(&first, t0), NonceCheck::Unknown);
        assert_eq!(nonces.peek(&last, t0), NonceCheck::Fresh);
        nonces.purge(t0 + NONCE_LIFETIME + STALE_GRACE + Duration::from_secs(1000));
        assert!(nonces.is_empty());
    }

    /// Threads issuing and using nonces at once each see only their own.
    #[test]
    fn threads_use_their_nonces_at_once() {
        let nonces = Nonces::default();
        let t0 = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..500 {
                        let n = nonces.issue(t0, NONCE_LIFETIME);
                        assert_eq!(nonces.consume(&n, Some(1), t0), NonceCheck::Fresh);
                        assert_eq!(nonces.consume(&n, Some(1), t0), NonceCheck::Replayed);
                    }
                });
            }
        });
        assert_eq!(nonces.len(), 2000);
    }
}
