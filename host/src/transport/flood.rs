//! `[flood]`: per-source limits before any hook (Kamailio's pike).
//!
//! Every request from a source that is not trusted takes a token from its
//! address's bucket, before it is parsed: `requests_per_s` tokens a second
//! up to `burst`. A request finding the bucket empty is dropped and its
//! address banned for `ban_s` ([`super::bans`]); a banned address's
//! messages, requests and responses, are dropped on arrival. The table of
//! addresses is bounded (`max_tracked`, the oldest forgotten first), so
//! spoofed sources cannot grow it.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;
use serde::Deserialize;

use super::bans::{BanOrigin, Bans};
use super::bounded::Bounded;
use super::trusted::Trusted;
use super::Inbound;

/// The tracked addresses are split into this many tables, each behind its
/// own lock.
const SHARDS: usize = 16;

/// The `[flood]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FloodConfig {
    /// Whether requests are counted per source (bans set by routing apply
    /// either way).
    pub enabled: bool,
    /// Requests a second one address may send, sustained.
    pub requests_per_s: u32,
    /// Requests one address may send at once beyond that (the bucket).
    pub burst: u32,
    /// How long an address past the limit is banned, in seconds.
    pub ban_s: u32,
    /// Addresses counted at once at most; past it, the one seen first
    /// is forgotten.
    pub max_tracked: usize,
}

impl Default for FloodConfig {
    /// A NATed office of a few hundred phones registering (with digest
    /// authentication), keeping NAT bindings alive and calling stays well
    /// below 50 requests a second, and its boot storm within the 500 of
    /// the burst; scanners and crackers (SIPVicious sends 150 to 200 a
    /// second, floods thousands) are banned within seconds.
    fn default() -> Self {
        FloodConfig {
            enabled: true,
            requests_per_s: 50,
            burst: 500,
            ban_s: 300,
            max_tracked: 65_536,
        }
    }
}

impl FloodConfig {
    /// What serde cannot check; the error names the field.
    pub fn check(&self) -> Result<(), String> {
        let positive = [
            ("requests_per_s", u64::from(self.requests_per_s)),
            ("burst", u64::from(self.burst)),
            ("ban_s", u64::from(self.ban_s)),
            ("max_tracked", self.max_tracked as u64),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("[flood] {name} must be above 0"));
        }
        if self.max_tracked > 16_777_216 {
            return Err("[flood] max_tracked may be 16777216 at most".into());
        }
        Ok(())
    }

    pub fn ban(&self) -> Duration {
        Duration::from_secs(u64::from(self.ban_s))
    }
}

/// A token bucket: `rate` tokens a second, at most `capacity`.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    pub fn full(capacity: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: capacity,
            at: now,
        }
    }

    /// Takes a token if there is one (refilled up to `now` first).
    pub fn take(&mut self, rate: f64, capacity: f64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(capacity);
        self.at = self.at.max(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether it is full again at `now` (as good as forgotten).
    pub fn is_full(&self, rate: f64, capacity: f64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens + elapsed * rate >= capacity
    }
}

/// The settings in force: `[flood]` and `trusted`.
struct Settings {
    config: FloodConfig,
    trusted: Trusted,
}

/// Why a message was dropped on arrival.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByLabel {
    by: &'static str,
}

/// The flood control of the process: trusted sources, the buckets of the
/// others, and the ban list.
pub struct Flood {
    settings: ArcSwap<Settings>,
    shards: Box<[Mutex<Bounded<IpAddr, Bucket>>]>,
    hasher: RandomState,
    bans: Arc<Bans>,
    dropped: Family<ReasonLabel, Counter>,
    dropped_limit: Counter,
    dropped_banned: Counter,
    bans_started: Family<ByLabel, Counter>,
}

impl Default for Flood {
    fn default() -> Self {
        Flood::new(FloodConfig::default(), Trusted::default())
    }
}

