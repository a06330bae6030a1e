//! The wisp process under test: its configuration file, start, log,
//! `wisp ctl` and `wisp user add`.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{free_port, repo_root};

/// The `wisp` binary of the same profile as this test (target/<profile>/wisp).
/// The README's test command builds it before the tests run.
pub fn wisp_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test>-<hash>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test binary has no profile dir")?;
    let bin = profile_dir.join("wisp");
    if !bin.exists() {
        bail!(
            "{} is missing: build it first with `cargo build --release -p wisp` (the README's test command does)",
            bin.display()
        );
    }
    Ok(bin)
}

/// A running wisp, killed when dropped.
pub struct Wisp {
    child: Child,
    pub port: u16,
    pub log: mpsc::Receiver<String>,
    /// The configuration file it runs with (`wisp ctl --config` reads it too).
    pub config_path: PathBuf,
    /// The listen and engine sections, kept by [`Wisp::rewrite_config`].
    base_config: String,
    _dir: tempfile::TempDir,
}

impl Wisp {
    /// Starts wisp on 127.0.0.1:`port` (UDP and TCP) with the given tenant
    /// section of the config, and waits until it listens. Top-level keys at
    /// the head of `tenant_toml` (before its first table) go first in the
    /// file; `$PORT` in it stands for the port wisp listens on.
    pub fn start(tenant_toml: &str) -> Result<Wisp> {
        Wisp::start_on(&["127.0.0.1"], tenant_toml)
    }

    /// Starts wisp with UDP and TCP listeners on each of `ips` (IPv6
    /// without brackets), all on one free port.
    pub fn start_on(ips: &[&str], tenant_toml: &str) -> Result<Wisp> {
        Wisp::start_full(ips, tenant_toml, None)
    }

    /// Starts wisp on 127.0.0.1 with its database at `db` (registrations
    /// and subscribers), which outlives this process: for restarts.
    pub fn start_with_db(tenant_toml: &str, db: &Path) -> Result<Wisp> {
        Wisp::start_full(&["127.0.0.1"], tenant_toml, Some(db))
    }

    fn start_full(ips: &[&str], tenant_toml: &str, db: Option<&Path>) -> Result<Wisp> {
        let port = free_port();
        let dir = tempfile::tempdir()?;
        let tenant_toml = tenant_toml.replace("$PORT", &port.to_string());
        let (top, tenant_toml) = split_top_level(&tenant_toml);
        let db = db.map_or_else(|| dir.path().join("wisp.db"), Path::to_path_buf);
        let mut config = top.to_owned();
        for ip in ips {
            let addr = SocketAddr::new(ip.parse()?, port);
            for transport in ["udp", "tcp"] {
                config.push_str(&format!(
                    "[[listen]]\ntransport = \"{transport}\"\naddress = \"{addr}\"\n"
                ));
            }
        }
        config.push_str(&format!(
            "[storage]\npath = \"{db}\"\n\n[engine]\ncache_dir = \"{cache}\"\n\n",
            db = db.display(),
            cache = repo_root().join("target/e2e-cache").display()
        ));
        let base_config = config[top.len()..].to_owned();
        config.push_str(tenant_toml);
        let config_path = dir.path().join("wisp.toml");
        std::fs::write(&config_path, config)?;
        let mut child = Command::new(wisp_binary()?)
            .arg("--config")
            .arg(&config_path)
            .env("WISP_LOG", "info,wisp::registrar=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start wisp")?;
        let stderr = child.stderr.take().context("no stderr")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[wisp] {line}");
                if tx.send(line).is_err() {
                    // Nobody listens any more; keep draining so wisp never blocks.
                }
            }
        });
        let mut wisp = Wisp {
            child,
            port,
            log: rx,
            config_path,
            base_config,
            _dir: dir,
        };
        wisp.wait_for_log("listening", 2 * ips.len(), Duration::from_secs(60))?;
        Ok(wisp)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// Waits until `count` log lines containing `needle` were printed.
    pub fn wait_for_log(&mut self, needle: &str, count: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut seen = 0;
        while seen < count {
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!("wisp exited early with {status}");
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("wisp did not log \"{needle}\" {count} times within {timeout:?}");
            }
            match self.log.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) if line.contains(needle) => seen += 1,
                Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => bail!("wisp closed its log"),
            }
        }
        Ok(())
    }

    /// Replaces the tenant part of the configuration file (listeners and
    /// engine stay); the running wisp sees it on `wisp ctl reload` or SIGHUP.
    pub fn rewrite_config(&self, tenant_toml: &str) -> Result<()> {
        let (top, tables) = split_top_level(tenant_toml);
        std::fs::write(
            &self.config_path,
            format!("{top}{}{tables}", self.base_config),
        )?;
        Ok(())
    }

    /// Runs `wisp ctl --config <this wisp's config> ARGS...`.
    pub fn ctl(&self, args: &[&str]) -> Result<CtlOutput> {
        let out = Command::new(wisp_binary()?)
            .arg("--config")
            .arg(&self.config_path)
            .arg("ctl")
            .args(args)
            .env("WISP_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .context("cannot run wisp ctl")?;
        Ok(CtlOutput {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// The process id, e.g. to read its memory or send it a signal.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory now, in KiB (from /proc).
    pub fn rss_kib(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmRSS in /proc status")
    }

    /// Lines logged so far that contain `needle`.
    pub fn log_lines_with(&self, needle: &str) -> Vec<String> {
        self.log.try_iter().filter(|l| l.contains(needle)).collect()
    }
}

impl Drop for Wisp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TOML text split before its first table header: top-level keys, tables.
fn split_top_level(toml: &str) -> (&str, &str) {
    let mut at = 0;
    for line in toml.split_inclusive('\n') {
        if line.trim_start().starts_with('[') {
            break;
        }
        at += line.len();
    }
    toml.split_at(at)
}

/// What `wisp ctl` printed.
#[derive(Debug)]
pub struct CtlOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// An `[admin]` section on a free loopback port, with a test token.
pub fn admin_toml() -> String {
    format!(
        "[admin]\naddress = \"127.0.0.1:{}\"\ntoken = \"test-token-{}\"\n",
        free_port(),
        std::process::id()
    )
}

/// Adds a subscriber with `wisp user add` to the database at `db`, for
/// the tenant of `tenant_toml`.
pub fn add_subscriber(db: &Path, tenant_toml: &str, address: &str, password: &str) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("wisp.toml");
    std::fs::write(
        &config,
        format!("[storage]\npath = \"{}\"\n\n{tenant_toml}\n", db.display()),
    )?;
    let out = Command::new(wisp_binary()?)
        .arg("user")
        .arg("add")
        .arg(address)
        .arg(password)
        .arg("--config")
        .arg(&config)
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
