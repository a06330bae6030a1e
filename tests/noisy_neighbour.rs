//! A slow tenant delays itself alone: a tenant whose route hook takes
//! 40 ms does not slow down another tenant's calls (issue #14), and a
//! tenant past its hook-time budget gets 503s while the other gets none.
//!
//! Both tenants' traffic comes in on one socket (so on the same receiving
//! threads): "slow" takes the domain slow.test (its callers' To), and
//! "healthy" is the default tenant. The budget test tells them apart by
//! listener (127.0.0.2 for "slow").

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use wisp_tests::{
    assert_all_successful, build_guest, scenario, Sipp, Tenant, Transport, Wisp, WispBuilder,
};

/// A relay; with `SLOW_MS`, an INVITE (and an OPTIONS, answered here)
/// first spins that long.
const GUEST: &str = r#"
use wisp_sdk::prelude::*;

struct Relay;

fn spin() {
    let ms: u64 = config::param("SLOW_MS").and_then(|v| v.parse().ok()).unwrap_or(0);
    let until = std::time::Instant::now() + std::time::Duration::from_millis(ms);
    while std::time::Instant::now() < until {
        std::hint::black_box(0);
    }
}

impl Router for Relay {
    fn route(req: &Request) -> Flow {
        if *req.method() == Method::Options {
            spin();
            return req.reply(200, "Fine");
        }
        if req.in_dialog() {
            req.loose_route();
        } else if *req.method() == Method::Invite {
            spin();
            req.record_route()?;
        }
        req.relay()
    }
}

wisp_sdk::export_router!(Relay);
"#;

const HEALTHY_IP: &str = "127.0.0.1";
const SLOW_IP: &str = "127.0.0.2";

fn start(wasm: &Path, slow_limits: &str) -> Wisp {
    WispBuilder::new()
        .listen_on(&[HEALTHY_IP, SLOW_IP])
        .admin()
        .tenant(Tenant::new("healthy").component(wasm))
        .tenant(
            Tenant::new("slow")
                .component(wasm)
                .domain("slow.test")
                .param("SLOW_MS", "40")
                .toml(&format!(
                    "listeners = [\"{SLOW_IP}:$PORT\"]\nlimits = {{ {slow_limits} }}\n"
                )),
        )
        .start()
        .expect("wisp starts")
}

/// uac.xml, logging when the INVITE left and when its 200 came back.
fn timed_uac(dir: &Path) -> String {
    let uac = std::fs::read_to_string(scenario("uac.xml")).expect("uac.xml");
    let uac = uac
        .replacen(
            "<send retrans=\"500\">",
            "<nop><action><gettimeofday assign_to=\"s0,u0\"/></action></nop>\n  <send retrans=\"500\">",
            1,
        )
        .replacen(
            r#"<recv response="200" rtd="true" rrs="true"/>"#,
            r#"<recv response="200" rtd="true" rrs="true">
    <action>
      <gettimeofday assign_to="s1,u1"/>
      <log message="rtt [$s0] [$u0] [$s1] [$u1]"/>
    </action>
  </recv>"#,
            1,
        );
    let path = dir.join("uac-timed.xml");
    std::fs::write(&path, uac).expect("scenario written");
    path.display().to_string()
}

/// uac.xml calling To sip:service@slow.test (the slow tenant's domain).
fn slow_uac_scenario(dir: &Path) -> String {
    let uac = std::fs::read_to_string(scenario("uac.xml")).expect("uac.xml");
    let uac = uac.replace(
        "To: <sip:[service]@[remote_ip]:[remote_port]>",
        "To: <sip:[service]@slow.test>",
    );
    let path = dir.join("uac-slow.xml");
    std::fs::write(&path, uac).expect("scenario written");
    path.display().to_string()
}

