//! The host side of the `wisp:proxy` WIT interfaces: thin adapters from
//! guest calls to the SIP core and the proxy.

use wasmtime::component::Resource;
use wasmtime::Result;

use super::call::{HostState, ResponseCtx};
use super::wisp::proxy::{config, log, proxy, rr, tm, types, vars};
use crate::proxy::checks;
use crate::proxy::{Action, RequestCtx};
use crate::sip::{self, HeaderName};

/// The first value of a header, by any of its names (`$hdr(name)`).
fn first_value(msg: &sip::Message, name: &str) -> Option<String> {
    msg.values(&HeaderName::parse(name))
        .next()
        .map(str::to_owned)
}

/// Every value of a header, comma lists split.
fn all_values(msg: &sip::Message, name: &str) -> Vec<String> {
    msg.values(&HeaderName::parse(name))
        .map(str::to_owned)
        .collect()
}

/// Header names in order, as written.
fn names(msg: &sip::Message) -> Vec<String> {
    msg.headers()
        .iter()
        .map(|h| h.raw_name().to_owned())
        .collect()
}

fn invalid(err: impl std::fmt::Display) -> types::Error {
    types::Error::Invalid(err.to_string())
}

impl HostState {
    fn req(&self, handle: &Resource<RequestCtx>) -> Result<&RequestCtx> {
        Ok(self.table.get(handle)?)
    }

    fn req_mut(&mut self, handle: &Resource<RequestCtx>) -> Result<&mut RequestCtx> {
        Ok(self.table.get_mut(handle)?)
    }
}

impl types::Host for HostState {}

/// The error of a host call past a per-hook cap of the tenant's limits.
fn past_cap(what: &str, cap: usize, field: &str) -> types::Error {
    types::Error::NotAllowed(format!(
        "more than {cap} {what} in one hook call (limits.{field})"
    ))
}

impl HostState {
    /// Takes `headers` headers and `bytes` bytes of text from the hook's
    /// caps, or takes nothing and says which cap it would pass. The caller
    /// then does what it was asked (which may still fail: the count stays,
    /// so a hook cannot try without end).
    pub(super) fn spend_text(&mut self, headers: usize, bytes: usize) -> Result<(), types::Error> {
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
    ) -> Result<(), types::Error> {
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
    fn spend_branch(&mut self, bytes: usize) -> Result<(), types::Error> {
        let cap = self.guest.limits.branches_per_hook;
        if self.effects.branches >= cap {
            return Err(past_cap("branches", cap, "branches_per_hook"));
        }
        self.spend_text(0, bytes)?;
        self.effects.branches += 1;
        Ok(())
    }

    /// Queues a forward or relay after checking its explicit destination
    /// and the hook's caps.
    fn push_routing(&mut self, action: Action) -> Result<(), types::Error> {
        let (Action::Forward { destination } | Action::Relay { destination }) = &action else {
            return Ok(());
        };
        if let Some(dest) = destination {
            crate::proxy::Destination::parse(dest).map_err(invalid)?;
        }
        let bytes = destination.as_ref().map_or(0, String::len);
        if matches!(action, Action::Forward { .. }) {
            let cap = self.guest.limits.forwards_per_hook;
            if self.effects.forwards >= cap {
                return Err(past_cap("forwards", cap, "forwards_per_hook"));
            }
            self.spend_text(0, bytes)?;
            self.effects.forwards += 1;
        } else {
            self.spend_branch(bytes)?;
        }
        self.actions.push(action);
        Ok(())
    }
}

impl types::HostRequest for HostState {
    fn method(&mut self, req: Resource<RequestCtx>) -> Result<String> {
        let req = self.req(&req)?;
        Ok(req
            .msg
            .method()
            .map(|m| m.as_str().to_owned())
            .unwrap_or_default())
    }

    fn uri(&mut self, req: Resource<RequestCtx>) -> Result<String> {
        Ok(self.req(&req)?.msg.uri().unwrap_or_default().to_owned())
    }

