//! Character classes and small scanners shared by the header parsers
//! (RFC 3261 §25.1).

use super::error::ParseError;

/// `token` characters: alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" /
/// "`" / "'" / "~" (RFC 3261 §25.1).
#[inline]
pub(super) fn is_token_char(c: u8) -> bool {
    TOKEN[usize::from(c)]
}

/// [`is_token_char`] as a table: one load per byte on the scans of every
/// header name and parameter.
static TOKEN: [bool; 256] = TOKEN_TABLE;

const TOKEN_TABLE: [bool; 256] = {
    let mut table = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        table[c] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
            );
        c += 1;
    }
    table
};

/// A non-empty run of token characters.
pub fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_char)
}

/// Whether `s` holds a control character other than HTAB (what
/// `char::is_control` says: C0, DEL and C1), byte by byte: C1 characters
/// are U+0080–U+009F, 0xC2 0x80–0x9F in UTF-8. A line of text (a header
/// value, a reason phrase) must have none.
pub fn has_control(s: &str) -> bool {
    let bytes = s.as_bytes();
    bytes.iter().enumerate().any(|(i, &c)| {
        (c < 0x20 && c != b'\t')
            || c == 0x7f
            || (c == 0xc2 && bytes.get(i + 1).is_some_and(|n| (0x80..=0x9f).contains(n)))
    })
}

/// SP or HTAB (what is left of LWS once folding is undone).
#[inline]
pub(super) fn is_ws(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

#[inline]
pub(super) fn trim_ws(s: &str) -> &str {
    trim_ws_end(trim_ws_start(s))
}

/// `s` without its leading SP and HTAB.
#[inline]
pub(super) fn trim_ws_start(s: &str) -> &str {
    let n = s.bytes().take_while(|&c| is_ws(c)).count();
    // SP and HTAB are ASCII: `n` is a char boundary.
    s.get(n..).unwrap_or_default()
}

/// `s` without its trailing SP and HTAB.
#[inline]
pub(super) fn trim_ws_end(s: &str) -> &str {
    let n = s.bytes().rev().take_while(|&c| is_ws(c)).count();
    s.get(..s.len() - n).unwrap_or_default()
}

/// Where the first `byte` (ASCII) of `s` is: a plain byte loop, cheaper on
/// the short texts of header values than `str::find` and its searcher.
#[inline]
pub(super) fn find_byte(s: &str, byte: u8) -> Option<usize> {
    position_of(s.as_bytes(), byte)
}

/// Where the first `byte` of `b` is, eight bytes at a time.
#[inline]
pub(super) fn position_of(b: &[u8], byte: u8) -> Option<usize> {
    position_of_either(b, byte, byte)
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
    if !inner.bytes().any(|c| c == b'\\') {
        return inner.to_string();
    }
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
#[inline]
fn is_gen_value_char(c: u8) -> bool {
    GEN_VALUE[usize::from(c)]
}

/// [`is_gen_value_char`] as a table.
static GEN_VALUE: [bool; 256] = {
    let mut table = TOKEN_TABLE;
    table[b':' as usize] = true;
    table[b'[' as usize] = true;
    table[b']' as usize] = true;
    table
};

/// Scans `*( SEMI generic-param )` (RFC 3261 §25.1) where SEMI and EQUAL
/// allow whitespace around them, giving each name and value (as written:
/// quoted strings keep their quotes) to `each`, without allocation.
/// Returns whether there was whitespace outside the values (so that the
/// text differs from `;name=value...`). `what` names the header in errors.
pub(super) fn scan_params<'a>(
    s: &'a str,
    what: &str,
    mut each: impl FnMut(&'a str, Option<&'a str>) -> Result<(), ParseError>,
) -> Result<bool, ParseError> {
    let b = s.as_bytes();
    let mut ws = false;
    let mut i = 0;
    let skip_ws = |mut i: usize, ws: &mut bool| {
        while i < b.len() && is_ws(b[i]) {
            i += 1;
            *ws = true;
        }
        i
    };
    loop {
        i = skip_ws(i, &mut ws);
        if i == b.len() {
            return Ok(ws);
        }
        if b[i] != b';' {
            return Err(ParseError::bad_header(what, "junk after value"));
        }
        i = skip_ws(i + 1, &mut ws);
        let name_start = i;
        while i < b.len() && is_token_char(b[i]) {
            i += 1;
        }
        if i == name_start {
            return Err(ParseError::bad_header(what, "empty parameter"));
        }
        let name = &s[name_start..i];
        i = skip_ws(i, &mut ws);
        let mut value = None;
        if b.get(i) == Some(&b'=') {
            i = skip_ws(i + 1, &mut ws);
            let rest = &s[i..];
            let len = if rest.starts_with('"') {
                quoted_len(rest).map_err(|_| ParseError::bad_header(what, "unbalanced quotes"))?
            } else {
                let mut end = i;
                while end < b.len() && is_gen_value_char(b[end]) {
                    end += 1;
                }
                end - i
            };
            if len == 0 {
                return Err(ParseError::bad_header(what, "empty parameter value"));
            }
            value = Some(&rest[..len]);
            i += len;
        }
        each(name, value)?;
    }
}

/// Parses `*( SEMI generic-param )` as [`scan_params`] does, into owned
/// pairs.
#[cfg(test)]
pub(super) fn parse_params(
    s: &str,
    what: &str,
) -> Result<Vec<(String, Option<String>)>, ParseError> {
    let mut params = Vec::new();
    scan_params(s, what, |name, value| {
        params.push((name.to_string(), value.map(str::to_string)));
        Ok(())
    })?;
    Ok(params)
}

/// Looks a parameter up by name, case-insensitively (RFC 3261 §7.3.1).
#[cfg(test)]
pub(super) fn find_param<'a>(
    params: &'a [(String, Option<String>)],
    name: &str,
) -> Option<Option<&'a str>> {
    params
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_deref())
}

