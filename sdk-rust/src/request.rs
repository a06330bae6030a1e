//! The request a hook is routing, with Kamailio-style verbs on it.

use std::cell::OnceCell;
use std::fmt;

use crate::bindings::wisp::proxy::proxy;
use crate::bindings::wisp::proxy::sip::{
    self, Action, Endpoint, Header, Method, Relay, Reply, RequestInfo, UriParts,
};
use crate::{Error, Exit, Fields, Flow, Message, Result, RouteCheck};

/// The request being routed. Reading is lazy on the host side: only what
/// you ask for is parsed, and what the hook's record already holds
/// (method, dialog, source) costs no host call. In `on_reply` and
/// `on_failure` it is the request as relayed; in `on_branch`, that
/// branch's copy. Headers and body: see [`Message`].
pub struct Request<'a> {
    raw: &'a sip::Request,
    /// Given to the route hook; asked of the host once in the others.
    info: OnceCell<RequestInfo>,
    /// The method alone, when a hook other than `route` asks only for it
    /// (cheaper than the whole record).
    method: OnceCell<Method>,
    fields: OnceCell<Fields>,
    /// From and To as the host parsed them, asked once per hook: the host
    /// owns both headers, so they cannot change while the hook runs. The
    /// URI text and its parts are separate calls (a REGISTER reads To's
    /// user and host: one call, without the URI written out and parsed
    /// again).
    from: Address,
    to: Address,
}

/// The URI of From or To: as text and in parts, each asked when first read.
#[derive(Default)]
struct Address {
    uri: OnceCell<String>,
    parts: OnceCell<Option<UriParts>>,
}

impl<'a> Request<'a> {
    pub(crate) fn new(raw: &'a sip::Request) -> Self {
        Request {
            raw,
            info: OnceCell::new(),
            method: OnceCell::new(),
            fields: OnceCell::new(),
            from: Address::default(),
            to: Address::default(),
        }
    }

    pub(crate) fn with_info(raw: &'a sip::Request, info: RequestInfo) -> Self {
        let req = Request::new(raw);
        let _ = req.info.set(info);
        req
    }

    /// The raw resource, for calls the wrapper does not cover.
    pub fn raw(&self) -> &sip::Request {
        self.raw
    }

    /// What the route hook received: method, dialog, Request-URI naming
    /// this proxy, source. It is the request as it arrived: a later
    /// [`set_uri`](Self::set_uri) does not change `uri_is_myself`.
    pub fn info(&self) -> &RequestInfo {
        self.info.get_or_init(|| self.raw.info())
    }

    /// The method (`$rm`); compare with `==` or `matches!`
    /// (`is_method("INVITE|BYE")`).
    pub fn method(&self) -> &Method {
        match self.info.get() {
            Some(info) => &info.method,
            None => self.method.get_or_init(|| self.raw.method()),
        }
    }

    /// Whether To carries a tag: the request belongs to a dialog (`has_totag()`).
    pub fn in_dialog(&self) -> bool {
        self.info().in_dialog
    }

    /// Whether the Request-URI names this proxy (`uri == myself`).
    pub fn uri_is_myself(&self) -> bool {
        self.info().uri_is_myself
    }

    /// Where the request came from (`$si`, `$sp`, `$proto`).
    pub fn source(&self) -> &Endpoint {
        &self.info().source
    }

    /// Whether the source is in the `trusted` addresses of the
    /// configuration (by default loopback only): relayed without
    /// authentication by the default routing.
    pub fn source_trusted(&self) -> bool {
        self.info().source_trusted
    }

    /// The Request-URI (`$ru`).
    pub fn uri(&self) -> String {
        self.raw.uri()
    }

    /// The Request-URI's parts; None when it is not a SIP URI.
    pub fn uri_parts(&self) -> Option<UriParts> {
        self.raw.uri_parts()
    }

    /// The user part of the Request-URI (`$rU`).
    pub fn uri_user(&self) -> Option<String> {
        self.raw.uri_parts().and_then(|u| u.user)
    }

