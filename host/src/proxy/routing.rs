//! Where a request goes next: loose routing (RFC 3261 §16.4, §16.6 steps
//! 6–7) and the destination of a forward, down to a socket address.

use std::net::{IpAddr, SocketAddr};

use crate::sip::{self, HeaderName, Host, Message, NameAddr, Scheme, Uri};
use crate::transport::{Target, Transport};

use super::{flow, secret, Locality};

/// What [`loose_route`] found.
#[derive(Debug, Default, PartialEq)]
pub struct LooseRoute {
    /// The request carried a Route header.
    pub had_route: bool,
    /// The flow our Route entry next to the next hop names (a flow token,
    /// see [`super::flow`]): the request goes down that connection.
    pub flow: Option<Target>,
    /// One of our entries carried the integrity tag we give this dialog
    /// ([`super::secret::route_tag`]): we record-routed it ourselves, the
    /// Route was not written by whoever sent the request.
    pub verified: bool,
}

/// Follows the route set (Kamailio's `loose_route()`): drops the Route
/// values that name this proxy, and undoes a strict router's rewrite of
/// the Request-URI.
///
/// Of our own entries, the last one dropped faces the next hop: a flow
/// token in it names the connection to send on. (The first faces where
/// the request came from; with a change of transport we record-routed
/// twice.)
pub fn loose_route(msg: &mut Message, locality: &Locality) -> LooseRoute {
    if msg.header(&HeaderName::Route).is_none() {
        return LooseRoute::default();
    }
    // §16.4: a Request-URI that is one of our Record-Route values means the
    // previous hop was a strict router; the real target is the last Route.
    // An in-dialog Request-URI is mostly the peer's Contact, without `lr`:
    // the text tells that without parsing the URI.
    let ruri_is_ours = msg
        .uri()
        .filter(|u| sip::mentions(u, "lr"))
        .and_then(|u| Uri::parse(u).ok())
        .is_some_and(|u| u.param("lr").is_some() && locality.is_myself(&u));
    if ruri_is_ours {
        if let Some(last) = msg.values(&HeaderName::Route).last().map(str::to_owned) {
            if let Ok(last) = NameAddr::parse(&last) {
                let target = last.uri.to_text();
                remove_last_route(msg);
                let _ = msg.set_uri(&target);
            }
        }
    }
    // Our own entries at the top: one, or two when we record-routed twice
    // for a change of transport.
    let mut last_user = None;
    let mut verified = false;
    let call_id = msg.call_id().unwrap_or("").to_owned();
    while let Some(top) = first_route(msg) {
        match NameAddr::parse(&top) {
            Ok(route) if locality.is_myself(&route.uri) => {
                msg.remove_first_value(&HeaderName::Route);
                verified |= route
                    .uri
                    .param("ri")
                    .flatten()
                    .is_some_and(|tag| secret::route_tag_valid(&call_id, tag));
                last_user = Some(route.uri.user.unwrap_or_default());
            }
            _ => break,
        }
    }
    let flow = last_user.filter(|u| !u.is_empty()).and_then(|user| {
        let flow = flow::flow_of(&user);
        if flow.is_none() {
            tracing::info!(%user, "our Route entry has a user part that is no flow token of ours (forged, or from before a restart)");
        }
        flow
    });
    LooseRoute {
        had_route: true,
        flow,
        verified,
    }
}

/// The flow of ours an initial request is for: its top Route is a Path
/// this node gave a binding on a connection it holds (`[cluster]`:
/// `<sip:{flow token}@{node};lr;ob>`), so another node sent it here to
/// go down that connection. The flow is where its first branch goes
/// whatever the routing does with the Route (the bundled routing drops
/// preloaded Routes); a token not of this process names nothing.
pub fn flow_route(msg: &Message, locality: &Locality) -> Option<Target> {
    // Borrowed, not copied: every in-dialog request carries Routes.
    let top = msg.values(&HeaderName::Route).next()?;
    if !sip::mentions(top, "ob") {
        return None;
    }
    let route = NameAddr::parse(top).ok()?;
    if route.uri.param("ob").is_none() || !locality.is_myself(&route.uri) {
        return None;
    }
    flow::flow_of(route.uri.user.as_deref()?)
}

fn first_route(msg: &Message) -> Option<String> {
    msg.values(&HeaderName::Route).next().map(str::to_owned)
}

fn remove_last_route(msg: &mut Message) {
    let mut values: Vec<String> = msg.values(&HeaderName::Route).map(str::to_owned).collect();
    values.pop();
    msg.remove_headers(&HeaderName::Route);
    for v in values {
        let _ = msg.append_header(HeaderName::Route, &v);
    }
}

