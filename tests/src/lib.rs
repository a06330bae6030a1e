//! End-to-end harness: the real `wisp` binary on loopback, driven by SIPp.
//!
//! Every process a test starts is killed by PID when its handle drops, and
//! every SIPp run is bounded in calls and in time.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

mod dns;
mod lossy_uas;
pub use dns::{Asked, DnsServer, SilentDns, Zone};
pub use lossy_uas::{LossyUas, UasReport};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

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

/// A free loopback port for both UDP and TCP (the OS picks; a race with
/// another process taking it in between is possible but rare).
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let Ok(udp) = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)) else {
            continue;
        };
        let Ok(addr) = udp.local_addr() else { continue };
        if TcpListener::bind(addr).is_ok() {
            return addr.port();
        }
    }
    panic!("no free loopback port");
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

/// [`udp_exchange`] with a 5 s wait: the reply, or "" when none came.
pub fn udp_reply(to: SocketAddr, message: &[u8]) -> String {
    udp_exchange(to, message, Duration::from_secs(5))
        .expect("udp socket")
        .unwrap_or_default()
}

/// Sends one message over UDP from a fresh socket and returns the first
/// reply, if one comes within `timeout`.
pub fn udp_exchange(to: SocketAddr, message: &[u8], timeout: Duration) -> Result<Option<String>> {
    let local: SocketAddr = if to.is_ipv4() {
        "127.0.0.1:0".parse()?
    } else {
        "[::1]:0".parse()?
    };
    let socket = UdpSocket::bind(local)?;
    socket.set_read_timeout(Some(timeout))?;
    socket.send_to(message, to)?;
    let mut buf = vec![0u8; 65_536];
    reply_or_timeout(socket.recv_from(&mut buf).map(|(len, _)| len), &buf)
}

/// Sends one message over a new TCP connection and returns the first reply.
pub fn tcp_exchange(to: SocketAddr, message: &[u8], timeout: Duration) -> Result<Option<String>> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&to, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.write_all(message)?;
    let mut buf = vec![0u8; 65_536];
    reply_or_timeout(stream.read(&mut buf), &buf)
}

/// The text read, or None when nothing came before the read timeout.
fn reply_or_timeout(read: std::io::Result<usize>, buf: &[u8]) -> Result<Option<String>> {
    match read {
        Ok(0) => Ok(None),
        Ok(len) => Ok(Some(String::from_utf8_lossy(&buf[..len]).into_owned())),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// A minimal request, `\r\n` line ends, for tests that talk raw SIP.
pub fn request(method: &str, uri: &str, extra_headers: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!(
        "{method} {uri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKtest{id}{nanos};rport\r\n\
         From: <sip:tester@127.0.0.1>;tag=t{id}\r\n\
         To: <{uri}>\r\n\
         Call-ID: {nanos}-{id}@test\r\n\
         CSeq: 1 {method}\r\n\
         {extra_headers}\
         Content-Length: 0\r\n\r\n",
        nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    )
}

/// SIPp's transport flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    fn sipp_flag(self) -> &'static str {
        match self {
            Transport::Udp => "u1",
            Transport::Tcp => "t1",
        }
    }
}

/// A SIPp run: scenario file, role, bounds.
pub struct Sipp {
    pub scenario: String,
    pub transport: Transport,
    pub local_port: u16,
    /// The address in the Request-URI (the callee); for a uas, unused.
    pub remote: Option<SocketAddr>,
    /// Where requests are physically sent (the proxy).
    pub via: Option<SocketAddr>,
    pub calls: u32,
    pub rate: u32,
    /// The caller name ([field0]) used by the uac scenarios.
    pub caller: String,
    pub timeout: Duration,
    /// More SIPp options, e.g. `-lost 10`.
    pub extra: Vec<String>,
}

