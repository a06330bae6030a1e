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
use super::syntax::{find_byte, Params};

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
        if let Some(a) = dotted_quad(s.as_bytes()) {
            return Ok(Host::V4(a));
        }
        if s.bytes().all(|c| c.is_ascii_digit() || c == b'.') {
            return s
                .parse()
                .map(Host::V4)
                .map_err(|_| ParseError::new("Bad host: invalid IPv4 address"));
        }
        // hostname = *( domainlabel "." ) toplabel [ "." ]; we also let "_"
        // through, which real deployments use. One pass: the characters,
        // and no ".." anywhere.
        let mut prev = 0u8;
        let ok = s.bytes().all(|c| {
            let fine = (c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_'))
                && !(c == b'.' && prev == b'.');
            prev = c;
            fine
        }) && !s.starts_with(['.', '-']);
        if ok {
            Ok(Host::Name(s.to_string()))
        } else {
            Err(ParseError::new("Bad host: invalid characters"))
        }
    }

    /// Appends the host as `Display` writes it, without the formatting
    /// machinery for an IPv4 address.
    pub fn push_to(&self, out: &mut String) {
        match self {
            Host::Name(n) => out.push_str(n),
            Host::V4(a) => super::write::push_ipv4(out, *a),
            Host::V6(a) => super::write::push_ip_host(out, (*a).into()),
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
            ip => {
                let mut out = String::with_capacity(48);
                ip.push_to(&mut out);
                f.write_str(&out)
            }
        }
    }
}

/// The common spelling of an IPv4 address, without the general parser:
/// four decimal octets of one to three digits, no leading zeros, each at
/// most 255. `None` for anything else (which the general parser then
/// judges), so what this accepts the general parser accepts alike.
fn dotted_quad(s: &[u8]) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = s.split(|&c| c == b'.');
    for octet in &mut octets {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 3 || (part.len() > 1 && part[0] == b'0') {
            return None;
        }
        let mut n = 0u16;
        for &c in part {
            if !c.is_ascii_digit() {
                return None;
            }
            n = n * 10 + u16::from(c - b'0');
        }
        *octet = u8::try_from(n).ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(Ipv4Addr::from(octets))
}

