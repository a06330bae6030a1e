//! Making a version: read the component, compile it (or take it from the
//! cache), link it, instantiate it once. All of it off the hot path.

use std::sync::Arc;

use anyhow::Context;
use sha2::{Digest, Sha256};

use crate::metrics::TenantMetrics;
use crate::proxy::Locality;
use crate::script::{Domains, Guest, Pool, ScriptEngine, DEFAULT_COMPONENT};
use crate::services::permissions::AllowList;
use crate::services::Services;

use super::config::TenantConfig;

/// The component's bytes and where they came from.
pub(super) fn read_component(config: &TenantConfig) -> anyhow::Result<(Vec<u8>, String)> {
    match &config.component {
        Some(path) => {
            let wasm = std::fs::read(path)
                .with_context(|| format!("cannot read component {}", path.display()))?;
            Ok((wasm, path.display().to_string()))
        }
        None => Ok((
            DEFAULT_COMPONENT.to_vec(),
            "bundled default routing".to_owned(),
        )),
    }
}

pub(super) fn digest(wasm: &[u8]) -> String {
    hex::encode(Sha256::digest(wasm))
}

/// A new version of a tenant, ready to serve; with the digest of its
/// component. `domains` are the tenant's, shared by all its versions.
pub(super) fn build_version(
    engine: &ScriptEngine,
    locality: &Arc<Locality>,
    services: &Arc<Services>,
    metrics: TenantMetrics,
    domains: &Arc<Domains>,
    config: &TenantConfig,
    version: u64,
) -> anyhow::Result<(Arc<Pool>, String)> {
    let (wasm, origin) = read_component(config)?;
    build_from(
        engine, locality, services, metrics, domains, config, version, &wasm, &origin,
    )
}

/// [`build_version`] from component bytes already at hand (a cluster's
/// version, a file read once to be built and published), with the rest
/// of `config` (params, limits).
#[allow(clippy::too_many_arguments)]
pub(super) fn build_from(
    engine: &ScriptEngine,
    locality: &Arc<Locality>,
    services: &Arc<Services>,
    metrics: TenantMetrics,
    domains: &Arc<Domains>,
    config: &TenantConfig,
    version: u64,
    wasm: &[u8],
    origin: &str,
) -> anyhow::Result<(Arc<Pool>, String)> {
    let allow = AllowList::parse(config.params.get("IPAUTH_ALLOW").map_or("", String::as_str))
        .map_err(|err| anyhow::anyhow!("IPAUTH_ALLOW: {err}"))?;
    let guest = Arc::new(Guest {
        tenant: config.name.clone(),
        version,
        params: config.params.clone(),
        limits: config.limits,
        locality: locality.clone(),
        metrics,
        services: services.clone(),
        allow,
        domains: domains.clone(),
        log_capture: None,
    });
    let pool = engine.load_checked(wasm, origin, guest)?;
    Ok((Arc::new(pool), digest(wasm)))
}
