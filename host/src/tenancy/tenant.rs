//! One tenant: the version in service, an optional canary beside it, and
//! the choice between them for each new transaction.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::metrics::{SharedMetrics, TenantMetrics};
use crate::script::{Domains, Pool};

use super::config::{CanaryPolicy, TenantConfig};

pub struct Tenant {
    pub name: String,
    /// What the serving version was built from (config, component digest).
    built_from: Mutex<(TenantConfig, String)>,
    rollout: ArcSwap<Rollout>,
    pub metrics: TenantMetrics,
    all_metrics: SharedMetrics,
    versions_made: AtomicU64,
    /// The `domains` of the config in service: local for every version's
    /// routing, changed in place with the config.
    domains: Arc<Domains>,
    /// Set while the version in service is the cluster's rather than
    /// the configured file's.
    from_cluster: Mutex<Option<FromCluster>>,
}

/// A stable version taken from the cluster (`[cluster]`): its component,
/// kept to build the tenant again when only its params or limits change,
/// and the digest the configured file had when it was taken, to tell a
/// file changed since (a new version to publish) from one left alone.
#[derive(Clone)]
pub(super) struct FromCluster {
    pub wasm: Arc<[u8]>,
    pub file_digest: String,
}

/// The versions serving a tenant.
pub struct Rollout {
    pub stable: Arc<Pool>,
    pub canary: Option<Canary>,
}

/// A new version taking a share of the new transactions.
#[derive(Clone)]
pub struct Canary {
    pub pool: Arc<Pool>,
    pub percent: u8,
    pub policy: CanaryPolicy,
    /// What it was built from, kept for a promotion.
    pub built_from: (TenantConfig, String),
    /// Its component, published to the cluster on a promotion.
    pub wasm: Arc<[u8]>,
}

impl Tenant {
    pub(super) fn new(
        config: TenantConfig,
        digest: String,
        stable: Arc<Pool>,
        metrics: &SharedMetrics,
        domains: Arc<Domains>,
    ) -> Tenant {
        domains.set(&config.domains);
        Tenant {
            domains,
            name: config.name.clone(),
            metrics: metrics.tenant(&config.name),
            all_metrics: metrics.clone(),
            versions_made: AtomicU64::new(stable.guest().version),
            built_from: Mutex::new((config, digest)),
            from_cluster: Mutex::new(None),
            rollout: ArcSwap::from_pointee(Rollout {
                stable,
                canary: None,
            }),
        }
    }

    pub fn config(&self) -> TenantConfig {
        self.built_from().0
    }

    pub(super) fn built_from(&self) -> (TenantConfig, String) {
        self.built_from
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The domains every version of this tenant takes as its own.
    pub(super) fn domains(&self) -> &Arc<Domains> {
        &self.domains
    }

    /// Records the config in service; its `domains` are local at once.
    pub(super) fn set_built_from(&self, config: TenantConfig, digest: String) {
        self.domains.set(&config.domains);
        *self.built_from.lock().unwrap_or_else(|e| e.into_inner()) = (config, digest);
    }

    pub(super) fn cluster_version(&self) -> Option<FromCluster> {
        self.from_cluster
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records where the version in service came from: the cluster, or
    /// (None) this node's files.
    pub(super) fn set_cluster_version(&self, from: Option<FromCluster>) {
        *self.from_cluster.lock().unwrap_or_else(|e| e.into_inner()) = from;
    }

    /// The number the next version of this tenant gets.
    pub(super) fn next_version(&self) -> u64 {
        self.versions_made.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn rollout(&self) -> arc_swap::Guard<Arc<Rollout>> {
        self.rollout.load()
    }

    pub(super) fn set_rollout(&self, rollout: Rollout) {
        self.rollout.store(Arc::new(rollout));
    }

    /// The version a new transaction runs on. A canary takes its share of
    /// calls by Call-ID, so a call's later transactions (ACK, BYE) land on
    /// the same version as its INVITE while both versions serve. A canary
    /// whose error rate passed the tenant's threshold, or that is suspended
    /// for a crash loop, is rolled back here.
    pub fn pick(&self, call_id: Option<&str>) -> Arc<Pool> {
        let rollout = self.rollout.load();
        let Some(canary) = &rollout.canary else {
            return rollout.stable.clone();
        };
        let policy = canary.policy;
        let counts = canary.pool.health().counts();
        let crash_loop = canary
            .pool
            .health()
            .suspended(std::time::Instant::now())
            .is_some();
        if crash_loop
            || counts.calls >= policy.min_calls
                && counts.failures as f64 > policy.max_error_rate * counts.calls as f64
        {
            let stable = rollout.stable.clone();
            let failed = canary.pool.guest().version;
            let rolled_back = Arc::new(Rollout {
                stable: stable.clone(),
                canary: None,
            });
            // Only if nothing changed since the load: an operator's promote
            // or new canary wins, and one worker alone reports the rollback.
            let before = self.rollout.compare_and_swap(&rollout, rolled_back);
            if !Arc::ptr_eq(&before, &rollout) {
                return self.rollout.load().stable.clone();
            }
            self.all_metrics.canary_rolled_back(&self.name);
            tracing::warn!(
                tenant = %self.name,
                version = failed,
                calls = counts.calls,
                failures = counts.failures,
                crash_loop,
                "canary rolled back: a crash loop, or its error rate passed canary.max_error_rate"
            );
            return stable;
        }
        if bucket(call_id) < canary.percent {
            canary.pool.clone()
        } else {
            rollout.stable.clone()
        }
    }
}

/// A call's bucket, 0..100, stable for its Call-ID.
fn bucket(call_id: Option<&str>) -> u8 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    call_id.unwrap_or("").hash(&mut h);
    // The dispatcher shards calls by the same hash; mix it so that the
    // canary's share does not line up with one worker's.
    ((h.finish()
        .rotate_left(29)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        >> 32)
        % 100) as u8
}

#[cfg(test)]
mod tests {
    use super::bucket;

    #[test]
    fn buckets_spread_evenly_and_stay_put() {
        let ids: Vec<String> = (0..10_000).map(|i| format!("{i}-call@host")).collect();
        let under_10 = ids.iter().filter(|id| bucket(Some(id)) < 10).count();
        assert!((800..1200).contains(&under_10), "{under_10} of 10000");
        assert!(ids.iter().all(|id| bucket(Some(id)) == bucket(Some(id))));
        assert!(ids.iter().all(|id| bucket(Some(id)) < 100));
    }
}
