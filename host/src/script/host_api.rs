//! The host side of the core `wisp:proxy` WIT interfaces (`sip`, `proxy`,
//! `vars`, `config`, `log`): thin adapters from guest calls to the SIP
//! core and the proxy. The headers and body are `fields` (see `fields`);
//! what a hook decides is read by `decide`.

use wasmtime::component::Resource;
use wasmtime::Result;

use super::call::{HostState, ResponseCtx};
use super::fields::{Fields, Parent};
use super::wisp::proxy::sip as wit;
use super::wisp::proxy::{config, log, proxy, vars};
use crate::proxy::checks;
use crate::proxy::{Armed, RequestCtx};
use crate::sip::{self, HeaderName};

pub(super) fn invalid(err: impl std::fmt::Display) -> wit::Error {
    wit::Error::Invalid(err.to_string())
}

/// The WIT's `reply` for a refusal of the SIP core or a service.
pub(super) fn reply(
    code: u16,
    reason: impl Into<String>,
    headers: Vec<(HeaderName, String)>,
) -> wit::Reply {
    wit::Reply {
        code,
        reason: Some(reason.into()),
        headers: headers
            .into_iter()
            .map(|(name, value)| wit::Header {
                name: name.as_str().to_owned(),
                value,
            })
            .collect(),
    }
}

/// A host address as the WIT gives it: IPv6 without brackets.
fn host_text(host: &sip::Host) -> String {
    match host {
        sip::Host::Name(name) => name.clone(),
        sip::Host::V4(ip) => ip_text((*ip).into()),
        sip::Host::V6(ip) => ip_text((*ip).into()),
    }
}

fn uri_parts(uri: &sip::Uri) -> wit::UriParts {
    wit::UriParts {
        user: uri.user.clone(),
        host: host_text(&uri.host),
        port: uri.port,
    }
}

pub(super) fn transport(t: crate::transport::Transport) -> wit::Transport {
    use crate::transport::Transport;
    match t {
        Transport::Udp => wit::Transport::Udp,
        Transport::Tcp => wit::Transport::Tcp,
        Transport::Tls => wit::Transport::Tls,
        Transport::Ws => wit::Transport::Ws,
        Transport::Wss => wit::Transport::Wss,
        Transport::Quic => wit::Transport::Quic,
    }
}

pub(super) fn endpoint(t: wit::Transport, addr: std::net::SocketAddr) -> wit::Endpoint {
    wit::Endpoint {
        transport: t,
        ip: ip_text(addr.ip()),
        port: addr.port(),
    }
}

/// An IP address as text. Every route call hands the guest its source, so
/// IPv4 is written without the formatting machinery (`to_string` was a
/// third of what `request-info` cost).
fn ip_text(ip: std::net::IpAddr) -> String {
    let mut out = String::with_capacity(15);
    sip::write::push_ip(&mut out, ip);
    out
}

/// Whether a SIP or SIPS Request-URI names this proxy, read from its host
/// and port alone: every route call tells the guest, and parsing the
/// whole URI again (its user and parameters as owned strings) was half of
/// what `request-info` cost. The start line was checked when the message
/// was parsed (`Uri::parse_request_uri`).
fn request_uri_is_myself(uri: &str, guest: &super::call::Guest) -> bool {
    request_uri_host_port(uri).is_some_and(|(host, port)| guest.is_myself_host(&host, port))
}

