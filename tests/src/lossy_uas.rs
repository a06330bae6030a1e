//! A callee over UDP that loses packets on purpose (or none, with 0%) and
//! still keeps RFC 3261 server transactions: the peer for loss tests at
//! both ends of a call, and a recorder of the `X-` headers that reached it.
//!
//! SIPp as a UAS stops re-answering retransmitted requests once its
//! scenario moved on, so with `-lost` it fails calls that any RFC UAS
//! would complete. This one answers INVITE with 180 and 200, re-sends the
//! 200 (T1 doubling to T2, §13.3.1.4) until the ACK comes, re-sends its
//! last answer to every retransmitted INVITE or BYE (§17.2), and drops the
//! given share of the datagrams it receives and of those it sends.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);

/// What the callee saw, once stopped.
#[derive(Debug, Default, Clone)]
pub struct UasReport {
    /// Calls (distinct Call-IDs) whose INVITE was answered 200.
    pub answered: usize,
    /// Calls whose 200 was acknowledged.
    pub acked: usize,
    /// Calls whose BYE was answered.
    pub ended: usize,
    /// 200s to INVITE given up on after 64*T1 without an ACK.
    pub unacked_timeouts: usize,
    /// Datagrams dropped on purpose, received and sent.
    pub dropped_in: usize,
    pub dropped_out: usize,
    /// For each INVITE and BYE (first transmission only): the method and
    /// its `X-` headers as (name, value), in order.
    pub stamps: Vec<(String, Vec<(String, String)>)>,
}

/// A running lossy callee; `finish` stops it and reports.
pub struct LossyUas {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<UasReport>>,
}

