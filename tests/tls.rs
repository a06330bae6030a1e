//! TLS against the real binary: certificates chosen by SNI, mutual TLS,
//! certificates reloaded while connections stay up (and without growing
//! memory), broken files refused by `wisp check` and by a reload, closed
//! TLS connections giving their descriptors back, and wisp opening TLS to
//! a peer.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use wisp_tests::{
    certificate_der, free_port, request, wisp_binary, CertFiles, Pki, TlsClient, WispBuilder,
};

fn tls_listen(
    port: u16,
    default: &CertFiles,
    more: &[&CertFiles],
    client_ca: Option<&Path>,
) -> String {
    let mut toml = format!(
        "[[listen]]\ntransport = \"tls\"\naddress = \"127.0.0.1:{port}\"\ncertificate = \"{}\"\nprivate_key = \"{}\"\n",
        default.certificate.display(),
        default.private_key.display()
    );
    if let Some(ca) = client_ca {
        toml.push_str(&format!("client_ca = \"{}\"\n", ca.display()));
    }
    for files in more {
        toml.push_str(&format!(
            "[[listen.certificates]]\ncertificate = \"{}\"\nprivate_key = \"{}\"\n",
            files.certificate.display(),
            files.private_key.display()
        ));
    }
    toml
}

fn options(port: u16) -> String {
    request(
        "OPTIONS",
        &format!("sip:127.0.0.1:{port}"),
        "Max-Forwards: 70\r\n",
    )
}

fn ok(reply: &str) -> bool {
    reply.starts_with("SIP/2.0 200")
}

fn copy(from: &CertFiles, to: &CertFiles) {
    std::fs::copy(&from.certificate, &to.certificate).expect("copy certificate");
    std::fs::copy(&from.private_key, &to.private_key).expect("copy key");
}

#[test]
fn certificates_by_sni_reloaded_while_connections_stay() {
    let pki = Pki::new().expect("CA");
    let main = pki
        .issue("main", "DNS:sip.example.test,IP:127.0.0.1")
        .expect("main certificate");
    let other = pki.issue("other", "DNS:other.example.test").expect("other");
    // What wisp serves lives in files of its own, replaced to reload.
    let served = CertFiles {
        certificate: pki.dir().join("served.pem"),
        private_key: pki.dir().join("served.key"),
    };
    copy(&main, &served);
    let port = free_port();
    let wisp = WispBuilder::new()
        .admin()
        .toml(&tls_listen(port, &served, &[&other], None))
        .start()
        .expect("wisp starts");
    let addr = format!("127.0.0.1:{port}").parse().expect("addr");

    let mut first = TlsClient::connect(addr, "sip.example.test", &pki.ca, None).expect("tls");
    assert!(ok(&first.exchange(&options(port)).expect("reply")));
    assert_eq!(
        first.server_certificate(),
        certificate_der(&main.certificate).expect("der")
    );
    let by_sni = TlsClient::connect(addr, "other.example.test", &pki.ca, None).expect("sni");
    assert_eq!(
        by_sni.server_certificate(),
        certificate_der(&other.certificate).expect("der")
    );

    // A new certificate: new handshakes get it, the open connection goes on.
    let renewed = pki
        .issue("renewed", "DNS:sip.example.test,IP:127.0.0.1")
        .expect("renewed");
    copy(&renewed, &served);
    let reload = wisp.ctl(&["reload"]).expect("ctl");
    assert!(reload.success, "{reload:?}");
    assert!(ok(&first
        .exchange(&options(port))
        .expect("same connection")));
    let fresh = TlsClient::connect(addr, "sip.example.test", &pki.ca, None).expect("tls");
    assert_eq!(
        fresh.server_certificate(),
        certificate_der(&renewed.certificate).expect("der")
    );

    // A key that does not go with its certificate: the reload is refused,
    // saying which files, and the renewed certificate stays.
    std::fs::copy(&other.private_key, &served.private_key).expect("wrong key");
    let refused = wisp.ctl(&["reload"]).expect("ctl");
    assert!(!refused.success, "{refused:?}");
    assert!(
        refused.stderr.contains("served.key") || refused.stdout.contains("served.key"),
        "{refused:?}"
    );
    let still = TlsClient::connect(addr, "sip.example.test", &pki.ca, None).expect("tls");
    assert_eq!(
        still.server_certificate(),
        certificate_der(&renewed.certificate).expect("der")
    );
    copy(&renewed, &served);

    // 100 reloads more: memory stays where it was.
    for _ in 0..10 {
        assert!(wisp.ctl(&["reload"]).expect("ctl").success);
    }
    let before = wisp.rss_kib().expect("rss");
    for _ in 0..100 {
        assert!(wisp.ctl(&["reload"]).expect("ctl").success);
    }
    let after = wisp.rss_kib().expect("rss");
    eprintln!("RSS {before} KiB before, {after} KiB after 100 certificate reloads");
    assert!(
        after < before + 4096,
        "100 reloads grew RSS from {before} to {after} KiB"
    );
    assert!(ok(&first.exchange(&options(port)).expect("still up")));
}

