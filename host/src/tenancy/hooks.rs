//! The proxy core's [`Hooks`] on wasm routing: the route hook picks the
//! tenant and its version for the request, runs the version's component
//! (`script::Pool`), and pins the version for the transaction's later
//! hooks.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::proxy::{Action, HookFailed, Hooks, RequestCtx, Routed, TxVars};
use crate::script::{HookError, Pool};
use crate::sip::Message;

use super::{Selected, Tenancy};

pub struct TenantHooks {
    tenancy: Arc<Tenancy>,
}

impl TenantHooks {
    pub fn new(tenancy: Arc<Tenancy>) -> TenantHooks {
        TenantHooks { tenancy }
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
        let (req, result) = pool.route(req, vars);
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
        let (req, result) = pool.on_branch(req, index, vars);
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
        let (req, res, result) = pool.on_reply(req, res, source, vars);
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
        let (req, res, result) = pool.on_failure(req, best, vars);
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
}
