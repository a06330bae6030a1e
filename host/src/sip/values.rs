//! Splitting comma-separated header values (RFC 3261 §7.3.1): commas inside
//! quoted strings or `<...>` do not separate values.

use super::syntax::trim_ws;

/// Byte offset of the first separating comma in `s`, if any.
pub(super) fn first_comma(s: &str) -> Option<usize> {
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
    std::iter::from_fn(move || loop {
        let s = rest?;
        let (item, next) = match first_comma(s) {
            Some(i) => (&s[..i], Some(&s[i + 1..])),
            None => (s, None),
        };
        rest = next;
        let item = trim_ws(item);
        if !item.is_empty() {
            return Some(item);
        }
    })
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
}
