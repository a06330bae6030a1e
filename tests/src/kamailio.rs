//! Kamailio as the neighbouring proxy of the interop tests.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{free_port, repo_root, request, udp_exchange};

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
