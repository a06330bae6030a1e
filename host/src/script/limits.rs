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
        }
    }
}

impl Limits {
    pub fn hook_deadline(&self) -> Duration {
        Duration::from_millis(self.hook_deadline_ms)
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
