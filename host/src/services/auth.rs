//! Digest authentication of requests against the subscriber table
//! (Kamailio's `www_authorize` / `proxy_authorize` and their challenges).

use std::time::{Duration, Instant};

use super::digest::{Algorithm, Credentials};
use super::nonce::{NonceCheck, NONCE_LIFETIME};
use super::{subscribers, Services, StorageError};
use crate::sip::{HeaderName, Message};

/// Which header pair is used: 401 + WWW-Authenticate / Authorization for
/// a registrar, 407 + Proxy-Authenticate / Proxy-Authorization for a proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Www,
    Proxy,
}

impl Kind {
    pub fn credentials_header(self) -> HeaderName {
        match self {
            Kind::Www => HeaderName::Authorization,
            Kind::Proxy => HeaderName::ProxyAuthorization,
        }
    }

    pub fn challenge_header(self) -> HeaderName {
        match self {
            Kind::Www => HeaderName::WwwAuthenticate,
            Kind::Proxy => HeaderName::ProxyAuthenticate,
        }
    }

    pub fn status(self) -> (u16, &'static str) {
        match self {
            Kind::Www => (401, "Unauthorized"),
            Kind::Proxy => (407, "Proxy Authentication Required"),
        }
    }
}

/// The result of checking credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Authorized(String),
    Missing,
    Stale,
    Invalid(String),
}

/// The algorithms challenged with, in order: the tenant param
/// `AUTH_ALGORITHMS` ("SHA-256,MD5" when unset); unknown names are skipped.
pub fn algorithms(param: Option<&str>) -> Vec<Algorithm> {
    let list: Vec<Algorithm> = param
        .unwrap_or("SHA-256,MD5")
        .split(',')
        .filter_map(|a| Algorithm::parse(Some(a.trim())))
        .collect();
    if list.is_empty() {
        vec![Algorithm::Sha256, Algorithm::Md5]
    } else {
        list
    }
}

/// Checks the request's credentials for `realm`. `allowed` are the
/// algorithms the tenant accepts. Err: the subscriber store failed, which
/// says nothing about the credentials (answer 500, not a challenge).
pub fn authorize(
    services: &Services,
    tenant: &str,
    msg: &Message,
    kind: Kind,
    realm: &str,
    allowed: &[Algorithm],
    now: Instant,
) -> Result<Outcome, StorageError> {
    let name = kind.credentials_header();
    // Several credentials may come (one per realm or algorithm): use the
    // first for our realm in an algorithm we accept.
    let mut found = None;
    let mut last_err = None;
    for line in msg.header_lines(&name) {
        match Credentials::parse(line) {
            Ok(c) if c.realm == realm => {
                match Algorithm::parse(c.algorithm.as_deref()).filter(|a| allowed.contains(a)) {
                    Some(a) => {
                        found = Some((c, a));
                        break;
                    }
                    None => last_err = Some("algorithm not offered".to_owned()),
                }
            }
            Ok(_) => {}
            Err(err) => last_err = Some(err.to_string()),
        }
    }
    let Some((creds, algorithm)) = found else {
        return Ok(match last_err {
            Some(err) => Outcome::Invalid(err),
            None => Outcome::Missing,
        });
    };
    match services.nonces.peek(&creds.nonce, now) {
        NonceCheck::Fresh => {}
        NonceCheck::Stale => return Ok(Outcome::Stale),
        NonceCheck::Unknown | NonceCheck::Replayed => {
            return Ok(Outcome::Invalid("unknown nonce".into()))
        }
    }
    if creds
        .qop
        .as_deref()
        .is_some_and(|q| !q.eq_ignore_ascii_case("auth"))
    {
        return Ok(Outcome::Invalid("qop other than auth".into()));
    }
    let Some(ha1) = subscribers::lookup_ha1(services, tenant, &creds.username, realm, algorithm)?
    else {
        return Ok(Outcome::Invalid(format!("unknown user {}", creds.username)));
    };
    let method = msg.method().map(|m| m.as_str()).unwrap_or_default();
    if !creds.verify(algorithm, &ha1, method) {
        return Ok(Outcome::Invalid(format!(
            "wrong digest for {}",
            creds.username
        )));
    }
    let nc = if creds.qop.is_some() {
        match creds.nonce_count() {
            Some(nc) => Some(nc),
            None => return Ok(Outcome::Invalid("bad nc".into())),
        }
    } else {
        None
    };
    Ok(match services.nonces.consume(&creds.nonce, nc, now) {
        NonceCheck::Fresh => Outcome::Authorized(creds.username.into_owned()),
        NonceCheck::Stale => Outcome::Stale,
        NonceCheck::Replayed => Outcome::Invalid("replayed nonce count".into()),
        NonceCheck::Unknown => Outcome::Invalid("unknown nonce".into()),
    })
}

