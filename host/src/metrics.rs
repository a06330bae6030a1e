//! Counters and histograms per tenant, exported in the Prometheus text
//! format by the admin API (`/metrics`).
//!
//! Each tenant gets its handles once ([`Metrics::tenant`]); counting is
//! then an atomic add on the hot path, with no label lookup.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::{MetricType, TypedMetric};
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
    hook_seconds: Family<KindLabel, HookHistogram>,
    reloads: Family<KindLabel, Counter>,
    reload_seconds: Family<TenantLabel, Histogram>,
    canary_rollbacks: Family<TenantLabel, Counter>,
    ratelimit: Family<KindLabel, Counter>,
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
    /// Requests answered 503 because the tenant used its hook time of
    /// the second (`hook_budget_ms_per_s`).
    pub over_budget: Counter,
    /// Requests answered 503 (or dropped) because the tenant's queue was
    /// full: its hooks could not keep up.
    pub queue_full: Counter,
    hooks: [HookHistogram; 4],
    /// `ratelimit.check` calls past their limit.
    pub ratelimit_refused: Counter,
    /// Bans started by `ratelimit.ban`.
    pub ratelimit_bans: Counter,
}

/// Upper bounds of the hook latency buckets, in seconds.
const HOOK_BUCKETS: [f64; 12] = [
    2e-6, 5e-6, 10e-6, 20e-6, 50e-6, 100e-6, 200e-6, 500e-6, 1e-3, 5e-3, 20e-3, 100e-3,
];

/// A histogram of hook latencies observed with atomic adds alone.
///
/// Every hook call of every worker observes one; prometheus-client's
/// `Histogram` takes a write lock per observation, which the workers of a
/// tenant would contend for. A scrape reads the counters one by one, so
/// it may see an observation in its bucket but not yet in the sum; the next
/// scrape is whole again.
#[derive(Clone, Debug)]
pub struct HookHistogram {
    inner: Arc<HookCounts>,
}

#[derive(Debug)]
struct HookCounts {
    /// One per bound of [`HOOK_BUCKETS`], then +Inf; not cumulative.
    buckets: [AtomicU64; HOOK_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Default for HookHistogram {
    fn default() -> Self {
        HookHistogram {
            inner: Arc::new(HookCounts {
                buckets: std::array::from_fn(|_| AtomicU64::new(0)),
                sum_nanos: AtomicU64::new(0),
            }),
        }
    }
}

impl HookHistogram {
    pub fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let bucket = HOOK_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(HOOK_BUCKETS.len());
        self.inner.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.inner.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Observations so far, by bucket (+Inf last) and in all.
    fn counts(&self) -> ([(f64, u64); HOOK_BUCKETS.len() + 1], u64) {
        let mut total = 0;
        let buckets = std::array::from_fn(|i| {
            let n = self.inner.buckets[i].load(Ordering::Relaxed);
            total += n;
            // prometheus-client writes its own +Inf bucket as f64::MAX too.
            (HOOK_BUCKETS.get(i).copied().unwrap_or(f64::MAX), n)
        });
        (buckets, total)
    }
}

impl TypedMetric for HookHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for HookHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (buckets, count) = self.counts();
        let sum = self.inner.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// The heap allocations of the process (`--features count-allocations`
/// only: see [`crate::alloc_count`]).
#[cfg(feature = "count-allocations")]
#[derive(Debug)]
struct Allocations;

#[cfg(feature = "count-allocations")]
impl TypedMetric for Allocations {
    const TYPE: MetricType = MetricType::Counter;
}

#[cfg(feature = "count-allocations")]
impl EncodeMetric for Allocations {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&crate::alloc_count::allocations(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let reload_buckets =
            || Histogram::new([1e-3, 5e-3, 20e-3, 50e-3, 0.1, 0.5, 1.0, 5.0, 30.0]);
        let m = Metrics {
            registry: Mutex::new(Registry::with_prefix("wisp")),
            requests: Family::default(),
            replies: Family::default(),
            hook_failures: Family::default(),
            rejected: Family::default(),
            hook_seconds: Family::default(),
            reloads: Family::default(),
            reload_seconds: Family::new_with_constructor(reload_buckets),
            canary_rollbacks: Family::default(),
            ratelimit: Family::default(),
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
                "Requests answered 503 without running the guest: suspended (crash loop), busy (max_instances), budget (hook_budget_ms_per_s), queue_full (the tenant's queue)",
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
            r.register(
                "ratelimit",
                "The routing's rate limits and bans (ratelimit interface): refused (a check past its limit), bans (bans it started)",
                m.ratelimit.clone(),
            );
            #[cfg(feature = "count-allocations")]
            r.register(
                "allocations",
                "Heap allocations since the start (a build with --features count-allocations)",
                Allocations,
            );
        }
        m
    }

    /// Adds metrics kept elsewhere (the transports') to what is rendered.
    pub fn register(&self, add: impl FnOnce(&mut Registry)) {
        add(&mut self.lock());
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
            over_budget: counter(&self.rejected, "budget"),
            queue_full: counter(&self.rejected, "queue_full"),
            hooks: HOOKS.map(|hook| {
                self.hook_seconds
                    .get_or_create(&by_kind(tenant, hook))
                    .clone()
            }),
            ratelimit_refused: counter(&self.ratelimit, "refused"),
            ratelimit_bans: counter(&self.ratelimit, "bans"),
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
            h.observe(took);
        }
    }

    /// Replies counted so far, by class (1xx first).
    pub fn replies(&self) -> [u64; 6] {
        self.replies.each_ref().map(Counter::get)
    }
}

/// Shared by the proxy, the tenants and the admin API.
pub type SharedMetrics = Arc<Metrics>;

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::{Metric, Unit};

    fn text(metric: impl Metric) -> String {
        let mut registry = Registry::default();
        registry.register_with_unit("hook", "help", Unit::Seconds, metric);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).expect("encodes");
        out
    }

    /// The lock-free histogram is written as prometheus-client's own, but
    /// for the last digits of the sum (nanoseconds summed, not seconds).
    #[test]
    fn hook_histogram_encodes_as_a_histogram() {
        let ours = HookHistogram::default();
        let stock = Histogram::new(HOOK_BUCKETS);
        for micros in [1, 3, 3, 40, 900, 250_000] {
            let took = Duration::from_micros(micros);
            ours.observe(took);
            stock.observe(took.as_secs_f64());
        }
        let (ours, stock) = (text(ours), text(stock));
        let without_sum = |t: &str| {
            t.lines()
                .filter(|l| !l.starts_with("hook_seconds_sum"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(without_sum(&ours), without_sum(&stock));
        let sum = ours
            .lines()
            .find_map(|l| l.strip_prefix("hook_seconds_sum "))
            .and_then(|v| v.parse::<f64>().ok())
            .expect("a sum");
        assert!((sum - 0.250947).abs() < 1e-9, "{ours}");
        assert!(ours.contains("hook_seconds_count 6"), "{ours}");
    }
}
