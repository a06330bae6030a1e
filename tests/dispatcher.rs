//! The dispatcher service (Kamailio's dispatcher module) end to end: a
//! routing component built here balances calls round-robin over three
//! SIPp callees and fails over from the failure hook. One callee is
//! stopped: the host's OPTIONS probes take it down within an interval and
//! a timeout, the calls go to the other two in equal shares (±5 points),
//! and a callee answering 503 hands each call on to the next destination.
//! With `[cluster]`, a destination marked down on one node is down on the
//! others, and on a node started later.

use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use wisp_tests::{
    build_guest, free_port, scenario, RedisServer, Sipp, SippProcess, Tenant, Transport, Wisp,
    WispBuilder,
};

const GUEST: &str = r#"
use wisp_sdk::dispatcher::{Algorithm, Target};
use wisp_sdk::prelude::*;

struct Balancer;

impl Router for Balancer {
    fn route(req: &Request) -> Flow {
        req.max_forwards(Some(10))?;
        if req.in_dialog() {
            req.loose_route();
            return req.relay();
        }
        if *req.method() != Method::Invite {
            return req.reply(405, "Method Not Allowed");
        }
        // sip:failover@... tries set 2 by priority; everything else is
        // shared round-robin over set 1.
        let user = req.uri_parts().and_then(|u| u.user).unwrap_or_default();
        let (set, algorithm) = if user == "failover" {
            (2, Algorithm::Priority)
        } else {
            (1, Algorithm::RoundRobin)
        };
        req.record_route()?;
        dispatcher::select(req, set, algorithm, Target::Destination)?; // 503 when none is up
        req.relay()
    }

    fn on_failure(req: &Request, best: &Response) -> Flow {
        if matches!(best.status(), 408 | 500..=599) {
            let failed = dispatcher::current().map(|d| d.uri).unwrap_or_default();
            if config::enabled("MARK_DOWN") {
                dispatcher::mark_current_down(); // ds_mark_dst("ip")
            }
            if let Some(next) = dispatcher::next(req) {
                log::info(&format!("failover from {failed} to {}", next.uri));
                return req.relay();
            }
        }
        Ok(())
    }
}

wisp_sdk::export_router!(Balancer);
"#;

const PROBE_INTERVAL_MS: u64 = 500;
const PROBE_TIMEOUT_MS: u64 = 400;

/// A callee that also answers the probes (`-aa`: SIPp answers OPTIONS
/// 200 by itself) and runs until interrupted.
fn callee(scenario_file: &str, port: u16) -> SippProcess {
    let mut uas = Sipp::uas(scenario(scenario_file), Transport::Udp, port, 0);
    uas.timeout = Duration::from_secs(90);
    uas.extra = vec!["-aa".into()];
    uas.spawn().expect("sipp uas starts")
}

/// Waits for a log line holding every one of `needles`.
fn wait_for_line(wisp: &mut Wisp, needles: &[&str], timeout: Duration) {
    let started = Instant::now();
    loop {
        let left = timeout.saturating_sub(started.elapsed());
        assert!(
            !left.is_zero(),
            "no log line with {needles:?} within {timeout:?}"
        );
        match wisp.log.recv_timeout(left) {
            Ok(line) if needles.iter().all(|n| line.contains(n)) => return,
            Ok(_) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => panic!("wisp closed its log"),
        }
    }
}

