//! Digest credentials the harness computes for a case (`auth = { user =
//! "alice" }`) against the last challenge a case of the same file got,
//! the way a UA answers a 401 or 407 (RFC 3261 §22.2, RFC 7616).

use std::collections::HashMap;

use wisp::services::digest::{ha1, Algorithm};

/// A challenge as a reply carried it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Answered in Authorization (a WWW-Authenticate of a 401) or
    /// Proxy-Authorization (a Proxy-Authenticate of a 407).
    pub header: &'static str,
    pub realm: String,
    pub nonce: String,
    pub algorithm: Algorithm,
    pub qop_auth: bool,
    pub opaque: Option<String>,
}

/// The challenges of a reply's headers, in order.
pub fn challenges(headers: &[(String, String)]) -> Vec<Challenge> {
    headers
        .iter()
        .filter_map(|(name, value)| {
            let header = if name.eq_ignore_ascii_case("WWW-Authenticate") {
                "Authorization"
            } else if name.eq_ignore_ascii_case("Proxy-Authenticate") {
                "Proxy-Authorization"
            } else {
                return None;
            };
            parse(header, value)
        })
        .collect()
}

fn parse(header: &'static str, value: &str) -> Option<Challenge> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("Digest") {
        return None;
    }
    let params = params(rest);
    let get = |name: &str| {
        params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    Some(Challenge {
        header,
        realm: get("realm")?,
        nonce: get("nonce")?,
        algorithm: Algorithm::parse(get("algorithm").as_deref())?,
        qop_auth: get("qop").is_some_and(|q| q.split(',').any(|q| q.trim() == "auth")),
        opaque: get("opaque"),
    })
}

/// `name=value` and `name="quoted, value"` pairs, comma-separated.
fn params(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let Some((name, after)) = rest.split_once('=') else {
            break;
        };
        let after = after.trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        out.push((name.trim().to_owned(), value.trim().to_owned()));
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

/// Nonce counts used so far, per nonce: every answer to the same
/// challenge counts one more, as a UA does.
#[derive(Default)]
pub struct NonceCounts(HashMap<String, u32>);

/// The header to add: its name and value, answering `challenge` as
/// `user` with `password` for a request of `method` to `uri`.
pub fn answer(
    challenge: &Challenge,
    user: &str,
    password: &str,
    method: &str,
    uri: &str,
    counts: &mut NonceCounts,
) -> (String, String) {
    let alg = challenge.algorithm;
    let ha1 = ha1(alg, user, &challenge.realm, password);
    let ha2 = alg.hash(&format!("{method}:{uri}"));
    let nc = counts.0.entry(challenge.nonce.clone()).or_insert(0);
    *nc += 1;
    let nc = format!("{nc:08x}");
    let cnonce = format!("wisptest{nc}");
    let mut value = format!(
        "Digest username=\"{user}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", algorithm={}",
        challenge.realm,
        challenge.nonce,
        alg.name()
    );
    let response = if challenge.qop_auth {
        value.push_str(&format!(", qop=auth, nc={nc}, cnonce=\"{cnonce}\""));
        alg.hash(&format!(
            "{ha1}:{}:{nc}:{cnonce}:auth:{ha2}",
            challenge.nonce
        ))
    } else {
        alg.hash(&format!("{ha1}:{}:{ha2}", challenge.nonce))
    };
    value.push_str(&format!(", response=\"{response}\""));
    if let Some(opaque) = &challenge.opaque {
        value.push_str(&format!(", opaque=\"{opaque}\""));
    }
    (challenge.header.to_owned(), value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wisp::services::digest::Credentials;

    #[test]
    fn an_answer_verifies_as_the_host_checks_it() {
        let headers = vec![
            (
                "WWW-Authenticate".to_owned(),
                "Digest realm=\"example.com\", nonce=\"abc\", qop=\"auth\", algorithm=SHA-256"
                    .to_owned(),
            ),
            (
                "WWW-Authenticate".to_owned(),
                "Digest realm=\"example.com\", nonce=\"def\", qop=\"auth\", algorithm=MD5"
                    .to_owned(),
            ),
        ];
        let found = challenges(&headers);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].algorithm, Algorithm::Sha256);
        let mut counts = NonceCounts::default();
        for challenge in &found {
            let (name, value) = answer(
                challenge,
                "alice",
                "s3cret",
                "REGISTER",
                "sip:example.com",
                &mut counts,
            );
            assert_eq!(name, "Authorization");
            let creds = Credentials::parse(&value).expect("parses");
            let ha1 = ha1(challenge.algorithm, "alice", "example.com", "s3cret");
            assert!(
                creds.verify(challenge.algorithm, &ha1, "REGISTER"),
                "{value}"
            );
            assert_eq!(creds.nonce_count(), Some(1));
        }
        let (_, again) = answer(
            &found[0],
            "alice",
            "x",
            "REGISTER",
            "sip:example.com",
            &mut counts,
        );
        assert_eq!(
            Credentials::parse(&again).expect("parses").nonce_count(),
            Some(2)
        );
    }
}
