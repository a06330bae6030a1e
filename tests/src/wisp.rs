//! The wisp process under test: started from a configuration file (see
//! `config.rs` for what goes into it), watched through its log, driven with
//! `wisp ctl` and a rewritten file, killed when its handle drops.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::config::{split_top_level, WispBuilder};

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
    /// The listen, storage, engine and admin sections, kept by
    /// [`Wisp::rewrite_config`].
    base_config: String,
    _dir: tempfile::TempDir,
}

impl Wisp {
    /// Starts wisp on 127.0.0.1 (UDP and TCP, on a free port) with the given
    /// tenant section of the config, and waits until it listens. Top-level
    /// keys at the head of `tenant_toml` (before its first table) go first
    /// in the file; `$PORT` in it stands for the port wisp listens on. For
    /// more than a tenant section, see [`WispBuilder`].
    pub fn start(tenant_toml: &str) -> Result<Wisp> {
        WispBuilder::new().toml(tenant_toml).start()
    }

    /// Starts wisp with UDP and TCP listeners on each of `ips` (IPv6
    /// without brackets), all on one free port.
    pub fn start_on(ips: &[&str], tenant_toml: &str) -> Result<Wisp> {
        WispBuilder::new().listen_on(ips).toml(tenant_toml).start()
    }

    /// Runs wisp with the configuration file at `config_path` (in `dir`,
    /// which the handle keeps) and waits until its `listeners` listen.
    /// `base_config` is the part of the file [`Wisp::rewrite_config`] keeps.
    pub(crate) fn spawn(
        dir: tempfile::TempDir,
        config_path: PathBuf,
        port: u16,
        base_config: String,
        listeners: usize,
    ) -> Result<Wisp> {
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
        wisp.wait_for_log("listening", listeners, Duration::from_secs(60))?;
        Ok(wisp)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The SIP URI of `user` at this wisp's address, e.g.
    /// `sip:alice@127.0.0.1:PORT`: a user of its own domain.
    pub fn uri(&self, user: &str) -> String {
        format!("sip:{user}@{}", self.addr())
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

    /// Replaces the tenant part of the configuration file (listeners,
    /// storage, engine and admin stay); the running wisp sees it on `wisp
    /// ctl reload`, on SIGHUP, or by itself when it watches the file.
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

    /// Waits until `wisp ctl tenants` lists the tenant `name` (after a
    /// reload that is not `wisp ctl`'s own, which returns once it is done).
    pub fn wait_for_tenant(&self, name: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let tenants = self.ctl(&["tenants"])?;
            if tenants.stdout.contains(&format!("\"{name}\"")) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("no tenant {name:?} within {timeout:?}: {tenants:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The process id, e.g. to read its memory or send it a signal.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits (10 s at most) for wisp to exit: its exit
    /// status, a success when it stopped cleanly.
    pub fn terminate(&mut self) -> Result<std::process::ExitStatus> {
        let pid = libc::pid_t::try_from(self.pid())?;
        // SAFETY: kill(2) reads its two integers; `pid` is our child,
        // not reaped yet (this handle reaps it), so it is no other process.
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            bail!("kill SIGTERM {pid}: {}", std::io::Error::last_os_error());
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("wisp did not stop within 10 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Descriptors the process holds now.
    pub fn descriptors(&self) -> Result<usize> {
        Ok(std::fs::read_dir(format!("/proc/{}/fd", self.pid()))?.count())
    }

    /// Waits up to 10 s for the process to hold at most `most`
    /// descriptors (closing is asynchronous); the last count.
    pub fn descriptors_down_to(&self, most: usize) -> Result<usize> {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let now = self.descriptors()?;
            if now <= most || Instant::now() > until {
                return Ok(now);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
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

/// What `wisp ctl` printed.
#[derive(Debug)]
pub struct CtlOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}