/// A next hop as named in a URI or a `host:port`, before name resolution.
#[derive(Debug, Clone, PartialEq)]
pub struct Destination {
    pub transport: Option<Transport>,
    pub host: Host,
    pub port: Option<u16>,
    /// A flow (RFC 5626, the URI's `ob` parameter, as a binding's
    /// `received` has it): the connection the peer opened.
    pub flow: bool,
}

impl Destination {
    /// Reads a destination given by a guest: a SIP URI, or `host[:port]`.
    pub fn parse(text: &str) -> Result<Destination, String> {
        let lower = text
            .get(..5)
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        let uri = if lower.starts_with("sip:") || lower.starts_with("sips:") {
            Uri::parse(text)
        } else {
            Uri::parse(&format!("sip:{text}"))
        };
        let uri = uri.map_err(|e| format!("bad destination \"{text}\": {e}"))?;
        Destination::from_uri(&uri)
    }

    /// The next hop a URI names: its maddr or host, its port and transport
    /// parameter when given (RFC 3263 §4 fills in the rest).
    pub fn from_uri(uri: &Uri) -> Result<Destination, String> {
        let sips = match &uri.scheme {
            Scheme::Sip => false,
            Scheme::Sips => true,
            Scheme::Tel => return Err(format!("cannot route to {uri}: a tel URI needs a gateway")),
            Scheme::Other(s) => return Err(format!("cannot route to a {s}: URI")),
        };
        let transport = match uri.transport() {
            None => None,
            Some(t) => Some(
                Transport::from_name(t).ok_or_else(|| format!("transport {t} is not supported"))?,
            ),
        };
        // sips: is TLS whatever the transport parameter says (RFC 3261
        // §19.1.2: `sips:...;transport=tcp` is TLS over TCP; RFC 7118 §5:
        // `sips:...;transport=ws` is a secure WebSocket).
        let transport = match (sips, transport) {
            (true, Some(Transport::Udp)) => {
                return Err(format!("cannot route to {uri}: sips over UDP"))
            }
            (true, Some(Transport::Ws | Transport::Wss)) => Some(Transport::Wss),
            (true, _) => Some(Transport::Tls),
            (false, t) => t,
        };
        let host = match uri.param("maddr") {
            Some(Some(maddr)) => Uri::parse(&format!("sip:{maddr}"))
                .map(|u| u.host)
                .map_err(|e| format!("bad maddr {maddr}: {e}"))?,
            _ => uri.host.clone(),
        };
        Ok(Destination {
            transport,
            host,
            port: uri.port,
            flow: uri.param("ob").is_some(),
        })
    }

    /// The socket address when the host is an IP address; a name is
    /// resolved by the driver (RFC 3263), never here.
    pub fn literal_target(&self) -> Option<Target> {
        let ip = match &self.host {
            Host::V4(ip) => IpAddr::V4(*ip),
            Host::V6(ip) => IpAddr::V6(*ip),
            Host::Name(_) => return None,
        };
        let transport = self.transport.unwrap_or(Transport::Udp);
        Some(Target {
            transport,
            addr: SocketAddr::new(ip, self.port.unwrap_or(transport.default_port())),
        })
    }
}

/// The destination of a request being forwarded: an explicit one, else the
/// first Route, else the Request-URI. A first Route without `lr` is a strict
/// router: it becomes the Request-URI, and the old Request-URI goes to the
/// end of the route set (RFC 3261 §16.6 step 6).
pub fn next_hop(msg: &mut Message, explicit: Option<&str>) -> Result<Destination, String> {
    if let Some(dest) = explicit {
        return Destination::parse(dest);
    }
    if let Some(route) = first_route(msg) {
        let route = NameAddr::parse(&route).map_err(|e| format!("bad Route header: {e}"))?;
        if route.uri.param("lr").is_none() {
            let old = msg.uri().unwrap_or_default().to_owned();
            msg.remove_first_value(&HeaderName::Route);
            msg.append_header(HeaderName::Route, &format!("<{old}>"))
                .map_err(|e| e.to_string())?;
            msg.set_uri(&route.uri.to_text())
                .map_err(|e| e.to_string())?;
        }
        return Destination::from_uri(&route.uri);
    }
    let uri = msg.uri().unwrap_or_default();
    let uri = Uri::parse(uri).map_err(|e| format!("bad Request-URI: {e}"))?;
    Destination::from_uri(&uri)
}
