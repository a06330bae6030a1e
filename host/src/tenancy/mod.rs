//! Tenants: which one routes a request, the versions of its routing in
//! service, and changing them while calls flow (reload, canary, promote,
//! rollback, configuration reload).
//!
//! Workers read the [`Directory`] and each tenant's [`Rollout`] lock-free
//! (`ArcSwap`). A change builds everything it needs first — compiled,
//! linked, instantiated — and then swaps one pointer; a failure on the way
//! changes nothing. A transaction holds the `Arc<Pool>` it started on, so
//! in-flight transactions finish on their version, which is dropped with
//! the last of them.

mod build;
mod config;
mod directory;
mod hooks;
mod shared;
mod tenant;
pub mod versions;
pub mod watch;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde::Serialize;

pub use config::{check, CanaryPolicy, ReloadConfig, RoutingConfig, TenancyConfig, TenantConfig};
pub use directory::{Directory, Selected};
pub use hooks::TenantHooks;
pub use shared::{ClusterView, SharedVersions};
pub use tenant::{Canary, Rollout, Tenant};

use tenant::FromCluster;

use crate::metrics::SharedMetrics;
use crate::proxy::{Locality, Source};
use crate::script::{Domains, Pool, ScriptEngine};
use crate::services::Services;
use crate::sip::Message;

/// Why a change to the tenants was refused; nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum TenancyError {
    #[error("no tenant named \"{0}\"")]
    UnknownTenant(String),
    #[error("tenant \"{0}\" has no canary")]
    NoCanary(String),
    #[error("canary percentage {0} is not between 1 and 100")]
    BadPercent(u8),
    #[error("wisp was started without a configuration file: nothing to reload")]
    NoConfigFile,
    #[error("{0:#}")]
    Load(anyhow::Error),
}

/// What a change did, for the operator.
#[derive(Debug, Clone, Serialize)]
pub struct ChangeReport {
    pub tenant: String,
    /// added, reloaded, canary, promoted, rolled back, removed, unchanged
    pub action: &'static str,
    /// The version now serving the change (the new one, the promoted one...).
    pub version: Option<u64>,
    pub origin: Option<String>,
    /// From the command to the new version serving.
    pub took_ms: f64,
    /// With `[cluster]`: whether the new version was published to the
    /// other nodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
}

/// A version as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct VersionStatus {
    pub version: u64,
    pub origin: String,
    /// The sha256 of its component: the same on every node serving it.
    pub digest: String,
    pub hook_calls: u64,
    pub hook_failures: u64,
    pub instances: usize,
    /// Set while a crash loop keeps it from running.
    pub suspended_ms: Option<u64>,
}

/// A tenant as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct TenantStatus {
    pub name: String,
    pub domains: Vec<String>,
    pub listeners: Vec<String>,
    pub stable: VersionStatus,
    pub canary: Option<VersionStatus>,
    pub canary_percent: Option<u8>,
    /// With `[cluster]`: the cluster's version of this tenant and whether
    /// this node serves it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterView>,
    pub requests: u64,
    /// Replies sent upstream by class: 1xx, 2xx, ... 6xx.
    pub replies: [u64; 6],
    pub traps: u64,
    pub deadline_hits: u64,
    pub suspended_requests: u64,
    pub busy_requests: u64,
}

/// The configuration file, as a configuration reload reads it again. The
/// server level implements it: it knows the whole file, and what in it
/// needs a restart; tenancy knows only its own sections.
pub trait ConfigSource: Send + Sync {
    /// The file, watched by `[reload] watch`.
    fn path(&self) -> &Path;
    /// Reads and checks the whole file again; tenancy's sections of it.
    fn load(&self) -> anyhow::Result<TenancyConfig>;
    /// Other files whose change is a reload under `[reload] watch`
    /// (certificates).
    fn more_files(&self) -> Vec<PathBuf> {
        Vec::new()
    }
    /// A reload was applied: what lives outside tenancy takes it too
    /// (certificates are read again). Failures are the source's to log.
    fn applied(&self) {}
}