#[test]
fn mutual_tls_wants_a_client_certificate_from_the_ca() {
    let pki = Pki::new().expect("CA");
    let server = pki.issue("server", "IP:127.0.0.1").expect("server");
    let client = pki
        .issue("client", "DNS:phone.example.test")
        .expect("client");
    let stranger_ca = Pki::new().expect("another CA");
    let stranger = stranger_ca
        .issue("stranger", "DNS:phone.example.test")
        .expect("stranger");
    let port = free_port();
    let _wisp = WispBuilder::new()
        .toml(&tls_listen(port, &server, &[], Some(&pki.ca)))
        .start()
        .expect("wisp starts");
    let addr = format!("127.0.0.1:{port}").parse().expect("addr");
    let mut good = TlsClient::connect(addr, "127.0.0.1", &pki.ca, Some(&client)).expect("mtls");
    assert!(ok(&good.exchange(&options(port)).expect("reply")));
    // TLS 1.3 reports a refused client certificate after the handshake:
    // at the first exchange at the latest.
    for who in [None, Some(&stranger)] {
        let refused = TlsClient::connect(addr, "127.0.0.1", &pki.ca, who)
            .and_then(|mut c| c.exchange(&options(port)));
        assert!(
            refused.is_err(),
            "{} got in: {refused:?}",
            if who.is_some() {
                "a stranger's certificate"
            } else {
                "no certificate"
            }
        );
    }
}

#[test]
fn check_names_certificate_files_that_cannot_serve() {
    let pki = Pki::new().expect("CA");
    let a = pki.issue("a", "IP:127.0.0.1").expect("a");
    let b = pki.issue("b", "IP:127.0.0.1").expect("b");
    let mismatched = CertFiles {
        certificate: a.certificate.clone(),
        private_key: b.private_key.clone(),
    };
    let missing = CertFiles {
        certificate: pki.dir().join("nowhere.pem"),
        private_key: a.private_key.clone(),
    };
    for (files, expect) in [(&mismatched, "b.key"), (&missing, "nowhere.pem")] {
        let config = pki.dir().join("wisp.toml");
        std::fs::write(&config, tls_listen(free_port(), files, &[], None)).expect("config");
        let out = Command::new(wisp_binary().expect("wisp"))
            .args(["check", "--config"])
            .arg(&config)
            .output()
            .expect("wisp check");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "wisp check passed {files:?}");
        assert!(err.contains(expect), "{err}");
    }
    let no_key = format!(
        "[[listen]]\ntransport = \"tls\"\naddress = \"127.0.0.1:{}\"\ncertificate = \"{}\"\n",
        free_port(),
        a.certificate.display()
    );
    let config = pki.dir().join("no-key.toml");
    std::fs::write(&config, no_key).expect("config");
    let out = Command::new(wisp_binary().expect("wisp"))
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .expect("wisp check");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("private_key"));
}