/// Parameters (of a Via, an address, a URI) kept as one string,
/// `;name[=value]` each, whitespace around ";" and "=" removed and values
/// as written (quoted values keep their quotes): one allocation, where a
/// list of pairs took two per parameter; a lookup scans a few dozen bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct Params(String);

impl Params {
    /// Parameters checked by [`scan_params`] (`ws`: what it returned), or
    /// text already in the kept form (`ws` false).
    pub(super) fn kept(raw: &str, ws: bool) -> Params {
        if !ws {
            return Params(raw.to_string());
        }
        let mut out = String::with_capacity(raw.len());
        // Checked before: the scan gives the same parameters again.
        let _ = scan_params(raw, "", |name, value| {
            push_param(&mut out, name, value);
            Ok(())
        });
        Params(out)
    }

    /// `;name[=value]` for each parameter, in order.
    pub(super) fn as_str(&self) -> &str {
        &self.0
    }

    /// (start of the name, name, value, end of the value) of each.
    fn spans(&self) -> impl Iterator<Item = (usize, &str, Option<&str>, usize)> {
        let s = self.0.as_str();
        let mut at = 0;
        std::iter::from_fn(move || {
            let b = s.as_bytes();
            if b.get(at) != Some(&b';') {
                return None;
            }
            let start = at + 1;
            let name_end = b[start..]
                .iter()
                .position(|&c| c == b'=' || c == b';')
                .map_or(b.len(), |i| start + i);
            let name = s.get(start..name_end)?;
            if b.get(name_end) != Some(&b'=') {
                at = name_end;
                return Some((start, name, None, name_end));
            }
            let v = name_end + 1;
            let len = match s.get(v..) {
                Some(rest) if rest.starts_with('"') => quoted_len(rest).unwrap_or(rest.len()),
                Some(rest) => rest.bytes().position(|c| c == b';').unwrap_or(rest.len()),
                None => 0,
            };
            at = v + len;
            Some((start, name, s.get(v..at), at))
        })
    }

