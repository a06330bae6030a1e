//! What one hook call of a tenant may use: the `limits` of a `[[tenant]]`
//! in the configuration file, enforced by the pool, the store and the
//! health check of the version.

use std::time::Duration;

use serde::Deserialize;

/// What one hook call of a tenant may use.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Wall-clock time a hook may run before it is stopped, in milliseconds.
    pub hook_deadline_ms: u64,
    /// Linear memory an instance may grow to, in MiB.
    pub memory_mib: u64,
    /// Warm instances kept ready between messages.
    pub idle_instances: usize,
    /// Instances alive at once (busy and idle); a request that would need
    /// one more is answered 503.
    pub max_instances: usize,
    /// Hook failures in a row (trap, deadline, instantiation) that make a
    /// crash loop: the tenant's requests are then answered 503 without
    /// running its guest for `backoff_ms`, doubling while it goes on.
    pub crash_loop_failures: u32,
    pub backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// Headers one hook call may add: `fields.append` and `fields.set` on
    /// a request or a response, `set-body`'s Content-Type, and each header
    /// of a `reply` the hook returns (the replies the services hand back
    /// are the host's and not counted). Past it the call fails, or the
    /// decision is answered 500.
    pub headers_per_hook: usize,
    /// Bytes of text one hook call may hand the host to put in messages:
    /// header names and values, bodies, reply reasons, Request-URIs
    /// (`set-uri`), branch URIs and destinations. Past it the call fails,
    /// or the decision is answered 500.
    pub bytes_per_hook: usize,
    /// Branches one hook call may ask for: `append-branch` calls and the
    /// `relay` decision (the host's own lookup adds branches too, 16 at
    /// most).
    pub branches_per_hook: usize,
    /// Stateless `forward` decisions in one hook call.
    pub forwards_per_hook: usize,
    /// Replies one hook call may decide (a hook returns one decision: 0
    /// refuses every `reply`, and the services' replies with them).
    pub replies_per_hook: usize,
    /// Variables (`vars.set`) a transaction may hold at once; past it
    /// `set` is not allowed.
    pub vars: usize,
    /// Bytes of variable names and values a transaction may hold at once.
    pub var_bytes: usize,
    /// Keys the tenant may hold in the key-value store.
    pub kv_keys: usize,
    /// Bytes the tenant's keys may take in the key-value store: keys,
    /// values and a fixed overhead per key (see `services::kv`).
    pub kv_bytes: usize,
    /// Bindings one address of record may have, whatever the routing asks
    /// (`registrar.save`'s `max-contacts` may only lower it): a REGISTER
    /// past it is refused 403. Bounds what a lookup forks to and what a
    /// REGISTER query answers.
    pub max_bindings_per_aor: u32,
    /// Addresses of record the tenant may have registered at once: a
    /// REGISTER of one more is refused 403.
    pub max_aors: u32,
    /// Hook time the tenant may use per second, all its hooks and workers
    /// together, in milliseconds. Past it, its new requests are answered
    /// 503 with Retry-After until the next second (its calls in progress
    /// still get their reply and failure hooks). The default, 1000 (a
    /// whole core), is far above what a normal tenant uses (a hook call
    /// takes microseconds); a lower value shares the cores out.
    pub hook_budget_ms_per_s: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            hook_deadline_ms: 50,
            memory_mib: 64,
            idle_instances: 64,
            max_instances: 256,
            crash_loop_failures: 5,
            backoff_ms: 1000,
            max_backoff_ms: 60_000,
            headers_per_hook: 64,
            bytes_per_hook: 64 << 10,
            branches_per_hook: 32,
            forwards_per_hook: 8,
            replies_per_hook: 8,
            vars: 64,
            var_bytes: 16 << 10,
            kv_keys: 10_000,
            kv_bytes: 4 << 20,
            max_bindings_per_aor: 10,
            max_aors: 100_000,
            hook_budget_ms_per_s: 1000,
        }
    }
}

impl Limits {
    pub fn hook_deadline(&self) -> Duration {
        Duration::from_millis(self.hook_deadline_ms)
    }

    /// The tenant's share of the key-value store.
    pub fn kv_quota(&self) -> crate::services::kv::Quota {
        crate::services::kv::Quota {
            keys: self.kv_keys,
            bytes: self.kv_bytes,
        }
    }

    /// The checks serde cannot express: limits no hook could run within.
    /// The error names the field; the caller says whose limits they are.
    pub fn check(&self) -> Result<(), String> {
        if self.hook_deadline_ms == 0 {
            return Err("hook_deadline_ms must be above 0".into());
        }
        if self.memory_mib == 0 {
            return Err("memory_mib must be above 0".into());
        }
        if self.max_instances == 0 {
            return Err("max_instances must be above 0".into());
        }
        if self.max_bindings_per_aor == 0 || self.max_aors == 0 {
            return Err("max_bindings_per_aor and max_aors must be above 0".into());
        }
        if self.hook_budget_ms_per_s == 0 {
            return Err("hook_budget_ms_per_s must be above 0".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_left_out_keep_their_defaults() {
        let limits: Limits = toml::from_str("hook_deadline_ms = 20").expect("limits");
        assert_eq!(limits.hook_deadline(), Duration::from_millis(20));
        assert_eq!(limits.memory_mib, Limits::default().memory_mib);
        assert!(toml::from_str::<Limits>("fuel = 1").is_err());
    }

    #[test]
    fn a_limit_no_hook_runs_within_is_refused() {
        assert!(Limits::default().check().is_ok());
        let zero = Limits {
            memory_mib: 0,
            ..Limits::default()
        };
        assert_eq!(zero.check().unwrap_err(), "memory_mib must be above 0");
    }
}
