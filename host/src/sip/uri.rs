//! URIs: SIP/SIPS (RFC 3261 §19.1, §25.1, with IPv6 references per RFC 5118),
//! tel (RFC 3966, lightly) and other absolute URIs (kept opaque).
//!
//! Representation choices:
//! - `sip:`/`sips:` are parsed fully. Escapes (`%XX`) are validated but kept
//!   as written, so `Display` gives back the same text.
//! - `tel:` puts the number in `Host::Name` and its `;params` in `params`.
//! - any other scheme keeps everything after `scheme:` in `Host::Name`, with
//!   no params or headers; it only has to be free of whitespace, controls and
//!   `<>"` (RFC 3986 absolute-URI, loosely).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::error::ParseError;
use super::syntax::Params;

/// The URI scheme; matched case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    Sip,
    Sips,
    Tel,
    /// Any other scheme, as written.
    Other(String),
}

impl Scheme {
    pub fn as_str(&self) -> &str {
        match self {
            Scheme::Sip => "sip",
            Scheme::Sips => "sips",
            Scheme::Tel => "tel",
            Scheme::Other(s) => s,
        }
    }
}

/// A host: a domain name (as written), or an IP address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Name(String),
    V4(Ipv4Addr),
    V6(Ipv6Addr),
}

impl Host {
    /// Parses `hostname / IPv4address / "[" IPv6address "]"`. The RFC 3261
    /// ABNF bug that allows three colons (RFC 5118 §4.4) is rejected: only
    /// what `std::net::Ipv6Addr` accepts is an IPv6 address.
    pub fn parse(s: &str) -> Result<Host, ParseError> {
        if let Some(inner) = s.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or_else(|| ParseError::new("Bad host: unclosed IPv6 reference"))?;
            return inner
                .parse()
                .map(Host::V6)
                .map_err(|_| ParseError::new("Bad host: invalid IPv6 address"));
        }
        if s.is_empty() {
            return Err(ParseError::new("Bad host: empty"));
        }
        if s.bytes().all(|c| c.is_ascii_digit() || c == b'.') {
            return s
                .parse()
                .map(Host::V4)
                .map_err(|_| ParseError::new("Bad host: invalid IPv4 address"));
        }
        // hostname = *( domainlabel "." ) toplabel [ "." ]; we also let "_"
        // through, which real deployments use.
        let ok = s
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_'))
            && !s.starts_with(['.', '-'])
            && !s.contains("..");
        if ok {
            Ok(Host::Name(s.to_string()))
        } else {
            Err(ParseError::new("Bad host: invalid characters"))
        }
    }

    /// Appends the host as `Display` writes it; an IPv4 address without
    /// the formatting machinery.
    pub(super) fn push_to(&self, out: &mut String) {
        match self {
            Host::Name(n) => out.push_str(n),
            Host::V4(a) => {
                for (i, octet) in a.octets().into_iter().enumerate() {
                    if i > 0 {
                        out.push('.');
                    }
                    super::syntax::push_decimal(out, u64::from(octet));
                }
            }
            Host::V6(a) => {
                use std::fmt::Write;
                let _ = write!(out, "[{a}]");
            }
        }
    }

    /// The IP address, when the host is one.
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        match self {
            Host::Name(_) => None,
            Host::V4(a) => Some((*a).into()),
            Host::V6(a) => Some((*a).into()),
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::V4(a) => write!(f, "{a}"),
            Host::V6(a) => write!(f, "[{a}]"),
        }
    }
}

/// Splits `host[:port]` where host may be an IPv6 reference. Shared with
/// Via's sent-by.
pub(super) fn parse_hostport(s: &str) -> Result<(Host, Option<u16>), ParseError> {
    let (host, port) = if s.starts_with('[') {
        match s.find(']') {
            Some(end) => {
                let rest = &s[end + 1..];
                let port = match rest.strip_prefix(':') {
                    Some(p) => Some(p),
                    None if rest.is_empty() => None,
                    None => return Err(ParseError::new("Bad host: junk after IPv6 reference")),
                };
                (&s[..=end], port)
            }
            None => return Err(ParseError::new("Bad host: unclosed IPv6 reference")),
        }
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let host = Host::parse(host)?;
    let port = match port {
        None => None,
        Some(p) => Some(parse_port(p)?),
    };
    Ok((host, port))
}

fn parse_port(p: &str) -> Result<u16, ParseError> {
    if p.is_empty() || !p.bytes().all(|c| c.is_ascii_digit()) {
        return Err(ParseError::new("Bad port"));
    }
    p.parse().map_err(|_| ParseError::new("Bad port"))
}

/// A parsed URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uri {
    pub scheme: Scheme,
    pub user: Option<String>,
    pub password: Option<String>,
    pub host: Host,
    pub port: Option<u16>,
    /// `;name[=value]` URI parameters, as written.
    params: Params,
    /// `?name=value&...` URI headers, as written (still escaped).
    pub headers: Vec<(String, String)>,
}

/// unreserved = alphanum / mark (RFC 3261 §25.1).
fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
        )
}

