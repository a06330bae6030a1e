//! Names resolved by RFC 3263 off the receiving threads, against DNS
//! servers on loopback named in `[dns] servers`:
//! - a server that never answers: requests for names under it end with
//!   503 after `timeout_ms`, while calls to IP destinations go on
//!   unharmed;
//! - a server with NAPTR and SRV records for a domain served by two SIPp
//!   callees, the preferred one answering 503: every call reaches the
//!   other (RFC 3263 §4.3).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wisp_tests::{
    assert_all_successful, free_port, scenario, DnsServer, Routing, SilentDns, Sipp, Transport,
    Wisp, WispBuilder,
};

/// The DNS timeout wisp is given.
const DNS_TIMEOUT_MS: u64 = 1000;

fn wisp_with_dns(server: SocketAddr) -> Wisp {
    WispBuilder::new()
        .routing(Routing::Rust)
        .toml(&format!(
            "[dns]\nservers = [\"{server}\"]\ntimeout_ms = {DNS_TIMEOUT_MS}\n"
        ))
        .start()
        .expect("wisp starts")
}

/// A MESSAGE to `user@host`, sent to wisp from `from`.
fn message(n: usize, host: &str, from: SocketAddr) -> String {
    format!(
        "MESSAGE sip:user{n}@{host} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {from};branch=z9hG4bKname{n};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:tester@{from}>;tag=t{n}\r\n\
         To: <sip:user{n}@{host}>\r\n\
         Call-ID: name-{n}@dns.test\r\n\
         CSeq: 1 MESSAGE\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// Sends MESSAGEs for names under the silent server at `per_second`
/// while `running`; returns, per request, its final status and how long
/// it took.
fn names_at_rate(
    wisp: SocketAddr,
    per_second: u64,
    running: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<(Option<u16>, Duration)>> {
    std::thread::spawn(move || {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .expect("timeout");
        let from = socket.local_addr().expect("addr");
        let mut sent: HashMap<String, Instant> = HashMap::new();
        let mut finals: HashMap<String, (u16, Duration)> = HashMap::new();
        let interval = Duration::from_millis(1000 / per_second);
        let mut next = Instant::now();
        let mut n = 0;
        // Sending while the calls run; then waiting for the last answers.
        let mut drain_until = None;
        loop {
            let now = Instant::now();
            if running.load(Ordering::SeqCst) && now >= next {
                let request = message(n, &format!("host{n}.silent.test"), from);
                socket.send_to(request.as_bytes(), wisp).expect("send");
                sent.insert(format!("name-{n}@dns.test"), now);
                n += 1;
                next += interval;
            }
            if !running.load(Ordering::SeqCst) && drain_until.is_none() {
                drain_until = Some(now + Duration::from_millis(DNS_TIMEOUT_MS * 5));
            }
            if drain_until.is_some_and(|until| now >= until)
                || finals.len() == sent.len() && drain_until.is_some()
            {
                break;
            }
            let mut buf = [0u8; 4096];
            let Ok((len, _)) = socket.recv_from(&mut buf) else {
                continue;
            };
            let text = String::from_utf8_lossy(&buf[..len]).into_owned();
            let status = text
                .split_whitespace()
                .nth(1)
                .and_then(|code| code.parse::<u16>().ok());
            let call_id = wisp_tests::header_of(&text, "Call-ID").map(str::trim);
            if let (Some(status), Some(call_id)) = (status, call_id) {
                if status >= 200 {
                    if let Some(at) = sent.get(call_id) {
                        finals
                            .entry(call_id.to_owned())
                            .or_insert((status, at.elapsed()));
                    }
                }
            }
        }
        sent.keys()
            .map(|id| match finals.get(id) {
                Some((status, took)) => (Some(*status), *took),
                None => (None, Duration::ZERO),
            })
            .collect()
    })
}

#[test]
fn a_dns_server_that_never_answers_holds_up_nothing_else() {
    let dns = SilentDns::start().expect("silent DNS");
    let wisp = wisp_with_dns(dns.addr());
    let uas_port = free_port();
    let calls = 1000;
    let uas = Sipp::uas(scenario("uas.xml"), Transport::Udp, uas_port, calls)
        .spawn()
        .expect("uas starts");
    std::thread::sleep(Duration::from_millis(500));
    let running = Arc::new(AtomicBool::new(true));
    let names = names_at_rate(wisp.addr(), 20, running.clone());
    // 1000 calls at 100 calls/s to an IP destination, meanwhile.
    let callee = SocketAddr::from((Ipv4Addr::LOCALHOST, uas_port));
    let outcome = Sipp::uac(
        scenario("uac.xml"),
        Transport::Udp,
        callee,
        wisp.addr(),
        calls,
    )
    .run()
    .expect("uac runs");
    running.store(false, Ordering::SeqCst);
    let names = names.join().expect("name sender");
    let uas = uas.wait().expect("uas ends");

    let answered: Vec<_> = names.iter().filter(|(s, _)| s.is_some()).collect();
    let mut took: Vec<_> = answered.iter().map(|(_, t)| t.as_millis()).collect();
    took.sort_unstable();
    eprintln!(
        "calls: {} successful, {} failed; uas {} successful; names: {} sent, {} answered, \
         statuses {:?}, time to answer min/median/max {:?}/{:?}/{:?} ms; DNS queries seen {}",
        outcome.successful,
        outcome.failed,
        uas.successful,
        names.len(),
        answered.len(),
        names
            .iter()
            .fold(HashMap::<Option<u16>, usize>::new(), |mut m, (s, _)| {
                *m.entry(*s).or_default() += 1;
                m
            }),
        took.first(),
        took.get(took.len() / 2),
        took.last(),
        dns.queries()
    );
    assert_all_successful("calls to an IP destination", &outcome, calls);
    assert!(
        names.len() >= 100,
        "the name requests ran alongside the calls"
    );
    assert!(dns.queries() > 0, "wisp asked the silent server");
    for (status, took) in &names {
        assert!(
            matches!(status, Some(503 | 408)),
            "a name request ended with {status:?}"
        );
        // Not before the resolver gave up.
        assert!(
            took.as_millis() >= u128::from(DNS_TIMEOUT_MS) * 9 / 10,
            "answered after {took:?}, before the DNS timeout"
        );
    }
}

#[test]
fn srv_failover_reaches_the_second_callee() {
    let (port_a, port_b) = (free_port(), free_port());
    let zone = wisp_tests::Zone::new()
        .naptr(
            "failover.test",
            10,
            10,
            "s",
            "SIP+D2U",
            "_sip._udp.failover.test",
        )
        .srv(
            "_sip._udp.failover.test",
            10,
            0,
            port_a,
            "uas-a.failover.test",
        )
        .srv(
            "_sip._udp.failover.test",
            20,
            0,
            port_b,
            "uas-b.failover.test",
        )
        .a("uas-a.failover.test", Ipv4Addr::LOCALHOST)
        .a("uas-b.failover.test", Ipv4Addr::LOCALHOST);
    let dns = DnsServer::start(zone).expect("DNS server");
    let wisp = wisp_with_dns(dns.addr());
    let calls = 100;
    let first = Sipp::uas(scenario("uas-503.xml"), Transport::Udp, port_a, calls)
        .spawn()
        .expect("first uas starts");
    let second = Sipp::uas(scenario("uas.xml"), Transport::Udp, port_b, calls)
        .spawn()
        .expect("second uas starts");
    std::thread::sleep(Duration::from_millis(500));
    let mut uac = Sipp::uac(
        scenario("uac-domain.xml"),
        Transport::Udp,
        // Not used by the scenario: the Request-URI names the domain.
        SocketAddr::from((Ipv4Addr::LOCALHOST, port_b)),
        wisp.addr(),
        calls,
    );
    uac.rate = 20;
    uac.extra = vec!["-key".into(), "callee_host".into(), "failover.test".into()];
    let outcome = uac.run().expect("uac runs");
    let second = second.wait().expect("second uas ends");
    let first = first.wait().expect("first uas ends");
    eprintln!(
        "uac {} successful, {} failed; first uas (503) {} answered; second uas {} successful; \
         DNS questions {:?}",
        outcome.successful,
        outcome.failed,
        first.successful,
        second.successful,
        dns.queries()
    );
    assert_all_successful("calls to failover.test", &outcome, calls);
    // Every INVITE went to the preferred target first (its 503 acknowledged
    // hop by hop), then to the next one.
    assert_eq!(
        first.successful,
        u64::from(calls),
        "every call tried the first callee"
    );
    assert_eq!(
        second.successful,
        u64::from(calls),
        "every call reached the second callee"
    );
}