/// The host and port of a SIP or SIPS URI (the scheme's default port when
/// it has none); none for other schemes or a malformed host or port. `?`
/// starts the headers; before it, an `@` can only end the userinfo (RFC
/// 3261 §25.1 allows none unescaped in parameters), and `;` ends the
/// hostport.
fn request_uri_host_port(uri: &str) -> Option<(sip::Host, u16)> {
    // The scheme is compared as a prefix (the first `:` ends it), and the
    // hostport split in the same pass that finds it: `split_once` costs a
    // searcher each time, and this runs on every route call.
    let bytes = uri.as_bytes();
    let (sips, rest) = if bytes.len() >= 4 && bytes[..4].eq_ignore_ascii_case(b"sip:") {
        (false, &uri[4..])
    } else if bytes.len() >= 5 && bytes[..5].eq_ignore_ascii_case(b"sips:") {
        (true, &uri[5..])
    } else {
        return None;
    };
    // One pass: the hostport starts after the last `@` and ends at the
    // first `;` after it, or at `?`; its port follows its first `:`.
    let (mut start, mut end, mut colon) = (0, None, None);
    for (i, c) in rest.bytes().enumerate() {
        match c {
            b'@' => (start, end, colon) = (i + 1, None, None),
            b';' if end.is_none() => end = Some(i),
            b':' if end.is_none() && colon.is_none() => colon = Some(i),
            b'?' => {
                end = end.or(Some(i));
                break;
            }
            _ => {}
        }
    }
    let hostport = rest.get(start..end.unwrap_or(rest.len()))?;
    let (host, port) = if hostport.starts_with('[') {
        let (ip, port) = hostport.split_once(']')?;
        (&hostport[..ip.len() + 1], port.strip_prefix(':'))
    } else {
        match colon {
            Some(i) => (rest.get(start..i)?, rest.get(i + 1..start + hostport.len())),
            None => (hostport, None),
        }
    };
    let port = match port {
        Some(port) => port.parse().ok()?,
        None if sips => 5061,
        None => 5060,
    };
    Some((sip::Host::parse(host).ok()?, port))
}

fn method(m: Option<&sip::Method>) -> wit::Method {
    use sip::Method as M;
    match m {
        Some(M::Invite) => wit::Method::Invite,
        Some(M::Ack) => wit::Method::Ack,
        Some(M::Bye) => wit::Method::Bye,
        Some(M::Cancel) => wit::Method::Cancel,
        Some(M::Register) => wit::Method::Register,
        Some(M::Options) => wit::Method::Options,
        Some(M::Info) => wit::Method::Info,
        Some(M::Update) => wit::Method::Update,
        Some(M::Prack) => wit::Method::Prack,
        Some(M::Subscribe) => wit::Method::Subscribe,
        Some(M::Notify) => wit::Method::Notify,
        Some(M::Publish) => wit::Method::Publish,
        Some(M::Message) => wit::Method::Message,
        Some(M::Refer) => wit::Method::Refer,
        Some(M::Other(name)) => wit::Method::Other(name.clone()),
        None => wit::Method::Other(String::new()),
    }
}

/// Whether the request's To carries a tag (`has_totag()`). The To of a
/// request was parsed when it was validated, so this reads its view.
fn in_dialog(msg: &sip::Message) -> bool {
    msg.to().ok().is_some_and(|to| to.tag().is_some())
}

/// The error of a host call past a per-hook cap of the tenant's limits.
pub(super) fn past_cap(what: &str, cap: usize, field: &str) -> wit::Error {
    wit::Error::NotAllowed(format!(
        "more than {cap} {what} in one hook call (limits.{field})"
    ))
}

impl HostState {
    pub(super) fn req(&self, handle: &Resource<RequestCtx>) -> Result<&RequestCtx> {
        Ok(self.table.get(handle)?)
    }

    pub(super) fn req_mut(&mut self, handle: &Resource<RequestCtx>) -> Result<&mut RequestCtx> {
        Ok(self.table.get_mut(handle)?)
    }

    pub(super) fn res(&self, handle: &Resource<ResponseCtx>) -> Result<&ResponseCtx> {
        Ok(self.table.get(handle)?)
    }

    /// What the route hook receives, and `request.info` gives.
    pub(super) fn request_info(&self, req: &RequestCtx) -> wit::RequestInfo {
        wit::RequestInfo {
            method: method(req.msg.method()),
            in_dialog: in_dialog(&req.msg),
            uri_is_myself: req
                .msg
                .uri()
                .is_some_and(|uri| request_uri_is_myself(uri, &self.guest)),
            source: endpoint(transport(req.source.transport), req.source.remote),
            source_trusted: req.source.trusted,
        }
    }

