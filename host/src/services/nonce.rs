//! Digest nonces: issued by the host, valid for a while, and each
//! nonce-count accepted once (RFC 7616 §3.3, §5.12: replay protection).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a nonce is accepted by default (Kamailio's `nonce_expire`).
pub const NONCE_LIFETIME: Duration = Duration::from_secs(30);

/// How long an expired nonce is still recognised, so that a client using
/// it is told `stale=true` (retry with the new nonce, the password was
/// right) rather than challenged as if it had never authenticated.
pub const STALE_GRACE: Duration = Duration::from_secs(3600);

/// Nonces remembered at most; expired ones are forgotten first, then the
/// oldest (a client with a forgotten nonce is challenged again).
const MAX_NONCES: usize = 100_000;

/// What the store says about a nonce and nonce-count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    Fresh,
    /// Issued by us but past its lifetime: challenge with stale=true.
    Stale,
    /// Never issued (or forgotten, e.g. across a restart).
    Unknown,
    /// The nonce-count was already used, or the nonce without qop was.
    Replayed,
}

struct Issued {
    expires: Instant,
    /// Highest nonce-count seen; 0 before any use.
    last_nc: u32,
}

/// The nonces issued by this process, shared by every worker.
#[derive(Default)]
pub struct Nonces {
    issued: Mutex<HashMap<String, Issued>>,
}

impl Nonces {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Issued>> {
        self.issued.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new nonce, good for `lifetime`: 128 random bits, hex.
    pub fn issue(&self, now: Instant, lifetime: Duration) -> String {
        let mut bytes = [0u8; 16];
        if getrandom::fill(&mut bytes).is_err() {
            // No OS randomness: fall back on the clock, unpredictable
            // enough within one nonce lifetime.
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            bytes = t.to_le_bytes();
        }
        let nonce = hex::encode(bytes);
        let mut issued = self.lock();
        if issued.len() >= MAX_NONCES {
            issued.retain(|_, i| now < i.expires);
            if issued.len() >= MAX_NONCES {
                if let Some(oldest) = issued
                    .iter()
                    .min_by_key(|(_, i)| i.expires)
                    .map(|(k, _)| k.clone())
                {
                    issued.remove(&oldest);
                }
            }
        }
        issued.insert(
            nonce.clone(),
            Issued {
                expires: now + lifetime,
                last_nc: 0,
            },
        );
        nonce
    }

    /// Checks a nonce without using it up.
    pub fn peek(&self, nonce: &str, now: Instant) -> NonceCheck {
        match self.lock().get(nonce) {
            None => NonceCheck::Unknown,
            Some(i) if now >= i.expires => NonceCheck::Stale,
            Some(_) => NonceCheck::Fresh,
        }
    }

    /// Uses a nonce with nonce-count `nc` (None without qop, where a
    /// nonce is good once). Call only once the digest was verified, so
    /// that a forged request cannot burn a client's nonce-count.
    pub fn consume(&self, nonce: &str, nc: Option<u32>, now: Instant) -> NonceCheck {
        let mut issued = self.lock();
        let Some(entry) = issued.get_mut(nonce) else {
            return NonceCheck::Unknown;
        };
        if now >= entry.expires {
            return NonceCheck::Stale;
        }
        let nc = nc.unwrap_or(1).max(1);
        if nc <= entry.last_nc {
            return NonceCheck::Replayed;
        }
        entry.last_nc = nc;
        NonceCheck::Fresh
    }

    /// Forgets nonces expired for longer than [`STALE_GRACE`] (the purge timer).
    pub fn purge(&self, now: Instant) {
        self.lock().retain(|_, i| now < i.expires + STALE_GRACE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_used_once_and_nonces_expire() {
        let nonces = Nonces::default();
        let t0 = Instant::now();
        let n = nonces.issue(t0, NONCE_LIFETIME);
        assert_eq!(n.len(), 32);
        assert_ne!(n, nonces.issue(t0, NONCE_LIFETIME));
        assert_eq!(nonces.peek(&n, t0), NonceCheck::Fresh);
        assert_eq!(nonces.consume(&n, Some(1), t0), NonceCheck::Fresh);
        assert_eq!(nonces.consume(&n, Some(1), t0), NonceCheck::Replayed);
        assert_eq!(nonces.consume(&n, Some(3), t0), NonceCheck::Fresh);
        assert_eq!(nonces.consume(&n, Some(2), t0), NonceCheck::Replayed);
        let later = t0 + NONCE_LIFETIME;
        assert_eq!(nonces.peek(&n, later), NonceCheck::Stale);
        assert_eq!(nonces.consume(&n, Some(4), later), NonceCheck::Stale);
        // Still known as stale after a purge, until the grace period ends.
        nonces.purge(later);
        assert_eq!(nonces.peek(&n, later), NonceCheck::Stale);
        let much_later = later + STALE_GRACE;
        nonces.purge(much_later);
        assert_eq!(nonces.peek(&n, much_later), NonceCheck::Unknown);
        assert_eq!(nonces.peek("deadbeef", t0), NonceCheck::Unknown);
    }

    #[test]
    fn without_qop_a_nonce_is_good_once() {
        let nonces = Nonces::default();
        let t0 = Instant::now();
        let n = nonces.issue(t0, Duration::from_secs(5));
        assert_eq!(nonces.consume(&n, None, t0), NonceCheck::Fresh);
        assert_eq!(nonces.consume(&n, None, t0), NonceCheck::Replayed);
        assert_eq!(
            nonces.peek(&n, t0 + Duration::from_secs(5)),
            NonceCheck::Stale
        );
    }
}
