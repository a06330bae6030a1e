//! SIP over QUIC between two wisps (a trunk): SIPp (UDP) → wisp A → QUIC →
//! wisp B → SIPp (UDP), 500 calls; then the QUIC connection is killed
//! under load (wisp B killed and started again on the same ports): calls
//! in flight end (none hangs), and new ones reconnect.

use std::time::{Duration, Instant};

use wisp_tests::{
    assert_all_successful, build_guest, free_port, scenario, CertFiles, Pki, Sipp, Transport, Wisp,
    WispBuilder, TRUNK_GUEST,
};

struct Trunk {
    a: Wisp,
    b: Option<Wisp>,
    /// B's QUIC port and tenant, to start it again.
    quic_b: u16,
    tenant_b: String,
}

fn start_b(quic_port: u16, cert: &CertFiles, tenant: &str) -> Wisp {
    WispBuilder::new()
        .toml(&format!(
            "[[listen]]\ntransport = \"quic\"\naddress = \"127.0.0.1:{quic_port}\"\n\
             certificate = \"{}\"\nprivate_key = \"{}\"\n{tenant}",
            cert.certificate.display(),
            cert.private_key.display()
        ))
        .start()
        .expect("wisp B starts")
}

fn trunk(pki: &Pki, cert: &CertFiles) -> Trunk {
    let wasm = build_guest("trunk", TRUNK_GUEST).expect("guest builds");
    let quic_b = free_port();
    let tenant_b = format!(
        "[[tenant]]\nname = \"trunk\"\ncomponent = \"{}\"\n",
        wasm.display()
    );
    let b = start_b(quic_b, cert, &tenant_b);
    let quic_a = free_port();
    let a = WispBuilder::new()
        .toml(&format!(
            "[[listen]]\ntransport = \"quic\"\naddress = \"127.0.0.1:{quic_a}\"\n\
             certificate = \"{}\"\nprivate_key = \"{}\"\n\
             [tls]\nca = \"{}\"\n\
             [[tenant]]\nname = \"trunk\"\ncomponent = \"{}\"\n\
             params = {{ NEXT = \"sip:127.0.0.1:{quic_b};transport=quic\" }}\n",
            cert.certificate.display(),
            cert.private_key.display(),
            pki.ca.display(),
            wasm.display()
        ))
        .start()
        .expect("wisp A starts");
    Trunk {
        a,
        b: Some(b),
        quic_b,
        tenant_b,
    }
}

#[test]
fn five_hundred_calls_cross_a_quic_trunk() {
    let pki = Pki::new().expect("CA");
    let cert = pki.issue("trunk", "IP:127.0.0.1").expect("certificate");
    let t = trunk(&pki, &cert);
    let uas_port = free_port();
    let uas = Sipp::uas(scenario("uas.xml"), Transport::Udp, uas_port, 500)
        .spawn()
        .expect("uas");
    std::thread::sleep(Duration::from_millis(300));
    let callee = format!("127.0.0.1:{uas_port}").parse().expect("addr");
    let mut uac = Sipp::uac(scenario("uac.xml"), Transport::Udp, callee, t.a.addr(), 500);
    uac.rate = 100;
    let started = Instant::now();
    let outcome = uac.run().expect("uac");
    let took = started.elapsed();
    assert_all_successful("calls across the QUIC trunk", &outcome, 500);
    assert_all_successful(
        "callee behind the QUIC trunk",
        &uas.wait().expect("uas"),
        500,
    );
    eprintln!("500 calls across QUIC in {took:?}");
}

#[test]
fn a_killed_quic_connection_ends_calls_in_flight_and_new_calls_reconnect() {
    let pki = Pki::new().expect("CA");
    let cert = pki.issue("trunk", "IP:127.0.0.1").expect("certificate");
    let mut t = trunk(&pki, &cert);
    let uas_port = free_port();
    let callee = format!("127.0.0.1:{uas_port}").parse().expect("addr");

    // Calls flow; then wisp B dies (its QUIC connection with it) while
    // SIPp keeps calling, and comes back on the same ports.
    let uas = Sipp::uas(scenario("uas.xml"), Transport::Udp, uas_port, 0)
        .spawn()
        .expect("uas");
    std::thread::sleep(Duration::from_millis(300));
    let mut during = Sipp::uac(scenario("uac.xml"), Transport::Udp, callee, t.a.addr(), 200);
    during.rate = 20;
    during.timeout = Duration::from_secs(120);
    let during = during.spawn().expect("uac");
    std::thread::sleep(Duration::from_secs(3));
    drop(t.b.take()); // killed
    std::thread::sleep(Duration::from_millis(500));
    t.b = Some(start_b(t.quic_b, &cert, &t.tenant_b));
    let outcome = during.wait().expect("the load ends");
    // Every call ended one way or the other (SIPp's -timeout did not have
    // to stop it): the ones caught by the kill failed, the others passed.
    eprintln!(
        "during the kill: {} successful, {} failed of 200",
        outcome.successful, outcome.failed
    );
    assert_eq!(outcome.successful + outcome.failed, 200, "{outcome:?}");
    assert!(outcome.successful >= 20, "{outcome:?}");

    // New calls after the peer is back find a new connection.
    let mut after = Sipp::uac(scenario("uac.xml"), Transport::Udp, callee, t.a.addr(), 50);
    after.rate = 25;
    let outcome = after.run().expect("uac");
    assert_all_successful("calls after the reconnect", &outcome, 50);
    drop(uas);
}
