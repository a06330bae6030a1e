//! Tenancy's sections of the configuration file: `[[tenant]]` (with its
//! `canary` policy), `[routing]` and `[reload]`, and the checks on them
//! that serde cannot express.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::script::Limits;

/// One tenant: a routing component and what it is given.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub name: String,
    /// Path to a `.wasm` component; absent means the bundled default routing.
    /// Relative paths are taken from the config file's folder.
    #[serde(default)]
    pub component: Option<PathBuf>,
    /// Parameters the component reads with `config.param`.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    #[serde(default)]
    pub limits: Limits,
    /// Domains whose requests this tenant routes, matched against the
    /// Request-URI host, then the To host.
    #[serde(default)]
    pub domains: Vec<String>,
    /// Listening addresses (`IP:PORT`, any transport) whose requests this
    /// tenant routes when no domain matched.
    #[serde(default)]
    pub listeners: Vec<SocketAddr>,
    /// When a canary version is rolled back on its own.
    #[serde(default)]
    pub canary: CanaryPolicy,
    /// Destination sets for the `dispatcher` interface, and their probes.
    #[serde(default)]
    pub dispatcher: crate::services::dispatcher::DispatcherConfig,
}

impl TenantConfig {
    /// Without a `[[tenant]]`: one tenant running the bundled routing.
    pub fn defaults() -> Vec<TenantConfig> {
        vec![TenantConfig {
            name: "default".into(),
            component: None,
            params: BTreeMap::new(),
            limits: Limits::default(),
            domains: Vec::new(),
            listeners: Vec::new(),
            canary: CanaryPolicy::default(),
            dispatcher: Default::default(),
        }]
    }
}

/// Automatic rollback of a canary version.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CanaryPolicy {
    /// Share of the canary's hook calls that may fail (trap, deadline,
    /// instantiation) before it is rolled back, from 0.0 to 1.0.
    pub max_error_rate: f64,
    /// Hook calls the canary must have made before the rate is judged.
    pub min_calls: u64,
}

impl Default for CanaryPolicy {
    fn default() -> Self {
        CanaryPolicy {
            max_error_rate: 0.05,
            min_calls: 20,
        }
    }
}

/// How requests that no tenant claims are handled.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// The tenant for requests no tenant's `domains` or `listeners` claim.
    /// Default: the tenant that has neither (a catch-all), if there is one.
    pub default_tenant: Option<String>,
    /// The answer to a request no tenant takes: 404 or 403.
    pub unknown_reply: u16,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            default_tenant: None,
            unknown_reply: 404,
        }
    }
}

/// When wisp reloads without being told.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReloadConfig {
    /// Reload (as SIGHUP does) when the configuration file or a tenant's
    /// component file changes on disk.
    pub watch: bool,
}

/// What tenancy applies, at start and on a configuration reload: the
/// tenants and where the requests none of them claims go.
#[derive(Debug, Clone)]
pub struct TenancyConfig {
    pub tenants: Vec<TenantConfig>,
    pub routing: RoutingConfig,
}

