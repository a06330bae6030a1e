//! The host side of the service interfaces of the WIT (`registrar`,
//! `auth`, `kv`, `permissions`, `nat`, `acc`): adapters from guest calls to
//! [`crate::services`], keyed by the calling tenant.

use std::time::Instant;

use wasmtime::component::Resource;
use wasmtime::Result;

use super::call::HostState;
use super::wisp::proxy::{acc, auth, kv, nat, permissions, proxy, registrar, types};
use crate::proxy::{Action, BranchTarget, RequestCtx};
use crate::services::auth::{self as digest_auth, Kind, Outcome};
use crate::services::location::{self, SaveOptions};
use crate::services::{acc as accounting, nat as nathelper, StorageError, Wait};
use crate::sip::{HeaderName, Method, Uri};

/// Contacts one lookup forks to at most (the host's branch limit).
const MAX_LOOKUP_CONTACTS: usize = 16;

impl HostState {
    fn tenant(&self) -> &str {
        &self.guest.tenant
    }

    fn request(&self, handle: &Resource<RequestCtx>) -> Result<&RequestCtx> {
        Ok(self.table.get(handle)?)
    }

    fn request_mut(&mut self, handle: &Resource<RequestCtx>) -> Result<&mut RequestCtx> {
        Ok(self.table.get_mut(handle)?)
    }

    /// How long a hook waits for its storage write.
    fn storage_wait(&self) -> Wait {
        Wait::HOOK
    }

    /// A storage call that began at `started` is over: its time is the
    /// host's, not charged to the hook's deadline.
    fn storage_done(&mut self, started: Instant) {
        self.storage_time.add(started.elapsed());
    }

    fn algorithms(&self) -> Vec<crate::services::digest::Algorithm> {
        digest_auth::algorithms(self.guest.params.get("AUTH_ALGORITHMS").map(String::as_str))
    }

    fn authorize(
        &mut self,
        req: Resource<RequestCtx>,
        realm: &str,
        kind: Kind,
    ) -> Result<auth::Outcome> {
        let allowed = self.algorithms();
        let ctx = self.request(&req)?;
        let started = Instant::now();
        let outcome = digest_auth::authorize(
            &self.guest.services,
            self.tenant(),
            &ctx.msg,
            kind,
            realm,
            &allowed,
            started,
        );
        self.storage_done(started);
        let outcome = match outcome {
            Ok(outcome) => outcome,
            // The outcome has no word for it, and a challenge would tell
            // the UA its password is wrong: the call traps, and the
            // request is answered 500.
            Err(err) => {
                return Err(storage_failure(
                    "subscriber lookup",
                    &self.guest.tenant,
                    err,
                ))
            }
        };
        let ctx = self.request_mut(&req)?;
        ctx.auth_stale = outcome == Outcome::Stale;
        ctx.authenticated |= matches!(outcome, Outcome::Authorized(_));
        Ok(match outcome {
            Outcome::Authorized(user) => auth::Outcome::Authorized(user),
            Outcome::Missing => auth::Outcome::Missing,
            Outcome::Stale => auth::Outcome::Stale,
            Outcome::Invalid(why) => {
                tracing::info!(tenant = %self.guest.tenant, realm, %why, "authentication failed");
                auth::Outcome::Invalid(why)
            }
        })
    }

    fn challenge(&mut self, req: Resource<RequestCtx>, realm: &str, kind: Kind) -> Result<()> {
        let stale = self.request(&req)?.auth_stale;
        let headers = digest_auth::challenge(
            &self.guest.services,
            kind,
            realm,
            stale,
            &self.algorithms(),
            digest_auth::nonce_lifetime(
                self.guest
                    .params
                    .get("AUTH_NONCE_EXPIRES")
                    .map(String::as_str),
            ),
            Instant::now(),
        );
        let (code, reason) = kind.status();
        // A reply of the hook's (its text is the host's). The WIT gives a
        // challenge no error: past the cap the call traps.
        self.spend_reply("", std::iter::empty())
            .map_err(|err| wasmtime::Error::msg(format!("challenge: {err}")))?;
        self.actions.push(Action::Reply {
            code,
            reason: reason.to_owned(),
            headers,
        });
        Ok(())
    }
}