    /// A tenant param read as a number; none when it is not set. A value
    /// that is not a number is the operator's mistake: warned, and the
    /// built-in default applies.
    pub(super) fn param_u32(&self, name: &str) -> Option<u32> {
        let text = self.guest.params.get(name)?;
        match text.trim().parse() {
            Ok(n) => Some(n),
            Err(_) => {
                tracing::warn!(tenant = %self.guest.tenant, param = name, value = %text, "tenant param is not a number; its default applies");
                None
            }
        }
    }

    /// Takes `headers` headers and `bytes` bytes of text from the hook's
    /// caps, or takes nothing and says which cap it would pass. The caller
    /// then does what it was asked (which may still fail: the count stays,
    /// so a hook cannot try without end).
    pub(super) fn spend_text(&mut self, headers: usize, bytes: usize) -> Result<(), wit::Error> {
        let limits = &self.guest.limits;
        let fx = &mut self.effects;
        if fx.headers.saturating_add(headers) > limits.headers_per_hook {
            return Err(past_cap(
                "headers added",
                limits.headers_per_hook,
                "headers_per_hook",
            ));
        }
        if fx.bytes.saturating_add(bytes) > limits.bytes_per_hook {
            return Err(past_cap(
                "bytes of text for messages",
                limits.bytes_per_hook,
                "bytes_per_hook",
            ));
        }
        fx.headers += headers;
        fx.bytes += bytes;
        Ok(())
    }

    /// Takes one reply from the hook's cap, with its reason and headers.
    pub(super) fn spend_reply<'a>(
        &mut self,
        reason: &str,
        headers: impl Iterator<Item = (&'a str, &'a str)>,
    ) -> Result<(), wit::Error> {
        let limits = &self.guest.limits;
        if self.effects.replies >= limits.replies_per_hook {
            return Err(past_cap(
                "replies",
                limits.replies_per_hook,
                "replies_per_hook",
            ));
        }
        let (count, bytes) = headers.fold((0usize, reason.len()), |(n, b), (name, value)| {
            (n + 1, b.saturating_add(name.len() + value.len()))
        });
        self.spend_text(count, bytes)?;
        self.effects.replies += 1;
        Ok(())
    }

    /// Takes one branch (an `append-branch` or a `relay`) from the hook's
    /// cap, with the bytes of its URI or destination.
    pub(super) fn spend_branch(&mut self, bytes: usize) -> Result<(), wit::Error> {
        let cap = self.guest.limits.branches_per_hook;
        if self.effects.branches >= cap {
            return Err(past_cap("branches", cap, "branches_per_hook"));
        }
        self.spend_text(0, bytes)?;
        self.effects.branches += 1;
        Ok(())
    }

    /// Keeps a reply a service made, to be told from the guest's own when
    /// the hook returns it.
    pub(super) fn issue(&mut self, reply: wit::Reply) -> wit::Reply {
        // A hook may ask again and again (each call of a failed save
        // answers anew); what it returns is one of the last few.
        if self.issued.len() >= ISSUED_KEPT {
            self.issued.remove(0);
        }
        self.issued.push(reply.clone());
        reply
    }
}

/// Replies of the services remembered per hook call.
const ISSUED_KEPT: usize = 8;

impl wit::Host for HostState {}

impl wit::HostRequest for HostState {
    fn fields(&mut self, req: Resource<RequestCtx>) -> Result<Resource<Fields>> {
        self.req(&req)?;
        self.fields_handle(Parent::Request(req.rep()))
    }

    fn info(&mut self, req: Resource<RequestCtx>) -> Result<wit::RequestInfo> {
        let ctx = self.req(&req)?;
        Ok(self.request_info(ctx))
    }

    fn method(&mut self, req: Resource<RequestCtx>) -> Result<wit::Method> {
        Ok(method(self.req(&req)?.msg.method()))
    }

