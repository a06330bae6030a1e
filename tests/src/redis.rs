//! A real redis-server on loopback for the cluster tests: a free port, no
//! persistence (`--save "" --appendonly no`: a restart loses everything,
//! as a Redis without persistence does), stopped and started again on the
//! same port, killed when its handle drops.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::free_port;

/// A running (or stopped) redis-server, killed when dropped.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts redis-server on a free loopback port and waits until it
    /// answers PING.
    pub fn start() -> Result<RedisServer> {
        let mut redis = RedisServer {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir()?,
        };
        redis.start_again()?;
        Ok(redis)
    }

    /// `redis://127.0.0.1:PORT`, for `[cluster] redis`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// Kills the server (SIGKILL: what a crash does), if it runs.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, empty, and waits until it
    /// answers PING.
    pub fn start_again(&mut self) -> Result<()> {
        self.stop();
        let child = Command::new("redis-server")
            .current_dir(self.dir.path())
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--protected-mode", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start redis-server (apt-get install redis-server)")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.command("PING").is_ok_and(|r| r.starts_with("+PONG")) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("redis-server on port {} does not answer PING", self.port);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server and starts it again, empty.
    pub fn restart(&mut self) -> Result<()> {
        self.start_again()
    }

    /// Sends one inline command (e.g. `"DBSIZE"`) and returns the raw
    /// reply (`:3\r\n`, `+OK\r\n`, ...).
    pub fn command(&self, command: &str) -> Result<String> {
        let mut stream = TcpStream::connect_timeout(&self.addr(), Duration::from_secs(1))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(format!("{command}\r\n").as_bytes())?;
        let mut buf = vec![0u8; 65_536];
        let n = stream.read(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// The keys matching `pattern` (KEYS: for tests only).
    pub fn keys(&self, pattern: &str) -> Result<Vec<String>> {
        let reply = self.command(&format!("KEYS {pattern}"))?;
        // *N, then $len / key pairs.
        Ok(reply
            .split("\r\n")
            .skip(1)
            .skip(1)
            .step_by(2)
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
            .collect())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