/// Checks that `s` is non-empty (unless `allow_empty`) and made of
/// unreserved characters, `extra` and well-formed `%XX` escapes.
fn check_chars(
    s: &str,
    extra: &[u8],
    allow_empty: bool,
    what: &'static str,
) -> Result<(), ParseError> {
    let b = s.as_bytes();
    if b.is_empty() && !allow_empty {
        return Err(ParseError::new(what));
    }
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            let hex = |j: usize| b.get(j).is_some_and(|c| c.is_ascii_hexdigit());
            if !(hex(i + 1) && hex(i + 2)) {
                return Err(ParseError::new(what));
            }
            i += 3;
            continue;
        }
        if !(is_unreserved(c) || extra.contains(&c)) {
            return Err(ParseError::new(what));
        }
        i += 1;
    }
    Ok(())
}

/// user-unreserved (RFC 3261 §25.1).
const USER_EXTRA: &[u8] = b"&=+$,;?/";
/// password's extra characters.
const PASSWORD_EXTRA: &[u8] = b"&=+$,";
/// param-unreserved.
const PARAM_EXTRA: &[u8] = b"[]/:&+$";
/// hnv-unreserved.
const HEADER_EXTRA: &[u8] = b"[]/?:+$";

impl Uri {
    /// Parses a URI (no surrounding whitespace or angle brackets).
    pub fn parse(s: &str) -> Result<Uri, ParseError> {
        let (scheme, rest) = s
            .split_once(':')
            .ok_or_else(|| ParseError::new("Bad URI: missing scheme"))?;
        // scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
        let scheme_ok = scheme
            .as_bytes()
            .first()
            .is_some_and(|c| c.is_ascii_alphabetic())
            && scheme
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'));
        if !scheme_ok {
            return Err(ParseError::new("Bad URI: invalid scheme"));
        }
        let scheme = if scheme.eq_ignore_ascii_case("sip") {
            Scheme::Sip
        } else if scheme.eq_ignore_ascii_case("sips") {
            Scheme::Sips
        } else if scheme.eq_ignore_ascii_case("tel") {
            Scheme::Tel
        } else {
            Scheme::Other(scheme.to_string())
        };
        match scheme {
            Scheme::Sip | Scheme::Sips => Self::parse_sip(scheme, rest),
            Scheme::Tel => Self::parse_tel(rest),
            Scheme::Other(_) => {
                let ok = !rest.is_empty()
                    && rest
                        .bytes()
                        .all(|c| c.is_ascii_graphic() && !matches!(c, b'<' | b'>' | b'"'));
                if !ok {
                    return Err(ParseError::new("Bad URI: invalid characters"));
                }
                Ok(Uri {
                    scheme,
                    user: None,
                    password: None,
                    host: Host::Name(rest.to_string()),
                    port: None,
                    params: Params::default(),
                    headers: Vec::new(),
                })
            }
        }
    }

    fn parse_sip(scheme: Scheme, rest: &str) -> Result<Uri, ParseError> {
        // userinfo may itself contain ";" "?" "/" "," (user-unreserved), but
        // never an unescaped "@", so the first "@" ends it.
        let (userinfo, rest) = match rest.find('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(ui) => {
                let (u, p) = match ui.split_once(':') {
                    Some((u, p)) => (u, Some(p)),
                    None => (ui, None),
                };
                check_chars(u, USER_EXTRA, false, "Bad URI: invalid user")?;
                if let Some(p) = p {
                    check_chars(p, PASSWORD_EXTRA, true, "Bad URI: invalid password")?;
                }
                (Some(u.to_string()), p.map(str::to_string))
            }
        };
        let (rest, headers_part) = match rest.split_once('?') {
            Some((r, h)) => (r, Some(h)),
            None => (rest, None),
        };
        let hostport = rest.split(';').next().unwrap_or("");
        let (host, port) = parse_hostport(hostport).map_err(|e| {
            ParseError::owned(format!(
                "Bad URI: {}",
                e.reason().trim_start_matches("Bad ")
            ))
        })?;
        let params = parse_params(&rest[hostport.len()..])?;
        let mut headers = Vec::new();
        if let Some(h) = headers_part {
            for hv in h.split('&') {
                let (n, v) = hv
                    .split_once('=')
                    .ok_or_else(|| ParseError::new("Bad URI: invalid header"))?;
                check_chars(n, HEADER_EXTRA, false, "Bad URI: invalid header")?;
                check_chars(v, HEADER_EXTRA, true, "Bad URI: invalid header")?;
                headers.push((n.to_string(), v.to_string()));
            }
        }
        Ok(Uri {
            scheme,
            user,
            password,
            host,
            port,
            params,
            headers,
        })
    }

    fn parse_tel(rest: &str) -> Result<Uri, ParseError> {
        let number = rest.split(';').next().unwrap_or("");
        // RFC 3966: global-number-digits / local-number-digits with visual
        // separators.
        let ok = !number.is_empty()
            && number.bytes().all(|c| {
                c.is_ascii_hexdigit() || matches!(c, b'*' | b'#' | b'+' | b'-' | b'.' | b'(' | b')')
            });
        if !ok {
            return Err(ParseError::new("Bad URI: invalid telephone number"));
        }
        let params = parse_params(&rest[number.len()..])?;
        Ok(Uri {
            scheme: Scheme::Tel,
            user: None,
            password: None,
            host: Host::Name(number.to_string()),
            port: None,
            params,
            headers: Vec::new(),
        })
    }

    /// Parses a Request-URI, as a message's start line and `set_uri` take
    /// it: a URI (sip, sips and tel fully; other schemes as opaque absolute
    /// URIs) with no `?headers` when it is a SIP URI (RFC 3261 §19.1.1
    /// table 1; RFC 4475 escruri). Here rather than in `parse` so that the
    /// message model and the parser share it without using each other.
    pub(super) fn parse_request_uri(uri: &str) -> Result<Uri, ParseError> {
        let parsed = Uri::parse(uri)
            .map_err(|e| ParseError::owned(format!("Bad Request-URI: {}", e.reason())))?;
        if parsed.is_sip() && !parsed.headers.is_empty() {
            return Err(ParseError::new("Bad Request-URI: headers not allowed"));
        }
        Ok(parsed)
    }

    /// A URI parameter by name (case-insensitive): `Some(None)` for a flag
    /// such as `;lr`, `Some(Some(v))` for `;name=v`.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params.get(name)
    }

    /// The URI parameters in order, as written.
    pub fn params(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.params.iter()
    }

    /// The `transport` parameter's value.
    pub fn transport(&self) -> Option<&str> {
        self.param("transport").flatten()
    }

    /// Whether the scheme is sip or sips.
    pub fn is_sip(&self) -> bool {
        matches!(self.scheme, Scheme::Sip | Scheme::Sips)
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.scheme.as_str())?;
        if let Some(u) = &self.user {
            f.write_str(u)?;
            if let Some(p) = &self.password {
                write!(f, ":{p}")?;
            }
            f.write_str("@")?;
        }
        write!(f, "{}", self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        f.write_str(self.params.as_str())?;
        for (i, (n, v)) in self.headers.iter().enumerate() {
            let sep = if i == 0 { '?' } else { '&' };
            write!(f, "{sep}{n}={v}")?;
        }
        Ok(())
    }
}

