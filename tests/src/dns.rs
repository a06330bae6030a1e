//! DNS on loopback for tests: [`DnsServer`] answers from a zone written in
//! code (A, AAAA, SRV, NAPTR) over UDP and TCP; [`SilentDns`] reads
//! queries and never answers. Point wisp's `[dns] servers` at either.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, NAPTR, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record};

/// How often the server threads look at their stop flag.
const POLL: Duration = Duration::from_millis(20);

/// Records to serve, built in code. Names are absolute ("example.test"
/// means "example.test."); the owner of every record is its own zone, so
/// any name at or below a record's owner exists (RFC 8020) and the rest
/// are NXDOMAIN.
#[derive(Debug, Clone)]
pub struct Zone {
    records: Vec<Record>,
    ttl: u32,
}

impl Default for Zone {
    fn default() -> Self {
        Zone::new()
    }
}

fn name(text: &str) -> Name {
    let mut name = Name::from_ascii(text).unwrap_or_else(|e| panic!("bad DNS name {text:?}: {e}"));
    name.set_fqdn(true);
    name
}

impl Zone {
    /// An empty zone; records get a TTL of 60 s unless [`Zone::ttl`] says.
    pub fn new() -> Zone {
        Zone {
            records: Vec::new(),
            ttl: 60,
        }
    }

    /// The TTL of the records added after this call.
    pub fn ttl(mut self, ttl: u32) -> Zone {
        self.ttl = ttl;
        self
    }

    fn add(mut self, owner: &str, data: RData) -> Zone {
        self.records
            .push(Record::from_rdata(name(owner), self.ttl, data));
        self
    }

    pub fn a(self, owner: &str, ip: Ipv4Addr) -> Zone {
        self.add(owner, RData::A(A(ip)))
    }

    pub fn aaaa(self, owner: &str, ip: Ipv6Addr) -> Zone {
        self.add(owner, RData::AAAA(AAAA(ip)))
    }

    pub fn srv(self, owner: &str, priority: u16, weight: u16, port: u16, target: &str) -> Zone {
        self.add(
            owner,
            RData::SRV(SRV::new(priority, weight, port, name(target))),
        )
    }

    /// A NAPTR with an empty regexp (as RFC 3263 uses them).
    pub fn naptr(
        self,
        owner: &str,
        order: u16,
        preference: u16,
        flags: &str,
        services: &str,
        replacement: &str,
    ) -> Zone {
        let data = NAPTR::new(
            order,
            preference,
            flags.as_bytes().into(),
            services.as_bytes().into(),
            Box::default(),
            name(replacement),
        );
        self.add(owner, RData::NAPTR(data))
    }

    /// The response to one query message, or None for garbage. Answers
    /// are authoritative; negative ones carry an SOA whose minimum is the
    /// zone's TTL, so resolvers cache them too.
    fn respond(&self, request: &[u8]) -> Option<Message> {
        let request = Message::from_vec(request).ok()?;
        if request.metadata.message_type != MessageType::Query {
            return None;
        }
        let id = request.metadata.id;
        let mut response = Message::response(id, request.metadata.op_code);
        response.metadata.authoritative = true;
        response.metadata.recursion_desired = request.metadata.recursion_desired;
        response.metadata.recursion_available = true;
        if let Some(asked) = &request.edns {
            // Answer in the size the client said it takes.
            let mut edns = Edns::new();
            edns.set_max_payload(asked.max_payload().max(512));
            response.edns = Some(edns);
        }
        let query = match (request.metadata.op_code, request.queries.as_slice()) {
            (OpCode::Query, [query]) => query.clone(),
            _ => {
                response.metadata.response_code = ResponseCode::FormErr;
                return Some(response);
            }
        };
        response.add_query(query.clone());
        let asked = query.name();
        let answers: Vec<Record> = self
            .records
            .iter()
            .filter(|r| &r.name == asked && r.record_type() == query.query_type())
            .map(|r| {
                // Echo the name as asked (case and all).
                let mut r = r.clone();
                r.name = asked.clone();
                r
            })
            .collect();
        if answers.is_empty() {
            if !self.records.iter().any(|r| asked.zone_of(&r.name)) {
                response.metadata.response_code = ResponseCode::NXDomain;
            }
            response.add_authority(self.soa(&query));
        } else {
            response.add_answers(answers);
        }
        Some(response)
    }

    fn soa(&self, query: &Query) -> Record {
        let zone = query.name().base_name();
        let soa = SOA::new(
            name("ns.test"),
            name("hostmaster.test"),
            1,
            3600,
            600,
            86400,
            self.ttl,
        );
        Record::from_rdata(zone, self.ttl, RData::SOA(soa))
    }
}

/// A query as the server saw it: the name (lower case, no trailing dot) and
/// the record type ("A", "SRV", ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked {
    pub name: String,
    pub record_type: String,
}

impl Asked {
    fn new(query: &Query) -> Asked {
        Asked {
            name: query
                .name()
                .to_ascii()
                .trim_end_matches('.')
                .to_ascii_lowercase(),
            record_type: query.query_type().to_string(),
        }
    }
}

