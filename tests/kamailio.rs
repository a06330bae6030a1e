//! Interop with Kamailio (Debian package `kamailio`) as the neighbouring
//! proxy, both record-routing and stateful, on UDP and TCP:
//! SIPp → wisp → Kamailio → SIPp, and SIPp → Kamailio → wisp → SIPp.
//! ACK and BYE follow the Record-Route set through both proxies.
//!
//! Then TLS between the two proxies, both ways (Kamailio's module from
//! `kamailio-tls-modules`), SIPp on UDP at both ends: each side verifies
//! the other's certificate against the test CA, and refuses one from
//! another CA.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use wisp_tests::{
    assert_all_successful, free_port, request, scenario, udp_exchange, CertFiles, Kamailio,
    KamailioTls, Pki, Routing, Sipp, TlsClient, Transport, Wisp, WispBuilder,
};

const CALLS: u32 = 100;

/// Which proxy the caller talks to first.
#[derive(Debug, Clone, Copy)]
enum Order {
    WispFirst,
    KamailioFirst,
}

fn calls_through_kamailio(order: Order, transport: Transport) {
    let tenant = Routing::Rust.tenant_toml().expect("routing component");
    let wisp = Wisp::start(&tenant).expect("wisp starts");
    let uas_port = free_port();
    let uas_addr = format!("127.0.0.1:{uas_port}").parse().expect("addr");
    // Kamailio sends initial requests to the next element of the chain;
    // wisp sends them to the Request-URI.
    let (kamailio, callee, first_hop) = match order {
        Order::WispFirst => {
            let kamailio = Kamailio::start(uas_addr).expect("kamailio starts");
            let callee = kamailio.addr();
            (kamailio, callee, wisp.addr())
        }
        Order::KamailioFirst => {
            let kamailio = Kamailio::start(wisp.addr()).expect("kamailio starts");
            let first = kamailio.addr();
            (kamailio, uas_addr, first)
        }
    };
    let uas = Sipp::uas(scenario("uas.xml"), transport, uas_port, CALLS)
        .spawn()
        .expect("uas starts");
    std::thread::sleep(Duration::from_millis(500));
    let mut uac = Sipp::uac(scenario("uac.xml"), transport, callee, first_hop, CALLS);
    uac.rate = 50;
    uac.timeout = Duration::from_secs(90);
    let outcome = uac.run().expect("uac runs");
    let what = format!("{order:?} {transport:?}");
    assert_all_successful(&format!("{what}, uac"), &outcome, CALLS);
    let uas = uas.wait().expect("uas ends");
    assert_all_successful(&format!("{what}, uas"), &uas, CALLS);
    drop(kamailio);
}

#[test]
fn wisp_then_kamailio_udp() {
    calls_through_kamailio(Order::WispFirst, Transport::Udp);
}

#[test]
fn kamailio_then_wisp_udp() {
    calls_through_kamailio(Order::KamailioFirst, Transport::Udp);
}

#[test]
fn wisp_then_kamailio_tcp() {
    calls_through_kamailio(Order::WispFirst, Transport::Tcp);
}

#[test]
fn kamailio_then_wisp_tcp() {
    calls_through_kamailio(Order::KamailioFirst, Transport::Tcp);
}

const TLS_CALLS: u32 = 20;