/// Splits `host[:port]` where host may be an IPv6 reference. Shared with
/// Via's sent-by.
pub(super) fn parse_hostport(s: &str) -> Result<(Host, Option<u16>), ParseError> {
    let (host, port) = if s.starts_with('[') {
        match find_byte(s, b']') {
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
        match find_byte(s, b':') {
            Some(i) => (&s[..i], Some(&s[i + 1..])),
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

/// 1*DIGIT that fits a u16 (leading zeros allowed, as `str::parse` does).
fn parse_port(p: &str) -> Result<u16, ParseError> {
    if p.is_empty() {
        return Err(ParseError::new("Bad port"));
    }
    let mut n = 0u32;
    for c in p.bytes() {
        if !c.is_ascii_digit() {
            return Err(ParseError::new("Bad port"));
        }
        n = n * 10 + u32::from(c - b'0');
        if n > u32::from(u16::MAX) {
            return Err(ParseError::new("Bad port"));
        }
    }
    u16::try_from(n).map_err(|_| ParseError::new("Bad port"))
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
const fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
        )
}

/// A character class: the unreserved characters and `extra`, as a table
/// (one load per byte where a match on the unreserved set and a search of
/// `extra` took a dozen instructions).
const fn class(extra: &[u8]) -> [bool; 256] {
    let mut table = [false; 256];
    let mut c = 0;
    while c < 256 {
        table[c] = is_unreserved(c as u8);
        c += 1;
    }
    let mut i = 0;
    while i < extra.len() {
        table[extra[i] as usize] = true;
        i += 1;
    }
    table
}

/// Checks that `s` is non-empty (unless `allow_empty`) and made of
/// the characters of `class` and well-formed `%XX` escapes.
fn check_chars(
    s: &str,
    class: &[bool; 256],
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
        if !class[usize::from(c)] {
            return Err(ParseError::new(what));
        }
        i += 1;
    }
    Ok(())
}

/// unreserved and user-unreserved (RFC 3261 §25.1).
static USER_CHARS: [bool; 256] = class(b"&=+$,;?/");
/// unreserved and password's extra characters.
static PASSWORD_CHARS: [bool; 256] = class(b"&=+$,");
/// unreserved and param-unreserved.
static PARAM_CHARS: [bool; 256] = class(b"[]/:&+$");
/// unreserved and hnv-unreserved.
static HEADER_CHARS: [bool; 256] = class(b"[]/?:+$");

impl Uri {
    /// Parses a URI (no surrounding whitespace or angle brackets).
    pub fn parse(s: &str) -> Result<Uri, ParseError> {
        let colon = find_byte(s, b':').ok_or_else(|| ParseError::new("Bad URI: missing scheme"))?;
        let (scheme, rest) = (&s[..colon], &s[colon + 1..]);
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
        let (userinfo, rest) = match find_byte(rest, b'@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(ui) => {
                let (u, p) = match find_byte(ui, b':') {
                    Some(i) => (&ui[..i], Some(&ui[i + 1..])),
                    None => (ui, None),
                };
                check_chars(u, &USER_CHARS, false, "Bad URI: invalid user")?;
                if let Some(p) = p {
                    check_chars(p, &PASSWORD_CHARS, true, "Bad URI: invalid password")?;
                }
                (Some(u.to_string()), p.map(str::to_string))
            }
        };
        let (rest, headers_part) = match find_byte(rest, b'?') {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        let hostport = &rest[..find_byte(rest, b';').unwrap_or(rest.len())];
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
                check_chars(n, &HEADER_CHARS, false, "Bad URI: invalid header")?;
                check_chars(v, &HEADER_CHARS, true, "Bad URI: invalid header")?;
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

    /// Appends the URI as `Display` writes it, without the formatting
    /// machinery (the guest asks for From and To URIs on every REGISTER).
    pub fn push_to(&self, out: &mut String) {
        out.push_str(self.scheme.as_str());
        out.push(':');
        if let Some(u) = &self.user {
            out.push_str(u);
            if let Some(p) = &self.password {
                out.push(':');
                out.push_str(p);
            }
            out.push('@');
        }
        self.host.push_to(out);
        if let Some(p) = self.port {
            out.push(':');
            super::write::push_decimal(out, u64::from(p));
        }
        out.push_str(self.params.as_str());
        for (i, (n, v)) in self.headers.iter().enumerate() {
            out.push(if i == 0 { '?' } else { '&' });
            out.push_str(n);
            out.push('=');
            out.push_str(v);
        }
    }

    /// The URI as text: what `to_string` gives, one allocation, no `fmt`.
    pub fn to_text(&self) -> String {
        let mut out = String::with_capacity(64);
        self.push_to(&mut out);
        out
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

/// URI parameters (`;name[=value]` each, or nothing), each checked
/// against RFC 3261's `uri-parameter` characters, and kept.
fn parse_params(raw: &str) -> Result<Params, ParseError> {
    // Each ";"-separated part after the first ";".
    let mut next = find_byte(raw, b';');
    while let Some(at) = next {
        let after = &raw[at + 1..];
        let len = find_byte(after, b';');
        next = len.map(|len| at + 1 + len);
        let p = &after[..len.unwrap_or(after.len())];
        let (n, v) = match find_byte(p, b'=') {
            Some(i) => (&p[..i], Some(&p[i + 1..])),
            None => (p, None),
        };
        check_chars(n, &PARAM_CHARS, false, "Bad URI: invalid parameter")?;
        if let Some(v) = v {
            check_chars(v, &PARAM_CHARS, false, "Bad URI: invalid parameter")?;
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
    fn dotted_quads_as_the_general_parser() {
        for s in [
            "0.0.0.0",
            "127.0.0.1",
            "255.255.255.255",
            "256.0.0.1",
            "01.2.3.4",
            "1.2.3",
            "1.2.3.4.5",
            "1..2.3",
            "1.2.3.4.",
            ".1.2.3",
            "1234.1.1.1",
            "10.0.0.00",
            "192.168.100.200",
            "",
            "1.2.3.a",
        ] {
            let general: Option<Ipv4Addr> = s.parse().ok();
            if let Some(a) = dotted_quad(s.as_bytes()) {
                assert_eq!(Some(a), general, "{s}");
            }
            if !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit() || c == b'.') {
                assert_eq!(Host::parse(s).ok(), general.map(Host::V4), "{s}");
            }
        }
        assert!(dotted_quad(b"192.0.2.1").is_some());
        assert_eq!(parse_port("05060").unwrap(), 5060);
        assert_eq!(parse_port("65535").unwrap(), 65535);
        assert!(parse_port("65536").is_err());
        assert!(parse_port("99999999999999999999").is_err());
        assert!(parse_port("").is_err());
        assert!(parse_port("+1").is_err());
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
