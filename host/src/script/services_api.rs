//! The host side of the service interfaces of the WIT (`registrar`,
//! `auth`, `kv`, `permissions`, `nat`, `acc`): adapters from guest calls to
//! [`crate::services`], keyed by the calling tenant.

use std::time::Instant;

use wasmtime::component::Resource;
use wasmtime::Result;

use super::call::{HostState, ResponseCtx};
use super::host_api::{past_cap, reply};
use super::wisp::proxy::sip as wit;
use super::wisp::proxy::{acc, auth, kv, nat, permissions, registrar};
use crate::proxy::{Action, BranchTarget, RequestCtx};
use crate::services::auth::{self as digest_auth, Kind, Outcome};
use crate::services::kv::KvError;
use crate::services::location::{self, SaveOptions};
use crate::services::shared::kv as cluster_kv;
use crate::services::{acc as accounting, nat as nathelper, StorageError};
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

    /// A storage call that began at `started` is over: its time is the
    /// host's, not charged to the hook's deadline.
    fn storage_done(&mut self, started: Instant) {
        self.storage_time.add(started.elapsed());
    }

    fn algorithms(&self) -> Vec<crate::services::digest::Algorithm> {
        digest_auth::algorithms(self.guest.params.get("AUTH_ALGORITHMS").map(String::as_str))
    }

    /// The challenge to send for `kind` in `realm` (`auth_challenge`),
    /// one per algorithm of `algorithms` (the tenant's).
    fn challenge(
        &mut self,
        realm: &str,
        kind: Kind,
        stale: bool,
        algorithms: &[crate::services::digest::Algorithm],
    ) -> ServiceReply {
        let headers = digest_auth::challenge(
            &self.guest.services,
            kind,
            realm,
            stale,
            algorithms,
            digest_auth::nonce_lifetime(
                self.guest
                    .params
                    .get("AUTH_NONCE_EXPIRES")
                    .map(String::as_str),
            ),
            Instant::now(),
        );
        let (code, reason) = kind.status();
        ServiceReply {
            code,
            reason: reason.to_owned(),
            headers,
        }
    }

    /// A service's reply handed to the guest, kept as the host's text.
    fn hand_over(&mut self, r: ServiceReply) -> wit::Reply {
        self.issue(reply(r.code, r.reason, r.headers))
    }

    /// A refusal of a service, with its reply kept as the host's.
    fn refuse(
        &mut self,
        code: u16,
        reason: &str,
        headers: Vec<(HeaderName, String)>,
    ) -> wit::Error {
        self.refusal(Refusal::Reply(ServiceReply {
            code,
            reason: reason.to_owned(),
            headers,
        }))
    }

    /// What a service's refusal is to the guest: the reply to return.
    fn refusal(&mut self, refusal: Refusal) -> wit::Error {
        match refusal {
            Refusal::Reply(r) => wit::Error::Refused(self.hand_over(r)),
            Refusal::Error(err) => err,
        }
    }

    /// Whether a service may answer the hook's request itself: in route
    /// and on-failure, once, within the hook's replies.
    fn may_answer(&self) -> Result<(), wit::Error> {
        if !self.answerable {
            return Err(wit::Error::NotAllowed(
                "only route and on-failure may answer the request".into(),
            ));
        }
        if self.answer.is_some() {
            return Err(wit::Error::NotAllowed(
                "the request is answered already".into(),
            ));
        }
        let cap = self.guest.limits.replies_per_hook;
        if self.effects.replies >= cap {
            return Err(past_cap("replies", cap, "replies_per_hook"));
        }
        Ok(())
    }

    /// Answers the hook's request with a service's reply (checked by
    /// [`HostState::may_answer`]): the host's text, never the guest's.
    fn answer_with(&mut self, r: ServiceReply) -> u16 {
        self.effects.replies += 1;
        let code = r.code;
        self.answer = Some(Action::Reply {
            code,
            reason: r.reason,
            headers: r.headers,
        });
        code
    }

    /// `save`: the 200 OK listing the bindings, or the refusal.
    fn register(
        &mut self,
        req: &Resource<RequestCtx>,
        options: &registrar::SaveOptions,
    ) -> Result<Result<ServiceReply, Refusal>> {
        let ctx = self.request(req)?;
        if ctx.msg.method() != Some(&Method::Register) {
            return Ok(Err(Refusal::Error(wit::Error::NotAllowed(
                "registrar.save takes a REGISTER".into(),
            ))));
        }
        let opts = self.save_options(options);
        let ctx = self.request(req)?;
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
        let received = (opts.nat || flow).then(|| {
            let uri = nathelper::received_uri(ctx.source.remote, ctx.source.transport);
            if flow {
                format!("{uri};ob")
            } else {
                uri
            }
        });
        let now = location::unix_now();
        // With [cluster], a connection only this node holds is a flow the
        // other nodes reach through this one (a Path to it).
        let held = ctx
            .source
            .transport
            .is_stream()
            .then_some(crate::transport::Target {
                transport: ctx.source.transport,
                addr: ctx.source.remote,
            });
        // In memory, on this thread: no wait for the database (the
        // persistent bindings are written behind); with [cluster], in
        // Redis before the answer.
        let saved = self.guest.services.location.save_from(
            self.tenant(),
            &ctx.msg,
            received,
            held,
            &opts,
            now,
        );
        let ctx = self.request(req)?;
        Ok(match saved {
            Ok(bindings) => {
                let mut headers = location::reply_contacts(&bindings, now);
                for path in ctx.msg.values(&HeaderName::Path) {
                    headers.push((HeaderName::Path, path.to_owned()));
                }
                // RFC 3261 §10.3 step 8: the registrar's time, for UAs without a clock.
                headers.push((HeaderName::Other("Date".into()), location::http_date(now)));
                tracing::debug!(
                    target: "wisp::registrar",
                    tenant = %self.guest.tenant,
                    to = ctx.msg.header(&HeaderName::To).unwrap_or_default(),
                    bindings = bindings.len(),
                    "bindings saved"
                );
                Ok(ServiceReply {
                    code: 200,
                    reason: "OK".into(),
                    headers,
                })
            }
            // Overloaded storage is the 503 the UA may retry; failed
            // storage is for the routing to answer (500).
            Err(location::SaveError::Storage(err)) if !err.is_overload() => Err(Refusal::Error(
                unavailable("saving a registration", &self.guest.tenant, err),
            )),
            Err(err) => {
                tracing::info!(tenant = %self.guest.tenant, %err, "REGISTER refused");
                let (code, reason, headers) = err.reply();
                Err(Refusal::Reply(ServiceReply {
                    code,
                    reason,
                    headers,
                }))
            }
        })
    }

    /// `authorize`: the authenticated user, or the challenge to send.
    fn check_credentials(
        &mut self,
        req: &Resource<RequestCtx>,
        realm: &str,
    ) -> Result<Result<String, Refusal>> {
        let allowed = self.algorithms();
        let ctx = self.request(req)?;
        let kind = if ctx.msg.method() == Some(&Method::Register) {
            Kind::Www
        } else {
            Kind::Proxy
        };
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
            // Not a challenge: that would tell the UA its password is wrong.
            // Redis failing is logged once per change, not per request.
            Err(err @ StorageError::Cluster(_)) => {
                return Ok(Err(Refusal::Error(wit::Error::Unavailable(format!(
                    "subscriber lookup failed: {err}"
                )))))
            }
            Err(err) => {
                return Ok(Err(Refusal::Error(unavailable(
                    "subscriber lookup",
                    &self.guest.tenant,
                    err,
                ))))
            }
        };
        let stale = match outcome {
            Outcome::Authorized(user) => {
                self.request_mut(req)?.authenticated = true;
                return Ok(Ok(user));
            }
            Outcome::Missing => false,
            Outcome::Stale => true,
            Outcome::Invalid(why) => {
                tracing::info!(tenant = %self.guest.tenant, realm, %why, "authentication failed");
                false
            }
        };
        Ok(Err(Refusal::Reply(
            self.challenge(realm, kind, stale, &allowed),
        )))
    }

    /// The registrar's settings for a save: the routing's, else the tenant
    /// params, else Kamailio's defaults; the tenant's limits bound them.
    fn save_options(&self, options: &registrar::SaveOptions) -> SaveOptions {
        let defaults = SaveOptions::default();
        let pick = |given: Option<u32>, param: &str, default: u32| {
            given.or_else(|| self.param_u32(param)).unwrap_or(default)
        };
        let bound = self.guest.limits.max_bindings_per_aor;
        SaveOptions {
            persistent: options.flags.contains(registrar::SaveFlags::PERSISTENT),
            nat: options.flags.contains(registrar::SaveFlags::NAT),
            default_expires: pick(
                options.default_expires,
                "REG_DEFAULT_EXPIRES",
                defaults.default_expires,
            ),
            min_expires: pick(options.min_expires, "REG_MIN_EXPIRES", defaults.min_expires),
            max_expires: pick(options.max_expires, "REG_MAX_EXPIRES", defaults.max_expires),
            // The tenant's bound holds whatever the routing asks; 0 is no
            // number of contacts, so the bound.
            max_contacts: match pick(options.max_contacts, "REG_MAX_CONTACTS", bound) {
                0 => bound,
                n => n.min(bound),
            },
            max_aors: self.guest.limits.max_aors,
        }
    }
}

