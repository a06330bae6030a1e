//! The configuration file (TOML), and the defaults wisp runs with without one.
//!
//! Every field is documented for operators in `docs/configuration.md`; keep
//! the two in step.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::transaction::Timers;
use crate::transport::Transport;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Sockets to listen on. Default: UDP and TCP on 0.0.0.0:5060.
    #[serde(default = "default_listeners")]
    pub listen: Vec<Listen>,
    /// Other names this proxy answers to, beside its listening addresses
    /// (Kamailio's `alias`).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Routing components. Default: one tenant running the bundled routing.
    #[serde(default = "default_tenants")]
    pub tenant: Vec<TenantConfig>,
    /// Script engine settings shared by all tenants.
    #[serde(default)]
    pub engine: EngineConfig,
    /// Transaction timers (RFC 3261 table 4), in milliseconds.
    #[serde(default)]
    pub timers: Timers,
    /// Which tenant a request goes to when none claims it.
    #[serde(default)]
    pub routing: RoutingConfig,
    /// The admin API (`wisp ctl`, metrics); off without this section.
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    /// The database of registrations and subscribers.
    #[serde(default)]
    pub storage: StorageConfig,
    /// Reloading on its own.
    #[serde(default)]
    pub reload: ReloadConfig,
    /// Name servers for RFC 3263 lookups (default: the system's).
    #[serde(default)]
    pub dns: crate::dns::DnsConfig,
}

/// When wisp reloads without being told.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReloadConfig {
    /// Reload (as SIGHUP does) when the configuration file or a tenant's
    /// component file changes on disk.
    pub watch: bool,
}

/// Where registrations and subscribers are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// The SQLite database file, created when missing. Relative paths are
    /// taken from the working directory. Default: `wisp.db`.
    pub path: PathBuf,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            path: PathBuf::from("wisp.db"),
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

/// The HTTP admin API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Where it listens. Default: 127.0.0.1:9060 (loopback only).
    #[serde(default = "default_admin_address")]
    pub address: SocketAddr,
    /// The bearer token every request must carry.
    pub token: String,
}

fn default_admin_address() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9060))
}

/// One listening socket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    pub transport: Transport,
    /// `IP:PORT`; IPv6 as `[::1]:5060`.
    pub address: SocketAddr,
    /// The `host:port` to put in Via and Record-Route instead of the bound
    /// address, for a proxy behind NAT or bound to a wildcard address.
    #[serde(default)]
    pub advertise: Option<String>,
}

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
}

/// Script engine settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Where compiled components are cached. Default: `$XDG_CACHE_HOME/wisp`
    /// or `~/.cache/wisp`, else a folder under the system temp dir.
    pub cache_dir: Option<PathBuf>,
}

fn default_listeners() -> Vec<Listen> {
    let any = SocketAddr::from(([0, 0, 0, 0], 5060));
    vec![
        Listen {
            transport: Transport::Udp,
            address: any,
            advertise: None,
        },
        Listen {
            transport: Transport::Tcp,
            address: any,
            advertise: None,
        },
    ]
}

fn default_tenants() -> Vec<TenantConfig> {
    vec![TenantConfig {
        name: "default".into(),
        component: None,
        params: BTreeMap::new(),
        limits: Limits::default(),
        domains: Vec::new(),
        listeners: Vec::new(),
        canary: CanaryPolicy::default(),
    }]
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: default_listeners(),
            aliases: Vec::new(),
            tenant: default_tenants(),
            engine: EngineConfig::default(),
            timers: Timers::default(),
            dns: crate::dns::DnsConfig::default(),
            routing: RoutingConfig::default(),
            admin: None,
            storage: StorageConfig::default(),
            reload: ReloadConfig::default(),
        }
    }
}

