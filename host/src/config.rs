//! The configuration file (TOML), and the defaults wisp runs with without one.
//!
//! Each module owns the types of its own section (`[[listen]]` is
//! [`transport::Listen`], `[[tenant]]` is [`tenancy::TenantConfig`], ...);
//! this file composes them into the whole file, at the server level: no
//! module below the server uses it. Every field is documented for operators
//! in `docs/configuration.md`; keep the two in step.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::admin::AdminConfig;
use crate::script::EngineConfig;
use crate::services::StorageConfig;
use crate::tenancy::{
    self, ConfigSource, ReloadConfig, RoutingConfig, TenancyConfig, TenantConfig,
};
use crate::transaction::Timers;
use crate::transport::{FloodConfig, Listen, Transports, Trusted};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Sockets to listen on. Default: UDP and TCP on 0.0.0.0:5060.
    #[serde(default = "Listen::defaults")]
    pub listen: Vec<Listen>,
    /// Other names this proxy answers to, beside its listening addresses
    /// (Kamailio's `alias`).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Routing components. Default: one tenant running the bundled routing.
    #[serde(default = "TenantConfig::defaults")]
    pub tenant: Vec<TenantConfig>,
    /// Script engine settings shared by all tenants.
    #[serde(default)]
    pub engine: EngineConfig,
    /// Transaction timers (RFC 3261 table 4), in milliseconds.
    #[serde(default)]
    pub timers: Timers,
    /// What the proxy core lets a request cost: hops, forks, transactions.
    #[serde(default)]
    pub proxy: crate::proxy::ProxyLimits,
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
    /// Bounds on stream connections.
    #[serde(default)]
    pub connections: crate::transport::ConnectionLimits,
    /// Outgoing TLS: the roots servers are verified against.
    #[serde(default)]
    pub tls: crate::transport::TlsConfig,
    /// Sources exempt from per-source limits and bans, whom routing may
    /// trust without authentication: addresses and CIDR prefixes.
    /// Default: 127.0.0.1 and ::1.
    #[serde(default)]
    pub trusted: Trusted,
    /// Per-source limits before any hook, and bans (Kamailio's pike).
    #[serde(default)]
    pub flood: FloodConfig,
    /// Several nodes sharing their state through Redis; off (the
    /// embedded SQLite storage alone) without this section.
    #[serde(default)]
    pub cluster: Option<crate::cluster::ClusterConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: Listen::defaults(),
            aliases: Vec::new(),
            tenant: TenantConfig::defaults(),
            engine: EngineConfig::default(),
            timers: Timers::default(),
            proxy: crate::proxy::ProxyLimits::default(),
            dns: crate::dns::DnsConfig::default(),
            connections: crate::transport::ConnectionLimits::default(),
            tls: crate::transport::TlsConfig::default(),
            trusted: Trusted::default(),
            flood: FloodConfig::default(),
            routing: RoutingConfig::default(),
            admin: None,
            storage: StorageConfig::default(),
            reload: ReloadConfig::default(),
            cluster: None,
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

    /// The checks serde cannot express, section by section (each owner
    /// checks its own), in the order the sections' errors are reported.
    fn check(&self) -> Result<(), String> {
        Listen::check_all(&self.listen)?;
        let addresses: Vec<SocketAddr> = self.listen.iter().map(|l| l.address).collect();
        tenancy::check(&self.tenant, &self.routing, &addresses)?;
        if let Some(admin) = &self.admin {
            admin.check()?;
        }
        self.connections.check()?;
        self.proxy.check()?;
        self.flood.check()?;
        self.storage.check()?;
        if let Some(cluster) = &self.cluster {
            cluster.check()?;
            // A tenant's Redis keys begin with `wisp:{tenant}:`: a ':' in
            // the name would let tenant "a:kv" and tenant "a" write the
            // same keys, and glob characters would spoil `SCAN MATCH`.
            if let Some(t) = self
                .tenant
                .iter()
                .find(|t| t.name.contains([':', '*', '?', '[', ']', '{', '}']))
            {
                return Err(format!(
                    "tenant name {:?}: with [cluster], a tenant name may not hold ':', '*', '?', '[', ']', '{{' or '}}' (it begins the tenant's Redis keys)",
                    t.name
                ));
            }
        }
        Ok(())
    }

    /// What tenancy applies: the tenants and the routing of the rest.
    pub fn tenancy(&self) -> TenancyConfig {
        TenancyConfig {
            tenants: self.tenant.clone(),
            routing: self.routing.clone(),
        }
    }

    /// The sections a configuration reload does not apply that differ
    /// between `self` and `new`, as the file names them.
    fn restart_only_changes(&self, new: &Config) -> Vec<&'static str> {
        let listen = |c: &Config| {
            c.listen
                .iter()
                .map(|l| {
                    (
                        l.transport,
                        l.address,
                        l.advertise.clone(),
                        l.tls_files().ok().flatten(),
                    )
                })
                .collect::<Vec<_>>()
        };
        let admin = |c: &Config| c.admin.as_ref().map(|a| (a.address, a.token.clone()));
        let mut changed = Vec::new();
        if listen(self) != listen(new) {
            changed.push("[[listen]]");
        }
        if self.aliases != new.aliases {
            changed.push("alias");
        }
        if self.timers != new.timers {
            changed.push("[timers]");
        }
        if admin(self) != admin(new) {
            changed.push("[admin]");
        }
        if self.reload != new.reload {
            changed.push("[reload]");
        }
        if self.engine.cache_dir != new.engine.cache_dir {
            changed.push("[engine]");
        }
        if self.storage.path != new.storage.path
            || self.storage.location_write_interval_ms != new.storage.location_write_interval_ms
        {
            changed.push("[storage]");
        }
        if self.dns != new.dns {
            changed.push("[dns]");
        }
        if self.connections != new.connections {
            changed.push("[connections]");
        }
        if self.tls != new.tls {
            changed.push("[tls]");
        }
        if self.trusted != new.trusted {
            changed.push("trusted");
        }
        if self.flood != new.flood {
            changed.push("[flood]");
        }
        if self.cluster != new.cluster {
            changed.push("[cluster]");
        }
        changed
    }
}

