//! Character classes and small scanners shared by the header parsers
//! (RFC 3261 §25.1).

use super::error::ParseError;

/// `token` characters: alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" /
/// "`" / "'" / "~" (RFC 3261 §25.1).
pub(super) fn is_token_char(c: u8) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

/// A non-empty run of token characters.
pub(super) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_char)
}

/// SP or HTAB (what is left of LWS once folding is undone).
pub(super) fn is_ws(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

pub(super) fn trim_ws(s: &str) -> &str {
    s.trim_matches([' ', '\t'])
}

/// Length in bytes of the quoted-string at the start of `s` (which must start
/// with `"`), including both quotes; honours quoted-pairs (RFC 3261 §25.1).
/// Err when the closing quote is missing.
pub(super) fn quoted_len(s: &str) -> Result<usize, ParseError> {
    let b = s.as_bytes();
    let mut i = 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Ok(i + 1),
            _ => i += 1,
        }
    }
    Err(ParseError::new("Unbalanced quotes"))
}

/// The content of a quoted-string (`"..."` with quotes) with quoted-pairs
/// undone.
pub(super) fn unquote(s: &str) -> String {
    let inner = s
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s);
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `s` as a quoted-string, escaping `"` and `\`.
pub(super) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Characters allowed in an unquoted generic-param value: token characters
/// plus those of `host` (":" "[" "]" for IPv6 references). RFC 3261 §25.1
/// `gen-value = token / host / quoted-string`.
fn is_gen_value_char(c: u8) -> bool {
    is_token_char(c) || matches!(c, b':' | b'[' | b']')
}

/// Parses `*( SEMI generic-param )` (RFC 3261 §25.1) where SEMI and EQUAL
/// allow whitespace around them. Values are kept as written (quoted strings
/// keep their quotes). `what` names the header in errors.
pub(super) fn parse_params(
    mut s: &str,
    what: &str,
) -> Result<Vec<(String, Option<String>)>, ParseError> {
    let mut params = Vec::new();
    loop {
        s = s.trim_start_matches([' ', '\t']);
        if s.is_empty() {
            return Ok(params);
        }
        s = s
            .strip_prefix(';')
            .ok_or_else(|| ParseError::bad_header(what, "junk after value"))?;
        s = s.trim_start_matches([' ', '\t']);
        let name_len = s.bytes().take_while(|&c| is_token_char(c)).count();
        if name_len == 0 {
            return Err(ParseError::bad_header(what, "empty parameter"));
        }
        let name = &s[..name_len];
        s = s[name_len..].trim_start_matches([' ', '\t']);
        let mut value = None;
        if let Some(rest) = s.strip_prefix('=') {
            let rest = rest.trim_start_matches([' ', '\t']);
            let len = if rest.starts_with('"') {
                quoted_len(rest).map_err(|_| ParseError::bad_header(what, "unbalanced quotes"))?
            } else {
                rest.bytes().take_while(|&c| is_gen_value_char(c)).count()
            };
            if len == 0 {
                return Err(ParseError::bad_header(what, "empty parameter value"));
            }
            value = Some(rest[..len].to_string());
            s = &rest[len..];
        }
        params.push((name.to_string(), value));
    }
}

/// Looks a parameter up by name, case-insensitively (RFC 3261 §7.3.1).
pub(super) fn find_param<'a>(
    params: &'a [(String, Option<String>)],
    name: &str,
) -> Option<Option<&'a str>> {
    params
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_deref())
}

/// Writes `;name[=value]` for each parameter.
pub(super) fn write_params(
    f: &mut std::fmt::Formatter<'_>,
    params: &[(String, Option<String>)],
) -> std::fmt::Result {
    for (n, v) in params {
        match v {
            Some(v) => write!(f, ";{n}={v}")?,
            None => write!(f, ";{n}")?,
        }
    }
    Ok(())
}

/// Parses a non-empty run of ASCII digits into a u32 (no sign, no spaces).
pub(super) fn parse_u32(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Whether `text` contains `word`, ASCII case ignored: a parameter named
/// `word` cannot be there otherwise, so a parse looking for it can be skipped.
pub fn mentions(text: &str, word: &str) -> bool {
    word.is_empty()
        || text
            .as_bytes()
            .windows(word.len())
            .any(|w| w.eq_ignore_ascii_case(word.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_ignores_ascii_case() {
        assert!(mentions("<sip:p.example.com;LR>", "lr"));
        assert!(mentions("<sip:b@c>;Tag=x", "tag"));
        assert!(!mentions("sip:bob@127.0.0.2:5080", "lr"));
        assert!(!mentions("<sip:b@c>;ta=g", "tag"));
        assert!(!mentions("t", "tag"));
        assert!(mentions("anything", ""));
    }

    #[test]
    fn params() {
        let p = parse_params(" ;  tag    = 1918181833n ; lr;x=\"a;b\"", "To").unwrap();
        assert_eq!(p[0], ("tag".into(), Some("1918181833n".into())));
        assert_eq!(p[1], ("lr".into(), None));
        assert_eq!(p[2], ("x".into(), Some("\"a;b\"".into())));
        assert!(parse_params(";;", "Via").is_err());
        assert!(parse_params(";a=", "Via").is_err());
        assert!(parse_params(";a=\"x", "Via").is_err());
        assert!(parse_params(" junk", "Via").is_err());
        assert_eq!(find_param(&p, "TAG"), Some(Some("1918181833n")));
    }

    #[test]
    fn quoting() {
        assert_eq!(quoted_len(r#""J Rosenberg \\\"" <x>"#).unwrap(), 18);
        assert!(quoted_len("\"abc").is_err());
        assert!(quoted_len("\"abc\\").is_err());
        assert_eq!(unquote(r#""a\"b""#), "a\"b");
        assert_eq!(quote("a\"b"), r#""a\"b""#);
        assert_eq!(parse_u32("0068"), Some(68));
        assert_eq!(parse_u32("-1"), None);
        assert_eq!(parse_u32("99999999999"), None);
    }
}
