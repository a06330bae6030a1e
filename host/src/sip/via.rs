//! The Via header value (RFC 3261 §20.42, §25.1; received/rport per
//! RFC 3581 and RFC 5118 §4.5).

use std::borrow::Cow;
use std::fmt;

use super::error::ParseError;
use super::syntax::{
    find_byte, is_token, is_token_char, is_ws, scan_params, trim_ws, trim_ws_start, Params,
};
use super::uri::{parse_hostport, Host};
use super::values::first_comma;

/// One Via value: `SIP/2.0/transport sent-by;params`.
///
/// The parameters are kept as one string, `;name[=value]...` with the
/// whitespace the ABNF allows around ";" and "=" removed and the values as
/// written (quoted values keep their quotes): one allocation per Via
/// instead of two per parameter, and a lookup scans a few dozen bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// The transport as written ("UDP", "TCP", "TLS", "SCTP", "WS", ...).
    pub transport: Cow<'static, str>,
    pub host: Host,
    pub port: Option<u16>,
    params: Params,
}

fn bad(why: &str) -> ParseError {
    ParseError::bad_header("Via", why)
}

/// The transports a Via names, without an allocation when written in
/// upper case as usual.
fn transport_name(t: &str) -> Cow<'static, str> {
    const KNOWN: [&str; 7] = ["UDP", "TCP", "TLS", "SCTP", "WS", "WSS", "TLS-SCTP"];
    match KNOWN.iter().find(|k| **k == t) {
        Some(k) => Cow::Borrowed(k),
        None => Cow::Owned(t.to_string()),
    }
}

/// What a Via value is made of, as slices of it.
struct Parts<'a> {
    transport: &'a str,
    host: Host,
    port: Option<u16>,
    /// The parameters as written, from the first ";" on.
    params: &'a str,
    /// Whether `params` holds whitespace outside quoted values (and must be
    /// rewritten to be kept).
    params_ws: bool,
}

/// Parses one Via value (not a comma-separated list): the sent-protocol,
/// the sent-by and the parameters, checked, without allocation (but for a
/// host name, or whitespace around the sent-by's colon).
///
/// `element`: `value` is an element of a list already split on its
/// separating commas ([`Message::values`](super::Message::values)), so it
/// holds none and the scan for one is skipped.
fn parse_parts(value: &str, element: bool) -> Result<Parts<'_>, ParseError> {
    let value = trim_ws(value);
    if !element && first_comma(value).is_some() {
        return Err(bad("several values"));
    }
    // sent-protocol = protocol-name SLASH protocol-version SLASH transport
    let mut fields = [""; 3];
    // The usual spelling, "SIP/2.0/", needs no scan.
    let (mut rest, first) = match value.strip_prefix("SIP/2.0/") {
        Some(rest) => {
            fields[0] = "SIP";
            fields[1] = "2.0";
            (rest, 2)
        }
        None => (value, 0),
    };
    for (i, field) in fields.iter_mut().enumerate().skip(first) {
        rest = trim_ws_start(rest);
        let len = rest.bytes().take_while(|&c| is_token_char(c)).count();
        *field = &rest[..len];
        rest = trim_ws_start(&rest[len..]);
        if i < 2 {
            rest = rest
                .strip_prefix('/')
                .ok_or_else(|| bad("bad sent-protocol"))?;
        }
    }
    let [name, version, transport] = fields;
    if !name.eq_ignore_ascii_case("SIP") || version != "2.0" || !is_token(transport) {
        return Err(bad("bad sent-protocol"));
    }
    // sent-by = host [ COLON port ]; runs to the first ";" (hosts hold
    // no ";"), with the whitespace of COLON removed.
    let end = rest.bytes().position(|c| c == b';').unwrap_or(rest.len());
    let sent_by = trim_ws(&rest[..end]);
    if sent_by.is_empty() {
        return Err(bad("missing sent-by"));
    }
    // Drop the whitespace COLON allows; any other whitespace stays and
    // makes the host or port invalid.
    let colon = match sent_by.bytes().rposition(|c| c == b']') {
        Some(close) => find_byte(&sent_by[close..], b':').map(|i| i + close),
        None => find_byte(sent_by, b':'),
    };
    let joined;
    let sent_by = match colon {
        Some(i) => {
            let (host, port) = (trim_ws(&sent_by[..i]), trim_ws(&sent_by[i + 1..]));
            if host.len() + 1 + port.len() == sent_by.len() {
                sent_by
            } else {
                joined = format!("{host}:{port}");
                joined.as_str()
            }
        }
        None => sent_by,
    };
    if sent_by.bytes().any(is_ws) {
        return Err(bad("bad sent-by"));
    }
    let (host, port) = parse_hostport(sent_by).map_err(|e| bad(e.reason()))?;
    let params = &rest[end..];
    // Values of the parameters whose syntax is fixed by the RFCs (the first
    // of each name).
    let (mut received, mut rport, mut branch) = (false, false, false);
    let params_ws = scan_params(params, "Via", |name, value| {
        if !received && name.eq_ignore_ascii_case("received") {
            received = true;
            // via-received = IPv4address / IPv6reference (RFC 5118 §4.5: the
            // unbracketed IPv6 form of RFC 3261's ABNF is not accepted).
            let ok = value.is_some_and(|r| {
                (r.starts_with('[') || find_byte(r, b':').is_none())
                    && matches!(Host::parse(r), Ok(Host::V4(_) | Host::V6(_)))
            });
            if !ok {
                return Err(bad("bad received parameter"));
            }
        } else if !rport && name.eq_ignore_ascii_case("rport") {
            rport = true;
            if let Some(p) = value {
                if p.is_empty()
                    || !p.bytes().all(|c| c.is_ascii_digit())
                    || p.parse::<u16>().is_err()
                {
                    return Err(bad("bad rport parameter"));
                }
            }
        } else if !branch && name.eq_ignore_ascii_case("branch") {
            branch = true;
            if !value.is_some_and(is_token) {
                return Err(bad("bad branch parameter"));
            }
        }
        Ok(())
    })?;
    Ok(Parts {
        transport,
        host,
        port,
        params,
        params_ws,
    })
}

