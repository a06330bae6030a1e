//! JsSIP, the SIP library of WebRTC browser phones, run in node by
//! `tests/jssip/ua.js` (installed by tests/run.sh with `npm ci`). Node has
//! no WebRTC, so the script fakes the media layer; the SIP is JsSIP's own.
//! Each event it reports is one JSON line on its stdout.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::repo_root;

/// A running JsSIP user agent, killed when dropped.
pub struct JsSip {
    name: String,
    child: Option<Child>,
    events: mpsc::Receiver<Value>,
    seen: Vec<Value>,
}

impl JsSip {
    /// Starts `ua.js` with `args` (see its `--help`); `ca` is the test CA
    /// for a wss URL.
    pub fn start(name: &str, args: &[&str], ca: Option<&Path>) -> Result<JsSip> {
        let dir = repo_root().join("tests/jssip");
        if !dir.join("node_modules/jssip").exists() {
            bail!(
                "JsSIP is not installed: run `npm ci` in {} (tests/run.sh does)",
                dir.display()
            );
        }
        let mut cmd = Command::new("node");
        cmd.current_dir(&dir)
            .arg("ua.js")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(ca) = ca {
            cmd.env("NODE_EXTRA_CA_CERTS", ca);
        }
        let mut child = cmd.spawn().context("cannot start node (JsSIP)")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, rx) = mpsc::channel();
        let tag = name.to_owned();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                eprintln!("[{tag}] {line}");
                if let Ok(event) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(event);
                }
            }
        });
        Ok(JsSip {
            name: name.to_owned(),
            child: Some(child),
            events: rx,
            seen: Vec::new(),
        })
    }

    /// Waits for an event named `event`; fails on timeout or when the UA
    /// ends first.
    pub fn wait_for(&mut self, event: &str, timeout: Duration) -> Result<Value> {
        if let Some(found) = self.seen.iter().find(|e| e["event"] == event) {
            return Ok(found.clone());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(e) => {
                    self.seen.push(e.clone());
                    if e["event"] == event {
                        return Ok(e);
                    }
                }
                Err(_) => bail!(
                    "{}: no {event} event within {timeout:?}; saw {:?}",
                    self.name,
                    self.names()
                ),
            }
        }
    }

    /// Waits for the UA to exit; its exit code and every event it reported.
    pub fn wait(mut self, timeout: Duration) -> Result<(i32, Vec<Value>)> {
        let deadline = Instant::now() + timeout;
        let mut child = self.child.take().context("already waited")?;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{}: still running after {timeout:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reader ends with the process's stdout.
        while let Ok(e) = self.events.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(e);
        }
        Ok((status.code().unwrap_or(-1), std::mem::take(&mut self.seen)))
    }

    /// Kills the UA at once (no un-REGISTER, its connection just drops).
    pub fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn names(&self) -> Vec<String> {
        self.seen
            .iter()
            .map(|e| e["event"].as_str().unwrap_or("?").to_owned())
            .collect()
    }
}

impl Drop for JsSip {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The events named `event`.
pub fn events_named<'a>(events: &'a [Value], event: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == event).collect()
}