#[test]
fn closed_tls_connections_give_their_descriptors_back() {
    let pki = Pki::new().expect("CA");
    let server = pki.issue("server", "IP:127.0.0.1").expect("server");
    let port = free_port();
    let wisp = WispBuilder::new()
        .toml(&tls_listen(port, &server, &[], None))
        .start()
        .expect("wisp starts");
    let addr = format!("127.0.0.1:{port}").parse().expect("addr");
    let mut warm = TlsClient::connect(addr, "127.0.0.1", &pki.ca, None).expect("tls");
    assert!(ok(&warm.exchange(&options(port)).expect("reply")));
    drop(warm);
    std::thread::sleep(Duration::from_millis(200));
    let before = wisp.descriptors().expect("descriptors");
    const CYCLES: usize = 1_000;
    let started = Instant::now();
    for i in 0..CYCLES {
        let mut c = TlsClient::connect(addr, "127.0.0.1", &pki.ca, None).expect("tls");
        let reply = c.exchange(&options(port)).expect("reply");
        assert!(ok(&reply), "cycle {i}: {reply}");
    }
    let took = started.elapsed();
    let after = wisp.descriptors_down_to(before + 3).expect("descriptors");
    eprintln!(
        "descriptors: {before} before, {after} after {CYCLES} TLS connect / OPTIONS / close cycles ({:.0} handshakes+OPTIONS per second, one client)",
        CYCLES as f64 / took.as_secs_f64()
    );
    assert!(
        after <= before + 3,
        "{} descriptors left behind",
        after - before
    );
}

#[test]
fn wisp_opens_tls_to_a_peer_it_routes_to() {
    let pki = Pki::new().expect("CA");
    let server = pki.issue("peer", "IP:127.0.0.1").expect("peer certificate");
    let tls_port = free_port();
    // The peer: a wisp listening on TLS, answering for its own address.
    let peer = WispBuilder::new()
        .toml(&tls_listen(tls_port, &server, &[], None))
        .start()
        .expect("peer starts");
    // The proxy trusts the test CA for the TLS it opens, and has a TLS
    // listener of its own to name in Via and Record-Route (without one a
    // TLS destination is refused: "no tls listener").
    let proxy_cert = pki
        .issue("proxy", "IP:127.0.0.1")
        .expect("proxy certificate");
    let proxy = WispBuilder::new()
        .toml(&format!(
            "[tls]\nca = \"{}\"\n{}",
            pki.ca.display(),
            tls_listen(free_port(), &proxy_cert, &[], None)
        ))
        .start()
        .expect("proxy starts");
    let uri = format!("sip:nobody@127.0.0.1:{tls_port};transport=tls");
    let msg = request("OPTIONS", &uri, "Max-Forwards: 70\r\n");
    let reply = wisp_tests::udp_exchange(proxy.addr(), msg.as_bytes(), Duration::from_secs(5))
        .expect("udp")
        .unwrap_or_default();
    // The peer answers a user it does not know 404; that it answered at
    // all means the request crossed the TLS connection the proxy opened.
    let status = reply.lines().next().unwrap_or("(no reply)");
    assert!(
        status.starts_with("SIP/2.0 404") || status.starts_with("SIP/2.0 200"),
        "{status}\n{reply}"
    );
    drop(peer);
}

/// A routing component for the first of two wisps: every initial request
/// goes to the next wisp (param `NEXT`, a `;transport=tls` URI), the
/// Request-URI left as the caller wrote it; in-dialog requests follow their
/// Route set. INVITEs are record-routed, so ACK and BYE come back this way.
const RELAY_TO_NEXT: &str = r#"
use wisp_sdk::prelude::*;

struct RelayToNext;

impl Router for RelayToNext {
    fn route(req: &Request) -> Flow {
        req.max_forwards(Some(10))?;
        if req.in_dialog() {
            let routed = req.loose_route();
            if *req.method() == Method::Ack {
                return req.forward();
            }
            if routed == RouteCheck::None {
                return req.reply(404, "Not here");
            }
            return req.relay();
        }
        if matches!(req.method(), Method::Ack | Method::Cancel) {
            return req.forward();
        }
        req.remove_header("Route")?;
        if *req.method() == Method::Invite {
            req.record_route()?;
        }
        let next = config::param("NEXT").unwrap_or_default();
        req.relay_to(&next)
    }
}

