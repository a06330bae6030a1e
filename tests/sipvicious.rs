//! SIPVicious (PyPI `sipvicious`, the scanner that finds SIP ports on the
//! internet within minutes) against wisp with the bundled routing and
//! WITH_AUTH, from 127.0.0.2 (not trusted): `svwar` cannot tell existing
//! users from unknown ones, and `svcrack` is rate-limited, then banned.
//!
//! SIPVicious 0.3.8 ignores its -b option; `tests/sipvicious/bound.py`
//! binds its socket to 127.0.0.2.

use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wisp_tests::{free_port, repo_root, Request, Routing, Wisp, WispBuilder};

const ATTACKER: &str = "127.0.0.2";
/// Subscribers of the tenant (realm 127.0.0.1); 1000 and 1004..1010 are
/// unknown.
const USERS: [&str; 3] = ["1001", "1002", "1003"];

fn wisp_with_auth() -> Wisp {
    let mut builder = WispBuilder::new()
        .routing(Routing::Rust)
        .param("WITH_AUTH", "yes")
        .admin();
    for user in USERS {
        builder = builder.subscriber(&format!("{user}@127.0.0.1"), &format!("Secret-{user}-x"));
    }
    builder.start().expect("wisp starts")
}

/// What a SIPVicious tool printed (stdout and stderr) and how long it ran.
struct Run {
    output: String,
    took: Duration,
}

/// Runs `sipvicious_<tool>` from 127.0.0.2 against `wisp`, killed after
/// `limit` at the latest.
fn sipvicious(tool: &str, wisp: &Wisp, args: &[&str], limit: Duration) -> Run {
    let importable = Command::new("python3")
        .args(["-c", "import sipvicious"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        importable,
        "SIPVicious is missing: python3 -m pip install sipvicious==0.3.8 (tests/run.sh does)"
    );
    let started = Instant::now();
    let child = Command::new("python3")
        .arg(repo_root().join("tests/sipvicious/bound.py"))
        .args([ATTACKER, tool, "-v", "-x", ATTACKER])
        .args(["-P", &free_port().to_string()])
        .args(["-p", &wisp.port.to_string()])
        .args(args)
        .arg("127.0.0.1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let pid = child.id();
    // Killed by PID if it outlives its limit.
    let watchdog = std::thread::spawn(move || {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            std::thread::sleep(Duration::from_millis(200));
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                return;
            }
        }
        let _ = Command::new("kill").arg(pid.to_string()).status();
    });
    let out = child.wait_with_output().expect("sipvicious ends");
    let _ = watchdog.join();
    Run {
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        took: started.elapsed(),
    }
}

/// The extensions of svwar's result table (`| 1001 | reqauth |`).
fn listed_extensions(output: &str) -> BTreeSet<String> {
    output
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let ext = cells.get(1)?;
            (cells.len() >= 3 && !ext.is_empty() && ext.chars().all(|c| c.is_ascii_digit()))
                .then(|| (*ext).to_owned())
        })
        .collect()
}

