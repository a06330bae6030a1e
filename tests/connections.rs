//! Stream connections against the real binary: every closed connection
//! gives its descriptor back, and the `[connections]` limits refuse or
//! close what passes them while the connections within them work on.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use wisp_tests::{request, Wisp, WispBuilder};

const WAIT: Duration = Duration::from_secs(5);

/// Reads one reply (headers, Content-Length: 0) off `stream`.
fn read_reply(stream: &mut TcpStream) -> String {
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while !reply.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut buf).expect("a reply");
        assert!(
            n > 0,
            "closed before replying: {}",
            String::from_utf8_lossy(&reply)
        );
        reply.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&reply).into_owned()
}

fn options(wisp: &Wisp, stream: &mut TcpStream) -> String {
    let uri = format!("sip:127.0.0.1:{}", wisp.port);
    let msg = request("OPTIONS", &uri, "Max-Forwards: 70\r\n");
    stream.write_all(msg.as_bytes()).expect("send");
    read_reply(stream)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    stream
}

/// Whether wisp closed `stream` (end of file) within `WAIT`.
fn closed_by_wisp(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 256];
    let until = Instant::now() + WAIT;
    while Instant::now() < until {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
    false
}

#[test]
fn closed_connections_give_their_descriptors_back() {
    let wisp = WispBuilder::new().start().expect("wisp starts");
    // One exchange first: whatever wisp opens once (lazily) is open now.
    let mut first = connect(wisp.addr());
    assert!(options(&wisp, &mut first).starts_with("SIP/2.0 200"));
    drop(first);
    let before = wisp.descriptors().expect("descriptors");
    const CYCLES: usize = 5_000;
    for i in 0..CYCLES {
        let mut stream = connect(wisp.addr());
        let reply = options(&wisp, &mut stream);
        assert!(reply.starts_with("SIP/2.0 200"), "cycle {i}: {reply}");
    }
    let after = wisp.descriptors_down_to(before + 3).expect("descriptors");
    eprintln!(
        "descriptors: {before} before, {after} after {CYCLES} TCP connect / OPTIONS / close cycles"
    );
    assert!(
        after <= before + 3,
        "{CYCLES} closed connections left {} descriptors behind",
        after - before
    );
}

