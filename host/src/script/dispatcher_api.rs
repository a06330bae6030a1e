//! The host side of the `dispatcher` WIT interface: the calling tenant's
//! sets ([`crate::services::dispatcher`]), and the failover list of the
//! transaction, kept in its variables so that `next` in the failure hook
//! finds what `select` in the route hook left.

use wasmtime::component::Resource;
use wasmtime::Result;

use super::call::HostState;
use super::host_api::reply;
use super::wisp::proxy::dispatcher as wit_ds;
use super::wisp::proxy::sip::Error;
use super::wisp::proxy::vars::Host as _;
use crate::proxy::RequestCtx;
use crate::services::dispatcher::{self as ds, select, Algorithm, Cause, State};
use crate::sip::Uri;

/// The transaction variable holding the failover list: "SET TARGET
/// CURRENT NEXT...", URIs without spaces (the configuration checks it).
/// Readable by the routing like any variable, and counted in its limits.
pub const VAR: &str = "wisp.dispatcher";
/// Fallbacks kept for `next` at most.
const MAX_FALLBACKS: usize = 16;

fn state_of(state: State) -> wit_ds::State {
    match state {
        State::Up => wit_ds::State::Up,
        State::Down => wit_ds::State::Down,
        State::Disabled => wit_ds::State::Disabled,
    }
}

fn destination(set: u32, d: &ds::Dest) -> wit_ds::Destination {
    wit_ds::Destination {
        set,
        uri: d.uri.clone(),
        weight: d.weight,
        priority: d.priority,
        attrs: d.attrs.clone(),
        state: state_of(d.state()),
    }
}

fn target_code(target: wit_ds::Target) -> char {
    match target {
        wit_ds::Target::Destination => 'd',
        wit_ds::Target::RequestUri => 'r',
        wit_ds::Target::None => 'n',
    }
}

/// What the variable says: (set, target, current, fallbacks).
fn parse_var(text: &str) -> Option<(u32, wit_ds::Target, &str, Vec<&str>)> {
    let mut words = text.split(' ');
    let set = words.next()?.parse().ok()?;
    let target = match words.next()? {
        "d" => wit_ds::Target::Destination,
        "r" => wit_ds::Target::RequestUri,
        "n" => wit_ds::Target::None,
        _ => return None,
    };
    let current = words.next()?;
    Some((set, target, current, words.collect()))
}

impl HostState {
    /// Does `target` with `uri` on the request.
    fn aim(
        &mut self,
        req: &Resource<RequestCtx>,
        uri: &str,
        target: wit_ds::Target,
    ) -> Result<Result<(), Error>> {
        match target {
            wit_ds::Target::None => Ok(Ok(())),
            wit_ds::Target::Destination => {
                self.req_mut(req)?.dst_uri = Some(uri.to_owned());
                Ok(Ok(()))
            }
            wit_ds::Target::RequestUri => {
                let ctx = self.req_mut(req)?;
                let (Some(mut ruri), Ok(dest)) = (
                    ctx.msg.uri().and_then(|u| Uri::parse(u).ok()),
                    Uri::parse(uri),
                ) else {
                    return Ok(Err(Error::Invalid(
                        "the Request-URI is not a SIP URI".into(),
                    )));
                };
                ruri.host = dest.host;
                ruri.port = dest.port;
                // As set-uri: a new Request-URI drops what a lookup set.
                ctx.dst_uri = None;
                ctx.path.clear();
                Ok(ctx
                    .msg
                    .set_uri(&ruri.to_text())
                    .map_err(|e| Error::Invalid(e.to_string())))
            }
        }
    }

    fn sets(&self) -> Option<std::sync::Arc<ds::TenantSets>> {
        self.guest.services.dispatcher.tenant(&self.guest.tenant)
    }

    /// The text a hash algorithm hashes.
    fn hash_key(&self, req: &Resource<RequestCtx>, algorithm: wit_ds::Algorithm) -> Result<String> {
        let msg = &self.req(req)?.msg;
        let uri_key = |uri: Option<Uri>| {
            uri.map(|u| {
                format!(
                    "{}@{}:{}",
                    u.user.unwrap_or_default(),
                    u.host.to_string().to_ascii_lowercase(),
                    u.port.unwrap_or(0)
                )
            })
            .unwrap_or_default()
        };
        Ok(match algorithm {
            wit_ds::Algorithm::HashCallId => msg.call_id().unwrap_or_default().to_owned(),
            wit_ds::Algorithm::HashFromUri => uri_key(msg.from().ok().map(|f| f.uri.clone())),
            wit_ds::Algorithm::HashToUri => uri_key(msg.to().ok().map(|t| t.uri.clone())),
            wit_ds::Algorithm::HashRequestUri => {
                uri_key(msg.uri().and_then(|u| Uri::parse(u).ok()))
            }
            _ => String::new(),
        })
    }
}

