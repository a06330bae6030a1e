//! NAT detection and fix-ups (Kamailio's nathelper `nat_uac_test`,
//! `fix_nated_contact`, `fix_nated_register`, and core `force_rport`).

use std::net::{IpAddr, SocketAddr};

use crate::sip::{HeaderName, Host, Message, NameAddr};
use crate::transport::{Target, Transport};

/// `nat_uac_test` flag: the Contact holds a private address.
pub const CONTACT_PRIVATE: u32 = 1;
/// The top Via's address differs from the source address.
pub const VIA_ADDRESS_DIFFERS: u32 = 2;
/// The top Via holds a private address.
pub const VIA_PRIVATE: u32 = 4;
/// The top Via's port differs from the source port.
pub const VIA_PORT_DIFFERS: u32 = 16;

/// RFC 1918 and RFC 6598 (carrier-grade NAT) IPv4 ranges, IPv6 ULA.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_private() || (o[0] == 100 && (64..128).contains(&o[1]))
        }
        IpAddr::V6(v6) => (v6.segments()[0] & 0xfe00) == 0xfc00,
    }
}

/// Whether any of the tests in `flags` finds signs of NAT.
pub fn uac_test(msg: &Message, source: SocketAddr, flags: u32) -> bool {
    let via = msg.top_via().ok();
    let via_ip = via.as_ref().and_then(|v| v.host.ip());
    if flags & CONTACT_PRIVATE != 0 {
        let private_contact = msg
            .values(&HeaderName::Contact)
            .next()
            .and_then(|c| NameAddr::parse(c).ok())
            .and_then(|c| c.uri.host.ip())
            .is_some_and(is_private);
        if private_contact {
            return true;
        }
    }
    if flags & VIA_ADDRESS_DIFFERS != 0 && via_ip.is_some_and(|ip| ip != source.ip()) {
        return true;
    }
    if flags & VIA_PRIVATE != 0 && via_ip.is_some_and(is_private) {
        return true;
    }
    if flags & VIA_PORT_DIFFERS != 0 {
        let via_port = via.as_ref().map(|v| v.port.unwrap_or(5060));
        if via_port.is_some_and(|p| p != source.port()) {
            return true;
        }
    }
    false
}

fn host_of(ip: IpAddr) -> Host {
    match ip {
        IpAddr::V4(v4) => Host::V4(v4),
        IpAddr::V6(v6) => Host::V6(v6),
    }
}

/// Rewrites the first Contact's host and port to `source`, for a request
/// or a response from behind NAT. False when the message has no Contact
/// URI to fix (or `Contact: *`).
pub fn fix_contact(msg: &mut Message, source: SocketAddr) -> bool {
    let Some(first) = msg.values(&HeaderName::Contact).next() else {
        return false;
    };
    let Ok(mut contact) = NameAddr::parse(first) else {
        return false;
    };
    contact.uri.host = host_of(source.ip());
    contact.uri.port = Some(source.port());
    msg.replace_first_value(&HeaderName::Contact, &contact.to_string())
        .is_ok()
}

/// Where a request came from as a destination URI, kept with a NAT
/// binding (`received` in usrloc).
pub fn received_uri(source: SocketAddr, transport: Transport) -> String {
    Target {
        transport,
        addr: source,
    }
    .uri()
}

/// Marks the top Via so that replies go to the source port (RFC 3581).
pub fn force_rport(msg: &mut Message, source: SocketAddr) {
    let Ok(via) = msg.top_via() else { return };
    let received = match source.ip() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    };
    let port = source.port().to_string();
    let via = via.with_params([("received", Some(&received)), ("rport", Some(&port))]);
    let _ = msg.set_top_via(via);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invite(via: &str, contact: &str) -> Message {
        let text = format!(
            "INVITE sip:bob@example.com SIP/2.0\r\n\
             Via: SIP/2.0/UDP {via};branch=z9hG4bKnat\r\n\
             From: <sip:alice@example.com>;tag=1\r\n\
             To: <sip:bob@example.com>\r\n\
             Call-ID: nat\r\n\
             CSeq: 1 INVITE\r\n\
             Contact: {contact}\r\n\
             Content-Length: 0\r\n\r\n"
        );
        crate::sip::parse(bytes::Bytes::from(text)).expect("valid")
    }

    #[test]
    fn detects_and_fixes() {
        let source: SocketAddr = "203.0.113.5:40000".parse().expect("addr");
        let behind = invite(
            "192.168.1.2:5060",
            "<sip:alice@192.168.1.2:5060>;expires=60",
        );
        assert!(uac_test(&behind, source, CONTACT_PRIVATE));
        assert!(uac_test(&behind, source, VIA_ADDRESS_DIFFERS));
        assert!(uac_test(&behind, source, VIA_PRIVATE));
        assert!(uac_test(&behind, source, VIA_PORT_DIFFERS));
        let public = invite("203.0.113.5:40000", "<sip:alice@203.0.113.5:40000>");
        assert!(!uac_test(&public, source, 1 | 2 | 4 | 16));
        assert!(is_private("100.64.0.1".parse().expect("ip")));
        assert!(!is_private("100.128.0.1".parse().expect("ip")));

        let mut fixed = behind.clone();
        assert!(fix_contact(&mut fixed, source));
        let contact = fixed.header(&HeaderName::Contact).expect("contact");
        assert_eq!(contact, "<sip:alice@203.0.113.5:40000>;expires=60");
        force_rport(&mut fixed, source);
        let via = fixed.top_via().expect("via");
        assert_eq!(via.rport(), Some(Some(40000)));
        assert_eq!(
            received_uri(source, Transport::Tcp),
            "sip:203.0.113.5:40000;transport=tcp"
        );
    }
}
