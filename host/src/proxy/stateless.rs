//! Stateless forwarding and replying (Kamailio's `forward()`, `sl`
//! and reply relaying by Via, RFC 3261 §16.6, §16.7 step 9, §18.2.2,
//! RFC 3581), and where replies go.
//!
//! Nothing is remembered between messages: retransmissions are forwarded
//! again, and the branch of a forwarded request is derived from the
//! request itself so that the same request always gets the same branch.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use crate::sip::{self, HeaderName, Host, Message, Method, Via};
use crate::transport::{Target, Transport};

use super::checks::{self, DEFAULT_MAX_FORWARDS};
use super::core::Core;
use super::effects::Parked;
use super::request::{RequestCtx, Source};
use super::routing::{next_hop, Destination};
use crate::transaction::TxId;

/// Branches of requests we forward start with the RFC 3261 magic cookie
/// and a marker of ours.
const BRANCH_PREFIX: &str = "z9hG4bKwsp";

impl<P> Core<P> {
    /// Forwards a copy of the request to its next hop (Kamailio's
    /// `forward()`). True when the request was answered instead (it could
    /// not go). The request itself is left as the guest saw it.
    pub(super) fn forward(
        &mut self,
        now: Instant,
        tx: Option<TxId>,
        req: &mut RequestCtx,
        destination: Option<String>,
    ) -> bool {
        let destination = destination.or_else(|| req.dst_uri.clone());
        if let Err(rejection) = checks::max_forwards(req, DEFAULT_MAX_FORWARDS) {
            self.fx.reply(req, rejection.code, &rejection.reason, &[]);
            return false;
        }
        let branch = branch_for(&req.msg);
        let mut msg = req.msg.clone();
        let hop = next_hop(&mut msg, destination.as_deref());
        let sent = hop.and_then(|hop| match hop.literal_target() {
            Some(target) => {
                let msg = self
                    .fx
                    .prepare(msg, req.record_route, &req.source, target, &branch)?;
                self.fx.send(target, msg.to_bytes());
                Ok(())
            }
            None => {
                let parked = Parked::Forward {
                    req: Box::new(req.clone()),
                    msg,
                    branch,
                };
                self.fx
                    .lookup(hop, false, parked)
                    .map(|_| ())
                    .ok_or_else(|| "too many lookups waiting".to_owned())
            }
        });
        match sent {
            Ok(()) => false,
            Err(err) => {
                tracing::info!(remote = %req.source.remote, %err, "cannot forward");
                self.fx.answer(now, tx, req, 500, "Cannot Forward", &[]);
                true
            }
        }
    }

    /// A forward's next hop was looked up: it goes to the first target,
    /// or is answered with 503 (statelessly: its transaction was let go).
    pub(super) fn forward_resolved(
        &mut self,
        req: &RequestCtx,
        msg: Message,
        branch: &str,
        result: Result<Vec<Target>, String>,
    ) {
        let sent = result.and_then(|targets| {
            let target = targets
                .first()
                .copied()
                .ok_or_else(|| "no target".to_owned())?;
            let msg = self
                .fx
                .prepare(msg, req.record_route, &req.source, target, branch)?;
            self.fx.send(target, msg.to_bytes());
            Ok(())
        });
        if let Err(err) = sent {
            tracing::info!(remote = %req.source.remote, %err, "cannot forward");
            self.fx.reply(req, 503, "Service Unavailable", &[]);
        }
    }

    /// Relays a response up the Via chain: ours must be on top; it is
    /// removed and the response goes where the next Via says.
    pub(super) fn relay_response(&mut self, mut msg: Message) {
        let ours = msg.top_via().ok().is_some_and(|via| {
            self.fx
                .locality
                .is_myself_host(&via.host, via.port.unwrap_or(5060))
        });
        if !ours {
            tracing::debug!("dropping a response whose top Via is not ours");
            return;
        }
        msg.pop_first_value(&HeaderName::Via);
        let Ok(next) = msg.top_via() else {
            tracing::debug!("dropping a response with no Via left (it was for us)");
            return;
        };
        let destination = match response_destination(next) {
            Ok(destination) => destination,
            Err(err) => {
                tracing::debug!(%err, "cannot relay a response");
                return;
            }
        };
        match destination.literal_target() {
            Some(target) => self.send_response(msg, target),
            None => {
                if self
                    .fx
                    .lookup(destination, true, Parked::Response { msg })
                    .is_none()
                {
                    tracing::info!("too many lookups waiting; response dropped");
                }
            }
        }
    }

    /// The Via of a response to relay was looked up.
    pub(super) fn response_resolved(&mut self, msg: Message, result: Result<Vec<Target>, String>) {
        match result.map(|targets| targets.first().copied()) {
            Ok(Some(target)) => self.send_response(msg, target),
            Ok(None) => tracing::info!("response dropped: its Via has no address"),
            Err(err) => tracing::info!(%err, "response dropped: its Via is not resolved"),
        }
    }

    fn send_response(&mut self, msg: Message, target: Target) {
        if is_unroutable(target.addr.ip()) {
            tracing::info!(addr = %target.addr, "not relaying a response to a broadcast or unspecified address");
            return;
        }
        self.fx.send(target, msg.to_bytes());
    }
}

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
    // IPv6 in brackets, as RFC 5118 §4.5 reads the received parameter.
    let received = match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    };
    let mut via = via.clone();
    via.set_param("received", Some(&received));
    if want_rport {
        via.set_param("rport", Some(&source.remote.port().to_string()));
    }
    let _ = msg.set_top_via(via);
}

/// Where a reply to a request we received goes (RFC 3261 §18.2.2, RFC 3581):
/// back on the connection for streams; for UDP to the source IP, at the
/// source port when rport was asked, else the Via port.
pub(super) fn reply_target(msg: &Message, source: &Source) -> Target {
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
    })
}

/// Addresses no SIP message should be sent to (RFC 4475 §3.3.14 bcast).
pub(super) fn is_unroutable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_broadcast() || v4.is_unspecified() || v4.is_multicast(),
        IpAddr::V6(v6) => v6.is_unspecified() || v6.is_multicast(),
    }
}

/// A branch that is the same for the same request (retransmissions, and
/// a CANCEL or non-2xx ACK of an INVITE) and different for others
/// (RFC 3261 §16.11).
pub(super) fn branch_for(msg: &Message) -> String {
    let mut h = DefaultHasher::new();
    msg.uri().hash(&mut h);
    match msg
        .top_via()
        .ok()
        .and_then(|v| v.branch().map(str::to_owned))
    {
        Some(branch) if branch.starts_with("z9hG4bK") => branch.hash(&mut h),
        // RFC 2543 peers: the transaction is named by these (§17.2.3).
        _ => {
            msg.call_id().hash(&mut h);
            msg.cseq().ok().map(|c| c.seq).hash(&mut h);
            msg.from()
                .ok()
                .and_then(|f| f.tag().map(str::to_owned))
                .hash(&mut h);
            msg.header(&HeaderName::Via).hash(&mut h);
        }
    }
    format!("{BRANCH_PREFIX}{:016x}", h.finish())
}

/// The To tag of our stateless replies: the same for retransmissions of a
/// request, so that they get the same answer.
fn to_tag(msg: &Message) -> String {
    let mut h = DefaultHasher::new();
    msg.call_id().hash(&mut h);
    msg.from()
        .ok()
        .and_then(|f| f.tag().map(str::to_owned))
        .hash(&mut h);
    msg.top_via()
        .ok()
        .and_then(|v| v.branch().map(str::to_owned))
        .hash(&mut h);
    format!("{:016x}", h.finish())
}