    /// The parameters in order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.spans().map(|(_, n, v, _)| (n, v))
    }

    /// A parameter by name, case-insensitively (RFC 3261 §7.3.1):
    /// `Some(None)` for a flag, `Some(Some(v))` for `name=v`.
    pub(super) fn get(&self, name: &str) -> Option<Option<&str>> {
        // As `spans` walks them, in one loop without the iterator's state.
        let s = self.0.as_str();
        let b = s.as_bytes();
        let mut at = 0;
        while b.get(at) == Some(&b';') {
            let start = at + 1;
            let name_end = b[start..]
                .iter()
                .position(|&c| c == b'=' || c == b';')
                .map_or(b.len(), |i| start + i);
            let value = if b.get(name_end) == Some(&b'=') {
                let v = name_end + 1;
                let rest = s.get(v..).unwrap_or_default();
                let len = if rest.starts_with('"') {
                    quoted_len(rest).unwrap_or(rest.len())
                } else {
                    position_of(rest.as_bytes(), b';').unwrap_or(rest.len())
                };
                at = v + len;
                s.get(v..at)
            } else {
                at = name_end;
                None
            };
            let n = s.get(start..name_end)?;
            if n.len() == name.len() && n.eq_ignore_ascii_case(name) {
                return Some(value);
            }
        }
        None
    }

    /// These parameters with `changes` made, in one pass and one
    /// allocation: the first parameter of each name (case-insensitive)
    /// takes the new value, keeping its place and spelling; a name not
    /// there is appended, in the order of `changes`. The names of
    /// `changes` differ.
    pub(super) fn with<const N: usize>(&self, changes: [(&str, Option<&str>); N]) -> Params {
        let extra: usize = changes
            .iter()
            .map(|(n, v)| 2 + n.len() + v.map_or(0, str::len))
            .sum();
        let mut out = String::with_capacity(self.0.len() + extra);
        let mut done = [false; N];
        for (start, name, _, end) in self.spans() {
            let change = (0..N).find(|&i| !done[i] && name.eq_ignore_ascii_case(changes[i].0));
            match change {
                Some(i) => {
                    done[i] = true;
                    push_param(&mut out, name, changes[i].1);
                }
                // The parameter as written, from its ';'.
                None => out.push_str(&self.0[start - 1..end]),
            }
        }
        for (i, (name, value)) in changes.iter().enumerate() {
            if !done[i] {
                push_param(&mut out, name, *value);
            }
        }
        Params(out)
    }
}

fn push_param(out: &mut String, name: &str, value: Option<&str>) {
    out.push(';');
    out.push_str(name);
    if let Some(v) = value {
        out.push('=');
        out.push_str(v);
    }
}

/// Eight ones, one per byte of a word (SWAR scans in `parse`, `values`).
pub(super) const ONES: u64 = 0x0101_0101_0101_0101;
/// The high bit of each byte of a word.
pub(super) const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The bytes of `word` that are `byte`, as their high bits; exact up to
/// the first one (bits above it may be false hits, which only cost a look).
#[inline(always)]
pub(super) fn bytes_equal(word: u64, byte: u8) -> u64 {
    let v = word ^ (ONES * u64::from(byte));
    v.wrapping_sub(ONES) & !v & HIGHS
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
    let (text, word) = (text.as_bytes(), word.as_bytes());
    let Some((&first, rest)) = word.split_first() else {
        return true;
    };
    let Some(last) = text.len().checked_sub(word.len()) else {
        return false;
    };
    // Only where the first letter is (in either case) is the rest compared.
    let (lower, upper) = (first.to_ascii_lowercase(), first.to_ascii_uppercase());
    let mut from = 0;
    while let Some(at) = position_of_either(&text[from..=last], lower, upper) {
        let at = from + at;
        if text[at + 1..at + word.len()].eq_ignore_ascii_case(rest) {
            return true;
        }
        from = at + 1;
    }
    false
}