wisp_sdk::export_router!(RelayToNext);
"#;

/// The peer ports of the TCP connections established to 127.0.0.1:`port`
/// (from /proc/net/tcp: the accepting side's sockets).
fn established_to(port: u16) -> Vec<u16> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let port_of = |field: &str| u16::from_str_radix(field.rsplit(':').next()?, 16).ok();
            let local = port_of(fields.get(1)?)?;
            let remote = port_of(fields.get(2)?)?;
            (local == port && *fields.get(3)? == "01").then_some(remote)
        })
        // /proc/net/tcp is read in pages: a table that changes meanwhile
        // may list a socket twice.
        .collect::<std::collections::BTreeSet<u16>>()
        .into_iter()
        .collect()
}

/// The sum of the samples of metric `name` whose labels contain `label`,
/// in `wisp ctl metrics`' text.
fn metric(wisp: &wisp_tests::Wisp, name: &str, label: &str) -> u64 {
    let out = wisp.ctl(&["metrics"]).expect("ctl metrics");
    assert!(out.success, "{out:?}");
    out.stdout
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{'))
        })
        .filter(|l| l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[test]
fn certificates_reloaded_during_a_call_load_between_two_wisps_fail_no_call() {
    const CALLS: u32 = 600;
    const RATE: u32 = 40;
    const RELOADS: usize = 16;
    const EVERY: Duration = Duration::from_millis(750);

    let pki = Pki::new().expect("CA");
    let one = pki.issue("one", "IP:127.0.0.1").expect("first certificate");
    let two = pki
        .issue("two", "IP:127.0.0.1")
        .expect("second certificate");
    let own = pki.issue("a", "IP:127.0.0.1").expect("A's certificate");
    let served = CertFiles {
        certificate: pki.dir().join("served.pem"),
        private_key: pki.dir().join("served.key"),
    };
    copy(&one, &served);

    // B: TLS in, the default routing relays to the Request-URI (the UAS)
    // over UDP.
    let b_tls = free_port();
    let b = WispBuilder::new()
        .admin()
        .toml(&tls_listen(b_tls, &served, &[], None))
        .start()
        .expect("B starts");
    let b_addr = format!("127.0.0.1:{b_tls}").parse().expect("addr");

    // A: UDP in, every call to B over TLS, B verified against the test CA.
    let wasm = wisp_tests::build_guest("relay-to-next", RELAY_TO_NEXT).expect("guest builds");
    let a = WispBuilder::new()
        .admin()
        .toml(&format!(
            "[tls]\nca = \"{}\"\n{}",
            pki.ca.display(),
            tls_listen(free_port(), &own, &[], None)
        ))
        .tenant(
            wisp_tests::Tenant::new("relay")
                .component(&wasm)
                .param("NEXT", &format!("sip:127.0.0.1:{b_tls};transport=tls")),
        )
        .start()
        .expect("A starts");

    let probe = |expected: &CertFiles| {
        let mut client = TlsClient::connect(b_addr, "127.0.0.1", &pki.ca, None).expect("tls");
        assert_eq!(
            client.server_certificate(),
            certificate_der(&expected.certificate).expect("der"),
            "a new handshake with B after the reload got another certificate"
        );
        assert!(ok(&client.exchange(&options(b_tls)).expect("reply")));
    };
    probe(&one);
    let mut probes = 1;

    let uas_port = free_port();
    let uas = wisp_tests::Sipp::uas(
        wisp_tests::scenario("uas.xml"),
        wisp_tests::Transport::Udp,
        uas_port,
        CALLS,
    )
    .spawn()
    .expect("uas starts");
    std::thread::sleep(Duration::from_millis(500));
    let callee = format!("127.0.0.1:{uas_port}").parse().expect("addr");
    let mut uac = wisp_tests::Sipp::uac(
        wisp_tests::scenario("uac.xml"),
        wisp_tests::Transport::Udp,
        callee,
        a.addr(),
        CALLS,
    );
    uac.rate = RATE;
    uac.timeout = Duration::from_secs(90);
    let started = Instant::now();
    let uac = uac.spawn().expect("uac starts");

    // The connection A opened to B for the first call.
    let from_a = loop {
        match established_to(b_tls)[..] {
            [port] => break port,
            [] if started.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(20));
            }
            ref other => panic!("connections to B: {other:?}"),
        }
    };
    let requests_before = metric(&b, "wisp_requests_total", "");

    let mut last = &one;
    for i in 0..RELOADS {
        std::thread::sleep(EVERY);
        let next = if i % 2 == 0 { &two } else { &one };
        copy(next, &served);
        let reload = b.ctl(&["reload"]).expect("ctl");
        assert!(reload.success, "reload {i}: {reload:?}");
        last = next;
        assert_eq!(
            established_to(b_tls),
            vec![from_a],
            "A's connection to B after reload {i}"
        );
        probe(next);
        probes += 1;
    }
    let reloads_took = started.elapsed();
    let requests_at_last_reload = metric(&b, "wisp_requests_total", "");

    let outcome = uac.wait().expect("uac runs");
    let load_took = started.elapsed();
    wisp_tests::assert_all_successful("uac through A, TLS, B", &outcome, CALLS);
    let uas = uas.wait().expect("uas ends");
    wisp_tests::assert_all_successful("uas behind B", &uas, CALLS);
    let requests_after = metric(&b, "wisp_requests_total", "");

    // The reloads happened while calls went through B.
    assert!(
        requests_before > 0 && requests_at_last_reload < requests_after,
        "B's requests: {requests_before} at the first reload, {requests_at_last_reload} at the last, {requests_after} in all"
    );
    // One connection from A to B all along: the one opened for the first call.
    assert_eq!(established_to(b_tls), vec![from_a]);
    let a_closed = metric(&a, "wisp_connections_closed_total", "transport=\"tls\"");
    let a_open = metric(&a, "wisp_connections_open", "transport=\"tls\"");
    assert_eq!(
        (a_closed, a_open),
        (0, 1),
        "A's TLS connections closed, open"
    );
    // B closed the probes' connections and no other.
    let until = Instant::now() + Duration::from_secs(10);
    let (b_closed, b_open) = loop {
        let closed = metric(&b, "wisp_connections_closed_total", "transport=\"tls\"");
        let open = metric(&b, "wisp_connections_open", "transport=\"tls\"");
        if (closed, open) == (probes, 1) || Instant::now() > until {
            break (closed, open);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        (b_closed, b_open),
        (probes, 1),
        "B's TLS connections closed, open ({probes} probes)"
    );
    assert_eq!(metric(&b, "wisp_reloads_total", "kind=\"failed\""), 0);
    // And a new handshake still gets the certificate of the last reload.
    probe(last);
    eprintln!(
        "{CALLS} calls at {RATE}/s through A -TLS-> B in {:.1} s, all successful; \
         {RELOADS} certificate reloads of B within the first {:.1} s, each seen by a new handshake; \
         one TLS connection from A (port {from_a}) all along: A closed {a_closed}, \
         B closed {b_closed} (the {probes} probes'); B's requests {requests_before} at the first reload, \
         {requests_at_last_reload} at the last, {requests_after} in all",
        load_took.as_secs_f64(),
        reloads_took.as_secs_f64()
    );
}

