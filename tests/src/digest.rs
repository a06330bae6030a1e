//! Digest authentication from the client's side, computed from scratch as
//! RFC 7616 says (qop=auth; MD5, or SHA-256 as RFC 8760 adds for SIP), to
//! check wisp's challenges against an independent answer.

use md5::Md5;
use sha2::{Digest, Sha256};

/// The value of `name="value"` or `name=value` in a challenge.
pub fn challenge_param<'a>(challenge: &'a str, name: &str) -> Option<&'a str> {
    let start = challenge.find(&format!("{name}="))? + name.len() + 1;
    let rest = &challenge[start..];
    match rest.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next(),
        None => rest.split([',', ' ']).next(),
    }
}

fn hash(algorithm: &str, data: &str) -> String {
    match algorithm {
        "SHA-256" => hex::encode(Sha256::digest(data.as_bytes())),
        _ => hex::encode(Md5::digest(data.as_bytes())),
    }
}

/// Credentials answering `challenge` (qop=auth) for a request `method` to
/// `uri` with the nonce-count `nc`, as RFC 7616 §3.4.1 says: the value of
/// an Authorization or Proxy-Authorization header.
pub fn credentials(
    challenge: &str,
    user: &str,
    password: &str,
    method: &str,
    uri: &str,
    nc: u32,
) -> String {
    let realm = challenge_param(challenge, "realm").expect("realm");
    let nonce = challenge_param(challenge, "nonce").expect("nonce");
    let algorithm = challenge_param(challenge, "algorithm").unwrap_or("MD5");
    let ha1 = hash(algorithm, &format!("{user}:{realm}:{password}"));
    let ha2 = hash(algorithm, &format!("{method}:{uri}"));
    let nc = format!("{nc:08x}");
    let response = hash(
        algorithm,
        &format!("{ha1}:{nonce}:{nc}:0a4f113b:auth:{ha2}"),
    );
    format!(
        "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", \
         response=\"{response}\", algorithm={algorithm}, qop=auth, nc={nc}, cnonce=\"0a4f113b\""
    )
}

#[cfg(test)]
mod tests {
    use super::{challenge_param, credentials};

    /// RFC 2617 §3.5's example, whose cnonce is the one used here.
    #[test]
    fn answers_the_rfc_2617_example() {
        let challenge = "Digest realm=\"testrealm@host.com\", qop=\"auth,auth-int\", \
             nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", \
             opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"";
        assert_eq!(
            challenge_param(challenge, "realm"),
            Some("testrealm@host.com")
        );
        let auth = credentials(
            challenge,
            "Mufasa",
            "Circle Of Life",
            "GET",
            "/dir/index.html",
            1,
        );
        assert!(
            auth.contains("response=\"6629fae49393a05397450978507c4ef1\""),
            "{auth}"
        );
        assert!(auth.contains("nc=00000001"), "{auth}");
    }
}