impl wit_ds::Host for HostState {
    fn select(
        &mut self,
        req: Resource<RequestCtx>,
        set: u32,
        algorithm: wit_ds::Algorithm,
        target: wit_ds::Target,
    ) -> Result<Result<wit_ds::Destination, Error>> {
        let Some(chosen_set) = self.sets().filter(|s| s.set(set).is_some()) else {
            return Ok(Err(Error::Invalid(format!(
                "no dispatcher set {set} in this tenant's configuration"
            ))));
        };
        let Some(the_set) = chosen_set.set(set) else {
            return Ok(Err(Error::Invalid(format!("no dispatcher set {set}"))));
        };
        let alg = match algorithm {
            wit_ds::Algorithm::RoundRobin => Algorithm::RoundRobin,
            wit_ds::Algorithm::Priority => Algorithm::Priority,
            wit_ds::Algorithm::Weight => Algorithm::Weight,
            wit_ds::Algorithm::Random => Algorithm::Random(crate::random::u64()),
            hashed => Algorithm::Hash(select::hash(&self.hash_key(&req, hashed)?)),
        };
        let order = select::order(the_set, alg);
        let Some(&first) = order.first() else {
            let refusal = self.issue(reply(503, "Service Unavailable", Vec::new()));
            return Ok(Err(Error::Refused(refusal)));
        };
        let chosen = &the_set.dests[first];
        let mut var = format!("{set} {} {}", target_code(target), chosen.uri);
        for &i in order.iter().skip(1).take(MAX_FALLBACKS) {
            var.push(' ');
            var.push_str(&the_set.dests[i].uri);
        }
        if let Err(err) = self.set(VAR.to_owned(), var)? {
            return Ok(Err(err));
        }
        let found = destination(set, chosen);
        if let Err(err) = self.aim(&req, &found.uri, target)? {
            return Ok(Err(err));
        }
        Ok(Ok(found))
    }

    fn next(&mut self, req: Resource<RequestCtx>) -> Result<Option<wit_ds::Destination>> {
        let Some(text) = self.vars.values.get(VAR).cloned() else {
            return Ok(None);
        };
        let Some((set, target, _, fallbacks)) = parse_var(&text) else {
            return Ok(None);
        };
        let Some(sets) = self.sets() else {
            return Ok(None);
        };
        let Some(the_set) = sets.set(set) else {
            return Ok(None);
        };
        // The first fallback still up; those before it are dropped.
        let Some(at) = fallbacks
            .iter()
            .position(|uri| the_set.dest(uri).is_some_and(|d| d.state() == State::Up))
        else {
            self.vars.values.remove(VAR);
            return Ok(None);
        };
        let Some(chosen) = the_set.dest(fallbacks[at]) else {
            return Ok(None);
        };
        let mut var = format!("{set} {} {}", target_code(target), chosen.uri);
        for uri in &fallbacks[at + 1..] {
            var.push(' ');
            var.push_str(uri);
        }
        // Never longer than what select wrote: no limit to trip.
        self.vars.values.insert(VAR.to_owned(), var);
        let found = destination(set, chosen);
        if self.aim(&req, &found.uri, target)?.is_err() {
            return Ok(None);
        }
        Ok(Some(found))
    }

    fn current(&mut self) -> Result<Option<wit_ds::Destination>> {
        let Some(text) = self.vars.values.get(VAR) else {
            return Ok(None);
        };
        let Some((set, _, current, _)) = parse_var(text) else {
            return Ok(None);
        };
        Ok(self.sets().and_then(|s| {
            s.set(set)
                .and_then(|s| s.dest(current))
                .map(|d| destination(set, d))
        }))
    }

    fn mark(&mut self, set: u32, uri: String, state: wit_ds::State) -> Result<Result<(), Error>> {
        let state = match state {
            wit_ds::State::Up => State::Up,
            wit_ds::State::Down => State::Down,
            wit_ds::State::Disabled => State::Disabled,
        };
        if self
            .guest
            .services
            .dispatcher
            .mark(&self.guest.tenant, set, &uri, state, Cause::Mark)
        {
            Ok(Ok(()))
        } else {
            Ok(Err(Error::Invalid(format!(
                "no destination {uri} in dispatcher set {set}"
            ))))
        }
    }

    fn destinations(&mut self, set: u32) -> Result<Vec<wit_ds::Destination>> {
        Ok(self
            .sets()
            .and_then(|s| {
                s.set(set)
                    .map(|s| s.dests.iter().map(|d| destination(set, d)).collect())
            })
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_failover_list_reads_back() {
        let (set, target, current, rest) =
            parse_var("7 d sip:a sip:b sip:c;transport=tcp").expect("parses");
        assert_eq!(
            (set, target, current),
            (7, wit_ds::Target::Destination, "sip:a")
        );
        assert_eq!(rest, ["sip:b", "sip:c;transport=tcp"]);
        assert!(parse_var("7 x sip:a").is_none());
        assert!(parse_var("seven d sip:a").is_none());
        assert_eq!(parse_var("1 n sip:a").expect("parses").3.len(), 0);
    }
}