pub struct Tenancy {
    engine: Arc<ScriptEngine>,
    locality: Arc<Locality>,
    metrics: SharedMetrics,
    services: Arc<Services>,
    directory: ArcSwap<Directory>,
    /// Absent when wisp runs without a configuration file.
    file: Option<Box<dyn ConfigSource>>,
    /// The sections the directory was built from.
    applied: Mutex<TenancyConfig>,
    /// One change at a time: each builds off the hot path, then swaps.
    changing: Mutex<()>,
    /// With `[cluster]`: where local changes are published.
    shared: OnceLock<Arc<dyn SharedVersions>>,
}

impl Tenancy {
    /// Loads every tenant of the configuration; fails on the first that
    /// cannot serve, naming it.
    pub fn load(
        engine: Arc<ScriptEngine>,
        locality: Arc<Locality>,
        metrics: SharedMetrics,
        services: Arc<Services>,
        config: &TenancyConfig,
        file: Option<Box<dyn ConfigSource>>,
    ) -> anyhow::Result<Tenancy> {
        let mut tenants = Vec::with_capacity(config.tenants.len());
        for t in &config.tenants {
            let tenant = new_tenant(&engine, &locality, &services, &metrics, t)
                .map_err(|err| err.context(format!("tenant {}", t.name)))?;
            tenants.push(Arc::new(tenant));
        }
        services.dispatcher.configure(
            config
                .tenants
                .iter()
                .map(|t| (t.name.as_str(), &t.dispatcher)),
        );
        Ok(Tenancy {
            directory: ArcSwap::from_pointee(Directory::new(tenants, &config.routing)),
            engine,
            locality,
            metrics,
            services,
            file,
            applied: Mutex::new(config.clone()),
            changing: Mutex::new(()),
            shared: OnceLock::new(),
        })
    }

    pub fn metrics(&self) -> &SharedMetrics {
        &self.metrics
    }

    /// From now on, local changes are published to the cluster through
    /// `shared` (once, at start, with `[cluster]`).
    pub fn share_versions(&self, shared: Arc<dyn SharedVersions>) {
        if self.shared.set(shared).is_err() {
            tracing::warn!("versions are already shared; the second link is ignored");
        }
    }

    /// Offers a version put in service here to the other nodes; what
    /// became of it, for the change report (None without `[cluster]`).
    fn publish(&self, tenant: &str, digest: &str, wasm: Arc<[u8]>) -> Option<String> {
        self.shared
            .get()
            .map(|shared| shared.publish(tenant, digest, wasm))
    }

    pub fn directory(&self) -> arc_swap::Guard<Arc<Directory>> {
        self.directory.load()
    }

    /// The tenant for a request, and so the version its transaction runs on.
    pub fn select(&self, msg: &Message, source: &Source) -> Selected {
        let local = self
            .locality
            .listeners()
            .get(source.listener)
            .map(|l| l.local);
        self.directory.load().select(msg, local)
    }

    fn lock_changes(&self) -> std::sync::MutexGuard<'_, ()> {
        self.changing.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn tenant(&self, name: &str) -> Result<Arc<Tenant>, TenancyError> {
        self.directory
            .load()
            .get(name)
            .cloned()
            .ok_or_else(|| TenancyError::UnknownTenant(name.to_owned()))
    }

