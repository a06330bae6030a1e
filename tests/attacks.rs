//! The proxy under attack (#14), against the real binary on loopback:
//! loops between two wisps and through a registration pointing at wisp
//! itself (482, Max-Forwards capped, Max-Breadth), forged responses from
//! another address and with guessed branches, stray responses that would
//! have wisp connect somewhere, what the default routing relays for an
//! untrusted source, and how many bytes an unauthenticated request gets
//! back.
//!
//! 127.0.0.1 is trusted by default and 127.0.0.2 / 127.0.0.3 are not: the
//! attacker sends from those. Every test keeps its untrusted traffic far
//! below the `[flood]` defaults (50/s, burst 500).

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wisp_tests::{
    assert_all_successful, build_guest, free_port, header_of, headers_of, scenario, Routing,
    SilentPeer, Sipp, Tenant, Transport, Ua, Wisp, WispBuilder, TRUNK_GUEST,
};

const WAIT: Duration = Duration::from_secs(5);
/// How long "nothing comes" is watched for.
const QUIET: Duration = Duration::from_millis(1500);

// ---------------------------------------------------------------------
// Raw SIP from any loopback address
// ---------------------------------------------------------------------

/// A UDP socket on `ip` (e.g. 127.0.0.2, an untrusted source), any port.
fn socket_on(ip: &str) -> UdpSocket {
    let socket = UdpSocket::bind(format!("{ip}:0")).expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    socket
}

fn unique(what: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{what}{}x{nanos}x{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A request as a UA on `socket` writes it: its Via names the socket.
struct Req {
    method: String,
    uri: String,
    from: String,
    to: String,
    to_tag: Option<String>,
    call_id: String,
    cseq: u32,
    branch: String,
    headers: String,
}

impl Req {
    fn new(method: &str, uri: &str) -> Req {
        Req {
            method: method.to_owned(),
            uri: uri.to_owned(),
            from: "sip:mallory@198.51.100.7".to_owned(),
            to: uri.to_owned(),
            to_tag: None,
            call_id: unique("call"),
            cseq: 1,
            branch: format!("z9hG4bK{}", unique("b")),
            headers: "Max-Forwards: 70\r\n".to_owned(),
        }
    }

    fn from(mut self, uri: &str) -> Req {
        self.from = uri.to_owned();
        self
    }

    fn to(mut self, uri: &str) -> Req {
        self.to = uri.to_owned();
        self
    }

    fn with_to_tag(mut self, tag: &str) -> Req {
        self.to_tag = Some(tag.to_owned());
        self
    }

    fn call_id(mut self, call_id: &str) -> Req {
        self.call_id = call_id.to_owned();
        self
    }

    fn cseq(mut self, cseq: u32) -> Req {
        self.cseq = cseq;
        self
    }

    /// Header lines (each ending in `\r\n`) in place of `Max-Forwards: 70`.
    fn headers(mut self, lines: &str) -> Req {
        self.headers = lines.to_owned();
        self
    }

    fn text(&self, socket: &UdpSocket) -> String {
        let local = socket.local_addr().expect("addr");
        let to_tag = self
            .to_tag
            .as_ref()
            .map(|t| format!(";tag={t}"))
            .unwrap_or_default();
        format!(
            "{method} {uri} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch={branch};rport\r\n\
             From: <{from}>;tag=f{cseq}\r\n\
             To: <{to}>{to_tag}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} {method}\r\n\
             Contact: <sip:ua@{local}>\r\n\
             {headers}\
             Content-Length: 0\r\n\r\n",
            method = self.method,
            uri = self.uri,
            branch = self.branch,
            from = self.from,
            to = self.to,
            call_id = self.call_id,
            cseq = self.cseq,
            headers = self.headers,
        )
    }

    /// Sends it from `socket` to `to`; the text sent.
    fn send(&self, socket: &UdpSocket, to: SocketAddr) -> String {
        let text = self.text(socket);
        socket.send_to(text.as_bytes(), to).expect("send");
        text
    }
}

/// Every message that reaches `socket` within `window`.
fn drain(socket: &UdpSocket, window: Duration) -> Vec<String> {
    let until = Instant::now() + window;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65_536];
    while Instant::now() < until {
        if let Ok(len) = socket.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..len]).into_owned());
        }
    }
    got
}

/// The first message reaching `socket` within `timeout` that `wanted`
/// accepts; the others are skipped.
fn wait_for(
    socket: &UdpSocket,
    timeout: Duration,
    wanted: impl Fn(&str) -> bool,
) -> Option<String> {
    let until = Instant::now() + timeout;
    let mut buf = vec![0u8; 65_536];
    while Instant::now() < until {
        if let Ok(len) = socket.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..len]).into_owned();
            if wanted(&text) {
                return Some(text);
            }
        }
    }
    None
}

/// The first final response within `timeout`, provisionals skipped.
fn final_response(socket: &UdpSocket, timeout: Duration) -> Option<String> {
    wait_for(socket, timeout, |m| {
        m.starts_with("SIP/2.0 ") && !m.starts_with("SIP/2.0 1")
    })
}

fn first_line(message: &str) -> &str {
    message.lines().next().unwrap_or("(nothing)")
}

