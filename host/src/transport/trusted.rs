//! `trusted`: the sources wisp trusts. Their messages skip the per-source
//! limits ([`super::flood`]) and are never banned, and the routing may let
//! them relay without authentication (the proxy's `Source::trusted`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::Deserialize;

/// The `trusted` list: addresses and CIDR prefixes. Default: loopback
/// exactly (127.0.0.1 and ::1, not the rest of 127.0.0.0/8), so that what
/// runs on the proxy's own host is trusted and nothing else is.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Vec<String>")]
pub struct Trusted {
    nets: Vec<IpNet>,
}

impl Default for Trusted {
    fn default() -> Self {
        Trusted {
            nets: vec![
                IpNet::from(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                IpNet::from(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            ],
        }
    }
}

impl TryFrom<Vec<String>> for Trusted {
    type Error = String;

    fn try_from(list: Vec<String>) -> Result<Self, String> {
        Trusted::parse(list.iter().map(String::as_str))
    }
}

impl Trusted {
    /// Nobody is trusted.
    pub fn none() -> Trusted {
        Trusted { nets: Vec::new() }
    }

    /// Parses addresses (`192.0.2.7`, `2001:db8::1`) and CIDR prefixes
    /// (`10.0.0.0/8`); the error names the entry that is neither.
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<Trusted, String> {
        let mut nets = Vec::new();
        for entry in entries {
            let text = entry.trim();
            let net = match text.parse::<IpNet>() {
                Ok(net) => net.trunc(),
                Err(_) => text.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
                    format!("trusted: \"{entry}\" is not an IP address or a CIDR prefix (like 10.0.0.0/8)")
                })?,
            };
            nets.push(net);
        }
        Ok(Trusted { nets })
    }

    /// Whether `ip` is trusted (an IPv4-mapped IPv6 address as its IPv4
    /// address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The entries, as the configuration gives them.
    pub fn entries(&self) -> impl Iterator<Item = String> + '_ {
        self.nets
            .iter()
            .map(|n| match n.prefix_len() == n.max_prefix_len() {
                true => n.addr().to_string(),
                false => n.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn loopback_exactly_by_default() {
        let t = Trusted::default();
        assert!(t.contains(ip("127.0.0.1")));
        assert!(t.contains(ip("::1")));
        assert!(t.contains(ip("::ffff:127.0.0.1")));
        assert!(!t.contains(ip("127.0.0.2")), "the tests flood from it");
        assert!(!t.contains(ip("192.0.2.1")));
        assert_eq!(t.entries().collect::<Vec<_>>(), ["127.0.0.1", "::1"]);
    }

    #[test]
    fn addresses_and_prefixes() {
        let t: Trusted = toml::from_str::<std::collections::BTreeMap<String, Trusted>>(
            "t = [\"192.0.2.7\", \"10.1.2.3/8\", \"2001:db8::/32\"]",
        )
        .expect("parses")
        .remove("t")
        .expect("t");
        assert!(t.contains(ip("192.0.2.7")));
        assert!(!t.contains(ip("192.0.2.8")));
        assert!(t.contains(ip("10.200.0.1")));
        assert!(t.contains(ip("2001:db8:1::5")));
        assert!(!t.contains(ip("127.0.0.1")), "a list replaces the default");
        assert!(!Trusted::none().contains(ip("127.0.0.1")));
    }

    #[test]
    fn a_bad_entry_is_named() {
        for bad in ["10.0.0.0/33", "localhost", "1.2.3", ""] {
            let err = Trusted::parse([bad]).expect_err(bad);
            assert!(err.contains(&format!("\"{bad}\"")), "{err}");
        }
    }
}
