//! Raw SIP on the wire against the default routing, both the bundled Rust
//! component and its TypeScript port (the `_js` tests): replies wisp makes
//! itself, IPv4 and IPv6 listeners side by side, and the torture corpus
//! thrown at a running proxy.

use std::net::SocketAddr;
use std::time::Duration;

use wisp_tests::{repo_root, request, tcp_exchange, udp_exchange, Routing, Wisp};

const WAIT: Duration = Duration::from_secs(5);

fn status_line(reply: &Option<String>) -> &str {
    reply
        .as_deref()
        .and_then(|r| r.lines().next())
        .unwrap_or("(no reply)")
}

fn check_answers_options_on_every_listener(routing: Routing) {
    let tenant = routing.tenant_toml().expect("routing component");
    let wisp = Wisp::start_on(&["127.0.0.1", "::1"], &tenant).expect("wisp starts");
    let v4 = wisp.addr();
    let v6: SocketAddr = format!("[::1]:{}", wisp.port).parse().expect("addr");
    for (addr, uri) in [
        (v4, format!("sip:127.0.0.1:{}", wisp.port)),
        (v6, format!("sip:[::1]:{}", wisp.port)),
    ] {
        let options = request("OPTIONS", &uri, "Max-Forwards: 70\r\n");
        let udp = udp_exchange(addr, options.as_bytes(), WAIT).expect("udp");
        assert_eq!(status_line(&udp), "SIP/2.0 200 OK", "udp {addr}");
        // A new request: the same one again would be a retransmission of
        // the UDP transaction, answered where that came from.
        let options_tcp = request("OPTIONS", &uri, "Max-Forwards: 70\r\n");
        let tcp = tcp_exchange(addr, options_tcp.as_bytes(), WAIT).expect("tcp");
        assert_eq!(status_line(&tcp), "SIP/2.0 200 OK", "tcp {addr}");
        let reply = udp.unwrap_or_default();
        assert!(reply.contains(";tag="), "a final reply tags To: {reply}");
        assert!(
            reply.contains("received=127.0.0.1")
                || reply.contains("received=[::1]")
                || reply.contains("rport="),
            "{reply}"
        );
    }
}

fn check_malformed_requests_get_400_saying_why(routing: Routing) {
    let tenant = routing.tenant_toml().expect("routing component");
    let wisp = Wisp::start(&tenant).expect("wisp starts");
    let uri = format!("sip:bob@127.0.0.1:{}", wisp.port);
    // A Request-URI with a space in it cannot be parsed at all.
    let bad_uri = request("INVITE", "sip:bob smith@example.com", "");
    // A CSeq that is not a number parses, but fails validation.
    let bad_cseq = request("OPTIONS", &uri, "").replace("CSeq: 1 OPTIONS", "CSeq: one OPTIONS");
    // Content-Length larger than the body.
    let short_body =
        request("OPTIONS", &uri, "").replace("Content-Length: 0", "Content-Length: 40");
    for (case, message) in [
        ("bad uri", bad_uri),
        ("bad cseq", bad_cseq),
        ("short body", short_body),
    ] {
        let reply = udp_exchange(wisp.addr(), message.as_bytes(), WAIT).expect("udp");
        let status = status_line(&reply);
        assert!(status.starts_with("SIP/2.0 400 "), "{case}: {status}");
        let reason = &status["SIP/2.0 400 ".len()..];
        assert!(
            reason.len() > 3 && reason != "Bad Request",
            "{case}: the reason should say what was wrong: {status}"
        );
    }
}