fn status(message: &str) -> u16 {
    message
        .strip_prefix("SIP/2.0 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// A response `status` to `request` (all its Vias, From, Call-ID, CSeq,
/// To with `to_tag` unless it has one), then `extra` lines.
fn answer(request: &str, status: &str, to_tag: &str, extra: &str) -> String {
    let mut response = format!("SIP/2.0 {status}\r\n");
    for line in request.lines().skip(1) {
        let name = line.split(':').next().unwrap_or_default().trim();
        if ["via", "v", "from", "f", "call-id", "i", "cseq"]
            .contains(&name.to_ascii_lowercase().as_str())
        {
            response.push_str(&format!("{line}\r\n"));
        } else if name.eq_ignore_ascii_case("to") || name == "t" {
            if line.contains(";tag=") {
                response.push_str(&format!("{line}\r\n"));
            } else {
                response.push_str(&format!("{line};tag={to_tag}\r\n"));
            }
        }
    }
    response.push_str(extra);
    response.push_str("Content-Length: 0\r\n\r\n");
    response
}

/// The branch of the top Via of a message.
fn top_branch(message: &str) -> String {
    header_of(message, "Via")
        .and_then(|v| v.split(';').find_map(|p| p.trim().strip_prefix("branch=")))
        .expect("a top Via with a branch")
        .to_owned()
}

/// `message` with its top Via's branch replaced.
fn with_top_branch(message: &str, branch: &str) -> String {
    let old = top_branch(message);
    message.replacen(&old, branch, 1)
}

/// Branches an attacker who saw `real` (`z9hG4bKwsp{shard}-{seq}.{loop}.{mac}`)
/// would try: the neighbouring sequence numbers with the same loop hash
/// and MAC, and the real ID with its MAC altered.
fn guessed_branches(real: &str) -> Vec<String> {
    let (id, rest) = real.split_once('.').expect("id.loop.mac");
    let (loop_hash, mac) = rest.split_once('.').expect("loop.mac");
    let (prefix, seq) = id.rsplit_once('-').expect("shard-seq");
    let seq: u64 = seq.parse().expect("a sequence number");
    let mut guesses: Vec<String> = [seq + 1, seq + 2, seq.saturating_sub(1), seq + 100]
        .into_iter()
        .filter(|s| *s != seq)
        .map(|s| format!("{prefix}-{s}.{loop_hash}.{mac}"))
        .collect();
    let flipped: String = mac
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i == 0 {
                if c == '0' {
                    '1'
                } else {
                    '0'
                }
            } else {
                c
            }
        })
        .collect();
    guesses.push(format!("{id}.{loop_hash}.{flipped}"));
    guesses.push(format!("{id}.{loop_hash}.0000000000000000"));
    guesses
}

/// `Route:` lines following the `Record-Route` entries of a response (a
/// caller's route set is the Record-Route in order).
fn route_set(response: &str) -> String {
    headers_of(response, "Record-Route")
        .iter()
        .flat_map(|v| v.split(','))
        .map(|r| format!("Route: {}\r\n", r.trim()))
        .collect()
}

fn metrics(wisp: &Wisp) -> String {
    let out = wisp.ctl(&["metrics"]).expect("wisp ctl metrics");
    assert!(out.success, "{out:?}");
    out.stdout
}

