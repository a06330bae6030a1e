//! Flow tokens (RFC 5626 §5.2): the connection a WebSocket client is on,
//! written into the user part of our Record-Route entry facing it, so
//! that an in-dialog request towards the client (whose Contact host is
//! `*.invalid`) goes down that connection.
//!
//! A token is the transport, address and port of the connection and a MAC
//! over them, keyed with a secret of this process: a peer cannot make
//! wisp send into another client's connection by writing a token of its
//! own. Tokens outlive no restart, as the connections they name do not.

use crate::transport::{Target, Transport};
use std::net::{IpAddr, SocketAddr};

use super::secret;

/// Bytes of the MAC kept in a token: 80 bits, beyond guessing within a
/// connection's life.
const MAC_BYTES: usize = 10;

/// Whether messages to a peer on `transport` must go down the connection
/// it opened: a flow, named by a token in our Record-Route.
pub fn needs_token(transport: Transport) -> bool {
    !transport.can_connect()
}

/// The token naming `flow`, hex (a valid URI user part).
pub fn token(flow: Target) -> String {
    let mut bytes = flow_bytes(flow);
    let mac = secret::mac(&[&bytes]);
    bytes.extend_from_slice(&mac[..MAC_BYTES]);
    crate::sip::write::hex(&bytes)
}

/// The flow a token names; None when `text` is not a token of this
/// process (forged, altered, or from before a restart).
pub fn flow_of(text: &str) -> Option<Target> {
    let bytes = hex::decode(text).ok()?;
    let (flow, tag) = bytes.split_at_checked(bytes.len().checked_sub(MAC_BYTES)?)?;
    let transport = match flow.first()? {
        0 => Transport::Udp,
        1 => Transport::Tcp,
        2 => Transport::Tls,
        3 => Transport::Ws,
        4 => Transport::Wss,
        5 => Transport::Quic,
        _ => return None,
    };
    let (ip, port) = flow[1..].split_at_checked(flow.len().checked_sub(3)?)?;
    let ip = match ip.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(ip).ok()?),
        16 => IpAddr::from(<[u8; 16]>::try_from(ip).ok()?),
        _ => return None,
    };
    let port = u16::from_be_bytes(port.try_into().ok()?);
    if !secret::verify(&[flow], tag) {
        return None;
    }
    Some(Target {
        transport,
        addr: SocketAddr::new(ip, port),
    })
}

fn flow_bytes(flow: Target) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(1 + 16 + 2 + MAC_BYTES);
    bytes.push(match flow.transport {
        Transport::Udp => 0,
        Transport::Tcp => 1,
        Transport::Tls => 2,
        Transport::Ws => 3,
        Transport::Wss => 4,
        Transport::Quic => 5,
    });
    match flow.addr.ip() {
        IpAddr::V4(v4) => bytes.extend_from_slice(&v4.octets()),
        IpAddr::V6(v6) => bytes.extend_from_slice(&v6.octets()),
    }
    bytes.extend_from_slice(&flow.addr.port().to_be_bytes());
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(transport: Transport, addr: &str) -> Target {
        Target {
            transport,
            addr: addr.parse().expect("addr"),
        }
    }

    #[test]
    fn a_token_names_its_flow_and_nothing_else() {
        for f in [
            flow(Transport::Ws, "192.0.2.7:51000"),
            flow(Transport::Wss, "[2001:db8::1]:443"),
        ] {
            let t = token(f);
            assert_eq!(flow_of(&t), Some(f), "{t}");
        }
        let t = token(flow(Transport::Ws, "192.0.2.7:51000"));
        // Another port, same MAC: refused.
        let mut forged = hex::decode(&t).expect("hex");
        forged[6] ^= 1;
        assert_eq!(flow_of(&hex::encode(&forged)), None);
        // A flipped MAC bit, a cut token, not hex, a user name.
        let mut bad_mac = hex::decode(&t).expect("hex");
        let last = bad_mac.len() - 1;
        bad_mac[last] ^= 0x80;
        assert_eq!(flow_of(&hex::encode(&bad_mac)), None);
        assert_eq!(flow_of(&t[..t.len() - 2]), None);
        assert_eq!(flow_of("alice"), None);
        assert_eq!(flow_of(""), None);
        assert_eq!(flow_of("00"), None);
    }
}
