//! Subscribers through Redis, with `[cluster]`: `wisp user add` on any
//! machine writes them to Redis, every node reads them from there through
//! a cache of its own.
//!
//! A tenant's subscribers are the hash `wisp:{tenant}:sub:ha1`: the field
//! is the JSON array `["USER","DOMAIN"]` (no separator a username or a
//! realm could hold can make two subscribers meet), the value
//! `MD5-HA1:SHA256-HA1` in hex. Only HA1 hashes, never a password.
//!
//! The cache: a node keeps what it read (a subscriber, or that there is
//! none) for [`FRESH`]; `wisp user add`/`del` publish `["TENANT","USER",
//! "DOMAIN"]` on [`CHANNEL`] in the same `MULTI` as the write, and every
//! node drops that entry at once. The whole cache is dropped when the link
//! comes (back) up, since messages may have been missed meanwhile, and
//! when a message cannot be read. A lookup that raced an invalidation does
//! not put what it read into the cache.
//!
//! Redis unavailable: a subscriber in the cache is served from it, however
//! old; one not in it cannot be checked, and the lookup fails (the
//! request gets a 500, not a challenge that would say the password is
//! wrong).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::degraded::Degraded;
use crate::cluster::{Cluster, ClusterError};
use crate::services::digest::{ha1, Algorithm};
use crate::transport::bounded::Bounded;

/// The channel of invalidations.
pub const CHANNEL: &str = "wisp:subscribers";
/// How long a cached lookup is used without asking Redis again: the bound
/// on a change that reached no node's cache (an invalidation lost).
pub const FRESH: Duration = Duration::from_secs(30);
/// Lookups cached at most (a few hundred bytes each).
pub const MAX_CACHED: usize = 65_536;

/// Whether subscriber lookups' Redis calls fail now.
pub static STATE: Degraded = Degraded::new(
    "subscribers",
    "cached subscribers are served from the cache, others fail with 500",
);

/// The hash of a tenant's subscribers.
pub fn hash_key(tenant: &str) -> String {
    Cluster::key(tenant, "sub", "ha1")
}

/// The field of a subscriber in [`hash_key`].
pub fn field(user: &str, domain: &str) -> String {
    serde_json::to_string(&[user, domain]).unwrap_or_default()
}

/// The user and domain of a field, if it is one.
fn parse_field(field: &[u8]) -> Option<(String, String)> {
    serde_json::from_slice::<(String, String)>(field).ok()
}

/// A subscriber's hashes, as the hash holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hashes {
    pub md5: String,
    pub sha256: String,
}

impl Hashes {
    pub fn of(user: &str, domain: &str, password: &str) -> Hashes {
        Hashes {
            md5: ha1(Algorithm::Md5, user, domain, password),
            sha256: ha1(Algorithm::Sha256, user, domain, password),
        }
    }

    fn to_value(&self) -> String {
        format!("{}:{}", self.md5, self.sha256)
    }

    /// The hashes of a value; none unless it is two hex hashes of the
    /// right lengths (what Redis holds is not trusted).
    fn parse(value: &[u8]) -> Option<Hashes> {
        let text = std::str::from_utf8(value).ok()?;
        let (md5, sha256) = text.split_once(':')?;
        let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
        (hex(md5, 32) && hex(sha256, 64)).then(|| Hashes {
            md5: md5.to_ascii_lowercase(),
            sha256: sha256.to_ascii_lowercase(),
        })
    }

    fn for_algorithm(&self, algorithm: Algorithm) -> String {
        match algorithm {
            Algorithm::Md5 => self.md5.clone(),
            Algorithm::Sha256 => self.sha256.clone(),
        }
    }
}

/// An invalidation's payload.
fn message(tenant: &str, user: &str, domain: &str) -> String {
    serde_json::to_string(&[tenant, user, domain]).unwrap_or_default()
}

type Who = (String, String, String);

struct Cached {
    hashes: Option<Hashes>,
    read: Instant,
}

#[derive(Default)]
struct Inner {
    entries: Mutex<Option<Bounded<Who, Cached>>>,
    /// Bumped by every invalidation: a lookup whose read began before one
    /// does not cache what it read.
    generation: AtomicU64,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Option<Bounded<Who, Cached>>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn invalidate(&self, who: Option<&Who>) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        let mut entries = self.lock();
        match (who, entries.as_mut()) {
            (Some(who), Some(map)) => {
                map.remove(who);
            }
            (None, _) => *entries = None,
            (Some(_), None) => {}
        }
    }

    /// An invalidation from the channel.
    fn on_message(&self, payload: &[u8]) {
        match serde_json::from_slice::<Who>(payload) {
            Ok(who) => self.invalidate(Some(&who)),
            Err(_) => {
                tracing::warn!("cluster subscribers: an invalidation that is not [tenant, user, domain]; the whole cache dropped");
                self.invalidate(None);
            }
        }
    }
}

