//! Replies and where they go: the reply to a request (RFC 3261 §8.2.6,
//! with a To tag of ours), the received/rport of the sender's Via (§18.2.1,
//! RFC 3581), and the address a reply or a relayed response is sent to
//! (§18.2.2).

use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};

use crate::sip::{self, write, HeaderName, Host, Message, Method, Via};
use crate::transaction::hash::process_hasher;
use crate::transport::{Target, Transport};

use super::request::Source;
use super::routing::Destination;

/// The reply to `req` (None for an ACK, which is never answered): To gets
/// a tag for codes above 100, the same for retransmissions of the request.
pub(super) fn make_reply(
    req: &Message,
    code: u16,
    reason: &str,
    headers: &[(HeaderName, String)],
) -> Option<Message> {
    if req.method() == Some(&Method::Ack) {
        return None;
    }
    let has_tag = req.to().ok().is_some_and(|to| to.tag().is_some());
    let tag = (code > 100 && !has_tag).then(|| to_tag(req));
    let mut response = sip::response_to(req, code, reason, tag.as_deref());
    for (name, value) in headers {
        if let Err(err) = response.append_header(name.clone(), value) {
            tracing::warn!(%err, "dropping a reply header");
        }
    }
    Some(response)
}

/// RFC 3261 §18.2.1 and RFC 3581: note on the sender's Via where the request
/// really came from, so responses find their way back through NATs. Stream
/// transports always get rport, so that responses reuse the connection.
/// Done on receipt, so that our own replies carry it too.
pub(super) fn stamp_received(msg: &mut Message, source: &Source) {
    let Ok(via) = msg.top_via() else { return };
    let ip = source.remote.ip();
    let same_host = via.host.ip() == Some(ip);
    let want_rport = via.rport().is_some() || source.transport.is_stream();
    if same_host && !want_rport {
        return;
    }
    // IPv6 in brackets, as RFC 5118 §4.5 reads the received parameter;
    // one buffer for both values.
    let mut values = String::with_capacity(48);
    write::push_ip_host(&mut values, ip);
    let ip_len = values.len();
    write::push_decimal(&mut values, u64::from(source.remote.port()));
    let (received, port) = values.split_at(ip_len);
    let via = if want_rport {
        via.with_params([("received", Some(received)), ("rport", Some(port))])
    } else {
        via.with_params([("received", Some(received))])
    };
    let _ = msg.set_top_via(via);
}

/// Where a reply to a request we received goes (RFC 3261 §18.2.2, RFC 3581):
/// back on the connection for streams; for UDP to the source IP, at the
/// source port when rport was asked, else the Via port.
pub fn reply_target(msg: &Message, source: &Source) -> Target {
    if source.transport.is_stream() {
        return Target {
            transport: source.transport,
            addr: source.remote,
        };
    }
    let port = match msg.top_via() {
        Ok(via) if via.rport().is_none() => via.port.unwrap_or(5060),
        _ => source.remote.port(),
    };
    Target {
        transport: source.transport,
        addr: SocketAddr::new(source.remote.ip(), port),
    }
}

/// Where a relayed response goes: the Via's received/rport when set, else
/// its sent-by (RFC 3261 §18.2.2), a name being resolved by RFC 3263 §5.
pub(super) fn response_destination(via: &Via) -> Result<Destination, String> {
    let transport = Transport::from_name(&via.transport)
        .ok_or_else(|| format!("unsupported Via transport {}", via.transport))?;
    let port = match via.rport() {
        Some(Some(port)) => port,
        _ => via.port.unwrap_or(5060),
    };
    let received = via
        .received()
        .and_then(|r| r.trim_matches(['[', ']']).parse::<IpAddr>().ok());
    let host = match received {
        Some(IpAddr::V4(ip)) => Host::V4(ip),
        Some(IpAddr::V6(ip)) => Host::V6(ip),
        None => via.host.clone(),
    };
    Ok(Destination {
        transport: Some(transport),
        host,
        port: Some(port),
        flow: false,
    })
}

/// Addresses no SIP message should be sent to (RFC 4475 §3.3.14 bcast).
pub(super) fn is_unroutable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_broadcast() || v4.is_unspecified() || v4.is_multicast(),
        IpAddr::V6(v6) => v6.is_unspecified() || v6.is_multicast(),
    }
}

/// The To tag of our stateless replies: the same for retransmissions of a
/// request, so that they get the same answer.
fn to_tag(msg: &Message) -> String {
    let mut h = process_hasher();
    msg.call_id().hash(&mut h);
    msg.from().ok().and_then(|f| f.tag()).hash(&mut h);
    msg.top_via().ok().and_then(|v| v.branch()).hash(&mut h);
    // The 16 hex digits `{:016x}` writes, without the formatting machinery.
    crate::sip::write::hex(&h.finish().to_be_bytes())
}
