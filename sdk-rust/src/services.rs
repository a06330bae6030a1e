//! The services of the host beside the SIP core, as Kamailio's modules
//! provide them: location, digest authentication, key-value, IP
//! allow-lists, NAT helpers, accounting and rate limits.

/// The location service (Kamailio's registrar and usrloc):
/// `save("location")` and `lookup("location")`. Bindings are kept per
/// tenant, keyed by the user part of the address of record, in the host's
/// memory; those saved with [`SaveFlags::PERSISTENT`] are also written
/// behind to its database (usrloc `db_mode=2`) and survive a restart.
pub mod registrar {
    use crate::bindings::wisp::proxy as raw;
    use crate::bindings::wisp::proxy::sip::Action;
    use crate::{Error, Exit, Flow, Reply, Request, Result};

    pub use raw::registrar::{Located, SaveFlags, SaveOptions};

    impl Default for SaveOptions {
        /// No flags, and every limit from the tenant: the params
        /// `REG_DEFAULT_EXPIRES`, `REG_MIN_EXPIRES`, `REG_MAX_EXPIRES`,
        /// `REG_MAX_CONTACTS`, else 3600, 60, 3600 and the tenant limit
        /// `max_bindings_per_aor`.
        fn default() -> Self {
            SaveOptions {
                flags: SaveFlags::empty(),
                default_expires: None,
                min_expires: None,
                max_expires: None,
                max_contacts: None,
            }
        }
    }

    /// Handles a REGISTER (`save("location")`): adds, refreshes and
    /// removes the bindings of its address of record. Ok is the 200 OK
    /// listing them, to answer with: `return req.send(registrar::save(req,
    /// &options)?);`. Refused with 400, 423, 403 or 503, which `?`
    /// answers (`sl_reply_error()`).
    pub fn save(req: &Request, options: &SaveOptions) -> Result<Reply> {
        raw::registrar::save(req.raw(), *options).map_err(Error::from)
    }

    /// [`save`], with the reply sent by the host (since WIT 0.2.2), as
    /// Kamailio's `save("location")` sends its own: the REGISTER is
    /// answered with the 200 OK or the refusal, and the hook stops there
    /// (`exit`): `return registrar::save_and_reply(req, &options);`. The
    /// reply never crosses into the guest, which makes a registration
    /// cheaper than `req.send(registrar::save(req, &options)?)`. Fails,
    /// answering nothing (500 by `?`), when the store failed.
    pub fn save_and_reply(req: &Request, options: &SaveOptions) -> Flow {
        raw::registrar::save_and_reply(req.raw(), *options)?;
        Err(Exit::Decided(Action::Drop))
    }

    /// Points the request at the user's contacts (`lookup("location")`):
    /// the best one becomes the Request-URI, the others extra branches of
    /// the next relay. Refused with 404 (no binding) or 405 (no binding
    /// allows the method), which `?` answers; unavailable when the store
    /// failed.
    pub fn lookup(req: &Request) -> Result<Located> {
        raw::registrar::lookup(req.raw()).map_err(Error::from)
    }

    /// Removes every binding of a user (`unregister("location", ...)`);
    /// how many there were.
    pub fn unregister(user: &str) -> Result<u32> {
        raw::registrar::unregister(user).map_err(Error::from)
    }

    /// Whether a user has a live binding (`registered("location")`).
    pub fn registered(user: &str) -> Result<bool> {
        raw::registrar::registered(user).map_err(Error::from)
    }
}

/// Digest authentication against the subscribers of `wisp user add`
/// (Kamailio's auth and auth_db).
pub mod auth {
    use crate::bindings::wisp::proxy as raw;
    use crate::bindings::wisp::proxy::sip::Action;
    use crate::{Error, Exit, Request, Result};

    /// Checks the credentials for `realm` (`auth_check(realm,
    /// "subscriber", "0")`): Authorization for a REGISTER,
    /// Proxy-Authorization otherwise. Ok is the authenticated user
    /// (`$au`); refused with the 401 or 407 challenge to send, which `?`
    /// answers (`www_challenge` / `proxy_challenge`).
    pub fn authorize(req: &Request, realm: &str) -> Result<String> {
        raw::auth::authorize(req.raw(), realm).map_err(Error::from)
    }

