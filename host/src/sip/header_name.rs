//! Header names: canonical forms, compact forms (RFC 3261 §7.3.3) and
//! which headers carry comma-separated lists (RFC 3261 §7.3.1).

use std::fmt;
use std::hash::{Hash, Hasher};

/// A header field name. Comparison is case-insensitive (RFC 3261 §7.3.5).
#[derive(Debug, Clone, Eq)]
pub enum HeaderName {
    Via,
    From,
    To,
    CallId,
    CSeq,
    Contact,
    ContentLength,
    ContentType,
    MaxForwards,
    /// RFC 5393: every request a proxy forwards carries one.
    MaxBreadth,
    Route,
    RecordRoute,
    Require,
    ProxyRequire,
    Supported,
    Unsupported,
    Expires,
    Allow,
    Authorization,
    ProxyAuthorization,
    WwwAuthenticate,
    ProxyAuthenticate,
    UserAgent,
    Server,
    Subject,
    Event,
    Path,
    /// Any other header, as written (or the long form of a compact name
    /// this module knows, e.g. `e` becomes `Content-Encoding`).
    Other(String),
}

impl HeaderName {
    /// Maps a header name, case-insensitively; compact forms map to the long
    /// form (`i` is Call-ID, `v` is Via, ...). Does not check that `name` is
    /// a token: the message parser and `Message::append_header` do.
    pub fn parse(name: &str) -> HeaderName {
        if let Some(known) = HeaderName::known(name) {
            return known;
        }
        if name.len() == 1 {
            // Compact forms of names without a variant: RFC 3261 §7.3.3
            // and later registrations.
            let long = match name.as_bytes()[0].to_ascii_lowercase() {
                b'e' => "Content-Encoding",
                b'u' => "Allow-Events",        // RFC 6665
                b'r' => "Refer-To",            // RFC 3515
                b'b' => "Referred-By",         // RFC 3892
                b'x' => "Session-Expires",     // RFC 4028
                b'a' => "Accept-Contact",      // RFC 3841
                b'j' => "Reject-Contact",      // RFC 3841
                b'd' => "Request-Disposition", // RFC 3841
                b'y' => "Identity",            // RFC 8224
                b'n' => "Identity-Info",       // RFC 4474
                _ => return HeaderName::Other(name.to_string()),
            };
            return HeaderName::Other(long.to_string());
        }
        HeaderName::Other(name.to_string())
    }

    /// The variant of a name that has one, in any case or compact form;
    /// `None` for any other name (without allocating).
    pub(super) fn known(name: &str) -> Option<HeaderName> {
        if name.len() == 1 {
            return match name.as_bytes()[0].to_ascii_lowercase() {
                b'i' => Some(HeaderName::CallId),
                b'm' => Some(HeaderName::Contact),
                b'l' => Some(HeaderName::ContentLength),
                b'c' => Some(HeaderName::ContentType),
                b'f' => Some(HeaderName::From),
                b's' => Some(HeaderName::Subject),
                b'k' => Some(HeaderName::Supported),
                b't' => Some(HeaderName::To),
                b'v' => Some(HeaderName::Via),
                b'o' => Some(HeaderName::Event), // RFC 6665
                _ => None,
            };
        }
        // One candidate per (length, first letter): a single comparison
        // instead of a walk through every known name.
        let first = name.as_bytes().first().map_or(0, u8::to_ascii_lowercase);
        let (lower, known) = match (name.len(), first) {
            (2, b't') => ("to", HeaderName::To),
            (3, b'v') => ("via", HeaderName::Via),
            (4, b'f') => ("from", HeaderName::From),
            (4, b'c') => ("cseq", HeaderName::CSeq),
            (4, b'p') => ("path", HeaderName::Path),
            (5, b'r') => ("route", HeaderName::Route),
            (5, b'a') => ("allow", HeaderName::Allow),
            (5, b'e') => ("event", HeaderName::Event),
            (6, b's') => ("server", HeaderName::Server),
            (7, b'c') => match name.as_bytes().get(1).map(u8::to_ascii_lowercase) {
                Some(b'a') => ("call-id", HeaderName::CallId),
                _ => ("contact", HeaderName::Contact),
            },
            (7, b'r') => ("require", HeaderName::Require),
            (7, b'e') => ("expires", HeaderName::Expires),
            (7, b's') => ("subject", HeaderName::Subject),
            (9, b's') => ("supported", HeaderName::Supported),
            (10, b'u') => ("user-agent", HeaderName::UserAgent),
            (11, b'm') => ("max-breadth", HeaderName::MaxBreadth),
            (11, b'u') => ("unsupported", HeaderName::Unsupported),
            (12, b'c') => ("content-type", HeaderName::ContentType),
            (12, b'm') => ("max-forwards", HeaderName::MaxForwards),
            (12, b'r') => ("record-route", HeaderName::RecordRoute),
            (13, b'a') => ("authorization", HeaderName::Authorization),
            (13, b'p') => ("proxy-require", HeaderName::ProxyRequire),
            (14, b'c') => ("content-length", HeaderName::ContentLength),
            (16, b'w') => ("www-authenticate", HeaderName::WwwAuthenticate),
            (18, b'p') => ("proxy-authenticate", HeaderName::ProxyAuthenticate),
            (19, b'p') => ("proxy-authorization", HeaderName::ProxyAuthorization),
            _ => return None,
        };
        // Most senders spell names canonically: one memcmp, before the
        // byte-by-byte comparison that ignores case.
        (known.known_str().is_some_and(|k| k == name) || name.eq_ignore_ascii_case(lower))
            .then_some(known)
    }

