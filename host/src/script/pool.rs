//! Warm instances of one component version, reused across hook calls.
//!
//! Instantiating costs ~10–25 µs and a call on a warm instance ~2 µs, so
//! instances are kept between messages. An instance whose call trapped or
//! ran out of time is dropped, never reused: its state is undefined.

use std::sync::{Arc, Mutex};

use wasmtime::component::Resource;
use wasmtime::{Engine, Store, Trap};

use super::call::{Action, Guest, HookError, HostState, RequestCtx, ResponseCtx, TxVars};
use super::{deadline_ticks, Loaded, Router, RouterPre};
use crate::sip::Message;

pub struct Pool {
    engine: Engine,
    pre: RouterPre<HostState>,
    origin: String,
    guest: Arc<Guest>,
    idle: Mutex<Vec<Warm>>,
}

struct Warm {
    store: Store<HostState>,
    router: Router,
}

/// What a hook call gave: its return value and the actions it asked for.
pub type HookResult<T> = Result<(T, Vec<Action>), HookError>;

impl Pool {
    pub(super) fn new(engine: Engine, loaded: Loaded, guest: Arc<Guest>) -> Pool {
        Pool {
            engine,
            pre: loaded.pre,
            origin: loaded.origin,
            guest,
            idle: Mutex::new(Vec::new()),
        }
    }

    pub fn guest(&self) -> &Arc<Guest> {
        &self.guest
    }

    /// Where the component came from (a path, or "bundled default").
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Instantiates `count` instances and keeps them warm, so that the
    /// first messages of every worker find one ready; fails if the
    /// component cannot start (a trap in its initialisation, a limit hit).
    pub(super) fn warm_up(&self, count: usize) -> Result<(), HookError> {
        for _ in 0..count.clamp(1, self.guest.limits.idle_instances.max(1)) {
            let warm = self.instantiate()?;
            self.lock().push(warm);
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Warm>> {
        // A panic while holding the lock leaves only a Vec behind: still valid.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn instantiate(&self) -> Result<Warm, HookError> {
        let mut store = Store::new(&self.engine, HostState::new(self.guest.clone()));
        store.limiter(|state| &mut state.limits);
        store.set_epoch_deadline(deadline_ticks(&self.guest.limits));
        let router = self
            .pre
            .instantiate(&mut store)
            .map_err(|err| HookError::Instantiate(format!("{err:#}")))?;
        Ok(Warm { store, router })
    }

    /// The route hook on a request. The request comes back in every case
    /// (the proxy may still have to answer it).
    pub fn route(&self, req: RequestCtx, vars: &mut TxVars) -> (RequestCtx, HookResult<()>) {
        let (req, _, result) = self.call(req, None, vars, |router, store, req, _| {
            router.call_route(store, req)
        });
        (req, result)
    }

    /// The on-branch hook on one branch's copy of the request.
    pub fn on_branch(
        &self,
        req: RequestCtx,
        index: u32,
        vars: &mut TxVars,
    ) -> (RequestCtx, HookResult<()>) {
        let (req, _, result) = self.call(req, None, vars, |router, store, req, _| {
            router.call_on_branch(store, req, index)
        });
        (req, result)
    }

    /// The on-reply hook: true keeps the response, which came from `source`.
    pub fn on_reply(
        &self,
        req: RequestCtx,
        res: Message,
        source: std::net::SocketAddr,
        vars: &mut TxVars,
    ) -> (RequestCtx, Message, HookResult<bool>) {
        let (req, res, result) = self.call(req, Some(res), vars, |router, store, req, res| {
            store.data_mut().reply_source = Some(source);
            router.call_on_reply(store, req, response(res)?)
        });
        (req, res.unwrap_or_else(empty_response), result)
    }

    /// The on-failure hook, with the response that would go upstream.
    pub fn on_failure(
        &self,
        req: RequestCtx,
        best: Message,
        vars: &mut TxVars,
    ) -> (RequestCtx, Message, HookResult<()>) {
        let (req, res, result) = self.call(req, Some(best), vars, |router, store, req, res| {
            router.call_on_failure(store, req, response(res)?)
        });
        (req, res.unwrap_or_else(empty_response), result)
    }

    /// Runs one hook on a warm instance: lends the messages and the
    /// transaction's variables to the store, calls, takes them back.
    fn call<T>(
        &self,
        req: RequestCtx,
        res: Option<Message>,
        vars: &mut TxVars,
        hook: impl FnOnce(
            &Router,
            &mut Store<HostState>,
            Resource<RequestCtx>,
            Option<Resource<ResponseCtx>>,
        ) -> wasmtime::Result<T>,
    ) -> (RequestCtx, Option<Message>, HookResult<T>) {
        let warm = self.lock().pop();
        let mut warm = match warm {
            Some(warm) => warm,
            None => match self.instantiate() {
                Ok(warm) => warm,
                Err(err) => return (req, res, Err(err)),
            },
        };
        let store = &mut warm.store;
        store.set_epoch_deadline(deadline_ticks(&self.guest.limits));
        let state = store.data_mut();
        state.actions.clear();
        state.reply_source = None;
        std::mem::swap(&mut state.vars, vars);
        let req_rep = state
            .table
            .push(req)
            .unwrap_or_else(|e| table_broken(e))
            .rep();
        let res_handle = res.map(|msg| {
            state
                .table
                .push(ResponseCtx { msg })
                .unwrap_or_else(|e| table_broken(e))
        });
        let res_rep = res_handle.as_ref().map(Resource::rep);
        // Host code reached from the guest (WASI) must not take the worker
        // down with it: a panic there counts as a trap of this instance.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            hook(
                &warm.router,
                &mut *store,
                Resource::new_borrow(req_rep),
                res_handle.map(|h| Resource::new_borrow(h.rep())),
            )
        }))
        .unwrap_or_else(|_| Err(wasmtime::Error::msg("host panicked during the hook")));
        let state = store.data_mut();
        std::mem::swap(&mut state.vars, vars);
        let req = state
            .table
            .delete(Resource::<RequestCtx>::new_own(req_rep))
            .unwrap_or_else(|e| table_broken(e));
        let res = res_rep.and_then(|rep| {
            state
                .table
                .delete(Resource::<ResponseCtx>::new_own(rep))
                .map(|r| r.msg)
                .ok()
        });
        match result {
            Ok(value) => {
                let actions = std::mem::take(&mut state.actions);
                let mut idle = self.lock();
                if idle.len() < self.guest.limits.idle_instances {
                    idle.push(warm);
                }
                (req, res, Ok((value, actions)))
            }
            Err(err) => {
                let err = match err.downcast_ref::<Trap>() {
                    Some(Trap::Interrupt) => {
                        HookError::Deadline(self.guest.limits.hook_deadline_ms)
                    }
                    _ => HookError::Trap(format!("{err:#}")),
                };
                (req, res, Err(err))
            }
        }
    }
}

fn response(handle: Option<Resource<ResponseCtx>>) -> wasmtime::Result<Resource<ResponseCtx>> {
    handle.ok_or_else(|| wasmtime::Error::msg("hook needs a response"))
}

/// Stands in for a response lost to a broken table (never seen by a guest).
fn empty_response() -> Message {
    Message::new_response(500, "")
}

/// The table belongs to this store and holds only what the host put in it.
fn table_broken(err: impl std::fmt::Display) -> ! {
    panic!("resource table out of step with the pool: {err}")
}