/// Where the first `a` or `b` of `text` is, eight bytes at a time.
#[inline]
fn position_of_either(text: &[u8], a: u8, b: u8) -> Option<usize> {
    let mut chunks = text.chunks_exact(8);
    let mut i = 0;
    for chunk in &mut chunks {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(chunk);
        let word = u64::from_le_bytes(bytes);
        // The lowest hit of either is exact, so the lowest of both is.
        let hits = bytes_equal(word, a) | bytes_equal(word, b);
        if hits != 0 {
            return Some(i + (hits.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    let rest = chunks.remainder();
    rest.iter().position(|&c| c == a || c == b).map(|j| i + j)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The byte test says what `char::is_control` says, HTAB apart, for
    /// every character of the first three UTF-8 lengths' edges and the C1
    /// block.
    #[test]
    fn has_control_is_char_is_control_without_htab() {
        let chars = (0u32..0x800)
            .chain(0xfff0..0x10000)
            .chain(0x1_0000..0x1_0010);
        for c in chars.filter_map(char::from_u32) {
            let text = format!("a{c}b");
            assert_eq!(
                has_control(&text),
                c.is_control() && c != '\t',
                "U+{:04X}",
                u32::from(c)
            );
        }
        assert!(!has_control(""));
        assert!(!has_control("Digest realm=\"example.com\", nonce=\"é\""));
    }

    #[test]
    fn mentions_ignores_ascii_case() {
        assert!(mentions("<sip:p.example.com;LR>", "lr"));
        assert!(mentions("<sip:b@c>;Tag=x", "tag"));
        assert!(!mentions("sip:bob@127.0.0.2:5080", "lr"));
        assert!(!mentions("<sip:b@c>;ta=g", "tag"));
        assert!(!mentions("t", "tag"));
        assert!(mentions("anything", ""));
    }

    /// The letter-first search says what comparing at every place says.
    #[test]
    fn mentions_is_a_case_blind_search() {
        let naive = |text: &str, word: &str| {
            word.is_empty()
                || text
                    .as_bytes()
                    .windows(word.len())
                    .any(|w| w.eq_ignore_ascii_case(word.as_bytes()))
        };
        let texts = [
            "",
            "t",
            "ta",
            "tag",
            "<sip:b@c>;Tag=x",
            "<sip:b@c>;tAG=x",
            "<sip:b@c>;ta=g",
            "\"Tag\" <sip:b@c>",
            "<sip:b@c>;t@g=1;TAF",
            "sip:bob@127.0.0.2:5080",
            "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKwsp1a2b3c.0;rport",
            "SIP/2.0/UDP 10.0.0.1:5060;branch=Z9HG4BKWSP",
            "SIP/2.0/UDP h;branch=z9hG4bKws;x=z9hG4bKwsp",
            "zzzzzzzzzzzzzzzzzzzzzzzz9hG4bKwsp",
            "z9hG4bKwsz9hG4bKws",
            "<sip:proxy.example.com;lr;ob>",
        ];
        let words = ["tag", "lr", "ob", "z9hG4bKwsp", "x", "Z", "é"];
        for text in texts {
            for word in words {
                assert_eq!(mentions(text, word), naive(text, word), "{text} / {word}");
            }
        }
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
    fn positions() {
        for s in [
            "",
            "a",
            ";",
            "abcdefg;",
            "abcdefgh;",
            "abcdefghijklmnopq;r;",
            "ab\u{e9};",
        ] {
            assert_eq!(position_of(s.as_bytes(), b';'), s.find(';'), "{s}");
            assert_eq!(find_byte(s, b'x'), None);
        }
        let p = Params::kept(
            ";branch=z9hG4bK-1;rport=5060;x=\"a;b\";lr;received=1.2.3.4",
            false,
        );
        assert_eq!(p.get("BRANCH"), Some(Some("z9hG4bK-1")));
        assert_eq!(p.get("rport"), Some(Some("5060")));
        assert_eq!(p.get("x"), Some(Some("\"a;b\"")));
        assert_eq!(p.get("lr"), Some(None));
        assert_eq!(p.get("received"), Some(Some("1.2.3.4")));
        assert_eq!(p.get("b"), None);
        for (n, v) in p.iter() {
            assert_eq!(p.get(n), Some(v));
        }
    }

    #[test]
    fn token_table() {
        for c in 0..=255u8 {
            let want = c.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&c);
            assert_eq!(is_token_char(c), want, "{c}");
        }
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