impl Via {
    /// Parses one Via value (not a comma-separated list). Whitespace is
    /// allowed around "/" ":" ";" "=" as the ABNF's SLASH, COLON, SEMI and
    /// EQUAL say (RFC 4475 wsinv).
    pub fn parse(value: &str) -> Result<Via, ParseError> {
        Self::from_parts(parse_parts(value, false)?)
    }

    /// [`Via::parse`] of an element of the Via list as
    /// [`Message::values`](super::Message::values) gives it (which holds no
    /// separating comma).
    pub(super) fn parse_element(value: &str) -> Result<Via, ParseError> {
        Self::from_parts(parse_parts(value, true)?)
    }

    fn from_parts(parts: Parts<'_>) -> Result<Via, ParseError> {
        let params = Params::kept(parts.params, parts.params_ws);
        Ok(Via {
            transport: transport_name(parts.transport),
            host: parts.host,
            port: parts.port,
            params,
        })
    }

    /// Whether `value`, an element of the Via list as
    /// [`Message::values`](super::Message::values) gives it, is one valid
    /// Via value, as [`Via::parse`] would find, without keeping it (the
    /// Vias below the top one).
    pub(super) fn check(value: &str) -> Result<(), ParseError> {
        parse_parts(value, true).map(|_| ())
    }