/// A configuration that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Config {
    /// Reads and checks a configuration file. Relative component paths are
    /// resolved against the file's folder, so a config works from any cwd.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config: Config = toml::from_str(&text).map_err(|err| ConfigError::Syntax {
            path: path.to_owned(),
            message: err.to_string().trim_end().replace('\n', "\n  "),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for tenant in &mut config.tenant {
            if let Some(component) = &tenant.component {
                if component.is_relative() {
                    tenant.component = Some(base.join(component));
                }
            }
        }
        config.check().map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })?;
        Ok(config)
    }

    /// The checks serde cannot express.
    fn check(&self) -> Result<(), String> {
        if self.listen.is_empty() {
            return Err("at least one [[listen]] is needed".into());
        }
        for (i, a) in self.listen.iter().enumerate() {
            if self.listen[..i]
                .iter()
                .any(|b| a.transport == b.transport && a.address == b.address)
            {
                return Err(format!(
                    "[[listen]] {} {} appears twice",
                    a.transport, a.address
                ));
            }
        }
        if self.tenant.is_empty() {
            return Err("at least one [[tenant]] is needed".into());
        }
        for (i, t) in self.tenant.iter().enumerate() {
            if t.name.is_empty() {
                return Err(format!("[[tenant]] number {} has an empty name", i + 1));
            }
            if self.tenant[..i].iter().any(|o| o.name == t.name) {
                return Err(format!("tenant name \"{}\" is used twice", t.name));
            }
            if t.limits.hook_deadline_ms == 0 {
                return Err(format!(
                    "tenant \"{}\": limits.hook_deadline_ms must be above 0",
                    t.name
                ));
            }
            if t.limits.memory_mib == 0 {
                return Err(format!(
                    "tenant \"{}\": limits.memory_mib must be above 0",
                    t.name
                ));
            }
            if t.limits.max_instances == 0 {
                return Err(format!(
                    "tenant \"{}\": limits.max_instances must be above 0",
                    t.name
                ));
            }
            if !(0.0..=1.0).contains(&t.canary.max_error_rate) {
                return Err(format!(
                    "tenant \"{}\": canary.max_error_rate must be between 0.0 and 1.0",
                    t.name
                ));
            }
            for domain in &t.domains {
                let claimed = self.tenant[..i]
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
                if !self.listen.iter().any(|l| l.address == *listener) {
                    return Err(format!(
                        "tenant \"{}\": listener {listener} is not a [[listen]] address",
                        t.name
                    ));
                }
                if let Some(other) = self.tenant[..i]
                    .iter()
                    .find(|o| o.listeners.contains(listener))
                {
                    return Err(format!(
                        "listener {listener} belongs to tenants \"{}\" and \"{}\"",
                        other.name, t.name
                    ));
                }
            }
        }
        let catch_alls: Vec<&str> = self
            .tenant
            .iter()
            .filter(|t| t.domains.is_empty() && t.listeners.is_empty())
            .map(|t| t.name.as_str())
            .collect();
        match &self.routing.default_tenant {
            Some(name) if !self.tenant.iter().any(|t| &t.name == name) => {
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
        if !matches!(self.routing.unknown_reply, 403 | 404) {
            return Err("routing.unknown_reply must be 403 or 404".into());
        }
        if let Some(admin) = &self.admin {
            if admin.token.trim().is_empty() {
                return Err("[admin] token must not be empty".into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = dir.path().join("wisp.toml");
        std::fs::write(&path, text).map_err(|e| e.to_string())?;
        Config::load(&path).map_err(|e| e.to_string())
    }

    #[test]
    fn full_config_parses() {
        let config = parse(
            r#"
            aliases = ["example.com"]
            [[listen]]
            transport = "udp"
            address = "127.0.0.1:5060"
            [[listen]]
            transport = "tcp"
            address = "[::1]:5060"
            [[tenant]]
            name = "acme"
            component = "acme.wasm"
            params = { WITH_AUTH = "yes" }
            limits = { hook_deadline_ms = 20 }
            [storage]
            path = "/var/lib/wisp/wisp.db"
            "#,
        )
        .expect("valid config");
        assert_eq!(config.listen.len(), 2);
        assert_eq!(config.listen[1].transport, Transport::Tcp);
        assert!(config.listen[1].address.is_ipv6());
        let tenant = &config.tenant[0];
        assert!(tenant.component.as_ref().is_some_and(|p| p.is_absolute()));
        assert_eq!(tenant.params["WITH_AUTH"], "yes");
        assert_eq!(tenant.limits.hook_deadline_ms, 20);
        assert_eq!(tenant.limits.memory_mib, Limits::default().memory_mib);
        assert_eq!(config.storage.path, Path::new("/var/lib/wisp/wisp.db"));
    }

    #[test]
    fn empty_file_gives_defaults() {
        let config = parse("").expect("defaults");
        assert_eq!(config.listen.len(), 2);
        assert_eq!(config.tenant[0].name, "default");
        assert!(config.tenant[0].component.is_none());
        assert_eq!(config.storage.path, Path::new("wisp.db"));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let err = parse("[[listen]]\ntransport = \"smoke\"\naddress = \"1.2.3.4:5\"").unwrap_err();
        assert!(err.contains("smoke"), "{err}");
        let err = parse("[[listen]]\ntransport = \"udp\"\naddress = \"nowhere\"").unwrap_err();
        assert!(err.contains("address"), "{err}");
        let err = parse("[[tenant]]\nname = \"a\"\n[[tenant]]\nname = \"a\"").unwrap_err();
        assert!(err.contains("used twice"), "{err}");
        let err = parse("colour = 3").unwrap_err();
        assert!(err.contains("colour"), "{err}");
        let err = Config::load(Path::new("/nonexistent/wisp.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot read"), "{err}");
    }
}