    /// The host part of the Request-URI (`$rd`); empty when it is not a
    /// SIP URI.
    pub fn uri_host(&self) -> String {
        self.raw.uri_parts().map(|u| u.host).unwrap_or_default()
    }

    /// Replaces the Request-URI (`$ru = "..."`). The destination and Path
    /// a `lookup` set are dropped with the old one.
    pub fn set_uri(&self, uri: &str) -> Result<()> {
        self.raw.set_uri(uri).map_err(Error::from)
    }

    /// The From URI (`$fu`); empty when From cannot be parsed.
    pub fn from_uri(&self) -> String {
        self.uri_of_from().to_string()
    }

    /// The To URI (`$tu`).
    pub fn to_uri(&self) -> String {
        self.to.uri.get_or_init(|| self.raw.to_uri()).clone()
    }

    fn uri_of_from(&self) -> &str {
        self.from.uri.get_or_init(|| self.raw.from_uri())
    }

    fn parts_of_from(&self) -> Option<&UriParts> {
        self.from
            .parts
            .get_or_init(|| self.raw.from_parts())
            .as_ref()
    }

    fn parts_of_to(&self) -> Option<&UriParts> {
        self.to.parts.get_or_init(|| self.raw.to_parts()).as_ref()
    }

    /// The user of the From URI (`$fU`).
    pub fn from_user(&self) -> Option<String> {
        self.parts_of_from().and_then(|u| u.user.clone())
    }

    /// The host of the From URI (`$fd`); empty when From is unparsable.
    pub fn from_host(&self) -> String {
        self.parts_of_from()
            .map(|u| u.host.clone())
            .unwrap_or_default()
    }

    /// The user of the To URI (`$tU`).
    pub fn to_user(&self) -> Option<String> {
        self.parts_of_to().and_then(|u| u.user.clone())
    }

    /// The host of the To URI (`$td`).
    pub fn to_host(&self) -> String {
        self.parts_of_to()
            .map(|u| u.host.clone())
            .unwrap_or_default()
    }

    /// Whether the From URI names this proxy (`from_uri == myself`).
    pub fn from_is_myself(&self) -> bool {
        crate::is_myself(self.uri_of_from())
    }

    /// Checks and decrements Max-Forwards (`mf_process_maxfwd_header`),
    /// adding it with `limit` when absent (None: the tenant param
    /// `MAX_FORWARDS`, else 10). Refused with 483 Too Many Hops.
    pub fn max_forwards(&self, limit: Option<u32>) -> Result<()> {
        proxy::max_forwards(self.raw, limit).map_err(Error::from)
    }

    /// Checks what a proxy must refuse (`sanity_check()`): refused with
    /// the reply the failure calls for (400, 416, 420 with Unsupported).
    pub fn sanity_check(&self) -> Result<()> {
        proxy::sanity_check(self.raw).map_err(Error::from)
    }

    /// Adds Record-Route so that the dialog stays on this proxy
    /// (`record_route()`).
    pub fn record_route(&self) -> Result<()> {
        proxy::record_route(self.raw).map_err(Error::from)
    }

    /// Follows the Route set of an in-dialog request (`loose_route()`),
    /// and says whether this proxy record-routed it for this dialog
    /// ([`RouteCheck::Verified`]) or cannot vouch for it.
    pub fn loose_route(&self) -> RouteCheck {
        proxy::loose_route(self.raw)
    }

    /// Adds a branch to the next relay (`append_branch(uri)`): a copy of
    /// the request with `uri` as its Request-URI. Refused past the
    /// tenant's `branches_per_hook` or the proxy's `max_breadth`.
    pub fn append_branch(&self, uri: &str) -> Result<()> {
        proxy::append_branch(self.raw, uri).map_err(Error::from)
    }

