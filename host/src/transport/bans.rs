//! The ban list: source addresses whose messages are dropped on arrival,
//! before they are parsed (Kamailio's pike and its `ipban` htable). The
//! flood control bans an address past its limit; a tenant's routing may
//! ban, look up and lift bans through the `ratelimit` WIT interface.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::bounded::Bounded;

/// Addresses banned at once at most; past it, the oldest ban is lifted
/// first. Every ban takes a flood past the limit (or a guest's call), so
/// this is reached only by an attack from very many real addresses.
pub const MAX_BANS: usize = 65_536;
/// The bans are split by address into this many tables, each behind its
/// own lock.
const SHARDS: usize = 16;

/// Who set a ban.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BanOrigin {
    /// The flood control: past `[flood]` limits.
    Flood,
    /// A tenant's routing, through the `ratelimit` interface.
    Tenant(Arc<str>),
}

#[derive(Debug, Clone)]
struct Ban {
    until: Instant,
    origin: BanOrigin,
}

/// The banned addresses, each until its ban ends.
pub struct Bans {
    shards: Box<[Mutex<Bounded<IpAddr, Ban>>]>,
    hasher: RandomState,
    /// Entries in all shards (expired ones included until purged): with
    /// none, a message costs no lock.
    entries: AtomicUsize,
}

impl Default for Bans {
    fn default() -> Self {
        Bans::new(MAX_BANS)
    }
}

impl Bans {
    /// A ban list of at most `max` addresses.
    pub fn new(max: usize) -> Bans {
        let per_shard = max.div_ceil(SHARDS).max(1);
        Bans {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(Bounded::new(per_shard)))
                .collect(),
            hasher: RandomState::new(),
            entries: AtomicUsize::new(0),
        }
    }

    fn shard(&self, ip: IpAddr) -> MutexGuard<'_, Bounded<IpAddr, Ban>> {
        let i = (self.hasher.hash_one(ip) % SHARDS as u64) as usize;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `ip` is banned at `now` (an expired ban is removed).
    pub fn is_banned(&self, ip: IpAddr, now: Instant) -> bool {
        self.remaining(ip, now).is_some()
    }

    /// How long the ban on `ip` lasts still; None when it is not banned.
    pub fn remaining(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        if self.entries.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let ip = ip.to_canonical();
        let mut shard = self.shard(ip);
        let until = shard.get(&ip)?.until;
        if until > now {
            return Some(until - now);
        }
        shard.remove(&ip);
        self.entries.fetch_sub(1, Ordering::Relaxed);
        None
    }

    /// Bans `ip` until `now + duration` (a ban already there lasts until
    /// the later of the two ends, and keeps its origin). Returns whether
    /// a ban started: false when `ip` was banned already.
    pub fn ban(&self, ip: IpAddr, duration: Duration, origin: BanOrigin, now: Instant) -> bool {
        let ip = ip.to_canonical();
        let until = now + duration;
        let mut shard = self.shard(ip);
        if let Some(ban) = shard.get_mut(&ip) {
            if ban.until > now {
                ban.until = ban.until.max(until);
                return false;
            }
            *ban = Ban { until, origin };
            return true;
        }
        if shard.insert(ip, Ban { until, origin }).is_none() {
            self.entries.fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    /// Lifts the ban on `ip` if `origin` set it (any origin when None);
    /// whether one was lifted.
    pub fn unban(&self, ip: IpAddr, origin: Option<&BanOrigin>, now: Instant) -> bool {
        let ip = ip.to_canonical();
        let mut shard = self.shard(ip);
        let Some(ban) = shard.get(&ip) else {
            return false;
        };
        let live = ban.until > now;
        if origin.is_some_and(|o| *o != ban.origin) {
            return false;
        }
        shard.remove(&ip);
        self.entries.fetch_sub(1, Ordering::Relaxed);
        live
    }

    /// Addresses banned at `now`.
    pub fn count(&self, now: Instant) -> usize {
        if self.entries.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        self.shards
            .iter()
            .map(|s| {
                let s = s.lock().unwrap_or_else(|e| e.into_inner());
                s.values().filter(|b| b.until > now).count()
            })
            .sum()
    }

    /// Forgets the bans that ended.
    pub fn purge(&self, now: Instant) {
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            let before = shard.len();
            shard.retain(|_, b| b.until > now);
            self.entries
                .fetch_sub(before - shard.len(), Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn a_ban_lasts_its_time() {
        let bans = Bans::default();
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        assert!(!bans.is_banned(a, t0));
        assert!(bans.ban(a, Duration::from_secs(10), BanOrigin::Flood, t0));
        assert!(!bans.ban(a, Duration::from_secs(5), BanOrigin::Flood, t0));
        assert!(bans.is_banned(a, t0 + Duration::from_secs(9)));
        assert!(bans.is_banned(ip("::ffff:192.0.2.1"), t0), "IPv4-mapped");
        assert_eq!(bans.count(t0), 1);
        assert!(!bans.is_banned(a, t0 + Duration::from_secs(10)));
        assert_eq!(bans.count(t0), 0, "removed once seen expired");
        assert_eq!(bans.entries.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn only_its_origin_lifts_a_ban() {
        let bans = Bans::default();
        let now = Instant::now();
        let acme = BanOrigin::Tenant("acme".into());
        let other = BanOrigin::Tenant("other".into());
        let a = ip("2001:db8::1");
        bans.ban(a, Duration::from_secs(60), acme.clone(), now);
        assert!(!bans.unban(a, Some(&other), now));
        assert!(!bans.unban(a, Some(&BanOrigin::Flood), now));
        assert!(bans.unban(a, Some(&acme), now));
        assert!(!bans.is_banned(a, now));
        bans.ban(a, Duration::from_secs(60), BanOrigin::Flood, now);
        assert!(bans.unban(a, None, now));
    }

    #[test]
    fn bounded_and_purged() {
        let bans = Bans::new(64);
        let now = Instant::now();
        for i in 0..10_000u32 {
            let a = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            bans.ban(
                a,
                Duration::from_secs(1 + u64::from(i % 2)),
                BanOrigin::Flood,
                now,
            );
        }
        let kept = bans.count(now);
        assert!((16..=64).contains(&kept), "{kept}");
        assert_eq!(bans.entries.load(Ordering::Relaxed), kept);
        bans.purge(now + Duration::from_millis(1500));
        let left = bans.count(now);
        assert!((1..kept).contains(&left), "{left} of {kept}");
        assert_eq!(bans.entries.load(Ordering::Relaxed), left);
    }
}
