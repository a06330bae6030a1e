//! Malformed and duplicate messages thrown at wisp while it carries a SIPp
//! load: the torture corpus (RFC 4475, RFC 5118) and INVITEs sent five
//! times each. The load must not lose a call, and each duplicated INVITE
//! must leave wisp once, as one transaction (one Via branch).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use wisp_tests::{
    assert_all_successful, free_port, header_of, repo_root, request, scenario, Routing, SilentPeer,
    Sipp, Transport, Wisp,
};

const CALLS: u32 = 300;
const DUPLICATED: usize = 50;
const COPIES: usize = 5;

fn corpus() -> Vec<Vec<u8>> {
    let mut files = Vec::new();
    for dir in ["rfc4475", "rfc5118"] {
        let path = repo_root().join("host/tests/corpus").join(dir);
        let mut entries: Vec<_> = std::fs::read_dir(&path)
            .expect("corpus")
            .flatten()
            .map(|e| e.path())
            .collect();
        entries.sort();
        files.extend(entries.iter().map(|p| std::fs::read(p).expect("read")));
    }
    files
}

/// Sprays the corpus and duplicated INVITEs (towards `sink`) at wisp until
/// `stop`, or until everything was sent; returns the Call-IDs duplicated.
fn spray(wisp: SocketAddr, sink: SocketAddr, stop: &AtomicBool) -> Vec<String> {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_millis(1)))
        .expect("timeout");
    let corpus = corpus();
    let mut buf = vec![0u8; 65_536];
    let mut call_ids = Vec::new();
    for round in 0..DUPLICATED {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let uri = format!("sip:dup{round}@{sink}");
        let invite = request("INVITE", &uri, "Max-Forwards: 70\r\n").replace(
            "Via: SIP/2.0/UDP 127.0.0.1:9;",
            &format!(
                "Via: SIP/2.0/UDP 127.0.0.1:{};",
                socket.local_addr().expect("addr").port()
            ),
        );
        call_ids.push(header_of(&invite, "Call-ID").expect("call-id").to_owned());
        for _ in 0..COPIES {
            let _ = socket.send_to(invite.as_bytes(), wisp);
        }
        for message in corpus.iter().skip(round % 4).step_by(4) {
            let _ = socket.send_to(message, wisp);
        }
        // Drain what wisp answers (100 Trying, 400s...), ignored.
        while socket.recv_from(&mut buf).is_ok() {}
        std::thread::sleep(Duration::from_millis(100));
    }
    call_ids
}

fn garbage_under_load(routing: Routing) {
    let tenant = routing.tenant_toml().expect("routing component");
    let wisp = Wisp::start(&tenant).expect("wisp starts");
    let sink = SilentPeer::start().expect("sink");
    let uas_port = free_port();
    let uas = Sipp::uas(scenario("uas.xml"), Transport::Udp, uas_port, CALLS)
        .spawn()
        .expect("uas starts");
    std::thread::sleep(Duration::from_millis(500));
    let callee = format!("127.0.0.1:{uas_port}").parse().expect("addr");
    let mut uac = Sipp::uac(
        scenario("uac.xml"),
        Transport::Udp,
        callee,
        wisp.addr(),
        CALLS,
    );
    uac.rate = 50;
    uac.timeout = Duration::from_secs(90);
    let uac = uac.spawn().expect("uac starts");

    let stop = Arc::new(AtomicBool::new(false));
    let sprayer = {
        let (stop, wisp, sink) = (stop.clone(), wisp.addr(), sink.addr());
        std::thread::spawn(move || spray(wisp, sink, &stop))
    };
    let outcome = uac.wait().expect("uac runs");
    stop.store(true, Ordering::Relaxed);
    let duplicated = sprayer.join().expect("sprayer");
    drop(uas);
    assert_all_successful(&format!("{routing:?} under garbage, uac"), &outcome, CALLS);

    // Each duplicated INVITE left wisp as one transaction: one branch per
    // Call-ID (retransmissions towards the sink keep it).
    std::thread::sleep(Duration::from_millis(500));
    let mut branches: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for message in sink.received() {
        if !message.starts_with("INVITE ") {
            continue;
        }
        let (Some(call_id), Some(via)) =
            (header_of(&message, "Call-ID"), header_of(&message, "Via"))
        else {
            continue;
        };
        branches
            .entry(call_id.to_owned())
            .or_default()
            .insert(via.to_owned());
    }
    eprintln!(
        "{} duplicated INVITEs sent, {} reached the sink",
        duplicated.len(),
        branches.len()
    );
    for call_id in &duplicated {
        let seen = branches.get(call_id).map(BTreeSet::len).unwrap_or(0);
        assert_eq!(seen, 1, "INVITE {call_id} left wisp as {seen} transactions");
    }
    assert!(!duplicated.is_empty());
}

#[test]
fn garbage_and_duplicates_under_load() {
    garbage_under_load(Routing::Rust);
}

#[test]
fn garbage_and_duplicates_under_load_js() {
    garbage_under_load(Routing::Js);
}