    fn uri(&mut self, req: Resource<RequestCtx>) -> Result<String> {
        Ok(self.req(&req)?.msg.uri().unwrap_or_default().to_owned())
    }

    fn uri_parts(&mut self, req: Resource<RequestCtx>) -> Result<Option<wit::UriParts>> {
        let req = self.req(&req)?;
        Ok(req
            .msg
            .uri()
            .and_then(|u| sip::Uri::parse(u).ok())
            .map(|uri| uri_parts(&uri)))
    }

    fn set_uri(
        &mut self,
        req: Resource<RequestCtx>,
        uri: String,
    ) -> Result<Result<(), wit::Error>> {
        self.req(&req)?;
        if let Err(err) = self.spend_text(0, uri.len()) {
            return Ok(Err(err));
        }
        let req = self.req_mut(&req)?;
        // A new Request-URI drops the destination and Path a lookup set.
        req.dst_uri = None;
        req.path.clear();
        Ok(req.msg.set_uri(&uri).map_err(invalid))
    }

    fn from_uri(&mut self, req: Resource<RequestCtx>) -> Result<String> {
        let req = self.req(&req)?;
        Ok(req.msg.from().map(|f| f.uri.to_text()).unwrap_or_default())
    }

    fn to_uri(&mut self, req: Resource<RequestCtx>) -> Result<String> {
        let req = self.req(&req)?;
        Ok(req.msg.to().map(|t| t.uri.to_text()).unwrap_or_default())
    }

    /// What `parse-uri(from-uri())` gives, from the From the message parsed
    /// once: no URI written out and parsed again, one call instead of two.
    fn from_parts(&mut self, req: Resource<RequestCtx>) -> Result<Option<wit::UriParts>> {
        let req = self.req(&req)?;
        Ok(req.msg.from().ok().map(|f| uri_parts(&f.uri)))
    }

    fn to_parts(&mut self, req: Resource<RequestCtx>) -> Result<Option<wit::UriParts>> {
        let req = self.req(&req)?;
        Ok(req.msg.to().ok().map(|t| uri_parts(&t.uri)))
    }

    fn drop(&mut self, _req: Resource<RequestCtx>) -> Result<()> {
        // The request belongs to the host; the pool takes it back after the
        // hook. A guest has only borrows, so nothing to free here.
        Ok(())
    }
}

impl wit::HostResponse for HostState {
    fn fields(&mut self, res: Resource<ResponseCtx>) -> Result<Resource<Fields>> {
        self.res(&res)?;
        self.fields_handle(Parent::Response(res.rep()))
    }

    fn status(&mut self, res: Resource<ResponseCtx>) -> Result<u16> {
        Ok(self.res(&res)?.msg.status().unwrap_or(0))
    }

    fn reason(&mut self, res: Resource<ResponseCtx>) -> Result<String> {
        Ok(self.res(&res)?.msg.reason().unwrap_or_default().to_owned())
    }

    /// Where the response came from. A response the proxy made itself
    /// (the best response of branches that timed out) comes from the
    /// listener the request arrived on.
    fn source(&mut self, res: Resource<ResponseCtx>) -> Result<wit::Endpoint> {
        let res = self.res(&res)?;
        // Our own Via tops a response, with the transport its branch was
        // sent by: the one the response came back on.
        let via = res.msg.top_via().ok();
        let by = via
            .as_ref()
            .and_then(|v| crate::transport::Transport::from_name(&v.transport).map(transport));
        let addr = match res.source {
            Some(addr) => addr,
            None => {
                let listener = self
                    .guest
                    .locality
                    .listeners()
                    .first()
                    .map(|l| (l.transport, l.local));
                let (t, local) = listener.unwrap_or((
                    crate::transport::Transport::Udp,
                    std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
                ));
                return Ok(endpoint(by.unwrap_or(transport(t)), local));
            }
        };
        Ok(endpoint(by.unwrap_or(wit::Transport::Udp), addr))
    }

