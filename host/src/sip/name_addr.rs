//! `name-addr / addr-spec` with header parameters: From, To, Contact,
//! Route, Record-Route values (RFC 3261 §20.10, §25.1).

use std::fmt;

use super::error::ParseError;
use super::syntax::{
    find_byte, is_token, quote, quoted_len, scan_params, trim_ws, trim_ws_start, unquote, Params,
};
use super::uri::Uri;

/// A name-addr (`"Display" <uri>;params`) or addr-spec (`uri;params`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// The display name, unquoted (quoted-pairs undone); `None` when absent.
    pub display: Option<String>,
    pub uri: Uri,
    /// Header parameters (tag, expires, q, ...) as written.
    params: Params,
}

fn bad(why: &str) -> ParseError {
    ParseError::owned(format!("Bad address: {why}"))
}

/// The header parameters after the address, checked and kept.
fn header_params(raw: &str) -> Result<Params, ParseError> {
    let ws = scan_params(raw, "address", |_, _| Ok(()))?;
    Ok(Params::kept(raw, ws))
}

impl NameAddr {
    /// Parses one value (not a comma-separated list).
    pub fn parse(value: &str) -> Result<NameAddr, ParseError> {
        let s = trim_ws(value);
        let (display, after_display) = if s.starts_with('"') {
            let len = quoted_len(s).map_err(|_| bad("unbalanced quotes"))?;
            let rest = trim_ws_start(&s[len..]);
            if !rest.starts_with('<') {
                return Err(bad("display name without <uri>"));
            }
            (Some(unquote(&s[..len])), rest)
        } else if let Some(lt) = find_byte(s, b'<') {
            // display-name = *(token LWS): words of token characters only
            // (RFC 4475 baddn: an unquoted comma is not allowed).
            let words = trim_ws(&s[..lt]);
            if !words
                .split([' ', '\t'])
                .filter(|w| !w.is_empty())
                .all(is_token)
            {
                return Err(bad("invalid display name"));
            }
            let display = (!words.is_empty()).then(|| words.to_string());
            (display, &s[lt..])
        } else {
            return Self::parse_addr_spec(s);
        };
        // LAQUOT addr-spec RAQUOT: no whitespace inside the brackets
        // (RFC 4475 badaspec).
        let inner = &after_display[1..];
        let gt = find_byte(inner, b'>').ok_or_else(|| bad("missing >"))?;
        let uri = Uri::parse(&inner[..gt]).map_err(|e| bad(e.reason()))?;
        let params = header_params(&inner[gt + 1..])?;
        Ok(NameAddr {
            display,
            uri,
            params,
        })
    }

    /// addr-spec form: parameters after the URI belong to the header
    /// (RFC 3261 §20.10), so the URI ends at the first ";" after its
    /// userinfo or at whitespace. Such a URI may not contain "," "?" or ";".
    fn parse_addr_spec(s: &str) -> Result<NameAddr, ParseError> {
        let quote = s.find('"').unwrap_or(s.len());
        let from = s[..quote].find('@').unwrap_or(0);
        let end = s[from..]
            .find([';', ' ', '\t'])
            .map_or(s.len(), |i| i + from);
        let uri_text = &s[..end];
        if uri_text.contains(['?', ',']) {
            return Err(bad("addr-spec with \"?\" or \",\" needs <>"));
        }
        let uri = Uri::parse(uri_text).map_err(|e| bad(e.reason()))?;
        let params = header_params(&s[end..])?;
        Ok(NameAddr {
            display: None,
            uri,
            params,
        })
    }

    /// A header parameter by name (case-insensitive).
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params.get(name)
    }

    /// The header parameters in order, as written.
    pub fn params(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.params.iter()
    }

    /// The tag parameter (RFC 3261 §19.3).
    pub fn tag(&self) -> Option<&str> {
        self.param("tag").flatten()
    }
}

impl fmt::Display for NameAddr {
    /// Always the name-addr form, so URI parameters stay inside `<>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.display {
            write!(f, "{} ", quote(d))?;
        }
        write!(f, "<{}>", self.uri)?;
        f.write_str(self.params.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::super::uri::Host;
    use super::*;

    #[test]
    fn forms() {
        let n = NameAddr::parse(
            r#""J Rosenberg \\\""       <sip:jdrosen@example.com> ; tag = 98asjd8"#,
        )
        .unwrap();
        assert_eq!(n.display.as_deref(), Some("J Rosenberg \\\""));
        assert_eq!(n.tag(), Some("98asjd8"));
        let n =
            NameAddr::parse("sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n").unwrap();
        assert_eq!(n.display, None);
        assert_eq!(n.tag(), Some("1918181833n"));
        assert_eq!(n.uri.host, Host::Name("chair-dnrc.example.com".into()));
        let n = NameAddr::parse("caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(n.display.as_deref(), Some("caller"));
        let n = NameAddr::parse("sip:+1@gw1.example.net;unknownparam").unwrap();
        assert_eq!(n.param("unknownparam"), Some(None));
        assert!(n.uri.params().next().is_none());
        let n = NameAddr::parse("<sip:+1@gw1.example.net;unknownparam>").unwrap();
        assert_eq!(n.uri.param("unknownparam"), Some(None));
        let n = NameAddr::parse("isbn:2983792873").unwrap();
        assert_eq!(n.uri.to_string(), "isbn:2983792873");
        let n = NameAddr::parse("sip:user;par=u%40example.net@example.com;tag=1").unwrap();
        assert_eq!(n.uri.user.as_deref(), Some("user;par=u%40example.net"));
        assert_eq!(n.tag(), Some("1"));
        let n = NameAddr::parse("A <sip:a@b>").unwrap();
        assert_eq!(n.to_string(), "\"A\" <sip:a@b>");
        assert_eq!(NameAddr::parse(&n.to_string()).unwrap(), n);
    }

    #[test]
    fn rejects() {
        for s in [
            r#""Mr. J. User <sip:j.user@example.com>"#,
            "Bell, Alexander <sip:a.g.bell@example.com>;tag=43",
            r#""Watson, Thomas" < sip:t.watson@example.org >"#,
            "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
            "<sip:a@b",
            "\"x\" sip:a@b",
            "",
            "<sip:a@b> junk",
        ] {
            assert!(NameAddr::parse(s).is_err(), "{s}");
        }
    }
}
