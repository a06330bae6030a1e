//! One call across every transport: SIPp (UDP) → wisp A → TCP → wisp B →
//! TLS → wisp C → QUIC → wisp D → WSS → JsSIP, registered at D. The callee
//! sees each hop's Via with its transport, each wisp's two Record-Route
//! entries (one per side, the one facing the browser with its flow token),
//! and the caller's Contact untouched; ACK and BYE follow the route set
//! back across every hop.

use std::time::Duration;

use wisp_tests::{
    assert_all_successful, build_guest, events_named, free_port, scenario, JsSip, Pki, Routing,
    Sipp, Transport, Wisp, WispBuilder, TRUNK_GUEST,
};

/// `[[listen]]` of a transport with the test certificate when it needs one.
fn listen(transport: &str, port: u16, cert: &wisp_tests::CertFiles) -> String {
    let mut toml =
        format!("[[listen]]\ntransport = \"{transport}\"\naddress = \"127.0.0.1:{port}\"\n");
    if matches!(transport, "tls" | "wss" | "quic") {
        toml.push_str(&format!(
            "certificate = \"{}\"\nprivate_key = \"{}\"\n",
            cert.certificate.display(),
            cert.private_key.display()
        ));
    }
    toml
}

/// A trunk wisp relaying every call to `next`, with `extra` listeners.
fn trunk(wasm: &std::path::Path, next: &str, extra: &str, ca: &std::path::Path) -> Wisp {
    WispBuilder::new()
        .toml(&format!(
            "{extra}[tls]\nca = \"{}\"\n[[tenant]]\nname = \"trunk\"\ncomponent = \"{}\"\n\
             params = {{ NEXT = \"{next}\" }}\n",
            ca.display(),
            wasm.display()
        ))
        .start()
        .expect("trunk wisp starts")
}

/// The transport of a Via value ("SIP/2.0/TLS host" → "TLS").
fn via_transport(via: &str) -> String {
    via.trim()
        .strip_prefix("SIP/2.0/")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_default()
        .to_ascii_uppercase()
}

/// The transport a Record-Route entry names ("udp" without a parameter).
fn rr_transport(rr: &str) -> String {
    rr.split(';')
        .find_map(|p| p.trim().strip_prefix("transport="))
        .map(|t| t.trim_end_matches('>').to_ascii_lowercase())
        .unwrap_or_else(|| "udp".into())
}

#[test]
fn one_call_crosses_udp_tcp_tls_quic_and_wss() {
    let pki = Pki::new().expect("CA");
    let cert = pki.issue("hops", "IP:127.0.0.1").expect("certificate");
    let wasm = build_guest("trunk", TRUNK_GUEST).expect("guest builds");

    // D: the registrar, reached over QUIC, the browser on WSS.
    let (d_quic, d_wss) = (free_port(), free_port());
    let d = WispBuilder::new()
        .routing(Routing::Rust)
        .toml(&format!(
            "{}{}[tls]\nca = \"{}\"\n",
            listen("quic", d_quic, &cert),
            listen("wss", d_wss, &cert),
            pki.ca.display()
        ))
        .start()
        .expect("wisp D starts");
    // C: TLS in, QUIC out.
    let (c_tls, c_quic) = (free_port(), free_port());
    let c = trunk(
        &wasm,
        &format!("sip:127.0.0.1:{d_quic};transport=quic"),
        &format!(
            "{}{}",
            listen("tls", c_tls, &cert),
            listen("quic", c_quic, &cert)
        ),
        &pki.ca,
    );
    // B: TCP in, TLS out.
    let b_tls = free_port();
    let b = trunk(
        &wasm,
        &format!("sip:127.0.0.1:{c_tls};transport=tls"),
        &listen("tls", b_tls, &cert),
        &pki.ca,
    );
    // A: UDP in, TCP out.
    let a = trunk(
        &wasm,
        &format!("sip:127.0.0.1:{};transport=tcp", b.addr().port()),
        "",
        &pki.ca,
    );
    let _ = &c;

    let domain = format!("127.0.0.1:{}", d.addr().port());
    let mut bob = JsSip::start(
        "bob",
        &[
            "--ws",
            &format!("wss://127.0.0.1:{d_wss}"),
            "--uri",
            &format!("sip:bob@{domain}"),
            "--register",
            "--answer",
            "--answer-count",
            "1",
            "--timeout",
            "40000",
        ],
        Some(&pki.ca),
    )
    .expect("jssip");
    bob.wait_for("registered", Duration::from_secs(15))
        .expect("bob registered at D");

    let mut caller = Sipp::uac(scenario("uac.xml"), Transport::Udp, d.addr(), a.addr(), 1);
    caller.extra = vec!["-s".into(), "bob".into()];
    let outcome = caller.run().expect("sipp");
    assert_all_successful("a call across every transport", &outcome, 1);

    let (code, events) = bob.wait(Duration::from_secs(30)).expect("bob ends");
    assert_eq!(code, 0, "the browser's call failed: {events:?}");
    let incoming = events_named(&events, "incoming");
    assert_eq!(incoming.len(), 1);
    let invite = incoming[0];

    let vias: Vec<String> = invite["via"]
        .as_array()
        .expect("vias")
        .iter()
        .flat_map(|v| v.as_str().unwrap_or_default().split(','))
        .map(via_transport)
        .collect();
    assert_eq!(vias, ["WSS", "QUIC", "TLS", "TCP", "UDP"], "{invite}");

    let rrs: Vec<String> = invite["record_route"]
        .as_array()
        .expect("record-route")
        .iter()
        .flat_map(|v| v.as_str().unwrap_or_default().split(','))
        .map(str::to_owned)
        .collect();
    let transports: Vec<String> = rrs.iter().map(|r| rr_transport(r)).collect();
    assert_eq!(
        transports,
        ["wss", "quic", "quic", "tls", "tls", "tcp", "tcp", "udp"],
        "{rrs:?}"
    );
    // Only the entry facing the browser carries a token (a user part).
    assert!(rrs[0].contains('@'), "{}", rrs[0]);
    assert!(rrs[1..].iter().all(|r| !r.contains('@')), "{rrs:?}");

    let contact = invite["contact"].as_str().unwrap_or_default();
    assert!(
        contact.contains("sip:alice@127.0.0.1:") && contact.contains("transport=UDP"),
        "the caller's Contact reaches the callee untouched: {contact}"
    );
    assert_eq!(
        events_named(&events, "ended").len(),
        1,
        "SIPp's BYE arrived"
    );
}