/// What a finished SIPp run reported.
#[derive(Debug)]
pub struct SippOutcome {
    pub exit_code: i32,
    pub successful: u64,
    pub failed: u64,
    /// Mean time from the first request to the response marked `rtd`.
    pub response_time_ms: f64,
    pub output: String,
}

/// The path of a scenario shipped in tests/scenarios.
pub fn scenario(name: &str) -> String {
    repo_root()
        .join("tests/scenarios")
        .join(name)
        .display()
        .to_string()
}

/// A running SIPp, killed when dropped.
pub struct SippProcess {
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Sipp {
    pub fn uac(
        scenario: String,
        transport: Transport,
        callee: SocketAddr,
        proxy: SocketAddr,
        calls: u32,
    ) -> Sipp {
        Sipp {
            scenario,
            transport,
            local_port: free_port(),
            remote: Some(callee),
            via: Some(proxy),
            calls,
            rate: 100,
            caller: "alice".into(),
            timeout: Duration::from_secs(120),
            extra: Vec::new(),
        }
    }

    /// A callee that exits after `calls` calls.
    pub fn uas(scenario: String, transport: Transport, port: u16, calls: u32) -> Sipp {
        Sipp {
            scenario,
            transport,
            local_port: port,
            remote: None,
            via: None,
            calls,
            rate: 0,
            caller: String::new(),
            timeout: Duration::from_secs(180),
            extra: Vec::new(),
        }
    }

    /// Starts SIPp in the background.
    pub fn spawn(&self) -> Result<SippProcess> {
        let dir = tempfile::tempdir()?;
        let mut cmd = Command::new("sipp");
        cmd.current_dir(dir.path())
            .args(["-sf", &self.scenario])
            .args(["-t", self.transport.sipp_flag()])
            .args(["-i", "127.0.0.1", "-p", &self.local_port.to_string()])
            .args(["-timeout", &format!("{}s", self.timeout.as_secs())])
            .args([
                "-timeout_error",
                "-nostdin",
                "-trace_stat",
                "-stf",
                "stats.csv",
            ])
            .args(["-trace_err", "-error_file", "errors.log"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(remote) = self.remote {
            let callers = dir.path().join("callers.csv");
            std::fs::write(&callers, format!("SEQUENTIAL\n{};\n", self.caller))?;
            cmd.arg(remote.to_string())
                .args(["-inf", &callers.display().to_string()])
                .args(["-r", &self.rate.to_string()])
                .args(["-l", "200"]);
        }
        if self.calls > 0 {
            cmd.args(["-m", &self.calls.to_string()]);
        }
        if let Some(via) = self.via {
            cmd.args(["-rsa", &via.to_string()]);
        }
        cmd.args(&self.extra);
        let child = cmd
            .spawn()
            .context("cannot start sipp (apt-get install sip-tester)")?;
        Ok(SippProcess {
            child: Some(child),
            dir,
        })
    }

    /// Runs SIPp to the end and reads its statistics.
    pub fn run(&self) -> Result<SippOutcome> {
        self.spawn()?.wait()
    }
}

impl SippProcess {
    /// Waits for SIPp to exit and reads the final counters.
    pub fn wait(mut self) -> Result<SippOutcome> {
        let child = self.child.take().context("already waited")?;
        let output = child.wait_with_output()?;
        let exit_code = output.status.code().unwrap_or(-1);
        self.outcome(exit_code)
    }

    fn outcome(&self, exit_code: i32) -> Result<SippOutcome> {
        let stats = std::fs::read_to_string(self.dir.path().join("stats.csv")).unwrap_or_default();
        let (successful, failed, response_time_ms) = parse_stats(&stats);
        let errors =
            std::fs::read_to_string(self.dir.path().join("errors.log")).unwrap_or_default();
        // Errors with the messages that caused them, without the notes on
        // retransmissions that reached an ended call ("Dead call").
        let mut dead = false;
        let output = errors
            .lines()
            .filter(|l| {
                if l.starts_with(|c: char| c.is_ascii_digit()) && l.contains('\t') {
                    dead = l.contains("Dead call");
                }
                !dead && !l.trim().is_empty()
            })
            .take(60)
            .collect::<Vec<_>>()
            .join("\n");
        let reasons = failure_reasons(&stats);
        let output = if reasons.is_empty() {
            output
        } else {
            format!("{reasons}\n{output}")
        };
        Ok(SippOutcome {
            exit_code,
            successful,
            failed,
            response_time_ms,
            output,
        })
    }
}

impl Drop for SippProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The columns of the last line of a SIPp statistics file
/// (semicolon-separated, header line first), as (name, value).
fn last_stats(csv: &str) -> Vec<(&str, &str)> {
    let mut lines = csv.lines().filter(|l| !l.trim().is_empty());
    let (Some(header), Some(last)) = (lines.next(), lines.next_back()) else {
        return Vec::new();
    };
    header
        .split(';')
        .zip(last.split(';'))
        .map(|(n, v)| (n, v.trim()))
        .collect()
}

/// The non-zero `Failed...(C)` counters of a SIPp statistics file (why
/// calls failed: retransmissions exhausted, timeouts, unexpected messages...).
fn failure_reasons(csv: &str) -> String {
    last_stats(csv)
        .into_iter()
        .filter(|(name, value)| {
            name.starts_with("Failed") && name.ends_with("(C)") && *value != "0"
        })
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// SuccessfulCall(C), FailedCall(C) and the mean response time of the
/// scenario's `rtd` (ResponseTime1(C), "HH:MM:SS:microseconds") in ms.
fn parse_stats(csv: &str) -> (u64, u64, f64) {
    let stats = last_stats(csv);
    let get = |name: &str| stats.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
    let count = |name: &str| get(name).and_then(|v| v.parse().ok()).unwrap_or(0);
    let rtd_ms = get("ResponseTime1(C)")
        .map(|v| {
            let parts: Vec<f64> = v.split(':').filter_map(|p| p.parse().ok()).collect();
            match parts[..] {
                [h, m, s, us] => ((h * 60.0 + m) * 60.0 + s) * 1e3 + us / 1e3,
                _ => 0.0,
            }
        })
        .unwrap_or(0.0);
    (count("SuccessfulCall(C)"), count("FailedCall(C)"), rtd_ms)
}

/// Builds a routing component from Rust source with wisp-sdk, the way a
/// user would: a cdylib crate built for wasm32-wasip2. Returns the .wasm path.
pub fn build_guest(name: &str, lib_rs: &str) -> Result<PathBuf> {
    let root = repo_root();
    let crate_dir = root.join("target/e2e-guests/src").join(name);
    std::fs::create_dir_all(crate_dir.join("src"))?;
    std::fs::write(
        crate_dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
             [lib]\ncrate-type = [\"cdylib\"]\n\n\
             [dependencies]\nwisp-sdk = {{ path = \"{sdk}\" }}\n\n\
             [profile.release]\nopt-level = \"s\"\n\n[workspace]\n",
            sdk = root.join("sdk-rust").display()
        ),
    )?;
    std::fs::write(crate_dir.join("src/lib.rs"), lib_rs)?;
    let target_dir = root.join("target/e2e-guests/target");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(crate_dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("building guest {name} failed");
    }
    let wasm = target_dir
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", name.replace('-', "_")));
    if !wasm.exists() {
        bail!("{} was not produced", wasm.display());
    }
    Ok(wasm)
}

/// A running Kamailio (Debian package `kamailio`), the neighbouring proxy
/// of the interop tests, with tests/kamailio/kamailio.cfg. Stopped by PID
/// when dropped: SIGTERM, so its main process takes its children down.
pub struct Kamailio {
    child: Option<Child>,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Kamailio {
    /// Starts Kamailio on UDP and TCP 127.0.0.1:`port` (a free one), relaying
    /// initial requests to `next_hop` and in-dialog ones by their Route set.
    pub fn start(next_hop: SocketAddr) -> Result<Kamailio> {
        let port = free_port();
        let dir = tempfile::tempdir()?;
        let cfg = repo_root().join("tests/kamailio/kamailio.cfg");
        let mut cmd = Command::new("kamailio");
        cmd.current_dir(dir.path())
            .args(["-DD", "-E", "-f"])
            .arg(&cfg)
            .args(["-L", &kamailio_modules()?.display().to_string()])
            .args(["-l", &format!("udp:127.0.0.1:{port}")])
            .args(["-l", &format!("tcp:127.0.0.1:{port}")])
            .args(["-w", &dir.path().display().to_string()])
            .args(["-Y", &dir.path().display().to_string()])
            .args(["-m", "64", "-M", "8"])
            .args(["-A", &format!("NEXT_HOST=\"{}\"", next_hop.ip())])
            .args(["-A", &format!("NEXT_PORT=\"{}\"", next_hop.port())])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .context("cannot start kamailio (apt-get install kamailio)")?;
        let stderr = child.stderr.take().context("no stderr")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[kamailio] {line}");
                let _ = tx.send(line);
            }
        });
        let mut kamailio = Kamailio {
            child: Some(child),
            port,
            _dir: dir,
        };
        // Ready once it answers an OPTIONS addressed to itself.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(child) = kamailio.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    let log: Vec<String> = rx.try_iter().collect();
                    bail!("kamailio exited with {status}:\n{}", log.join("\n"));
                }
            }
            let uri = format!("sip:127.0.0.1:{port}");
            let ping = request("OPTIONS", &uri, "Max-Forwards: 70\r\n");
            if let Ok(Some(_)) =
                udp_exchange(kamailio.addr(), ping.as_bytes(), Duration::from_millis(300))
            {
                return Ok(kamailio);
            }
            if Instant::now() > deadline {
                bail!("kamailio did not answer on 127.0.0.1:{port} within 30 s");
            }
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Where Kamailio's modules are: `KAMAILIO_MODULES`, else the Debian path.
fn kamailio_modules() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("KAMAILIO_MODULES") {
        return Ok(PathBuf::from(dir));
    }
    for dir in [
        "/usr/lib/x86_64-linux-gnu/kamailio/modules",
        "/usr/lib/aarch64-linux-gnu/kamailio/modules",
        "/usr/lib/kamailio/modules",
        "/usr/local/lib64/kamailio/modules",
    ] {
        if Path::new(dir).join("tm.so").exists() {
            return Ok(PathBuf::from(dir));
        }
    }
    bail!("Kamailio's modules not found; set KAMAILIO_MODULES (apt-get install kamailio)")
}

/// A UDP peer that never answers: it records what reaches it, as text.
pub struct SilentPeer {
    pub port: u16,
    received: std::sync::Arc<Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SilentPeer {
    pub fn start() -> Result<SilentPeer> {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        socket.set_read_timeout(Some(Duration::from_millis(100)))?;
        let port = socket.local_addr()?.port();
        let received = std::sync::Arc::new(Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (rx, halt) = (received.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while !halt.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok((len, _)) = socket.recv_from(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..len]).into_owned();
                    rx.lock().unwrap_or_else(|e| e.into_inner()).push(text);
                }
            }
        });
        Ok(SilentPeer {
            port,
            received,
            stop,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// Every message received so far.
    pub fn received(&self) -> Vec<String> {
        self.received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for SilentPeer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The value of the first header `name` (case-insensitive, long form) of a
/// message in text form.
pub fn header_of<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    message.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Asserts a SIPp run ended with every call successful.
pub fn assert_all_successful(what: &str, outcome: &SippOutcome, calls: u32) {
    eprintln!(
        "{what}: {} successful, {} failed (exit {})",
        outcome.successful, outcome.failed, outcome.exit_code
    );
    assert_eq!(outcome.exit_code, 0, "{what} failed:\n{}", outcome.output);
    assert_eq!(
        outcome.successful,
        u64::from(calls),
        "{what}:\n{}",
        outcome.output
    );
    assert_eq!(outcome.failed, 0, "{what}:\n{}", outcome.output);
}

/// Which build of the default routing a test runs against: the Rust one
/// bundled into the binary (guests/default), or the TypeScript port
/// (guests/default-js) built with sdk-js.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routing {
    Rust,
    Js,
}

impl Routing {
    /// The `[[tenant]]` section that runs this routing. For JS, the
    /// component is built (or taken from the cache) and precompiled first.
    pub fn tenant_toml(self) -> Result<String> {
        match self {
            Routing::Rust => Ok("[[tenant]]\nname = \"default\"\n".to_owned()),
            Routing::Js => Ok(format!(
                "[[tenant]]\nname = \"default-js\"\ncomponent = \"{}\"\n",
                default_js_component()?.display()
            )),
        }
    }
}

impl Routing {
    /// [`Routing::tenant_toml`] with tenant params, given as (KEY, value).
    pub fn tenant_with_params(self, params: &[(&str, &str)]) -> Result<String> {
        let list: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{k} = \"{v}\""))
            .collect();
        Ok(format!(
            "{}params = {{ {} }}\n",
            self.tenant_toml()?,
            list.join(", ")
        ))
    }
}

/// guests/default-js built to a component with its build script, once per
/// test process. See [`cached_js_build`] for the caching.
pub fn default_js_component() -> Result<PathBuf> {
    static BUILT: OnceLock<Mutex<Option<PathBuf>>> = OnceLock::new();
    let mut built = BUILT
        .get_or_init(|| Mutex::new(None))
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(path) = built.as_ref() {
        return Ok(path.clone());
    }
    let root = repo_root();
    let script = root.join("guests/default-js/build.sh");
    let wasm = cached_js_build(
        "default-js",
        &[root.join("guests/default-js/route.ts"), script.clone()],
        |out| {
            let status = Command::new("bash")
                .arg(&script)
                .arg(out)
                .stdin(Stdio::null())
                .status()
                .context("cannot run guests/default-js/build.sh (needs node and npm)")?;
            if !status.success() {
                bail!("guests/default-js/build.sh failed ({status})");
            }
            Ok(())
        },
    )?;
    *built = Some(wasm.clone());
    Ok(wasm)
}

/// Builds a routing component from TypeScript source with sdk-js, the way
/// a user would (`wisp-js build route.ts -o route.wasm`). Returns the .wasm
/// path; see [`cached_js_build`] for the caching.
pub fn build_js_guest(name: &str, route_ts: &str) -> Result<PathBuf> {
    let root = repo_root();
    let src = root.join("target/e2e-js/src").join(name);
    std::fs::create_dir_all(&src)?;
    let source = src.join("route.ts");
    if std::fs::read_to_string(&source).ok().as_deref() != Some(route_ts) {
        std::fs::write(&source, route_ts)?;
    }
    cached_js_build(name, std::slice::from_ref(&source), |out| {
        ensure_sdk_js()?;
        let status = Command::new("node")
            .arg(root.join("sdk-js/bin/wisp-js.mjs"))
            .arg("build")
            .arg(&source)
            .arg("-o")
            .arg(out)
            .stdin(Stdio::null())
            .status()
            .context("cannot run node")?;
        if !status.success() {
            bail!("wisp-js build of {name} failed ({status})");
        }
        Ok(())
    })
}

/// `npm ci` in sdk-js when its node_modules is missing or older than the
/// lock file (tests/run.sh does it up front; this covers a bare `cargo test`).
fn ensure_sdk_js() -> Result<()> {
    let sdk = repo_root().join("sdk-js");
    let modified = |p: PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let installed = modified(sdk.join("node_modules/.package-lock.json"));
    let locked = modified(sdk.join("package-lock.json"));
    if installed.is_some() && installed >= locked {
        return Ok(());
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&sdk)
        .stdin(Stdio::null())
        .status()
        .context("cannot run npm (install node and npm)")?;
    if !status.success() {
        bail!("npm ci in sdk-js failed ({status})");
    }
    Ok(())
}

/// A JS component built by `build` into a temporary path, kept in
/// target/e2e-js under a hash of everything that goes into it (`sources`,
/// sdk-js, its package-lock, the WIT), so a second test run does not
/// rebuild it. The compiled machine code is then cached by wisp itself in
/// target/e2e-cache: it is precompiled here with `wisp check`, so that
/// tests starting wisp in parallel do not all compile it at once.
pub fn cached_js_build(
    name: &str,
    sources: &[PathBuf],
    build: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    let root = repo_root();
    let mut files = sources.to_vec();
    files.extend(
        [
            "sdk-js/src/index.ts",
            "sdk-js/bin/wisp-js.mjs",
            "sdk-js/package.json",
            "sdk-js/package-lock.json",
        ]
        .iter()
        .map(|f| root.join(f)),
    );
    files.extend(wit_files(&root.join("wit"))?);
    let key = hash_files(&files)?;
    let dir = root.join("target/e2e-js");
    let wasm = dir.join(format!("{name}-{key:016x}.wasm"));
    if !wasm.exists() {
        std::fs::create_dir_all(&dir)?;
        let tmp = dir.join(format!("{name}-{key:016x}.tmp{}.wasm", std::process::id()));
        let started = Instant::now();
        build(&tmp)?;
        std::fs::rename(&tmp, &wasm)?;
        eprintln!(
            "built {} in {:.1} s",
            wasm.display(),
            started.elapsed().as_secs_f64()
        );
    }
    precompile(&wasm)?;
    Ok(wasm)
}

/// Loads a component once with `wisp check`, which leaves its machine code
/// in the e2e compile cache.
fn precompile(wasm: &Path) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("check.toml");
    std::fs::write(
        &config,
        format!(
            "[[listen]]\ntransport = \"udp\"\naddress = \"127.0.0.1:5060\"\n\n\
             [engine]\ncache_dir = \"{cache}\"\n\n\
             [[tenant]]\nname = \"precompile\"\ncomponent = \"{wasm}\"\n",
            cache = repo_root().join("target/e2e-cache").display(),
            wasm = wasm.display(),
        ),
    )?;
    let started = Instant::now();
    let output = Command::new(wisp_binary()?)
        .arg("check")
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .output()
        .context("cannot run wisp check")?;
    if !output.status.success() {
        bail!(
            "wisp check refused {}:\n{}",
            wasm.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    eprintln!(
        "wisp check loaded {} in {:.1} s",
        wasm.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn wit_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "wit"))
        .collect();
    files.sort();
    Ok(files)
}

/// A cache key over file names and contents (std's SipHash with fixed
/// keys: stable for a given toolchain, which is all a build cache needs).
fn hash_files(files: &[PathBuf]) -> Result<u64> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for file in files {
        file.file_name().hash(&mut hasher);
        std::fs::read(file)
            .with_context(|| format!("cannot read {}", file.display()))?
            .hash(&mut hasher);
    }
    Ok(hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::{failure_reasons, parse_stats};

    #[test]
    fn reads_sipp_counters() {
        let csv =
            "StartTime;SuccessfulCall(C);FailedCall(C);ResponseTime1(C);FailedMaxUDPRetrans(C)\n\
                   1;0;0;00:00:00:000000;0\n\
                   2;498;2;00:00:01:002500;2\n";
        assert_eq!(parse_stats(csv), (498, 2, 1002.5));
        assert_eq!(
            failure_reasons(csv),
            "FailedCall(C)=2 FailedMaxUDPRetrans(C)=2"
        );
        assert_eq!(parse_stats(""), (0, 0, 0.0));
    }
}