    /// A new version of one tenant, from its configured component or from
    /// `component`: in service at once, or for `canary` percent of new
    /// calls beside the current one.
    pub fn reload_tenant(
        &self,
        name: &str,
        component: Option<PathBuf>,
        canary: Option<u8>,
    ) -> Result<ChangeReport, TenancyError> {
        let started = Instant::now();
        if let Some(p) = canary {
            if !(1..=100).contains(&p) {
                return Err(TenancyError::BadPercent(p));
            }
        }
        let _changing = self.lock_changes();
        let tenant = self.tenant(name)?;
        let mut config = tenant.config();
        if let Some(component) = component {
            config.component = Some(component);
        }
        let version = tenant.next_version();
        let built = build::read_component(&config).and_then(|(wasm, origin)| {
            let (pool, digest) = build::build_from(
                &self.engine,
                &self.locality,
                &self.services,
                tenant.metrics.clone(),
                tenant.domains(),
                &config,
                version,
                &wasm,
                &origin,
            )?;
            Ok(((pool, digest), Arc::<[u8]>::from(wasm)))
        });
        let ((pool, digest), wasm) = match built {
            Ok(built) => built,
            Err(err) => {
                self.metrics.reload(name, "failed", None);
                tracing::warn!(tenant = name, err = %format!("{err:#}"), "reload refused; the serving version stays");
                return Err(TenancyError::Load(err));
            }
        };
        let origin = pool.origin().to_owned();
        let stable = tenant.rollout().stable.clone();
        // A canary stays on this node: the cluster's version is the
        // stable one, published when it changes (here or on a promotion).
        let (action, published) = match canary {
            Some(percent) => {
                tenant.set_rollout(Rollout {
                    stable,
                    canary: Some(Canary {
                        pool,
                        percent,
                        policy: config.canary,
                        built_from: (config, digest),
                        wasm,
                    }),
                });
                ("canary", None)
            }
            None => {
                tenant.set_built_from(config, digest.clone());
                tenant.set_cluster_version(None);
                tenant.set_rollout(Rollout {
                    stable: pool,
                    canary: None,
                });
                ("reloaded", Some((digest, wasm)))
            }
        };
        let took = started.elapsed();
        self.metrics.reload(name, "ok", Some(took));
        tracing::info!(tenant = name, version, %origin, action, took_ms = ms(took), "reload: new version serving");
        let mut report = report(name, action, Some(version), Some(origin), took);
        if let Some((digest, wasm)) = published {
            report.cluster = self.publish(name, &digest, wasm);
        }
        Ok(report)
    }

    /// The canary becomes the version in service for every new call.
    pub fn promote(&self, name: &str) -> Result<ChangeReport, TenancyError> {
        let started = Instant::now();
        let _changing = self.lock_changes();
        let tenant = self.tenant(name)?;
        let rollout = tenant.rollout();
        let canary = rollout
            .canary
            .as_ref()
            .ok_or_else(|| TenancyError::NoCanary(name.to_owned()))?;
        let pool = canary.pool.clone();
        let (config, digest) = canary.built_from.clone();
        let wasm = canary.wasm.clone();
        tenant.set_built_from(config, digest.clone());
        tenant.set_cluster_version(None);
        let version = pool.guest().version;
        let origin = pool.origin().to_owned();
        tenant.set_rollout(Rollout {
            stable: pool,
            canary: None,
        });
        self.metrics.reload(name, "promoted", None);
        tracing::info!(tenant = name, version, "canary promoted");
        let mut report = report(
            name,
            "promoted",
            Some(version),
            Some(origin),
            started.elapsed(),
        );
        report.cluster = self.publish(name, &digest, wasm);
        Ok(report)
    }

