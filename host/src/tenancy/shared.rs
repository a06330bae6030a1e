//! Versions shared with other nodes: what tenancy tells the cluster (a
//! local change put another component in service) and what it shows of
//! it. Tenancy knows nothing of Redis; `versions.rs`
//! implements this and drives [`super::Tenancy::adopt`] the other way.

use std::sync::Arc;

use serde::Serialize;

/// The cluster side of the versions, as tenancy sees it. Absent on a
/// node without `[cluster]`: then nothing of this runs.
pub trait SharedVersions: Send + Sync {
    /// A change made on this node (reload, promote, configuration reload)
    /// put the component `wasm` (sha256 `digest`) in service for `tenant`:
    /// offered to the other nodes. Called on a blocking thread, bounded by
    /// the link's timeout. Returns what became of it, for the operator.
    fn publish(&self, tenant: &str, digest: &str, wasm: Arc<[u8]>) -> String;
    /// Tenants were added or removed by a configuration reload: the new
    /// ones take the cluster's versions.
    fn tenants_changed(&self);
    /// What this node knows of the cluster's version of `tenant`.
    fn view(&self, tenant: &str) -> ClusterView;
    /// Every node's version of each tenant, as Redis has them (blocking).
    fn overview(&self, tenants: &[String]) -> Result<serde_json::Value, String>;
}

/// A tenant's version in the cluster, as `wisp ctl tenants` shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClusterView {
    /// The cluster's version (sha256 of the component) as last read from
    /// Redis; None before any was published.
    pub version: Option<String>,
    /// Why this node does not serve the cluster's version, when it
    /// tried and could not.
    pub failed: Option<String>,
    /// A version put in service here while Redis was unavailable, not yet
    /// published (it is when the link comes back).
    pub unpublished: Option<String>,
}
