//! The host's SIP work for one stateful, record-routed call, without the
//! route hooks and the sockets: what `proxy::worker` does with the call's
//! datagrams (parse, validate, stamp the top Via, match or create the
//! transaction, answer 100, add Record-Route and Via, relay responses)
//! through the same `sip` and `transaction` APIs, down to the bytes that
//! would be sent.
//!
//! ```sh
//! cargo bench -p wisp --bench sip_call
//! ```
//!
//! The messages are those of `tests/scenarios/uac.xml` and `uas.xml`
//! through a proxy on 127.0.0.1:5060: INVITE / 100 / 180 / 200 / ACK,
//! BYE / 200. Each call runs on a fresh transaction layer (made outside
//! the timed section), so finished transactions do not pile up.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use wisp::sip::{self, HeaderName, Message};
use wisp::transaction::{Incoming, ResponseDisposition, Transactions, TxId};
use wisp::transport::{Target, Transport};

const CALLER: &str = "127.0.0.1:5070";
const CALLEE: &str = "127.0.0.1:5080";
const RR: &str = "<sip:127.0.0.1:5060;lr>";

const INVITE: &str = "INVITE sip:service@127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-4242-1-0;rport\r\n\
From: \"sipp\" <sip:sipp@127.0.0.1:5070>;tag=4242SIPpTag001\r\n\
To: <sip:service@127.0.0.1:5060>\r\n\
Call-ID: 1-4242@127.0.0.1\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:sipp@127.0.0.1:5070;transport=UDP>\r\n\
Max-Forwards: 70\r\n\
Subject: Performance Test\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 129\r\n\
\r\n\
v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n\
t=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