    /// Puts the cluster's version of a tenant in service on this node:
    /// `wasm`, whose sha256 the caller checked is `digest`, built with
    /// this node's params and limits for the tenant. The canary, if any,
    /// stays beside it. Nothing is published: it came from the cluster.
    pub fn adopt(
        &self,
        name: &str,
        digest: &str,
        wasm: Arc<[u8]>,
    ) -> Result<ChangeReport, TenancyError> {
        let started = Instant::now();
        let _changing = self.lock_changes();
        let tenant = self.tenant(name)?;
        let (config, served) = tenant.built_from();
        if served == digest {
            return Ok(report(name, "unchanged", None, None, started.elapsed()));
        }
        let version = tenant.next_version();
        let origin = format!("cluster version {}", short(digest));
        let built = build::build_from(
            &self.engine,
            &self.locality,
            &self.services,
            tenant.metrics.clone(),
            tenant.domains(),
            &config,
            version,
            &wasm,
            &origin,
        );
        let (pool, _) = built.map_err(TenancyError::Load)?;
        // The file's digest when it was last what served, so that a
        // configuration reload tells whether the file changed since.
        let file_digest = tenant
            .cluster_version()
            .map_or(served, |from| from.file_digest);
        tenant.set_cluster_version(Some(FromCluster { wasm, file_digest }));
        tenant.set_built_from(config, digest.to_owned());
        let canary = tenant.rollout().canary.clone();
        tenant.set_rollout(Rollout {
            stable: pool,
            canary,
        });
        let took = started.elapsed();
        self.metrics.reload(name, "cluster", Some(took));
        tracing::info!(tenant = name, version, %origin, took_ms = ms(took), "the cluster's version serving");
        Ok(report(name, "adopted", Some(version), Some(origin), took))
    }

    /// The sha256 of the component of the tenant's version in service.
    pub fn served_digest(&self, name: &str) -> Option<String> {
        Some(self.tenant(name).ok()?.built_from().1)
    }

    pub fn tenant_names(&self) -> Vec<String> {
        self.directory
            .load()
            .tenants()
            .iter()
            .map(|t| t.name.clone())
            .collect()
    }

    /// Every node's version of every tenant, from Redis; None without
    /// `[cluster]`.
    pub fn cluster_overview(&self) -> Option<Result<serde_json::Value, String>> {
        let shared = self.shared.get()?;
        Some(shared.overview(&self.tenant_names()))
    }

    /// Drops the canary: every new call goes to the version in service.
    pub fn rollback(&self, name: &str) -> Result<ChangeReport, TenancyError> {
        let started = Instant::now();
        let _changing = self.lock_changes();
        let tenant = self.tenant(name)?;
        let rollout = tenant.rollout();
        if rollout.canary.is_none() {
            return Err(TenancyError::NoCanary(name.to_owned()));
        }
        let stable = rollout.stable.clone();
        let version = stable.guest().version;
        let origin = stable.origin().to_owned();
        tenant.set_rollout(Rollout {
            stable,
            canary: None,
        });
        self.metrics.reload(name, "rolled_back", None);
        tracing::info!(tenant = name, version, "canary rolled back");
        Ok(report(
            name,
            "rolled back",
            Some(version),
            Some(origin),
            started.elapsed(),
        ))
    }

    /// Reads the configuration file again and applies its tenants: new
    /// ones added, removed ones dropped, changed ones (config or component
    /// file) given a new version. All are built before any is swapped in;
    /// one failure changes nothing. Listeners, aliases and timers need a
    /// restart and are left as they are (the [`ConfigSource`] warns).
    pub fn reload_config(&self) -> Result<Vec<ChangeReport>, TenancyError> {
        let outcome = self.try_reload_config();
        if let Err(err) = &outcome {
            self.metrics.reload("", "failed", None);
            tracing::warn!(%err, "configuration reload refused; nothing changed");
        }
        outcome
    }