/// A node's cache of subscriber lookups (empty and unused without
/// `[cluster]`).
#[derive(Default, Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

impl Cache {
    /// Listens for invalidations on `cluster`, and drops everything each
    /// time the link comes (back) up.
    pub fn attach(&self, cluster: &Cluster) {
        let inner = Arc::downgrade(&self.inner);
        cluster.subscribe(
            CHANNEL,
            Box::new(move |payload| {
                if let Some(inner) = inner.upgrade() {
                    inner.on_message(payload);
                }
            }),
        );
        let inner = Arc::downgrade(&self.inner);
        cluster.on_up(Box::new(move || {
            if let Some(inner) = inner.upgrade() {
                inner.invalidate(None);
            }
        }));
    }

    /// Lookups cached now.
    pub fn len(&self) -> usize {
        self.inner.lock().as_ref().map_or(0, Bounded::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The HA1 of a subscriber for an algorithm, if the subscriber exists:
    /// from the cache while fresh, else from Redis; from the cache however
    /// old when Redis fails. Err: Redis failed and nothing was cached.
    pub fn ha1(
        &self,
        cluster: &Cluster,
        tenant: &str,
        user: &str,
        domain: &str,
        algorithm: Algorithm,
    ) -> Result<Option<String>, ClusterError> {
        let who = (tenant.to_owned(), user.to_owned(), domain.to_owned());
        let now = Instant::now();
        let stale = match self.inner.lock().as_ref().and_then(|m| m.get(&who)) {
            Some(c) if now.duration_since(c.read) < FRESH => {
                return Ok(c.hashes.as_ref().map(|h| h.for_algorithm(algorithm)));
            }
            Some(c) => Some(c.hashes.clone()),
            None => None,
        };
        let generation = self.inner.generation.load(Ordering::Acquire);
        let mut cmd = redis::cmd("HGET");
        cmd.arg(hash_key(tenant)).arg(field(user, domain));
        let hashes = match cluster.query::<Option<Vec<u8>>>(cmd) {
            Ok(value) => {
                STATE.worked();
                match value {
                    None => None,
                    Some(value) => match Hashes::parse(&value) {
                        Some(hashes) => Some(hashes),
                        None => {
                            return Err(ClusterError::Redis(format!(
                                "subscriber {user}@{domain} of tenant {tenant}: not two HA1 hashes"
                            )))
                        }
                    },
                }
            }
            Err(err) => {
                STATE.failed(tenant, &err);
                return match stale {
                    Some(hashes) => Ok(hashes.map(|h| h.for_algorithm(algorithm))),
                    None => Err(err),
                };
            }
        };
        let found = hashes.as_ref().map(|h| h.for_algorithm(algorithm));
        let mut entries = self.inner.lock();
        if self.inner.generation.load(Ordering::Acquire) == generation {
            entries
                .get_or_insert_with(|| Bounded::new(MAX_CACHED))
                .insert(
                    who,
                    Cached {
                        hashes,
                        read: Instant::now(),
                    },
                );
        }
        Ok(found)
    }
}

/// One subscriber as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub username: String,
    pub domain: String,
}

/// Adds a subscriber, or changes its password, and tells every node.
pub fn add(
    cluster: &Cluster,
    tenant: &str,
    user: &str,
    domain: &str,
    password: &str,
) -> Result<(), ClusterError> {
    let mut pipe = redis::pipe();
    pipe.atomic()
        .hset(
            hash_key(tenant),
            field(user, domain),
            Hashes::of(user, domain, password).to_value(),
        )
        .ignore()
        .publish(CHANNEL, message(tenant, user, domain))
        .ignore();
    cluster.pipeline::<()>(pipe)
}

/// Removes a subscriber, and tells every node; whether there was one.
pub fn delete(
    cluster: &Cluster,
    tenant: &str,
    user: &str,
    domain: &str,
) -> Result<bool, ClusterError> {
    let mut pipe = redis::pipe();
    pipe.atomic()
        .hdel(hash_key(tenant), field(user, domain))
        .publish(CHANNEL, message(tenant, user, domain))
        .ignore();
    let (removed,): (i64,) = cluster.pipeline(pipe)?;
    Ok(removed > 0)
}

/// A tenant's subscribers, sorted by domain and user. Fields that are not
/// a subscriber's are skipped (and said).
pub fn list(cluster: &Cluster, tenant: &str) -> Result<Vec<Listed>, ClusterError> {
    let fields: Vec<Vec<u8>> = cluster.query(redis::Cmd::hkeys(hash_key(tenant)))?;
    let mut listed: Vec<Listed> = fields
        .iter()
        .filter_map(|f| {
            let parsed = parse_field(f);
            if parsed.is_none() {
                tracing::warn!(tenant, field = %String::from_utf8_lossy(f), "not a subscriber's field; skipped");
            }
            parsed
        })
        .map(|(username, domain)| Listed { username, domain })
        .collect();
    listed.sort_by(|a, b| (&a.domain, &a.username).cmp(&(&b.domain, &b.username)));
    Ok(listed)
}

/// Starts a link for a command (`wisp user`) and waits up to `wait` for
/// it to come up.
pub fn connect(
    config: &crate::cluster::ClusterConfig,
    wait: Duration,
) -> anyhow::Result<Arc<Cluster>> {
    let cluster = Cluster::start(config)?;
    let until = Instant::now() + wait;
    while !cluster.is_up() {
        if Instant::now() >= until {
            anyhow::bail!(
                "[cluster] redis {} is unavailable (waited {wait:?}); nothing changed",
                config.redis
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(cluster)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_messages_cannot_be_confused() {
        assert_eq!(hash_key("acme"), "wisp:acme:sub:ha1");
        assert_eq!(field("alice", "example.com"), r#"["alice","example.com"]"#);
        // A username holding '@' is not another user of another domain.
        assert_ne!(field("a@b", "c"), field("a", "b@c"));
        assert_eq!(
            parse_field(field("a\"b", "c").as_bytes()),
            Some(("a\"b".into(), "c".into()))
        );
        assert_eq!(parse_field(b"alice@example.com"), None);
        assert_eq!(message("t", "u", "d"), r#"["t","u","d"]"#);
    }

    #[test]
    fn only_two_hex_hashes_are_hashes() {
        let h = Hashes::of("alice", "example.com", "secret");
        assert_eq!(Hashes::parse(h.to_value().as_bytes()), Some(h.clone()));
        assert_eq!(Hashes::parse(b"secret"), None);
        assert_eq!(Hashes::parse(format!("{}:", h.md5).as_bytes()), None);
        assert_eq!(
            Hashes::parse(format!("{}:{}", h.md5, &h.sha256[1..]).as_bytes()),
            None
        );
        assert_eq!(Hashes::parse(&[0xff, b':', 0xfe]), None);
        assert_eq!(h.for_algorithm(Algorithm::Md5).len(), 32);
        assert_eq!(h.for_algorithm(Algorithm::Sha256).len(), 64);
    }

    #[test]
    fn invalidations_drop_entries() {
        let cache = Cache::default();
        let who: Who = ("t".into(), "u".into(), "d".into());
        let other: Who = ("t".into(), "v".into(), "d".into());
        {
            let mut entries = cache.inner.lock();
            let map = entries.get_or_insert_with(|| Bounded::new(MAX_CACHED));
            for w in [&who, &other] {
                map.insert(
                    w.clone(),
                    Cached {
                        hashes: None,
                        read: Instant::now(),
                    },
                );
            }
        }
        assert_eq!(cache.len(), 2);
        let before = cache.inner.generation.load(Ordering::Acquire);
        cache.inner.on_message(message("t", "u", "d").as_bytes());
        assert_eq!(cache.len(), 1);
        assert!(cache.inner.generation.load(Ordering::Acquire) > before);
        cache.inner.on_message(b"garbage");
        assert!(cache.is_empty(), "an unreadable message drops everything");
    }

    /// Redis away and nothing cached: an error, not "no such user".
    #[test]
    fn uncached_lookups_fail_while_redis_is_away() {
        let config = crate::cluster::ClusterConfig {
            redis: "redis://127.0.0.1:1".into(),
            node: "a".into(),
            address: None,
            timeout_ms: 250,
        };
        let cluster = Cluster::start(&config).expect("starts");
        let cache = Cache::default();
        let got = cache.ha1(&cluster, "t", "alice", "example.com", Algorithm::Md5);
        assert!(matches!(got, Err(ClusterError::Down)), "{got:?}");
        // Cached (even long ago), it is served.
        cache
            .inner
            .lock()
            .get_or_insert_with(|| Bounded::new(4))
            .insert(
                ("t".into(), "alice".into(), "example.com".into()),
                Cached {
                    hashes: Some(Hashes::of("alice", "example.com", "secret")),
                    read: Instant::now() - FRESH - FRESH,
                },
            );
        let got = cache.ha1(&cluster, "t", "alice", "example.com", Algorithm::Md5);
        assert_eq!(
            got.ok().flatten(),
            Some(ha1(Algorithm::Md5, "alice", "example.com", "secret"))
        );
        assert!(connect(&config, Duration::from_millis(50)).is_err());
    }
}