/// The error that traps a hook whose service call met a storage failure
/// it cannot report (the request is answered 500). It carries the
/// [`StorageError`], for whoever wants to tell it from a guest's fault.
fn storage_failure(what: &str, tenant: &str, err: StorageError) -> wasmtime::Error {
    tracing::warn!(tenant, %err, "{what} failed; the request is answered 500");
    wasmtime::Error::new(err).context(format!("{what} failed"))
}

fn rejection(code: u16, reason: String, headers: Vec<(HeaderName, String)>) -> proxy::Rejection {
    proxy::Rejection {
        code,
        reason,
        headers: headers
            .into_iter()
            .map(|(name, value)| types::Header {
                name: name.as_str().to_owned(),
                value,
            })
            .collect(),
    }
}

impl registrar::Host for HostState {
    fn save(
        &mut self,
        req: Resource<RequestCtx>,
        options: registrar::SaveOptions,
    ) -> Result<Result<u32, proxy::Rejection>> {
        let ctx = self.request(&req)?;
        if ctx.msg.method() != Some(&Method::Register) {
            return Ok(Err(rejection(
                500,
                "Server Internal Error (save on a request other than REGISTER)".into(),
                vec![],
            )));
        }
        // The answer is a reply of the hook's: none left, nothing is saved.
        if self.effects.replies >= self.guest.limits.replies_per_hook {
            return Ok(Err(rejection(
                500,
                "Server Internal Error (replies_per_hook reached)".into(),
                vec![],
            )));
        }
        let ctx = self.request(&req)?;
        let opts = SaveOptions {
            persistent: options.persistent,
            nat: options.nat,
            default_expires: options.default_expires,
            min_expires: options.min_expires,
            max_expires: options.max_expires,
            // The tenant's bound holds whatever the routing asks.
            max_contacts: match options.max_contacts {
                0 => self.guest.limits.max_bindings_per_aor,
                n => n.min(self.guest.limits.max_bindings_per_aor),
            },
            max_aors: self.guest.limits.max_aors,
        };
        // Where it came from is where its requests go: behind NAT when the
        // script says so, and always on a flow (a WebSocket, whose Contact
        // host is `*.invalid`, RFC 7118 §5.2: only that connection reaches it).
        // An outbound registration (RFC 5626: a Contact with reg-id) on a
        // connection is a flow too; `;ob` marks its received URI so that
        // calls to it record-route with a flow token and fail with 430.
        let outbound = ctx.source.transport.is_stream()
            && ctx
                .msg
                .values(&HeaderName::Contact)
                .filter_map(|c| crate::sip::NameAddr::parse(c).ok())
                .any(|c| c.param("reg-id").is_some());
        let flow = !ctx.source.transport.can_connect() || outbound;
        let received = (options.nat || flow).then(|| {
            let uri = nathelper::received_uri(ctx.source.remote, ctx.source.transport);
            if flow {
                format!("{uri};ob")
            } else {
                uri
            }
        });
        let now = location::unix_now();
        let started = Instant::now();
        let saved = location::save(
            &self.guest.services.storage,
            self.tenant(),
            &ctx.msg,
            received,
            &opts,
            now,
            self.storage_wait(),
        );
        self.storage_done(started);
        let ctx = self.request(&req)?;
        match saved {
            Ok(bindings) => {
                let mut headers = location::reply_contacts(&bindings, now);
                for path in ctx.msg.values(&HeaderName::Path) {
                    headers.push((HeaderName::Path, path.to_owned()));
                }
                // RFC 3261 §10.3 step 8: the registrar's time, for UAs without a clock.
                headers.push((HeaderName::Other("Date".into()), location::http_date(now)));
                let count = u32::try_from(bindings.len()).unwrap_or(u32::MAX);
                tracing::debug!(
                    target: "wisp::registrar",
                    tenant = %self.guest.tenant,
                    to = ctx.msg.header(&HeaderName::To).unwrap_or_default(),
                    bindings = count,
                    "bindings saved"
                );
                // Checked before the save; the contacts are the host's, not
                // the guest's text.
                self.effects.replies += 1;
                self.actions.push(Action::Reply {
                    code: 200,
                    reason: "OK".into(),
                    headers,
                });
                Ok(Ok(count))
            }
            Err(err) => {
                if matches!(err, location::SaveError::Storage(_)) {
                    tracing::warn!(tenant = %self.guest.tenant, %err, "cannot save a registration");
                } else {
                    tracing::info!(tenant = %self.guest.tenant, %err, "REGISTER refused");
                }
                let (code, reason, headers) = err.reply();
                Ok(Err(rejection(code, reason, headers)))
            }
        }
    }