    fn try_reload_config(&self) -> Result<Vec<ChangeReport>, TenancyError> {
        let started = Instant::now();
        let file = self.file.as_ref().ok_or(TenancyError::NoConfigFile)?;
        let config = file.load().map_err(TenancyError::Load)?;
        let _changing = self.lock_changes();
        // Tenants may only claim listeners that are bound now: new
        // [[listen]] entries wait for a restart.
        for t in &config.tenants {
            for listener in &t.listeners {
                if !self
                    .locality
                    .listeners()
                    .iter()
                    .any(|l| l.local == *listener)
                {
                    return Err(TenancyError::Load(anyhow::anyhow!(
                        "tenant {}: listener {listener} is not bound (new [[listen]] entries need a restart)",
                        t.name
                    )));
                }
            }
        }
        let current = self.directory.load();
        let mut tenants = Vec::with_capacity(config.tenants.len());
        let mut reports = Vec::new();
        // Built, not yet serving: (tenant, config, digest, pool, from the
        // cluster).
        let mut pending = Vec::new();
        let mut unchanged = Vec::new();
        // New components in service, for the cluster: (tenant, digest, wasm).
        let mut to_publish = Vec::new();
        for t in &config.tenants {
            let Some(existing) = current.get(&t.name) else {
                let tenant = new_tenant(
                    &self.engine,
                    &self.locality,
                    &self.services,
                    &self.metrics,
                    t,
                )
                .map_err(|err| TenancyError::Load(err.context(format!("tenant {}", t.name))))?;
                let stable = tenant.rollout().stable.clone();
                reports.push((t.name.clone(), "added", Some(stable)));
                tenants.push(Arc::new(tenant));
                continue;
            };
            let in_context =
                |err: anyhow::Error| TenancyError::Load(err.context(format!("tenant {}", t.name)));
            let (old_config, old_digest) = existing.built_from();
            let (file_wasm, file_origin) = build::read_component(t).map_err(in_context)?;
            let file_digest = build::digest(&file_wasm);
            // Serving the cluster's version and the file unchanged since it
            // was taken: the cluster's version is the one to keep (or to
            // build again with new params). A changed file wins: it is a
            // new version of this node's, published below.
            let from_cluster = existing
                .cluster_version()
                .filter(|from| from.file_digest == file_digest);
            let digest = match &from_cluster {
                Some(_) => old_digest.clone(),
                None => file_digest,
            };
            if same_routing(&old_config, t) && digest == old_digest {
                // Domains or listeners may differ: recorded at the swap.
                unchanged.push((existing.clone(), t.clone(), digest));
                reports.push((t.name.clone(), "unchanged", None));
            } else {
                let version = existing.next_version();
                let cluster_origin = format!("cluster version {}", short(&digest));
                let (wasm, origin) = match &from_cluster {
                    Some(from) => (&from.wasm[..], cluster_origin.as_str()),
                    None => (&file_wasm[..], file_origin.as_str()),
                };
                let (pool, digest) = build::build_from(
                    &self.engine,
                    &self.locality,
                    &self.services,
                    existing.metrics.clone(),
                    existing.domains(),
                    t,
                    version,
                    wasm,
                    origin,
                )
                .map_err(in_context)?;
                if digest != old_digest {
                    to_publish.push((t.name.clone(), digest.clone(), Arc::from(wasm)));
                }
                reports.push((t.name.clone(), "reloaded", Some(pool.clone())));
                pending.push((existing.clone(), t.clone(), digest, pool, from_cluster));
            }
            tenants.push(existing.clone());
        }
        // Everything is built: swap.
        for (tenant, config, digest) in unchanged {
            tenant.set_built_from(config, digest);
        }
        for (tenant, config, digest, pool, from_cluster) in pending {
            tenant.set_built_from(config, digest);
            tenant.set_cluster_version(from_cluster);
            tenant.set_rollout(Rollout {
                stable: pool,
                canary: None,
            });
        }
        for gone in current.tenants() {
            if !config.tenants.iter().any(|t| t.name == gone.name) {
                reports.push((gone.name.clone(), "removed", None));
            }
        }
        let tenants_changed = reports
            .iter()
            .any(|(_, action, _)| matches!(*action, "added" | "removed"));
        self.directory
            .store(Arc::new(Directory::new(tenants, &config.routing)));
        self.services.dispatcher.configure(
            config
                .tenants
                .iter()
                .map(|t| (t.name.as_str(), &t.dispatcher)),
        );
        *self.applied.lock().unwrap_or_else(|e| e.into_inner()) = config;
        file.applied();
        let took = started.elapsed();
        let mut reports: Vec<ChangeReport> = reports
            .into_iter()
            .map(|(tenant, action, pool)| {
                if action != "unchanged" {
                    self.metrics.reload(&tenant, "ok", Some(took));
                    tracing::info!(tenant, action, took_ms = ms(took), "configuration reload");
                }
                report(
                    &tenant,
                    action,
                    pool.as_ref().map(|p| p.guest().version),
                    pool.as_ref().map(|p| p.origin().to_owned()),
                    took,
                )
            })
            .collect();
        for (tenant, digest, wasm) in to_publish {
            let outcome = self.publish(&tenant, &digest, wasm);
            if let Some(r) = reports.iter_mut().find(|r| r.tenant == tenant) {
                r.cluster = outcome;
            }
        }
        if tenants_changed {
            if let Some(shared) = self.shared.get() {
                shared.tenants_changed();
            }
        }
        Ok(reports)
    }

