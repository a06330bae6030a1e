//! Kamailio as the neighbouring proxy of the interop tests.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{free_port, repo_root, request, udp_exchange, CertFiles};

/// A running Kamailio (Debian package `kamailio`), the neighbouring proxy
/// of the interop tests, with tests/kamailio/kamailio.cfg. Stopped by PID
/// when dropped: SIGTERM, so its main process takes its children down.
pub struct Kamailio {
    child: Option<Child>,
    pub port: u16,
    /// Its TLS listener's port, when started with [`Kamailio::start_tls`].
    pub tls_port: Option<u16>,
    /// Its log (stderr), line by line, from the start.
    pub log: mpsc::Receiver<String>,
    _dir: tempfile::TempDir,
}

/// Kamailio's TLS (its module from the Debian package
/// `kamailio-tls-modules`, OpenSSL 3): TLS 1.2 and 1.3 both ways.
#[derive(Debug, Clone)]
pub struct KamailioTls {
    /// Served on its TLS listener, which asks for no client certificate;
    /// presented as a client to servers that ask for one.
    pub certificate: CertFiles,
    /// The CA certificates the servers it connects to must chain to: it
    /// refuses a server without a valid certificate.
    pub ca: PathBuf,
    /// Relay initial requests to the next hop over TLS, else over UDP.
    pub relay_over_tls: bool,
}

impl KamailioTls {
    /// The tls.cfg of the tls module: a default server and client domain.
    fn config(&self) -> String {
        let cert = self.certificate.certificate.display();
        let key = self.certificate.private_key.display();
        let ca = self.ca.display();
        format!(
            "[server:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\n\
             certificate = {cert}\nprivate_key = {key}\n\n\
             [client:default]\nmethod = TLSv1.2+\nverify_certificate = yes\nrequire_certificate = yes\n\
             ca_list = {ca}\ncertificate = {cert}\nprivate_key = {key}\n"
        )
    }
}

impl Kamailio {
    /// Starts Kamailio on UDP and TCP 127.0.0.1:`port` (a free one), relaying
    /// initial requests to `next_hop` and in-dialog ones by their Route set.
    pub fn start(next_hop: SocketAddr) -> Result<Kamailio> {
        Kamailio::launch(next_hop, None)
    }

    /// [`Kamailio::start`] with a TLS listener too, on 127.0.0.1:`tls_port`
    /// (another free one), relaying initial requests to `next_hop` over
    /// TLS or UDP as `tls` says.
    pub fn start_tls(next_hop: SocketAddr, tls: &KamailioTls) -> Result<Kamailio> {
        Kamailio::launch(next_hop, Some(tls))
    }

    fn launch(next_hop: SocketAddr, tls: Option<&KamailioTls>) -> Result<Kamailio> {
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
        let tls_port = match tls {
            Some(tls) => {
                let tls_port = free_port();
                let tls_cfg = dir.path().join("tls.cfg");
                std::fs::write(&tls_cfg, tls.config())?;
                cmd.args(["-l", &format!("tls:127.0.0.1:{tls_port}")])
                    .args(["-A", "WITH_TLS"])
                    .args(["-A", &format!("TLS_CONFIG=\"{}\"", tls_cfg.display())]);
                let relay = if tls.relay_over_tls { "tls" } else { "udp" };
                cmd.args(["-A", &format!("RELAY_PROTO=\"{relay}\"")]);
                Some(tls_port)
            }
            None => None,
        };
        let mut child = cmd.spawn().context(
            "cannot start kamailio (apt-get install kamailio, and kamailio-tls-modules for TLS)",
        )?;
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
            tls_port,
            log: rx,
            _dir: dir,
        };
        // Ready once it answers an OPTIONS addressed to itself.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(child) = kamailio.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    let log: Vec<String> = kamailio.log.try_iter().collect();
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

    /// Waits until a log line containing `needle` is printed.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("kamailio did not log \"{needle}\" within {timeout:?}");
            }
            match self.log.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Ok(()),
                Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => bail!("kamailio closed its log"),
            }
        }
    }

    /// Its TLS listener, when started with [`Kamailio::start_tls`].
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_port
            .map(|port| SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
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
