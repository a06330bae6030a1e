//! Transaction layer tests on a fake clock: a base `Instant` plus
//! milliseconds. Each test drives the table event by event and checks
//! what goes out and when, to the millisecond.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::sip::{parse, response_to};
use crate::transport::{Target, Transport};

fn msg(text: &str) -> Message {
    let text = text.replace("\r\n", "\n").replace('\n', "\r\n");
    parse(Bytes::from(text)).expect("test message parses")
}

fn corpus(name: &str) -> Message {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus/rfc4475")
        .join(name);
    parse(Bytes::from(std::fs::read(path).expect("corpus file"))).expect("corpus file parses")
}

fn target(transport: Transport) -> Target {
    Target {
        transport,
        addr: "192.0.2.20:5060".parse().expect("address"),
    }
}

fn udp() -> Target {
    target(Transport::Udp)
}

fn tcp() -> Target {
    target(Transport::Tcp)
}

/// A request as the proxy sends it downstream: our Via (with `branch`)
/// above the upstream one.
fn outgoing(method: &str, branch: &str) -> Message {
    msg(&format!(
        "{method} sip:bob@example.com SIP/2.0\n\
         Via: SIP/2.0/UDP proxy.example.net:5060;branch={branch}\n\
         Via: SIP/2.0/UDP alice.example.org:5060;branch=z9hG4bKalice\n\
         Max-Forwards: 69\n\
         Route: <sip:edge.example.com;lr>\n\
         From: Alice <sip:alice@example.org>;tag=a1\n\
         To: Bob <sip:bob@example.com>\n\
         Call-ID: call-1@example.org\n\
         CSeq: 7 {method}\n\
         Contact: <sip:alice@192.0.2.1>\n\
         Content-Length: 0\n\n"
    ))
}

/// A request as it arrives from upstream: one Via, sent-by
/// alice.example.org:5060.
fn incoming(method: &str, branch: &str, to_tag: Option<&str>) -> Message {
    let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    let cseq = if method == "ACK" {
        "7 ACK".to_string()
    } else {
        format!("7 {method}")
    };
    msg(&format!(
        "{method} sip:bob@example.com SIP/2.0\n\
         Via: SIP/2.0/UDP alice.example.org:5060;branch={branch}\n\
         Max-Forwards: 70\n\
         From: Alice <sip:alice@example.org>;tag=a1\n\
         To: Bob <sip:bob@example.com>{to_tag}\n\
         Call-ID: call-1@example.org\n\
         CSeq: {cseq}\n\
         Content-Length: 0\n\n"
    ))
}

fn reply(req: &Message, code: u16, tag: Option<&str>) -> Message {
    let reason = match code {
        100 => "Trying",
        180 => "Ringing",
        200 => "OK",
        486 => "Busy Here",
        487 => "Request Terminated",
        _ => "Whatever",
    };
    response_to(req, code, reason, tag)
}

fn text(m: &Message) -> String {
    String::from_utf8_lossy(&m.to_bytes()).into_owned()
}

/// "INVITE" for a request, "486" for a response.
fn summary(data: &[u8]) -> String {
    let line = String::from_utf8_lossy(data);
    let line = line.lines().next().unwrap_or("").to_string();
    match line.strip_prefix("SIP/2.0 ") {
        Some(rest) => rest.chars().take(3).collect(),
        None => line.split(' ').next().unwrap_or("").to_string(),
    }
}

/// The table, a fake clock and a log of what came out.
struct Harness {
    t: Transactions,
    base: Instant,
    sent: Vec<Transmit>,
}

impl Harness {
    fn new() -> Harness {
        Harness::with(Timers::default())
    }

    fn with(timers: Timers) -> Harness {
        Harness {
            t: Transactions::new(timers),
            base: Instant::now(),
            sent: Vec::new(),
        }
    }

    fn at(&self, ms: u64) -> Instant {
        self.base + Duration::from_millis(ms)
    }

    fn ms(&self, t: Instant) -> u64 {
        u64::try_from(t.duration_since(self.base).as_millis()).expect("ms")
    }

    /// What came out since the last call, labelled with `ms`: "500 send
    /// INVITE", "32000 Timeout(TxId(1))".
    fn out(&mut self, ms: u64) -> Vec<String> {
        let mut log = Vec::new();
        while let Some(x) = self.t.poll_transmit() {
            log.push(format!("{ms} send {}", summary(&x.data)));
            self.sent.push(x);
        }
        while let Some(e) = self.t.poll_event() {
            log.push(format!("{ms} {e:?}"));
        }
        log
    }

    /// Fires every timer up to `until_ms`, deadline by deadline as a
    /// driver would, and logs what came out.
    fn run(&mut self, until_ms: u64) -> Vec<String> {
        let mut log = self.out(0);
        assert!(log.is_empty(), "unread output: {log:?}");
        while let Some(d) = self.t.poll_timeout() {
            if d > self.at(until_ms) {
                break;
            }
            self.t.handle_timeout(d);
            let ms = self.ms(d);
            log.extend(self.out(ms));
        }
        log
    }

    fn next_ms(&self) -> Option<u64> {
        self.t.poll_timeout().map(|d| self.ms(d))
    }

    fn last_sent(&self) -> String {
        let x = self.sent.last().expect("something was sent");
        String::from_utf8_lossy(&x.data).into_owned()
    }

    fn request(&mut self, ms: u64, m: &Message, from: Target) -> Incoming {
        self.t
            .handle_request(self.at(ms), m, from)
            .expect("request accepted")
    }

    fn respond(&mut self, ms: u64, tx: TxId, m: Message) {
        self.t
            .respond(self.at(ms), tx, m)
            .expect("response accepted");
    }

    fn response(&mut self, ms: u64, m: &Message) -> Option<(TxId, ResponseDisposition)> {
        self.t.handle_response(self.at(ms), m, udp().addr.ip())
    }
}

fn sends(method: &str, times: &[u64]) -> Vec<String> {
    times.iter().map(|t| format!("{t} send {method}")).collect()
}

fn with_end(mut v: Vec<String>, end: &[&str]) -> Vec<String> {
    v.extend(end.iter().map(|s| s.to_string()));
    v
}

// ---- INVITE client ----

