//! The request a hook is routing, with Kamailio-style verbs on it.

use std::cell::OnceCell;
use std::fmt;

use crate::bindings::wisp::proxy::{proxy, rr, tm, types};

pub use types::{Endpoint, Transport};

/// A failed host call: what the proxy refused and why.
#[derive(Debug, Clone)]
pub enum Error {
    /// A host call refused its arguments or could not act.
    Host(types::Error),
    /// A check failed; the rejection says which reply it calls for.
    Rejected(Rejection),
}

/// A check that failed and the reply it calls for.
pub type Rejection = proxy::Rejection;

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Host(types::Error::Invalid(m)) => write!(f, "invalid argument: {m}"),
            Error::Host(types::Error::NotAllowed(m)) => write!(f, "not allowed: {m}"),
            Error::Host(types::Error::Transport(m)) => write!(f, "transport error: {m}"),
            Error::Rejected(r) => write!(f, "rejected: {} {}", r.code, r.reason),
        }
    }
}

impl std::error::Error for Error {}

impl From<types::Error> for Error {
    fn from(err: types::Error) -> Self {
        Error::Host(err)
    }
}

/// The request being routed. Reading is lazy on the host side: only the
/// headers you ask for are parsed. In `on_reply` and `on_failure` it is the
/// request as relayed; in `on_branch`, that branch's copy.
pub struct Request<'a> {
    raw: &'a types::Request,
    /// The method never changes during a hook, and routes test it many
    /// times (`is_method` in nearly every sub-route): each host call costs
    /// about as much as a dozen lines of routing logic, so it is asked once.
    method: OnceCell<String>,
}

impl<'a> Request<'a> {
    pub(crate) fn new(raw: &'a types::Request) -> Self {
        Request {
            raw,
            method: OnceCell::new(),
        }
    }

    fn cached_method(&self) -> &str {
        self.method.get_or_init(|| self.raw.method())
    }

    /// The raw resource, for calls the wrapper does not cover.
    pub fn raw(&self) -> &types::Request {
        self.raw
    }

    /// The method (`$rm`), e.g. "INVITE".
    pub fn method(&self) -> String {
        self.cached_method().to_owned()
    }

    /// Whether the method is one of `methods` (Kamailio's `is_method("INVITE|BYE")`).
    pub fn is_method(&self, methods: &[&str]) -> bool {
        let method = self.cached_method();
        methods.contains(&method)
    }

    /// The Request-URI (`$ru`).
    pub fn uri(&self) -> String {
        self.raw.uri()
    }

    /// Replaces the Request-URI (`$ru = "..."`).
    pub fn set_uri(&self, uri: &str) -> Result<()> {
        Ok(self.raw.set_uri(uri)?)
    }

    /// The user part of the Request-URI (`$rU`).
    pub fn uri_user(&self) -> Option<String> {
        self.raw.uri_user()
    }

    /// The host part of the Request-URI (`$rd`).
    pub fn uri_host(&self) -> String {
        self.raw.uri_host()
    }

    /// The first value of a header (`$hdr(Name)`); compact names work too.
    pub fn header(&self, name: &str) -> Option<String> {
        self.raw.header(name)
    }