    /// A parameter by name (case-insensitive): `Some(None)` for a flag such
    /// as `;rport`, `Some(Some(v))` for `;name=v` (as written).
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params.get(name)
    }

    /// The parameters in order, as written (quoted values keep their quotes).
    pub fn params(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.params.iter()
    }

    /// The branch parameter.
    pub fn branch(&self) -> Option<&str> {
        self.param("branch").flatten()
    }

    /// Whether the `alias` parameter (RFC 5923) is there.
    pub fn alias(&self) -> bool {
        self.param("alias").is_some()
    }

    /// The received parameter (as written; an IPv6 address keeps brackets).
    pub fn received(&self) -> Option<&str> {
        self.param("received").flatten()
    }

    /// The rport parameter (RFC 3581): `Some(None)` when present without a
    /// value, `Some(Some(port))` when filled in.
    pub fn rport(&self) -> Option<Option<u16>> {
        self.param("rport").map(|v| v.and_then(|p| p.parse().ok()))
    }

    /// Sets a parameter, replacing the value of one of the same name
    /// (case-insensitive) or appending it.
    pub fn set_param(&mut self, name: &str, value: Option<&str>) {
        self.params = self.params.with([(name, value)]);
    }

    /// This Via with each of `changes` made as [`Via::set_param`] makes
    /// it, in one pass over the parameters and one copy (a proxy stamps
    /// `received` and `rport` on the top Via of every request it receives).
    pub fn with_params<const N: usize>(&self, changes: [(&str, Option<&str>); N]) -> Via {
        Via {
            transport: self.transport.clone(),
            host: self.host.clone(),
            port: self.port,
            params: self.params.with(changes),
        }
    }

    /// Whether the branch starts with the RFC 3261 magic cookie (§8.1.1.7).
    pub fn has_rfc3261_branch(&self) -> bool {
        self.branch().is_some_and(|b| b.starts_with("z9hG4bK"))
    }

    /// Appends the value as `Display` writes it, without the formatting
    /// machinery (a proxy writes the top Via of every request it stamps).
    pub(super) fn write_to(&self, out: &mut String) {
        out.reserve(16 + self.transport.len() + self.params.as_str().len() + 48);
        out.push_str("SIP/2.0/");
        out.push_str(&self.transport);
        out.push(' ');
        self.host.push_to(out);
        if let Some(p) = self.port {
            out.push(':');
            super::write::push_decimal(out, u64::from(p));
        }
        out.push_str(self.params.as_str());
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        self.write_to(&mut out);
        f.write_str(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let v = Via::parse("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc;rport").unwrap();
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.host, Host::V4("192.0.2.1".parse().unwrap()));
        assert_eq!(v.port, Some(5060));
        assert_eq!(v.branch(), Some("z9hG4bKabc"));
        assert_eq!(v.rport(), Some(None));
        assert!(v.has_rfc3261_branch());
        assert_eq!(
            v.to_string(),
            "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc;rport"
        );

        let v = Via::parse("SIP  /   2.0 /UDP    192.0.2.2;branch=390skdjuw").unwrap();
        assert_eq!(v.branch(), Some("390skdjuw"));
        let v =
            Via::parse("SIP  / 2.0  / TCP     spindle.example.com   ; branch  =   z9hG4bK9ikj8")
                .unwrap();
        assert_eq!(v.host, Host::Name("spindle.example.com".into()));
        assert_eq!(v.branch(), Some("z9hG4bK9ikj8"));
        let v = Via::parse("SIP/2.0/UDP [2001:db8::9:1]:6050;received=[2001:db8::9:255]").unwrap();
        assert_eq!(v.port, Some(6050));
        assert_eq!(v.received(), Some("[2001:db8::9:255]"));
        let v = Via::parse("SIP/2.0/TCP host:5060 ;received=192.0.2.200").unwrap();
        assert_eq!(v.received(), Some("192.0.2.200"));
    }

    #[test]
    fn rejects() {
        for s in [
            "SIP/2.0/UDP 192.0.2.15;;,;,,",
            "SIP/2.0/UDP",
            "SIP/2.0/UDP ;branch=x",
            "SIP/7.0/UDP host",
            "SIP/2.0 host",
            "SIP/2.0/UDP [2001:db8::9:1];received=2001:db8::9:255",
            "SIP/2.0/UDP host;received=host.example.com",
            "SIP/2.0/UDP host;rport=99999",
            "SIP/2.0/UDP host:port",
            "SIP/2.0/UDP a b",
            "SIP/2.0/UDP a, SIP/2.0/UDP b",
            "SIP/2.0/UDP host;branch=",
        ] {
            assert!(Via::parse(s).is_err(), "{s}");
        }
    }

    #[test]
    fn set_param() {
        let mut v = Via::parse("SIP/2.0/UDP h;rport;branch=z9hG4bK1").unwrap();
        v.set_param("received", Some("192.0.2.9"));
        v.set_param("RPORT", Some("5062"));
        assert_eq!(v.rport(), Some(Some(5062)));
        assert_eq!(
            v.to_string(),
            "SIP/2.0/UDP h;rport=5062;branch=z9hG4bK1;received=192.0.2.9"
        );
        // Whitespace around ";" and "=" is dropped, quoted values kept.
        let mut v = Via::parse("SIP/2.0/TCP h:5 ; x = \"a; b\" ;rport ; branch=z9hG4bK2").unwrap();
        assert_eq!(
            v.params().collect::<Vec<_>>(),
            vec![
                ("x", Some("\"a; b\"")),
                ("rport", None),
                ("branch", Some("z9hG4bK2"))
            ]
        );
        v.set_param("X", None);
        v.set_param("rport", Some("1"));
        assert_eq!(v.to_string(), "SIP/2.0/TCP h:5;x;rport=1;branch=z9hG4bK2");
        assert_eq!(Via::parse(&v.to_string()).unwrap(), v);
        assert!(Via::check("SIP/2.0/UDP h;branch=z9hG4bK1").is_ok());
        assert!(Via::check("SIP/2.0/UDP h;received=x").is_err());
        assert!(Via::parse_element("SIP/2.0/UDP h;branch=z9hG4bK1").is_ok());
        assert!(Via::parse("SIP/2.0/UDP h, SIP/2.0/UDP i").is_err());
    }

    #[test]
    fn with_params_is_set_param_in_one_pass() {
        for text in [
            "SIP/2.0/UDP h",
            "SIP/2.0/UDP h;rport;branch=z9hG4bK1",
            "SIP/2.0/UDP h:5;branch=z9hG4bK1;RPort",
            "SIP/2.0/UDP h;received=192.0.2.1;rport=9;branch=z9hG4bK1",
            "SIP/2.0/TCP h:5 ; x = \"a;rport=1\" ;rport ; branch=z9hG4bK2",
            "SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bK3;rport;rport=7;received=192.0.2.1",
        ] {
            let via = Via::parse(text).unwrap();
            for changes in [
                [("received", Some("192.0.2.9")), ("rport", Some("5062"))],
                [("rport", None), ("Received", Some("[2001:db8::2]"))],
            ] {
                let mut one_by_one = via.clone();
                for (name, value) in changes {
                    one_by_one.set_param(name, value);
                }
                let at_once = via.with_params(changes);
                assert_eq!(at_once, one_by_one, "{text} {changes:?}");
                assert_eq!(at_once.to_string(), one_by_one.to_string());
            }
            assert_eq!(via.with_params([]), via);
        }
    }
}
