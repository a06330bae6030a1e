//! IP allow-lists (Kamailio's permissions module, `allow_source_address`).

use std::net::IpAddr;

use ipnet::IpNet;

/// Addresses and CIDR ranges a tenant trusts without authentication.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    nets: Vec<IpNet>,
}

impl AllowList {
    /// Parses a comma-separated list of addresses and CIDR ranges, as the
    /// tenant param `IPAUTH_ALLOW` holds it; an error names the bad entry.
    pub fn parse(list: &str) -> Result<AllowList, String> {
        let mut nets = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let net = match item.parse::<IpNet>() {
                Ok(net) => net,
                Err(_) => item
                    .parse::<IpAddr>()
                    .map(IpNet::from)
                    .map_err(|_| format!("\"{item}\" is not an IP address or CIDR range"))?,
            };
            nets.push(net);
        }
        Ok(AllowList { nets })
    }

    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.nets.iter().any(|n| n.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_ranges() {
        let list = AllowList::parse("192.0.2.7, 10.0.0.0/8 ,2001:db8::/32").expect("valid");
        assert!(list.allows("192.0.2.7".parse().expect("ip")));
        assert!(!list.allows("192.0.2.8".parse().expect("ip")));
        assert!(list.allows("10.20.30.40".parse().expect("ip")));
        assert!(list.allows("::ffff:10.1.1.1".parse().expect("ip")));
        assert!(list.allows("2001:db8::1".parse().expect("ip")));
        assert!(!AllowList::default().allows("127.0.0.1".parse().expect("ip")));
        let err = AllowList::parse("10.0.0.0/8, nowhere").expect_err("bad entry");
        assert!(err.contains("nowhere"), "{err}");
    }
}
