//! SIP over WebSocket (RFC 7118) against the real binary: JsSIP (what
//! WebRTC browser phones run) registers over ws and wss and calls a UDP
//! user agent (SIPp) through wisp, the UDP side calls it back, either side
//! hangs up; a call to a browser whose connection is gone gets 430; the
//! HTTP upgrade refuses what RFC 7118 and the Origin list do not allow;
//! closed WebSocket connections give their descriptors back.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use wisp_tests::{
    assert_all_successful, events_named, free_port, request, scenario, CertFiles, JsSip, Pki, Sipp,
    Transport, Wisp, WispBuilder,
};

const DOMAIN: &str = "example.test";

/// wisp with its UDP and TCP listeners, a ws and a wss listener, and the
/// test domain as an alias (JsSIP registers at its URI's domain).
fn wisp_with_websockets(ws: u16, wss: u16, cert: &CertFiles, extra: &str) -> Wisp {
    WispBuilder::new()
        .toml(&format!(
            "aliases = [\"{DOMAIN}\"]\n\
             [[listen]]\ntransport = \"ws\"\naddress = \"127.0.0.1:{ws}\"\n{extra}\
             [[listen]]\ntransport = \"wss\"\naddress = \"127.0.0.1:{wss}\"\n\
             certificate = \"{}\"\nprivate_key = \"{}\"\n",
            cert.certificate.display(),
            cert.private_key.display()
        ))
        .start()
        .expect("wisp starts")
}

fn aor(user: &str, wisp: &Wisp) -> String {
    format!("sip:{user}@{DOMAIN}:{}", wisp.addr().port())
}

#[test]
fn jssip_over_ws_and_wss_calls_a_udp_agent_and_is_called_back() {
    let pki = Pki::new().expect("CA");
    let cert = pki.issue("wss", "IP:127.0.0.1").expect("certificate");
    let (ws, wss) = (free_port(), free_port());
    let wisp = wisp_with_websockets(ws, wss, &cert, "");
    let ws_url = format!("ws://127.0.0.1:{ws}");
    let wss_url = format!("wss://127.0.0.1:{wss}");

    for (name, url) in [("ws", &ws_url), ("wss", &wss_url)] {
        // Browser → UDP: JsSIP calls SIPp and hangs up (its BYE goes
        // through wisp on the Record-Route).
        let uas_port = free_port();
        let uas = Sipp::uas(scenario("uas.xml"), Transport::Udp, uas_port, 1)
            .spawn()
            .expect("sipp uas");
        let alice = JsSip::start(
            &format!("alice-{name}"),
            &[
                "--ws",
                url,
                "--uri",
                &aor("alice", &wisp),
                "--register",
                "--call",
                &format!("sip:service@127.0.0.1:{uas_port}"),
                "--hangup-after",
                "500",
                "--timeout",
                "20000",
            ],
            Some(&pki.ca),
        )
        .expect("jssip");
        let (code, events) = alice.wait(Duration::from_secs(30)).expect("alice ends");
        assert_eq!(code, 0, "{name}: the browser's call failed: {events:?}");
        assert_eq!(events_named(&events, "confirmed").len(), 1, "{name}");
        assert_eq!(events_named(&events, "bye-response")[0]["status_code"], 200);
        let outcome = uas.wait().expect("uas ends");
        assert_all_successful(&format!("{name}: SIPp callee"), &outcome, 1);

        // UDP → browser: SIPp calls the registered JsSIP user, which
        // answers; SIPp hangs up.
        let user = format!("bob{name}");
        let mut bob = JsSip::start(
            &user,
            &[
                "--ws",
                url,
                "--uri",
                &aor(&user, &wisp),
                "--register",
                "--answer",
                "--answer-count",
                "1",
                "--timeout",
                "30000",
            ],
            Some(&pki.ca),
        )
        .expect("jssip");
        let registered = bob
            .wait_for("registered", Duration::from_secs(15))
            .expect("registered");
        // The 200 OK names the binding by instance and reg-id (RFC 5626).
        let contact = registered["contacts"][0].as_str().unwrap_or_default();
        assert!(
            contact.contains("+sip.instance=") && contact.contains("reg-id=1"),
            "{contact}"
        );
        let mut caller = Sipp::uac(
            scenario("uac.xml"),
            Transport::Udp,
            wisp.addr(),
            wisp.addr(),
            1,
        );
        caller.extra = vec!["-s".into(), user.clone()];
        let outcome = caller.run().expect("sipp uac");
        assert_all_successful(&format!("{name}: SIPp caller"), &outcome, 1);
        let (code, events) = bob.wait(Duration::from_secs(30)).expect("bob ends");
        assert_eq!(
            code, 0,
            "{name}: the browser's answered call failed: {events:?}"
        );
        let incoming = events_named(&events, "incoming");
        assert_eq!(incoming.len(), 1, "{name}");
        // Our Record-Route facing the browser carries a flow token, and we
        // record-routed twice (UDP one side, the WebSocket the other).
        let routes = incoming[0]["record_route"].as_array().expect("rr");
        assert_eq!(routes.len(), 2, "{routes:?}");
        let browser_side = routes[0].as_str().unwrap_or_default();
        assert!(
            browser_side.contains(&format!("transport={name}")) && browser_side.contains('@'),
            "{browser_side}"
        );
        assert_eq!(events_named(&events, "ended").len(), 1, "{name}");
    }
}