    /// The canonical long name; `Other` as written.
    pub fn as_str(&self) -> &str {
        match self {
            HeaderName::Other(s) => s,
            known => known.known_str().unwrap_or_default(),
        }
    }

    /// The canonical long name of a known header; `None` for `Other`. Lets
    /// a header added by the proxy name itself without an allocation.
    pub fn known_str(&self) -> Option<&'static str> {
        Some(match self {
            HeaderName::Via => "Via",
            HeaderName::From => "From",
            HeaderName::To => "To",
            HeaderName::CallId => "Call-ID",
            HeaderName::CSeq => "CSeq",
            HeaderName::Contact => "Contact",
            HeaderName::ContentLength => "Content-Length",
            HeaderName::ContentType => "Content-Type",
            HeaderName::MaxForwards => "Max-Forwards",
            HeaderName::MaxBreadth => "Max-Breadth",
            HeaderName::Route => "Route",
            HeaderName::RecordRoute => "Record-Route",
            HeaderName::Require => "Require",
            HeaderName::ProxyRequire => "Proxy-Require",
            HeaderName::Supported => "Supported",
            HeaderName::Unsupported => "Unsupported",
            HeaderName::Expires => "Expires",
            HeaderName::Allow => "Allow",
            HeaderName::Authorization => "Authorization",
            HeaderName::ProxyAuthorization => "Proxy-Authorization",
            HeaderName::WwwAuthenticate => "WWW-Authenticate",
            HeaderName::ProxyAuthenticate => "Proxy-Authenticate",
            HeaderName::UserAgent => "User-Agent",
            HeaderName::Server => "Server",
            HeaderName::Subject => "Subject",
            HeaderName::Event => "Event",
            HeaderName::Path => "Path",
            HeaderName::Other(_) => return None,
        })
    }

    /// This name's bit in a message's set of the names it holds
    /// (`Message::names`): one per known name; 0 for any other, which has
    /// no bit and is looked for line by line.
    pub(super) fn bit(&self) -> u64 {
        let index = match self {
            HeaderName::Via => 0,
            HeaderName::From => 1,
            HeaderName::To => 2,
            HeaderName::CallId => 3,
            HeaderName::CSeq => 4,
            HeaderName::Contact => 5,
            HeaderName::ContentLength => 6,
            HeaderName::ContentType => 7,
            HeaderName::MaxForwards => 8,
            HeaderName::MaxBreadth => 9,
            HeaderName::Route => 10,
            HeaderName::RecordRoute => 11,
            HeaderName::Require => 12,
            HeaderName::ProxyRequire => 13,
            HeaderName::Supported => 14,
            HeaderName::Unsupported => 15,
            HeaderName::Expires => 16,
            HeaderName::Allow => 17,
            HeaderName::Authorization => 18,
            HeaderName::ProxyAuthorization => 19,
            HeaderName::WwwAuthenticate => 20,
            HeaderName::ProxyAuthenticate => 21,
            HeaderName::UserAgent => 22,
            HeaderName::Server => 23,
            HeaderName::Subject => 24,
            HeaderName::Event => 25,
            HeaderName::Path => 26,
            HeaderName::Other(_) => return 0,
        };
        1 << index
    }

    /// Whether the value is a comma-separated list whose elements may be
    /// split into several header lines and back (RFC 3261 §7.3.1). Headers
    /// whose values contain commas but are not lists (auth headers, Date,
    /// From/To) and unknown headers are not.
    pub fn is_list(&self) -> bool {
        match self {
            HeaderName::Via
            | HeaderName::Route
            | HeaderName::RecordRoute
            | HeaderName::Contact
            | HeaderName::Allow
            | HeaderName::Require
            | HeaderName::ProxyRequire
            | HeaderName::Supported
            | HeaderName::Unsupported
            | HeaderName::Path => true,
            HeaderName::Other(s) => [
                "Accept",
                "Accept-Encoding",
                "Accept-Language",
                "Allow-Events",
                "Content-Encoding",
                "Content-Language",
                "In-Reply-To",
                "Service-Route",
                "Accept-Contact",
                "Reject-Contact",
            ]
            .iter()
            .any(|l| s.eq_ignore_ascii_case(l)),
            _ => false,
        }
    }
}