#[test]
fn invite_client_udp_timer_a_then_b() {
    let mut h = Harness::new();
    let tx =
        h.t.send_request(h.at(0), outgoing("INVITE", "z9hG4bKc1"), udp())
            .unwrap();
    assert_eq!(tx, TxId(1));
    assert_eq!(h.t.kind(tx), Some(Kind::InviteClient));
    assert_eq!(h.t.state(tx), Some(State::Calling));
    assert_eq!(h.out(0), ["0 send INVITE"]);
    assert_eq!(h.next_ms(), Some(500));
    assert_eq!(
        h.run(40_000),
        with_end(
            sends("INVITE", &[500, 1500, 3500, 7500, 15500, 31500]),
            &["32000 Timeout(TxId(1))", "32000 Terminated(TxId(1))"]
        )
    );
    assert!(h.t.is_empty());
    assert_eq!(h.t.poll_timeout(), None);
    assert_eq!(h.t.state(tx), None);
}

#[test]
fn invite_client_timer_a_is_not_capped() {
    let timers = Timers {
        b: Duration::from_secs(100),
        ..Timers::default()
    };
    let mut h = Harness::with(timers);
    h.t.send_request(h.at(0), outgoing("INVITE", "z9hG4bKc1"), udp())
        .unwrap();
    h.out(0);
    assert_eq!(
        h.run(100_000),
        with_end(
            sends("INVITE", &[500, 1500, 3500, 7500, 15500, 31500, 63500]),
            &["100000 Timeout(TxId(1))", "100000 Terminated(TxId(1))"]
        )
    );
}

#[test]
fn invite_client_provisional_stops_a_and_b() {
    let mut h = Harness::new();
    let invite = outgoing("INVITE", "z9hG4bKc1");
    let tx = h.t.send_request(h.at(0), invite.clone(), udp()).unwrap();
    h.out(0);
    assert_eq!(h.run(700), ["500 send INVITE"]);
    assert_eq!(
        h.response(700, &reply(&invite, 180, Some("b1"))),
        Some((tx, ResponseDisposition::Deliver))
    );
    assert_eq!(h.t.state(tx), Some(State::Proceeding));
    // No retransmissions, no Timer B: the TU's Timer C rules Proceeding.
    assert_eq!(h.t.poll_timeout(), None);
    assert_eq!(
        h.response(800, &reply(&invite, 180, Some("b1"))),
        Some((tx, ResponseDisposition::Deliver))
    );
    assert_eq!(h.out(800), Vec::<String>::new());
    assert_eq!(h.run(100_000), Vec::<String>::new());
    assert_eq!(h.t.state(tx), Some(State::Proceeding));
}

#[test]
fn invite_client_non_2xx_final_generates_ack() {
    let mut h = Harness::new();
    let invite = outgoing("INVITE", "z9hG4bKc1");
    let tx = h.t.send_request(h.at(0), invite.clone(), udp()).unwrap();
    h.out(0);
    assert_eq!(h.run(600), ["500 send INVITE"]);
    h.response(600, &reply(&invite, 100, None));
    let busy = reply(&invite, 486, Some("b1"));
    assert_eq!(
        h.response(5000, &busy),
        Some((tx, ResponseDisposition::Deliver))
    );
    assert_eq!(h.t.state(tx), Some(State::Completed));
    assert_eq!(h.out(5000), ["5000 send ACK"]);
    // §17.1.1.3: R-URI, Call-ID, From, CSeq number of the INVITE, To of the
    // response, the INVITE's top Via only, its Route headers.
    assert_eq!(
        h.last_sent(),
        "ACK sip:bob@example.com SIP/2.0\r\n\
         Via: SIP/2.0/UDP proxy.example.net:5060;branch=z9hG4bKc1\r\n\
         Max-Forwards: 69\r\n\
         Route: <sip:edge.example.com;lr>\r\n\
         From: Alice <sip:alice@example.org>;tag=a1\r\n\
         To: Bob <sip:bob@example.com>;tag=b1\r\n\
         Call-ID: call-1@example.org\r\n\
         CSeq: 7 ACK\r\n\
         Content-Length: 0\r\n\r\n"
    );
    assert_eq!(h.sent.last().map(|x| (x.tx, x.target)), Some((tx, udp())));
    // A retransmitted final: absorbed, the ACK goes again.
    assert_eq!(
        h.response(6000, &busy),
        Some((tx, ResponseDisposition::Absorbed))
    );
    assert_eq!(h.out(6000), ["6000 send ACK"]);
    // Provisional responses are absorbed now.
    assert_eq!(
        h.response(6100, &reply(&invite, 180, None)),
        Some((tx, ResponseDisposition::Absorbed))
    );
    // Timer D: 32 s after the final.
    assert_eq!(h.next_ms(), Some(37_000));
    assert_eq!(h.run(60_000), ["37000 Terminated(TxId(1))"]);
    assert_eq!(h.response(38_000, &busy), None);
    assert!(h.t.is_empty());
}

#[test]
fn invite_client_2xx_accepted_then_m() {
    let mut h = Harness::new();
    let invite = outgoing("INVITE", "z9hG4bKc1");
    let tx = h.t.send_request(h.at(0), invite.clone(), udp()).unwrap();
    h.out(0);
    let ok = reply(&invite, 200, Some("b1"));
    assert_eq!(
        h.response(100, &ok),
        Some((tx, ResponseDisposition::Deliver))
    );
    assert_eq!(h.t.state(tx), Some(State::Accepted));
    // No ACK from the layer for a 2xx: that is the UAC's, end to end.
    assert_eq!(h.out(100), Vec::<String>::new());
    assert_eq!(h.next_ms(), Some(32_100));
    // Retransmitted 2xx: delivered again, the proxy forwards each.
    assert_eq!(
        h.response(200, &ok),
        Some((tx, ResponseDisposition::Deliver))
    );
    assert_eq!(
        h.response(300, &reply(&invite, 486, Some("b2"))),
        Some((tx, ResponseDisposition::Absorbed))
    );
    assert_eq!(h.out(300), Vec::<String>::new());
    assert_eq!(h.run(60_000), ["32100 Terminated(TxId(1))"]);
    assert_eq!(h.response(40_000, &ok), None);
}