/// The nonce lifetime: the tenant param `AUTH_NONCE_EXPIRES` in seconds
/// (30 when unset or not a number above 0).
pub fn nonce_lifetime(param: Option<&str>) -> Duration {
    param
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|&s| s > 0)
        .map_or(NONCE_LIFETIME, Duration::from_secs)
}

/// The challenge headers: one per algorithm, each with a fresh nonce good
/// for `lifetime`.
pub fn challenge(
    services: &Services,
    kind: Kind,
    realm: &str,
    stale: bool,
    algorithms: &[Algorithm],
    lifetime: Duration,
    now: Instant,
) -> Vec<(HeaderName, String)> {
    let realm = realm.replace(['"', '\\'], "");
    algorithms
        .iter()
        .map(|a| {
            let nonce = services.nonces.issue(now, lifetime);
            let stale = if stale { ", stale=true" } else { "" };
            (
                kind.challenge_header(),
                format!(
                    "Digest realm=\"{realm}\", nonce=\"{nonce}\", qop=\"auth\", algorithm={}{stale}",
                    a.name()
                ),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::digest::ha1;
    use super::*;

    fn register(auth: Option<&str>) -> Message {
        let auth = auth
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        let text = format!(
            "REGISTER sip:example.com SIP/2.0\r\n\
             Via: SIP/2.0/UDP 192.0.2.4;branch=z9hG4bKauth\r\n\
             From: <sip:alice@example.com>;tag=1\r\n\
             To: <sip:alice@example.com>\r\n\
             Call-ID: auth\r\n\
             CSeq: 1 REGISTER\r\n\
             {auth}\
             Content-Length: 0\r\n\r\n"
        );
        crate::sip::parse(bytes::Bytes::from(text)).expect("valid")
    }

    fn answer(nonce: &str, nc: &str, password: &str, algorithm: Algorithm) -> String {
        let ha1 = ha1(algorithm, "alice", "example.com", password);
        let creds = Credentials {
            username: "alice".into(),
            realm: "example.com".into(),
            nonce: nonce.into(),
            uri: "sip:example.com".into(),
            qop: Some("auth".into()),
            nc: Some(nc.into()),
            cnonce: Some("c0ffee".into()),
            algorithm: Some(algorithm.name().into()),
            ..Credentials::default()
        };
        let response = creds.expected_response(algorithm, &ha1, "REGISTER");
        format!(
            "Digest username=\"alice\", realm=\"example.com\", nonce=\"{nonce}\", \
             uri=\"sip:example.com\", response=\"{response}\", algorithm={}, \
             qop=auth, nc={nc}, cnonce=\"c0ffee\"",
            algorithm.name()
        )
    }

    #[test]
    fn challenge_then_authorize_once() {
        let services = Services::with_storage(super::super::Storage::in_memory().expect("db"));
        subscribers::add(&services.storage, "t", "alice", "example.com", "secret").expect("add");
        let now = Instant::now();
        let all = algorithms(None);
        assert_eq!(all, vec![Algorithm::Sha256, Algorithm::Md5]);
        let run = |msg: &Message| {
            authorize(&services, "t", msg, Kind::Www, "example.com", &all, now).expect("store")
        };
        assert_eq!(run(&register(None)), Outcome::Missing);

        assert_eq!(nonce_lifetime(None), NONCE_LIFETIME);
        assert_eq!(nonce_lifetime(Some("5")), Duration::from_secs(5));
        assert_eq!(nonce_lifetime(Some("0")), NONCE_LIFETIME);
        let headers = challenge(
            &services,
            Kind::Www,
            "example.com",
            false,
            &all,
            NONCE_LIFETIME,
            now,
        );
        assert_eq!(headers.len(), 2);
        assert!(
            headers[0].1.contains("algorithm=SHA-256"),
            "{}",
            headers[0].1
        );
        let nonce = headers[0].1.split('"').nth(3).expect("nonce").to_owned();

        for algorithm in [Algorithm::Sha256, Algorithm::Md5] {
            let wrong = register(Some(&answer(&nonce, "00000009", "guess", algorithm)));
            assert!(matches!(run(&wrong), Outcome::Invalid(_)));
        }
        let good = register(Some(&answer(
            &nonce,
            "00000001",
            "secret",
            Algorithm::Sha256,
        )));
        assert_eq!(run(&good), Outcome::Authorized("alice".into()));
        // The same nonce-count again is a replay.
        assert!(matches!(run(&good), Outcome::Invalid(m) if m.contains("replayed")));
        let next = register(Some(&answer(&nonce, "00000002", "secret", Algorithm::Md5)));
        assert_eq!(run(&next), Outcome::Authorized("alice".into()));
        // MD5 alone when the tenant says so.
        let md5_only = algorithms(Some("MD5"));
        let third = register(Some(&answer(
            &nonce,
            "00000003",
            "secret",
            Algorithm::Sha256,
        )));
        assert!(matches!(
            authorize(
                &services,
                "t",
                &third,
                Kind::Www,
                "example.com",
                &md5_only,
                now
            )
            .expect("store"),
            Outcome::Invalid(_)
        ));
        // Another tenant has no such subscriber.
        let fourth = register(Some(&answer(&nonce, "00000004", "secret", Algorithm::Md5)));
        assert!(matches!(
            authorize(&services, "u", &fourth, Kind::Www, "example.com", &all, now)
                .expect("store"),
            Outcome::Invalid(m) if m.contains("unknown user")
        ));
        // Past the nonce's lifetime: stale.
        let later = now + NONCE_LIFETIME;
        let fifth = register(Some(&answer(&nonce, "00000005", "secret", Algorithm::Md5)));
        assert_eq!(
            authorize(
                &services,
                "t",
                &fifth,
                Kind::Www,
                "example.com",
                &all,
                later
            )
            .expect("store"),
            Outcome::Stale
        );
        let stale = challenge(
            &services,
            Kind::Proxy,
            "example.com",
            true,
            &md5_only,
            NONCE_LIFETIME,
            now,
        );
        assert_eq!(stale[0].0, HeaderName::ProxyAuthenticate);
        assert!(stale[0].1.ends_with("stale=true"));
    }

    /// A failed subscriber lookup is an error, not an unknown user: the
    /// request deserves a 500, not another challenge.
    #[test]
    fn a_failed_store_is_not_an_unknown_user() {
        let services = Services::with_storage(super::super::Storage::in_memory().expect("db"));
        let now = Instant::now();
        let nonce = services.nonces.issue(now, NONCE_LIFETIME);
        services
            .storage
            .write(|c| Ok::<_, StorageError>(c.execute_batch("DROP TABLE subscriber")?))
            .expect("dropped");
        let req = register(Some(&answer(&nonce, "00000001", "secret", Algorithm::Md5)));
        let all = algorithms(None);
        let out = authorize(&services, "t", &req, Kind::Www, "example.com", &all, now);
        assert!(out.is_err(), "{out:?}");
        // The nonce-count was not used up by the failed attempt.
        assert_eq!(
            services.nonces.consume(&nonce, Some(1), now),
            NonceCheck::Fresh
        );
    }
}