#[test]
fn limits_refuse_and_close_what_passes_them_and_no_more() {
    let wisp = WispBuilder::new()
        .toml(
            "[connections]\nmax_per_ip = 4\nmessage_timeout_ms = 500\nmax_header_bytes = 2048\nmax_body_bytes = 1024\n",
        )
        .start()
        .expect("wisp starts");
    let addr = wisp.addr();
    let mut held: Vec<TcpStream> = (0..4).map(|_| connect(addr)).collect();
    for stream in &mut held {
        assert!(options(&wisp, stream).starts_with("SIP/2.0 200"));
    }
    // The fifth from this address is accepted by the kernel, then closed.
    let mut fifth = connect(addr);
    assert!(
        closed_by_wisp(&mut fifth),
        "a fifth connection from one address stayed open"
    );

    // A header section past max_header_bytes closes its connection.
    let mut large = held.pop().expect("held");
    let padding = format!("X-Pad: {}\r\n", "a".repeat(3000));
    let uri = format!("sip:127.0.0.1:{}", wisp.port);
    large
        .write_all(request("OPTIONS", &uri, &padding).as_bytes())
        .expect("send");
    assert!(closed_by_wisp(&mut large), "an oversized header was kept");

    // A Content-Length past max_body_bytes: closed before the body comes.
    let mut body = held.pop().expect("held");
    let announced =
        request("MESSAGE", &uri, "").replace("Content-Length: 0", "Content-Length: 5000");
    body.write_all(announced.as_bytes()).expect("send");
    assert!(
        closed_by_wisp(&mut body),
        "an oversized body was waited for"
    );

    // Half a message, then nothing: closed after message_timeout_ms.
    let mut slow = held.pop().expect("held");
    slow.write_all(b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1")
        .expect("send");
    assert!(
        closed_by_wisp(&mut slow),
        "a slow sender kept its connection"
    );

    // Line ends alone are keepalives: the connection stays and works.
    let mut kept = held.pop().expect("held");
    for _ in 0..1_000 {
        kept.write_all(b"\n\n\n\n").expect("line ends");
    }
    assert!(options(&wisp, &mut kept).starts_with("SIP/2.0 200"));
    kept.write_all(b"\r\n\r\n").expect("ping");
    let mut pong = [0u8; 2];
    kept.read_exact(&mut pong).expect("pong");
    assert_eq!(&pong, b"\r\n");

    // The closed ones gave their places back: four more fit beside it.
    let mut again: Vec<TcpStream> = (0..3).map(|_| connect(addr)).collect();
    for stream in &mut again {
        assert!(options(&wisp, stream).starts_with("SIP/2.0 200"));
    }
}

/// A trunk wisp relaying everything over TCP to 127.0.0.1:`next`, where
/// nobody listens: what reaches `next` can only come through an alias.
fn relaying_over_tcp_to(next: u16) -> Wisp {
    let wasm = wisp_tests::build_guest("trunk", wisp_tests::TRUNK_GUEST).expect("guest builds");
    WispBuilder::new()
        .toml(&format!(
            "[[tenant]]\nname = \"trunk\"\ncomponent = \"{}\"\n\
             params = {{ NEXT = \"sip:127.0.0.1:{next};transport=tcp\" }}\n",
            wasm.display()
        ))
        .start()
        .expect("wisp starts")
}

/// An OPTIONS whose Via names `sent_by`, with `;alias` when asked.
fn options_via(sent_by: u16, alias: bool, n: u32) -> String {
    let param = if alias { ";alias" } else { "" };
    format!(
        "OPTIONS sip:peer@127.0.0.1:{sent_by};transport=tcp SIP/2.0\r\n\
         Via: SIP/2.0/TCP 127.0.0.1:{sent_by};branch=z9hG4bKalias{n}{param}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:peer@127.0.0.1>;tag=1\r\n\
         To: <sip:peer@127.0.0.1>\r\n\
         Call-ID: alias-{n}@test\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

#[test]
fn a_via_alias_makes_the_connection_carry_requests_to_its_sent_by() {
    let listens = wisp_tests::free_port();
    let wisp = relaying_over_tcp_to(listens);
    let to_wisp = SocketAddr::from(([127, 0, 0, 1], wisp.port));

    // Without alias: wisp must connect to `listens`, which nobody does.
    let mut plain = TcpStream::connect(to_wisp).expect("connect");
    plain.set_read_timeout(Some(WAIT)).expect("timeout");
    plain
        .write_all(options_via(listens, false, 1).as_bytes())
        .expect("send");
    let reply = read_reply(&mut plain);
    assert!(reply.starts_with("SIP/2.0 503"), "{reply}");

    // With alias (RFC 5923): the request wisp relays to the sent-by comes
    // back on this very connection.
    let mut aliased = TcpStream::connect(to_wisp).expect("connect");
    aliased.set_read_timeout(Some(WAIT)).expect("timeout");
    aliased
        .write_all(options_via(listens, true, 2).as_bytes())
        .expect("send");
    let relayed = read_reply(&mut aliased);
    assert!(
        relayed.starts_with(&format!("OPTIONS sip:peer@127.0.0.1:{listens}")),
        "{relayed}"
    );
    // Closed, the connection takes its alias with it.
    drop(aliased);
    std::thread::sleep(Duration::from_millis(300));
    let mut again = TcpStream::connect(to_wisp).expect("connect");
    again.set_read_timeout(Some(WAIT)).expect("timeout");
    again
        .write_all(options_via(listens, false, 3).as_bytes())
        .expect("send");
    let reply = read_reply(&mut again);
    assert!(reply.starts_with("SIP/2.0 503"), "{reply}");
}