#[test]
fn invite_client_tcp() {
    let mut h = Harness::new();
    let invite = outgoing("INVITE", "z9hG4bKc1");
    let tx = h.t.send_request(h.at(0), invite.clone(), tcp()).unwrap();
    assert_eq!(h.out(0), ["0 send INVITE"]);
    // No Timer A: only B.
    assert_eq!(h.next_ms(), Some(32_000));
    // Non-2xx final: ACK, and Timer D is zero.
    assert_eq!(
        h.response(100, &reply(&invite, 486, Some("b1"))),
        Some((tx, ResponseDisposition::Deliver))
    );
    assert_eq!(h.out(100), ["100 send ACK", "100 Terminated(TxId(1))"]);
    assert_eq!(h.sent.last().map(|x| x.target), Some(tcp()));
    assert!(h.t.is_empty());

    // 2xx: Timer M runs on TCP too.
    let invite2 = outgoing("INVITE", "z9hG4bKc2");
    let tx2 =
        h.t.send_request(h.at(1000), invite2.clone(), tcp())
            .unwrap();
    h.out(1000);
    h.response(1100, &reply(&invite2, 200, Some("b1")));
    assert_eq!(h.t.state(tx2), Some(State::Accepted));
    assert_eq!(h.next_ms(), Some(33_100));

    // No answer: Timer B.
    let tx3 =
        h.t.send_request(h.at(2000), outgoing("INVITE", "z9hG4bKc3"), tcp())
            .unwrap();
    h.out(2000);
    assert_eq!(
        h.run(60_000),
        [
            format!("33100 Terminated({tx2:?})"),
            format!("34000 Timeout({tx3:?})"),
            format!("34000 Terminated({tx3:?})"),
        ]
    );
}

// ---- non-INVITE client ----

