//! OPTIONS probes of the destinations (`ds_ping_interval`): a thread and
//! a UDP socket of the dispatcher's own, apart from the proxy's
//! transactions. Every probed destination of a tenant gets an OPTIONS each
//! `probe_interval_ms`; an answer of any status within
//! `probe_timeout_ms` means it is alive, silence counts one failure.
//!
//! Answers are hostile input: one counts only if it parses, comes from
//! the address probed and carries the probe's random Call-ID.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::Weak;
use std::time::{Duration, Instant};

use super::{Inner, State};
use crate::sip::{Host, Scheme, Uri};

/// How often the thread looks at answers, timeouts and due rounds: the
/// precision of the interval and the timeout.
const TICK: Duration = Duration::from_millis(20);
/// Probes awaiting an answer at most: past it a round is skipped.
const MAX_PENDING: usize = 8192;

/// A probe sent, awaiting its answer.
struct Pending {
    tenant: String,
    set: u32,
    uri: String,
    to: SocketAddr,
    deadline: Instant,
}

pub(super) fn start(inner: Weak<Inner>) -> std::io::Result<()> {
    let v4 = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    v4.set_nonblocking(true)?;
    // IPv6 when the host has it; probes to IPv6 destinations fail without.
    let v6 = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0))
        .and_then(|s| s.set_nonblocking(true).map(|()| s))
        .ok();
    std::thread::Builder::new()
        .name("wisp-dispatcher".into())
        .spawn(move || Prober::new(v4, v6).run(&inner))?;
    Ok(())
}

struct Prober {
    v4: UdpSocket,
    v6: Option<UdpSocket>,
    pending: HashMap<String, Pending>,
    /// When each tenant's next round is due.
    rounds: HashMap<String, Instant>,
    sent: u64,
    buf: Vec<u8>,
}

impl Prober {
    fn new(v4: UdpSocket, v6: Option<UdpSocket>) -> Prober {
        Prober {
            v4,
            v6,
            pending: HashMap::new(),
            rounds: HashMap::new(),
            sent: 0,
            buf: vec![0; 65_536],
        }
    }

    fn run(mut self, inner: &Weak<Inner>) {
        loop {
            // The services are gone: so are the probes.
            let Some(inner) = inner.upgrade() else {
                return;
            };
            self.read_answers(&inner);
            let now = Instant::now();
            self.expire(&inner, now);
            self.send_rounds(&inner, now);
            drop(inner);
            std::thread::sleep(TICK);
        }
    }

    fn read_answers(&mut self, inner: &Inner) {
        for v6 in [false, true] {
            loop {
                let socket = if v6 { self.v6.as_ref() } else { Some(&self.v4) };
                let Some(socket) = socket else { break };
                let (n, from) = match socket.recv_from(&mut self.buf) {
                    Ok(got) => got,
                    Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => break,
                    // An ICMP unreachable of an earlier probe, say: the
                    // probe's timeout counts it.
                    Err(_) => continue,
                };
                let Some(call_id) = answer_call_id(&self.buf[..n]) else {
                    continue;
                };
                if self
                    .pending
                    .get(&call_id)
                    .is_some_and(|p| same_peer(p.to, from))
                {
                    if let Some(p) = self.pending.remove(&call_id) {
                        inner.answered(&p.tenant, p.set, &p.uri);
                    }
                }
            }
        }
    }

    fn expire(&mut self, inner: &Inner, now: Instant) {
        let late: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in late {
            if let Some(p) = self.pending.remove(&key) {
                inner.unanswered(&p.tenant, p.set, &p.uri);
            }
        }
    }

    fn send_rounds(&mut self, inner: &Inner, now: Instant) {
        let tenants = inner.snapshot();
        self.rounds
            .retain(|name, _| tenants.iter().any(|(n, _)| n == name));
        for (name, sets) in tenants {
            let config = &sets.config;
            if !config.probes() {
                continue;
            }
            let due = self.rounds.entry(name.clone()).or_insert(now);
            if *due > now {
                continue;
            }
            let interval = Duration::from_millis(config.probe_interval_ms);
            *due = now + interval;
            let timeout = Duration::from_millis(config.probe_timeout_ms).min(interval);
            for set in sets.sets.values() {
                for dest in &set.dests {
                    if !dest.probe || dest.state() == State::Disabled {
                        continue;
                    }
                    // One probe of a destination at a time.
                    if self
                        .pending
                        .values()
                        .any(|p| p.tenant == name && p.set == set.id && p.uri == dest.uri)
                    {
                        continue;
                    }
                    if self.pending.len() >= MAX_PENDING {
                        tracing::warn!(target: "wisp::dispatcher", "too many probes awaiting an answer; round skipped");
                        return;
                    }
                    let Some(to) = udp_target(&dest.uri) else {
                        continue;
                    };
                    self.sent += 1;
                    let call_id = format!("{}-{}@wisp.dispatcher", random_hex(), self.sent);
                    if self.send(to, &dest.uri, &config.probe_from, &call_id) {
                        self.pending.insert(
                            call_id,
                            Pending {
                                tenant: name.clone(),
                                set: set.id,
                                uri: dest.uri.clone(),
                                to,
                                deadline: now + timeout,
                            },
                        );
                    } else {
                        // Cannot even be sent (no route): a failure now.
                        inner.unanswered(&name, set.id, &dest.uri);
                    }
                }
            }
        }
    }

