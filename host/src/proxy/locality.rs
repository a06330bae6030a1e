//! "Is this me?": the addresses and names this proxy answers to
//! (Kamailio's `myself`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Mutex;

use crate::sip::{write, Host, Scheme, Uri};
use crate::transport::Listener;

/// Answers cached per IP are bounded, since the IPs come from the network.
const CACHE_LIMIT: usize = 4096;

pub struct Locality {
    listeners: Vec<Listener>,
    aliases: Vec<String>,
    /// Whether an IP is one of this machine's (for wildcard listeners).
    local_ip: Mutex<HashMap<IpAddr, bool>>,
    /// The local address the kernel routes from towards a destination.
    route_from: Mutex<HashMap<IpAddr, IpAddr>>,
}

impl Locality {
    pub fn new(listeners: Vec<Listener>, aliases: Vec<String>) -> Locality {
        Locality {
            listeners,
            aliases,
            local_ip: Mutex::new(HashMap::new()),
            route_from: Mutex::new(HashMap::new()),
        }
    }

    pub fn listeners(&self) -> &[Listener] {
        &self.listeners
    }

    /// Whether the URI's host and port name one of our listeners or
    /// aliases. A URI without a port means 5060 (5061 for sips).
    pub fn is_myself(&self, uri: &Uri) -> bool {
        let default_port = if uri.scheme == Scheme::Sips {
            5061
        } else {
            5060
        };
        self.is_myself_host(&uri.host, uri.port.unwrap_or(default_port))
    }

    /// Whether `host:port` names this proxy.
    pub fn is_myself_host(&self, host: &Host, port: u16) -> bool {
        let listens_on_port = self.listeners.iter().any(|l| l.local.port() == port);
        match host {
            Host::Name(name) => {
                listens_on_port && self.aliases.iter().any(|a| a.eq_ignore_ascii_case(name))
                    || self.listeners.iter().any(|l| {
                        l.advertise
                            .as_deref()
                            .is_some_and(|adv| advertised_matches(adv, name, port))
                    })
            }
            Host::V4(ip) => self.is_my_ip(IpAddr::V4(*ip), port),
            Host::V6(ip) => self.is_my_ip(IpAddr::V6(*ip), port),
        }
    }

    fn is_my_ip(&self, ip: IpAddr, port: u16) -> bool {
        let ip = canonical(ip);
        self.listeners.iter().any(|l| {
            let bound = l.local.ip();
            let advertised = l
                .advertise
                .as_deref()
                .is_some_and(|adv| advertised_matches(adv, &ip.to_string(), port));
            advertised
                || l.local.port() == port
                    && (bound == ip
                        || bound.is_unspecified()
                            && bound.is_ipv4() == ip.is_ipv4()
                            && self.is_local_ip(ip))
        })
    }

    /// Whether the machine owns `ip`: binding to it succeeds only then.
    fn is_local_ip(&self, ip: IpAddr) -> bool {
        let mut cache = self.local_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(known) = cache.get(&ip) {
            return *known;
        }
        let local = UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok();
        if cache.len() < CACHE_LIMIT {
            cache.insert(ip, local);
        }
        local
    }

    /// The address to name ourselves by (Via, Record-Route) on messages
    /// sent from `listener` to `dest`.
    pub fn address_towards(&self, listener: usize, dest: IpAddr) -> String {
        let Some(l) = self.listeners.get(listener) else {
            return dest.to_string();
        };
        if let Some(adv) = &l.advertise {
            return adv.clone();
        }
        let ip = if l.local.ip().is_unspecified() {
            self.route_from(dest).unwrap_or(l.local.ip())
        } else {
            l.local.ip()
        };
        let mut me = String::with_capacity(48);
        write::push_socket_addr(&mut me, SocketAddr::new(ip, l.local.port()));
        me
    }

    /// Asks the kernel which source address it would use towards `dest`
    /// (connecting a UDP socket sends nothing).
    fn route_from(&self, dest: IpAddr) -> Option<IpAddr> {
        let mut cache = self.route_from.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ip) = cache.get(&dest) {
            return Some(*ip);
        }
        let any: IpAddr = if dest.is_ipv4() {
            IpAddr::from([0u8; 4])
        } else {
            IpAddr::from([0u16; 8])
        };
        let socket = UdpSocket::bind(SocketAddr::new(any, 0)).ok()?;
        socket.connect(SocketAddr::new(dest, 9)).ok()?;
        let ip = socket.local_addr().ok()?.ip();
        if cache.len() < CACHE_LIMIT {
            cache.insert(dest, ip);
        }
        Some(ip)
    }
}

/// IPv4-mapped IPv6 addresses (RFC 5118 §4.4) compare as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

fn advertised_matches(advertise: &str, host: &str, port: u16) -> bool {
    let (adv_host, adv_port) = match advertise.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') && p.parse::<u16>().is_ok() => {
            (h, p.parse::<u16>().unwrap_or(5060))
        }
        _ => (advertise, 5060),
    };
    let adv_host = adv_host.trim_start_matches('[').trim_end_matches(']');
    adv_port == port && adv_host.eq_ignore_ascii_case(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Transport;

    fn locality() -> Locality {
        Locality::new(
            vec![
                Listener {
                    transport: Transport::Udp,
                    local: "127.0.0.1:5060".parse().expect("addr"),
                    advertise: None,
                },
                Listener {
                    transport: Transport::Udp,
                    local: "0.0.0.0:5080".parse().expect("addr"),
                    advertise: Some("sip.example.net:5080".into()),
                },
            ],
            vec!["example.com".into()],
        )
    }

    fn myself(uri: &str) -> bool {
        locality().is_myself(&Uri::parse(uri).expect("uri"))
    }

    #[test]
    fn listeners_and_aliases_are_me() {
        assert!(myself("sip:127.0.0.1"));
        assert!(myself("sip:alice@127.0.0.1:5060;transport=udp"));
        assert!(myself("sip:example.com"));
        assert!(myself("sip:bob@EXAMPLE.com:5080"));
        assert!(myself("sip:sip.example.net:5080"));
        // A wildcard listener owns every local address on its port.
        assert!(myself("sip:127.0.0.1:5080"));
    }

    #[test]
    fn others_are_not_me() {
        assert!(!myself("sip:127.0.0.1:5070"));
        assert!(!myself("sip:192.0.2.1"));
        assert!(!myself("sip:example.org"));
        assert!(!myself("sip:example.com:5070"));
        assert!(!myself("sip:sip.example.net"));
    }
}
