//! NAPTR records for SIP (RFC 3263 §4.1 over RFC 3403): which records a
//! proxy can use and in which order.

use crate::transport::Transport;

/// One NAPTR record as the selection needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NaptrRecord {
    pub order: u16,
    pub preference: u16,
    pub flags: Vec<u8>,
    pub services: Vec<u8>,
    pub regexp: Vec<u8>,
    /// The SRV name to look up next, without a trailing dot.
    pub replacement: String,
}

/// A usable NAPTR record: look up SRV records at `srv_name` for `transport`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvLead {
    pub srv_name: String,
    pub transport: Transport,
}

/// The transport a SIP NAPTR service names, if wisp speaks it. "SIP+D2S"
/// (SCTP) and the WebSocket services (no one connects to a browser) are
/// skipped like unknown services.
pub fn service_transport(services: &[u8]) -> Option<Transport> {
    if services.eq_ignore_ascii_case(b"SIP+D2U") {
        Some(Transport::Udp)
    } else if services.eq_ignore_ascii_case(b"SIP+D2T") {
        Some(Transport::Tcp)
    } else if services.eq_ignore_ascii_case(b"SIPS+D2T") {
        Some(Transport::Tls)
    } else {
        None
    }
}

/// The records a SIP client may follow, best first: flag "S" (the next
/// lookup is SRV at the replacement; RFC 3263 uses no other flag and no
/// regexp), a service wisp supports, ordered by order then preference.
/// Lower orders are kept after the best one as fallbacks to try when the
/// best one's targets fail. At most `limit` records, duplicates removed.
pub fn select(mut records: Vec<NaptrRecord>, limit: usize) -> Vec<SrvLead> {
    records.sort_by_key(|r| (r.order, r.preference));
    let mut leads: Vec<SrvLead> = Vec::new();
    for record in records {
        if leads.len() >= limit {
            break;
        }
        if !record.flags.eq_ignore_ascii_case(b"s") || !record.regexp.is_empty() {
            continue;
        }
        let Some(transport) = service_transport(&record.services) else {
            continue;
        };
        let srv_name = record.replacement.trim_end_matches('.');
        if srv_name.is_empty() {
            continue;
        }
        let lead = SrvLead {
            srv_name: srv_name.to_string(),
            transport,
        };
        if !leads.contains(&lead) {
            leads.push(lead);
        }
    }
    leads
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naptr(
        order: u16,
        preference: u16,
        flags: &str,
        services: &str,
        replacement: &str,
    ) -> NaptrRecord {
        NaptrRecord {
            order,
            preference,
            flags: flags.as_bytes().to_vec(),
            services: services.as_bytes().to_vec(),
            regexp: Vec::new(),
            replacement: replacement.to_string(),
        }
    }

    fn lead(name: &str, transport: Transport) -> SrvLead {
        SrvLead {
            srv_name: name.to_string(),
            transport,
        }
    }

    #[test]
    fn ordered_by_order_then_preference() {
        let records = vec![
            naptr(20, 10, "s", "SIP+D2U", "_sip._udp.late.test."),
            naptr(10, 50, "S", "sip+d2t", "_sip._tcp.example.test."),
            naptr(10, 20, "s", "SIP+D2U", "_sip._udp.example.test."),
        ];
        assert_eq!(
            select(records, 8),
            vec![
                lead("_sip._udp.example.test", Transport::Udp),
                lead("_sip._tcp.example.test", Transport::Tcp),
                lead("_sip._udp.late.test", Transport::Udp),
            ]
        );
    }

    #[test]
    fn unsupported_services_flags_and_rewrites_are_skipped() {
        let mut rewrite = naptr(1, 1, "s", "SIP+D2U", "_sip._udp.rw.test");
        rewrite.regexp = b"!^.*$!sip:x@y!".to_vec();
        let records = vec![
            naptr(1, 2, "s", "SIP+D2S", "_sip._sctp.example.test"),
            naptr(1, 3, "s", "SIP+D2W", "_sip._ws.example.test"),
            naptr(1, 4, "a", "SIP+D2U", "host.example.test"),
            naptr(1, 5, "", "SIP+D2U", "next.example.test"),
            naptr(1, 6, "u", "E2U+sip", "."),
            naptr(1, 7, "s", "SIP+D2U", "."),
            rewrite,
            naptr(9, 9, "s", "SIP+D2T", "_sip._tcp.example.test"),
        ];
        assert_eq!(
            select(records, 8),
            vec![lead("_sip._tcp.example.test", Transport::Tcp)]
        );
        let tls = vec![naptr(1, 1, "s", "SIPS+D2T", "_sips._tcp.example.test")];
        assert_eq!(
            select(tls, 8),
            vec![lead("_sips._tcp.example.test", Transport::Tls)]
        );
    }

    #[test]
    fn duplicates_removed_and_count_bounded() {
        let mut records: Vec<_> = (0..500)
            .map(|i| naptr(i, 0, "s", "SIP+D2U", &format!("_sip._udp.n{i}.test")))
            .collect();
        records.push(naptr(0, 0, "s", "SIP+D2U", "_sip._udp.n0.test."));
        let leads = select(records, 4);
        assert_eq!(leads.len(), 4);
        assert_eq!(leads[0], lead("_sip._udp.n0.test", Transport::Udp));
        assert_eq!(leads[1], lead("_sip._udp.n1.test", Transport::Udp));
    }
}