    fn lookup(
        &mut self,
        req: Resource<RequestCtx>,
    ) -> Result<Result<registrar::Located, registrar::LookupError>> {
        let ctx = self.request(&req)?;
        let Some(aor) = ctx
            .msg
            .uri()
            .and_then(|u| Uri::parse(u).ok())
            .and_then(|u| location::aor_of(&u))
        else {
            return Ok(Err(registrar::LookupError::NotFound));
        };
        let method = ctx
            .msg
            .method()
            .map(|m| m.as_str().to_owned())
            .unwrap_or_default();
        let started = Instant::now();
        let bindings = location::lookup(
            &self.guest.services.storage,
            self.tenant(),
            &aor,
            location::unix_now(),
        );
        self.storage_done(started);
        let bindings = match bindings {
            Ok(b) => b,
            Err(err) => {
                tracing::warn!(tenant = %self.guest.tenant, %err, "location lookup failed");
                return Ok(Err(registrar::LookupError::Storage));
            }
        };
        if bindings.is_empty() {
            return Ok(Err(registrar::LookupError::NotFound));
        }
        let allowed: Vec<_> = bindings
            .into_iter()
            .filter(|b| b.methods.is_empty() || b.methods.contains(&method))
            .take(MAX_LOOKUP_CONTACTS)
            .collect();
        let Some(first) = allowed.first() else {
            return Ok(Err(registrar::LookupError::MethodNotAllowed));
        };
        let nat = first.nat;
        let ctx = self.request_mut(&req)?;
        if let Err(err) = ctx.msg.set_uri(&first.contact) {
            tracing::warn!(%err, contact = %first.contact, "stored contact is not a valid URI");
            return Ok(Err(registrar::LookupError::Storage));
        }
        // A Path takes the request to the edge proxy, which knows the way
        // (RFC 3327); otherwise a NAT binding goes to where it registered from.
        let route = |b: &location::Binding| {
            if b.path.is_empty() {
                (b.received.clone(), Vec::new())
            } else {
                (None, b.path.clone())
            }
        };
        (ctx.dst_uri, ctx.path) = route(first);
        for b in &allowed[1..] {
            let (destination, path) = route(b);
            ctx.branches.push(BranchTarget {
                uri: b.contact.clone(),
                destination,
                path,
            });
        }
        Ok(Ok(registrar::Located {
            contacts: u32::try_from(allowed.len()).unwrap_or(u32::MAX),
            nat,
        }))
    }

    fn unregister(&mut self, user: String) -> Result<Result<u32, String>> {
        let started = Instant::now();
        let removed = location::unregister(
            &self.guest.services.storage,
            self.tenant(),
            &user,
            self.storage_wait(),
        );
        self.storage_done(started);
        Ok(removed
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
            .map_err(|e| e.to_string()))
    }

    fn registered(&mut self, user: String) -> Result<bool> {
        let started = Instant::now();
        let bindings = location::lookup(
            &self.guest.services.storage,
            self.tenant(),
            &user,
            location::unix_now(),
        );
        self.storage_done(started);
        match bindings {
            Ok(bindings) => Ok(!bindings.is_empty()),
            // A failed lookup is not "not registered"; the WIT's bool has
            // no room for an error: the call traps (500).
            Err(err) => Err(storage_failure("location lookup", &self.guest.tenant, err)),
        }
    }
}

impl auth::Host for HostState {
    fn www_authorize(&mut self, req: Resource<RequestCtx>, realm: String) -> Result<auth::Outcome> {
        self.authorize(req, &realm, Kind::Www)
    }

    fn proxy_authorize(
        &mut self,
        req: Resource<RequestCtx>,
        realm: String,
    ) -> Result<auth::Outcome> {
        self.authorize(req, &realm, Kind::Proxy)
    }

    fn www_challenge(&mut self, req: Resource<RequestCtx>, realm: String) -> Result<()> {
        self.challenge(req, &realm, Kind::Www)
    }

    fn proxy_challenge(&mut self, req: Resource<RequestCtx>, realm: String) -> Result<()> {
        self.challenge(req, &realm, Kind::Proxy)
    }

