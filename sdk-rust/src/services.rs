//! The services of the host beside the SIP core, as Kamailio's modules
//! provide them: location, digest authentication, key-value, IP
//! allow-lists, NAT helpers, accounting and rate limits.

/// The location service (Kamailio's registrar/usrloc): `save("location")`
/// and `lookup("location")`.
pub mod registrar {
    use crate::bindings::wisp::proxy::registrar as raw;
    use crate::{Rejection, Request};

    pub use raw::{Located, LookupError, SaveOptions};

    impl Default for SaveOptions {
        /// Kamailio's registrar defaults: 3600 s by default and at most,
        /// 60 s at least, any number of contacts, kept across restarts.
        fn default() -> Self {
            SaveOptions {
                persistent: true,
                nat: false,
                default_expires: 3600,
                min_expires: 60,
                max_expires: 3600,
                max_contacts: 0,
            }
        }
    }

    /// Saves the bindings of a REGISTER and queues the 200 OK listing them
    /// (`save("location")`). Err is the reply to send instead
    /// (`sl_reply_error()`): answer it with [`Request::reject`].
    pub fn save(req: &Request, options: SaveOptions) -> Result<u32, Rejection> {
        raw::save(req.raw(), options)
    }

    /// Points the request at the user's contacts (`lookup("location")`):
    /// the best one becomes the Request-URI, the others extra branches of
    /// the next relay.
    pub fn lookup(req: &Request) -> Result<Located, LookupError> {
        raw::lookup(req.raw())
    }

    /// Removes every binding of a user (`unregister()`); how many there were.
    pub fn unregister(user: &str) -> Result<u32, String> {
        raw::unregister(user)
    }

    /// Whether a user has a live binding (`registered()`).
    pub fn registered(user: &str) -> bool {
        raw::registered(user)
    }
}

/// Digest authentication against the subscribers of `wisp user add`
/// (Kamailio's auth and auth_db).
pub mod auth {
    use crate::bindings::wisp::proxy::auth as raw;
    use crate::Request;

    pub use raw::Outcome;

    /// Checks Authorization for `realm` (`www_authorize(realm, "subscriber")`).
    pub fn www_authorize(req: &Request, realm: &str) -> Outcome {
        raw::www_authorize(req.raw(), realm)
    }

    /// Checks Proxy-Authorization (`proxy_authorize(realm, "subscriber")`).
    pub fn proxy_authorize(req: &Request, realm: &str) -> Outcome {
        raw::proxy_authorize(req.raw(), realm)
    }

    /// Queues a 401 challenge (`www_challenge(realm, "0")`).
    pub fn www_challenge(req: &Request, realm: &str) {
        raw::www_challenge(req.raw(), realm)
    }

    /// Queues a 407 challenge (`proxy_challenge(realm, "0")`).
    pub fn proxy_challenge(req: &Request, realm: &str) {
        raw::proxy_challenge(req.raw(), realm)
    }

    /// Removes the credentials before relaying (`consume_credentials()`).
    pub fn consume_credentials(req: &Request) {
        raw::consume_credentials(req.raw())
    }
}

/// The tenant's key-value store with expiry (Kamailio's htable).
pub mod kv {
    use crate::bindings::wisp::proxy::kv as raw;

    /// `$sht(t=>key)`.
    pub fn get(key: &str) -> Option<String> {
        raw::get(key)
    }

    /// `$sht(t=>key) = value`, for `ttl_seconds` (0: no expiry).
    pub fn set(key: &str, value: &str, ttl_seconds: u32) {
        raw::set(key, value, ttl_seconds)
    }

    /// `sht_rm_name`; whether the key was there.
    pub fn delete(key: &str) -> bool {
        raw::delete(key)
    }

    /// `$shtinc(t=>key)`: adds `delta`, returns the new value.
    pub fn incr(key: &str, delta: i64, ttl_seconds: u32) -> i64 {
        raw::incr(key, delta, ttl_seconds)
    }
}

/// IP allow-lists (Kamailio's permissions).
pub mod permissions {
    use crate::bindings::wisp::proxy::permissions as raw;
    use crate::Request;

    /// Whether the source IP is in the tenant's `IPAUTH_ALLOW`
    /// (`allow_source_address()`).
    pub fn allow_source_address(req: &Request) -> bool {
        raw::allow_source_address(req.raw())
    }
}

/// NAT helpers (Kamailio's nathelper and `force_rport`).
pub mod nat {
    use crate::bindings::wisp::proxy::nat as raw;
    use crate::Request;

    /// `nat_uac_test` test: the Contact holds a private address.
    pub const CONTACT_PRIVATE: u32 = 1;
    /// The top Via's address differs from the source address.
    pub const VIA_ADDRESS_DIFFERS: u32 = 2;
    /// The top Via holds a private address.
    pub const VIA_PRIVATE: u32 = 4;
    /// The top Via's port differs from the source port.
    pub const VIA_PORT_DIFFERS: u32 = 16;

    /// `nat_uac_test(tests)`: whether any of the tests finds NAT.
    pub fn uac_test(req: &Request, tests: u32) -> bool {
        raw::uac_test(req.raw(), tests)
    }

    /// `fix_nated_contact()`: the Contact's host and port become the source's.
    pub fn fix_contact(req: &Request) -> bool {
        raw::fix_contact(req.raw())
    }

    /// `force_rport()`: answer to the source port.
    pub fn force_rport(req: &Request) {
        raw::force_rport(req.raw())
    }

    /// `fix_nated_contact()` in `on_reply`: the response's Contact gets the
    /// address the response came from.
    pub fn fix_reply_contact(res: &crate::Response) -> bool {
        raw::fix_reply_contact(res.raw())
    }
}

/// Accounting records under the log target `wisp::acc` (Kamailio's acc).
pub mod acc {
    use crate::bindings::wisp::proxy::acc as raw;
    use crate::{Request, Response};

    pub use raw::Event;

    /// Writes one record of `req` and its final answer `res`
    /// (`acc_log_request`, or the acc flags at the end of a transaction).
    pub fn report(req: &Request, event: Event, res: &Response) {
        raw::report(req.raw(), event, res.raw())
    }
}

/// Rate limits by any key, and the proxy's ban list (Kamailio's pipelimit,
/// and pike's bans in an htable `ipban`). Keys are the tenant's own; a
/// ban drops the address's messages on arrival, before any hook.
pub mod ratelimit {
    use crate::bindings::wisp::proxy::ratelimit as raw;
    use crate::Request;

    /// Counts a hit of `key` (`pl_check`); true while it is within `limit`
    /// hits per `window_seconds`, false past it (not counted).
    pub fn check(key: &str, limit: u32, window_seconds: u32) -> bool {
        raw::check(key, limit, window_seconds)
    }

    /// Bans an IP address for `seconds` (at most a day); false when
    /// refused (not an address, a trusted source, 0 seconds).
    pub fn ban(ip: &str, seconds: u32) -> bool {
        raw::ban(ip, seconds)
    }

    /// Bans the address the request came from (pike's
    /// `$sht(ipban=>$si) = 1`).
    pub fn ban_source(req: &Request, seconds: u32) -> bool {
        raw::ban(&req.source().ip, seconds)
    }

    /// The seconds left of the ban on `ip`; None when it is not banned.
    pub fn banned(ip: &str) -> Option<u32> {
        raw::banned(ip)
    }

    /// Lifts a ban this tenant set; whether there was one.
    pub fn unban(ip: &str) -> bool {
        raw::unban(ip)
    }
}
