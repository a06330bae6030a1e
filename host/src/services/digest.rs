//! HTTP Digest as SIP uses it (RFC 3261 §22.4, RFC 7616, RFC 8760):
//! credentials parsing and response computation, MD5 and SHA-256.

use std::borrow::Cow;

use md5::Md5;
use sha2::{Digest as _, Sha256};

/// A digest algorithm wisp accepts (the `-sess` variants are not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Md5,
    Sha256,
}

impl Algorithm {
    /// The name as written in `algorithm=`; absent means MD5.
    pub fn parse(name: Option<&str>) -> Option<Algorithm> {
        match name {
            None => Some(Algorithm::Md5),
            Some(n) if n.eq_ignore_ascii_case("MD5") => Some(Algorithm::Md5),
            Some(n) if n.eq_ignore_ascii_case("SHA-256") => Some(Algorithm::Sha256),
            Some(_) => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    /// The hash of `data`, lower-case hex.
    pub fn hash(self, data: &str) -> String {
        Hasher::new(self).joined(&[data]).hex().as_str().to_owned()
    }
}

/// A hash in progress, of either algorithm: fed in pieces, so that no
/// string is put together to be hashed.
enum Hasher {
    Md5(Md5),
    Sha256(Sha256),
}

impl Hasher {
    fn new(algorithm: Algorithm) -> Hasher {
        match algorithm {
            Algorithm::Md5 => Hasher::Md5(Md5::new()),
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
        }
    }

    /// Feeds the pieces, joined by `:`.
    fn joined(mut self, pieces: &[&str]) -> Hasher {
        for (i, piece) in pieces.iter().enumerate() {
            if i > 0 {
                self.update(b":");
            }
            self.update(piece.as_bytes());
        }
        self
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Md5(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
        }
    }

    fn hex(self) -> Hex {
        let mut out = Hex {
            buf: [0; 64],
            len: 0,
        };
        match self {
            Hasher::Md5(h) => out.set(&h.finalize()),
            Hasher::Sha256(h) => out.set(&h.finalize()),
        }
        out
    }
}

/// A hash in lower-case hex, on the stack (64 digits at most: SHA-256).
#[derive(Clone, Copy)]
pub struct Hex {
    buf: [u8; 64],
    len: usize,
}

impl Hex {
    fn set(&mut self, bytes: &[u8]) {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let n = bytes.len().min(self.buf.len() / 2);
        for (i, b) in bytes[..n].iter().enumerate() {
            self.buf[2 * i] = DIGITS[usize::from(b >> 4)];
            self.buf[2 * i + 1] = DIGITS[usize::from(b & 0xf)];
        }
        self.len = 2 * n;
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits were written.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

/// HA1 = H(username ":" realm ":" password), what the subscriber table keeps.
pub fn ha1(algorithm: Algorithm, username: &str, realm: &str, password: &str) -> String {
    Hasher::new(algorithm)
        .joined(&[username, realm, password])
        .hex()
        .as_str()
        .to_owned()
}

/// The parameters of a `Digest` Authorization or Proxy-Authorization,
/// borrowed from the header (a quoted value with backslash escapes is
/// the only one copied).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials<'a> {
    pub username: Cow<'a, str>,
    pub realm: Cow<'a, str>,
    pub nonce: Cow<'a, str>,
    pub uri: Cow<'a, str>,
    pub response: Cow<'a, str>,
    pub algorithm: Option<Cow<'a, str>>,
    pub qop: Option<Cow<'a, str>>,
    pub nc: Option<Cow<'a, str>>,
    pub cnonce: Option<Cow<'a, str>>,
    pub opaque: Option<Cow<'a, str>>,
}

/// Why credentials cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    #[error("not a Digest credential")]
    NotDigest,
    #[error("malformed credentials: {0}")]
    Malformed(&'static str),
    #[error("missing parameter {0}")]
    Missing(&'static str),
}

impl<'a> Credentials<'a> {
    /// Parses `Digest username="…", realm="…", …` (RFC 3261 §25.1).
    pub fn parse(value: &'a str) -> Result<Credentials<'a>, CredentialsError> {
        let value = value.trim();
        let (scheme, rest) = value.split_once([' ', '\t']).unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("Digest") {
            return Err(CredentialsError::NotDigest);
        }
        let mut creds = Credentials::default();
        let (mut username, mut realm, mut nonce, mut uri, mut response) =
            (None, None, None, None, None);
        let mut params = Params { rest };
        while let Some((name, val)) = params.next_param()? {
            let slot = match name {
                n if n.eq_ignore_ascii_case("username") => &mut username,
                n if n.eq_ignore_ascii_case("realm") => &mut realm,
                n if n.eq_ignore_ascii_case("nonce") => &mut nonce,
                n if n.eq_ignore_ascii_case("uri") => &mut uri,
                n if n.eq_ignore_ascii_case("response") => &mut response,
                n if n.eq_ignore_ascii_case("algorithm") => &mut creds.algorithm,
                n if n.eq_ignore_ascii_case("qop") => &mut creds.qop,
                n if n.eq_ignore_ascii_case("nc") => &mut creds.nc,
                n if n.eq_ignore_ascii_case("cnonce") => &mut creds.cnonce,
                n if n.eq_ignore_ascii_case("opaque") => &mut creds.opaque,
                _ => continue,
            };
            *slot = Some(val);
        }
        creds.username = username.ok_or(CredentialsError::Missing("username"))?;
        creds.realm = realm.ok_or(CredentialsError::Missing("realm"))?;
        creds.nonce = nonce.ok_or(CredentialsError::Missing("nonce"))?;
        creds.uri = uri.ok_or(CredentialsError::Missing("uri"))?;
        creds.response = response.ok_or(CredentialsError::Missing("response"))?;
        if creds.qop.is_some() && (creds.nc.is_none() || creds.cnonce.is_none()) {
            return Err(CredentialsError::Missing("nc or cnonce (with qop)"));
        }
        Ok(creds)
    }

    /// The nonce-count as a number (8 hex digits on the wire).
    pub fn nonce_count(&self) -> Option<u32> {
        self.nc
            .as_deref()
            .and_then(|nc| u32::from_str_radix(nc, 16).ok())
    }

    /// The response the client should have sent, given the stored HA1,
    /// in lower-case hex on the stack.
    pub fn expected(&self, algorithm: Algorithm, ha1: &str, method: &str) -> Hex {
        let ha2 = Hasher::new(algorithm).joined(&[method, &self.uri]).hex();
        let hasher = match (&self.qop, &self.nc, &self.cnonce) {
            (Some(qop), Some(nc), Some(cnonce)) => {
                Hasher::new(algorithm).joined(&[ha1, &self.nonce, nc, cnonce, qop, ha2.as_str()])
            }
            _ => Hasher::new(algorithm).joined(&[ha1, &self.nonce, ha2.as_str()]),
        };
        hasher.hex()
    }

    /// The response the client should have sent, given the stored HA1.
    pub fn expected_response(&self, algorithm: Algorithm, ha1: &str, method: &str) -> String {
        self.expected(algorithm, ha1, method).as_str().to_owned()
    }

    /// Whether `response` matches (hex digits in either case), compared
    /// in constant time.
    pub fn verify(&self, algorithm: Algorithm, ha1: &str, method: &str) -> bool {
        let expected = self.expected(algorithm, ha1, method);
        constant_time_eq_lower(expected.as_str().as_bytes(), self.response.as_bytes())
    }
}

/// Whether `b`, lower-cased, equals `a`, in time that depends on the
/// lengths only.
fn constant_time_eq_lower(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .fold(0u8, |acc, (x, y)| acc | (x ^ y.to_ascii_lowercase()))
            == 0
}

/// `name=value` pairs separated by commas; values may be quoted strings
/// with backslash escapes. Read one at a time, borrowed from the text.
struct Params<'a> {
    rest: &'a str,
}

impl<'a> Params<'a> {
    /// The next pair; None at the end.
    fn next_param(&mut self) -> Result<Option<(&'a str, Cow<'a, str>)>, CredentialsError> {
        let rest = self.rest;
        let text = &rest[find_char(rest, |c| !(c.is_whitespace() || c == ','))..];
        if text.is_empty() {
            self.rest = text;
            return Ok(None);
        }
        let name_end = find_char(text, |c| c == '=' || c.is_whitespace() || c == ',');
        let name = &text[..name_end];
        let after = &text[name_end..];
        let after = &after[find_char(after, |c| !c.is_whitespace())..];
        let Some(after) = after.strip_prefix('=') else {
            return Err(CredentialsError::Malformed("parameter without a value"));
        };
        let after = &after[find_char(after, |c| !c.is_whitespace())..];
        let (value, rest) = if let Some(quoted) = after.strip_prefix('"') {
            quoted_string(quoted)?
        } else {
            let end = find_char(after, |c| c == ',' || c.is_whitespace());
            (Cow::Borrowed(&after[..end]), &after[end..])
        };
        if name.is_empty() {
            return Err(CredentialsError::Malformed("empty parameter name"));
        }
        self.rest = rest;
        Ok(Some((name, value)))
    }
}

/// Where the first character of `text` for which `stop` holds begins
/// (`text.len()` when none does): `str::find` with a char predicate,
/// without decoding the ASCII characters that credentials are made of.
#[inline]
fn find_char(text: &str, stop: impl Fn(char) -> bool) -> usize {
    let bytes = text.as_bytes();
    let mut at = 0;
    while let Some(&b) = bytes.get(at) {
        if b.is_ascii() {
            if stop(char::from(b)) {
                return at;
            }
            at += 1;
        } else {
            // `at` is on a character's first byte: the ones before it
            // were whole characters.
            let Some(c) = text.get(at..).and_then(|t| t.chars().next()) else {
                return text.len();
            };
            if stop(c) {
                return at;
            }
            at += c.len_utf8();
        }
    }
    text.len()
}

/// The quoted string starting after its opening quote, unescaped, and
/// the text after its closing quote.
fn quoted_string(text: &str) -> Result<(Cow<'_, str>, &str), CredentialsError> {
    let unterminated = CredentialsError::Malformed("unterminated string");
    // Bytes: neither is part of another character in UTF-8.
    let end = text
        .bytes()
        .position(|b| b == b'"' || b == b'\\')
        .ok_or(unterminated.clone())?;
    if text.as_bytes()[end] == b'"' {
        return Ok((Cow::Borrowed(&text[..end]), &text[end + 1..]));
    }
    let mut value = String::with_capacity(text.len().min(256));
    let mut chars = text.char_indices();
    while let Some((_, c)) = chars.next() {
        match c {
            '"' => {
                let at = text.len() - chars.as_str().len();
                return Ok((Cow::Owned(value), &text[at..]));
            }
            '\\' => match chars.next() {
                Some((_, c)) => value.push(c),
                None => return Err(unterminated),
            },
            c => value.push(c),
        }
    }
    Err(unterminated)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 2617 §3.5: the worked example (MD5, qop=auth).
    #[test]
    fn rfc2617_example() {
        let creds = Credentials::parse(
            r#"Digest username="Mufasa", realm="testrealm@host.com",
            nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html",
            qop=auth, nc=00000001, cnonce="0a4f113b",
            response="6629fae49393a05397450978507c4ef1",
            opaque="5ccc069c403ebaf9f0171e9517f40e41""#,
        )
        .expect("parses");
        assert_eq!(creds.username, "Mufasa");
        assert_eq!(creds.nonce_count(), Some(1));
        let ha1 = ha1(
            Algorithm::Md5,
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life",
        );
        assert!(creds.verify(Algorithm::Md5, &ha1, "GET"));
        assert!(!creds.verify(Algorithm::Md5, &ha1, "POST"));
        let wrong = super::ha1(Algorithm::Md5, "Mufasa", "testrealm@host.com", "circle");
        assert!(!creds.verify(Algorithm::Md5, &wrong, "GET"));
    }

    /// RFC 7616 §3.9.1: the same exchange with SHA-256.
    #[test]
    fn rfc7616_sha256_example() {
        let creds = Credentials::parse(
            r#"Digest username="Mufasa", realm="http-auth@example.org",
            uri="/dir/index.html", algorithm=SHA-256,
            nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
            nc=00000001, cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
            qop=auth,
            response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
            opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#,
        )
        .expect("parses");
        let algorithm = Algorithm::parse(creds.algorithm.as_deref()).expect("known");
        assert_eq!(algorithm, Algorithm::Sha256);
        let ha1 = ha1(
            algorithm,
            "Mufasa",
            "http-auth@example.org",
            "Circle of Life",
        );
        assert!(creds.verify(algorithm, &ha1, "GET"));
        // The MD5 response of RFC 7616 §3.9.1 for the same request.
        let md5 = Credentials {
            response: "8ca523f5e9506fed4657c9700eebdbec".into(),
            algorithm: None,
            ..creds.clone()
        };
        let md5_ha1 = super::ha1(
            Algorithm::Md5,
            "Mufasa",
            "http-auth@example.org",
            "Circle of Life",
        );
        assert!(md5.verify(Algorithm::Md5, &md5_ha1, "GET"));
    }

    /// RFC 2069 style (no qop): response = H(HA1:nonce:HA2).
    #[test]
    fn without_qop() {
        let ha1 = ha1(Algorithm::Md5, "alice", "example.com", "secret");
        let mut creds = Credentials {
            username: "alice".into(),
            realm: "example.com".into(),
            nonce: "abc".into(),
            uri: "sip:example.com".into(),
            ..Credentials::default()
        };
        let ha2 = Algorithm::Md5.hash("REGISTER:sip:example.com");
        creds.response = Algorithm::Md5.hash(&format!("{ha1}:abc:{ha2}")).into();
        assert!(creds.verify(Algorithm::Md5, &ha1, "REGISTER"));
    }

    #[test]
    fn refuses_what_is_not_digest_or_incomplete() {
        assert_eq!(
            Credentials::parse("Basic QWxhZGRpbjpvcGVu"),
            Err(CredentialsError::NotDigest)
        );
        assert_eq!(
            Credentials::parse(r#"Digest username="a", realm="b", nonce="c", uri="d""#),
            Err(CredentialsError::Missing("response"))
        );
        assert!(matches!(
            Credentials::parse(r#"Digest username="a"#),
            Err(CredentialsError::Malformed(_))
        ));
        assert_eq!(Algorithm::parse(Some("MD5-sess")), None);
    }

    /// Escapes in quoted values are undone; values are borrowed otherwise;
    /// the response is compared whatever the case of its hex digits.
    #[test]
    fn escapes_case_and_borrowing() {
        let text = r#"Digest username="al\"ice", realm=example.com ,nonce="n", uri="sip:x",
            response="ABC", NC=00000001"#;
        let creds = Credentials::parse(text).expect("parses");
        assert_eq!(creds.username, "al\"ice");
        assert!(matches!(creds.realm, Cow::Borrowed("example.com")));
        assert!(matches!(creds.nonce, Cow::Borrowed("n")));
        assert_eq!(creds.nonce_count(), Some(1));
        let ha1 = ha1(Algorithm::Sha256, "al\"ice", "example.com", "pw");
        let expected = creds.expected(Algorithm::Sha256, &ha1, "REGISTER");
        assert_eq!(expected.as_str().len(), 64);
        let upper = Credentials {
            response: expected.as_str().to_ascii_uppercase().into(),
            ..creds.clone()
        };
        assert!(upper.verify(Algorithm::Sha256, &ha1, "REGISTER"));
        assert!(!creds.verify(Algorithm::Sha256, &ha1, "REGISTER"));
        assert_eq!(
            Algorithm::Md5.hash("abc"),
            "900150983cd24fb0d6963f7d28e17f72"
        );
        // Unicode whitespace separates as ASCII whitespace does; other
        // characters are kept.
        let wide = Credentials::parse(
            "Digest username=\"é\",\u{3000}realm=b\u{a0}, nonce=\"n\", uri=\"u\", response=ö",
        )
        .expect("parses");
        assert_eq!(wide.username, "é");
        assert_eq!(wide.realm, "b");
        assert_eq!(wide.response, "ö");
        for bad in [
            r#"Digest username="a"#,
            r#"Digest username="a\"#,
            "Digest username",
            "Digest =x",
            "Digest username=a, realm",
        ] {
            assert!(
                matches!(Credentials::parse(bad), Err(CredentialsError::Malformed(_))),
                "{bad}"
            );
        }
    }
}