/// wisp A (trunk routing) sends every call to `next`, a `sips:` URI with
/// a name, resolved at the test DNS server; B (trunk routing, no NEXT)
/// takes them over TLS and relays to the callee.
fn sips_by_name(
    next: &str,
    zone_port: u16,
    b_cert: &CertFiles,
    pki: &Pki,
) -> (wisp_tests::Wisp, wisp_tests::Wisp, wisp_tests::DnsServer) {
    let wasm = wisp_tests::build_guest("trunk", wisp_tests::TRUNK_GUEST).expect("guest builds");
    let b_tls = zone_port;
    let b = WispBuilder::new()
        .toml(&format!(
            "{}[[tenant]]\nname = \"trunk\"\ncomponent = \"{}\"\n",
            tls_listen(b_tls, b_cert, &[], None),
            wasm.display()
        ))
        .start()
        .expect("wisp B starts");
    let zone = wisp_tests::Zone::new()
        .srv(
            "_sips._tcp.sip.example.test",
            10,
            10,
            b_tls,
            "b.example.test",
        )
        .srv(
            "_sips._tcp.wrong.example.test",
            10,
            10,
            b_tls,
            "b.example.test",
        )
        .a("b.example.test", std::net::Ipv4Addr::LOCALHOST);
    let dns = wisp_tests::DnsServer::start(zone).expect("dns");
    let a_cert = pki.issue("a", "IP:127.0.0.1").expect("certificate");
    let a = WispBuilder::new()
        .toml(&format!(
            "{}[tls]\nca = \"{}\"\n[dns]\nservers = [\"{}\"]\n\
             [[tenant]]\nname = \"trunk\"\ncomponent = \"{}\"\nparams = {{ NEXT = \"{next}\" }}\n",
            tls_listen(free_port(), &a_cert, &[], None),
            pki.ca.display(),
            dns.addr(),
            wasm.display()
        ))
        .start()
        .expect("wisp A starts");
    (a, b, dns)
}