    fn drop(&mut self, _res: Resource<ResponseCtx>) -> Result<()> {
        Ok(())
    }
}

/// Branches one relay may fork to: a guest cannot flood the network.
const MAX_BRANCHES: usize = 16;

/// Max-Forwards a request without one gets when neither the routing nor
/// the tenant param `MAX_FORWARDS` says (Kamailio's default config).
const DEFAULT_MAX_FORWARDS: u32 = 10;

impl proxy::Host for HostState {
    fn max_forwards(
        &mut self,
        req: Resource<RequestCtx>,
        limit: Option<u32>,
    ) -> Result<Result<(), wit::Error>> {
        let limit = limit
            .or_else(|| self.param_u32("MAX_FORWARDS"))
            .unwrap_or(DEFAULT_MAX_FORWARDS);
        let ctx = self.req_mut(&req)?;
        Ok(checks::max_forwards(ctx, limit).map_err(refused))
    }

    fn sanity_check(&mut self, req: Resource<RequestCtx>) -> Result<Result<(), wit::Error>> {
        let ctx = self.req(&req)?;
        Ok(sip::sanity_check(&ctx.msg).map_err(refused))
    }

    fn is_myself(&mut self, uri: String) -> Result<bool> {
        Ok(sip::Uri::parse(&uri).is_ok_and(|uri| self.guest.is_myself(&uri)))
    }

    fn parse_uri(&mut self, uri: String) -> Result<Option<wit::UriParts>> {
        Ok(sip::Uri::parse(&uri).ok().map(|uri| uri_parts(&uri)))
    }

    fn record_route(&mut self, req: Resource<RequestCtx>) -> Result<Result<(), wit::Error>> {
        let req = self.req_mut(&req)?;
        if req.msg.method() == Some(&sip::Method::Register) {
            return Ok(Err(wit::Error::NotAllowed(
                "REGISTER is never record-routed (RFC 3261 §10.2)".into(),
            )));
        }
        req.record_route = true;
        Ok(Ok(()))
    }

    fn loose_route(&mut self, req: Resource<RequestCtx>) -> Result<proxy::RouteCheck> {
        let locality = self.guest.locality.clone();
        let req = self.req_mut(&req)?;
        let routed = crate::proxy::loose_route(&mut req.msg, &locality);
        if let Some(flow) = routed.flow {
            req.dst_uri = Some(flow.uri());
        }
        req.route_verified |= routed.verified;
        Ok(if !routed.had_route {
            proxy::RouteCheck::None
        } else if req.route_verified {
            proxy::RouteCheck::Verified
        } else {
            proxy::RouteCheck::Unverified
        })
    }

    fn append_branch(
        &mut self,
        req: Resource<RequestCtx>,
        uri: String,
    ) -> Result<Result<(), wit::Error>> {
        if let Err(err) = sip::Uri::parse(&uri) {
            return Ok(Err(invalid(err)));
        }
        if self.req(&req)?.branches.len() >= MAX_BRANCHES {
            return Ok(Err(wit::Error::NotAllowed(format!(
                "at most {MAX_BRANCHES} branches per relay"
            ))));
        }
        if let Err(err) = self.spend_branch(uri.len()) {
            return Ok(Err(err));
        }
        let req = self.req_mut(&req)?;
        req.branches.push(crate::proxy::BranchTarget {
            uri,
            ..Default::default()
        });
        Ok(Ok(()))
    }

    /// Kept with the transaction's variables, which live as long as it.
    fn arm(&mut self, hooks: proxy::Hooks) -> Result<()> {
        self.vars.armed = Some(Armed {
            on_reply: hooks.contains(proxy::Hooks::ON_REPLY),
            on_failure: hooks.contains(proxy::Hooks::ON_FAILURE),
            on_branch: hooks.contains(proxy::Hooks::ON_BRANCH),
        });
        Ok(())
    }
}

/// A refusal of the SIP core, as the reply it calls for.
fn refused(r: sip::Rejection) -> wit::Error {
    wit::Error::Refused(reply(r.code, r.reason, r.headers))
}