/// A reply a service made, in the host's text: handed to the guest
/// (`save`, `error.refused`) or sent as the request's answer
/// (`save-and-reply`, `authorize-or-challenge`).
struct ServiceReply {
    code: u16,
    reason: String,
    headers: Vec<(HeaderName, String)>,
}

/// Why a service did not do what was asked: a reply the request calls
/// for (a refusal, a challenge), or an error answering nothing.
enum Refusal {
    Reply(ServiceReply),
    Error(wit::Error),
}

/// The error of a service whose storage failed: the guest answers 500
/// (the SDKs do), nothing was changed.
fn unavailable(what: &str, tenant: &str, err: impl std::fmt::Display) -> wit::Error {
    tracing::warn!(tenant, %err, "{what} failed");
    wit::Error::Unavailable(format!("{what} failed: {err}"))
}

impl registrar::Host for HostState {
    fn save(
        &mut self,
        req: Resource<RequestCtx>,
        options: registrar::SaveOptions,
    ) -> Result<Result<wit::Reply, wit::Error>> {
        Ok(match self.register(&req, &options)? {
            Ok(ok) => Ok(self.hand_over(ok)),
            Err(refusal) => Err(self.refusal(refusal)),
        })
    }

    fn save_and_reply(
        &mut self,
        req: Resource<RequestCtx>,
        options: registrar::SaveOptions,
    ) -> Result<Result<u16, wit::Error>> {
        if let Err(err) = self.may_answer() {
            return Ok(Err(err));
        }
        Ok(match self.register(&req, &options)? {
            Ok(r) | Err(Refusal::Reply(r)) => Ok(self.answer_with(r)),
            Err(Refusal::Error(err)) => Err(err),
        })
    }