/// The sum of every series of the counter `name` (all labels).
fn counter(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Requests wisp routed so far (each arrival that reached a route hook).
fn requests_routed(wisp: &Wisp) -> f64 {
    counter(&metrics(wisp), "wisp_requests_total")
}

// ---------------------------------------------------------------------
// 1. Loops
// ---------------------------------------------------------------------

/// A UDP relay between two peers that counts what passes: whatever comes
/// from `a` goes to `b`, anything else to `a`.
struct CountingRelay {
    socket: Option<UdpSocket>,
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CountingRelay {
    fn bind() -> CountingRelay {
        let socket = socket_on("127.0.0.1");
        let port = socket.local_addr().expect("addr").port();
        CountingRelay {
            socket: Some(socket),
            port,
            seen: Arc::default(),
            stop: Arc::default(),
            thread: None,
        }
    }

    fn start(&mut self, a: SocketAddr, b: SocketAddr) {
        let socket = self.socket.take().expect("started once");
        let (seen, stop) = (self.seen.clone(), self.stop.clone());
        self.thread = Some(std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while !stop.load(Ordering::Relaxed) {
                let Ok((len, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let to = if from == a { b } else { a };
                seen.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(String::from_utf8_lossy(&buf[..len]).into_owned());
                let _ = socket.send_to(&buf[..len], to);
            }
        }));
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for CountingRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// First lines of messages, counted ("INVITE" for requests, the status
/// code for responses).
fn tally(messages: &[String]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for m in messages {
        let key = match m.strip_prefix("SIP/2.0 ") {
            Some(rest) => rest.chars().take(3).collect(),
            None => m.split(' ').next().unwrap_or("?").to_owned(),
        };
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

/// Two trunk wisps relaying every request to each other, each through a
/// counting relay: one INVITE sent in comes back to the first wisp, which
/// answers 482 (its Via with the same loop hash); the caller gets the 482
/// after a handful of messages on the wire. Without loop detection, the
/// INVITE would go round until Max-Forwards runs out (70 hops, or four
/// billion without the cap).
#[test]
fn two_wisps_routing_to_each_other_end_in_482() {
    let wasm = build_guest("trunk", TRUNK_GUEST).expect("guest builds");
    let (mut to_b, mut to_a) = (CountingRelay::bind(), CountingRelay::bind());
    let trunk = |next: u16| {
        WispBuilder::new()
            .tenant(
                Tenant::new("trunk")
                    .component(&wasm)
                    .param("NEXT", &format!("sip:127.0.0.1:{next}")),
            )
            .start()
            .expect("trunk wisp starts")
    };
    let a = trunk(to_b.port);
    let b = trunk(to_a.port);
    to_b.start(a.addr(), b.addr());
    to_a.start(b.addr(), a.addr());

    for max_forwards in ["70", "4294967295"] {
        let before = to_b.seen().len() + to_a.seen().len();
        let caller = socket_on("127.0.0.1");
        let invite = Req::new("INVITE", "sip:bob@example.com")
            .from("sip:alice@127.0.0.1")
            .headers(&format!("Max-Forwards: {max_forwards}\r\n"));
        invite.send(&caller, a.addr());
        let answer = final_response(&caller, Duration::from_secs(20));
        // Let the ACKs and any late message pass.
        std::thread::sleep(QUIET);
        let mut wire = to_b.seen();
        wire.extend(to_a.seen());
        let wire: Vec<String> = wire.into_iter().skip(before).collect();
        let counts = tally(&wire);
        eprintln!(
            "loop between two wisps, Max-Forwards {max_forwards}: {} messages between them {counts:?}, caller got {:?}",
            wire.len(),
            answer.as_deref().map(first_line)
        );
        let answer = answer.expect("the caller gets a final answer");
        assert_eq!(status(&answer), 482, "{answer}");
        let invites = counts.get("INVITE").copied().unwrap_or(0);
        assert!(
            (1..=4).contains(&invites),
            "the INVITE crossed between the wisps {invites} times: {counts:?}"
        );
        assert!(wire.len() <= 16, "{} messages: {counts:?}", wire.len());
    }
}

/// An AOR registered with a contact that is wisp itself: the call is
/// relayed to wisp, comes back with the same loop hash and is answered
/// 482 (also when the caller asks for 4294967295 hops). An AOR with 16
/// contacts, all wisp itself with different parameters, spirals (each
/// Request-URI differs) and forks 16 ways per hop: Max-Breadth bounds the
/// branches and loop detection the depth. Hops are counted by wisp's
/// metrics (every arrival that reached the routing) plus the loops it
/// logged.
#[test]
fn an_aor_registered_to_wisp_itself_ends_in_482() {
    let wisp = WispBuilder::new()
        .tenant(Tenant::new("default").toml("limits = { max_bindings_per_aor = 20 }\n"))
        .admin()
        .start()
        .expect("wisp starts");
    let mut registrar = Ua::new(wisp.addr());
    let me = wisp.addr();

    // One contact: wisp itself, the Request-URI unchanged.
    let aor = format!("sip:loop@{me}");
    let ok = registrar.register(&aor, &format!("Contact: <sip:loop@{me}>\r\n"));
    assert_eq!(status(&ok), 200, "{ok}");
    // 16 contacts: wisp itself, each a different Request-URI.
    let fork = format!("sip:fork@{me}");
    for n in 0..16 {
        let ok = registrar.register(&fork, &format!("Contact: <sip:fork@{me};x={n}>\r\n"));
        assert_eq!(status(&ok), 200, "contact {n}: {ok}");
    }
    let _ = wisp.log_lines_with("loop detected");

    for (user, most_hops) in [("loop", 4.0), ("fork", 1000.0)] {
        for max_forwards in ["70", "4294967295"] {
            let routed_before = requests_routed(&wisp);
            let caller = socket_on("127.0.0.2");
            Req::new("INVITE", &format!("sip:{user}@{me}"))
                .headers(&format!("Max-Forwards: {max_forwards}\r\n"))
                .send(&caller, me);
            let answer = final_response(&caller, Duration::from_secs(30));
            std::thread::sleep(QUIET);
            let routed = requests_routed(&wisp) - routed_before;
            let loops = wisp.log_lines_with("loop detected").len();
            let more = drain(&caller, Duration::from_millis(200));
            eprintln!(
                "AOR {user} at wisp itself, Max-Forwards {max_forwards}: {routed} requests routed, {loops} loops detected, caller got {:?} (then {} more messages)",
                answer.as_deref().map(first_line),
                more.len()
            );
            let answer = answer.expect("the caller gets a final answer");
            assert!(
                [482, 483, 440, 404, 480].contains(&status(&answer)),
                "{answer}"
            );
            if user == "loop" {
                assert_eq!(status(&answer), 482, "{answer}");
            }
            assert!(loops >= 1, "no loop was detected");
            assert!(
                routed + loops as f64 <= most_hops,
                "{routed} requests routed and {loops} loops for one call to {user}"
            );
        }
    }
}

/// Max-Forwards is lowered to `[proxy] max_forwards` (70) on arrival: a
/// request asking for 4294967295 hops leaves with at most 70.
#[test]
fn max_forwards_is_capped_on_arrival() {
    let wisp = WispBuilder::new()
        .routing(Routing::Rust)
        .start()
        .expect("wisp starts");
    let peer = SilentPeer::start().expect("peer");
    let caller = socket_on("127.0.0.1");
    let req = Req::new("INVITE", &format!("sip:bob@{}", peer.addr()))
        .from("sip:alice@127.0.0.1")
        .headers("Max-Forwards: 4294967295\r\n");
    req.send(&caller, wisp.addr());
    let relayed = peer.wait_for(&req.call_id, WAIT).expect("relayed");
    let hops: u64 = header_of(&relayed, "Max-Forwards")
        .and_then(|v| v.parse().ok())
        .expect("a Max-Forwards");
    eprintln!("Max-Forwards 4294967295 left wisp as {hops}");
    assert!(hops <= 70, "{relayed}");
}

// ---------------------------------------------------------------------
// 2. Forged responses
// ---------------------------------------------------------------------

/// A call from a caller (127.0.0.1) through wisp to a callee on a socket
/// of the test, ringing.
struct RingingCall {
    wisp: Wisp,
    caller: UdpSocket,
    callee: UdpSocket,
    invite: Req,
    /// The INVITE as wisp relayed it to the callee.
    relayed: String,
    /// wisp's branch in it.
    branch: String,
}

fn ringing_call() -> RingingCall {
    let wisp = WispBuilder::new()
        .routing(Routing::Rust)
        .start()
        .expect("wisp starts");
    let callee = socket_on("127.0.0.1");
    let callee_addr = callee.local_addr().expect("addr");
    let caller = socket_on("127.0.0.1");
    let invite = Req::new("INVITE", &format!("sip:bob@{callee_addr}"))
        .from("sip:alice@127.0.0.1")
        .call_id(&unique("forged"));
    invite.send(&caller, wisp.addr());
    let relayed = wait_for(&callee, WAIT, |m| m.starts_with("INVITE ")).expect("INVITE relayed");
    let branch = top_branch(&relayed);
    eprintln!("wisp's branch: {branch}");
    assert!(branch.starts_with("z9hG4bKwsp"), "{branch}");
    callee
        .send_to(
            answer(&relayed, "180 Ringing", "callee", "").as_bytes(),
            wisp.addr(),
        )
        .expect("send");
    let ringing = wait_for(&caller, WAIT, |m| m.starts_with("SIP/2.0 180")).expect("180");
    assert!(ringing.contains("tag=callee"), "{ringing}");
    RingingCall {
        wisp,
        caller,
        callee,
        invite,
        relayed,
        branch,
    }
}

/// Sends each (source address, message) to wisp, 30 ms apart (well under
/// the flood limits of the untrusted sources).
fn send_from(wisp: &Wisp, messages: &[(&str, String)]) {
    let sockets: HashMap<&str, UdpSocket> = messages
        .iter()
        .map(|(ip, _)| (*ip, socket_on(ip)))
        .collect();
    for (ip, message) in messages {
        sockets[ip]
            .send_to(message.as_bytes(), wisp.addr())
            .expect("send");
        std::thread::sleep(Duration::from_millis(30));
    }
}

/// A call from a caller through wisp to a callee on a socket of the test:
/// the callee rings, then an attacker on 127.0.0.2 and 127.0.0.3 sends
/// 603, 487 and 200 with the real branch, and the same with guessed
/// branches; the callee's own address sends guessed branches too. The
/// caller sees none of them and the callee gets no ACK for them; then the
/// callee answers 200, and the call is set up and torn down as usual.
#[test]
fn forged_responses_do_not_change_a_call() {
    let RingingCall {
        wisp,
        caller,
        callee,
        invite,
        relayed,
        branch,
    } = ringing_call();
    let callee_addr = callee.local_addr().expect("addr");

    let mut forged = Vec::new();
    for status in ["603 Decline", "487 Request Terminated", "200 OK"] {
        let real = answer(
            &relayed,
            status,
            "mallory",
            "Contact: <sip:mallory@127.0.0.2>\r\n",
        );
        forged.push(("127.0.0.2", real.clone()));
        forged.push(("127.0.0.3", real.clone()));
        for guess in guessed_branches(&branch) {
            forged.push(("127.0.0.2", with_top_branch(&real, &guess)));
            // From the callee's own address: only the MAC stops these.
            forged.push(("127.0.0.1", with_top_branch(&real, &guess)));
        }
    }
    // A BYE-like junk: a request with the INVITE's branch from elsewhere.
    forged.push((
        "127.0.0.2",
        format!(
            "BYE sip:alice@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5060;branch={branch}\r\n{}CSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            ["From", "To", "Call-ID"]
                .iter()
                .filter_map(|h| Some(format!("{h}: {}\r\n", header_of(&relayed, h)?)))
                .collect::<String>()
        ),
    ));
    send_from(&wisp, &forged);
    eprintln!("{} forged messages sent", forged.len());
    let at_caller = drain(&caller, QUIET);
    let at_callee = drain(&callee, Duration::from_millis(100));
    assert!(
        at_caller.iter().all(|m| m.starts_with("SIP/2.0 1")),
        "the caller saw a forged message: {at_caller:?}"
    );
    assert!(
        at_callee.is_empty(),
        "the callee got something for the forgeries (an ACK?): {at_callee:?}"
    );

    // The real answer goes through.
    let rr: String = headers_of(&relayed, "Record-Route")
        .iter()
        .map(|v| format!("Record-Route: {v}\r\n"))
        .collect();
    let ok = answer(
        &relayed,
        "200 OK",
        "callee",
        &format!("{rr}Contact: <sip:bob@{callee_addr}>\r\n"),
    );
    callee.send_to(ok.as_bytes(), wisp.addr()).expect("send");
    let ok = final_response(&caller, WAIT).expect("the caller gets the 200");
    assert_eq!(status(&ok), 200, "{ok}");
    assert!(ok.contains("tag=callee"), "{ok}");
    let routes = route_set(&ok);
    for (method, cseq) in [("ACK", 1), ("BYE", 2)] {
        Req::new(method, &format!("sip:bob@{callee_addr}"))
            .from("sip:alice@127.0.0.1")
            .call_id(&invite.call_id)
            .with_to_tag("callee")
            .cseq(cseq)
            .headers(&format!("Max-Forwards: 70\r\n{routes}"))
            .send(&caller, wisp.addr());
        let got = wait_for(&callee, WAIT, |m| m.starts_with(method))
            .unwrap_or_else(|| panic!("the callee gets the {method}"));
        if method == "BYE" {
            callee
                .send_to(answer(&got, "200 OK", "callee", "").as_bytes(), wisp.addr())
                .expect("send");
            let bye_ok = final_response(&caller, WAIT).expect("BYE answered");
            assert_eq!(status(&bye_ok), 200, "{bye_ok}");
        }
    }
}

/// While a call rings, an attacker on 127.0.0.2 who saw wisp's branch
/// sends responses with that branch and the caller's Via below it (the
/// Via stack copied), but for another method (CSeq BYE, CANCEL, OPTIONS):
/// they belong to no transaction, and the branch's MAC verifies against
/// the Via below. They must still not reach the caller: the branch names a
/// transaction alive in wisp whose request went to another address.
#[test]
fn forged_responses_for_another_method_are_not_relayed() {
    let call = ringing_call();
    let mut forged = Vec::new();
    for (status, method) in [
        ("200 OK", "BYE"),
        ("200 OK", "CANCEL"),
        ("487 Request Terminated", "OPTIONS"),
    ] {
        let message = answer(&call.relayed, status, "mallory", "")
            .replace("CSeq: 1 INVITE", &format!("CSeq: 1 {method}"));
        forged.push(("127.0.0.2", message));
    }
    send_from(&call.wisp, &forged);
    let at_caller = drain(&call.caller, QUIET);
    eprintln!(
        "responses for another method with the live branch {}: the caller got {:?}",
        call.branch,
        at_caller.iter().map(|m| first_line(m)).collect::<Vec<_>>()
    );
    assert!(
        at_caller.is_empty(),
        "forged responses from 127.0.0.2 reached the caller: {at_caller:?}"
    );
    let _ = &call.invite;
}

/// Stray responses (no transaction) whose Via below wisp's names
/// `SIP/2.0/TCP 127.0.0.1:<a listener of the test>`: with a made-up
/// branch of wisp's form, with the real branch of a relayed request (the
/// Via below changed, so its MAC does not verify), and with the real
/// branch from another address. wisp never connects to the listener.
#[test]
fn stray_responses_make_wisp_connect_nowhere() {
    let wisp = WispBuilder::new()
        .routing(Routing::Rust)
        .start()
        .expect("wisp starts");
    let victim = TcpListener::bind("127.0.0.1:0").expect("listener");
    victim.set_nonblocking(true).expect("nonblocking");
    let victim_port = victim.local_addr().expect("addr").port();

    // A real relayed request, to learn a real branch.
    let peer = SilentPeer::start().expect("peer");
    let sender = socket_on("127.0.0.1");
    let options =
        Req::new("OPTIONS", &format!("sip:bob@{}", peer.addr())).from("sip:alice@127.0.0.1");
    options.send(&sender, wisp.addr());
    let relayed = peer.wait_for(&options.call_id, WAIT).expect("relayed");
    let real = top_branch(&relayed);

    let me = wisp.addr();
    let stray = |branch: &str, method: &str| {
        format!(
            "SIP/2.0 200 OK\r\n\
             Via: SIP/2.0/UDP {me};branch={branch};rport\r\n\
             Via: SIP/2.0/TCP 127.0.0.1:{victim_port};branch=z9hG4bKvictim\r\n\
             From: <sip:a@127.0.0.1>;tag=1\r\n\
             To: <sip:b@127.0.0.1>;tag=2\r\n\
             Call-ID: stray-{victim_port}\r\n\
             CSeq: 1 {method}\r\n\
             Content-Length: 0\r\n\r\n"
        )
    };
    let mut strays = vec![
        ("127.0.0.1", stray(&real, "INVITE")),
        ("127.0.0.2", stray(&real, "OPTIONS")),
        (
            "127.0.0.1",
            stray("z9hG4bKwsp0-1.00000000.0123456789abcdef", "INVITE"),
        ),
        (
            "127.0.0.2",
            stray("z9hG4bKwsp1-7.deadbeef.fedcba9876543210", "INVITE"),
        ),
        ("127.0.0.1", stray("z9hG4bKsomeoneelse", "INVITE")),
    ];
    for guess in guessed_branches(&real) {
        strays.push(("127.0.0.1", stray(&guess, "OPTIONS")));
    }
    for (ip, message) in &strays {
        socket_on(ip)
            .send_to(message.as_bytes(), wisp.addr())
            .expect("send");
        std::thread::sleep(Duration::from_millis(30));
    }
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        if let Ok((_, from)) = victim.accept() {
            panic!("wisp connected to the address in a stray response's Via (from {from})");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Still serving.
    let caller = socket_on("127.0.0.1");
    Req::new("OPTIONS", &format!("sip:{me}")).send(&caller, me);
    let ok = final_response(&caller, WAIT).expect("OPTIONS answered");
    assert_eq!(status(&ok), 200, "{ok}");
    eprintln!("{} stray responses, no connection", strays.len());
}

// ---------------------------------------------------------------------
// 3. The default routing and untrusted sources
// ---------------------------------------------------------------------

/// From 127.0.0.2 (untrusted), the bundled routing without WITH_AUTH:
/// an INVITE to a foreign domain gets 403 Not relaying; in-dialog
/// requests whose Route names wisp without a valid `ri` (none, forged,
/// or another call's) get 403; unmatched ACK and CANCEL get no answer;
/// nothing reaches the foreign destination. From 127.0.0.1 (trusted) the
/// same INVITE is relayed. A real in-dialog request whose Route wisp
/// record-routed for its call is relayed from 127.0.0.2.
fn check_untrusted_sources_are_no_relay(routing: Routing) {
    let wisp = WispBuilder::new()
        .routing(routing)
        .start()
        .expect("wisp starts");
    let me = wisp.addr();
    let foreign = SilentPeer::start().expect("foreign peer");
    let target = format!("sip:bob@{}", foreign.addr());
    let attacker = socket_on("127.0.0.2");

    let invite = Req::new("INVITE", &target);
    invite.send(&attacker, me);
    let reply = final_response(&attacker, WAIT).expect("answered");
    assert_eq!(first_line(&reply), "SIP/2.0 403 Not relaying", "{reply}");

    // In-dialog, Route naming wisp: no ri, a forged ri, a bare Route.
    for route in [
        format!("<sip:{me};lr>"),
        format!("<sip:{me};lr;ri=0123456789abcdef>"),
        format!("<sip:{me};lr;ri=>"),
    ] {
        for method in ["BYE", "INVITE", "INFO"] {
            let req = Req::new(method, &target)
                .with_to_tag("dialog")
                .headers(&format!("Max-Forwards: 70\r\nRoute: {route}\r\n"));
            req.send(&attacker, me);
            let reply = final_response(&attacker, WAIT).expect("answered");
            assert_eq!(
                status(&reply),
                403,
                "{method} with Route {route}: {}",
                first_line(&reply)
            );
        }
    }
    // Unmatched ACK and CANCEL: dropped.
    let silent = [
        Req::new("ACK", &target),
        Req::new("ACK", &target).with_to_tag("dialog"),
        Req::new("ACK", &target)
            .with_to_tag("dialog")
            .headers(&format!("Max-Forwards: 70\r\nRoute: <sip:{me};lr>\r\n")),
        Req::new("CANCEL", &target),
        Req::new("CANCEL", &target)
            .headers(&format!("Max-Forwards: 70\r\nRoute: <sip:{me};lr>\r\n")),
    ];
    for req in &silent {
        req.send(&attacker, me);
        let got = drain(&attacker, Duration::from_millis(500));
        assert!(
            got.is_empty(),
            "{} got {:?}",
            req.method,
            got.iter().map(|m| first_line(m)).collect::<Vec<_>>()
        );
    }
    // An unmatched CANCEL from a trusted source is dropped too.
    let trusted = socket_on("127.0.0.1");
    Req::new("CANCEL", &target).send(&trusted, me);
    std::thread::sleep(QUIET);
    assert!(
        foreign.received().is_empty(),
        "relayed for an untrusted source: {:?}",
        foreign
            .received()
            .iter()
            .map(|m| first_line(m).to_owned())
            .collect::<Vec<_>>()
    );

    // Trusted: the same INVITE is relayed.
    let invite = Req::new("INVITE", &target);
    invite.send(&trusted, me);
    foreign
        .wait_for(&invite.call_id, WAIT)
        .expect("relayed for a trusted source");

    // A call from 127.0.0.2 to carol, registered from 127.0.0.1 on a
    // socket of the test: the callee sees wisp's Record-Route with ri.
    let carol = socket_on("127.0.0.1");
    let carol_addr = carol.local_addr().expect("addr");
    let mut registrar = Ua::new(me);
    let ok = registrar.register(
        &format!("sip:carol@{me}"),
        &format!("Contact: <sip:carol@{carol_addr}>\r\n"),
    );
    assert_eq!(status(&ok), 200, "{ok}");
    let call = Req::new("INVITE", &format!("sip:carol@{me}")).from("sip:mallory@127.0.0.2");
    call.send(&attacker, me);
    let relayed = wait_for(&carol, WAIT, |m| m.starts_with("INVITE ")).expect("call relayed");
    let rr = headers_of(&relayed, "Record-Route");
    assert!(
        rr.iter().any(|r| r.contains(";ri=")),
        "Record-Route without ri: {rr:?}"
    );
    let rr_lines: String = rr
        .iter()
        .map(|v| format!("Record-Route: {v}\r\n"))
        .collect();
    carol
        .send_to(
            answer(
                &relayed,
                "200 OK",
                "carol",
                &format!("{rr_lines}Contact: <sip:carol@{carol_addr}>\r\n"),
            )
            .as_bytes(),
            me,
        )
        .expect("send");
    let ok = final_response(&attacker, WAIT).expect("200 at the caller");
    assert_eq!(status(&ok), 200, "{ok}");
    let routes = route_set(&ok);
    let in_dialog = |call_id: &str, method: &str, cseq: u32| {
        Req::new(method, &format!("sip:carol@{carol_addr}"))
            .from("sip:mallory@127.0.0.2")
            .to(&format!("sip:carol@{me}"))
            .call_id(call_id)
            .with_to_tag("carol")
            .cseq(cseq)
            .headers(&format!("Max-Forwards: 70\r\n{routes}"))
    };
    // The route of this call, on another Call-ID: refused.
    in_dialog(&unique("other"), "BYE", 2).send(&attacker, me);
    let reply = final_response(&attacker, WAIT).expect("answered");
    assert_eq!(status(&reply), 403, "another call's ri: {reply}");
    // The call's own ACK and BYE: relayed.
    in_dialog(&call.call_id, "ACK", 1).send(&attacker, me);
    wait_for(&carol, WAIT, |m| m.starts_with("ACK ")).expect("ACK relayed");
    in_dialog(&call.call_id, "BYE", 2).send(&attacker, me);
    let bye = wait_for(&carol, WAIT, |m| m.starts_with("BYE ")).expect("BYE relayed");
    carol
        .send_to(answer(&bye, "200 OK", "carol", "").as_bytes(), me)
        .expect("send");
    let reply = final_response(&attacker, WAIT).expect("BYE answered");
    assert_eq!(status(&reply), 200, "{reply}");
}

#[test]
fn untrusted_sources_are_no_relay() {
    check_untrusted_sources_are_no_relay(Routing::Rust);
}

#[test]
fn untrusted_sources_are_no_relay_js() {
    check_untrusted_sources_are_no_relay(Routing::Js);
}

/// With WITH_AUTH, an in-dialog request from 127.0.0.2 whose Route names
/// wisp without a valid ri is challenged (407) when it claims a local
/// user and refused (403) otherwise; nothing is relayed.
fn check_with_auth_a_forged_route_is_challenged(routing: Routing) {
    let wisp = WispBuilder::new()
        .routing(routing)
        .param("WITH_AUTH", "yes")
        .subscriber("alice@127.0.0.1", "wonderland")
        .start()
        .expect("wisp starts");
    let me = wisp.addr();
    let foreign = SilentPeer::start().expect("foreign peer");
    let target = format!("sip:bob@{}", foreign.addr());
    let attacker = socket_on("127.0.0.2");
    for (from, expected) in [
        (format!("sip:alice@{me}"), [407, 407]),
        ("sip:mallory@198.51.100.7".to_owned(), [403, 403]),
    ] {
        for (route, want) in [
            (format!("<sip:{me};lr>"), expected[0]),
            (format!("<sip:{me};lr;ri=0123456789abcdef>"), expected[1]),
        ] {
            Req::new("BYE", &target)
                .from(&from)
                .with_to_tag("dialog")
                .headers(&format!("Max-Forwards: 70\r\nRoute: {route}\r\n"))
                .send(&attacker, me);
            let reply = final_response(&attacker, WAIT).expect("answered");
            eprintln!(
                "WITH_AUTH, BYE from {from} with Route {route}: {}",
                first_line(&reply)
            );
            assert!(
                [403, 407].contains(&status(&reply)),
                "{}",
                first_line(&reply)
            );
            assert_eq!(status(&reply), want, "from {from}: {}", first_line(&reply));
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(foreign.received().is_empty(), "{:?}", foreign.received());
}

#[test]
fn with_auth_a_forged_route_is_challenged() {
    check_with_auth_a_forged_route_is_challenged(Routing::Rust);
}

#[test]
fn with_auth_a_forged_route_is_challenged_js() {
    check_with_auth_a_forged_route_is_challenged(Routing::Js);
}

/// SIPp from 127.0.0.2 calls bob, registered from 127.0.0.1 at a SIPp
/// callee: the call is set up and its ACK and BYE, sent along wisp's
/// Record-Route (whose ri verifies), are relayed for the untrusted caller.
#[test]
fn a_call_from_an_untrusted_source_ends_with_its_bye() {
    let wisp = WispBuilder::new()
        .routing(Routing::Rust)
        .start()
        .expect("wisp starts");
    let bob_port = free_port();
    let callee = Sipp::uas(scenario("uas.xml"), Transport::Udp, bob_port, 1)
        .spawn()
        .expect("callee starts");
    let mut registrar = Ua::new(wisp.addr());
    let ok = registrar.register(
        &format!("sip:bob@{}", wisp.addr()),
        &format!("Contact: <sip:bob@127.0.0.1:{bob_port}>\r\n"),
    );
    assert_eq!(status(&ok), 200, "{ok}");
    std::thread::sleep(Duration::from_millis(300));
    let mut caller = Sipp::uac(
        scenario("uac.xml"),
        Transport::Udp,
        wisp.addr(),
        wisp.addr(),
        1,
    );
    // The later -i wins over the harness's 127.0.0.1.
    caller.extra = ["-s", "bob", "-i", "127.0.0.2"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    caller.timeout = Duration::from_secs(30);
    let outcome = caller.run().expect("caller runs");
    assert_all_successful("call from 127.0.0.2", &outcome, 1);
    let callee = callee.wait().expect("callee ends");
    assert_all_successful("callee of 127.0.0.2", &callee, 1);
}

// ---------------------------------------------------------------------
// 4. Amplification
// ---------------------------------------------------------------------

/// An AOR with as many bindings as the registrar takes (registered from
/// 127.0.0.1, ten Contacts a REGISTER, up to 200), queried by a REGISTER
/// without Contact from 127.0.0.2: the answer is at most 4 times the size
/// of the query. An INVITE the routing refuses (403 to a foreign domain,
/// 404 to an unknown user) from 127.0.0.2 is answered exactly once: no
/// retransmission within 5 s, and no more bytes than a few times the
/// request.
fn check_unauthenticated_requests_get_little_back(routing: Routing) {
    let wisp = WispBuilder::new()
        .routing(routing)
        .start()
        .expect("wisp starts");
    let me = wisp.addr();
    let aor = format!("sip:popular@{me}");
    let mut registrar = Ua::new(me);
    let mut bindings = 0;
    'register: for batch in 0..20 {
        let contacts: String = (0..10)
            .map(|i| {
                let n = batch * 10 + i;
                format!(
                    "Contact: <sip:popular-{n}@198.51.100.{}:5060;transport=udp;line=0123456789abcdef0123456789abcdef>;expires=3600\r\n",
                    n % 250 + 1
                )
            })
            .collect();
        let reply = registrar.register(&aor, &contacts);
        match status(&reply) {
            200 => bindings = headers_of(&reply, "Contact").len(),
            _ => {
                eprintln!(
                    "registrar refused more bindings after {bindings}: {}",
                    first_line(&reply)
                );
                break 'register;
            }
        }
    }
    assert!(bindings > 0, "no binding registered");

    let attacker = socket_on("127.0.0.2");
    let query = Req::new("REGISTER", &format!("sip:{me}"))
        .from(&aor)
        .to(&aor)
        .text(&attacker)
        .replace(
            &format!(
                "Contact: <sip:ua@{}>\r\n",
                attacker.local_addr().expect("addr")
            ),
            "",
        );
    attacker.send_to(query.as_bytes(), me).expect("send");
    let reply = final_response(&attacker, WAIT).expect("the query is answered");
    let factor = reply.len() as f64 / query.len() as f64;
    eprintln!(
        "REGISTER query for an AOR with {bindings} bindings: {} bytes in, {} bytes out ({} Contacts): factor {factor:.2}",
        query.len(),
        reply.len(),
        headers_of(&reply, "Contact").len()
    );
    assert!(
        factor <= 4.0,
        "a {}-byte query got {} bytes back ({}): {reply}",
        query.len(),
        reply.len(),
        first_line(&reply)
    );

    for (uri, code) in [
        ("sip:bob@192.0.2.1".to_owned(), 403),
        (format!("sip:nobody@{me}"), 404),
    ] {
        let invite = Req::new("INVITE", &uri);
        let sent = invite.text(&attacker);
        attacker.send_to(sent.as_bytes(), me).expect("send");
        let got = drain(&attacker, Duration::from_secs(5));
        let finals: Vec<&String> = got.iter().filter(|m| status(m) >= 200).collect();
        let bytes: usize = got.iter().map(String::len).sum();
        eprintln!(
            "refused INVITE to {uri}: {} bytes in, {} messages back ({:?}), {bytes} bytes: factor {:.2}",
            sent.len(),
            got.len(),
            got.iter().map(|m| first_line(m)).collect::<Vec<_>>(),
            bytes as f64 / sent.len() as f64
        );
        assert_eq!(finals.len(), 1, "answered {} times", finals.len());
        assert_eq!(status(finals[0]), code, "{}", finals[0]);
        assert!(
            bytes as f64 <= 4.0 * sent.len() as f64,
            "{bytes} bytes back for {}",
            sent.len()
        );
    }
}

#[test]
fn unauthenticated_requests_get_little_back() {
    check_unauthenticated_requests_get_little_back(Routing::Rust);
}

#[test]
fn unauthenticated_requests_get_little_back_js() {
    check_unauthenticated_requests_get_little_back(Routing::Js);
}
