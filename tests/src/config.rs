//! What a test starts wisp with: listeners, tenants and their params, an
//! admin section, subscribers, a database, put together by [`WispBuilder`]
//! into the configuration file of a [`Wisp`].

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::{free_port, repo_root, wisp_binary, Routing, Wisp};

/// A `[[tenant]]` table of the configuration file.
#[derive(Debug, Clone)]
pub struct Tenant {
    name: String,
    component: Option<PathBuf>,
    domains: Vec<String>,
    params: Vec<(String, String)>,
    more: String,
}

impl Tenant {
    /// A tenant that runs the default routing bundled into the binary,
    /// until given a component.
    pub fn new(name: &str) -> Tenant {
        Tenant {
            name: name.to_owned(),
            component: None,
            domains: Vec::new(),
            params: Vec::new(),
            more: String::new(),
        }
    }

    /// Runs the routing component at `wasm`.
    pub fn component(mut self, wasm: &Path) -> Tenant {
        self.component = Some(wasm.to_path_buf());
        self
    }

    /// Takes the requests for `domain` (one more entry of `domains`).
    pub fn domain(mut self, domain: &str) -> Tenant {
        self.domains.push(domain.to_owned());
        self
    }

    /// One entry of `params`, what the routing reads with `config::param`.
    pub fn param(mut self, key: &str, value: &str) -> Tenant {
        self.params.push((key.to_owned(), value.to_owned()));
        self
    }

    /// More keys of the table, as TOML lines (`limits`, `canary`,
    /// `listeners`...), each ending in a line break.
    pub fn toml(mut self, lines: &str) -> Tenant {
        self.more.push_str(lines);
        self
    }

    /// The table in TOML.
    pub fn to_toml(&self) -> String {
        let mut toml = format!("[[tenant]]\nname = \"{}\"\n", self.name);
        if let Some(wasm) = &self.component {
            toml.push_str(&format!("component = \"{}\"\n", wasm.display()));
        }
        if !self.domains.is_empty() {
            let list: Vec<String> = self.domains.iter().map(|d| format!("\"{d}\"")).collect();
            toml.push_str(&format!("domains = [{}]\n", list.join(", ")));
        }
        if !self.params.is_empty() {
            let list: Vec<String> = self
                .params
                .iter()
                .map(|(k, v)| format!("{k} = \"{v}\""))
                .collect();
            toml.push_str(&format!("params = {{ {} }}\n", list.join(", ")));
        }
        toml.push_str(&self.more);
        toml
    }
}

/// One piece of the tenant part of the configuration, in the order given.
#[derive(Debug, Clone)]
enum Part {
    Toml(String),
    /// The default routing's tenant, with the builder's params.
    Routing(Routing),
    Tenant(Tenant),
}

/// The configuration of a wisp to start, built up from what a test needs:
///
/// ```no_run
/// # use wisp_tests::{Routing, WispBuilder};
/// let wisp = WispBuilder::new()
///     .routing(Routing::Rust)
///     .param("WITH_AUTH", "yes")
///     .subscriber("alice@127.0.0.1", "wonderland")
///     .admin()
///     .start()?;
/// # anyhow::Ok(())
/// ```
///
/// Wisp listens on UDP and TCP on one free port, with its database in its
/// own temporary folder unless [`WispBuilder::db`] names one. A builder
/// can start several processes in turn, e.g. before and after a restart.
#[derive(Debug, Clone)]
pub struct WispBuilder {
    ips: Vec<String>,
    parts: Vec<Part>,
    params: Vec<(String, String)>,
    admin: bool,
    subscribers: Vec<(String, String)>,
    db: Option<PathBuf>,
}

impl Default for WispBuilder {
    fn default() -> Self {
        WispBuilder::new()
    }
}

impl WispBuilder {
    /// Listening on 127.0.0.1, no tenant yet (wisp then runs its bundled
    /// default routing as tenant "default").
    pub fn new() -> WispBuilder {
        WispBuilder {
            ips: vec!["127.0.0.1".to_owned()],
            parts: Vec::new(),
            params: Vec::new(),
            admin: false,
            subscribers: Vec::new(),
            db: None,
        }
    }

    /// UDP and TCP listeners on each of `ips` (IPv6 without brackets), all
    /// on the same port, instead of 127.0.0.1 alone.
    pub fn listen_on(mut self, ips: &[&str]) -> WispBuilder {
        self.ips = ips.iter().map(|ip| (*ip).to_owned()).collect();
        self
    }

    /// A tenant running this build of the default routing, with the
    /// params given by [`WispBuilder::param`].
    pub fn routing(mut self, routing: Routing) -> WispBuilder {
        self.parts.push(Part::Routing(routing));
        self
    }