impl Flood {
    pub fn new(config: FloodConfig, trusted: Trusted) -> Flood {
        let dropped = Family::<ReasonLabel, Counter>::default();
        let dropped_limit = dropped
            .get_or_create(&ReasonLabel { reason: "limit" })
            .clone();
        let dropped_banned = dropped
            .get_or_create(&ReasonLabel { reason: "banned" })
            .clone();
        let flood = Flood {
            settings: ArcSwap::from_pointee(Settings {
                config: FloodConfig::default(),
                trusted: Trusted::default(),
            }),
            shards: (0..SHARDS).map(|_| Mutex::new(Bounded::new(1))).collect(),
            hasher: RandomState::new(),
            bans: Arc::new(Bans::default()),
            dropped_limit,
            dropped_banned,
            dropped,
            bans_started: Family::default(),
        };
        flood.configure(config, trusted);
        flood
    }

    /// Puts `config` and `trusted` in force (the addresses counted so far
    /// are forgotten; bans stay).
    pub fn configure(&self, config: FloodConfig, trusted: Trusted) {
        let per_shard = config.max_tracked.div_ceil(SHARDS).max(1);
        for shard in self.shards.iter() {
            *shard.lock().unwrap_or_else(|e| e.into_inner()) = Bounded::new(per_shard);
        }
        self.settings.store(Arc::new(Settings { config, trusted }));
    }

    /// Adds the flood metrics to what is rendered.
    pub fn register(self: &Arc<Self>, registry: &mut Registry) {
        registry.register(
            "flood_dropped",
            "Messages dropped on arrival, before parsing: limit (a request past [flood] requests_per_s and burst, which starts a ban), banned (from a banned address)",
            self.dropped.clone(),
        );
        registry.register(
            "flood_bans",
            "Bans started, by who set them: flood (past [flood] limits), guest (a tenant's routing, ratelimit.ban)",
            self.bans_started.clone(),
        );
        registry.register(
            "flood_banned",
            "Addresses banned now",
            Gauged(self.clone(), Figure::Banned),
        );
        registry.register(
            "flood_tracked",
            "Addresses whose requests are counted now (at most [flood] max_tracked)",
            Gauged(self.clone(), Figure::Tracked),
        );
    }

    /// Decides on a message as it arrives, before it is parsed: None when
    /// it is dropped, else whether its source is trusted. Requests (not
    /// responses) of untrusted sources are counted.
    pub fn admit(&self, inbound: &Inbound) -> Option<bool> {
        let request = !inbound.data.starts_with(b"SIP/");
        self.admit_at(inbound.remote.ip(), request, Instant::now())
    }

    fn admit_at(&self, ip: IpAddr, request: bool, now: Instant) -> Option<bool> {
        let settings = self.settings.load();
        let ip = ip.to_canonical();
        if settings.trusted.contains(ip) {
            return Some(true);
        }
        if self.bans.is_banned(ip, now) {
            self.dropped_banned.inc();
            return None;
        }
        let config = &settings.config;
        if !config.enabled || !request {
            return Some(false);
        }
        let (rate, burst) = (f64::from(config.requests_per_s), f64::from(config.burst));
        let started = {
            let mut shard = self.shard(ip);
            match shard.get_mut(&ip).map(|b| b.take(rate, burst, now)) {
                Some(true) => return Some(false),
                Some(false) => {
                    // Banned from now on, before the bucket goes (under
                    // its lock: another thread cannot start afresh in
                    // between).
                    let started = self.bans.ban(ip, config.ban(), BanOrigin::Flood, now);
                    shard.remove(&ip);
                    started
                }
                None => {
                    let mut bucket = Bucket::full(burst, now);
                    if bucket.take(rate, burst, now) {
                        shard.insert(ip, bucket);
                        return Some(false);
                    }
                    self.bans.ban(ip, config.ban(), BanOrigin::Flood, now)
                }
            }
        };
        self.dropped_limit.inc();
        if started {
            self.bans_started
                .get_or_create(&ByLabel { by: "flood" })
                .inc();
            tracing::warn!(
                %ip,
                ban_s = config.ban_s,
                requests_per_s = config.requests_per_s,
                burst = config.burst,
                "source banned: past the [flood] limit; its messages are dropped"
            );
        }
        None
    }