/// `calls` calls at `rate` per second from a SIPp caller through `wisp`
/// to a SIPp callee; every one must succeed. The INVITE→200
/// times, sorted, in ms: one per call, or all but 1% of them (below).
fn healthy_calls(wisp: &Wisp, dir: &Path, what: &str, calls: u32, rate: u32) -> Vec<f64> {
    let uas_port = wisp_tests::free_port();
    let uas = Sipp::uas(scenario("uas.xml"), Transport::Udp, uas_port, 0)
        .spawn()
        .expect("uas");
    let log = dir.join(format!("{what}.log"));
    let _ = std::fs::remove_file(&log);
    let mut uac = Sipp::uac(
        timed_uac(dir),
        Transport::Udp,
        SocketAddr::from(([127, 0, 0, 1], uas_port)),
        wisp.addr(),
        calls,
    );
    uac.rate = rate;
    uac.timeout = Duration::from_secs(60);
    uac.extra = vec![
        "-trace_logs".into(),
        "-log_file".into(),
        log.display().to_string(),
    ];
    let outcome = uac.run().expect("uac runs");
    drop(uas);
    assert_all_successful(what, &outcome, calls);
    let text = std::fs::read_to_string(&log).expect("timing log");
    let mut times = Vec::with_capacity(calls as usize);
    let mut unreadable = Vec::new();
    for line in text.lines() {
        let Some((_, fields)) = line.split_once("rtt ") else {
            continue;
        };
        match rtt_ms(fields) {
            Some(ms) => times.push(ms),
            None => unreadable.push(line),
        }
    }
    // Every call succeeded, so wisp relayed each 200; yet CI once found
    // 2399 times in SIPp's log for 2400 calls (the lines it could not
    // read were dropped unseen then; they are printed now). One missing
    // time in a hundred leaves the p99 compared below meaningful; more
    // mean the timing itself is broken.
    let found = times.len() as u32;
    if found != calls || !unreadable.is_empty() {
        eprintln!(
            "{what}: {found} times for {calls} calls; lines not understood ({}, the first 5): {:?}",
            unreadable.len(),
            &unreadable[..unreadable.len().min(5)]
        );
    }
    assert!(
        (calls - calls / 100..=calls).contains(&found),
        "{what}: {found} times for {calls} calls"
    );
    times.sort_by(f64::total_cmp);
    times
}

