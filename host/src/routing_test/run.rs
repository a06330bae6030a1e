//! Running a case file: the tenant's component loaded as the server would
//! load it, its services seeded, each case's message handed to the hook,
//! and what the hook decided read back as an [`Outcome`].
//!
//! Cases of a file share their services (a REGISTER saved by one case is
//! found by the next) and their last transaction: an on-reply or
//! on-failure case without a message of its own runs on the request the
//! previous case relayed, with that transaction's variables.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::credentials::{self, Challenge, NonceCounts};
use super::dialog;
use super::format::{Case, CaseFile, Hook, ResponseSpec};
use super::message::{self, Address, Fill};
use super::pcap;
use super::seed::{self, Seeded};
use wisp::proxy::{branch, checks, Accounted, Action, Armed, Locality, RequestCtx, Source, TxVars};
use wisp::script::{Domains, Guest, Limits, Pool, ScriptEngine};
use wisp::services::permissions::AllowList;
use wisp::sip::{self, HeaderName, Message};
use wisp::transport::{Listener, Transport, Trusted};

/// Where a request comes from when the case does not say.
const DEFAULT_SOURCE: &str = "udp:192.0.2.100:5060";
/// Where a response comes from when the case does not say.
const DEFAULT_RESPONSE_SOURCE: &str = "udp:192.0.2.200:5060";
/// The proxy's address when the file does not say.
const DEFAULT_LISTEN: [&str; 2] = ["udp:192.0.2.1:5060", "tcp:192.0.2.1:5060"];
/// The host's timers, for a relay it did not set them on.
const DEFAULT_INVITE_TIMEOUT_MS: u32 = 120_000;
const DEFAULT_FINAL_TIMEOUT_MS: u32 = 30_000;

/// One branch of a relay as the proxy would send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Branch {
    /// Its Request-URI.
    pub uri: String,
    /// Where it is sent: the relay's destination, else the one a lookup
    /// or loose-route set, else the first Route, else the Request-URI.
    pub next_hop: String,
    /// The Route set put in front of it (a binding's Path).
    pub route: Vec<String>,
}

/// What a hook decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A reply: the hook's, a service's it returned, or the host's when
    /// the hook failed or the request never reached it (`why` says so).
    Reply {
        code: u16,
        reason: String,
        headers: Vec<(String, String)>,
        why: Option<String>,
    },
    Relay {
        branches: Vec<Branch>,
        invite_timeout: u32,
        final_timeout: u32,
    },
    Forward(Option<String>),
    /// The route hook dropped the request, or on-reply the response.
    Drop,
    /// On-failure: the best response goes upstream.
    Upstream,
    /// On-reply: the response goes on.
    Keep,
    /// On-branch decides nothing.
    Nothing,
}

impl Decision {
    pub fn kind(&self) -> &'static str {
        match self {
            Decision::Reply { .. } => "reply",
            Decision::Relay { .. } => "relay",
            Decision::Forward(_) => "forward",
            Decision::Drop => "drop",
            Decision::Upstream => "upstream",
            Decision::Keep => "keep",
            Decision::Nothing => "nothing",
        }
    }
}

/// Everything a case can check.
#[derive(Debug)]
pub struct Outcome {
    pub decision: Decision,
    /// The request after the hook (as it would be relayed).
    pub request: Message,
    /// The hook asked for Record-Route (added as the request leaves).
    pub record_route: bool,
    /// The response after on-reply or on-failure.
    pub response: Option<Message>,
    pub vars: BTreeMap<String, String>,
    /// The hooks armed (`proxy.arm`); none: never armed, every hook runs.
    pub armed: Option<Armed>,
    /// What the host accounts when the transaction ends (`acc.account`).
    pub accounted: Accounted,
    /// What the hook logged, as `level: message`.
    pub log: Vec<String>,
}

/// A case that cannot run: the file is wrong, not the routing.
#[derive(Debug)]
pub struct SetupError(pub String);

/// The component every file of a run is tested against.
pub struct Component {
    pub engine: Arc<ScriptEngine>,
    pub wasm: Vec<u8>,
    pub origin: String,
}