#[test]
fn non_invite_client_udp_timer_e_capped_then_f() {
    let mut h = Harness::new();
    let tx =
        h.t.send_request(h.at(0), outgoing("OPTIONS", "z9hG4bKo1"), udp())
            .unwrap();
    assert_eq!(h.t.kind(tx), Some(Kind::NonInviteClient));
    assert_eq!(h.t.state(tx), Some(State::Trying));
    assert_eq!(h.out(0), ["0 send OPTIONS"]);
    assert_eq!(
        h.run(40_000),
        with_end(
            sends(
                "OPTIONS",
                &[500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
            ),
            &["32000 Timeout(TxId(1))", "32000 Terminated(TxId(1))"]
        )
    );
    assert!(h.t.is_empty());
}

#[test]
fn non_invite_client_proceeding_retransmits_at_t2_then_k() {
    let mut h = Harness::new();
    let req = outgoing("BYE", "z9hG4bKb1");
    let tx = h.t.send_request(h.at(0), req.clone(), udp()).unwrap();
    h.out(0);
    assert_eq!(h.run(600), ["500 send BYE"]);
    assert_eq!(
        h.response(600, &reply(&req, 100, None)),
        Some((tx, ResponseDisposition::Deliver))
    );
    assert_eq!(h.t.state(tx), Some(State::Proceeding));
    // Timer E keeps its value (1 s, due at 1500), then fires every T2.
    assert_eq!(h.run(12_000), sends("BYE", &[1500, 5500, 9500]));
    assert_eq!(
        h.response(12_000, &reply(&req, 200, Some("b1"))),
        Some((tx, ResponseDisposition::Deliver))
    );
    assert_eq!(h.t.state(tx), Some(State::Completed));
    assert_eq!(h.next_ms(), Some(17_000));
    assert_eq!(
        h.response(13_000, &reply(&req, 200, Some("b1"))),
        Some((tx, ResponseDisposition::Absorbed))
    );
    assert_eq!(h.out(13_000), Vec::<String>::new());
    assert_eq!(h.run(60_000), ["17000 Terminated(TxId(1))"]);
}

#[test]
fn non_invite_client_tcp() {
    let mut h = Harness::new();
    let req = outgoing("OPTIONS", "z9hG4bKo1");
    let tx = h.t.send_request(h.at(0), req.clone(), tcp()).unwrap();
    assert_eq!(h.out(0), ["0 send OPTIONS"]);
    assert_eq!(h.next_ms(), Some(32_000));
    // Timer K is zero.
    assert_eq!(
        h.response(50, &reply(&req, 200, None)),
        Some((tx, ResponseDisposition::Deliver))
    );
    assert_eq!(h.out(50), ["50 Terminated(TxId(1))"]);
    h.t.send_request(h.at(100), outgoing("OPTIONS", "z9hG4bKo2"), tcp())
        .unwrap();
    h.out(100);
    assert_eq!(
        h.run(60_000),
        ["32100 Timeout(TxId(2))", "32100 Terminated(TxId(2))"]
    );
}

// ---- INVITE server ----

#[test]
fn invite_server_retransmissions_and_timer_g_then_h() {
    let mut h = Harness::new();
    let invite = incoming("INVITE", "z9hG4bKup1", None);
    let Incoming::New(tx) = h.request(0, &invite, udp()) else {
        panic!("expected a new transaction")
    };
    assert_eq!(h.t.kind(tx), Some(Kind::InviteServer));
    assert_eq!(h.t.state(tx), Some(State::Proceeding));
    assert_eq!(h.t.poll_timeout(), None);
    // Nothing sent yet: a retransmission is only absorbed.
    assert_eq!(h.request(50, &invite, udp()), Incoming::Retransmission);
    assert_eq!(h.out(50), Vec::<String>::new());
    h.respond(100, tx, reply(&invite, 100, None));
    assert_eq!(h.out(100), ["100 send 100"]);
    assert_eq!(h.sent.last().map(|x| x.target), Some(udp()));
    assert_eq!(h.request(200, &invite, udp()), Incoming::Retransmission);
    assert_eq!(h.out(200), ["200 send 100"]);
    h.respond(300, tx, reply(&invite, 180, Some("s1")));
    assert_eq!(h.out(300), ["300 send 180"]);
    assert_eq!(h.request(400, &invite, udp()), Incoming::Retransmission);
    assert_eq!(h.out(400), ["400 send 180"]);
    h.respond(1000, tx, reply(&invite, 486, Some("s1")));
    assert_eq!(h.t.state(tx), Some(State::Completed));
    assert_eq!(h.out(1000), ["1000 send 486"]);
    assert_eq!(h.request(1100, &invite, udp()), Incoming::Retransmission);
    assert_eq!(h.out(1100), ["1100 send 486"]);
    assert!(h.last_sent().starts_with("SIP/2.0 486 Busy Here\r\n"));
    // G: 500, 1000, 2000, then capped at T2 = 4 s; H at 64*T1.
    assert_eq!(
        h.run(60_000),
        with_end(
            sends(
                "486",
                &[1500, 2500, 4500, 8500, 12500, 16500, 20500, 24500, 28500, 32500]
            ),
            &["33000 NoAck(TxId(1))", "33000 Terminated(TxId(1))"]
        )
    );
    assert!(h.t.is_empty());
}

#[test]
fn invite_server_ack_confirms_then_timer_i() {
    let mut h = Harness::new();
    let invite = incoming("INVITE", "z9hG4bKup1", None);
    let Incoming::New(tx) = h.request(0, &invite, udp()) else {
        panic!()
    };
    h.respond(0, tx, reply(&invite, 486, Some("s1")));
    assert_eq!(h.out(0), ["0 send 486"]);
    assert_eq!(h.run(600), ["500 send 486"]);
    let ack = incoming("ACK", "z9hG4bKup1", Some("s1"));
    assert_eq!(h.request(600, &ack, udp()), Incoming::AckOfNon2xx(tx));
    assert_eq!(h.t.state(tx), Some(State::Confirmed));
    // G and H stopped; Timer I = T4.
    assert_eq!(h.next_ms(), Some(5600));
    assert_eq!(h.request(700, &ack, udp()), Incoming::Retransmission);
    assert_eq!(h.request(800, &invite, udp()), Incoming::Retransmission);
    assert_eq!(h.out(800), Vec::<String>::new());
    assert_eq!(
        h.t.respond(h.at(900), tx, reply(&invite, 500, None)),
        Err(TxError::WrongState(State::Confirmed))
    );
    assert_eq!(h.run(60_000), ["5600 Terminated(TxId(1))"]);
    // Late ACK: no transaction any more, the TU sees it as end to end.
    assert_eq!(h.request(6000, &ack, udp()), Incoming::Ack2xx);
}

#[test]
fn invite_server_tcp() {
    let mut h = Harness::new();
    let invite = incoming("INVITE", "z9hG4bKup1", None);
    let Incoming::New(tx) = h.request(0, &invite, tcp()) else {
        panic!()
    };
    h.respond(0, tx, reply(&invite, 486, Some("s1")));
    assert_eq!(h.out(0), ["0 send 486"]);
    // No Timer G, Timer H still runs.
    assert_eq!(h.next_ms(), Some(32_000));
    let ack = incoming("ACK", "z9hG4bKup1", Some("s1"));
    assert_eq!(h.request(100, &ack, tcp()), Incoming::AckOfNon2xx(tx));
    // Timer I is zero.
    assert_eq!(h.out(100), ["100 Terminated(TxId(1))"]);
    assert_eq!(h.t.poll_timeout(), None);

    let invite2 = incoming("INVITE", "z9hG4bKup2", None);
    let Incoming::New(tx2) = h.request(200, &invite2, tcp()) else {
        panic!()
    };
    h.respond(200, tx2, reply(&invite2, 486, Some("s1")));
    h.out(200);
    assert_eq!(
        h.run(60_000),
        ["32200 NoAck(TxId(2))", "32200 Terminated(TxId(2))"]
    );
}

#[test]
fn invite_server_2xx_accepted_then_timer_l() {
    let mut h = Harness::new();
    let invite = incoming("INVITE", "z9hG4bKup1", None);
    let Incoming::New(tx) = h.request(0, &invite, udp()) else {
        panic!()
    };
    h.respond(0, tx, reply(&invite, 180, Some("s1")));
    h.respond(100, tx, reply(&invite, 200, Some("s1")));
    assert_eq!(h.out(100), ["100 send 180", "100 send 200"]);
    assert_eq!(h.t.state(tx), Some(State::Accepted));
    assert_eq!(h.next_ms(), Some(32_100));
    // INVITE retransmissions are absorbed without a response (RFC 6026).
    assert_eq!(h.request(200, &invite, udp()), Incoming::Retransmission);
    assert_eq!(h.out(200), Vec::<String>::new());
    // More 2xx from the TU (a retransmission relayed, another fork) go out.
    h.respond(300, tx, reply(&invite, 200, Some("s2")));
    assert_eq!(h.out(300), ["300 send 200"]);
    assert_eq!(
        h.t.respond(h.at(300), tx, reply(&invite, 180, Some("s1"))),
        Err(TxError::WrongState(State::Accepted))
    );
    assert_eq!(
        h.t.respond(h.at(300), tx, reply(&invite, 486, Some("s1"))),
        Err(TxError::WrongState(State::Accepted))
    );
    // The ACK of the 2xx is a new transaction upstream: no match.
    let ack = incoming("ACK", "z9hG4bKack", Some("s1"));
    assert_eq!(h.request(400, &ack, udp()), Incoming::Ack2xx);
    assert_eq!(h.run(60_000), ["32100 Terminated(TxId(1))"]);
}

// ---- non-INVITE server ----

#[test]
fn non_invite_server_retransmissions_then_timer_j() {
    let mut h = Harness::new();
    let req = incoming("OPTIONS", "z9hG4bKup1", None);
    let Incoming::New(tx) = h.request(0, &req, udp()) else {
        panic!()
    };
    assert_eq!(
        (h.t.kind(tx), h.t.state(tx)),
        (Some(Kind::NonInviteServer), Some(State::Trying))
    );
    assert_eq!(h.request(100, &req, udp()), Incoming::Retransmission);
    assert_eq!(h.out(100), Vec::<String>::new());
    h.respond(150, tx, reply(&req, 100, None));
    assert_eq!(h.t.state(tx), Some(State::Proceeding));
    assert_eq!(h.request(160, &req, udp()), Incoming::Retransmission);
    assert_eq!(h.out(160), ["160 send 100", "160 send 100"]);
    h.respond(200, tx, reply(&req, 200, Some("s1")));
    // The final ends the transaction (the TU is done with it); a record
    // of the final stays for Timer J.
    assert_eq!(h.out(200), ["200 send 200", "200 Terminated(TxId(1))"]);
    assert_eq!((h.t.state(tx), h.t.len(), h.t.finished()), (None, 0, 1));
    assert_eq!(h.next_ms(), Some(32_200));
    assert_eq!(h.request(300, &req, udp()), Incoming::Retransmission);
    assert_eq!(h.out(300), ["300 send 200"]);
    assert!(h.last_sent().starts_with("SIP/2.0 200"));
    assert_eq!(h.sent.last().map(|x| x.tx), Some(tx));
    assert_eq!(
        h.t.respond(h.at(300), tx, reply(&req, 500, None)),
        Err(TxError::UnknownTransaction)
    );
    // Another method with the same branch is another transaction.
    let other = msg(&text(&req).replace("OPTIONS", "INFO"));
    assert_eq!(h.request(400, &other, udp()), Incoming::New(TxId(2)));
    h.t.forget(TxId(2));
    h.out(400);
    assert_eq!(h.run(32_199), Vec::<String>::new());
    assert_eq!(h.t.finished(), 1);
    assert_eq!(h.run(60_000), Vec::<String>::new());
    assert_eq!((h.t.finished(), h.next_ms()), (0, None));
    // After J the same request is new again.
    assert_eq!(h.request(33_000, &req, udp()), Incoming::New(TxId(3)));
}

#[test]
fn finished_records_share_a_limit_and_the_oldest_goes_first() {
    let limit = FinishedLimit::new(3);
    let mut a = Transactions::sharing(Timers::default(), limit.clone());
    let mut b = Transactions::sharing(Timers::default(), limit.clone());
    let base = Instant::now();
    let at = |ms: u64| base + Duration::from_millis(ms);
    let finish = |t: &mut Transactions, ms: u64, branch: &str| {
        let req = incoming("REGISTER", branch, None);
        let Ok(Incoming::New(tx)) = t.handle_request(at(ms), &req, udp()) else {
            panic!("a new transaction")
        };
        t.respond(at(ms), tx, reply(&req, 200, Some("s"))).unwrap();
        while t.poll_transmit().is_some() {}
        req
    };
    let first = finish(&mut a, 0, "z9hG4bKf1");
    let second = finish(&mut a, 10, "z9hG4bKf2");
    let third = finish(&mut b, 20, "z9hG4bKf3");
    assert_eq!((a.finished(), b.finished(), limit.held()), (2, 1, 3));
    // Full: a lets its own oldest go, before its Timer J.
    let fourth = finish(&mut a, 30, "z9hG4bKf4");
    assert_eq!((a.finished(), b.finished(), limit.held()), (2, 1, 3));
    assert!(matches!(
        a.handle_request(at(40), &first, udp()),
        Ok(Incoming::New(_))
    ));
    for req in [&second, &fourth] {
        assert_eq!(
            a.handle_request(at(40), req, udp()),
            Ok(Incoming::Retransmission)
        );
    }
    // Full, and b has nothing else to let go but its one record.
    let fifth = finish(&mut b, 50, "z9hG4bKf5");
    assert_eq!(
        b.handle_request(at(60), &fifth, udp()),
        Ok(Incoming::Retransmission)
    );
    assert!(matches!(
        b.handle_request(at(60), &third, udp()),
        Ok(Incoming::New(_))
    ));
    // Expiry and a dropped table give their share back.
    a.handle_timeout(at(32_010));
    assert_eq!((a.finished(), limit.held()), (1, 2));
    drop(a);
    assert_eq!(limit.held(), 1);
    let mut c = Transactions::sharing(Timers::default(), FinishedLimit::new(0));
    finish(&mut c, 0, "z9hG4bKf6");
    assert_eq!(c.finished(), 0, "a zero limit keeps nothing");
}

/// An INVITE answered 2xx waits in Accepted counted with the finished
/// records: past the shared limit a table lets a record go first, then its
/// oldest answered INVITE (whose retransmission is then a new request),
/// and one with neither ends its new answered INVITE at once.
#[test]
fn answered_invites_count_with_the_finished_records() {
    let limit = FinishedLimit::new(3);
    let mut a = Transactions::sharing(Timers::default(), limit.clone());
    let base = Instant::now();
    let at = |ms: u64| base + Duration::from_millis(ms);
    let answer = |t: &mut Transactions, ms: u64, method: &str, branch: &str| {
        let req = incoming(method, branch, None);
        let Ok(Incoming::New(tx)) = t.handle_request(at(ms), &req, udp()) else {
            panic!("a new transaction")
        };
        t.respond(at(ms), tx, reply(&req, 200, Some("s"))).unwrap();
        while t.poll_transmit().is_some() {}
        (req, tx)
    };
    let (register, _) = answer(&mut a, 0, "REGISTER", "z9hG4bKr1");
    let (first, first_tx) = answer(&mut a, 10, "INVITE", "z9hG4bKi1");
    let (second, second_tx) = answer(&mut a, 20, "INVITE", "z9hG4bKi2");
    assert_eq!((a.finished(), a.answered(), limit.held()), (1, 2, 3));
    assert_eq!(a.state(first_tx), Some(State::Accepted));
    // A 2xx retransmitted on an answered INVITE is not counted again.
    a.respond(at(25), first_tx, reply(&first, 200, Some("s")))
        .unwrap();
    assert_eq!((a.answered(), limit.held()), (2, 3));
    // Full: the record goes first...
    let (_, third_tx) = answer(&mut a, 30, "INVITE", "z9hG4bKi3");
    assert_eq!((a.finished(), a.answered(), limit.held()), (0, 3, 3));
    assert!(matches!(
        a.handle_request(at(35), &register, udp()),
        Ok(Incoming::New(_))
    ));
    // ...then the oldest answered INVITE, before its Timer L.
    while a.poll_event().is_some() {}
    let (_, fourth_tx) = answer(&mut a, 40, "INVITE", "z9hG4bKi4");
    assert_eq!(a.poll_event(), Some(Event::Terminated(first_tx)));
    assert_eq!(a.state(first_tx), None);
    assert!(matches!(
        a.handle_request(at(45), &first, udp()),
        Ok(Incoming::New(_))
    ));
    assert_eq!(
        a.handle_request(at(45), &second, udp()),
        Ok(Incoming::Retransmission)
    );
    assert_eq!((a.answered(), limit.held()), (3, 3));
    // Timer L gives their share back.
    a.handle_timeout(at(32_100));
    assert_eq!(a.state(second_tx), None);
    assert_eq!(a.state(third_tx), None);
    assert_eq!(a.state(fourth_tx), None);
    assert_eq!((a.answered(), limit.held()), (0, 0));
    // With no room and nothing of its own to let go, a table ends its
    // new answered INVITE at once.
    let mut b = Transactions::sharing(Timers::default(), FinishedLimit::new(0));
    let (_, tx) = answer(&mut b, 0, "INVITE", "z9hG4bKi5");
    assert_eq!(b.state(tx), None);
    assert_eq!(b.answered(), 0);
    // A dropped table gives its share back.
    let (_, _) = answer(&mut a, 32_200, "INVITE", "z9hG4bKi6");
    assert_eq!(limit.held(), 1);
    drop(a);
    assert_eq!(limit.held(), 0);
}

#[test]
fn non_invite_server_tcp_timer_j_is_zero() {
    let mut h = Harness::new();
    let req = incoming("REGISTER", "z9hG4bKup1", None);
    let Incoming::New(tx) = h.request(0, &req, tcp()) else {
        panic!()
    };
    h.respond(10, tx, reply(&req, 200, Some("s1")));
    assert_eq!(h.out(10), ["10 send 200", "10 Terminated(TxId(1))"]);
    assert!(h.t.is_empty());
    assert_eq!(h.t.finished(), 0, "no record on a reliable transport");
}

// ---- CANCEL ----

#[test]
fn cancel_matches_its_invite() {
    let mut h = Harness::new();
    let invite = incoming("INVITE", "z9hG4bKup1", None);
    let Incoming::New(inv) = h.request(0, &invite, udp()) else {
        panic!()
    };
    h.respond(0, inv, reply(&invite, 180, Some("s1")));
    assert_eq!(h.out(0), ["0 send 180"]);
    let cancel = incoming("CANCEL", "z9hG4bKup1", None);
    let Incoming::Cancel {
        cancel: c,
        invite: target,
    } = h.request(100, &cancel, udp())
    else {
        panic!("expected a CANCEL")
    };
    assert_eq!(target, Some(inv));
    assert_ne!(c, inv);
    assert_eq!(h.t.kind(c), Some(Kind::NonInviteServer));
    assert_eq!(h.request(150, &cancel, udp()), Incoming::Retransmission);
    h.respond(200, c, reply(&cancel, 200, Some("s1")));
    h.respond(200, inv, reply(&invite, 487, Some("s1")));
    // The CANCEL's transaction ends with its final; a record stays.
    assert_eq!(
        h.out(200),
        ["200 send 200", "200 send 487", "200 Terminated(TxId(2))"]
    );
    let ack = incoming("ACK", "z9hG4bKup1", Some("s1"));
    assert_eq!(h.request(300, &ack, udp()), Incoming::AckOfNon2xx(inv));
    // The CANCEL's retransmission gets its 200 again, not the 487.
    assert_eq!(h.request(400, &cancel, udp()), Incoming::Retransmission);
    h.out(400);
    assert!(h.last_sent().contains("CSeq: 7 CANCEL"));

    // Another branch, or the same branch from another sent-by: no INVITE.
    let other = incoming("CANCEL", "z9hG4bKother", None);
    assert!(matches!(
        h.request(500, &other, udp()),
        Incoming::Cancel { invite: None, .. }
    ));
    let text = text(&cancel).replace("alice.example.org:5060", "alice.example.org:5070");
    assert!(matches!(
        h.request(500, &msg(&text), udp()),
        Incoming::Cancel { invite: None, .. }
    ));
}

#[test]
fn client_cancel_request() {
    let mut h = Harness::new();
    let invite = outgoing("INVITE", "z9hG4bKc1");
    let inv = h.t.send_request(h.at(0), invite.clone(), udp()).unwrap();
    h.out(0);
    // §9.1: not before a provisional response.
    assert_eq!(
        h.t.cancel_request(inv).err(),
        Some(TxError::NoProvisionalYet)
    );
    h.response(100, &reply(&invite, 180, Some("b1")));
    let cancel = h.t.cancel_request(inv).unwrap();
    assert_eq!(
        text(&cancel),
        "CANCEL sip:bob@example.com SIP/2.0\r\n\
         Via: SIP/2.0/UDP proxy.example.net:5060;branch=z9hG4bKc1\r\n\
         Max-Forwards: 70\r\n\
         Route: <sip:edge.example.com;lr>\r\n\
         From: Alice <sip:alice@example.org>;tag=a1\r\n\
         To: Bob <sip:bob@example.com>\r\n\
         Call-ID: call-1@example.org\r\n\
         CSeq: 7 CANCEL\r\n\
         Content-Length: 0\r\n\r\n"
    );
    let c = h.t.send_request(h.at(100), cancel.clone(), udp()).unwrap();
    assert_eq!(h.t.kind(c), Some(Kind::NonInviteClient));
    assert_eq!(h.out(100), ["100 send CANCEL"]);
    // Same branch, different CSeq method: each response finds its own.
    assert_eq!(
        h.response(150, &reply(&cancel, 200, Some("b1"))),
        Some((c, ResponseDisposition::Deliver))
    );
    assert_eq!(
        h.response(160, &reply(&invite, 487, Some("b1"))),
        Some((inv, ResponseDisposition::Deliver))
    );
    assert_eq!(h.out(160), ["160 send ACK"]);
    assert_eq!(
        h.t.cancel_request(inv).err(),
        Some(TxError::WrongState(State::Completed))
    );
    assert_eq!(h.t.cancel_request(c).err(), Some(TxError::NotClientInvite));
    assert_eq!(
        h.t.cancel_request(TxId(99)).err(),
        Some(TxError::UnknownTransaction)
    );
}

// ---- RFC 2543 matching ----

#[test]
fn rfc2543_matching_badbranch() {
    let mut h = Harness::new();
    let m = corpus("badbranch.dat");
    // "branch=z9hG4bK" is the cookie alone: not an RFC 3261 branch.
    assert!(!is_rfc3261_branch(m.top_via().unwrap().branch().unwrap()));
    let Incoming::New(tx) = h.request(0, &m, udp()) else {
        panic!()
    };
    assert_eq!(h.request(100, &m, udp()), Incoming::Retransmission);
    h.respond(200, tx, reply(&m, 200, Some("s1")));
    assert_eq!(h.request(300, &m, udp()), Incoming::Retransmission);
    assert_eq!(h.out(300), ["300 send 200", "300 send 200"]);
    // Same branch and sent-by but another From tag, Call-ID, CSeq or
    // R-URI: RFC 3261 matching would have called these retransmissions.
    let raw = text(&m);
    for (from, to) in [
        ("tag=33242", "tag=33243"),
        ("Call-ID: badbranch.", "Call-ID: other."),
        ("CSeq: 8 OPTIONS", "CSeq: 9 OPTIONS"),
        (
            "OPTIONS sip:user@example.com",
            "OPTIONS sip:other@example.com",
        ),
        ("To: sip:user@example.com", "To: sip:user@example.com;tag=x"),
        ("192.0.2.1;branch", "192.0.2.2;branch"),
    ] {
        assert!(raw.contains(from), "{from}");
        let changed = msg(&raw.replacen(from, to, 1));
        assert!(
            matches!(h.request(400, &changed, udp()), Incoming::New(_)),
            "{from} -> {to}"
        );
    }
    assert_eq!(h.t.len(), 7);
}

#[test]
fn rfc2543_invite_ack_and_cancel() {
    let mut h = Harness::new();
    // RFC 4475 inv2543: no branch, no tags at all.
    let invite = corpus("inv2543.dat");
    let Incoming::New(inv) = h.request(0, &invite, udp()) else {
        panic!()
    };
    assert_eq!(h.request(10, &invite, udp()), Incoming::Retransmission);
    let base = "sip:UserB@example.com SIP/2.0\n\
        Via: SIP/2.0/UDP iftgw.example.com\n\
        From: <sip:+13035551111@ift.client.example.net;user=phone>\n\
        Call-ID: inv2543.1717@ift.client.example.com\n";
    let cancel = msg(&format!(
        "CANCEL {base}To: sip:+16505552222@ss1.example.net;user=phone\nCSeq: 56 CANCEL\n\n"
    ));
    let Incoming::Cancel {
        cancel: c,
        invite: found,
    } = h.request(20, &cancel, udp())
    else {
        panic!()
    };
    assert_eq!(found, Some(inv));
    assert_eq!(h.request(30, &cancel, udp()), Incoming::Retransmission);
    h.respond(40, c, reply(&cancel, 200, Some("srv")));
    h.respond(40, inv, reply(&invite, 487, Some("srv")));
    h.out(40);
    let ack = |tag: &str| {
        msg(&format!(
            "ACK {base}To: sip:+16505552222@ss1.example.net;user=phone;tag={tag}\nCSeq: 56 ACK\n\n"
        ))
    };
    // An ACK matches when its To tag is the one of the response sent.
    assert_eq!(h.request(50, &ack("other"), udp()), Incoming::Ack2xx);
    assert_eq!(h.t.state(inv), Some(State::Completed));
    assert_eq!(
        h.request(60, &ack("srv"), udp()),
        Incoming::AckOfNon2xx(inv)
    );
    assert_eq!(h.t.state(inv), Some(State::Confirmed));
    assert_eq!(h.request(70, &ack("srv"), udp()), Incoming::Retransmission);

    // A 2xx: the matching ACK in Accepted goes to the TU, end to end.
    let invite2 = msg(&text(&invite).replace("CSeq: 56 INVITE", "CSeq: 57 INVITE"));
    let Incoming::New(inv2) = h.request(100, &invite2, udp()) else {
        panic!()
    };
    h.respond(100, inv2, reply(&invite2, 200, Some("srv2")));
    let ack2 = msg(&text(&ack("srv2")).replace("CSeq: 56 ACK", "CSeq: 57 ACK"));
    assert_eq!(h.request(200, &ack2, udp()), Incoming::Ack2xx);
    assert_eq!(h.t.state(inv2), Some(State::Accepted));
    h.out(200);
    h.run(100_000);
    assert!(h.t.is_empty());
}

// ---- transport errors, timeouts, scale ----

#[test]
fn transport_error_terminates() {
    let mut h = Harness::new();
    let invite = outgoing("INVITE", "z9hG4bKc1");
    let tx = h.t.send_request(h.at(0), invite.clone(), udp()).unwrap();
    h.t.handle_transport_error(h.at(0), tx);
    assert_eq!(
        h.out(0),
        [
            "0 send INVITE",
            "0 TransportError(TxId(1))",
            "0 Terminated(TxId(1))"
        ]
    );
    assert!(h.t.is_empty());
    assert_eq!(h.t.poll_timeout(), None);
    assert_eq!(h.response(100, &reply(&invite, 180, None)), None);
    // Twice, or for an unknown id: nothing.
    h.t.handle_transport_error(h.at(0), tx);
    assert_eq!(h.out(0), Vec::<String>::new());

    let req = incoming("INVITE", "z9hG4bKup1", None);
    let Incoming::New(s) = h.request(0, &req, udp()) else {
        panic!()
    };
    h.respond(0, s, reply(&req, 486, Some("s1")));
    h.t.handle_transport_error(h.at(0), s);
    assert_eq!(
        h.out(0),
        [
            "0 send 486",
            "0 TransportError(TxId(2))",
            "0 Terminated(TxId(2))"
        ]
    );
    assert_eq!(h.t.poll_timeout(), None);
}

#[test]
fn poll_timeout_is_the_earliest_live_deadline() {
    let mut h = Harness::new();
    let i1 = outgoing("INVITE", "z9hG4bKc1");
    let t1 = h.t.send_request(h.at(0), i1.clone(), udp()).unwrap();
    let t2 =
        h.t.send_request(h.at(100), outgoing("INVITE", "z9hG4bKc2"), udp())
            .unwrap();
    h.t.send_request(h.at(200), outgoing("OPTIONS", "z9hG4bKc3"), tcp())
        .unwrap();
    h.out(0);
    assert_eq!(h.next_ms(), Some(500));
    // t1's A and B stop: t2's A is next.
    h.response(300, &reply(&i1, 180, None));
    assert_eq!(h.next_ms(), Some(600));
    h.t.handle_transport_error(h.at(300), t2);
    // Only the TCP OPTIONS is left, with Timer F.
    assert_eq!(h.next_ms(), Some(32_200));
    // Firing early does nothing.
    h.t.handle_timeout(h.at(32_199));
    h.out(0);
    assert_eq!(h.t.len(), 2);
    assert_eq!(h.t.state(t1), Some(State::Proceeding));
}

/// Many transactions of every kind on a pseudo-random schedule: each
/// deadline `poll_timeout` gives is real (firing 1 ms before does nothing,
/// firing at it does something), and everything ends.
#[test]
fn poll_timeout_never_early_never_stale() {
    let mut h = Harness::new();
    let mut seed: u64 = 42;
    let mut rand = move |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    let mut clients = Vec::new();
    for i in 0..300u64 {
        let start = rand(10_000);
        let transport = if rand(3) == 0 { tcp() } else { udp() };
        match rand(4) {
            0 | 1 => {
                let method = if rand(2) == 0 { "INVITE" } else { "OPTIONS" };
                let req = outgoing(method, &format!("z9hG4bKr{i}"));
                h.t.send_request(h.at(start), req.clone(), transport)
                    .unwrap();
                clients.push((
                    req,
                    start + rand(40_000),
                    [100, 180, 200, 486][rand(4) as usize],
                ));
            }
            _ => {
                let method = if rand(2) == 0 { "INVITE" } else { "MESSAGE" };
                let req = incoming(method, &format!("z9hG4bKr{i}"), None);
                if let Incoming::New(tx) = h.request(start, &req, transport) {
                    let code = [180, 200, 404][rand(3) as usize];
                    h.respond(start, tx, reply(&req, code, Some("s")));
                }
            }
        }
    }
    // Responses arrive in time order with the timers.
    clients.sort_by_key(|c| c.1);
    let mut responses = clients.into_iter().peekable();
    h.out(0);
    let mut fired = 0;
    loop {
        let next = h.t.poll_timeout();
        if let Some((req, at, code)) = responses.next_if(|r| next.is_none_or(|d| h.at(r.1) < d)) {
            h.response(at, &reply(&req, code, Some("b")));
            h.out(0);
            continue;
        }
        let Some(d) = next else { break };
        let records = h.t.finished();
        h.t.handle_timeout(d - Duration::from_millis(1));
        assert_eq!(h.out(0), Vec::<String>::new(), "fired early");
        assert_eq!(h.t.finished(), records, "a record expired early");
        h.t.handle_timeout(d);
        // A finished record's expiry shows only in the count.
        assert!(
            !h.out(0).is_empty() || h.t.finished() < records,
            "stale deadline"
        );
        fired += 1;
    }
    assert!(fired > 300, "{fired}");
    // Client INVITEs left in Proceeding wait for the TU's Timer C; server
    // ones for a final answer: everything else is gone.
    let left: Vec<_> = (1..=300).filter_map(|i| h.t.state(TxId(i))).collect();
    assert!(left.iter().all(|s| *s == State::Proceeding), "{left:?}");
    assert_eq!(h.t.len(), left.len());
}

#[test]
fn ten_thousand_transactions_stay_bounded() {
    let mut h = Harness::new();
    let mut reqs = Vec::new();
    for i in 0..10_000u64 {
        let req = outgoing("OPTIONS", &format!("z9hG4bKn{i}"));
        h.t.send_request(h.at(i / 10), req.clone(), udp()).unwrap();
        reqs.push(req);
    }
    while h.t.poll_transmit().is_some() {}
    assert_eq!(h.t.len(), 10_000);
    for (i, req) in reqs.iter().enumerate() {
        let r = h.response(1000 + i as u64 / 10, &reply(req, 200, Some("b")));
        assert!(matches!(r, Some((_, ResponseDisposition::Deliver))));
    }
    // E and F were stopped for every transaction; stale entries are
    // compacted away rather than kept until their deadlines.
    assert!(
        h.t.scheduled() < 2 * 10_000 + 1024 + 1,
        "{}",
        h.t.scheduled()
    );
    while h.t.poll_transmit().is_some() {}
    let mut terminated = 0;
    while let Some(d) = h.t.poll_timeout() {
        h.t.handle_timeout(d);
        while let Some(e) = h.t.poll_event() {
            assert!(matches!(e, Event::Terminated(_)), "{e:?}");
            terminated += 1;
        }
    }
    assert_eq!(terminated, 10_000);
    assert!(h.t.is_empty());
    assert_eq!(h.t.scheduled(), 0);
}

// ---- refusals and robustness ----

#[test]
fn refusals() {
    let mut h = Harness::new();
    let now = h.at(0);
    let invite = outgoing("INVITE", "z9hG4bKc1");
    let tx = h.t.send_request(now, invite.clone(), udp()).unwrap();
    assert_eq!(
        h.t.send_request(now, invite.clone(), udp()),
        Err(TxError::BranchInUse)
    );
    assert_eq!(
        h.t.send_request(now, outgoing("ACK", "z9hG4bKc9"), udp()),
        Err(TxError::AckHasNoTransaction)
    );
    assert_eq!(
        h.t.send_request(now, outgoing("OPTIONS", "z9hG4bK"), udp()),
        Err(TxError::NoRfc3261Branch)
    );
    assert_eq!(
        h.t.send_request(now, outgoing("OPTIONS", "abc"), udp()),
        Err(TxError::NoRfc3261Branch)
    );
    let mismatch = msg(&text(&outgoing("OPTIONS", "z9hG4bKc2")).replace("7 OPTIONS", "7 INFO"));
    assert_eq!(
        h.t.send_request(now, mismatch, udp()),
        Err(TxError::BadHeader("CSeq"))
    );
    let resp = reply(&invite, 200, None);
    assert_eq!(
        h.t.send_request(now, resp.clone(), udp()),
        Err(TxError::NotARequest)
    );
    assert_eq!(h.t.respond(now, tx, resp.clone()), Err(TxError::NotServer));
    assert_eq!(
        h.t.respond(now, TxId(99), resp.clone()),
        Err(TxError::UnknownTransaction)
    );
    assert_eq!(
        h.t.respond(now, tx, invite.clone()),
        Err(TxError::NotAResponse)
    );
    assert_eq!(
        h.t.handle_request(now, &resp, udp()),
        Err(TxError::NotARequest)
    );
    let no_via = msg("OPTIONS sip:a@b SIP/2.0\nCSeq: 1 OPTIONS\n\n");
    assert_eq!(
        h.t.handle_request(now, &no_via, udp()),
        Err(TxError::BadHeader("Via"))
    );
    let no_cseq = msg("OPTIONS sip:a@b SIP/2.0\nVia: SIP/2.0/UDP h\n\n");
    assert_eq!(
        h.t.handle_request(now, &no_cseq, udp()),
        Err(TxError::BadHeader("CSeq"))
    );
    assert_eq!(h.t.handle_response(now, &invite, udp().addr.ip()), None);
    assert_eq!(
        h.t.handle_response(now, &msg("SIP/2.0 200 OK\n\n"), udp().addr.ip()),
        None
    );
    // Refusals changed nothing.
    assert_eq!(h.t.len(), 1);
    assert_eq!(h.out(0), ["0 send INVITE"]);
}

/// Every torture message that parses goes through the layer as a request
/// (answered), a response to it, and the timers, without a panic.
#[test]
fn corpus_messages_never_panic() {
    let mut h = Harness::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut n = 0;
    for dir in ["rfc4475", "rfc5118"] {
        for e in std::fs::read_dir(root.join(dir)).expect("corpus") {
            let path = e.expect("entry").path();
            let Ok(raw) = std::fs::read(&path) else {
                continue;
            };
            let Ok(m) = parse(Bytes::from(raw)) else {
                continue;
            };
            n += 1;
            let now = h.at(n);
            if m.is_request() {
                if let Ok(Incoming::New(tx) | Incoming::Cancel { cancel: tx, .. }) =
                    h.t.handle_request(now, &m, udp())
                {
                    let _ = h.t.respond(now, tx, reply(&m, 180, Some("t")));
                    let _ = h.t.respond(now, tx, reply(&m, 404, Some("t")));
                }
                let _ = h.t.handle_request(now, &m, udp());
                let _ = h.t.send_request(now, m.clone(), udp());
                let _ =
                    h.t.handle_response(now, &reply(&m, 500, Some("x")), udp().addr.ip());
            } else {
                let _ = h.t.handle_response(now, &m, udp().addr.ip());
            }
        }
    }
    assert!(n > 20, "{n}");
    while let Some(d) = h.t.poll_timeout() {
        h.t.handle_timeout(d);
    }
    // Everything ends: server transactions got a final answer, client
    // ones a 500.
    assert!(h.t.is_empty(), "{}", h.t.len());
}