    /// Every value of a header, comma-separated lists split.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.raw.header_values(name)
    }

    /// The names of all headers in order.
    pub fn header_names(&self) -> Vec<String> {
        self.raw.header_names()
    }

    /// Appends a header (`append_hf("Name: value\r\n")`).
    pub fn append_header(&self, name: &str, value: &str) -> Result<()> {
        Ok(self.raw.append_header(name, value)?)
    }

    /// Removes every header of that name (`remove_hf`); returns how many.
    pub fn remove_header(&self, name: &str) -> u32 {
        self.raw.remove_header(name)
    }

    /// The body (`$rb`).
    pub fn body(&self) -> Vec<u8> {
        self.raw.body()
    }

    /// Where the request came from (`$si`, `$sp`, `$proto`).
    pub fn source(&self) -> Endpoint {
        self.raw.source()
    }

    /// Whether To carries a tag: the request belongs to a dialog (`has_totag()`).
    pub fn has_to_tag(&self) -> bool {
        self.raw.has_to_tag()
    }

    /// Answers the request on its server transaction (`sl_send_reply` /
    /// `t_reply(code, reason)`): a retransmitted request gets the same
    /// answer, and over UDP a final answer to INVITE is retransmitted until
    /// the ACK comes. From `on_failure`, it answers the caller instead of
    /// the best branch response. An ACK is never answered.
    pub fn reply(&self, code: u16, reason: &str) -> Result<()> {
        self.reply_with(code, reason, &[])
    }

    /// Answers like [`reply`](Self::reply), with extra headers given as (name, value).
    pub fn reply_with(&self, code: u16, reason: &str, headers: &[(&str, &str)]) -> Result<()> {
        let headers: Vec<types::Header> = headers
            .iter()
            .map(|(name, value)| types::Header {
                name: name.to_string(),
                value: value.to_string(),
            })
            .collect();
        Ok(proxy::reply(self.raw, code, reason, &headers)?)
    }

    /// Answers with the reply a failed check calls for, with the headers
    /// it needs (a 420 lists the Unsupported extensions).
    pub fn reject(&self, rejection: &Rejection) -> Result<()> {
        Ok(proxy::reply(
            self.raw,
            rejection.code,
            &rejection.reason,
            &rejection.headers,
        )?)
    }

    /// Forwards statelessly to the next hop: the first Route, else the
    /// Request-URI (Kamailio's `forward()`). No transaction follows the
    /// request: responses go back by Via, no hook sees them. Prefer
    /// [`relay`](Self::relay) except for ACK and stray CANCEL.
    pub fn forward(&self) -> Result<()> {
        Ok(proxy::forward(self.raw, None)?)
    }

    /// Forwards statelessly to an explicit destination: a SIP URI or
    /// `host:port` (Kamailio's `forward("host", port)` / `$du`).
    pub fn forward_to(&self, destination: &str) -> Result<()> {
        Ok(proxy::forward(self.raw, Some(destination))?)
    }

    /// Relays statefully (`t_relay()`): one branch to the first Route, else
    /// the Request-URI, plus one per [`append_branch`](Self::append_branch),
    /// all in parallel. INVITEs are answered 100 Trying; responses pass
    /// through [`Router::on_reply`](crate::Router::on_reply), and when every
    /// branch failed, [`Router::on_failure`](crate::Router::on_failure) runs.
    /// Called from `on_failure`, it starts new branches (serial forking).
    /// An ACK is forwarded statelessly.
    pub fn relay(&self) -> Result<()> {
        Ok(tm::relay(self.raw, None)?)
    }

    /// Relays statefully with the first branch sent to `destination`, a SIP
    /// URI or `host:port` (`$du = ...; t_relay()`).
    pub fn relay_to(&self, destination: &str) -> Result<()> {
        Ok(tm::relay(self.raw, Some(destination))?)
    }

    /// Adds a branch to the next [`relay`](Self::relay) (`append_branch(uri)`):
    /// a copy of the request with `uri` as its Request-URI.
    pub fn append_branch(&self, uri: &str) -> Result<()> {
        Ok(tm::append_branch(self.raw, uri)?)
    }

    /// How long the transaction waits for a final answer, in milliseconds
    /// (`t_set_fr(invite_ms, final_ms)`): `invite_ms` once an INVITE branch
    /// had a provisional, `final_ms` otherwise. Pending branches are then
    /// cancelled and count as 408. The defaults are Kamailio's: 120 s
    /// (`fr_inv_timer`) and 30 s (`fr_timer`).
    pub fn set_timers(&self, invite_ms: u32, final_ms: u32) {
        tm::set_timers(self.raw, invite_ms, final_ms)
    }

    /// Checks and decrements Max-Forwards (`mf_process_maxfwd_header(limit)`).
    /// Err holds the 483 rejection when no hops are left.
    pub fn max_forwards(&self, limit: u32) -> Result<(), Rejection> {
        proxy::max_forwards(self.raw, limit)
    }

    /// Checks what a proxy must refuse (`sanity_check()`).
    pub fn sanity_check(&self) -> Result<(), Rejection> {
        proxy::sanity_check(self.raw)
    }

    /// Adds Record-Route so the dialog stays on this proxy (`record_route()`).
    pub fn record_route(&self) -> Result<()> {
        Ok(rr::record_route(self.raw)?)
    }

    /// Follows the Route set of an in-dialog request (`loose_route()`).
    pub fn loose_route(&self) -> bool {
        rr::loose_route(self.raw)
    }

    /// Whether `loose_route` followed a Route this proxy record-routed
    /// for this dialog itself (its integrity parameter checks), rather
    /// than one the sender wrote.
    pub fn route_verified(&self) -> bool {
        rr::route_verified(self.raw)
    }

    /// Whether the request came from a trusted source (`trusted` in the
    /// configuration): relayed without authentication by default routing.
    pub fn source_trusted(&self) -> bool {
        proxy::source_trusted(self.raw)
    }

    /// Whether the Request-URI names this proxy (`uri == myself`).
    pub fn uri_is_myself(&self) -> bool {
        self.raw.uri_is_myself()
    }

    /// The From URI (`$fu`).
    pub fn from_uri(&self) -> String {
        self.raw.from_uri()
    }

    /// The To URI (`$tu`).
    pub fn to_uri(&self) -> String {
        self.raw.to_uri()
    }

    /// The user of the From URI (`$fU`).
    pub fn from_user(&self) -> Option<String> {
        proxy::parse_uri(&self.raw.from_uri()).and_then(|u| u.user)
    }

    /// The host of the From URI (`$fd`); empty when From is unparsable.
    pub fn from_host(&self) -> String {
        proxy::parse_uri(&self.raw.from_uri())
            .map(|u| u.host)
            .unwrap_or_default()
    }

    /// The user of the To URI (`$tU`).
    pub fn to_user(&self) -> Option<String> {
        proxy::parse_uri(&self.raw.to_uri()).and_then(|u| u.user)
    }

    /// The host of the To URI (`$td`).
    pub fn to_host(&self) -> String {
        proxy::parse_uri(&self.raw.to_uri())
            .map(|u| u.host)
            .unwrap_or_default()
    }

    /// Whether the From URI names this proxy (`from_uri == myself`).
    pub fn from_is_myself(&self) -> bool {
        proxy::is_myself(&self.raw.from_uri())
    }
}