    /// The configuration file and the component files it names: what
    /// `[reload] watch` watches.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        self.file
            .iter()
            .flat_map(|f| std::iter::once(f.path().to_owned()).chain(f.more_files()))
            .chain(applied.tenants.iter().filter_map(|t| t.component.clone()))
            .collect()
    }

    /// Every tenant, its versions and counters.
    pub fn status(&self) -> Vec<TenantStatus> {
        let now = Instant::now();
        self.directory
            .load()
            .tenants()
            .iter()
            .map(|t| {
                let rollout = t.rollout();
                let config = t.config();
                let m = &t.metrics;
                TenantStatus {
                    name: t.name.clone(),
                    domains: config.domains.clone(),
                    listeners: config.listeners.iter().map(ToString::to_string).collect(),
                    stable: version_status(&rollout.stable, t.built_from().1, now),
                    canary: rollout
                        .canary
                        .as_ref()
                        .map(|c| version_status(&c.pool, c.built_from.1.clone(), now)),
                    canary_percent: rollout.canary.as_ref().map(|c| c.percent),
                    cluster: self.shared.get().map(|s| s.view(&t.name)),
                    requests: m.requests.get(),
                    replies: m.replies(),
                    traps: m.traps.get(),
                    deadline_hits: m.deadlines.get(),
                    suspended_requests: m.suspended.get(),
                    busy_requests: m.busy.get(),
                }
            })
            .collect()
    }
}

fn new_tenant(
    engine: &ScriptEngine,
    locality: &Arc<Locality>,
    services: &Arc<Services>,
    metrics: &SharedMetrics,
    config: &TenantConfig,
) -> anyhow::Result<Tenant> {
    let domains = Arc::new(Domains::new(&config.domains));
    let (pool, digest) = build::build_version(
        engine,
        locality,
        services,
        metrics.tenant(&config.name),
        &domains,
        config,
        1,
    )?;
    Ok(Tenant::new(config.clone(), digest, pool, metrics, domains))
}

/// Whether two tenant configs make the same version (domains and listeners
/// only steer requests to it).
fn same_routing(a: &TenantConfig, b: &TenantConfig) -> bool {
    a.component == b.component
        && a.params == b.params
        && a.limits == b.limits
        && a.canary == b.canary
}

fn version_status(pool: &Pool, digest: String, now: Instant) -> VersionStatus {
    let counts = pool.health().counts();
    VersionStatus {
        version: pool.guest().version,
        origin: pool.origin().to_owned(),
        digest,
        hook_calls: counts.calls,
        hook_failures: counts.failures,
        instances: pool.instances(),
        suspended_ms: pool.health().suspended(now).map(|d| d.as_millis() as u64),
    }
}

fn report(
    tenant: &str,
    action: &'static str,
    version: Option<u64>,
    origin: Option<String>,
    took: Duration,
) -> ChangeReport {
    ChangeReport {
        tenant: tenant.to_owned(),
        action,
        version,
        origin,
        took_ms: ms(took),
        cluster: None,
    }
}

/// A digest short enough for a log line or an origin.
fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}