/// URI parameters (`;name[=value]` each, or nothing), each checked
/// against RFC 3261's `uri-parameter` characters, and kept.
fn parse_params(raw: &str) -> Result<Params, ParseError> {
    for p in raw.split(';').skip(1) {
        let (n, v) = match p.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (p, None),
        };
        check_chars(n, PARAM_EXTRA, false, "Bad URI: invalid parameter")?;
        if let Some(v) = v {
            check_chars(v, PARAM_EXTRA, false, "Bad URI: invalid parameter")?;
        }
    }
    Ok(Params::kept(raw, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt(s: &str) -> Uri {
        let u = Uri::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(u.to_string(), s);
        u
    }

    #[test]
    fn sip_uris() {
        let u = rt("sip:alice:secret@Example.COM:5070;transport=tcp;lr?Subject=hi&x=");
        assert_eq!(u.scheme, Scheme::Sip);
        assert_eq!(u.user.as_deref(), Some("alice"));
        assert_eq!(u.password.as_deref(), Some("secret"));
        assert_eq!(u.host, Host::Name("Example.COM".into()));
        assert_eq!(u.port, Some(5070));
        assert_eq!(u.transport(), Some("tcp"));
        assert_eq!(u.param("LR"), Some(None));
        assert_eq!(u.headers.len(), 2);
        let u = rt("sips:[2001:db8::10]:5061");
        assert_eq!(u.host, Host::V6("2001:db8::10".parse().unwrap()));
        rt("sip:192.0.2.1");
        rt("sip:user;par=u%40example.net@example.com");
        rt("sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com");
        rt("sip:%00@host5.example.com");
        assert_eq!(Uri::parse("SIP:a@b").unwrap().scheme, Scheme::Sip);
    }

    #[test]
    fn bad_uris() {
        for s in [
            "sip:user@example.com; lr",
            "<sip:user@example.com>",
            "sip:2001:db8::10",
            "sip:user@[2001:db8:::192.0.2.1]",
            "sip:a@b:99999",
            "sip:a@b:",
            "sip:a@",
            "sip:a b@c",
            "sip:%zz@c",
            "sip:a@256.1.1.1",
            "sip:a@b;;",
            "sip:[::1",
            "nocolon",
            "1sip:x",
            "tel:",
            "x:a b",
        ] {
            assert!(Uri::parse(s).is_err(), "{s}");
        }
    }

    #[test]
    fn other_schemes() {
        let u = rt("tel:+1-201-555-0123;phone-context=example.com");
        assert_eq!(u.host, Host::Name("+1-201-555-0123".into()));
        assert_eq!(u.param("phone-context"), Some(Some("example.com")));
        let u = rt("soap.beep://192.0.2.103:3002");
        assert_eq!(u.scheme, Scheme::Other("soap.beep".into()));
        rt("nobodyKnowsThisScheme:totallyopaquecontent");
        rt("sip:ted@[::ffff:192.0.2.2]");
    }
}
