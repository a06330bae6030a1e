//! The kv service through Redis, with `[cluster]`: every node of the
//! cluster sees the same keys.
//!
//! A tenant's key `K` is the Redis string `wisp:{tenant}:kv:{K}` (set
//! with `EX` for a TTL, so Redis expires it); the keys a tenant holds are
//! counted in the sorted set `wisp:{tenant}:kvindex:all` (member: the
//! key, score: when it expires in Unix milliseconds, `+inf` for never), so
//! that `limits.kv_keys` holds across the cluster. Writes are Lua scripts:
//! the count, the check and the write are one atomic step in Redis, so two
//! nodes cannot both take the last free key. `limits.kv_bytes` is not
//! counted in Redis; a key is at most [`MAX_KEY_LEN`] and a value
//! [`MAX_VALUE_LEN`] bytes, which bounds a tenant's bytes by its keys.
//!
//! Redis unavailable: `set` and `incr` fail with
//! [`KvError::Unavailable`] (the guest sees `unavailable`, nothing
//! changed), `get` answers none and `delete` false; each with a warning
//! logged once per change ([`Degraded`]).

use std::time::{SystemTime, UNIX_EPOCH};

use super::degraded::Degraded;
use crate::cluster::{Cluster, ClusterError};
use crate::services::kv::{check_key, KvError, Quota, MAX_KEY_LEN, MAX_VALUE_LEN};

/// Whether the kv service's Redis calls fail now.
pub static STATE: Degraded = Degraded::new(
    "kv",
    "kv get answers none, set and incr fail with unavailable",
);

/// The Redis key of a tenant's kv key.
pub fn value_key(tenant: &str, key: &str) -> String {
    Cluster::key(tenant, "kv", key)
}

/// The sorted set counting a tenant's keys.
pub fn index_key(tenant: &str) -> String {
    Cluster::key(tenant, "kvindex", "all")
}

/// The error a script returns when the tenant's keys are at their quota.
const QUOTA_ERROR: &str = "WISPQUOTA";
/// The error a script returns when `incr` meets a value that is no integer
/// (or would overflow).
const NOT_INTEGER_ERROR: &str = "WISPNOTINT";

/// `set`: KEYS = value key, index; ARGV = key, value, TTL seconds or "",
/// now in Unix ms, most keys. Expired members leave the index first; a
/// key already there may always change.
const SET: &str = r"
local now = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) and redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[5]) then
  return redis.error_reply('WISPQUOTA kv quota reached')
end
if ARGV[3] == '' then
  redis.call('SET', KEYS[1], ARGV[2])
  redis.call('ZADD', KEYS[2], '+inf', ARGV[1])
  return 1
end
local ttl = tonumber(ARGV[3])
if ttl == 0 then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 1
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ttl)
redis.call('ZADD', KEYS[2], now + ttl * 1000, ARGV[1])
return 1
";

/// `incr`: KEYS = value key, index; ARGV = key, delta, TTL seconds or "",
/// now in Unix ms, most keys. A key there keeps its expiry; a new one
/// gets the TTL. A value that is no integer is left as it is.
const INCR: &str = r"
local now = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local existed = redis.call('EXISTS', KEYS[1]) == 1
if not existed and not redis.call('ZSCORE', KEYS[2], ARGV[1]) and redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[5]) then
  return redis.error_reply('WISPQUOTA kv quota reached')
end
local ok, n = pcall(redis.call, 'INCRBY', KEYS[1], ARGV[2])
if not ok then
  return redis.error_reply('WISPNOTINT value is not an integer')
end
if not existed then
  if ARGV[3] == '' then
    redis.call('ZADD', KEYS[2], '+inf', ARGV[1])
  else
    local ttl = tonumber(ARGV[3])
    if ttl == 0 then
      redis.call('DEL', KEYS[1])
      redis.call('ZREM', KEYS[2], ARGV[1])
    else
      redis.call('EXPIRE', KEYS[1], ttl)
      redis.call('ZADD', KEYS[2], now + ttl * 1000, ARGV[1])
    end
  end
end
return n
";

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A write script's call.
fn script(
    script: &str,
    tenant: &str,
    key: &str,
    arg: &str,
    ttl: Option<u32>,
    quota: Quota,
) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(script)
        .arg(2)
        .arg(value_key(tenant, key))
        .arg(index_key(tenant))
        .arg(key)
        .arg(arg)
        .arg(ttl.map(|t| t.to_string()).unwrap_or_default())
        .arg(unix_ms())
        .arg(quota.keys);
    cmd
}

/// What a write's failure means for the guest: the script's own refusals
/// are the quota's and the value's; anything else is Redis failing.
fn write_error(tenant: &str, key: &str, quota: Quota, err: ClusterError) -> KvError {
    if let ClusterError::Redis(text) = &err {
        if text.contains(QUOTA_ERROR) {
            STATE.worked();
            return KvError::Quota {
                keys: quota.keys,
                bytes: quota.bytes,
            };
        }
        if text.contains(NOT_INTEGER_ERROR) {
            STATE.worked();
            return KvError::NotInteger(format!("{key:?}"));
        }
    }
    STATE.failed(tenant, &err);
    KvError::Unavailable(err.to_string())
}