    fn set_uri(
        &mut self,
        req: Resource<RequestCtx>,
        uri: String,
    ) -> Result<Result<(), types::Error>> {
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

    fn uri_user(&mut self, req: Resource<RequestCtx>) -> Result<Option<String>> {
        let req = self.req(&req)?;
        Ok(req
            .msg
            .uri()
            .and_then(|u| sip::Uri::parse(u).ok())
            .and_then(|u| u.user))
    }

    fn uri_host(&mut self, req: Resource<RequestCtx>) -> Result<String> {
        let req = self.req(&req)?;
        Ok(req
            .msg
            .uri()
            .and_then(|u| sip::Uri::parse(u).ok())
            .map(|u| match u.host {
                // $rd is the host as written, without IPv6 brackets.
                sip::Host::V6(ip) => ip.to_string(),
                host => host.to_string(),
            })
            .unwrap_or_default())
    }

    fn uri_is_myself(&mut self, req: Resource<RequestCtx>) -> Result<bool> {
        let req = self.req(&req)?;
        Ok(req
            .msg
            .uri()
            .and_then(|u| sip::Uri::parse(u).ok())
            .is_some_and(|uri| self.guest.is_myself(&uri)))
    }

    fn header(&mut self, req: Resource<RequestCtx>, name: String) -> Result<Option<String>> {
        Ok(first_value(&self.req(&req)?.msg, &name))
    }

    fn header_values(&mut self, req: Resource<RequestCtx>, name: String) -> Result<Vec<String>> {
        Ok(all_values(&self.req(&req)?.msg, &name))
    }

    fn header_names(&mut self, req: Resource<RequestCtx>) -> Result<Vec<String>> {
        Ok(names(&self.req(&req)?.msg))
    }

    fn append_header(
        &mut self,
        req: Resource<RequestCtx>,
        name: String,
        value: String,
    ) -> Result<Result<(), types::Error>> {
        self.req(&req)?;
        if let Err(err) = checks::header_field(&name, &value) {
            return Ok(Err(invalid(err)));
        }
        if let Err(err) = self.spend_text(1, name.len() + value.len()) {
            return Ok(Err(err));
        }
        let req = self.req_mut(&req)?;
        Ok(req
            .msg
            .append_header(HeaderName::parse(&name), &value)
            .map_err(invalid))
    }

    fn remove_header(&mut self, req: Resource<RequestCtx>, name: String) -> Result<u32> {
        let req = self.req_mut(&req)?;
        let removed = req.msg.remove_headers(&HeaderName::parse(&name));
        Ok(u32::try_from(removed).unwrap_or(u32::MAX))
    }

    fn body(&mut self, req: Resource<RequestCtx>) -> Result<Vec<u8>> {
        Ok(self.req(&req)?.msg.body().to_vec())
    }

    fn source(&mut self, req: Resource<RequestCtx>) -> Result<types::Endpoint> {
        let source = self.req(&req)?.source;
        Ok(types::Endpoint {
            transport: match source.transport {
                crate::transport::Transport::Udp => types::Transport::Udp,
                crate::transport::Transport::Tcp => types::Transport::Tcp,
                crate::transport::Transport::Tls => types::Transport::Tls,
                crate::transport::Transport::Ws => types::Transport::Ws,
                crate::transport::Transport::Wss => types::Transport::Wss,
                crate::transport::Transport::Quic => types::Transport::Quic,
            },
            ip: source.remote.ip().to_string(),
            port: source.remote.port(),
        })
    }

    fn has_to_tag(&mut self, req: Resource<RequestCtx>) -> Result<bool> {
        let req = self.req(&req)?;
        // Initial requests are the common case and carry no tag: a To value
        // without the word needs no parsing.
        if !req
            .msg
            .header(&HeaderName::To)
            .is_some_and(|to| sip::mentions(to, "tag"))
        {
            return Ok(false);
        }
        Ok(req.msg.to().ok().is_some_and(|to| to.tag().is_some()))
    }

    fn from_uri(&mut self, req: Resource<RequestCtx>) -> Result<String> {
        let req = self.req(&req)?;
        Ok(req
            .msg
            .from()
            .map(|f| f.uri.to_string())
            .unwrap_or_default())
    }

    fn to_uri(&mut self, req: Resource<RequestCtx>) -> Result<String> {
        let req = self.req(&req)?;
        Ok(req.msg.to().map(|t| t.uri.to_string()).unwrap_or_default())
    }

    fn drop(&mut self, _req: Resource<RequestCtx>) -> Result<()> {
        // The request belongs to the host; the pool takes it back after the
        // hook. A guest has only borrows, so nothing to free here.
        Ok(())
    }
}

impl HostState {
    fn res(&self, handle: &Resource<ResponseCtx>) -> Result<&ResponseCtx> {
        Ok(self.table.get(handle)?)
    }
}

impl types::HostResponse for HostState {
    fn status(&mut self, res: Resource<ResponseCtx>) -> Result<u16> {
        Ok(self.res(&res)?.msg.status().unwrap_or(0))
    }

    fn reason(&mut self, res: Resource<ResponseCtx>) -> Result<String> {
        Ok(self.res(&res)?.msg.reason().unwrap_or_default().to_owned())
    }

    fn header(&mut self, res: Resource<ResponseCtx>, name: String) -> Result<Option<String>> {
        Ok(first_value(&self.res(&res)?.msg, &name))
    }

    fn header_values(&mut self, res: Resource<ResponseCtx>, name: String) -> Result<Vec<String>> {
        let name = HeaderName::parse(&name);
        let values = self
            .res(&res)?
            .msg
            .values(&name)
            .map(str::to_owned)
            .collect();
        Ok(values)
    }