    fn shard(&self, ip: IpAddr) -> std::sync::MutexGuard<'_, Bounded<IpAddr, Bucket>> {
        let i = (self.hasher.hash_one(ip) % SHARDS as u64) as usize;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `ip` is trusted.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.settings.load().trusted.contains(ip)
    }

    /// A tenant's routing bans `ip` for `duration`: None when refused (a
    /// trusted address, no duration), else whether a ban started (false:
    /// it was banned already, and stays so until the later end).
    pub fn ban_by_tenant(&self, ip: IpAddr, duration: Duration, tenant: &str) -> Option<bool> {
        if self.is_trusted(ip) || duration.is_zero() {
            return None;
        }
        let origin = BanOrigin::Tenant(Arc::from(tenant));
        let started = self.bans.ban(ip, duration, origin, Instant::now());
        if started {
            self.bans_started
                .get_or_create(&ByLabel { by: "guest" })
                .inc();
            tracing::warn!(
                %ip,
                ban_s = duration.as_secs(),
                tenant,
                "source banned by the tenant's routing; its messages are dropped"
            );
        }
        Some(started)
    }

    /// How long the ban on `ip` lasts still.
    pub fn banned_for(&self, ip: IpAddr) -> Option<Duration> {
        self.bans.remaining(ip, Instant::now())
    }

    /// Lifts a ban the tenant set; whether there was one.
    pub fn unban_by_tenant(&self, ip: IpAddr, tenant: &str) -> bool {
        let origin = BanOrigin::Tenant(Arc::from(tenant));
        self.bans.unban(ip, Some(&origin), Instant::now())
    }

    /// Forgets ended bans and the addresses whose bucket is full again.
    pub fn purge(&self, now: Instant) {
        self.bans.purge(now);
        let settings = self.settings.load();
        let (rate, burst) = (
            f64::from(settings.config.requests_per_s),
            f64::from(settings.config.burst),
        );
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            shard.retain(|_, b| !b.is_full(rate, burst, now));
        }
    }

    /// Addresses counted now.
    pub fn tracked(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    /// Addresses banned now.
    pub fn banned(&self) -> usize {
        self.bans.count(Instant::now())
    }
}

/// A figure of the flood control, read when the metrics are rendered.
#[derive(Debug, Clone, Copy)]
enum Figure {
    Banned,
    Tracked,
}

/// A gauge computed at each rendering.
struct Gauged(Arc<Flood>, Figure);

impl std::fmt::Debug for Gauged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gauged({:?})", self.1)
    }
}

impl TypedMetric for Gauged {
    const TYPE: MetricType = MetricType::Gauge;
}

impl EncodeMetric for Gauged {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let n = match self.1 {
            Figure::Banned => self.0.banned(),
            Figure::Tracked => self.0.tracked(),
        };
        encoder.encode_gauge(&(i64::try_from(n).unwrap_or(i64::MAX)))
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn flood(requests_per_s: u32, burst: u32, max_tracked: usize) -> Flood {
        Flood::new(
            FloodConfig {
                requests_per_s,
                burst,
                ban_s: 60,
                max_tracked,
                ..FloodConfig::default()
            },
            Trusted::default(),
        )
    }

    #[test]
    fn past_the_burst_a_source_is_banned() {
        let f = flood(10, 20, 1024);
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        for _ in 0..20 {
            assert_eq!(f.admit_at(a, true, t0), Some(false));
        }
        assert_eq!(f.admit_at(a, true, t0), None, "past the burst");
        assert_eq!(f.dropped_limit.get(), 1);
        // Banned: requests and responses dropped, even after refilling.
        let later = t0 + Duration::from_secs(30);
        assert_eq!(f.admit_at(a, false, later), None);
        assert_eq!(f.admit_at(a, true, later), None);
        assert_eq!(f.dropped_banned.get(), 2);
        assert_eq!(f.banned(), 1);
        // The ban ends; the source starts again with a full bucket.
        let after = t0 + Duration::from_secs(61);
        assert_eq!(f.admit_at(a, true, after), Some(false));
        // Another source was never affected.
        assert_eq!(f.admit_at(ip("192.0.2.2"), true, t0), Some(false));
    }