    fn lookup(
        &mut self,
        req: Resource<RequestCtx>,
    ) -> Result<Result<registrar::Located, wit::Error>> {
        let ctx = self.request(&req)?;
        let Some(aor) = ctx
            .msg
            .uri()
            .and_then(|u| Uri::parse(u).ok())
            .and_then(|u| location::aor_of(&u))
        else {
            return Ok(Err(self.refuse(404, "Not Found", Vec::new())));
        };
        let method = ctx
            .msg
            .method()
            .map(|m| m.as_str().to_owned())
            .unwrap_or_default();
        let bindings = match self.guest.services.location.lookup_checked(
            self.tenant(),
            &aor,
            location::unix_now(),
        ) {
            Ok(bindings) => bindings,
            // Redis away and the user not in this node's cache: not a 404.
            Err(err) => return Ok(Err(unavailable("a lookup", &self.guest.tenant, err))),
        };
        if bindings.is_empty() {
            return Ok(Err(self.refuse(404, "Not Found", Vec::new())));
        }
        let mut methods: Vec<String> = Vec::new();
        let mut allowed = Vec::new();
        for b in bindings {
            if b.methods.is_empty() || b.methods.contains(&method) {
                if allowed.len() < MAX_LOOKUP_CONTACTS {
                    allowed.push(b);
                }
            } else {
                for m in &b.methods {
                    if !methods.contains(m) {
                        methods.push(m.clone());
                    }
                }
            }
        }
        let Some(first) = allowed.first() else {
            // RFC 3261 §21.4.6: a 405 lists what is allowed.
            let allow = vec![(HeaderName::Allow, methods.join(", "))];
            return Ok(Err(self.refuse(405, "Method Not Allowed", allow)));
        };
        let nat = first.nat;
        let ctx = self.request_mut(&req)?;
        if let Err(err) = ctx.msg.set_uri(&first.contact) {
            tracing::warn!(%err, contact = %first.contact, "stored contact is not a valid URI");
            return Ok(Err(wit::Error::Unavailable(format!(
                "a stored contact is not a valid URI: {err}"
            ))));
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

    fn unregister(&mut self, user: String) -> Result<Result<u32, wit::Error>> {
        match self
            .guest
            .services
            .location
            .unregister_checked(self.tenant(), &user)
        {
            Ok(removed) => Ok(Ok(u32::try_from(removed).unwrap_or(u32::MAX))),
            Err(err) => Ok(Err(unavailable(
                "removing bindings",
                &self.guest.tenant,
                err,
            ))),
        }
    }

    fn registered(&mut self, user: String) -> Result<Result<bool, wit::Error>> {
        Ok(Ok(self.guest.services.location.registered(
            self.tenant(),
            &user,
            location::unix_now(),
        )))
    }
}

impl auth::Host for HostState {
    /// Kamailio's `auth_check`: a REGISTER is checked against its
    /// Authorization and challenged with a 401, anything else against
    /// Proxy-Authorization with a 407.
    fn authorize(
        &mut self,
        req: Resource<RequestCtx>,
        realm: String,
    ) -> Result<Result<String, wit::Error>> {
        Ok(match self.check_credentials(&req, &realm)? {
            Ok(user) => Ok(user),
            Err(refusal) => Err(self.refusal(refusal)),
        })
    }

    /// `auth_check`, then `auth_challenge`: the challenge is sent by the
    /// host rather than handed to the guest.
    fn authorize_or_challenge(
        &mut self,
        req: Resource<RequestCtx>,
        realm: String,
    ) -> Result<Result<Option<String>, wit::Error>> {
        if let Err(err) = self.may_answer() {
            return Ok(Err(err));
        }
        Ok(match self.check_credentials(&req, &realm)? {
            Ok(user) => Ok(Some(user)),
            Err(Refusal::Reply(challenge)) => {
                self.answer_with(challenge);
                Ok(None)
            }
            Err(Refusal::Error(err)) => Err(err),
        })
    }

    fn consume_credentials(&mut self, req: Resource<RequestCtx>) -> Result<()> {
        let ctx = self.request_mut(&req)?;
        ctx.msg.remove_headers(&HeaderName::Authorization);
        ctx.msg.remove_headers(&HeaderName::ProxyAuthorization);
        Ok(())
    }
}

/// A refusal of the key-value store: past the quota is not allowed; a key
/// or value too long, or a value that is no integer, is invalid; a store
/// that cannot answer (Redis, with `[cluster]`) is unavailable.
fn kv_error(err: KvError) -> wit::Error {
    match err {
        KvError::Quota { .. } => {
            wit::Error::NotAllowed(format!("{err} (limits.kv_keys, limits.kv_bytes)"))
        }
        KvError::Unavailable(_) => wit::Error::Unavailable(err.to_string()),
        _ => wit::Error::Invalid(err.to_string()),
    }
}

/// With `[cluster]` the keys are in Redis ([`crate::services::shared::kv`]), shared
/// by every node; without, in this process's memory. A Redis call's time
/// is the host's, as a database call's is.
impl kv::Host for HostState {
    fn get(&mut self, key: String) -> Result<Option<String>> {
        if let Some(cluster) = &self.guest.services.cluster {
            let started = Instant::now();
            let value = cluster_kv::get(cluster, self.tenant(), &key);
            self.storage_done(started);
            return Ok(value);
        }
        Ok(self
            .guest
            .services
            .kv
            .get(self.tenant(), &key, Instant::now()))
    }

    fn set(
        &mut self,
        key: String,
        value: String,
        ttl_seconds: Option<u32>,
    ) -> Result<Result<(), wit::Error>> {
        let quota = self.guest.limits.kv_quota();
        let stored = match &self.guest.services.cluster {
            Some(cluster) => {
                let started = Instant::now();
                let stored =
                    cluster_kv::set(cluster, self.tenant(), quota, &key, &value, ttl_seconds);
                self.storage_done(started);
                stored
            }
            None => self.guest.services.kv.set(
                self.tenant(),
                quota,
                &key,
                &value,
                ttl_seconds,
                Instant::now(),
            ),
        };
        Ok(stored.map_err(kv_error))
    }

    fn delete(&mut self, key: String) -> Result<bool> {
        if let Some(cluster) = &self.guest.services.cluster {
            let started = Instant::now();
            let deleted = cluster_kv::delete(cluster, self.tenant(), &key);
            self.storage_done(started);
            return Ok(deleted);
        }
        Ok(self
            .guest
            .services
            .kv
            .delete(self.tenant(), &key, Instant::now()))
    }

    fn incr(
        &mut self,
        key: String,
        delta: i64,
        ttl_seconds: Option<u32>,
    ) -> Result<Result<i64, wit::Error>> {
        let quota = self.guest.limits.kv_quota();
        let counted = match &self.guest.services.cluster {
            Some(cluster) => {
                let started = Instant::now();
                let counted =
                    cluster_kv::incr(cluster, self.tenant(), quota, &key, delta, ttl_seconds);
                self.storage_done(started);
                counted
            }
            None => self.guest.services.kv.incr(
                self.tenant(),
                quota,
                &key,
                delta,
                ttl_seconds,
                Instant::now(),
            ),
        };
        Ok(counted.map_err(kv_error))
    }
}

impl permissions::Host for HostState {
    fn allow_source_address(&mut self, req: Resource<RequestCtx>) -> Result<bool> {
        let ip = self.request(&req)?.source.remote.ip();
        Ok(self.guest.allow.allows(ip))
    }
}

impl nat::Host for HostState {
    fn uac_test(&mut self, req: Resource<RequestCtx>, signs: nat::NatSigns) -> Result<bool> {
        let ctx = self.request(&req)?;
        // nathelper's bits for nat_uac_test.
        let flags = [
            (nat::NatSigns::PRIVATE_CONTACT, 1),
            (nat::NatSigns::VIA_ADDRESS_DIFFERS, 2),
            (nat::NatSigns::PRIVATE_VIA, 4),
            (nat::NatSigns::VIA_PORT_DIFFERS, 16),
        ]
        .into_iter()
        .filter(|(sign, _)| signs.contains(*sign))
        .fold(0, |bits, (_, bit)| bits | bit);
        Ok(nathelper::uac_test(&ctx.msg, ctx.source.remote, flags))
    }

    fn fix_contact(&mut self, req: Resource<RequestCtx>) -> Result<bool> {
        let ctx = self.request_mut(&req)?;
        let source = ctx.source.remote;
        Ok(nathelper::fix_contact(&mut ctx.msg, source))
    }

    fn fix_reply_contact(&mut self, res: Resource<ResponseCtx>) -> Result<bool> {
        let res: &mut ResponseCtx = self.table.get_mut(&res)?;
        let Some(source) = res.source else {
            return Ok(false);
        };
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
        res: Resource<ResponseCtx>,
    ) -> Result<()> {
        let event = match event {
            acc::Event::Start => accounting::Event::Start,
            acc::Event::Stop => accounting::Event::Stop,
            acc::Event::Failed => accounting::Event::Failed,
        };
        let res: &ResponseCtx = self.table.get(&res)?;
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

    /// The record is the relay's to write, when the final answer goes
    /// upstream ([`crate::proxy::Hooks::account`]).
    fn account(&mut self, events: acc::Accounted) -> Result<()> {
        let accounted = &mut self.vars.accounted;
        accounted.answered |= events.contains(acc::Accounted::ANSWERED);
        accounted.failed |= events.contains(acc::Accounted::FAILED);
        Ok(())
    }
}