impl vars::Host for HostState {
    fn get(&mut self, name: String) -> Result<Option<String>> {
        Ok(self.vars.values.get(&name).cloned())
    }

    /// Past the tenant's `vars` or `var_bytes` the transaction keeps what
    /// it had.
    fn set(&mut self, name: String, value: String) -> Result<Result<(), wit::Error>> {
        let limits = &self.guest.limits;
        let old = self.vars.values.get(&name).map(|v| name.len() + v.len());
        if old.is_none() && self.vars.values.len() >= limits.vars {
            return Ok(Err(wit::Error::NotAllowed(format!(
                "more than {} variables in one transaction (limits.vars)",
                limits.vars
            ))));
        }
        let held: usize = self
            .vars
            .values
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum();
        let after = (held - old.unwrap_or(0)).saturating_add(name.len() + value.len());
        if after > limits.var_bytes {
            return Ok(Err(wit::Error::NotAllowed(format!(
                "more than {} bytes of variables in one transaction (limits.var_bytes)",
                limits.var_bytes
            ))));
        }
        self.vars.values.insert(name, value);
        Ok(Ok(()))
    }

    fn remove(&mut self, name: String) -> Result<bool> {
        Ok(self.vars.values.remove(&name).is_some())
    }
}

impl config::Host for HostState {
    fn param(&mut self, name: String) -> Result<Option<String>> {
        Ok(self.guest.params.get(&name).cloned())
    }

    fn enabled(&mut self, name: String) -> Result<bool> {
        Ok(self.guest.params.get(&name).is_some_and(|v| {
            matches!(v.to_ascii_lowercase().as_str(), "yes" | "true" | "1" | "on")
        }))
    }
}

impl HostState {
    /// Writes to the host's log for the tenant, and to the capture of
    /// `wisp test` when there is one.
    pub(super) fn log(&self, level: log::Level, message: &str) {
        let tenant = self.guest.tenant.as_str();
        if let Some(capture) = &self.guest.log_capture {
            let name = match level {
                log::Level::Error => "error",
                log::Level::Warn => "warn",
                log::Level::Info => "info",
                log::Level::Debug => "debug",
            };
            capture
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((name.to_owned(), message.to_owned()));
        }
        match level {
            log::Level::Error => tracing::error!(tenant, "{message}"),
            log::Level::Warn => tracing::warn!(tenant, "{message}"),
            log::Level::Info => tracing::info!(tenant, "{message}"),
            log::Level::Debug => tracing::debug!(tenant, "{message}"),
        }
    }
}