/// The file wisp was started from, as a configuration reload reads it
/// again: the whole file is loaded and checked, tenancy gets its sections,
/// and the operator is warned about changes that wait for a restart.
pub struct ConfigFile {
    path: PathBuf,
    /// What the process runs with: the sections a reload leaves alone
    /// stay as they were at start until a restart.
    running: Config,
    /// Whose certificates a reload reads again.
    transports: Option<Arc<Transports>>,
}

impl ConfigFile {
    pub fn new(path: PathBuf, running: Config, transports: Option<Arc<Transports>>) -> ConfigFile {
        ConfigFile {
            path,
            running,
            transports,
        }
    }
}

impl ConfigSource for ConfigFile {
    fn path(&self) -> &Path {
        &self.path
    }

    fn more_files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for files_of in self
            .running
            .listen
            .iter()
            .filter_map(|l| l.tls_files().ok().flatten())
        {
            for pair in std::iter::once(&files_of.default).chain(&files_of.more) {
                files.push(pair.certificate.clone());
                files.push(pair.private_key.clone());
            }
            files.extend(files_of.client_ca);
        }
        files
    }

    fn applied(&self) {
        let Some(transports) = &self.transports else {
            return;
        };
        match transports.reload_certificates() {
            Ok(0) => {}
            Ok(n) => tracing::info!(listeners = n, "TLS certificates read again"),
            Err(errors) => {
                for err in errors {
                    tracing::error!(%err, "TLS certificates not reloaded; the old ones stay");
                }
            }
        }
    }

    fn load(&self) -> anyhow::Result<TenancyConfig> {
        let config = Config::load(&self.path)?;
        for section in self.running.restart_only_changes(&config) {
            tracing::warn!("configuration reload: {section} changes take effect after a restart");
        }
        Ok(config.tenancy())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::Limits;
    use crate::transport::Transport;

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

    #[test]
    fn each_section_is_checked_by_its_owner() {
        let err = parse(
            "[[listen]]\ntransport = \"udp\"\naddress = \"127.0.0.1:5060\"\n\
                         [[listen]]\ntransport = \"udp\"\naddress = \"127.0.0.1:5060\"",
        )
        .unwrap_err();
        assert!(
            err.ends_with(": [[listen]] udp 127.0.0.1:5060 appears twice"),
            "{err}"
        );
        let err = parse("[[tenant]]\nname = \"a\"\nlisteners = [\"127.0.0.1:9\"]").unwrap_err();
        assert!(
            err.ends_with("listener 127.0.0.1:9 is not a [[listen]] address"),
            "{err}"
        );
        let err = parse("[admin]\ntoken = \" \"").unwrap_err();
        assert!(err.ends_with(": [admin] token must not be empty"), "{err}");
        let err = parse("[flood]\nban_s = 0").unwrap_err();
        assert!(err.ends_with(": [flood] ban_s must be above 0"), "{err}");
    }

    #[test]
    fn trusted_sources_and_flood_limits() {
        let config = parse("").expect("defaults");
        assert_eq!(config.trusted, Trusted::default());
        assert_eq!(config.flood, FloodConfig::default());
        let config =
            parse("trusted = [\"10.0.0.0/8\", \"192.0.2.7\"]\n[flood]\nrequests_per_s = 20\n")
                .expect("valid");
        assert!(config.trusted.contains("10.1.2.3".parse().expect("ip")));
        assert!(!config.trusted.contains("127.0.0.1".parse().expect("ip")));
        assert_eq!(config.flood.requests_per_s, 20);
        assert_eq!(config.flood.burst, FloodConfig::default().burst);
        let err = parse("trusted = [\"10.0.0.0/33\"]").unwrap_err();
        assert!(
            err.contains("trusted: \"10.0.0.0/33\" is not an IP address or a CIDR prefix"),
            "{err}"
        );
        let err = parse("[flood]\nrate = 5").unwrap_err();
        assert!(err.contains("rate"), "{err}");
    }

    #[test]
    fn a_reload_names_what_waits_for_a_restart() {
        let running = Config::default();
        assert!(running.restart_only_changes(&Config::default()).is_empty());
        let mut new = Config::default();
        new.aliases.push("example.com".into());
        new.listen.pop();
        new.tenant[0].domains.push("example.com".into());
        assert_eq!(running.restart_only_changes(&new), ["[[listen]]", "alias"]);
        let mut new = Config::default();
        new.dns.timeout_ms = 500;
        assert_eq!(running.restart_only_changes(&new), ["[dns]"]);
    }
}