impl PartialEq for HeaderName {
    #[inline]
    fn eq(&self, other: &HeaderName) -> bool {
        match (self, other) {
            // Two known names: the same variant or not (the hot case: a
            // lookup of Via, Call-ID, CSeq... among a message's headers).
            (HeaderName::Other(_), _) | (_, HeaderName::Other(_)) => {
                self.as_str().eq_ignore_ascii_case(other.as_str())
            }
            _ => std::mem::discriminant(self) == std::mem::discriminant(other),
        }
    }
}

impl Hash for HeaderName {
    fn hash<H: Hasher>(&self, state: &mut H) {
        for b in self.as_str().bytes() {
            state.write_u8(b.to_ascii_lowercase());
        }
    }
}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(HeaderName::parse("CALL-id"), HeaderName::CallId);
        assert_eq!(HeaderName::parse("i"), HeaderName::CallId);
        assert_eq!(HeaderName::parse("V"), HeaderName::Via);
        assert_eq!(HeaderName::parse("l"), HeaderName::ContentLength);
        assert_eq!(HeaderName::parse("k"), HeaderName::Supported);
        assert_eq!(HeaderName::parse("r").as_str(), "Refer-To");
        assert_eq!(HeaderName::parse("refer-to"), HeaderName::parse("r"));
        assert_eq!(HeaderName::parse("C%6Fntact").as_str(), "C%6Fntact");
        assert_eq!(HeaderName::CSeq.as_str(), "CSeq");
        assert_eq!(
            HeaderName::Other("X-Foo".into()),
            HeaderName::Other("x-foo".into())
        );
        assert!(HeaderName::Via.is_list());
        assert!(!HeaderName::From.is_list());
        assert!(!HeaderName::parse("Date").is_list());
    }

    #[test]
    fn every_known_name() {
        let known = [
            HeaderName::Via,
            HeaderName::From,
            HeaderName::To,
            HeaderName::CallId,
            HeaderName::CSeq,
            HeaderName::Contact,
            HeaderName::ContentLength,
            HeaderName::ContentType,
            HeaderName::MaxForwards,
            HeaderName::Route,
            HeaderName::RecordRoute,
            HeaderName::Require,
            HeaderName::ProxyRequire,
            HeaderName::Supported,
            HeaderName::Unsupported,
            HeaderName::Expires,
            HeaderName::Allow,
            HeaderName::Authorization,
            HeaderName::ProxyAuthorization,
            HeaderName::WwwAuthenticate,
            HeaderName::ProxyAuthenticate,
            HeaderName::UserAgent,
            HeaderName::Server,
            HeaderName::Subject,
            HeaderName::Event,
            HeaderName::Path,
        ];
        for name in known {
            let s = name.as_str();
            for spelt in [
                s.to_string(),
                s.to_ascii_lowercase(),
                s.to_ascii_uppercase(),
            ] {
                let parsed = HeaderName::parse(&spelt);
                assert!(!matches!(parsed, HeaderName::Other(_)), "{spelt}");
                assert_eq!(parsed, name, "{spelt}");
            }
            // One letter off is another header.
            let mut off = s.to_string();
            off.push('x');
            assert!(matches!(HeaderName::parse(&off), HeaderName::Other(_)));
            let off = format!("x{}", &s[1..]);
            assert!(
                matches!(HeaderName::parse(&off), HeaderName::Other(_)),
                "{off}"
            );
        }
        assert!(matches!(HeaderName::parse("Contakt"), HeaderName::Other(_)));
        assert!(matches!(HeaderName::parse("Cal-IDx"), HeaderName::Other(_)));
        assert!(matches!(HeaderName::parse(""), HeaderName::Other(_)));
    }
}