/// An authoritative DNS server for one [`Zone`] on 127.0.0.1, UDP and TCP
/// on the same port; stopped when dropped.
pub struct DnsServer {
    addr: SocketAddr,
    asked: Arc<Mutex<Vec<Asked>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl DnsServer {
    pub fn start(zone: Zone) -> Result<DnsServer> {
        let (udp, tcp) = bind_pair()?;
        let addr = udp.local_addr()?;
        udp.set_read_timeout(Some(POLL))?;
        tcp.set_nonblocking(true)?;
        let zone = Arc::new(zone);
        let asked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let serve = Serve {
            zone,
            asked: asked.clone(),
            stop: stop.clone(),
        };
        let on_tcp = serve.clone();
        let threads = vec![
            std::thread::Builder::new()
                .name("dns-udp".into())
                .spawn(move || serve.udp(udp))?,
            std::thread::Builder::new()
                .name("dns-tcp".into())
                .spawn(move || on_tcp.tcp(tcp))?,
        ];
        Ok(DnsServer {
            addr,
            asked,
            stop,
            threads,
        })
    }

    /// Where it listens (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every query received so far, in order (retransmissions included).
    pub fn asked(&self) -> Vec<Asked> {
        self.asked.lock().map(|a| a.clone()).unwrap_or_default()
    }

    /// How many queries were received so far.
    pub fn queries(&self) -> usize {
        self.asked.lock().map(|a| a.len()).unwrap_or_default()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// A UDP socket and a TCP listener on the same free loopback port.
fn bind_pair() -> Result<(UdpSocket, TcpListener)> {
    for _ in 0..100 {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).context("bind DNS UDP")?;
        if let Ok(tcp) = TcpListener::bind(udp.local_addr()?) {
            return Ok((udp, tcp));
        }
    }
    bail!("no loopback port free for both UDP and TCP")
}

#[derive(Clone)]
struct Serve {
    zone: Arc<Zone>,
    asked: Arc<Mutex<Vec<Asked>>>,
    stop: Arc<AtomicBool>,
}

impl Serve {
    fn answer(&self, request: &[u8]) -> Option<Message> {
        let response = self.zone.respond(request)?;
        if let (Some(query), Ok(mut asked)) = (response.queries.first(), self.asked.lock()) {
            asked.push(Asked::new(query));
        }
        Some(response)
    }

    fn udp(&self, socket: UdpSocket) {
        let mut buf = vec![0u8; 65535];
        while !self.stop.load(Ordering::Relaxed) {
            let Ok((len, peer)) = socket.recv_from(&mut buf) else {
                continue;
            };
            let Some(response) = self.answer(&buf[..len]) else {
                continue;
            };
            let limit = response
                .edns
                .as_ref()
                .map_or(512, |edns| usize::from(edns.max_payload()));
            let Ok(mut bytes) = response.to_vec() else {
                continue;
            };
            if bytes.len() > limit {
                // Too long for a datagram: TC set, the client asks over TCP.
                match response.truncate().to_vec() {
                    Ok(short) => bytes = short,
                    Err(_) => continue,
                }
            }
            let _ = socket.send_to(&bytes, peer);
        }
    }

    fn tcp(&self, listener: TcpListener) {
        while !self.stop.load(Ordering::Relaxed) {
            match listener.accept() {
                // One connection at a time is plenty for tests.
                Ok((stream, _)) => self.tcp_connection(stream),
                Err(_) => std::thread::sleep(POLL),
            }
        }
    }

    /// RFC 1035 §4.2.2: each message prefixed by its two-byte length.
    fn tcp_connection(&self, mut stream: TcpStream) {
        if stream.set_nonblocking(false).is_err() || stream.set_read_timeout(Some(POLL)).is_err() {
            return;
        }
        let mut idle = Duration::ZERO;
        while !self.stop.load(Ordering::Relaxed) && idle < Duration::from_secs(5) {
            let mut len = [0u8; 2];
            match stream.read_exact(&mut len) {
                Ok(()) => idle = Duration::ZERO,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    idle += POLL;
                    continue;
                }
                Err(_) => return,
            }
            let mut request = vec![0u8; usize::from(u16::from_be_bytes(len))];
            if stream
                .set_read_timeout(Some(Duration::from_secs(2)))
                .is_err()
                || stream.read_exact(&mut request).is_err()
                || stream.set_read_timeout(Some(POLL)).is_err()
            {
                return;
            }
            let Some(bytes) = self.answer(&request).and_then(|r| r.to_vec().ok()) else {
                return;
            };
            let Ok(prefix) = u16::try_from(bytes.len()) else {
                return;
            };
            if stream.write_all(&prefix.to_be_bytes()).is_err() || stream.write_all(&bytes).is_err()
            {
                return;
            }
        }
    }
}

/// A DNS server that reads every query and answers none: a resolver
/// pointed at it can only time out. On 127.0.0.1 UDP; stopped when dropped.
pub struct SilentDns {
    addr: SocketAddr,
    queries: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SilentDns {
    pub fn start() -> Result<SilentDns> {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).context("bind silent DNS")?;
        socket.set_read_timeout(Some(POLL))?;
        let addr = socket.local_addr()?;
        let queries = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, halt) = (queries.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("dns-silent".into())
            .spawn(move || {
                let mut buf = [0u8; 4096];
                while !halt.load(Ordering::Relaxed) {
                    if socket.recv_from(&mut buf).is_ok() {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })?;
        Ok(SilentDns {
            addr,
            queries,
            stop,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Datagrams received so far.
    pub fn queries(&self) -> usize {
        self.queries.load(Ordering::Relaxed)
    }
}

impl Drop for SilentDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