#[test]
fn a_call_to_a_browser_whose_connection_is_gone_gets_430() {
    let pki = Pki::new().expect("CA");
    let cert = pki.issue("wss", "IP:127.0.0.1").expect("certificate");
    let ws = free_port();
    let wisp = wisp_with_websockets(ws, free_port(), &cert, "");
    let mut carol = JsSip::start(
        "carol",
        &[
            "--ws",
            &format!("ws://127.0.0.1:{ws}"),
            "--uri",
            &aor("carol", &wisp),
            "--register",
            "--answer",
            "--timeout",
            "30000",
        ],
        None,
    )
    .expect("jssip");
    carol
        .wait_for("registered", Duration::from_secs(15))
        .expect("registered");
    // The browser tab closes: no un-REGISTER, the binding stays.
    carol.kill();
    std::thread::sleep(Duration::from_millis(300));
    let mut caller = Sipp::uac(
        scenario("uac-flow-failed.xml"),
        Transport::Udp,
        wisp.addr(),
        wisp.addr(),
        1,
    );
    caller.extra = vec!["-s".into(), "carol".into()];
    let outcome = caller.run().expect("sipp uac");
    assert_all_successful("call to a gone flow", &outcome, 1);
}

/// The client side of an RFC 6455 handshake on a raw socket: the status
/// line of the answer.
fn upgrade(port: u16, protocol: Option<&str>, origin: Option<&str>) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut req = format!(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    if let Some(p) = protocol {
        req.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
    }
    if let Some(o) = origin {
        req.push_str(&format!("Origin: {o}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    (stream, head)
}

/// One masked text frame (a client's), with a zero mask.
fn text_frame(text: &str) -> Vec<u8> {
    let mut frame = vec![0x81];
    let len = text.len();
    if len < 126 {
        frame.push(0x80 | len as u8);
    } else {
        frame.push(0x80 | 126);
        frame.extend_from_slice(&(len as u16).to_be_bytes());
    }
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend_from_slice(text.as_bytes());
    frame
}

/// Reads one unmasked text frame (a server's).
fn read_text_frame(stream: &mut TcpStream) -> String {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).expect("frame head");
    assert_eq!(head[0], 0x81, "a final text frame");
    let len = match head[1] & 0x7f {
        126 => {
            let mut ext = [0u8; 2];
            stream.read_exact(&mut ext).expect("length");
            u16::from_be_bytes(ext) as usize
        }
        n => n as usize,
    };
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).expect("payload");
    String::from_utf8(payload).expect("text")
}

#[test]
fn the_upgrade_wants_sip_and_an_allowed_origin_and_connections_give_descriptors_back() {
    let pki = Pki::new().expect("CA");
    let cert = pki.issue("wss", "IP:127.0.0.1").expect("certificate");
    let ws = free_port();
    let wisp = wisp_with_websockets(
        ws,
        free_port(),
        &cert,
        "origins = [\"https://phone.example.test\"]\n",
    );

    let (_, head) = upgrade(ws, None, Some("https://phone.example.test"));
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    let (_, head) = upgrade(ws, Some("sip"), Some("https://evil.example"));
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    let (_, head) = upgrade(ws, Some("sip"), None);
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");

    let options = request(
        "OPTIONS",
        &format!("sip:127.0.0.1:{ws};transport=ws"),
        "Max-Forwards: 70\r\n",
    )
    .replace("SIP/2.0/UDP", "SIP/2.0/WS");
    let cycle = || {
        let (mut stream, head) = upgrade(ws, Some("sip"), Some("https://phone.example.test"));
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("sec-websocket-protocol: sip"),
            "{head}"
        );
        stream.write_all(&text_frame(&options)).expect("send");
        let reply = read_text_frame(&mut stream);
        assert!(reply.starts_with("SIP/2.0 200"), "{reply}");
    };
    cycle();
    let before = wisp.descriptors().expect("descriptors");
    for _ in 0..500 {
        cycle();
    }
    let after = wisp.descriptors_down_to(before + 3).expect("descriptors");
    assert!(
        after <= before + 3,
        "descriptors before {before}, after 500 WebSocket cycles {after}"
    );
    eprintln!("descriptors before {before}, after 500 WebSocket cycles {after}");
    let _: SocketAddr = wisp.addr();
}