/// The INVITE→200 time in ms from what follows "rtt " in a line:
/// "[s0] [u0] [s1] [u1]".
fn rtt_ms(fields: &str) -> Option<f64> {
    let v: Vec<f64> = fields
        .split_whitespace()
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    match v[..] {
        [s0, u0, s1, u1] => Some(((s1 - s0) * 1e6 + (u1 - u0)) / 1e3),
        _ => None,
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// Healthy tenant: 200 calls/s for 12 s alone, then beside the slow
/// tenant sent 40 calls/s whose every INVITE costs 40 ms of hook time:
/// 1.6 s of hooks a second, more than one thread, so that hooks run on
/// the receiving threads would hold both of them at times. Confined, the
/// slow tenant gets one lane thread, and the INVITEs it cannot take in
/// time are answered 503 (its calls are not checked).
#[test]
fn a_slow_tenant_does_not_delay_another() {
    let wasm = build_guest("noisy-relay", GUEST).expect("guest builds");
    // A deadline the 40 ms hooks keep clear of on a busy machine: a crash
    // loop's suspension would relieve the neighbour and hide a failure.
    let wisp = start(&wasm, "hook_deadline_ms = 200");
    let dir = tempfile::tempdir().expect("tempdir");
    let (calls, rate) = (2400, 200);
    // Warm: instances, caches, the tenant's lane.
    healthy_calls(&wisp, dir.path(), "warm-up", 400, rate);

    let mut figures = Vec::new();
    // Twice at most: a build on this machine between the two runs of a
    // round can spoil one round, not two; broken isolation spoils both.
    for round in 1..=2 {
        let alone = healthy_calls(&wisp, dir.path(), "alone", calls, rate);

        let slow_uas_port = wisp_tests::free_port();
        let slow_uas = Sipp::uas(scenario("uas.xml"), Transport::Udp, slow_uas_port, 0)
            .spawn()
            .expect("slow uas");
        let mut slow_uac = Sipp::uac(
            slow_uac_scenario(dir.path()),
            Transport::Udp,
            SocketAddr::from(([127, 0, 0, 1], slow_uas_port)),
            wisp.addr(),
            0,
        );
        slow_uac.rate = 40;
        slow_uac.caller = "noisy".into();
        let slow = slow_uac.spawn().expect("slow uac");
        // Its first slow hooks confine it.
        std::thread::sleep(Duration::from_secs(2));
        let started = Instant::now();
        let beside = healthy_calls(&wisp, dir.path(), "beside", calls, rate);
        let took = started.elapsed();
        drop(slow);
        drop(slow_uas);

        let (p99_alone, p99_beside) = (percentile(&alone, 0.99), percentile(&beside, 0.99));
        let bound = (2.0 * p99_alone).max(p99_alone + 5.0);
        eprintln!(
            "round {round}: healthy INVITE→200 p50 {:.2} ms, p99 {p99_alone:.2} ms alone; \
             p50 {:.2} ms, p99 {p99_beside:.2} ms beside the slow tenant (bound {bound:.2} ms; {took:?})",
            percentile(&alone, 0.5),
            percentile(&beside, 0.5),
        );
        figures.push((p99_alone, p99_beside, bound));
        if p99_beside <= bound {
            break;
        }
    }
    let metrics = wisp.ctl(&["metrics"]).expect("ctl").stdout;
    let slow_hook_ms = hook_seconds(&metrics, "slow") * 1e3;
    eprintln!("slow tenant's hook time: {slow_hook_ms:.0} ms");
    assert!(slow_hook_ms > 2000.0, "the slow tenant ran: {metrics}");
    let &(p99_alone, p99_beside, bound) = figures.last().expect("a round");
    assert!(
        p99_beside <= bound,
        "the healthy tenant's p99 went from {p99_alone:.2} ms alone to {p99_beside:.2} ms beside the slow one: {figures:?}"
    );
}

/// The slow tenant with a budget of 200 ms of hook time per second: at 20
/// OPTIONS a second of 40 ms each, about 5 a second are served and the
/// rest get 503 with Retry-After; the healthy tenant's all get 200.
#[test]
fn a_tenant_past_its_budget_gets_503_alone() {
    let wasm = build_guest("noisy-relay", GUEST).expect("guest builds");
    let wisp = start(&wasm, "hook_budget_ms_per_s = 200");
    let slow_addr = SocketAddr::from(([127, 0, 0, 2], wisp.port));
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_millis(5)))
        .expect("timeout");
    let port = socket.local_addr().expect("addr").port();
    let mut tally = Tally::default();
    let mut buf = vec![0u8; 65_536];
    let started = Instant::now();
    let sent = 80;
    for i in 0..sent {
        // 20 a second to each tenant, for 4 s.
        let due = started + Duration::from_millis(50 * i);
        while Instant::now() < due {
            tally.read(&socket, &mut buf);
        }
        for (tenant, to) in [("slow", slow_addr), ("healthy", wisp.addr())] {
            let options = options(tenant, i, to, port);
            socket.send_to(options.as_bytes(), to).expect("send");
        }
    }
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until && tally.total() < 2 * sent {
        tally.read(&socket, &mut buf);
    }
    let Tally {
        slow_ok,
        slow_503,
        healthy_ok,
        healthy_other,
        all_retry_after,
    } = tally;
    eprintln!(
        "slow tenant: {slow_ok} served, {slow_503} answered 503; healthy tenant: {healthy_ok} served, {healthy_other} otherwise"
    );
    assert_eq!((healthy_ok, healthy_other), (sent, 0), "the healthy tenant");
    assert!(all_retry_after, "every 503 says Retry-After: 1");
    assert!(
        slow_503 >= 40,
        "the slow tenant past its budget: {slow_503} 503s"
    );
    // 200 ms a second is 5 calls of 40 ms (and the one under way when the
    // budget ran out), over about 4 s.
    assert!((4..=35).contains(&slow_ok), "{slow_ok} served");
    let metrics = wisp.ctl(&["metrics"]).expect("ctl").stdout;
    let rejected = |tenant: &str, kind: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("wisp_rejected_total")
                    && l.contains(&format!("\"{tenant}\""))
                    && l.contains(&format!("\"{kind}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert_eq!(rejected("slow", "budget"), slow_503, "{metrics}");
    assert_eq!(rejected("healthy", "budget"), 0, "{metrics}");
    assert_eq!(rejected("healthy", "queue_full"), 0, "{metrics}");
}

/// An OPTIONS to `to` whose Call-ID names the tenant, replies to `port`.
fn options(tenant: &str, i: u64, to: SocketAddr, port: u16) -> String {
    format!(
        "OPTIONS sip:x@{to} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{tenant}{i};rport\r\n\
         From: <sip:tester@127.0.0.1>;tag={tenant}{i}\r\n\
         To: <sip:x@{to}>\r\n\
         Call-ID: {tenant}-{i}@test\r\n\
         CSeq: 1 OPTIONS\r\n\
         Max-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// Replies by tenant (told by their Call-ID).
#[derive(Default)]
struct Tally {
    slow_ok: u64,
    slow_503: u64,
    healthy_ok: u64,
    healthy_other: u64,
    all_retry_after: bool,
}

impl Tally {
    fn total(&self) -> u64 {
        self.slow_ok + self.slow_503 + self.healthy_ok + self.healthy_other
    }

    fn read(&mut self, socket: &UdpSocket, buf: &mut [u8]) {
        while let Ok(len) = socket.recv(buf) {
            let reply = String::from_utf8_lossy(&buf[..len]);
            let ok = reply.starts_with("SIP/2.0 200 ");
            if reply.contains("\r\nCall-ID: slow-") {
                if ok {
                    self.slow_ok += 1;
                } else if reply.starts_with("SIP/2.0 503 ") {
                    if self.slow_503 == 0 {
                        self.all_retry_after = true;
                    }
                    self.slow_503 += 1;
                    self.all_retry_after &= reply.contains("\r\nRetry-After: 1\r\n");
                }
            } else if ok {
                self.healthy_ok += 1;
            } else {
                self.healthy_other += 1;
            }
        }
    }
}

/// The tenant's hook time so far, in seconds, from the metrics.
fn hook_seconds(metrics: &str, tenant: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("wisp_hook_duration_seconds_sum") && l.contains(&format!("\"{tenant}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