fn check_core_checks_of_the_default_routing(routing: Routing) {
    let tenant = routing.tenant_toml().expect("routing component");
    let wisp = Wisp::start(&tenant).expect("wisp starts");
    let me = format!("sip:bob@127.0.0.1:{}", wisp.port);
    let no_hops = request("OPTIONS", "sip:bob@192.0.2.1", "Max-Forwards: 0\r\n");
    let reply = udp_exchange(wisp.addr(), no_hops.as_bytes(), WAIT).expect("udp");
    assert_eq!(status_line(&reply), "SIP/2.0 483 Too Many Hops");
    let required = request(
        "OPTIONS",
        "sip:bob@192.0.2.1",
        "Proxy-Require: teleportation\r\n",
    );
    let reply = udp_exchange(wisp.addr(), required.as_bytes(), WAIT).expect("udp");
    assert!(
        status_line(&reply).starts_with("SIP/2.0 420 "),
        "{}",
        status_line(&reply)
    );
    assert!(reply
        .unwrap_or_default()
        .contains("Unsupported: teleportation"));
    let unknown_user = request("INVITE", &me, "");
    let reply = udp_exchange(wisp.addr(), unknown_user.as_bytes(), WAIT).expect("udp");
    assert_eq!(status_line(&reply), "SIP/2.0 404 Not Found");
    let stray = request("BYE", "sip:bob@192.0.2.1", "")
        .replace("To: <sip:bob@192.0.2.1>", "To: <sip:bob@192.0.2.1>;tag=x");
    let reply = udp_exchange(wisp.addr(), stray.as_bytes(), WAIT).expect("udp");
    assert_eq!(status_line(&reply), "SIP/2.0 404 Not here");
}

/// Every RFC 4475 / 5118 message sent to a live wisp: invalid requests get a
/// 4xx, nothing crashes it, and it still answers afterwards.
fn check_survives_the_torture_corpus(routing: Routing) {
    let tenant = routing.tenant_toml().expect("routing component");
    let wisp = Wisp::start(&tenant).expect("wisp starts");
    let mut sent = 0;
    let mut answered = 0;
    for dir in ["rfc4475", "rfc5118"] {
        let path = repo_root().join("host/tests/corpus").join(dir);
        let mut files: Vec<_> = std::fs::read_dir(&path)
            .expect("corpus")
            .flatten()
            .map(|e| e.path())
            .collect();
        files.sort();
        for file in files {
            let data = std::fs::read(&file).expect("read");
            // Short wait: most of these are forwarded to unreachable
            // addresses or dropped, and need no answer.
            let reply = udp_exchange(wisp.addr(), &data, Duration::from_millis(300)).expect("udp");
            sent += 1;
            if reply.is_some() {
                answered += 1;
            }
        }
    }
    eprintln!("corpus over the wire: {sent} sent, {answered} answered by wisp");
    let options = request("OPTIONS", &format!("sip:127.0.0.1:{}", wisp.port), "");
    let reply = udp_exchange(wisp.addr(), options.as_bytes(), WAIT).expect("udp");
    assert_eq!(
        status_line(&reply),
        "SIP/2.0 200 OK",
        "wisp still serves after the corpus"
    );
    assert_eq!(sent, 62);
}

#[test]
fn answers_options_on_every_listener() {
    check_answers_options_on_every_listener(Routing::Rust);
}

#[test]
fn answers_options_on_every_listener_js() {
    check_answers_options_on_every_listener(Routing::Js);
}

#[test]
fn malformed_requests_get_400_saying_why() {
    check_malformed_requests_get_400_saying_why(Routing::Rust);
}

#[test]
fn malformed_requests_get_400_saying_why_js() {
    check_malformed_requests_get_400_saying_why(Routing::Js);
}

#[test]
fn core_checks_of_the_default_routing() {
    check_core_checks_of_the_default_routing(Routing::Rust);
}

#[test]
fn core_checks_of_the_default_routing_js() {
    check_core_checks_of_the_default_routing(Routing::Js);
}

#[test]
fn survives_the_torture_corpus() {
    check_survives_the_torture_corpus(Routing::Rust);
}

#[test]
fn survives_the_torture_corpus_js() {
    check_survives_the_torture_corpus(Routing::Js);
}