    fn consume_credentials(&mut self, req: Resource<RequestCtx>) -> Result<()> {
        let ctx = self.request_mut(&req)?;
        ctx.msg.remove_headers(&HeaderName::Authorization);
        ctx.msg.remove_headers(&HeaderName::ProxyAuthorization);
        Ok(())
    }
}

/// The WIT gives `set` and `incr` no error: a write the store refuses
/// (past the tenant's `kv_keys` or `kv_bytes`, a key or value too long)
/// changes nothing; `incr` then answers 0. The store warns when a tenant
/// reaches its quota.
impl kv::Host for HostState {
    fn get(&mut self, key: String) -> Result<Option<String>> {
        Ok(self
            .guest
            .services
            .kv
            .get(self.tenant(), &key, Instant::now()))
    }

    fn set(&mut self, key: String, value: String, ttl_seconds: u32) -> Result<()> {
        let quota = self.guest.limits.kv_quota();
        let stored = self.guest.services.kv.set(
            self.tenant(),
            quota,
            &key,
            &value,
            ttl_seconds,
            Instant::now(),
        );
        if let Err(err) = stored {
            tracing::debug!(tenant = %self.guest.tenant, %err, "kv: set refused");
        }
        Ok(())
    }

    fn delete(&mut self, key: String) -> Result<bool> {
        Ok(self
            .guest
            .services
            .kv
            .delete(self.tenant(), &key, Instant::now()))
    }

    fn incr(&mut self, key: String, delta: i64, ttl_seconds: u32) -> Result<i64> {
        let quota = self.guest.limits.kv_quota();
        let counted = self.guest.services.kv.incr(
            self.tenant(),
            quota,
            &key,
            delta,
            ttl_seconds,
            Instant::now(),
        );
        Ok(counted.unwrap_or_else(|err| {
            tracing::debug!(tenant = %self.guest.tenant, %err, "kv: incr refused");
            0
        }))
    }
}

impl permissions::Host for HostState {
    fn allow_source_address(&mut self, req: Resource<RequestCtx>) -> Result<bool> {
        let ip = self.request(&req)?.source.remote.ip();
        Ok(self.guest.allow.allows(ip))
    }
}

impl nat::Host for HostState {
    fn uac_test(&mut self, req: Resource<RequestCtx>, flags: u32) -> Result<bool> {
        let ctx = self.request(&req)?;
        Ok(nathelper::uac_test(&ctx.msg, ctx.source.remote, flags))
    }

    fn fix_contact(&mut self, req: Resource<RequestCtx>) -> Result<bool> {
        let ctx = self.request_mut(&req)?;
        let source = ctx.source.remote;
        Ok(nathelper::fix_contact(&mut ctx.msg, source))
    }

    fn fix_reply_contact(&mut self, res: Resource<super::call::ResponseCtx>) -> Result<bool> {
        let Some(source) = self.reply_source else {
            return Ok(false);
        };
        let res: &mut super::call::ResponseCtx = self.table.get_mut(&res)?;
        Ok(nathelper::fix_contact(&mut res.msg, source))
    }

    fn force_rport(&mut self, req: Resource<RequestCtx>) -> Result<()> {
        let ctx = self.request_mut(&req)?;
        let source = ctx.source.remote;
        nathelper::force_rport(&mut ctx.msg, source);
        Ok(())
    }
}

impl acc::Host for HostState {
    fn report(
        &mut self,
        req: Resource<RequestCtx>,
        event: acc::Event,
        res: Resource<super::call::ResponseCtx>,
    ) -> Result<()> {
        let event = match event {
            acc::Event::Start => accounting::Event::Start,
            acc::Event::Stop => accounting::Event::Stop,
            acc::Event::Failed => accounting::Event::Failed,
        };
        let res: &super::call::ResponseCtx = self.table.get(&res)?;
        self.request(&req)?;
        if !accounting::wanted() {
            return Ok(());
        }
        let code = res.msg.status().unwrap_or(0);
        let reason = res.msg.reason().unwrap_or_default().to_owned();
        let to_tag = res.msg.to().ok().and_then(|t| t.tag().map(str::to_owned));
        let ctx = self.request(&req)?;
        accounting::Record::new(event, &ctx.msg, code, &reason, to_tag.as_deref())
            .log(&self.guest.tenant);
        Ok(())
    }
}