impl log::Host for HostState {
    fn write(&mut self, level: log::Level, message: String) -> Result<()> {
        self.log(level, &message);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `from-parts` and `to-parts` give, from the header parsed once,
    /// what a guest got by parsing the URI text `from-uri` and `to-uri`
    /// give it (`parse-uri`): one call where it took two.
    #[test]
    fn header_parts_are_what_parse_uri_gives_for_the_uri_text() {
        for value in [
            "<sip:alice@example.com>;tag=1",
            "Alice <sip:Alice@Example.COM:5080;transport=tcp>",
            "sip:bob@192.0.2.1:5062",
            "<sips:carol%40x@[2001:db8::5]:5061;lr>",
            "<sip:user;npdi=yes@example.com?subject=x>",
            "\"A, B\" <sip:alice:pw@example.com>",
            "<sip:127.0.0.1>",
            "<tel:+15551234;phone-context=example.com>",
        ] {
            let header = sip::NameAddr::parse(value).expect("a From or To");
            let via_text = sip::Uri::parse(&header.uri.to_text())
                .ok()
                .map(|uri| uri_parts(&uri));
            assert_eq!(Some(uri_parts(&header.uri)), via_text, "{value}");
        }
    }

    #[test]
    fn ip_text_writes_what_display_writes() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "192.168.100.255",
            "255.255.255.255",
            "::1",
            "2001:db8::5",
        ] {
            let ip: std::net::IpAddr = ip.parse().expect("an address");
            assert_eq!(ip_text(ip), ip.to_string());
        }
    }

    /// The first version of `request_uri_host_port` (split_once based),
    /// which the one-pass version must agree with.
    fn reference_host_port(uri: &str) -> Option<(sip::Host, u16)> {
        let (sips, rest) = match uri.split_once(':') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("sip") => (false, rest),
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("sips") => (true, rest),
            _ => return None,
        };
        let (mut start, mut end) = (0, None);
        for (i, c) in rest.bytes().enumerate() {
            match c {
                b'@' => (start, end) = (i + 1, None),
                b';' if end.is_none() => end = Some(i),
                b'?' => {
                    end = end.or(Some(i));
                    break;
                }
                _ => {}
            }
        }
        let hostport = rest.get(start..end.unwrap_or(rest.len()))?;
        let (host, port) = if hostport.starts_with('[') {
            let (ip, port) = hostport.split_once(']')?;
            (&hostport[..ip.len() + 1], port.strip_prefix(':'))
        } else {
            match hostport.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (hostport, None),
            }
        };
        let port = match port {
            Some(port) => port.parse().ok()?,
            None if sips => 5061,
            None => 5060,
        };
        Some((sip::Host::parse(host).ok()?, port))
    }

    #[test]
    fn host_port_agrees_with_the_reference() {
        for uri in [
            "sip:service@127.0.0.1:25090",
            "sip:127.0.0.1",
            "sips:alice@example.com",
            "SIP:Alice@Example.COM:5080;transport=tcp",
            "sip:user;npdi=yes@example.com;lr?subject=x",
            "sip:alice:secret@[2001:db8::5]:5062;maddr=10.0.0.1",
            "sip:[::1]",
            "sip:[::1]:",
            "sip:[::1]x",
            "sip:alice@example.com?h=a%40b",
            "sip:alice:pw@example.com:5090;transport=tcp",
            "sip:a:b@c:d@host:77",
            "sip:host;x=a:b",
            "sip:host?a=b:c",
            "sip:host:5060?a=b:c",
            "sip:host:+5060",
            "sip:host:99999",
            "sip:host:",
            "sip:host:5060:5061",
            "sip:@host",
            "sip:user@",
            "sip:",
            "sips:",
            "sip",
            "si:host",
            "sipx:host",
            "tel:+1555",
            "",
            ":",
            "sip::5060",
            "sIpS:bob@Example.com:5061;a",
        ] {
            assert_eq!(
                request_uri_host_port(uri),
                reference_host_port(uri),
                "{uri}"
            );
        }
    }

    #[test]
    fn request_uri_host_and_port_agree_with_the_full_parse() {
        for uri in [
            "sip:service@127.0.0.1:25090",
            "sip:127.0.0.1",
            "sips:alice@example.com",
            "SIP:Alice@Example.COM:5080;transport=tcp",
            "sip:user;npdi=yes@example.com;lr?subject=x",
            "sip:alice:secret@[2001:db8::5]:5062;maddr=10.0.0.1",
            "sip:[::1]",
            "sip:alice@example.com?h=a%40b",
            "sip:alice:pw@example.com:5090;transport=tcp",
            "sip:bob@127.0.0.2:5080",
            "sip:host:5060?a=b:c",
            "SIPS:bob@Example.com",
        ] {
            let full = sip::Uri::parse(uri).unwrap_or_else(|e| panic!("{uri}: {e}"));
            let default = if full.scheme == sip::Scheme::Sips {
                5061
            } else {
                5060
            };
            assert_eq!(
                request_uri_host_port(uri),
                Some((full.host.clone(), full.port.unwrap_or(default))),
                "{uri}"
            );
        }
        for uri in [
            "tel:+1555",
            "mailto:a@b",
            "sip:alice@",
            "sip:host:99999",
            "sip:[::1",
        ] {
            assert_eq!(request_uri_host_port(uri), None, "{uri}");
        }
    }
}
