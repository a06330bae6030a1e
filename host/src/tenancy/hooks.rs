//! The proxy core's [`Hooks`] on wasm routing: the route hook picks the
//! tenant and its version for the request, runs the version's component
//! (`script::Pool`), and pins the version for the transaction's later
//! hooks.
//!
//! The hooks of a tenant's lane count the tenant's hook time
//! ([`HookTime`]): a route hook past the tenant's `hook_budget_ms_per_s`
//! is not run, and the request is answered 503 until the next second.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::proxy::{Action, HookFailed, Hooks, RequestCtx, Routed, TxVars};
use crate::script::{HookError, HookTime, Pool};
use crate::services::acc as accounting;
use crate::sip::{Message, Method};

use super::{Selected, Tenancy};

pub struct TenantHooks {
    tenancy: Arc<Tenancy>,
    /// The hook time of the tenant whose calls these hooks run, when they
    /// run one tenant's calls only (its lane).
    lane: Option<(String, Arc<HookTime>)>,
}

impl TenantHooks {
    pub fn new(tenancy: Arc<Tenancy>) -> TenantHooks {
        TenantHooks {
            tenancy,
            lane: None,
        }
    }

    /// Hooks for the calls of `tenant` alone, counting its hook time.
    pub fn for_tenant(tenancy: Arc<Tenancy>, tenant: String, time: Arc<HookTime>) -> TenantHooks {
        TenantHooks {
            tenancy,
            lane: Some((tenant, time)),
        }
    }

    /// The hook time of `tenant`, when these hooks count it.
    fn time_of(&self, tenant: &str) -> Option<&HookTime> {
        self.lane
            .as_ref()
            .filter(|(name, _)| name == tenant)
            .map(|(_, time)| &**time)
    }

    /// Charges a hook call on `pool` that ran from `started` to `ended`
    /// to the pool's tenant. The pool reads the clock at both ends of the
    /// call for its own metrics and hands the readings out (`Pool::*_from`),
    /// so that timing a hook costs two clock reads in all.
    fn charge(&self, pool: &Pool, started: Instant, ended: Instant) {
        if let Some(time) = self.time_of(&pool.guest().tenant) {
            if time.charge(ended, ended.saturating_duration_since(started)) {
                tracing::info!(
                    tenant = %pool.guest().tenant,
                    "slow hooks: the tenant's calls move to a lane of their own"
                );
            }
        }
    }
}

fn failed(pool: &Pool, err: HookError) -> HookFailed {
    HookFailed(format!(
        "tenant {} version {}: {err}",
        pool.guest().tenant,
        pool.guest().version
    ))
}

impl Hooks for TenantHooks {
    type Pinned = Arc<Pool>;

    fn route(&mut self, req: RequestCtx, vars: &mut TxVars) -> (RequestCtx, Routed<Arc<Pool>>) {
        let tenant = match self.tenancy.select(&req.msg, &req.source) {
            Selected::Tenant(tenant) => tenant,
            Selected::Unknown(code) => {
                tracing::debug!(
                    uri = req.msg.uri().unwrap_or(""),
                    "no tenant for the request"
                );
                return (req, Routed::NoRouting(code));
            }
        };
        tenant.metrics.requests.inc();
        let pool = tenant.pick(req.msg.call_id());
        let started = Instant::now();
        if let Some(time) = self.time_of(&tenant.name) {
            let budget = pool.guest().limits.hook_budget_ms_per_s;
            if let Some(left) = time.over_budget(started, budget) {
                tenant.metrics.over_budget.inc();
                tracing::debug!(tenant = %tenant.name, budget_ms = budget, "hook time budget used; answering 503");
                let retry_after = left.as_secs() + u64::from(left.subsec_nanos() > 0);
                return (
                    req,
                    Routed::Overloaded {
                        pinned: pool,
                        retry_after: retry_after.max(1),
                    },
                );
            }
        }
        let (req, result, ended) = pool.route_from(started, req, vars);
        self.charge(&pool, started, ended);
        let routed = match result {
            Ok(((), actions)) => Routed::Actions {
                pinned: pool,
                actions,
            },
            Err(err) if err.is_overload() => {
                tracing::debug!(tenant = %tenant.name, %err, "not routed; answering 503");
                let retry_after = match &err {
                    HookError::Suspended(left) => left.as_secs() + 1,
                    _ => 5,
                };
                Routed::Overloaded {
                    pinned: pool,
                    retry_after,
                }
            }
            Err(err) => {
                tracing::warn!(tenant = %tenant.name, version = pool.guest().version, %err, "route hook failed; answering 500");
                Routed::Failed { pinned: pool }
            }
        };
        (req, routed)
    }

    fn on_branch(
        &mut self,
        pool: &Arc<Pool>,
        req: RequestCtx,
        index: u32,
        vars: &mut TxVars,
    ) -> (RequestCtx, Result<(), HookFailed>) {
        let started = Instant::now();
        let (req, result, ended) = pool.on_branch_from(started, req, index, vars);
        self.charge(pool, started, ended);
        (req, result.map(|_| ()).map_err(|e| failed(pool, e)))
    }

    fn on_reply(
        &mut self,
        pool: &Arc<Pool>,
        req: RequestCtx,
        res: Message,
        source: SocketAddr,
        vars: &mut TxVars,
    ) -> (RequestCtx, Message, Result<bool, HookFailed>) {
        let started = Instant::now();
        let (req, res, result, ended) = pool.on_reply_from(started, req, res, source, vars);
        self.charge(pool, started, ended);
        (
            req,
            res,
            result.map(|(keep, _)| keep).map_err(|e| failed(pool, e)),
        )
    }

    fn on_failure(
        &mut self,
        pool: &Arc<Pool>,
        req: RequestCtx,
        best: Message,
        vars: &mut TxVars,
    ) -> (RequestCtx, Message, Result<Vec<Action>, HookFailed>) {
        let started = Instant::now();
        let (req, res, result, ended) = pool.on_failure_from(started, req, best, vars);
        self.charge(pool, started, ended);
        (
            req,
            res,
            result
                .map(|((), actions)| actions)
                .map_err(|e| failed(pool, e)),
        )
    }

    fn replied(&mut self, pool: &Arc<Pool>, code: u16) {
        pool.guest().metrics.reply(code);
    }

    fn account(
        &mut self,
        pool: &Arc<Pool>,
        req: &Message,
        code: u16,
        reason: &str,
        answer: Option<&Message>,
    ) {
        let event = match (code, req.method()) {
            (200..=299, Some(Method::Invite)) => accounting::Event::Start,
            (200..=299, Some(Method::Bye)) => accounting::Event::Stop,
            (300.., _) => accounting::Event::Failed,
            _ => return,
        };
        if !accounting::wanted() {
            return;
        }
        // Parsed only now: the proxy relays a response's To unread.
        let to = answer.and_then(|answer| answer.to().ok());
        let to_tag = to.and_then(|to| to.tag());
        accounting::Record::new(event, req, code, reason, to_tag).log(&pool.guest().tenant);
    }
}
