//! The guests' rate limits through Redis, with `[cluster]`: a key's hits
//! are counted across every node.
//!
//! A sliding window over two fixed ones, not the token bucket of one node
//! (which would take a read-modify-write of Redis per hit): the hits of
//! `tenant`'s `key` in the window `n` (`n` = Unix seconds / window) are
//! the counter `wisp:{tenant}:rl:{window}:{n}:{key}`. A hit is allowed
//! when the hits of this window, plus those of the window before weighted
//! by how much of it the sliding window still covers, stay within
//! `limit`; only an allowed hit is counted (as the WIT says). One Lua
//! script reads both counters, decides, counts and gives the counter an
//! expiry of two windows, so that Redis drops it once nobody needs it:
//! two nodes cannot both take the last hit, and a burst across a window's
//! end gets about `limit` (a fixed window would let twice through).
//! Keys longer than [`MAX_PLAIN_KEY`] bytes are replaced by their SHA-256,
//! which bounds what a guest puts into Redis.
//!
//! Redis unavailable: the caller counts on this node alone instead (the
//! node's own token bucket, [`crate::services::ratelimit`]): the limit
//! then holds per node, neither open to a flood nor closed to everyone;
//! a warning is logged once per change ([`Degraded`]).

use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use super::degraded::Degraded;
use crate::cluster::{Cluster, ClusterError};
use crate::services::ratelimit::MAX_WINDOW_S;

/// Whether the rate limits' Redis calls fail now.
pub static STATE: Degraded = Degraded::new(
    "rate limits",
    "each node counts the hits it sees on its own",
);

/// The longest key stored as it is; longer ones are hashed.
pub const MAX_PLAIN_KEY: usize = 128;

/// The counter of `key`'s hits in the window of `window_s` seconds that
/// holds `unix_s`.
pub fn counter_key(tenant: &str, key: &str, window_s: u32, unix_s: u64) -> String {
    let window = window_s.clamp(1, MAX_WINDOW_S);
    let n = unix_s / u64::from(window);
    if key.len() > MAX_PLAIN_KEY {
        let hash = hex::encode(Sha256::digest(key.as_bytes()));
        Cluster::key(tenant, "rl", &format!("{window}:{n}:sha256:{hash}"))
    } else {
        Cluster::key(tenant, "rl", &format!("{window}:{n}:{key}"))
    }
}

/// KEYS = this window's counter, the previous one's; ARGV = limit, window
/// in seconds, milliseconds of this window gone. 1: allowed (and counted).
const CHECK: &str = r"
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local prev = tonumber(redis.call('GET', KEYS[2]) or '0')
local window = tonumber(ARGV[2]) * 1000
local weight = (window - tonumber(ARGV[3])) / window
if prev * weight + cur + 1 > tonumber(ARGV[1]) then
  return 0
end
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], 2 * tonumber(ARGV[2]) + 1)
return 1
";

/// Counts a hit of `tenant`'s `key` against `limit` per `window_s`
/// seconds (0 counts as 1, past a day as a day) across the cluster: true
/// when within it (counted), false when past it (not counted). A limit
/// of 0 allows nothing (and asks nothing of Redis). Err: Redis failed;
/// the caller decides.
pub fn check(
    cluster: &Cluster,
    tenant: &str,
    key: &str,
    limit: u32,
    window_s: u32,
) -> Result<bool, ClusterError> {
    if limit == 0 {
        return Ok(false);
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let window = window_s.clamp(1, MAX_WINDOW_S);
    let unix_s = now.as_secs();
    let gone_ms = (unix_s % u64::from(window)) * 1000 + u64::from(now.subsec_millis());
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(CHECK)
        .arg(2)
        .arg(counter_key(tenant, key, window, unix_s))
        .arg(counter_key(
            tenant,
            key,
            window,
            unix_s.saturating_sub(u64::from(window)),
        ))
        .arg(limit)
        .arg(window)
        .arg(gone_ms);
    let allowed: i64 = cluster.query(cmd)?;
    Ok(allowed == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_per_tenant_key_and_window() {
        assert_eq!(
            counter_key("acme", "src:192.0.2.1", 60, 120),
            "wisp:acme:rl:60:2:src:192.0.2.1"
        );
        assert_eq!(
            counter_key("acme", "src:192.0.2.1", 60, 179),
            "wisp:acme:rl:60:2:src:192.0.2.1",
            "the same window"
        );
        assert_ne!(
            counter_key("acme", "k", 60, 180),
            counter_key("acme", "k", 60, 179)
        );
        assert_ne!(counter_key("a", "k", 60, 1), counter_key("b", "k", 60, 1));
        // A window of 0 is 1 s, of more than a day a day.
        assert_eq!(counter_key("a", "k", 0, 7), "wisp:a:rl:1:7:k");
        assert_eq!(counter_key("a", "k", u32::MAX, 7), "wisp:a:rl:86400:0:k");
        let long = "x".repeat(MAX_PLAIN_KEY + 1);
        let hashed = counter_key("a", &long, 60, 0);
        assert!(hashed.starts_with("wisp:a:rl:60:0:sha256:"), "{hashed}");
        assert_eq!(hashed.len(), "wisp:a:rl:60:0:sha256:".len() + 64);
    }

    #[test]
    fn a_limit_of_zero_asks_nothing() {
        let config = crate::cluster::ClusterConfig {
            redis: "redis://127.0.0.1:1".into(),
            node: "a".into(),
            address: None,
            timeout_ms: 250,
        };
        let cluster = Cluster::start(&config).expect("starts");
        assert!(matches!(check(&cluster, "t", "k", 0, 60), Ok(false)));
        assert!(matches!(
            check(&cluster, "t", "k", 1, 60),
            Err(ClusterError::Down)
        ));
    }
}
