//! Wiring: from a configuration to a running proxy, or to a checked one.

use std::sync::Arc;

use anyhow::Context;

use crate::config::{Config, TenantConfig};
use crate::proxy::{Locality, Proxy, Tenant};
use crate::script::{Guest, ScriptEngine, DEFAULT_COMPONENT};
use crate::services::permissions::AllowList;
use crate::services::Services;
use crate::transport::{Listener, Transports};

/// Runs the proxy until SIGINT or SIGTERM.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let engine = ScriptEngine::new(config.engine.cache_dir.clone())?;
    let services = Services::open(&config.storage.path)?;
    services.start()?;
    let (transports, inbound) = Transports::bind(&config.listen).await?;
    let locality = Arc::new(Locality::new(
        transports.listeners().to_vec(),
        config.aliases.clone(),
    ));
    let tenants = load_tenants(&engine, &config, &locality, &services)?;
    for l in transports.listeners() {
        tracing::info!(transport = %l.transport, address = %l.local, "listening");
    }
    let proxy = Proxy::new(transports, locality, tenants, config.timers);
    tokio::spawn(proxy.run(inbound));
    shutdown_signal().await;
    tracing::info!("shutting down");
    Ok(())
}

/// Loads every tenant's component and instantiates it once, without
/// opening any socket; returns a line per tenant for the operator.
pub fn check(config: &Config) -> anyhow::Result<Vec<String>> {
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
    let tenants = load_tenants(&engine, config, &locality, &services)?;
    Ok(tenants
        .iter()
        .map(|t| format!("tenant {}: {} ok", t.name, t.pool.origin()))
        .collect())
}

fn load_tenants(
    engine: &ScriptEngine,
    config: &Config,
    locality: &Arc<Locality>,
    services: &Arc<Services>,
) -> anyhow::Result<Vec<Tenant>> {
    config
        .tenant
        .iter()
        .map(|t| load_tenant(engine, t, locality, services))
        .collect()
}

fn load_tenant(
    engine: &ScriptEngine,
    t: &TenantConfig,
    locality: &Arc<Locality>,
    services: &Arc<Services>,
) -> anyhow::Result<Tenant> {
    let (wasm, origin) = match &t.component {
        Some(path) => {
            let wasm = std::fs::read(path).with_context(|| {
                format!(
                    "tenant {}: cannot read component {}",
                    t.name,
                    path.display()
                )
            })?;
            (wasm, path.display().to_string())
        }
        None => (
            DEFAULT_COMPONENT.to_vec(),
            "bundled default routing".to_owned(),
        ),
    };
    let guest = Arc::new(Guest {
        tenant: t.name.clone(),
        params: t.params.clone(),
        limits: t.limits,
        locality: locality.clone(),
        services: services.clone(),
        allow: AllowList::parse(t.params.get("IPAUTH_ALLOW").map_or("", String::as_str))
            .map_err(|err| anyhow::anyhow!("tenant {}: IPAUTH_ALLOW: {err}", t.name))?,
    });
    let pool = engine
        .load_checked(&wasm, &origin, guest)
        .with_context(|| format!("tenant {}", t.name))?;
    Ok(Tenant {
        name: t.name.clone(),
        pool: Arc::new(pool),
    })
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