    #[test]
    fn the_rate_refills() {
        let f = flood(10, 5, 1024);
        let t0 = Instant::now();
        let a = ip("2001:db8::7");
        // 10 a second for 10 s, after the burst: never past the limit.
        for i in 0..100u64 {
            let now = t0 + Duration::from_millis(100 * i);
            assert_eq!(f.admit_at(a, true, now), Some(false), "at {i}");
        }
        // 20 a second is past it within a second or so.
        let mut refused = None;
        for i in 0..100u64 {
            let now = t0 + Duration::from_secs(10) + Duration::from_millis(50 * i);
            if f.admit_at(a, true, now).is_none() {
                refused = Some(i);
                break;
            }
        }
        assert!(refused.is_some_and(|i| i <= 12), "{refused:?}");
    }

    #[test]
    fn trusted_sources_and_responses_are_not_counted() {
        let f = flood(1, 1, 1024);
        let now = Instant::now();
        for _ in 0..1000 {
            assert_eq!(f.admit_at(ip("127.0.0.1"), true, now), Some(true));
            assert_eq!(f.admit_at(ip("::1"), true, now), Some(true));
            assert_eq!(f.admit_at(ip("192.0.2.9"), false, now), Some(false));
        }
        assert_eq!(f.admit_at(ip("127.0.0.2"), true, now), Some(false));
        assert_eq!(f.admit_at(ip("127.0.0.2"), true, now), None);
        assert_eq!(
            f.ban_by_tenant(ip("127.0.0.1"), Duration::from_secs(5), "t"),
            None
        );
        assert_eq!(f.admit_at(ip("127.0.0.1"), true, now), Some(true));
    }

    #[test]
    fn spoofed_sources_do_not_grow_the_table() {
        let f = flood(50, 500, 1000);
        let now = Instant::now();
        for i in 0..200_000u32 {
            let a = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert_eq!(f.admit_at(a, true, now), Some(false));
        }
        let tracked = f.tracked();
        assert!((900..=1008).contains(&tracked), "{tracked}");
        // Every bucket is full again a little later: purged.
        f.purge(now + Duration::from_millis(100));
        assert_eq!(f.tracked(), 0);
    }

    #[test]
    fn tenants_ban_and_lift_their_own_bans() {
        let f = Flood::default();
        let a = ip("198.51.100.4");
        assert_eq!(
            f.ban_by_tenant(a, Duration::from_secs(30), "acme"),
            Some(true)
        );
        assert_eq!(
            f.ban_by_tenant(a, Duration::from_secs(10), "acme"),
            Some(false)
        );
        let left = f.banned_for(a).expect("banned");
        assert!(left <= Duration::from_secs(30) && left > Duration::from_secs(28));
        assert_eq!(f.admit_at(a, false, Instant::now()), None);
        assert!(!f.unban_by_tenant(a, "other"));
        assert!(f.unban_by_tenant(a, "acme"));
        assert_eq!(f.banned_for(a), None);
        assert_eq!(f.admit_at(a, true, Instant::now()), Some(false));
    }

    #[test]
    fn the_section_is_checked() {
        assert!(FloodConfig::default().check().is_ok());
        let c: FloodConfig = toml::from_str("burst = 0").expect("parses");
        assert_eq!(c.check().unwrap_err(), "[flood] burst must be above 0");
        assert!(toml::from_str::<FloodConfig>("rate = 1").is_err());
        let c: FloodConfig = toml::from_str("enabled = false").expect("parses");
        assert!(!c.enabled && c.requests_per_s == 50);
    }

    #[test]
    fn the_metrics_render() {
        let f = Arc::new(flood(1, 1, 64));
        let mut registry = Registry::with_prefix("wisp");
        f.register(&mut registry);
        let now = Instant::now();
        f.admit_at(ip("192.0.2.1"), true, now);
        f.admit_at(ip("192.0.2.1"), true, now);
        f.admit_at(ip("192.0.2.1"), true, now);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).expect("encodes");
        for line in [
            "wisp_flood_dropped_total{reason=\"limit\"} 1",
            "wisp_flood_dropped_total{reason=\"banned\"} 1",
            "wisp_flood_bans_total{by=\"flood\"} 1",
            "wisp_flood_banned 1",
            "wisp_flood_tracked 0",
        ] {
            assert!(out.contains(line), "{line} in\n{out}");
        }
    }
}