    fn header_names(&mut self, res: Resource<ResponseCtx>) -> Result<Vec<String>> {
        let res = self.res(&res)?;
        Ok(res
            .msg
            .headers()
            .iter()
            .map(|h| h.raw_name().to_owned())
            .collect())
    }

    fn append_header(
        &mut self,
        res: Resource<ResponseCtx>,
        name: String,
        value: String,
    ) -> Result<Result<(), types::Error>> {
        self.res(&res)?;
        if let Err(err) = checks::header_field(&name, &value) {
            return Ok(Err(invalid(err)));
        }
        if let Err(err) = self.spend_text(1, name.len() + value.len()) {
            return Ok(Err(err));
        }
        let res: &mut ResponseCtx = self.table.get_mut(&res)?;
        Ok(res
            .msg
            .append_header(HeaderName::parse(&name), &value)
            .map_err(invalid))
    }

    fn remove_header(&mut self, res: Resource<ResponseCtx>, name: String) -> Result<u32> {
        let name = HeaderName::parse(&name);
        if is_core_header(&name) {
            return Ok(0);
        }
        let res: &mut ResponseCtx = self.table.get_mut(&res)?;
        Ok(u32::try_from(res.msg.remove_headers(&name)).unwrap_or(u32::MAX))
    }

    fn body(&mut self, res: Resource<ResponseCtx>) -> Result<Vec<u8>> {
        Ok(self.res(&res)?.msg.body().to_vec())
    }

    fn drop(&mut self, _res: Resource<ResponseCtx>) -> Result<()> {
        Ok(())
    }
}

/// Headers that route a response back; a hook may not remove them.
fn is_core_header(name: &HeaderName) -> bool {
    matches!(
        name,
        HeaderName::Via | HeaderName::From | HeaderName::To | HeaderName::CallId | HeaderName::CSeq
    )
}

impl tm::Host for HostState {
    fn relay(
        &mut self,
        req: Resource<RequestCtx>,
        destination: Option<String>,
    ) -> Result<Result<(), types::Error>> {
        self.req(&req)?;
        Ok(self.push_routing(Action::Relay { destination }))
    }

