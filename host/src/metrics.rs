//! Counters and histograms per tenant, exported in the Prometheus text
//! format by the admin API (`/metrics`).
//!
//! Each tenant gets its handles once ([`Metrics::tenant`]); counting is
//! then an atomic add on the hot path, with no label lookup.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabel {
    tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    tenant: String,
    kind: String,
}

fn by_tenant(tenant: &str) -> TenantLabel {
    TenantLabel {
        tenant: tenant.to_owned(),
    }
}

fn by_kind(tenant: &str, kind: &str) -> KindLabel {
    KindLabel {
        tenant: tenant.to_owned(),
        kind: kind.to_owned(),
    }
}

/// Every metric of the process.
pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<TenantLabel, Counter>,
    replies: Family<KindLabel, Counter>,
    hook_failures: Family<KindLabel, Counter>,
    rejected: Family<KindLabel, Counter>,
    hook_seconds: Family<KindLabel, Histogram>,
    reloads: Family<KindLabel, Counter>,
    reload_seconds: Family<TenantLabel, Histogram>,
    canary_rollbacks: Family<TenantLabel, Counter>,
}

/// The hooks whose latency is measured, in the order of [`TenantMetrics::hook`].
pub const HOOKS: [&str; 4] = ["route", "on_reply", "on_failure", "on_branch"];

/// One tenant's handles into [`Metrics`].
#[derive(Clone)]
pub struct TenantMetrics {
    pub requests: Counter,
    /// Replies sent upstream, by class 1xx..6xx (index 0 for 1xx).
    replies: [Counter; 6],
    pub traps: Counter,
    pub deadlines: Counter,
    pub instantiate_failures: Counter,
    /// Requests answered 503 without running the guest: crash-loop backoff.
    pub suspended: Counter,
    /// Requests answered 503 because every instance was busy.
    pub busy: Counter,
    hooks: [Histogram; 4],
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let hook_buckets = || {
            Histogram::new([
                2e-6, 5e-6, 10e-6, 20e-6, 50e-6, 100e-6, 200e-6, 500e-6, 1e-3, 5e-3, 20e-3, 100e-3,
            ])
        };
        let reload_buckets =
            || Histogram::new([1e-3, 5e-3, 20e-3, 50e-3, 0.1, 0.5, 1.0, 5.0, 30.0]);
        let m = Metrics {
            registry: Mutex::new(Registry::with_prefix("wisp")),
            requests: Family::default(),
            replies: Family::default(),
            hook_failures: Family::default(),
            rejected: Family::default(),
            hook_seconds: Family::new_with_constructor(hook_buckets),
            reloads: Family::default(),
            reload_seconds: Family::new_with_constructor(reload_buckets),
            canary_rollbacks: Family::default(),
        };
        {
            let mut r = m.lock();
            r.register("requests", "Requests routed, by tenant", m.requests.clone());
            r.register(
                "replies",
                "Replies sent upstream for a tenant's requests, by class (1xx..6xx)",
                m.replies.clone(),
            );
            r.register(
                "hook_failures",
                "Hook calls that failed: trap, deadline, instantiate",
                m.hook_failures.clone(),
            );
            r.register(
                "rejected",
                "Requests answered 503 without running the guest: suspended (crash loop), busy (max_instances)",
                m.rejected.clone(),
            );
            r.register(
                "hook_duration_seconds",
                "Time a hook call took, by tenant and hook",
                m.hook_seconds.clone(),
            );
            r.register(
                "reloads",
                "Changes by tenant and outcome: ok (a new version serving, in full or as a canary), failed, promoted, rolled_back; a configuration reload refused as a whole counts under tenant \"\"",
                m.reloads.clone(),
            );
            r.register(
                "reload_duration_seconds",
                "From a reload command to the new version serving",
                m.reload_seconds.clone(),
            );
            r.register(
                "canary_auto_rollbacks",
                "Canary versions rolled back on their own for their error rate",
                m.canary_rollbacks.clone(),
            );
        }
        m
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The handles a tenant counts with.
    pub fn tenant(&self, tenant: &str) -> TenantMetrics {
        let counter = |family: &Family<KindLabel, Counter>, kind: &str| {
            family.get_or_create(&by_kind(tenant, kind)).clone()
        };
        TenantMetrics {
            requests: self.requests.get_or_create(&by_tenant(tenant)).clone(),
            replies: ["1xx", "2xx", "3xx", "4xx", "5xx", "6xx"].map(|c| counter(&self.replies, c)),
            traps: counter(&self.hook_failures, "trap"),
            deadlines: counter(&self.hook_failures, "deadline"),
            instantiate_failures: counter(&self.hook_failures, "instantiate"),
            suspended: counter(&self.rejected, "suspended"),
            busy: counter(&self.rejected, "busy"),
            hooks: HOOKS.map(|hook| {
                self.hook_seconds
                    .get_or_create(&by_kind(tenant, hook))
                    .clone()
            }),
        }
    }

    /// A reload's outcome and, when it ended with a version serving, its cost.
    pub fn reload(&self, tenant: &str, outcome: &str, took: Option<Duration>) {
        self.reloads.get_or_create(&by_kind(tenant, outcome)).inc();
        if let Some(took) = took {
            self.reload_seconds
                .get_or_create(&by_tenant(tenant))
                .observe(took.as_secs_f64());
        }
    }

    pub fn canary_rolled_back(&self, tenant: &str) {
        self.canary_rollbacks
            .get_or_create(&by_tenant(tenant))
            .inc();
    }

    /// Everything, in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(err) = prometheus_client::encoding::text::encode(&mut out, &self.lock()) {
            tracing::warn!(%err, "cannot encode metrics");
        }
        out
    }
}

impl TenantMetrics {
    /// Counts a reply sent upstream.
    pub fn reply(&self, code: u16) {
        let class = usize::from(code / 100).clamp(1, 6) - 1;
        self.replies[class].inc();
    }

    /// Records how long a hook took (`hook` indexes [`HOOKS`]).
    pub fn hook(&self, hook: usize, took: Duration) {
        if let Some(h) = self.hooks.get(hook) {
            h.observe(took.as_secs_f64());
        }
    }

    /// Replies counted so far, by class (1xx first).
    pub fn replies(&self) -> [u64; 6] {
        self.replies.each_ref().map(Counter::get)
    }
}

/// Shared by the proxy, the tenants and the admin API.
pub type SharedMetrics = Arc<Metrics>;