/// The status line and header names (not values: nonces, tags) of wisp's
/// final answer to `method` for `user` of wisp's domain, from `from`
/// (`$USER`: the user itself), asked from 127.0.0.2.
fn answer_shape(wisp: SocketAddr, method: &str, user: &str, from: &str) -> String {
    let socket = UdpSocket::bind((ATTACKER, 0)).expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let uri = format!("sip:{user}@{wisp}");
    let from = from.replace("$USER", &uri);
    let msg = Request::new(method, &uri)
        .from(&from)
        .headers("Max-Forwards: 70\r\nContact: <sip:x@127.0.0.2>\r\n")
        .to_string();
    socket.send_to(msg.as_bytes(), wisp).expect("send");
    let mut buf = [0u8; 8192];
    loop {
        let Ok((n, _)) = socket.recv_from(&mut buf) else {
            return "(no answer)".into();
        };
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let mut lines = text.split("\r\n");
        let status = lines.next().unwrap_or_default().to_owned();
        if status.starts_with("SIP/2.0 1") {
            continue;
        }
        let names: Vec<&str> = lines
            .take_while(|l| !l.is_empty())
            .filter_map(|l| l.split(':').next())
            .collect();
        return format!("{status} [{}]", names.join(", "));
    }
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn svwar_cannot_tell_users_from_unknown_ones() {
    let wisp = wisp_with_auth();
    // What any scanner sees: wisp's answers to a known and an unknown
    // user, alike but for the values.
    // From the user itself (a local user: authentication asked) and from
    // a foreign domain (a call in: the location service asked).
    for from in ["$USER", "sip:scanner@foreign.example"] {
        for method in ["REGISTER", "INVITE", "OPTIONS", "MESSAGE", "SUBSCRIBE"] {
            let known = answer_shape(wisp.addr(), method, USERS[0], from);
            let unknown = answer_shape(wisp.addr(), method, "1009", from);
            eprintln!(
                "{method} from {from}: user {} -> {known}; unknown -> {unknown}",
                USERS[0]
            );
            assert_eq!(
                known, unknown,
                "{method} from {from} tells an existing user from an unknown one"
            );
        }
    }
    // svwar's URIs name wisp's port, so that they are wisp's own domain.
    let domain = wisp.addr().to_string();
    for method in ["REGISTER", "INVITE", "OPTIONS"] {
        let run = sipvicious(
            "svwar",
            &wisp,
            &[
                "--force",
                "-m",
                method,
                "--domain",
                &domain,
                "-e",
                "1000-1010",
            ],
            Duration::from_secs(90),
        );
        let listed = listed_extensions(&run.output);
        eprintln!(
            "svwar -m {method} ({:.1} s): listed {listed:?}\n{}",
            run.took.as_secs_f64(),
            run.output
                .lines()
                .filter(|l| l.contains("WARNING") || l.contains("ERROR") || l.contains('|'))
                .map(|l| l.chars().take(160).collect::<String>())
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert!(
            run.output.contains("scan started"),
            "svwar did not run:\n{}",
            run.output
        );
        let all: BTreeSet<String> = (1000..=1010).map(|e| e.to_string()).collect();
        assert!(
            listed.is_empty() || listed == all,
            "svwar -m {method} singled out {listed:?}:\n{}",
            run.output
        );
    }
}

/// Seconds since midnight of a log line's timestamp
/// (`2026-12-02T07:10:41.509310Z ...`).
fn log_time(line: &str) -> Option<f64> {
    let time = line.split_whitespace().next()?.split('T').nth(1)?;
    let mut parts = time.trim_end_matches('Z').split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some((h * 60.0 + m) * 60.0 + s)
}

#[test]
fn svcrack_is_rate_limited_then_banned() {
    let wisp = wisp_with_auth();
    let run = sipvicious(
        "svcrack",
        &wisp,
        &["-u", USERS[0], "-r", "100000-999999", "--maximumtime", "5"],
        Duration::from_secs(120),
    );
    let log: Vec<String> = wisp.log.try_iter().collect();
    let text = wisp.ctl(&["metrics"]).expect("metrics").stdout;
    let routed = metric(&text, "wisp_requests_total{tenant=\"default\"}");
    let limit = metric(&text, "wisp_flood_dropped_total{reason=\"limit\"}");
    let dropped = metric(&text, "wisp_flood_dropped_total{reason=\"banned\"}");
    let bans = metric(&text, "wisp_flood_bans_total{by=\"flood\"}");
    let banned: Vec<&String> = log.iter().filter(|l| l.contains("source banned")).collect();
    let first_try = log
        .iter()
        .find(|l| l.contains("authentication failed"))
        .and_then(|l| log_time(l));
    let ban_at = banned.first().and_then(|l| log_time(l));
    eprintln!(
        "svcrack ran {:.1} s: {routed} requests routed ({:.0}/s before the ban), {limit} past the limit, {dropped} dropped while banned, {bans} ban(s), banned {:.1} s after its first wrong password",
        run.took.as_secs_f64(),
        match (first_try, ban_at) {
            (Some(a), Some(b)) if b > a => routed / (b - a),
            _ => 0.0,
        },
        match (first_try, ban_at) {
            (Some(a), Some(b)) => b - a,
            _ => -1.0,
        },
    );
    eprintln!(
        "{}\n{}",
        run.output
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.chars().take(160).collect::<String>())
            .collect::<Vec<_>>()
            .join("\n"),
        banned
            .iter()
            .map(|l| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        run.output.contains("scan started"),
        "svcrack did not run:\n{}",
        run.output
    );
    assert!(
        !run.output.contains("The password for"),
        "cracked:\n{}",
        run.output
    );
    assert_eq!(bans, 1.0, "svcrack's address banned once:\n{text}");
    assert_eq!(limit, 1.0, "one request past the limit starts the ban");
    assert!(
        banned.iter().any(|l| l.contains(ATTACKER)),
        "the ban is logged with the address: {banned:?}"
    );
    // The ban outlasts the scan: what it sent after the ban was dropped
    // before any hook, and it gave up on hearing nothing.
    assert!(
        run.output.contains("since we last received a response"),
        "svcrack did not give up on silence:\n{}",
        run.output
    );
}
