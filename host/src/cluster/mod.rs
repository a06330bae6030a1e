//! `[cluster]`: several wisp nodes sharing their state through Redis.
//!
//! wisp grows no replication protocol of its own: what the nodes share
//! (bindings, nonces, kv, rate-limit counters, subscribers, versions)
//! lives in one Redis (or Valkey, or a managed Redis), under per-tenant
//! key namespaces ([`Cluster::key`]), and the nodes tell each other what
//! changed through pub/sub so that their local caches stay fresh.
//!
//! [`Cluster`] is the link to Redis: one thread (`wisp-cluster`) runs its
//! own small tokio runtime with one multiplexed command connection and
//! one pub/sub connection, reconnected on their own ([`link`]). Callers
//! on hook threads use the blocking [`Cluster::query`], bounded by
//! `timeout_ms`; while Redis is away every call answers
//! [`ClusterError::Down`] at once, so a request never waits on a dead
//! link. Without `[cluster]` none of this exists and the embedded SQLite
//! storage serves alone.

mod link;

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

/// The `[cluster]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Where Redis is: `redis://HOST:PORT[/DB]` (`rediss://` is not built in).
    pub redis: String,
    /// This node's name, unique in the cluster.
    pub node: String,
    /// `host:port` other nodes reach this node's SIP at (UDP), for the
    /// flows it holds. Default: the first UDP listener's advertised or
    /// bound address.
    #[serde(default)]
    pub address: Option<String>,
    /// Bound on each Redis command, in milliseconds.
    #[serde(default = "ClusterConfig::default_timeout_ms")]
    pub timeout_ms: u64,
}

impl ClusterConfig {
    fn default_timeout_ms() -> u64 {
        250
    }

    /// What serde cannot check: a URL the client accepts, a usable node
    /// name (it appears in keys and Path URIs), a timeout above 0.
    pub fn check(&self) -> Result<(), String> {
        if let Err(err) = redis::Client::open(self.redis.as_str()) {
            return Err(format!("[cluster] redis {:?}: {err}", self.redis));
        }
        if self.node.is_empty()
            || !self
                .node
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(format!(
                "[cluster] node {:?} must be letters, digits, '-', '_' or '.'",
                self.node
            ));
        }
        if self.timeout_ms == 0 {
            return Err("[cluster] timeout_ms must be above 0".into());
        }
        if let Some(address) = &self.address {
            if address.is_empty() || address.contains(|c: char| c.is_whitespace() || c == ';') {
                return Err(format!("[cluster] address {address:?} is not host:port"));
            }
        }
        Ok(())
    }
}

/// Why a Redis command gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The link is down (Redis unreachable, restarting): nothing was sent.
    #[error("redis is unavailable")]
    Down,
    /// Redis answered with an error, or with something that is not what
    /// was asked for (Redis's content is not trusted).
    #[error("redis: {0}")]
    Redis(String),
    #[error("redis timed out")]
    Timeout,
}

/// A callback for the messages of a channel.
pub type OnMessage = Box<dyn Fn(&[u8]) + Send + Sync>;

/// The link to the cluster's Redis; handed around as `Arc<Cluster>`.
pub struct Cluster {
    node: String,
    address: Option<String>,
    timeout: Duration,
    link: link::Link,
}

impl Cluster {
    /// Starts the link's own runtime thread ("wisp-cluster"); does NOT
    /// fail when Redis is down at start (the link comes up when Redis
    /// does). Fails only on a bad URL.
    pub fn start(config: &ClusterConfig) -> anyhow::Result<Arc<Cluster>> {
        let client = redis::Client::open(config.redis.as_str())
            .map_err(|err| anyhow::anyhow!("[cluster] redis {:?}: {err}", config.redis))?;
        let timeout = Duration::from_millis(config.timeout_ms.max(1));
        let link = link::Link::start(client, timeout, redacted(&config.redis))?;
        Ok(Arc::new(Cluster {
            node: config.node.clone(),
            address: config.address.clone(),
            timeout,
            link,
        }))
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// `host:port` other nodes reach this node's SIP at.
    pub fn address(&self) -> Option<&str> {
        self.address.as_deref()
    }

    pub fn is_up(&self) -> bool {
        self.link.is_up()
    }

    /// Blocking, bounded by `timeout_ms`; returns Down at once while the
    /// link is down. Callable from any non-tokio thread (hook threads);
    /// NOT from inside a tokio runtime (use [`Cluster::query_async`]).
    pub fn query<T: redis::FromRedisValue + Send + 'static>(
        &self,
        cmd: redis::Cmd,
    ) -> Result<T, ClusterError> {
        self.link
            .run_blocking(self.timeout, link::Request::Cmd(cmd))
    }