#[test]
fn round_robin_over_probed_callees_and_failover() {
    let wasm = build_guest("dispatcher-balancer", GUEST).expect("guest builds");
    let [a, b, c, d] = [free_port(), free_port(), free_port(), free_port()];
    let uas_a = callee("uas.xml", a);
    let uas_b = callee("uas.xml", b);
    let uas_c = callee("uas.xml", c);
    let uas_d = callee("uas-503.xml", d);
    std::thread::sleep(Duration::from_millis(300));

    let dest = |port: u16| format!("{{ uri = \"sip:127.0.0.1:{port}\" }}");
    let tenant = format!(
        "[[tenant]]\nname = \"balancer\"\ncomponent = \"{wasm}\"\n\
         [tenant.dispatcher]\nprobe_interval_ms = {PROBE_INTERVAL_MS}\n\
         probe_timeout_ms = {PROBE_TIMEOUT_MS}\nprobe_threshold = 1\n\
         [[tenant.dispatcher.set]]\nid = 1\ndestinations = [{}, {}, {}]\n\
         [[tenant.dispatcher.set]]\nid = 2\n\
         destinations = [{{ uri = \"sip:127.0.0.1:{d}\", priority = 10 }}, {}]\n",
        dest(a),
        dest(b),
        dest(c),
        dest(a),
        wasm = wasm.display(),
    );
    let mut wisp = Wisp::start(&tenant).expect("wisp starts");
    let callee_addr = format!("127.0.0.1:{a}").parse().expect("addr");

    // Failover: set 2 tries the 503 callee first (it answers probes, so it
    // stays up), then the next one from the failure hook.
    let failover_calls = 20;
    let mut failover = Sipp::uac(
        scenario("uac.xml"),
        Transport::Udp,
        callee_addr,
        wisp.addr(),
        failover_calls,
    );
    failover.rate = 20;
    failover.extra = vec!["-s".into(), "failover".into()];
    let failover = failover.run().expect("uac runs");
    eprintln!(
        "failover: {} successful, {} failed",
        failover.successful, failover.failed
    );
    assert_eq!(
        failover.exit_code, 0,
        "failover calls failed:\n{}",
        failover.output
    );
    assert_eq!(
        (failover.successful, failover.failed),
        (u64::from(failover_calls), 0)
    );
    // Each call failed over once, from the 503 callee to the next.
    let failed_over = format!("failover from sip:127.0.0.1:{d} to sip:127.0.0.1:{a}");
    wisp.wait_for_log(
        &failed_over,
        failover_calls as usize,
        Duration::from_secs(5),
    )
    .expect("every call failed over");

    // One callee stops: the probes take it down within an interval and a
    // timeout (plus the prober's tick).
    let stopped = Instant::now();
    uas_c.interrupt().expect("uas c stops");
    let c_uri = format!("uri=\"sip:127.0.0.1:{c}\"");
    wait_for_line(
        &mut wisp,
        &["dispatcher destination down", &c_uri],
        Duration::from_secs(5),
    );
    let down_after = stopped.elapsed();
    eprintln!(
        "stopped callee marked down after {} ms",
        down_after.as_millis()
    );
    assert!(
        down_after <= Duration::from_millis(PROBE_INTERVAL_MS + PROBE_TIMEOUT_MS + 250),
        "marked down after {down_after:?}"
    );

    // Round-robin over the two left.
    let calls = 300;
    let mut shared = Sipp::uac(
        scenario("uac.xml"),
        Transport::Udp,
        callee_addr,
        wisp.addr(),
        calls,
    );
    shared.rate = 100;
    let shared = shared.run().expect("uac runs");
    eprintln!(
        "round-robin: {} successful, {} failed",
        shared.successful, shared.failed
    );
    assert_eq!(shared.exit_code, 0, "calls failed:\n{}", shared.output);
    assert_eq!((shared.successful, shared.failed), (u64::from(calls), 0));

    // A callee counts a call once its 4 s timewait after the BYE is over.
    std::thread::sleep(Duration::from_millis(4500));
    let got_a = uas_a.interrupt().expect("uas a stops").successful - u64::from(failover_calls);
    let got_b = uas_b.interrupt().expect("uas b stops").successful;
    let got_d = uas_d.interrupt().expect("uas d stops").successful;
    let share = |n: u64| n as f64 * 100.0 / f64::from(calls);
    eprintln!(
        "shares: a {got_a} ({:.1}%), b {got_b} ({:.1}%), stopped c 0; the 503 callee saw {got_d}",
        share(got_a),
        share(got_b)
    );
    assert_eq!(got_a + got_b, u64::from(calls), "every call reached a or b");
    for n in [got_a, got_b] {
        assert!(
            (share(n) - 50.0).abs() <= 5.0,
            "share {:.1}% is not 50% ± 5",
            share(n)
        );
    }
    assert_eq!(
        got_d,
        u64::from(failover_calls),
        "the 503 callee was tried first each time"
    );
}