    fn append_branch(
        &mut self,
        req: Resource<RequestCtx>,
        uri: String,
    ) -> Result<Result<(), types::Error>> {
        if let Err(err) = sip::Uri::parse(&uri) {
            return Ok(Err(invalid(err)));
        }
        if self.req(&req)?.branches.len() >= MAX_BRANCHES {
            return Ok(Err(types::Error::NotAllowed(format!(
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

    fn set_timers(
        &mut self,
        req: Resource<RequestCtx>,
        invite_ms: u32,
        final_ms: u32,
    ) -> Result<()> {
        let req = self.req_mut(&req)?;
        let ms = |v: u32| std::time::Duration::from_millis(u64::from(v.max(1)));
        req.fr_timers = Some((ms(invite_ms), ms(final_ms)));
        Ok(())
    }
}

/// Branches one relay may fork to: a guest cannot flood the network.
const MAX_BRANCHES: usize = 16;

impl vars::Host for HostState {
    fn get(&mut self, name: String) -> Result<Option<String>> {
        Ok(self.vars.values.get(&name).cloned())
    }

    /// Past the tenant's `vars` or `var_bytes` the call traps (the WIT
    /// gives `set` no error): the transaction keeps what it had.
    fn set(&mut self, name: String, value: Option<String>) -> Result<()> {
        let Some(value) = value else {
            self.vars.values.remove(&name);
            return Ok(());
        };
        let limits = &self.guest.limits;
        let old = self.vars.values.get(&name).map(|v| name.len() + v.len());
        if old.is_none() && self.vars.values.len() >= limits.vars {
            return Err(wasmtime::Error::msg(format!(
                "vars.set: more than {} variables in one transaction (limits.vars)",
                limits.vars
            )));
        }
        let held: usize = self
            .vars
            .values
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum();
        let after = (held - old.unwrap_or(0)).saturating_add(name.len() + value.len());
        if after > limits.var_bytes {
            return Err(wasmtime::Error::msg(format!(
                "vars.set: more than {} bytes of variables in one transaction (limits.var_bytes)",
                limits.var_bytes
            )));
        }
        self.vars.values.insert(name, value);
        Ok(())
    }

    fn set_flag(&mut self, flag: u8) -> Result<()> {
        self.vars.flags |= flag_bit(flag);
        Ok(())
    }

    fn reset_flag(&mut self, flag: u8) -> Result<()> {
        self.vars.flags &= !flag_bit(flag);
        Ok(())
    }

    fn is_flag_set(&mut self, flag: u8) -> Result<bool> {
        Ok(self.vars.flags & flag_bit(flag) != 0)
    }
}

/// Flags 0–63; higher numbers wrap rather than trap.
fn flag_bit(flag: u8) -> u64 {
    1u64 << (flag % 64)
}

impl proxy::Host for HostState {
    fn reply(
        &mut self,
        req: Resource<RequestCtx>,
        code: u16,
        reason: String,
        headers: Vec<types::Header>,
    ) -> Result<Result<(), types::Error>> {
        let req = self.req(&req)?;
        if req.msg.method() == Some(&sip::Method::Ack) {
            return Ok(Err(types::Error::NotAllowed(
                "ACK is never answered".into(),
            )));
        }
        if !(100..=699).contains(&code) {
            return Ok(Err(invalid(format!("{code} is not a SIP status code"))));
        }
        if let Err(err) = checks::reason_phrase(&reason) {
            return Ok(Err(invalid(err)));
        }
        for h in &headers {
            if let Err(err) = checks::header_field(&h.name, &h.value) {
                return Ok(Err(invalid(err)));
            }
        }
        let spent = self.spend_reply(
            &reason,
            headers.iter().map(|h| (h.name.as_str(), h.value.as_str())),
        );
        if let Err(err) = spent {
            return Ok(Err(err));
        }
        let extra = headers
            .into_iter()
            .map(|h| (HeaderName::parse(&h.name), h.value))
            .collect();
        self.actions.push(Action::Reply {
            code,
            reason,
            headers: extra,
        });
        Ok(Ok(()))
    }

    fn forward(
        &mut self,
        req: Resource<RequestCtx>,
        destination: Option<String>,
    ) -> Result<Result<(), types::Error>> {
        self.req(&req)?;
        Ok(self.push_routing(Action::Forward { destination }))
    }

    fn max_forwards(
        &mut self,
        req: Resource<RequestCtx>,
        limit: u32,
    ) -> Result<Result<(), proxy::Rejection>> {
        let req = self.req_mut(&req)?;
        Ok(checks::max_forwards(req, limit).map_err(rejection))
    }

    fn sanity_check(&mut self, req: Resource<RequestCtx>) -> Result<Result<(), proxy::Rejection>> {
        let req = self.req(&req)?;
        Ok(sip::sanity_check(&req.msg).map_err(rejection))
    }

    fn is_myself(&mut self, uri: String) -> Result<bool> {
        Ok(sip::Uri::parse(&uri).is_ok_and(|uri| self.guest.is_myself(&uri)))
    }

    fn source_trusted(&mut self, req: Resource<RequestCtx>) -> Result<bool> {
        Ok(self.req(&req)?.source.trusted)
    }

    fn parse_uri(&mut self, uri: String) -> Result<Option<proxy::UriParts>> {
        Ok(sip::Uri::parse(&uri).ok().map(|u| proxy::UriParts {
            user: u.user,
            host: match u.host {
                sip::Host::V6(ip) => ip.to_string(),
                host => host.to_string(),
            },
            port: u.port,
        }))
    }
}

fn rejection(r: sip::Rejection) -> proxy::Rejection {
    proxy::Rejection {
        code: r.code,
        reason: r.reason,
        headers: r
            .headers
            .into_iter()
            .map(|(name, value)| types::Header {
                name: name.as_str().to_owned(),
                value,
            })
            .collect(),
    }
}

impl rr::Host for HostState {
    fn record_route(&mut self, req: Resource<RequestCtx>) -> Result<Result<(), types::Error>> {
        let req = self.req_mut(&req)?;
        if req.msg.method() == Some(&sip::Method::Register) {
            return Ok(Err(types::Error::NotAllowed(
                "REGISTER is never record-routed (RFC 3261 §10.2)".into(),
            )));
        }
        req.record_route = true;
        Ok(Ok(()))
    }

    fn loose_route(&mut self, req: Resource<RequestCtx>) -> Result<bool> {
        let locality = self.guest.locality.clone();
        let req = self.req_mut(&req)?;
        let routed = crate::proxy::loose_route(&mut req.msg, &locality);
        if let Some(flow) = routed.flow {
            req.dst_uri = Some(flow.uri());
        }
        req.route_verified |= routed.verified;
        Ok(routed.had_route)
    }

    fn route_verified(&mut self, req: Resource<RequestCtx>) -> Result<bool> {
        Ok(self.req(&req)?.route_verified)
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

impl log::Host for HostState {
    fn write(&mut self, level: log::Level, message: String) -> Result<()> {
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
                .push((name.to_owned(), message.clone()));
        }
        match level {
            log::Level::Error => tracing::error!(tenant, "{message}"),
            log::Level::Warn => tracing::warn!(tenant, "{message}"),
            log::Level::Info => tracing::info!(tenant, "{message}"),
            log::Level::Debug => tracing::debug!(tenant, "{message}"),
        }
        Ok(())
    }
}