/// The callee's answers to the INVITE: our Via on top, the caller's as we
/// stamped it below.
fn invite_response(code: &str, body: &str) -> String {
    format!(
        "SIP/2.0 {code}\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKwsp1;rport=5060\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-4242-1-0;rport=5070;received=127.0.0.1\r\n\
Record-Route: {RR}\r\n\
From: \"sipp\" <sip:sipp@127.0.0.1:5070>;tag=4242SIPpTag001\r\n\
To: <sip:service@127.0.0.1:5060>;tag=5151SIPpTag011\r\n\
Call-ID: 1-4242@127.0.0.1\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:127.0.0.1:5080;transport=UDP>\r\n\
Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn in_dialog(method: &str, seq: u32, branch: &str) -> String {
    format!(
        "{method} sip:127.0.0.1:5080;transport=UDP SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5070;branch={branch};rport\r\n\
From: \"sipp\" <sip:sipp@127.0.0.1:5070>;tag=4242SIPpTag001\r\n\
To: <sip:service@127.0.0.1:5060>;tag=5151SIPpTag011\r\n\
Call-ID: 1-4242@127.0.0.1\r\n\
CSeq: {seq} {method}\r\n\
Route: {RR}\r\n\
Contact: <sip:sipp@127.0.0.1:5070;transport=UDP>\r\n\
Max-Forwards: 70\r\n\
Content-Length: 0\r\n\r\n"
    )
}

const BYE_OK: &str = "SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKwsp2;rport=5060\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-4242-1-6;rport=5070;received=127.0.0.1\r\n\
From: \"sipp\" <sip:sipp@127.0.0.1:5070>;tag=4242SIPpTag001\r\n\
To: <sip:service@127.0.0.1:5060>;tag=5151SIPpTag011\r\n\
Call-ID: 1-4242@127.0.0.1\r\n\
CSeq: 2 BYE\r\n\
Content-Length: 0\r\n\r\n";

struct Call {
    invite: Bytes,
    ringing: Bytes,
    ok: Bytes,
    ack: Bytes,
    bye: Bytes,
    bye_ok: Bytes,
}

fn udp(addr: &str) -> Target {
    Target {
        transport: Transport::Udp,
        addr: addr.parse::<SocketAddr>().expect("address"),
    }
}

/// A received datagram, as the worker takes it in: parsed, validated, the
/// top Via stamped (rport), the reply target read from it.
fn receive(data: &Bytes) -> (Message, Target) {
    let mut msg = sip::parse(data.clone()).expect("parses");
    sip::validate(&msg).expect("valid");
    let source = udp(CALLER);
    let source_port = source.addr.port().to_string();
    let via = msg.top_via().expect("via").with_params([
        ("received", Some("127.0.0.1")),
        ("rport", Some(&source_port)),
    ]);
    msg.set_top_via(via).expect("via");
    let port = match msg.top_via() {
        Ok(via) if via.rport().is_none() => via.port.unwrap_or(5060),
        _ => source.addr.port(),
    };
    let reply_to = Target {
        addr: SocketAddr::new(source.addr.ip(), port),
        ..source
    };
    (msg, reply_to)
}

/// What leaves towards the callee: loose routing (our Route popped),
/// Record-Route on an initial request, our Via on top.
fn outgoing(req: &Message, branch: &str, record_route: bool) -> Message {
    let mut copy = req.clone();
    let ours = copy
        .values(&HeaderName::Route)
        .next()
        .is_some_and(|route| sip::NameAddr::parse(route).is_ok());
    if ours {
        copy.remove_first_value(&HeaderName::Route);
    }
    if record_route {
        copy.prepend_header(HeaderName::RecordRoute, RR)
            .expect("rr");
    }
    let via = format!("SIP/2.0/UDP 127.0.0.1:5060;branch={branch};rport");
    copy.prepend_header(HeaderName::Via, &via).expect("via");
    copy
}

fn sent(txs: &mut Transactions) -> usize {
    let mut bytes = 0;
    while let Some(t) = txs.poll_transmit() {
        bytes += black_box(t.data).len();
    }
    bytes
}

/// A response from the callee, relayed upstream on its server transaction.
fn relay_response(txs: &mut Transactions, now: Instant, data: &Bytes, server: TxId) {
    let mut msg = sip::parse(data.clone()).expect("parses");
    sip::validate(&msg).expect("valid");
    let from = CALLEE.parse::<std::net::SocketAddr>().expect("callee").ip();
    match txs.handle_response(now, &msg, from) {
        Some((_, ResponseDisposition::Deliver)) => {}
        other => panic!("response not delivered: {other:?}"),
    }
    msg.remove_first_value(&HeaderName::Via);
    txs.respond(now, server, msg).expect("respond");
}

#[inline(never)] // callgrind counts instructions per call through this symbol
fn one_call(txs: &mut Transactions, call: &Call) -> usize {
    let now = Instant::now();
    let callee = udp(CALLEE);
    let (invite, reply_to) = receive(&call.invite);
    let Ok(Incoming::New(server)) = txs.handle_request(now, &invite, reply_to) else {
        panic!("INVITE is not new");
    };
    let trying = sip::response_to(&invite, 100, "Trying", None);
    txs.respond(now, server, trying).expect("100");
    let out = outgoing(&invite, "z9hG4bKwsp1", true);
    txs.send_request(now, out, callee).expect("INVITE out");
    let mut bytes = sent(txs);

    relay_response(txs, now, &call.ringing, server);
    bytes += sent(txs);
    relay_response(txs, now, &call.ok, server);
    bytes += sent(txs);

    let (ack, reply_to) = receive(&call.ack);
    match txs.handle_request(now, &ack, reply_to) {
        Ok(Incoming::Ack2xx) => {}
        _ => panic!("ACK of the 2xx expected"),
    }
    bytes += outgoing(&ack, "z9hG4bKwsp3", false).to_bytes().len();

    let (bye, reply_to) = receive(&call.bye);
    let Ok(Incoming::New(server)) = txs.handle_request(now, &bye, reply_to) else {
        panic!("BYE is not new");
    };
    let out = outgoing(&bye, "z9hG4bKwsp2", false);
    txs.send_request(now, out, callee).expect("BYE out");
    bytes += sent(txs);
    relay_response(txs, now, &call.bye_ok, server);
    bytes + sent(txs)
}

fn bench(c: &mut Criterion) {
    let call = Call {
        invite: Bytes::from_static(INVITE.as_bytes()),
        ringing: Bytes::from(invite_response("180 Ringing", "")),
        ok: Bytes::from(invite_response(
            "200 OK",
            "v=0\r\no=user1 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n\
             t=0 0\r\nm=audio 6001 RTP/AVP 0\r\n",
        )),
        ack: Bytes::from(in_dialog("ACK", 1, "z9hG4bK-4242-1-5")),
        bye: Bytes::from(in_dialog("BYE", 2, "z9hG4bK-4242-1-6")),
        bye_ok: Bytes::from_static(BYE_OK.as_bytes()),
    };
    // Every step is checked once before measuring (the expects above).
    let mut txs = Transactions::new(Default::default());
    assert!(one_call(&mut txs, &call) > 0);

    c.bench_function("sip/call", |b| {
        b.iter_batched(
            || Transactions::new(Default::default()),
            |mut txs| (one_call(&mut txs, &call), txs),
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