/// A case file ready to run its cases in order.
pub struct FileRun {
    pool: Pool,
    log: Arc<Mutex<Vec<(String, String)>>>,
    trusted: Trusted,
    locality: Arc<Locality>,
    /// Passwords of the file's subscribers, by (user, realm).
    passwords: BTreeMap<(String, String), String>,
    dir: PathBuf,
    stem: String,
    /// The last request a hook saw and its transaction's variables.
    previous: Option<(RequestCtx, TxVars)>,
    challenges: Vec<Challenge>,
    counts: NonceCounts,
    /// Declared last: the database is removed after the pool that uses it.
    _seeded: Seeded,
}

impl FileRun {
    /// Seeds the services and loads the component for the file at `path`.
    pub fn new(component: &Component, file: &CaseFile, path: &Path) -> Result<FileRun, SetupError> {
        let tenant = file.tenant.clone().unwrap_or_else(|| "test".into());
        let limits = Limits::default();
        let params: BTreeMap<String, String> = file
            .params
            .iter()
            .map(|(k, v)| (k.clone(), v.text()))
            .collect();
        let listen: Vec<String> = match &file.listen {
            Some(list) => list.clone(),
            None => DEFAULT_LISTEN.iter().map(|s| s.to_string()).collect(),
        };
        let listeners = listen
            .iter()
            .map(|l| {
                message::address(l).map(|a| Listener {
                    transport: a.transport,
                    local: a.addr,
                    advertise: None,
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| SetupError(format!("listen: {e}")))?;
        let trusted = match &file.trusted {
            Some(list) => Trusted::parse(list.iter().map(String::as_str)).map_err(SetupError)?,
            None => Trusted::default(),
        };
        let allow = AllowList::parse(params.get("IPAUTH_ALLOW").map_or("", String::as_str))
            .map_err(|e| SetupError(format!("IPAUTH_ALLOW: {e}")))?;
        let seeded = seed::seed(file, &tenant, &limits).map_err(SetupError)?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let locality = Arc::new(Locality::new(listeners, file.aliases.clone()));
        let guest = Arc::new(Guest {
            tenant: tenant.clone(),
            version: 1,
            params: params.clone(),
            limits,
            locality: locality.clone(),
            metrics: wisp::metrics::Metrics::new().tenant(&tenant),
            services: seeded.services.clone(),
            allow,
            domains: Arc::new(Domains::new(&file.domains)),
            log_capture: Some(log.clone()),
        });
        let pool = component
            .engine
            .load_checked(&component.wasm, &component.origin, guest)
            .map_err(|e| SetupError(format!("{e:#}")))?;
        Ok(FileRun {
            pool,
            log,
            trusted,
            locality,
            passwords: file
                .subscribers
                .iter()
                .map(|s| ((s.user.clone(), s.domain.clone()), s.password.clone()))
                .collect(),
            dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
            stem: path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "case".into()),
            previous: None,
            challenges: Vec::new(),
            counts: NonceCounts::default(),
            _seeded: seeded,
        })
    }

    /// Runs case number `index` (from 0) of the file.
    pub fn run(&mut self, index: usize, case: &Case) -> Result<Outcome, SetupError> {
        let decisions = case.expect.decisions();
        if decisions.len() > 1 {
            return Err(SetupError(format!(
                "expect names {} decisions ({}); a hook makes one",
                decisions.len(),
                decisions.join(", ")
            )));
        }
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clear();
        let (ctx, mut vars) = match self.request(index, case)? {
            Some(fresh) => fresh,
            None => self.previous.clone().ok_or_else(|| {
                SetupError(format!(
                    "a {} case needs a message, or a case before it whose request it answers",
                    case.hook.name()
                ))
            })?,
        };
        for (name, value) in &case.vars {
            vars.values.insert(name.clone(), value.clone());
        }
        // A hook the transaction did not arm is never called by the proxy:
        // a case of it would pass on what cannot happen.
        let armable = match case.hook {
            Hook::Route => None,
            Hook::OnReply => Some(wisp::proxy::Hook::OnReply),
            Hook::OnFailure => Some(wisp::proxy::Hook::OnFailure),
            Hook::OnBranch => Some(wisp::proxy::Hook::OnBranch),
        };
        if armable.is_some_and(|hook| !vars.runs(hook)) {
            return Err(SetupError(format!(
                "{} is not armed for this transaction (proxy.arm): the proxy would not call it",
                case.hook.name()
            )));
        }
        let (ctx, decision, response) = match case.hook {
            Hook::Route => self.route(ctx, &mut vars),
            Hook::OnBranch => {
                let (ctx, result) = self
                    .pool
                    .on_branch(ctx, case.branch.unwrap_or(0), &mut vars);
                let decision = match result {
                    Ok(_) => Decision::Nothing,
                    Err(err) => failed(&err.to_string()),
                };
                (ctx, decision, None)
            }
            Hook::OnReply | Hook::OnFailure => {
                let res = self.response(case, &ctx.msg)?;
                let mut ctx = ctx;
                // The relay took the branches and the lookup's destination
                // when it sent them (as the proxy core does).
                ctx.branches.clear();
                ctx.dst_uri = None;
                ctx.path.clear();
                if case.hook == Hook::OnReply {
                    let source = address(
                        case.response_source.as_deref(),
                        DEFAULT_RESPONSE_SOURCE,
                        "response-source",
                    )?;
                    let (ctx, res, result) = self.pool.on_reply(ctx, res, source.addr, &mut vars);
                    let decision = match result {
                        Ok((keep, _)) => reply_verdict(keep),
                        Err(err) => failed(&err.to_string()),
                    };
                    (ctx, decision, Some(res))
                } else {
                    let (ctx, res, result) = self.pool.on_failure(ctx, res, &mut vars);
                    let (ctx, decision) = match result {
                        Ok(((), actions)) => {
                            let decision = self.decision(&ctx, actions, Decision::Upstream);
                            (ctx, decision)
                        }
                        Err(err) => (ctx, failed(&err.to_string())),
                    };
                    (ctx, decision, Some(res))
                }
            }
        };
        if let Decision::Reply { headers, .. } = &decision {
            let found = credentials::challenges(headers);
            if !found.is_empty() {
                self.challenges = found;
            }
        }
        let log = self
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(level, message)| format!("{level}: {message}"))
            .collect();
        let outcome = Outcome {
            decision,
            request: ctx.msg.clone(),
            record_route: ctx.record_route,
            response,
            vars: vars.values.clone(),
            armed: vars.armed,
            accounted: vars.accounted,
            log,
        };
        self.previous = Some((ctx, vars));
        Ok(outcome)
    }

    /// The case's own request, if it gives one (text or capture), with
    /// its credentials; fresh transaction variables.
    fn request(
        &mut self,
        index: usize,
        case: &Case,
    ) -> Result<Option<(RequestCtx, TxVars)>, SetupError> {
        let (msg, source) = match (&case.message, &case.pcap) {
            (Some(_), Some(_)) => {
                return Err(SetupError(
                    "give the message as text or as pcap, not both".into(),
                ))
            }
            (None, None) if case.hook == Hook::Route => {
                return Err(SetupError(
                    "a route case needs a message (text or pcap)".into(),
                ))
            }
            (None, None) => return Ok(None),
            (Some(text), None) => {
                let source = address(case.source.as_deref(), DEFAULT_SOURCE, "source")?;
                let tag = format!("{}-{}", self.stem, index + 1);
                let fill = Fill {
                    source,
                    tag: &tag,
                    cseq: u32::try_from(index + 1).unwrap_or(u32::MAX),
                };
                let fill = case.complete.unwrap_or(true).then_some(&fill);
                let msg = if text.contains(dialog::PLACEHOLDER) {
                    // The entry depends on the Call-ID, which may be filled in.
                    let stand_in = text.replace(dialog::PLACEHOLDER, "<sip:stand-in.invalid;lr>");
                    let msg = message::request(&stand_in, fill).map_err(SetupError)?;
                    let call_id = msg.call_id().unwrap_or_default();
                    let rr = dialog::record_route(&self.locality, call_id, source.addr)
                        .map_err(SetupError)?;
                    message::request(&text.replace(dialog::PLACEHOLDER, &rr), fill)
                        .map_err(SetupError)?
                } else {
                    message::request(text, fill).map_err(SetupError)?
                };
                (msg, source)
            }
            (None, Some(file)) => {
                let number = case
                    .packet
                    .ok_or_else(|| SetupError("pcap needs packet (its number, from 1)".into()))?;
                let datagram = pcap::datagram(&self.dir.join(file), number).map_err(SetupError)?;
                let source = match &case.source {
                    Some(text) => {
                        message::address(text).map_err(|e| SetupError(format!("source: {e}")))?
                    }
                    None => Address {
                        transport: Transport::Udp,
                        addr: datagram.source,
                    },
                };
                let msg = message::captured(&datagram.payload).map_err(SetupError)?;
                if !msg.is_request() {
                    return Err(SetupError(format!(
                        "packet {number} of {file} is a response; a request is expected"
                    )));
                }
                (msg, source)
            }
        };
        let mut msg = msg;
        if let Some(auth) = &case.auth {
            self.add_credentials(&mut msg, auth)?;
        }
        let mut ctx = RequestCtx::new(
            msg,
            Source {
                transport: source.transport,
                remote: source.addr,
                listener: 0,
                trusted: self.trusted.contains(source.addr.ip()),
            },
        );
        ctx.received_len = ctx.msg.wire_len();
        ctx.loop_hash = branch::loop_hash(&ctx.msg);
        Ok(Some((ctx, TxVars::default())))
    }

    fn add_credentials(
        &mut self,
        msg: &mut Message,
        auth: &super::format::Auth,
    ) -> Result<(), SetupError> {
        if self.challenges.is_empty() {
            return Err(SetupError(
                "auth: no case before this one got a challenge (401 or 407) to answer".into(),
            ));
        }
        let challenge = match &auth.algorithm {
            None => &self.challenges[0],
            Some(name) => self
                .challenges
                .iter()
                .find(|c| c.algorithm.name().eq_ignore_ascii_case(name))
                .ok_or_else(|| SetupError(format!("auth: the challenge offers no {name}")))?,
        };
        let password = match &auth.password {
            Some(p) => p.clone(),
            None => self
                .passwords
                .get(&(auth.user.clone(), challenge.realm.clone()))
                .cloned()
                .ok_or_else(|| {
                    SetupError(format!(
                        "auth: no subscriber {}@{} in the file to take the password of (or give password)",
                        auth.user, challenge.realm
                    ))
                })?,
        };
        let method = msg
            .method()
            .map(|m| m.as_str().to_owned())
            .unwrap_or_default();
        let uri = msg.uri().unwrap_or_default().to_owned();
        let (name, value) = credentials::answer(
            challenge,
            &auth.user,
            &password,
            &method,
            &uri,
            &mut self.counts,
        );
        msg.append_header(HeaderName::parse(&name), &value)
            .map_err(|e| SetupError(format!("auth: {e}")))
    }

    /// The route hook, after the checks the proxy makes before it (a
    /// request they refuse never reaches the routing).
    fn route(
        &self,
        mut ctx: RequestCtx,
        vars: &mut TxVars,
    ) -> (RequestCtx, Decision, Option<Message>) {
        if let Err(err) = sip::validate(&ctx.msg) {
            let decision = host_reply(
                400,
                &err.to_string(),
                "refused by the proxy before the routing runs",
            );
            return (ctx, decision, None);
        }
        if branch::has_looped(&ctx.msg, ctx.loop_hash) {
            return (
                ctx,
                host_reply(
                    482,
                    "Loop Detected",
                    "refused by the proxy before the routing runs",
                ),
                None,
            );
        }
        let cap = wisp::proxy::ProxyLimits::default().max_forwards;
        if let Err(err) = checks::cap_max_forwards(&mut ctx.msg, cap) {
            return (
                ctx,
                host_reply(400, &err, "refused by the proxy before the routing runs"),
                None,
            );
        }
        let (ctx, result) = self.pool.route(ctx, vars);
        match result {
            Ok(((), actions)) => {
                let decision = self.decision(&ctx, actions, Decision::Drop);
                (ctx, decision, None)
            }
            Err(err) => (ctx, failed(&err.to_string()), None),
        }
    }

    /// The response of an on-reply or on-failure case.
    fn response(&self, case: &Case, req: &Message) -> Result<Message, SetupError> {
        match &case.response {
            None => Err(SetupError(format!(
                "a {} case needs a response (a code or SIP text)",
                case.hook.name()
            ))),
            Some(ResponseSpec::Code(code)) => {
                if !(100..=699).contains(code) {
                    return Err(SetupError(format!(
                        "response {code} is not a status code (100-699)"
                    )));
                }
                let tag = format!("callee-{}", self.stem);
                Ok(sip::response_to(
                    req,
                    *code,
                    reason_phrase(*code),
                    Some(&tag),
                ))
            }
            Some(ResponseSpec::Text(text)) => message::response(text, req).map_err(SetupError),
        }
    }

    /// What a hook's actions come to; `none` when it asked for nothing
    /// (the route hook dropped the request, on-failure sent the best
    /// response upstream).
    fn decision(&self, ctx: &RequestCtx, actions: Vec<Action>, none: Decision) -> Decision {
        let Some(action) = actions.into_iter().next() else {
            return none;
        };
        match action {
            Action::Reply {
                code,
                reason,
                headers,
            } => Decision::Reply {
                code,
                reason,
                headers: headers
                    .into_iter()
                    .map(|(name, value)| (name.as_str().to_owned(), value))
                    .collect(),
                why: None,
            },
            Action::Forward { destination } => Decision::Forward(destination),
            Action::Relay { destination } => self.relay(ctx, destination),
        }
    }

    /// A relay's branches as the proxy would send them, and its timers
    /// as the host applied them.
    fn relay(&self, ctx: &RequestCtx, destination: Option<String>) -> Decision {
        let uri = ctx.msg.uri().unwrap_or_default().to_owned();
        let first_route = ctx.msg.values(&HeaderName::Route).next().map(route_uri);
        let first_hop = destination
            .or_else(|| ctx.dst_uri.clone())
            .or_else(|| ctx.path.first().map(|p| route_uri(p)))
            .or(first_route.clone())
            .unwrap_or_else(|| uri.clone());
        let mut branches = vec![Branch {
            uri,
            next_hop: first_hop,
            route: ctx.path.clone(),
        }];
        for b in &ctx.branches {
            branches.push(Branch {
                uri: b.uri.clone(),
                next_hop: b
                    .destination
                    .clone()
                    .or_else(|| b.path.first().map(|p| route_uri(p)))
                    .or(first_route.clone())
                    .unwrap_or_else(|| b.uri.clone()),
                route: b.path.clone(),
            });
        }
        let ms = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
        let (invite, other) = ctx.fr_timers.map_or(
            (DEFAULT_INVITE_TIMEOUT_MS, DEFAULT_FINAL_TIMEOUT_MS),
            |(i, o)| (ms(i), ms(o)),
        );
        Decision::Relay {
            branches,
            invite_timeout: invite,
            final_timeout: other,
        }
    }
}

/// The URI of a Route or Path value (`<sip:edge;lr>` gives `sip:edge;lr`).
fn route_uri(value: &str) -> String {
    let value = value.trim();
    match (value.find('<'), value.find('>')) {
        (Some(start), Some(end)) if start < end => value[start + 1..end].to_owned(),
        _ => value.to_owned(),
    }
}

fn address(text: Option<&str>, default: &str, what: &str) -> Result<Address, SetupError> {
    message::address(text.unwrap_or(default)).map_err(|e| SetupError(format!("{what}: {e}")))
}

/// A reply the host makes itself.
fn host_reply(code: u16, reason: &str, why: &str) -> Decision {
    Decision::Reply {
        code,
        reason: reason.to_owned(),
        headers: Vec::new(),
        why: Some(why.to_owned()),
    }
}

/// A hook that failed (trap, deadline, invalid decision): the host
/// answers 500.
fn failed(err: &str) -> Decision {
    host_reply(
        500,
        "Server Internal Error",
        &format!("the hook failed: {err}"),
    )
}

fn reply_verdict(keep: bool) -> Decision {
    if keep {
        Decision::Keep
    } else {
        Decision::Drop
    }
}

/// The standard reason phrase of a code (RFC 3261 §21 and extensions).
pub fn reason_phrase(code: u16) -> &'static str {
    wisp::sip::reason_phrase(code)
}