/// The value of a key that has not expired; none when Redis fails.
pub fn get(cluster: &Cluster, tenant: &str, key: &str) -> Option<String> {
    if key.len() > MAX_KEY_LEN {
        return None;
    }
    match cluster.query::<Option<Vec<u8>>>(redis::Cmd::get(value_key(tenant, key))) {
        Ok(value) => {
            STATE.worked();
            // What Redis holds is not trusted: only what wisp could have
            // written comes back.
            let value = value?;
            if value.len() > MAX_VALUE_LEN {
                tracing::warn!(
                    tenant,
                    key,
                    len = value.len(),
                    "kv: a value in redis is too long; ignored"
                );
                return None;
            }
            match String::from_utf8(value) {
                Ok(text) => Some(text),
                Err(_) => {
                    tracing::warn!(tenant, key, "kv: a value in redis is not UTF-8; ignored");
                    None
                }
            }
        }
        Err(err) => {
            STATE.failed(tenant, &err);
            None
        }
    }
}

/// Sets a key for `ttl_seconds` (none: until deleted), within the
/// tenant's `quota.keys` across the cluster.
pub fn set(
    cluster: &Cluster,
    tenant: &str,
    quota: Quota,
    key: &str,
    value: &str,
    ttl_seconds: Option<u32>,
) -> Result<(), KvError> {
    check_key(key)?;
    if value.len() > MAX_VALUE_LEN {
        return Err(KvError::ValueTooLong(value.len()));
    }
    let cmd = script(SET, tenant, key, value, ttl_seconds, quota);
    match cluster.query::<i64>(cmd) {
        Ok(_) => {
            STATE.worked();
            Ok(())
        }
        Err(err) => Err(write_error(tenant, key, quota, err)),
    }
}

/// Removes a key; whether it was there (false when Redis fails).
pub fn delete(cluster: &Cluster, tenant: &str, key: &str) -> bool {
    if key.len() > MAX_KEY_LEN {
        return false;
    }
    let mut pipe = redis::pipe();
    pipe.atomic()
        .del(value_key(tenant, key))
        .zrem(index_key(tenant), key)
        .ignore();
    match cluster.pipeline::<(i64,)>(pipe) {
        Ok((deleted,)) => {
            STATE.worked();
            deleted > 0
        }
        Err(err) => {
            STATE.failed(tenant, &err);
            false
        }
    }
}

/// Adds `delta` to an integer value (missing: 0); a new key gets
/// `ttl_seconds`, a key there keeps its expiry.
pub fn incr(
    cluster: &Cluster,
    tenant: &str,
    quota: Quota,
    key: &str,
    delta: i64,
    ttl_seconds: Option<u32>,
) -> Result<i64, KvError> {
    check_key(key)?;
    let cmd = script(INCR, tenant, key, &delta.to_string(), ttl_seconds, quota);
    match cluster.query::<i64>(cmd) {
        Ok(n) => {
            STATE.worked();
            Ok(n)
        }
        Err(err) => Err(write_error(tenant, key, quota, err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUOTA: Quota = Quota { keys: 10, bytes: 1 };

    #[test]
    fn keys_live_in_the_tenants_namespace() {
        assert_eq!(value_key("acme", "calls:alice"), "wisp:acme:kv:calls:alice");
        assert_eq!(index_key("acme"), "wisp:acme:kvindex:all");
        // Another tenant's same key is another Redis key.
        assert_ne!(value_key("a", "k"), value_key("b", "k"));
    }

    #[test]
    fn script_refusals_are_the_guests_errors() {
        let quota = write_error(
            "t",
            "k",
            QUOTA,
            ClusterError::Redis("WISPQUOTA: kv quota reached".into()),
        );
        assert_eq!(quota, KvError::Quota { keys: 10, bytes: 1 });
        let not_int = write_error(
            "t",
            "k",
            QUOTA,
            ClusterError::Redis("WISPNOTINT: value is not an integer".into()),
        );
        assert!(matches!(not_int, KvError::NotInteger(_)));
        let down = write_error("t", "k", QUOTA, ClusterError::Down);
        assert!(matches!(down, KvError::Unavailable(_)));
        STATE.worked();
    }

    /// Nothing listens on port 1: a write fails as unavailable at once, a
    /// read answers none, and nothing waits.
    #[test]
    fn redis_away_is_unavailable_not_lost() {
        let config = crate::cluster::ClusterConfig {
            redis: "redis://127.0.0.1:1".into(),
            node: "a".into(),
            address: None,
            timeout_ms: 250,
        };
        let cluster = Cluster::start(&config).expect("starts");
        assert!(matches!(
            set(&cluster, "t", QUOTA, "k", "v", None),
            Err(KvError::Unavailable(_))
        ));
        assert!(matches!(
            incr(&cluster, "t", QUOTA, "k", 1, None),
            Err(KvError::Unavailable(_))
        ));
        assert_eq!(get(&cluster, "t", "k"), None);
        assert!(!delete(&cluster, "t", "k"));
        // Checked before Redis is asked.
        assert_eq!(
            set(
                &cluster,
                "t",
                QUOTA,
                &"k".repeat(MAX_KEY_LEN + 1),
                "v",
                None
            ),
            Err(KvError::KeyTooLong(MAX_KEY_LEN + 1))
        );
    }
}
