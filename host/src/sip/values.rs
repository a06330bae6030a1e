//! Splitting comma-separated header values (RFC 3261 §7.3.1): commas inside
//! quoted strings or `<...>` do not separate values.

use super::syntax::{bytes_equal, trim_ws};

/// Where the first `,`, `"` or `<` of `b` is (the bytes where a separating
/// comma can be, or where quoting starts), eight bytes at a time.
#[inline]
fn first_special(b: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(chunk) = b.get(i..i + 8) {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(chunk);
        let word = u64::from_le_bytes(bytes);
        let hits = bytes_equal(word, b',') | bytes_equal(word, b'"') | bytes_equal(word, b'<');
        if hits != 0 {
            return Some(i + (hits.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    b.get(i..)?
        .iter()
        .position(|&c| matches!(c, b',' | b'"' | b'<'))
        .map(|j| i + j)
}

/// Byte offset of the first separating comma in `s`, if any.
pub(super) fn first_comma(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    // Up to the first comma, quote or "<" no state changes: skip there.
    let mut i = first_special(b)?;
    if b[i] == b',' {
        return Some(i);
    }
    // Outside quotes and "<>" only "," '"' and "<" matter; inside a
    // quoted-string only "\\" (which hides the next byte) and the closing
    // quote; inside "<>" only ">". Quotes and "<>" do not nest in each
    // other.
    loop {
        match b[i] {
            b',' => return Some(i),
            b'"' => {
                i += 1;
                loop {
                    i += b.get(i..)?.iter().position(|&c| c == b'"' || c == b'\\')?;
                    if b[i] == b'"' {
                        break;
                    }
                    i += 2;
                }
            }
            _ => i += b.get(i + 1..)?.iter().position(|&c| c == b'>')? + 1,
        }
        i += 1;
        i += first_special(b.get(i..)?)?;
    }
}

/// [`first_comma`] as a byte-by-byte state machine: what it must agree with.
#[cfg(test)]
fn first_comma_reference(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut in_quotes = false;
    let mut in_angle = false;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' if in_quotes => i += 1,
            b'"' if !in_angle => in_quotes = !in_quotes,
            b'<' if !in_quotes => in_angle = true,
            b'>' if !in_quotes => in_angle = false,
            b',' if !in_quotes && !in_angle => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Splits a list value into its trimmed, non-empty elements.
pub fn split_list(s: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(s);
    std::iter::from_fn(move || next_element(&mut rest))
}

/// The next trimmed, non-empty element of what is left of a list value
/// (`None` once all of it was read), as [`split_list`] gives them.
#[inline]
pub(super) fn next_element<'a>(rest: &mut Option<&'a str>) -> Option<&'a str> {
    loop {
        let s = (*rest)?;
        let (item, next) = match first_comma(s) {
            Some(i) => (&s[..i], Some(&s[i + 1..])),
            None => (s, None),
        };
        *rest = next;
        let item = trim_ws(item);
        if !item.is_empty() {
            return Some(item);
        }
    }
}

/// The first non-empty element of a list value and what follows it (after
/// the comma, trimmed; `None` when it was the only element).
pub(super) fn split_first(s: &str) -> Option<(&str, Option<&str>)> {
    let mut s = s;
    loop {
        match first_comma(s) {
            Some(i) => {
                let item = trim_ws(&s[..i]);
                let rest = &s[i + 1..];
                if item.is_empty() {
                    s = rest;
                    continue;
                }
                let rest = trim_ws(rest);
                let has_more = split_list(rest).next().is_some();
                return Some((item, has_more.then_some(rest)));
            }
            None => {
                let item = trim_ws(s);
                return (!item.is_empty()).then_some((item, None));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits() {
        let v: Vec<_> = split_list(r#" "a, b" <sip:x;a=1,2>;q=1 , <sip:y>,, c ,"#).collect();
        assert_eq!(v, vec![r#""a, b" <sip:x;a=1,2>;q=1"#, "<sip:y>", "c"]);
        assert_eq!(split_list(" , ").count(), 0);
        let v: Vec<_> = split_list(r#""a\", b", c"#).collect();
        assert_eq!(v, vec![r#""a\", b""#, "c"]);
        assert_eq!(split_first(" , a , b"), Some(("a", Some("b"))));
        assert_eq!(split_first("a ,"), Some(("a", None)));
        assert_eq!(split_first(" ,"), None);
    }

    #[test]
    fn first_comma_agrees_with_the_state_machine() {
        // Every string of up to 5 bytes over the bytes that matter, and
        // some longer ones that cross the eight-byte steps.
        let alphabet = [b'a', b',', b'"', b'\\', b'<', b'>', b' '];
        let mut cases: Vec<String> = vec![String::new()];
        for len in 1..=5u32 {
            for mut n in 0..alphabet.len().pow(len) {
                let mut s = Vec::new();
                for _ in 0..len {
                    s.push(alphabet[n % alphabet.len()]);
                    n /= alphabet.len();
                }
                cases.push(String::from_utf8(s).unwrap());
            }
        }
        for s in cases.clone() {
            cases.push(format!("0123456789abcdef{s}xyz{s}"));
            cases.push(format!("{s}0123456789\"abc,def\"{s},<sip:a,b>{s}"));
        }
        for s in &cases {
            assert_eq!(first_comma(s), first_comma_reference(s), "{s:?}");
        }
    }
}
