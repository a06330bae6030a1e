//! Wiring: from a configuration to a running proxy, or to a checked one;
//! and the threads that drive the proxy core ([`driver`]).

mod alarm;
mod bad_request;
mod driver;
mod lanes;
mod shard;
mod signals;
mod worker;

use std::path::PathBuf;

use anyhow::Context;
use std::sync::Arc;

use crate::config::{Config, ConfigFile};
use crate::dns::Resolver;
use crate::metrics::Metrics;
use crate::proxy::Locality;
use crate::script::ScriptEngine;
use crate::services::Services;
use crate::tenancy::{ConfigSource, Tenancy};
use crate::transport::{ConnectionMetrics, Listener, Transports};

use signals::{reload_on_sighup, Shutdown};

/// Runs the proxy until SIGINT or SIGTERM. SIGHUP reloads the tenants from
/// `config_path` (see [`Tenancy::reload_config`]).
pub async fn serve(config: Config, config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let engine = ScriptEngine::new(config.engine.cache_dir.clone())?;
    let cluster = start_cluster(&config)?;
    let services = Services::open(&config.storage, cluster.clone())?;
    services.start()?;
    let flood = services.flood.clone();
    flood.configure(config.flood.clone(), config.trusted.clone());
    log_flood_control(&config);
    raise_descriptor_limit(config.connections.max);
    let metrics = Arc::new(Metrics::new());
    let connection_metrics = ConnectionMetrics::default();
    metrics.register(|registry| connection_metrics.register(registry));
    metrics.register(|registry| flood.register(registry));
    if let Some(cluster) = &cluster {
        metrics.register(|registry| cluster.register(registry));
    }
    let (transports, inbound) = Transports::bind(
        &config.listen,
        &config.connections,
        &config.tls,
        connection_metrics,
    )
    .await?;
    let locality = Arc::new(Locality::new(
        transports.listeners().to_vec(),
        config.aliases.clone(),
    ));
    let tenancy = Arc::new(Tenancy::load(
        engine,
        locality.clone(),
        metrics,
        services.clone(),
        &config.tenancy(),
        config_path.map(|path| {
            Box::new(ConfigFile::new(
                path,
                config.clone(),
                Some(transports.clone()),
            )) as Box<dyn ConfigSource>
        }),
    )?);
    if let Some(cluster) = &cluster {
        // Versions across nodes: local changes published, the cluster's taken.
        crate::tenancy::versions::start(cluster.clone(), tenancy.clone())?;
    }
    warn_open_registrar(&config);
    if let Some(admin) = &config.admin {
        let address = crate::admin::serve(admin, tenancy.clone()).await?;
        tracing::info!(%address, "admin API ready");
    }
    reload_on_sighup(tenancy.clone());
    if config.reload.watch {
        crate::tenancy::watch::spawn(tenancy.clone())?;
        tracing::info!("watching the configuration and component files");
    }
    let listeners = transports.listeners().to_vec();
    let resolver = Resolver::new(&config.dns).context("[dns]")?;
    // Before the first request: from then on a stop must be a clean one.
    let shutdown = Shutdown::listen().context("cannot listen for SIGINT and SIGTERM")?;
    driver::Dispatcher::start(
        worker::Shared {
            transports,
            locality,
            tenancy,
            timers: config.timers,
            admission: Arc::new(crate::proxy::Admission::new(config.proxy)),
            finished: crate::transaction::FinishedLimit::new(config.proxy.max_transactions),
            resolver,
            runtime: tokio::runtime::Handle::current(),
        },
        inbound,
        flood,
    )?;
    // Last: "listening" tells that everything above is in place.
    for l in &listeners {
        tracing::info!(transport = %l.transport, address = %l.local, "listening");
    }
    shutdown.requested().await;
    tracing::info!("shutting down");
    // The persistent bindings the database does not have yet.
    let _ = tokio::task::spawn_blocking(move || services.stop()).await;
    Ok(())
}