/// One node of a cluster sharing `redis`, running the balancer with
/// MARK_DOWN (the failure hook marks a failed destination down) and set 2
/// = [the 503 callee first, then the good one], without probes.
fn node(wasm: &std::path::Path, redis: &RedisServer, name: &str, bad: u16, good: u16) -> Wisp {
    WispBuilder::new()
        .tenant(
            Tenant::new("balancer")
                .component(wasm)
                .param("MARK_DOWN", "yes")
                .toml(&format!(
                    "[tenant.dispatcher]\n\
                     [[tenant.dispatcher.set]]\nid = 2\n\
                     destinations = [{{ uri = \"sip:127.0.0.1:{bad}\", priority = 10 }}, \
                     {{ uri = \"sip:127.0.0.1:{good}\" }}]\n"
                )),
        )
        .toml(&format!(
            "[cluster]\nredis = \"{}\"\nnode = \"{name}\"\ntimeout_ms = 250\n",
            redis.url()
        ))
        .start()
        .expect("wisp starts")
}

#[test]
fn a_destination_marked_down_on_one_node_is_down_on_the_others() {
    let wasm = build_guest("dispatcher-balancer", GUEST).expect("guest builds");
    let redis = RedisServer::start().expect("redis-server starts");
    let [good, bad] = [free_port(), free_port()];
    let uas_good = callee("uas.xml", good);
    let uas_bad = callee("uas-503.xml", bad);
    std::thread::sleep(Duration::from_millis(300));
    let a = node(&wasm, &redis, "a", bad, good);
    let mut b = node(&wasm, &redis, "b", bad, good);
    let callee_addr = format!("127.0.0.1:{good}").parse().expect("addr");
    let call_through = |wisp: &Wisp| {
        let mut uac = Sipp::uac(
            scenario("uac.xml"),
            Transport::Udp,
            callee_addr,
            wisp.addr(),
            1,
        );
        uac.extra = vec!["-s".into(), "failover".into()];
        let outcome = uac.run().expect("uac runs");
        assert_eq!(
            (outcome.successful, outcome.failed),
            (1, 0),
            "call through {}:\n{}",
            wisp.port,
            outcome.output
        );
    };

    // Through a: the 503 callee fails, a marks it down and fails over.
    let marked = Instant::now();
    call_through(&a);
    let bad_uri = format!("uri=\"sip:127.0.0.1:{bad}\"");
    wait_for_line(
        &mut b,
        &["dispatcher destination down", &bad_uri, "cause=\"cluster\""],
        Duration::from_secs(3),
    );
    eprintln!(
        "b knew of a's mark {} ms after the call started",
        marked.elapsed().as_millis()
    );
    let stored = redis
        .command(&format!("HGET wisp:balancer:ds:2 sip:127.0.0.1:{bad}"))
        .expect("redis answers");
    assert!(stored.contains("down"), "redis holds {stored:?}");

    // Through b: straight to the good callee.
    call_through(&b);
    // A node started now takes the state from redis (while it starts:
    // its log line is read by the start-up), so its call goes straight to
    // the good callee too.
    let c = node(&wasm, &redis, "c", bad, good);
    std::thread::sleep(Duration::from_millis(200));
    call_through(&c);

    std::thread::sleep(Duration::from_millis(4500));
    let got_good = uas_good.interrupt().expect("good callee stops").successful;
    let got_bad = uas_bad.interrupt().expect("503 callee stops").successful;
    eprintln!("good callee {got_good} calls, 503 callee {got_bad}");
    assert_eq!(
        (got_good, got_bad),
        (3, 1),
        "only the first call tried the 503 callee"
    );
}