#[test]
fn tls_to_a_name_found_by_srv_checks_the_certificate_against_the_name() {
    let pki = Pki::new().expect("CA");
    // B's certificate names the domain, not its address.
    let b_cert = pki.issue("b", "DNS:sip.example.test").expect("certificate");
    let (a, b, dns) = sips_by_name("sips:sip.example.test", free_port(), &b_cert, &pki);
    let uas_port = free_port();
    let uas = wisp_tests::Sipp::uas(
        wisp_tests::scenario("uas.xml"),
        wisp_tests::Transport::Udp,
        uas_port,
        20,
    )
    .spawn()
    .expect("uas");
    std::thread::sleep(Duration::from_millis(300));
    let callee = format!("127.0.0.1:{uas_port}").parse().expect("addr");
    let outcome = wisp_tests::Sipp::uac(
        wisp_tests::scenario("uac.xml"),
        wisp_tests::Transport::Udp,
        callee,
        a.addr(),
        20,
    )
    .run()
    .expect("uac");
    wisp_tests::assert_all_successful("calls to sips:sip.example.test", &outcome, 20);
    wisp_tests::assert_all_successful("callee", &uas.wait().expect("uas"), 20);
    let asked: Vec<String> = dns.asked().iter().map(|q| format!("{q:?}")).collect();
    assert!(
        asked
            .iter()
            .any(|q| q.contains("_sips._tcp.sip.example.test")),
        "{asked:?}"
    );
    drop(b);
}

#[test]
fn tls_to_a_name_the_certificate_does_not_carry_is_refused() {
    let pki = Pki::new().expect("CA");
    let b_cert = pki.issue("b", "DNS:sip.example.test").expect("certificate");
    let (mut a, _b, _dns) = sips_by_name("sips:wrong.example.test", free_port(), &b_cert, &pki);
    let client = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let message = request("OPTIONS", "sip:service@192.0.2.1", "Max-Forwards: 70\r\n");
    client.send_to(message.as_bytes(), a.addr()).expect("send");
    a.wait_for_log(
        "not valid for name \"wrong.example.test\"",
        1,
        Duration::from_secs(10),
    )
    .expect("the handshake fails on the name");
    // The request is answered as soon as the connection fails, not when
    // its transaction times out (32 s).
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = [0u8; 4096];
    let (n, _) = client.recv_from(&mut buf).expect("an answer within 5 s");
    let reply = String::from_utf8_lossy(&buf[..n]);
    assert!(reply.starts_with("SIP/2.0 503"), "{reply}");
}