/// Loads every tenant's component and instantiates it once, without
/// opening any socket; returns a line per tenant for the operator.
pub fn check(config: &Config) -> anyhow::Result<Vec<String>> {
    Resolver::new(&config.dns).context("[dns]")?;
    let engine = ScriptEngine::new(config.engine.cache_dir.clone())?;
    let listeners = config
        .listen
        .iter()
        .map(|l| Listener {
            transport: l.transport,
            local: l.address,
            advertise: l.advertise.clone(),
        })
        .collect();
    let locality = Arc::new(Locality::new(listeners, config.aliases.clone()));
    // The database is not opened: checking must not create or migrate it.
    let services = Arc::new(Services::with_storage(
        crate::services::Storage::in_memory()?
    ));
    let tenancy = Tenancy::load(
        engine,
        locality,
        Arc::new(Metrics::new()),
        services,
        &config.tenancy(),
        None,
    )?;
    Ok(tenancy
        .status()
        .iter()
        .map(|t| format!("tenant {}: {} ok", t.name, t.stable.origin))
        .collect())
}

/// The link to the cluster's Redis when `[cluster]` asks for one. It does
/// not wait for Redis: a node starts while Redis is away and joins when
/// it comes. Other nodes reach this node's flows at `address`: by default
/// the first UDP listener's advertised or bound address.
fn start_cluster(config: &Config) -> anyhow::Result<Option<Arc<crate::cluster::Cluster>>> {
    let Some(cluster) = &config.cluster else {
        return Ok(None);
    };
    let mut cluster = cluster.clone();
    if cluster.address.is_none() {
        cluster.address = config
            .listen
            .iter()
            .find(|l| l.transport == crate::transport::Transport::Udp)
            .and_then(|l| match &l.advertise {
                Some(advertised) => Some(advertised.clone()),
                None if l.address.ip().is_unspecified() => None,
                None => Some(l.address.to_string()),
            });
        if cluster.address.is_none() {
            tracing::warn!(
                "[cluster] address is not set and no UDP listener has a reachable address: other nodes cannot relay to the flows this node holds"
            );
        }
    }
    let started = crate::cluster::Cluster::start(&cluster)?;
    tracing::info!(
        node = %cluster.node,
        address = cluster.address.as_deref().unwrap_or(""),
        "cluster: state shared through redis"
    );
    Ok(Some(started))
}

/// Says whom wisp trusts and how it limits the others.
fn log_flood_control(config: &Config) {
    let trusted = config.trusted.entries().collect::<Vec<_>>().join(", ");
    let f = &config.flood;
    if f.enabled {
        tracing::info!(
            trusted,
            requests_per_s = f.requests_per_s,
            burst = f.burst,
            ban_s = f.ban_s,
            "flood control: sources not trusted are limited per address"
        );
    } else {
        tracing::warn!(trusted, "flood control off ([flood] enabled = false)");
    }
}

/// The bundled routing without `WITH_AUTH` registers anyone who asks:
/// said once at start, so that no one runs it on a public address unaware.
/// (It relays to other domains only for trusted sources.)
fn warn_open_registrar(config: &Config) {
    for tenant in config.tenant.iter().filter(|t| t.component.is_none()) {
        let auth = tenant.params.get("WITH_AUTH").is_some_and(|v| {
            matches!(v.to_ascii_lowercase().as_str(), "yes" | "true" | "1" | "on")
        });
        if !auth {
            tracing::warn!(
                tenant = %tenant.name,
                "the bundled routing runs without WITH_AUTH: its registrar is open (anyone may register any user) and calls to its users need no authentication; set params = {{ WITH_AUTH = \"yes\" }} and add users with `wisp user add` before putting it on a public address"
            );
        }
    }
}

/// Every connection is a descriptor, and many systems start a process
/// with a soft limit of 1024: raised to the hard limit, as far as the
/// system lets a process raise its own, with a warning when even that is
/// below `[connections] max`.
fn raise_descriptor_limit(max_connections: usize) {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit and setrlimit only read and write `limit`.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
            return;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            // SAFETY: as above.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                limit = raised;
            }
        }
        // Room for what wisp holds besides connections.
        let needed = libc::rlim_t::try_from(max_connections)
            .unwrap_or(libc::rlim_t::MAX)
            .saturating_add(256);
        if limit.rlim_cur < needed {
            tracing::warn!(
                descriptors = limit.rlim_cur,
                needed,
                "the descriptor limit is below [connections] max: raise it (ulimit -n, LimitNOFILE=) or lower max"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = max_connections;
}