    /// [`authorize`], with the challenge sent by the host (since WIT
    /// 0.2.2), as Kamailio's `auth_challenge` sends its own: Ok is the
    /// authenticated user; when the credentials do not check, the request
    /// is answered with the 401 or 407 challenge and `?` stops the hook
    /// (`exit`). The challenge never crosses into the guest. Fails,
    /// answering nothing, when the subscriber store failed.
    pub fn authorize_or_challenge(req: &Request, realm: &str) -> Result<String, Exit> {
        match raw::auth::authorize_or_challenge(req.raw(), realm)? {
            Some(user) => Ok(user),
            None => Err(Exit::Decided(Action::Drop)),
        }
    }

    /// Removes the credentials before relaying (`consume_credentials()`).
    pub fn consume_credentials(req: &Request) {
        raw::auth::consume_credentials(req.raw())
    }
}

/// The tenant's key-value store with expiry (Kamailio's htable), shared by
/// all of the tenant's instances.
pub mod kv {
    use crate::bindings::wisp::proxy as raw;
    use crate::{Error, Result};

    /// The value of a key that has not expired (`$sht(t=>key)`).
    pub fn get(key: &str) -> Option<String> {
        raw::kv::get(key)
    }

    /// Sets a key for `ttl_seconds` (None: until the proxy stops)
    /// (`$sht(t=>key) = value`). Refused past the tenant's kv quota.
    pub fn set(key: &str, value: &str, ttl_seconds: Option<u32>) -> Result<()> {
        raw::kv::set(key, value, ttl_seconds).map_err(Error::from)
    }

    /// Removes a key (`sht_rm_name`); whether it was there.
    pub fn delete(key: &str) -> bool {
        raw::kv::delete(key)
    }

    /// Adds `delta` to an integer value, a missing key counting as 0, and
    /// returns the result (`$shtinc(t=>key)`). A new key gets
    /// `ttl_seconds`; one there keeps its expiry.
    pub fn incr(key: &str, delta: i64, ttl_seconds: Option<u32>) -> Result<i64> {
        raw::kv::incr(key, delta, ttl_seconds).map_err(Error::from)
    }
}

/// IP allow-lists (Kamailio's permissions).
pub mod permissions {
    use crate::bindings::wisp::proxy as raw;
    use crate::Request;

    /// Whether the source IP is in the tenant's `IPAUTH_ALLOW`
    /// (`allow_source_address()`).
    pub fn allow_source_address(req: &Request) -> bool {
        raw::permissions::allow_source_address(req.raw())
    }
}

/// NAT helpers (Kamailio's nathelper and `force_rport`).
pub mod nat {
    use crate::bindings::wisp::proxy as raw;
    use crate::{Request, Response};

    pub use raw::nat::NatSigns;

    /// Whether any of the `signs` of a client behind NAT holds
    /// (`nat_uac_test`): `NatSigns::PRIVATE_CONTACT |
    /// NatSigns::VIA_ADDRESS_DIFFERS | NatSigns::VIA_PORT_DIFFERS` is
    /// `nat_uac_test("19")`.
    pub fn uac_test(req: &Request, signs: NatSigns) -> bool {
        raw::nat::uac_test(req.raw(), signs)
    }

    /// Rewrites the first Contact's host and port to the source's
    /// (`fix_nated_contact()`); false when there was no Contact URI.
    pub fn fix_contact(req: &Request) -> bool {
        raw::nat::fix_contact(req.raw())
    }

    /// Answers to the source port even without `;rport` (`force_rport()`).
    pub fn force_rport(req: &Request) {
        raw::nat::force_rport(req.raw())
    }

    /// `fix_nated_contact()` in `on_reply`: the response's first Contact
    /// gets the address it came from; false when it had none.
    pub fn fix_reply_contact(res: &Response) -> bool {
        raw::nat::fix_reply_contact(res.raw())
    }
}

/// Accounting records under the log target `wisp::acc` (Kamailio's acc,
/// log backend).
pub mod acc {
    use crate::bindings::wisp::proxy as raw;
    use crate::{Request, Response};

    pub use raw::acc::{Accounted, Event};

    /// Writes one record of `req` and its final answer `res`
    /// (`acc_log_request`).
    pub fn report(req: &Request, event: Event, res: &Response) {
        raw::acc::report(req.raw(), event, res.raw())
    }

    /// Has the host write the current transaction's record by itself when
    /// its final answer goes upstream (Kamailio's acc flags: `setflag`
    /// with `log_flag`, `log_missed_flag`, `failed_transaction_flag`),
    /// without a reply or failure hook: `ANSWERED` writes `start` for a 2xx
    /// to an INVITE and `stop` for a 2xx to a BYE, `FAILED` writes `failed`
    /// for a final answer above 299. Adds to the events asked before.
    pub fn account(events: Accounted) {
        raw::acc::account(events)
    }
}