impl LossyUas {
    /// Listens on a free loopback port, losing `loss_percent` of the
    /// datagrams each way (a fixed seed makes runs comparable).
    pub fn start(loss_percent: u32, seed: u64) -> Result<LossyUas> {
        let socket = UdpSocket::bind("127.0.0.1:0").context("bind lossy uas")?;
        socket.set_read_timeout(Some(Duration::from_millis(20)))?;
        let addr = socket.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut uas = Uas {
            socket,
            addr,
            loss: Loss::new(loss_percent, seed),
            calls: HashMap::new(),
            byes: HashMap::new(),
            report: UasReport::default(),
        };
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                uas.step();
            }
            uas.report
        });
        Ok(LossyUas {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the callee and says what it saw.
    pub fn finish(mut self) -> UasReport {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for LossyUas {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A deterministic coin (xorshift64) deciding which datagrams are lost.
struct Loss {
    percent: u64,
    state: u64,
}

impl Loss {
    fn new(percent: u32, seed: u64) -> Loss {
        Loss {
            percent: u64::from(percent),
            state: seed | 1,
        }
    }

    fn lose(&mut self) -> bool {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state % 100 < self.percent
    }
}

/// An answered INVITE waiting for its ACK.
struct Call {
    peer: SocketAddr,
    ok: Vec<u8>,
    acked: bool,
    /// A BYE came: the ACK no longer matters.
    ended: bool,
    interval: Duration,
    next_retransmit: Instant,
    give_up: Instant,
}

struct Uas {
    socket: UdpSocket,
    addr: SocketAddr,
    loss: Loss,
    calls: HashMap<String, Call>,
    /// The 200 to each call's BYE, re-sent when the BYE is.
    byes: HashMap<String, Vec<u8>>,
    report: UasReport,
}

impl Uas {
    fn step(&mut self) {
        let mut buf = [0u8; 65535];
        if let Ok((len, peer)) = self.socket.recv_from(&mut buf) {
            if self.loss.lose() {
                self.report.dropped_in += 1;
            } else if let Some(request) = Request::parse(&buf[..len]) {
                self.handle(&request, peer);
            }
        }
        self.retransmit_oks();
    }

    fn send(&mut self, bytes: &[u8], peer: SocketAddr) {
        if self.loss.lose() {
            self.report.dropped_out += 1;
        } else {
            let _ = self.socket.send_to(bytes, peer);
        }
    }

    fn handle(&mut self, request: &Request, peer: SocketAddr) {
        let Some(call_id) = request.header("call-id").map(str::to_owned) else {
            return;
        };
        match request.method.as_str() {
            "INVITE" => {
                if let Some(call) = self.calls.get(&call_id) {
                    // A retransmission: the latest answer again.
                    let ok = call.ok.clone();
                    self.send(&ok, peer);
                    return;
                }
                self.report
                    .stamps
                    .push(("INVITE".into(), request.x_headers()));
                let ringing = request.response(180, "Ringing", self.addr);
                self.send(&ringing, peer);
                let ok = request.response(200, "OK", self.addr);
                self.send(&ok, peer);
                let now = Instant::now();
                self.calls.insert(
                    call_id,
                    Call {
                        peer,
                        ok,
                        acked: false,
                        ended: false,
                        interval: T1,
                        next_retransmit: now + T1,
                        give_up: now + 64 * T1,
                    },
                );
                self.report.answered += 1;
            }
            "ACK" => {
                if let Some(call) = self.calls.get_mut(&call_id) {
                    if !call.acked {
                        call.acked = true;
                        self.report.acked += 1;
                    }
                }
            }
            "BYE" => {
                if let Some(call) = self.calls.get_mut(&call_id) {
                    call.ended = true;
                }
                let ok = match self.byes.get(&call_id) {
                    Some(ok) => ok.clone(),
                    None => {
                        self.report.stamps.push(("BYE".into(), request.x_headers()));
                        let ok = request.response(200, "OK", self.addr);
                        self.byes.insert(call_id, ok.clone());
                        self.report.ended += 1;
                        ok
                    }
                };
                self.send(&ok, peer);
            }
            _ => {
                let refusal = request.response(501, "Not Implemented", self.addr);
                self.send(&refusal, peer);
            }
        }
    }

    fn retransmit_oks(&mut self) {
        let now = Instant::now();
        let mut due = Vec::new();
        for call in self.calls.values_mut() {
            if call.acked || call.ended || now < call.next_retransmit {
                continue;
            }
            if now >= call.give_up {
                call.ended = true;
                self.report.unacked_timeouts += 1;
                continue;
            }
            call.interval = (call.interval * 2).min(T2);
            call.next_retransmit = now + call.interval;
            due.push((call.ok.clone(), call.peer));
        }
        for (ok, peer) in due {
            self.send(&ok, peer);
        }
    }
}

/// The parts of a request a UAS answers from.
struct Request {
    method: String,
    headers: Vec<(String, String)>,
}

impl Request {
    fn parse(datagram: &[u8]) -> Option<Request> {
        let text = std::str::from_utf8(datagram).ok()?;
        let head = text.split("\r\n\r\n").next()?;
        let mut lines = head.split("\r\n");
        let method = lines.next()?.split(' ').next()?.to_owned();
        if method == "SIP/2.0" {
            return None; // a response: nothing to answer
        }
        let headers = lines
            .filter_map(|line| {
                let (name, value) = line.split_once(':')?;
                Some((full_name(name.trim()), value.trim().to_owned()))
            })
            .collect();
        Some(Request { method, headers })
    }

    fn x_headers(&self) -> Vec<(String, String)> {
        self.headers
            .iter()
            .filter(|(n, _)| n.starts_with("x-"))
            .cloned()
            .collect()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> {
        self.headers
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// A response by RFC 3261 §8.2.6: Vias, From, Call-ID and CSeq copied,
    /// a To tag added (the same for every answer of the call), and for
    /// INVITE the Record-Route set and a Contact.
    fn response(&self, code: u16, reason: &str, local: SocketAddr) -> Vec<u8> {
        let mut out = format!("SIP/2.0 {code} {reason}\r\n");
        for via in self.all("via") {
            out.push_str(&format!("Via: {via}\r\n"));
        }
        let invite = self.method == "INVITE";
        if invite && code > 100 {
            for rr in self.all("record-route") {
                out.push_str(&format!("Record-Route: {rr}\r\n"));
            }
        }
        out.push_str(&format!("From: {}\r\n", self.header("from").unwrap_or("")));
        let to = self.header("to").unwrap_or("");
        if to.contains(";tag=") {
            out.push_str(&format!("To: {to}\r\n"));
        } else {
            let call_id = self.header("call-id").unwrap_or("");
            let tag = call_id.bytes().fold(0xcbf29ce484222325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
            });
            out.push_str(&format!("To: {to};tag=uas{tag:x}\r\n"));
        }
        out.push_str(&format!(
            "Call-ID: {}\r\n",
            self.header("call-id").unwrap_or("")
        ));
        out.push_str(&format!("CSeq: {}\r\n", self.header("cseq").unwrap_or("")));
        if invite {
            out.push_str(&format!("Contact: <sip:uas@{local}>\r\n"));
        }
        out.push_str("Content-Length: 0\r\n\r\n");
        out.into_bytes()
    }
}

/// Header names in lower case, compact forms expanded.
fn full_name(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    match lower.as_str() {
        "v" => "via".into(),
        "f" => "from".into(),
        "t" => "to".into(),
        "i" => "call-id".into(),
        "m" => "contact".into(),
        _ => lower,
    }
}
