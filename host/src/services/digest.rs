//! HTTP Digest as SIP uses it (RFC 3261 §22.4, RFC 7616, RFC 8760):
//! credentials parsing and response computation, MD5 and SHA-256.

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
        match self {
            Algorithm::Md5 => hex::encode(Md5::digest(data.as_bytes())),
            Algorithm::Sha256 => hex::encode(Sha256::digest(data.as_bytes())),
        }
    }
}

/// HA1 = H(username ":" realm ":" password), what the subscriber table keeps.
pub fn ha1(algorithm: Algorithm, username: &str, realm: &str, password: &str) -> String {
    algorithm.hash(&format!("{username}:{realm}:{password}"))
}

/// The parameters of a `Digest` Authorization or Proxy-Authorization.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    pub algorithm: Option<String>,
    pub qop: Option<String>,
    pub nc: Option<String>,
    pub cnonce: Option<String>,
    pub opaque: Option<String>,
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

impl Credentials {
    /// Parses `Digest username="…", realm="…", …` (RFC 3261 §25.1).
    pub fn parse(value: &str) -> Result<Credentials, CredentialsError> {
        let value = value.trim();
        let (scheme, rest) = value.split_once([' ', '\t']).unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("Digest") {
            return Err(CredentialsError::NotDigest);
        }
        let mut creds = Credentials::default();
        let (mut username, mut realm, mut nonce, mut uri, mut response) =
            (None, None, None, None, None);
        for (name, val) in params(rest)? {
            let slot = match name.to_ascii_lowercase().as_str() {
                "username" => &mut username,
                "realm" => &mut realm,
                "nonce" => &mut nonce,
                "uri" => &mut uri,
                "response" => &mut response,
                "algorithm" => &mut creds.algorithm,
                "qop" => &mut creds.qop,
                "nc" => &mut creds.nc,
                "cnonce" => &mut creds.cnonce,
                "opaque" => &mut creds.opaque,
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

    /// The response the client should have sent, given the stored HA1.
    pub fn expected_response(&self, algorithm: Algorithm, ha1: &str, method: &str) -> String {
        let ha2 = algorithm.hash(&format!("{method}:{}", self.uri));
        match (&self.qop, &self.nc, &self.cnonce) {
            (Some(qop), Some(nc), Some(cnonce)) => {
                algorithm.hash(&format!("{ha1}:{}:{nc}:{cnonce}:{qop}:{ha2}", self.nonce))
            }
            _ => algorithm.hash(&format!("{ha1}:{}:{ha2}", self.nonce)),
        }
    }

    /// Whether `response` matches, compared in constant time.
    pub fn verify(&self, algorithm: Algorithm, ha1: &str, method: &str) -> bool {
        let expected = self.expected_response(algorithm, ha1, method);
        constant_time_eq(
            expected.as_bytes(),
            self.response.to_ascii_lowercase().as_bytes(),
        )
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `name=value` pairs separated by commas; values may be quoted strings
/// with backslash escapes.
fn params(text: &str) -> Result<Vec<(String, String)>, CredentialsError> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while matches!(chars.peek(), Some(c) if c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() || c == ',' {
                break;
            }
            name.push(c);
            chars.next();
        }
        while matches!(chars.peek(), Some(c) if c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(CredentialsError::Malformed("parameter without a value"));
        }
        while matches!(chars.peek(), Some(c) if c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(c) => value.push(c),
                        None => return Err(CredentialsError::Malformed("unterminated string")),
                    },
                    Some(c) => value.push(c),
                    None => return Err(CredentialsError::Malformed("unterminated string")),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' || c.is_whitespace() {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        if name.is_empty() {
            return Err(CredentialsError::Malformed("empty parameter name"));
        }
        out.push((name, value));
    }
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
        creds.response = Algorithm::Md5.hash(&format!("{ha1}:abc:{ha2}"));
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
}