/// Rate limits by any key, and the proxy's ban list (Kamailio's pipelimit,
/// and pike's bans in an htable `ipban`). Keys are the tenant's own; a
/// ban drops the address's messages on arrival, before any hook.
pub mod ratelimit {
    use crate::bindings::wisp::proxy as raw;
    use crate::{Error, Request, Result};

    /// Counts a hit of `key` (`pl_check`); true while it is within `limit`
    /// hits per `window_seconds`, false past it (not counted).
    pub fn check(key: &str, limit: u32, window_seconds: u32) -> bool {
        raw::ratelimit::check(key, limit, window_seconds)
    }

    /// Bans an IP address for `seconds` (at most a day). Invalid when it
    /// is not an address or `seconds` is 0; not allowed for a trusted
    /// source.
    pub fn ban(ip: &str, seconds: u32) -> Result<()> {
        raw::ratelimit::ban(ip, seconds).map_err(Error::from)
    }

    /// Bans the address the request came from (pike's
    /// `$sht(ipban=>$si) = 1`).
    pub fn ban_source(req: &Request, seconds: u32) -> Result<()> {
        raw::ratelimit::ban(&req.source().ip, seconds).map_err(Error::from)
    }

    /// The seconds left of the ban on `ip`; None when it is not banned.
    pub fn banned(ip: &str) -> Option<u32> {
        raw::ratelimit::banned(ip)
    }

    /// Lifts a ban this tenant set; whether there was one.
    pub fn unban(ip: &str) -> bool {
        raw::ratelimit::unban(ip)
    }
}

/// Destination sets and load balancing (Kamailio's dispatcher): the
/// tenant's sets from its `dispatcher` section of the configuration,
/// probed with OPTIONS by the host.
///
/// ```ignore
/// fn route(req: &Request) -> Flow {
///     // ds_select_dst("1", "4"): 503 by itself when none is up.
///     use dispatcher::{Algorithm, Target};
///     dispatcher::select(req, 1, Algorithm::RoundRobin, Target::Destination)?;
///     req.relay()
/// }
/// fn on_failure(req: &Request, best: &Response) -> Flow {
///     if matches!(best.status(), 408 | 500..=599) && dispatcher::next(req).is_some() {
///         return req.relay(); // ds_next_dst(); t_relay()
///     }
///     Ok(())
/// }
/// ```
pub mod dispatcher {
    use crate::bindings::wisp::proxy as raw;
    use crate::{Error, Request, Result};

    pub use raw::dispatcher::{Algorithm, Destination, State, Target};

    /// Chooses a destination of `set` that is up by `algorithm` and does
    /// `target` with it (`ds_select_dst`, `ds_select_domain`,
    /// `ds_select`); the others up are kept for [`next`]. Refused with 503
    /// when none is up (which `?` answers); invalid for a set the tenant
    /// does not have.
    pub fn select(
        req: &Request,
        set: u32,
        algorithm: Algorithm,
        target: Target,
    ) -> Result<Destination> {
        raw::dispatcher::select(req.raw(), set, algorithm, target).map_err(Error::from)
    }

    /// The next destination still up for the transaction (`ds_next_dst`,
    /// in `on_failure`), done with as `select`'s target said; None when
    /// none is left.
    pub fn next(req: &Request) -> Option<Destination> {
        raw::dispatcher::next(req.raw())
    }

    /// The destination chosen last in this transaction.
    pub fn current() -> Option<Destination> {
        raw::dispatcher::current()
    }

    /// Sets a destination's state (`ds_mark_dst`) for every instance of
    /// the tenant (and every node of a cluster).
    pub fn mark(set: u32, uri: &str, state: State) -> Result<()> {
        raw::dispatcher::mark(set, uri, state).map_err(Error::from)
    }

    /// Marks the destination chosen last down (`ds_mark_dst("ip")` in a
    /// failure route); false when there is none.
    pub fn mark_current_down() -> bool {
        match raw::dispatcher::current() {
            Some(d) => raw::dispatcher::mark(d.set, &d.uri, State::Down).is_ok(),
            None => false,
        }
    }

    /// The destinations of a set with their states (`dispatcher.list`).
    pub fn destinations(set: u32) -> Vec<Destination> {
        raw::dispatcher::destinations(set)
    }
}
