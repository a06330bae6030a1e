//! SIPp runs: scenario, role and bounds in, the counters of its statistics
//! file out.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::{free_port, repo_root};

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

    /// Stops SIPp as Ctrl-C would (SIGINT, by its PID): it writes its
    /// final statistics and exits, for a callee with no call count of its
    /// own (one answering probes, whose OPTIONS SIPp counts as calls).
    /// Killed if it has not exited within 10 s.
    pub fn interrupt(mut self) -> Result<SippOutcome> {
        let mut child = self.child.take().context("already waited")?;
        Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .context("cannot run kill")?;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let exit_code = loop {
            if let Some(status) = child.try_wait()? {
                break status.code().unwrap_or(-1);
            }
            if std::time::Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break -1;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
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