/// A wisp with a TLS listener besides UDP and TCP: its certificate for
/// 127.0.0.1 from `pki`, clients (Kamailio) presenting one from `pki` too;
/// the servers it opens TLS to (Kamailio) must chain to `trusted`.
fn wisp_with_tls(pki: &Pki, trusted: &Path) -> (Wisp, SocketAddr) {
    let cert = pki
        .issue("wisp", "IP:127.0.0.1")
        .expect("wisp's certificate");
    let tls_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let wisp = WispBuilder::new()
        .toml(&format!(
            "[tls]\nca = \"{}\"\n\
             [[listen]]\ntransport = \"tls\"\naddress = \"{tls_addr}\"\n\
             certificate = \"{}\"\nprivate_key = \"{}\"\nclient_ca = \"{}\"\n",
            trusted.display(),
            cert.certificate.display(),
            cert.private_key.display(),
            pki.ca.display()
        ))
        .routing(Routing::Rust)
        .start()
        .expect("wisp starts");
    // The builder waits for two listeners of three: wait for TLS too.
    let client = pki.issue("probe", "IP:127.0.0.1").expect("probe");
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(err) = TlsClient::connect(tls_addr, "127.0.0.1", &pki.ca, Some(&client)) {
        assert!(Instant::now() < deadline, "wisp's TLS listener: {err:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
    (wisp, tls_addr)
}

/// Kamailio's TLS: its certificate for 127.0.0.1 from `pki`, wisp's
/// verified against `trusted`.
fn kamailio_tls(pki: &Pki, trusted: &Path, relay_over_tls: bool) -> KamailioTls {
    let certificate: CertFiles = pki
        .issue("kamailio", "IP:127.0.0.1")
        .expect("Kamailio's certificate");
    KamailioTls {
        certificate,
        ca: trusted.to_path_buf(),
        relay_over_tls,
    }
}

/// uac.xml with `;transport=tls` in the INVITE's Request-URI, so that wisp
/// opens TLS to the callee address (Kamailio's TLS listener); SIPp itself
/// still speaks UDP. Written into `dir`.
fn uac_to_tls_callee(dir: &Path) -> String {
    let xml = std::fs::read_to_string(scenario("uac.xml")).expect("uac.xml");
    let invite = "INVITE sip:[service]@[remote_ip]:[remote_port];transport=[transport] SIP/2.0";
    assert!(xml.contains(invite), "uac.xml's INVITE line changed");
    let xml = xml.replace(
        invite,
        "INVITE sip:[service]@[remote_ip]:[remote_port];transport=tls SIP/2.0",
    );
    let path = dir.join("uac-tls-callee.xml");
    std::fs::write(&path, xml).expect("scenario written");
    path.display().to_string()
}

/// SIPp (UDP) → wisp → TLS → Kamailio → SIPp (UDP), or SIPp (UDP) →
/// Kamailio → TLS → wisp → SIPp (UDP).
fn tls_calls_through_kamailio(order: Order) {
    let pki = Pki::new().expect("CA");
    let (wisp, wisp_tls) = wisp_with_tls(&pki, &pki.ca);
    let uas_port = free_port();
    let uas_addr = format!("127.0.0.1:{uas_port}").parse().expect("addr");
    let (kamailio, uac_scenario, callee, first_hop) = match order {
        Order::WispFirst => {
            // wisp sends to the Request-URI: Kamailio's TLS listener.
            let tls = kamailio_tls(&pki, &pki.ca, false);
            let kamailio = Kamailio::start_tls(uas_addr, &tls).expect("kamailio starts");
            let callee = kamailio.tls_addr().expect("TLS listener");
            let uac = uac_to_tls_callee(pki.dir());
            (kamailio, uac, callee, wisp.addr())
        }
        Order::KamailioFirst => {
            // Kamailio relays to wisp's TLS listener.
            let tls = kamailio_tls(&pki, &pki.ca, true);
            let kamailio = Kamailio::start_tls(wisp_tls, &tls).expect("kamailio starts");
            let first = kamailio.addr();
            (kamailio, scenario("uac.xml"), uas_addr, first)
        }
    };
    let uas = Sipp::uas(scenario("uas.xml"), Transport::Udp, uas_port, TLS_CALLS)
        .spawn()
        .expect("uas starts");
    std::thread::sleep(Duration::from_millis(500));
    let mut uac = Sipp::uac(uac_scenario, Transport::Udp, callee, first_hop, TLS_CALLS);
    uac.rate = 10;
    uac.timeout = Duration::from_secs(60);
    let outcome = uac.run().expect("uac runs");
    let what = format!("{order:?} over TLS");
    assert_all_successful(&format!("{what}, uac"), &outcome, TLS_CALLS);
    let uas = uas.wait().expect("uas ends");
    assert_all_successful(&format!("{what}, uas"), &uas, TLS_CALLS);
    drop(kamailio);
}

#[test]
fn wisp_then_kamailio_tls() {
    tls_calls_through_kamailio(Order::WispFirst);
}

#[test]
fn kamailio_then_wisp_tls() {
    tls_calls_through_kamailio(Order::KamailioFirst);
}

/// An OPTIONS sent to `proxy` over UDP for `uri`: the status line of the
/// first reply within `timeout`, or "(no reply)".
fn options_status(proxy: SocketAddr, uri: &str, timeout: Duration) -> String {
    let msg = request("OPTIONS", uri, "Max-Forwards: 70\r\n");
    let reply = udp_exchange(proxy, msg.as_bytes(), timeout)
        .expect("udp")
        .unwrap_or_default();
    reply.lines().next().unwrap_or("(no reply)").to_owned()
}

#[test]
fn wisp_verifies_kamailio_certificate() {
    let pki = Pki::new().expect("CA");
    let other = Pki::new().expect("another CA");
    let tls = kamailio_tls(&pki, &pki.ca, false);
    let uas_addr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let kamailio = Kamailio::start_tls(uas_addr, &tls).expect("kamailio starts");
    let kamailio_uri = format!(
        "sip:{};transport=tls",
        kamailio.tls_addr().expect("TLS listener")
    );
    // Trusting the CA that issued Kamailio's certificate, wisp gets an
    // OPTIONS through, which Kamailio answers for itself.
    let (wisp, _) = wisp_with_tls(&pki, &pki.ca);
    let status = options_status(wisp.addr(), &kamailio_uri, Duration::from_secs(10));
    assert_eq!(status, "SIP/2.0 200 Kamailio here");
    drop(wisp);
    // Trusting another CA, wisp refuses the certificate and the OPTIONS
    // goes nowhere. (wisp answers it 408 when its transaction times out,
    // not at once.)
    let (mut wisp, _) = wisp_with_tls(&pki, &other.ca);
    let status = options_status(wisp.addr(), &kamailio_uri, Duration::from_secs(2));
    assert!(!status.starts_with("SIP/2.0 2"), "{status}");
    wisp.wait_for_log("invalid peer certificate", 1, Duration::from_secs(10))
        .expect("wisp refuses Kamailio's certificate");
    drop(kamailio);
}

#[test]
fn kamailio_verifies_wisp_certificate() {
    let pki = Pki::new().expect("CA");
    let other = Pki::new().expect("another CA");
    let (wisp, wisp_tls) = wisp_with_tls(&pki, &pki.ca);
    // Not for Kamailio itself: it relays it to wisp, which answers for
    // its own address.
    let wisp_uri = format!("sip:{}", wisp.addr());
    let kamailio =
        Kamailio::start_tls(wisp_tls, &kamailio_tls(&pki, &pki.ca, true)).expect("kamailio starts");
    let status = options_status(kamailio.addr(), &wisp_uri, Duration::from_secs(10));
    assert!(status.starts_with("SIP/2.0 200"), "{status}");
    drop(kamailio);
    // Trusting another CA (its own certificate still from the test CA,
    // which wisp asks for), Kamailio refuses wisp's certificate.
    let kamailio = Kamailio::start_tls(wisp_tls, &kamailio_tls(&pki, &other.ca, true))
        .expect("kamailio starts");
    let status = options_status(kamailio.addr(), &wisp_uri, Duration::from_secs(2));
    assert!(!status.starts_with("SIP/2.0 2"), "{status}");
    kamailio
        .wait_for_log("certificate verify failed", Duration::from_secs(10))
        .expect("Kamailio refuses wisp's certificate");
    drop(kamailio);
}