    /// A param of the [`WispBuilder::routing`] tenant: the `WITH_*`
    /// switches and settings of Kamailio's default config.
    pub fn param(mut self, key: &str, value: &str) -> WispBuilder {
        self.params.push((key.to_owned(), value.to_owned()));
        self
    }

    /// One more tenant, after those given so far.
    pub fn tenant(mut self, tenant: Tenant) -> WispBuilder {
        self.parts.push(Part::Tenant(tenant));
        self
    }

    /// More of the configuration in TOML, in this place among the tenants.
    /// Top-level keys at the head of the first piece (before any table) go
    /// first in the file; `$PORT` stands for the port wisp listens on.
    pub fn toml(mut self, text: &str) -> WispBuilder {
        self.parts.push(Part::Toml(text.to_owned()));
        self
    }

    /// An `[admin]` section (a free loopback port, a test token), for `wisp
    /// ctl`; [`Wisp::rewrite_config`] keeps it.
    pub fn admin(mut self) -> WispBuilder {
        self.admin = true;
        self
    }

    /// A subscriber (`USER@DOMAIN`, the domain being the digest realm) of
    /// the first tenant, added with `wisp user add` before wisp starts.
    pub fn subscriber(mut self, address: &str, password: &str) -> WispBuilder {
        self.subscribers
            .push((address.to_owned(), password.to_owned()));
        self
    }

    /// The database (registrations and subscribers) at `path`, which
    /// outlives the process: for restarts.
    pub fn db(mut self, path: &Path) -> WispBuilder {
        self.db = Some(path.to_path_buf());
        self
    }

    /// Writes the configuration file, adds the subscribers, starts wisp and
    /// waits until every listener listens.
    pub fn start(&self) -> Result<Wisp> {
        let port = free_port();
        let dir = tempfile::tempdir()?;
        let tables = self.tenant_part()?.replace("$PORT", &port.to_string());
        let (top, tables) = split_top_level(&tables);
        let db = self
            .db
            .clone()
            .unwrap_or_else(|| dir.path().join("wisp.db"));
        let mut base = String::new();
        for ip in &self.ips {
            let addr = SocketAddr::new(ip.parse::<IpAddr>()?, port);
            for transport in ["udp", "tcp"] {
                base.push_str(&format!(
                    "[[listen]]\ntransport = \"{transport}\"\naddress = \"{addr}\"\n"
                ));
            }
        }
        base.push_str(&format!(
            "[storage]\npath = \"{db}\"\n\n[engine]\ncache_dir = \"{cache}\"\n\n",
            db = db.display(),
            cache = repo_root().join("target/e2e-cache").display()
        ));
        if self.admin {
            base.push_str(&admin_toml());
        }
        let config_path = dir.path().join("wisp.toml");
        std::fs::write(&config_path, format!("{top}{base}{tables}"))?;
        for (address, password) in &self.subscribers {
            add_subscriber(&config_path, address, password)?;
        }
        Wisp::spawn(dir, config_path, port, base, 2 * self.ips.len())
    }

    /// The tenants and further TOML, in the order given. Building the
    /// routing's tenant may build its component (JS).
    fn tenant_part(&self) -> Result<String> {
        let mut toml = String::new();
        let mut routed = false;
        for part in &self.parts {
            match part {
                Part::Toml(text) => toml.push_str(text),
                Part::Tenant(tenant) => toml.push_str(&tenant.to_toml()),
                Part::Routing(routing) => {
                    let tenant = self
                        .params
                        .iter()
                        .fold(routing.tenant()?, |t, (k, v)| t.param(k, v));
                    toml.push_str(&tenant.to_toml());
                    routed = true;
                }
            }
        }
        if !routed && !self.params.is_empty() {
            bail!("params {:?} without a routing tenant", self.params);
        }
        Ok(toml)
    }
}

/// A TOML text split before its first table header: top-level keys, tables.
pub(crate) fn split_top_level(toml: &str) -> (&str, &str) {
    let mut at = 0;
    for line in toml.split_inclusive('\n') {
        if line.trim_start().starts_with('[') {
            break;
        }
        at += line.len();
    }
    toml.split_at(at)
}

/// An `[admin]` section on a free loopback port, with a test token.
fn admin_toml() -> String {
    format!(
        "[admin]\naddress = \"127.0.0.1:{}\"\ntoken = \"test-token-{}\"\n",
        free_port(),
        std::process::id()
    )
}

/// Adds a subscriber with `wisp user add` to the database of the
/// configuration at `config`, for its first tenant.
fn add_subscriber(config: &Path, address: &str, password: &str) -> Result<()> {
    let out = Command::new(wisp_binary()?)
        .arg("user")
        .arg("add")
        .arg(address)
        .arg(password)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .output()
        .context("cannot run wisp user add")?;
    if !out.status.success() {
        bail!(
            "wisp user add failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