/// The checks serde cannot express: every tenant named once and able to
/// run, each domain and listener claimed by one tenant at most (and the
/// listeners among `listen`, the addresses of the `[[listen]]` sockets), one
/// place for the requests no tenant claims.
pub fn check(
    tenants: &[TenantConfig],
    routing: &RoutingConfig,
    listen: &[SocketAddr],
) -> Result<(), String> {
    if tenants.is_empty() {
        return Err("at least one [[tenant]] is needed".into());
    }
    for (i, t) in tenants.iter().enumerate() {
        if t.name.is_empty() {
            return Err(format!("[[tenant]] number {} has an empty name", i + 1));
        }
        if tenants[..i].iter().any(|o| o.name == t.name) {
            return Err(format!("tenant name \"{}\" is used twice", t.name));
        }
        t.limits
            .check()
            .map_err(|err| format!("tenant \"{}\": limits.{err}", t.name))?;
        t.dispatcher
            .check()
            .map_err(|err| format!("tenant \"{}\": dispatcher.{err}", t.name))?;
        if !(0.0..=1.0).contains(&t.canary.max_error_rate) {
            return Err(format!(
                "tenant \"{}\": canary.max_error_rate must be between 0.0 and 1.0",
                t.name
            ));
        }
        for domain in &t.domains {
            let claimed = tenants[..i]
                .iter()
                .find(|o| o.domains.iter().any(|d| d.eq_ignore_ascii_case(domain)));
            if let Some(other) = claimed {
                return Err(format!(
                    "domain \"{domain}\" belongs to tenants \"{}\" and \"{}\"",
                    other.name, t.name
                ));
            }
        }
        for listener in &t.listeners {
            if !listen.contains(listener) {
                return Err(format!(
                    "tenant \"{}\": listener {listener} is not a [[listen]] address",
                    t.name
                ));
            }
            if let Some(other) = tenants[..i].iter().find(|o| o.listeners.contains(listener)) {
                return Err(format!(
                    "listener {listener} belongs to tenants \"{}\" and \"{}\"",
                    other.name, t.name
                ));
            }
        }
    }
    let catch_alls: Vec<&str> = tenants
        .iter()
        .filter(|t| t.domains.is_empty() && t.listeners.is_empty())
        .map(|t| t.name.as_str())
        .collect();
    match &routing.default_tenant {
        Some(name) if !tenants.iter().any(|t| &t.name == name) => {
            return Err(format!(
                "routing.default_tenant \"{name}\" is not a [[tenant]]"
            ));
        }
        Some(_) => {}
        None if catch_alls.len() > 1 => {
            return Err(format!(
                "tenants {} have no domains or listeners: only one tenant can take \
                 every unclaimed request (or set routing.default_tenant)",
                catch_alls.join(", ")
            ));
        }
        None => {}
    }
    if !matches!(routing.unknown_reply, 403 | 404) {
        return Err("routing.unknown_reply must be 403 or 404".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenants(text: &str) -> Vec<TenantConfig> {
        #[derive(Deserialize)]
        struct File {
            tenant: Vec<TenantConfig>,
        }
        toml::from_str::<File>(text).expect("tenants").tenant
    }

    fn check_tenants(text: &str) -> Result<(), String> {
        let listen = [SocketAddr::from(([127, 0, 0, 1], 5060))];
        check(&tenants(text), &RoutingConfig::default(), &listen)
    }

    #[test]
    fn defaults_pass() {
        let routing = RoutingConfig::default();
        assert!(check(&TenantConfig::defaults(), &routing, &[]).is_ok());
        assert_eq!(
            check(&[], &routing, &[]).unwrap_err(),
            "at least one [[tenant]] is needed"
        );
    }

    #[test]
    fn names_domains_and_listeners_are_claimed_once() {
        let err = check_tenants("[[tenant]]\nname = \"a\"\n[[tenant]]\nname = \"a\"");
        assert_eq!(err.unwrap_err(), "tenant name \"a\" is used twice");
        let err = check_tenants(
            "[[tenant]]\nname = \"a\"\ndomains = [\"x.org\"]\n\
             [[tenant]]\nname = \"b\"\ndomains = [\"X.org\"]",
        );
        assert_eq!(
            err.unwrap_err(),
            "domain \"X.org\" belongs to tenants \"a\" and \"b\""
        );
        let err = check_tenants("[[tenant]]\nname = \"a\"\nlisteners = [\"127.0.0.1:5070\"]");
        assert_eq!(
            err.unwrap_err(),
            "tenant \"a\": listener 127.0.0.1:5070 is not a [[listen]] address"
        );
        let err = check_tenants("[[tenant]]\nname = \"a\"\n[[tenant]]\nname = \"b\"");
        assert!(err.unwrap_err().starts_with("tenants a, b have no domains"));
    }

    #[test]
    fn limits_and_canary_policy_are_checked_per_tenant() {
        let err = check_tenants("[[tenant]]\nname = \"a\"\nlimits = { max_instances = 0 }");
        assert_eq!(
            err.unwrap_err(),
            "tenant \"a\": limits.max_instances must be above 0"
        );
        let err = check_tenants("[[tenant]]\nname = \"a\"\ncanary = { max_error_rate = 2.0 }");
        assert_eq!(
            err.unwrap_err(),
            "tenant \"a\": canary.max_error_rate must be between 0.0 and 1.0"
        );
    }

    #[test]
    fn unclaimed_requests_go_somewhere_known() {
        let routing = RoutingConfig {
            default_tenant: Some("nobody".into()),
            unknown_reply: 404,
        };
        assert_eq!(
            check(&TenantConfig::defaults(), &routing, &[]).unwrap_err(),
            "routing.default_tenant \"nobody\" is not a [[tenant]]"
        );
        let routing = RoutingConfig {
            default_tenant: None,
            unknown_reply: 500,
        };
        assert_eq!(
            check(&TenantConfig::defaults(), &routing, &[]).unwrap_err(),
            "routing.unknown_reply must be 403 or 404"
        );
    }
}