    /// Answers the request (`sl_send_reply` / `t_reply(code, reason)`): a
    /// 1xx or 2xx on its server transaction, so that a retransmitted
    /// request gets the same answer; a refusal (300–699) once,
    /// statelessly, so that a retransmission is routed again (with the
    /// same To tag). From `on_failure`, it answers the caller instead of the
    /// best branch response. An ACK is never answered.
    pub fn reply(&self, code: u16, reason: &str) -> Flow {
        self.send(Reply::new(code, reason))
    }

    /// Answers like [`reply`](Self::reply), with extra headers given as
    /// (name, value).
    pub fn reply_with(&self, code: u16, reason: &str, headers: &[(&str, &str)]) -> Flow {
        let headers = headers
            .iter()
            .map(|(name, value)| Header {
                name: (*name).to_owned(),
                value: (*value).to_owned(),
            })
            .collect();
        self.send(Reply {
            code,
            reason: Some(reason.to_owned()),
            headers,
        })
    }

    /// Answers with a reply built elsewhere: the 200 OK of
    /// [`registrar::save`](crate::registrar::save), say.
    pub fn send(&self, reply: Reply) -> Flow {
        Err(Exit::Decided(Action::Reply(reply)))
    }

    /// Relays statefully (`t_relay()`): one branch to the destination a
    /// `lookup` or `loose_route` set, else the first Route, else the
    /// Request-URI, plus one per [`append_branch`](Self::append_branch),
    /// all in parallel, with the tenant's timeouts. INVITEs are answered
    /// 100 Trying; responses pass through
    /// [`Router::on_reply`](crate::Router::on_reply), and when every
    /// branch failed, [`Router::on_failure`](crate::Router::on_failure)
    /// runs. From `on_failure`, it starts new branches (serial forking).
    /// An ACK is forwarded statelessly.
    pub fn relay(&self) -> Flow {
        self.relay_with(Relay::default())
    }

    /// Relays statefully with the first branch sent to `destination`, a
    /// SIP URI or `host:port` (`$du = ...; t_relay()`).
    pub fn relay_to(&self, destination: &str) -> Flow {
        self.relay_with(Relay {
            destination: Some(destination.to_owned()),
            ..Relay::default()
        })
    }

    /// Relays statefully as [`Relay`] says: its destination and timeouts
    /// (`t_set_fr(invite_ms, final_ms); t_relay()`), each None taking the
    /// default.
    pub fn relay_with(&self, relay: Relay) -> Flow {
        Err(Exit::Decided(Action::Relay(relay)))
    }

    /// Forwards statelessly (Kamailio's `forward()`) as
    /// [`relay`](Self::relay) would choose the next hop. No transaction
    /// follows the request: responses go back by Via, no hook sees them.
    /// Prefer [`relay`](Self::relay) but for the ACK of a 2xx.
    pub fn forward(&self) -> Flow {
        Err(Exit::Decided(Action::Forward(None)))
    }

    /// Forwards statelessly to a SIP URI or `host:port`
    /// (`forward("host", port)`).
    pub fn forward_to(&self, destination: &str) -> Flow {
        Err(Exit::Decided(Action::Forward(Some(destination.to_owned()))))
    }

    /// Kamailio's `exit` (or `drop`): in `route` the request is forgotten
    /// without an answer; in `on_reply` the provisional response is
    /// dropped; in `on_failure` the best response goes upstream.
    pub fn exit(&self) -> Flow {
        Err(Exit::Decided(Action::Drop))
    }
}

impl Message for Request<'_> {
    fn fields(&self) -> &Fields {
        self.fields.get_or_init(|| Fields::new(self.raw.fields()))
    }
}

impl Method {
    /// The method's token as on the wire, e.g. "INVITE".
    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Register => "REGISTER",
            Method::Options => "OPTIONS",
            Method::Info => "INFO",
            Method::Update => "UPDATE",
            Method::Prack => "PRACK",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Publish => "PUBLISH",
            Method::Message => "MESSAGE",
            Method::Refer => "REFER",
            Method::Other(token) => token,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