    /// [`Cluster::query`] for a pipeline (`redis::pipe()`, `.atomic()` for
    /// MULTI/EXEC).
    pub fn pipeline<T: redis::FromRedisValue + Send + 'static>(
        &self,
        pipe: redis::Pipeline,
    ) -> Result<T, ClusterError> {
        self.link
            .run_blocking(self.timeout, link::Request::Pipe(pipe))
    }

    /// [`Cluster::query`] for callers inside a tokio runtime.
    pub async fn query_async<T: redis::FromRedisValue + Send + 'static>(
        &self,
        cmd: redis::Cmd,
    ) -> Result<T, ClusterError> {
        self.link
            .run_async(self.timeout, link::Request::Cmd(cmd))
            .await
    }

    /// Every message published on `channel` (this node's own too) is
    /// handed to `on_message` on the link's thread (keep it short: no
    /// blocking query inside — spawn or queue). Re-subscribed after every
    /// reconnect (see [`Cluster::on_up`] for what may have been missed).
    pub fn subscribe(&self, channel: &str, on_message: OnMessage) {
        self.link.subscribe(channel, on_message);
    }

    /// Called each time the link comes (back) up — caches drop what they
    /// hold, since invalidations may have been missed while down — and at
    /// once, on the caller's thread, when the link is up already.
    pub fn on_up(&self, f: Box<dyn Fn() + Send + Sync>) {
        self.link.on_up(f);
    }

    pub fn publish(&self, channel: &str, payload: &[u8]) -> Result<(), ClusterError> {
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(channel).arg(payload);
        self.query::<i64>(cmd).map(|_| ())
    }

    /// "wisp:{tenant}:{kind}:{rest}" — every key of a tenant lives under
    /// "wisp:{tenant}:".
    pub fn key(tenant: &str, kind: &str, rest: &str) -> String {
        format!("wisp:{tenant}:{kind}:{rest}")
    }

    /// Adds `wisp_cluster_redis_up` (1 while the link is up) to `registry`.
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "cluster_redis_up",
            "1 while this node's link to the cluster's Redis is up, 0 while it is down",
            self.link.gauge(),
        );
    }
}

/// The URL as logs may show it: without a password.
fn redacted(url: &str) -> String {
    match (url.split_once("://"), url.rsplit_once('@')) {
        (Some((scheme, _)), Some((_, host))) => format!("{scheme}://***@{host}"),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(redis: &str, node: &str) -> ClusterConfig {
        ClusterConfig {
            redis: redis.into(),
            node: node.into(),
            address: None,
            timeout_ms: 250,
        }
    }

    #[test]
    fn keys_live_under_the_tenant() {
        assert_eq!(
            Cluster::key("acme", "loc", "sip:alice@acme.com"),
            "wisp:acme:loc:sip:alice@acme.com"
        );
    }

    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(redacted("redis://:s3cret@h:1/0"), "redis://***@h:1/0");
        assert_eq!(redacted("redis://h:1"), "redis://h:1");
    }

    #[test]
    fn config_is_checked() {
        assert!(config("redis://127.0.0.1:6379", "a").check().is_ok());
        let err = config("http://x", "a").check().unwrap_err();
        assert!(err.contains("[cluster] redis"), "{err}");
        let err = config("redis://127.0.0.1", "a b").check().unwrap_err();
        assert!(err.contains("node"), "{err}");
        let mut c = config("redis://127.0.0.1", "a");
        c.timeout_ms = 0;
        assert!(c.check().is_err());
    }

    /// Nothing listens on port 1: the link starts anyway, says Down at
    /// once, and a query does not wait out its timeout (a minute here;
    /// the bound checked is half of it, which no busy machine reaches).
    #[test]
    fn a_link_without_redis_answers_down_at_once() {
        let mut slow = config("redis://127.0.0.1:1", "a");
        slow.timeout_ms = 60_000;
        let cluster = Cluster::start(&slow).expect("starts");
        assert!(!cluster.is_up());
        let started = std::time::Instant::now();
        let got = cluster.query::<Option<String>>(redis::Cmd::get("k"));
        assert!(matches!(got, Err(ClusterError::Down)), "{got:?}");
        assert!(started.elapsed() < Duration::from_secs(30));
        assert!(matches!(
            cluster.publish("c", b"x"),
            Err(ClusterError::Down)
        ));
    }
}