    fn send(&self, to: SocketAddr, uri: &str, from: &str, call_id: &str) -> bool {
        let socket = match to {
            SocketAddr::V4(_) => &self.v4,
            SocketAddr::V6(_) => match &self.v6 {
                Some(s) => s,
                None => return false,
            },
        };
        let Ok(port) = socket.local_addr().map(|a| a.port()) else {
            return false;
        };
        let Some(ip) = local_ip_towards(to) else {
            return false;
        };
        let sent_by = SocketAddr::new(ip, port);
        let tag = random_hex();
        let msg = format!(
            "OPTIONS {uri} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {sent_by};branch=z9hG4bK{tag}ds;rport\r\n\
             Max-Forwards: 70\r\n\
             From: <{from}>;tag={tag}\r\n\
             To: <{uri}>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: 1 OPTIONS\r\n\
             Content-Length: 0\r\n\r\n"
        );
        socket.send_to(msg.as_bytes(), to).is_ok()
    }
}

/// The Call-ID of a datagram that parses as a SIP response.
fn answer_call_id(data: &[u8]) -> Option<String> {
    let msg = crate::sip::parse(bytes::Bytes::copy_from_slice(data)).ok()?;
    msg.status()?;
    msg.call_id().map(str::to_owned)
}

/// Whether an answer came from the address probed (an IPv4 address may
/// come back mapped into IPv6).
fn same_peer(probed: SocketAddr, from: SocketAddr) -> bool {
    let canon = |a: SocketAddr| match a.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a.ip(), IpAddr::V4),
        v4 => v4,
    };
    canon(probed) == canon(from) && probed.port() == from.port()
}

/// Where a UDP probe of `uri` goes; none for destinations not reached
/// over UDP (sips, another transport) and names that do not resolve.
/// Names are resolved by the system (A/AAAA), on this thread.
fn udp_target(uri: &str) -> Option<SocketAddr> {
    let uri = Uri::parse(uri).ok()?;
    if uri.scheme != Scheme::Sip
        || uri
            .transport()
            .is_some_and(|t| !t.eq_ignore_ascii_case("udp"))
    {
        return None;
    }
    let port = uri.port.unwrap_or(5060);
    match &uri.host {
        Host::V4(ip) => Some(SocketAddr::from((*ip, port))),
        Host::V6(ip) => Some(SocketAddr::from((*ip, port))),
        Host::Name(name) => (name.as_str(), port).to_socket_addrs().ok()?.next(),
    }
}

/// The local address the system would send to `to` from: what the Via
/// names, so that the answer comes back (no packet is sent).
fn local_ip_towards(to: SocketAddr) -> Option<IpAddr> {
    let unspecified: IpAddr = match to {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let probe = UdpSocket::bind((unspecified, 0)).ok()?;
    probe.connect(to).ok()?;
    probe.local_addr().ok().map(|a| a.ip())
}

fn random_hex() -> String {
    let mut bytes = [0u8; 8];
    crate::random::fill(&mut bytes);
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_udp_destinations_are_probed() {
        assert_eq!(
            udp_target("sip:127.0.0.1:5080"),
            "127.0.0.1:5080".parse().ok()
        );
        assert_eq!(udp_target("sip:[::1]"), "[::1]:5060".parse().ok());
        assert_eq!(
            udp_target("sip:127.0.0.1;transport=UDP"),
            "127.0.0.1:5060".parse().ok()
        );
        assert_eq!(udp_target("sip:127.0.0.1;transport=tcp"), None);
        assert_eq!(udp_target("sips:127.0.0.1"), None);
    }

    #[test]
    fn answers_count_only_from_the_address_probed() {
        let a: SocketAddr = "127.0.0.1:5080".parse().expect("addr");
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:5080".parse().expect("addr");
        assert!(same_peer(a, a));
        assert!(same_peer(a, mapped));
        assert!(!same_peer(a, "127.0.0.1:5081".parse().expect("addr")));
        let answer = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bKx\r\n\
            From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: abc@wisp.dispatcher\r\n\
            CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            answer_call_id(answer).as_deref(),
            Some("abc@wisp.dispatcher")
        );
        assert_eq!(answer_call_id(b"OPTIONS sip:x SIP/2.0\r\n\r\n"), None);
        assert_eq!(answer_call_id(b"\xff\x00garbage"), None);
    }
}
