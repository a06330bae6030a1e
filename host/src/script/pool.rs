//! Warm instances of one component version, reused across hook calls.
//!
//! Instantiating costs ~10–25 µs and a call on a warm instance ~2 µs, so
//! instances are kept between messages. An instance whose call trapped or
//! ran out of time is dropped, never reused: its state is undefined.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use wasmtime::component::Resource;
use wasmtime::{Engine, Store, Trap, UpdateDeadline};

use super::call::{Guest, HookError, HostState, ResponseCtx, StorageTime};
use super::health::Health;
use super::watchdog::Watchdog;
use super::{Loaded, ReplyVerdict, Router, RouterPre};
use crate::proxy::{Action, RequestCtx, TxVars};
use crate::sip::Message;

pub struct Pool {
    engine: Engine,
    watchdog: Watchdog,
    pre: RouterPre<HostState>,
    origin: String,
    guest: Arc<Guest>,
    idle: Mutex<Vec<Warm>>,
    /// Instances alive, idle or busy (bounded by `limits.max_instances`).
    live: Arc<AtomicUsize>,
    health: Health,
}

struct Warm {
    store: Store<HostState>,
    router: Router,
    live: Arc<AtomicUsize>,
}

impl Drop for Warm {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Hook indexes into [`crate::metrics::HOOKS`].
const ROUTE: usize = 0;
const ON_REPLY: usize = 1;
const ON_FAILURE: usize = 2;
const ON_BRANCH: usize = 3;

/// What a hook call gave: its return value and the actions it asked for.
pub type HookResult<T> = Result<(T, Vec<Action>), HookError>;

impl Pool {
    pub(super) fn new(
        engine: Engine,
        watchdog: Watchdog,
        loaded: Loaded,
        guest: Arc<Guest>,
    ) -> Pool {
        Pool {
            engine,
            watchdog,
            pre: loaded.pre,
            origin: loaded.origin,
            health: Health::new(&guest.limits),
            guest,
            idle: Mutex::new(Vec::new()),
            live: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Instances alive now, idle or busy.
    pub fn instances(&self) -> usize {
        self.live.load(Ordering::Relaxed)
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
        let limits = &self.guest.limits;
        for _ in 0..count.clamp(1, limits.idle_instances.min(limits.max_instances).max(1)) {
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
        let max = self.guest.limits.max_instances;
        if self.live.fetch_add(1, Ordering::Relaxed) >= max {
            self.live.fetch_sub(1, Ordering::Relaxed);
            return Err(HookError::Busy(max));
        }
        // From here the count is owned by a Warm, or given back on failure.
        let live = self.live.clone();
        let mut store = Store::new(&self.engine, HostState::new(self.guest.clone()));
        store.limiter(|state| &mut state.limits);
        // Instantiating is mostly the host's work: mapping the compiled
        // code and the memory image, which on a cold page cache (a 37 MB
        // JavaScript component after a big build, say) is disk reads of
        // tens of milliseconds; a hook deadline of 50 ms turned that into
        // failed calls. A start function that loops is still stopped.
        let span = self.guest.limits.hook_deadline();
        store.data_mut().deadline = self.watchdog.deadline(span);
        store
            .data_mut()
            .deadline
            .start(Instant::now() + span.max(INSTANTIATE_DEADLINE));
        store.set_epoch_deadline(1);
        // When the watchdog finds some hook past due (it advances the
        // epoch for all): this instance's is stopped if it is the one,
        // after the time it waited for storage is given back (up to a
        // bound).
        store.epoch_deadline_callback(|mut ctx| {
            let state = ctx.data_mut();
            let storage = &mut state.storage_time;
            if state.deadline.expired(Instant::now(), || storage.owed()) {
                return Err(Trap::Interrupt.into());
            }
            Ok(UpdateDeadline::Continue(1))
        });
        let instantiated = self.pre.instantiate(&mut store);
        store.data_mut().deadline.end();
        match instantiated {
            Ok(router) => Ok(Warm {
                store,
                router,
                live,
            }),
            Err(err) => {
                live.fetch_sub(1, Ordering::Relaxed);
                Err(HookError::Instantiate(format!("{err:#}")))
            }
        }
    }

    /// The route hook on a request. The request comes back in every case
    /// (the proxy may still have to answer it).
    /// A version suspended for a crash loop is not run (`HookError::Suspended`).
    pub fn route(&self, req: RequestCtx, vars: &mut TxVars) -> (RequestCtx, HookResult<()>) {
        let (req, result, _) = self.route_from(Instant::now(), req, vars);
        (req, result)
    }

    /// [`Pool::route`] begun at `started` (a clock read the caller
    /// already made), with when it ended: one clock read before and one
    /// after serve the caller's accounting, the crash-loop check and the
    /// hook metrics.
    pub fn route_from(
        &self,
        started: Instant,
        req: RequestCtx,
        vars: &mut TxVars,
    ) -> (RequestCtx, HookResult<()>, Instant) {
        if let Some(left) = self.health.suspended(started) {
            self.guest.metrics.suspended.inc();
            return (req, Err(HookError::Suspended(left)), started);
        }
        let (req, _, result, ended) = self.call(
            ROUTE,
            started,
            req,
            None,
            None,
            vars,
            |router, store, req, _| {
                let rep = req.rep();
                let info = {
                    let state = store.data();
                    let ctx = state.req(&req)?;
                    state.request_info(ctx)
                };
                let action = router.call_route(&mut *store, req, &info)?;
                store.data_mut().decide_route(rep, action);
                Ok(())
            },
        );
        (req, result, ended)
    }

    /// The on-branch hook on one branch's copy of the request.
    pub fn on_branch(
        &self,
        req: RequestCtx,
        index: u32,
        vars: &mut TxVars,
    ) -> (RequestCtx, HookResult<()>) {
        let (req, result, _) = self.on_branch_from(Instant::now(), req, index, vars);
        (req, result)
    }

    /// [`Pool::on_branch`] begun at `started`, with when it ended.
    pub fn on_branch_from(
        &self,
        started: Instant,
        req: RequestCtx,
        index: u32,
        vars: &mut TxVars,
    ) -> (RequestCtx, HookResult<()>, Instant) {
        let (req, _, result, ended) = self.call(
            ON_BRANCH,
            started,
            req,
            None,
            None,
            vars,
            |router, store, req, _| router.call_on_branch(store, req, index),
        );
        (req, result, ended)
    }

    /// The on-reply hook: true keeps the response, which came from `source`.
    pub fn on_reply(
        &self,
        req: RequestCtx,
        res: Message,
        source: std::net::SocketAddr,
        vars: &mut TxVars,
    ) -> (RequestCtx, Message, HookResult<bool>) {
        let (req, res, result, _) = self.on_reply_from(Instant::now(), req, res, source, vars);
        (req, res, result)
    }

    /// [`Pool::on_reply`] begun at `started`, with when it ended.
    pub fn on_reply_from(
        &self,
        started: Instant,
        req: RequestCtx,
        res: Message,
        source: std::net::SocketAddr,
        vars: &mut TxVars,
    ) -> (RequestCtx, Message, HookResult<bool>, Instant) {
        let (req, res, result, ended) = self.call(
            ON_REPLY,
            started,
            req,
            Some(res),
            Some(source),
            vars,
            |router, store, req, res| {
                let verdict = router.call_on_reply(store, req, response(res)?)?;
                Ok(verdict == ReplyVerdict::Keep)
            },
        );
        (req, res.unwrap_or_else(empty_response), result, ended)
    }

    /// The on-failure hook, with the response that would go upstream: no
    /// action sends it, a `Reply` answers instead, a `Relay` starts new
    /// branches.
    pub fn on_failure(
        &self,
        req: RequestCtx,
        best: Message,
        vars: &mut TxVars,
    ) -> (RequestCtx, Message, HookResult<()>) {
        let (req, res, result, _) = self.on_failure_from(Instant::now(), req, best, vars);
        (req, res, result)
    }

    /// [`Pool::on_failure`] begun at `started`, with when it ended.
    pub fn on_failure_from(
        &self,
        started: Instant,
        req: RequestCtx,
        best: Message,
        vars: &mut TxVars,
    ) -> (RequestCtx, Message, HookResult<()>, Instant) {
        let (req, res, result, ended) = self.call(
            ON_FAILURE,
            started,
            req,
            Some(best),
            None,
            vars,
            |router, store, req, res| {
                let rep = req.rep();
                let action = router.call_on_failure(&mut *store, req, response(res)?)?;
                store.data_mut().decide_failure(rep, action);
                Ok(())
            },
        );
        (req, res.unwrap_or_else(empty_response), result, ended)
    }

    /// Runs one hook on a warm instance: lends the messages and the
    /// transaction's variables to the store, calls, takes them back. A
    /// hook's decision is read into `actions` by the `hook` closure. The
    /// call began at `started`; it gives back when it ended.
    #[allow(clippy::too_many_arguments)]
    fn call<T>(
        &self,
        which: usize,
        started: Instant,
        req: RequestCtx,
        res: Option<Message>,
        source: Option<std::net::SocketAddr>,
        vars: &mut TxVars,
        hook: impl FnOnce(
            &Router,
            &mut Store<HostState>,
            Resource<RequestCtx>,
            Option<Resource<ResponseCtx>>,
        ) -> wasmtime::Result<T>,
    ) -> (RequestCtx, Option<Message>, HookResult<T>, Instant) {
        let warm = self.lock().pop();
        // The hook's time counts from its start, or from the end of the
        // instantiation it needed.
        let (mut warm, begun) = match warm {
            Some(warm) => (warm, started),
            None => match self.instantiate() {
                Ok(warm) => (warm, Instant::now()),
                Err(err) => {
                    self.count_failure(&err, started);
                    return (req, res, Err(err), Instant::now());
                }
            },
        };
        let store = &mut warm.store;
        store.set_epoch_deadline(1);
        let state = store.data_mut();
        state
            .deadline
            .start(begun + self.guest.limits.hook_deadline());
        state.storage_time = StorageTime::default();
        state.effects = Default::default();
        state.actions.clear();
        state.issued.clear();
        state.answerable = matches!(which, ROUTE | ON_FAILURE);
        state.answer = None;
        // Handles of `fields` taken in earlier calls trap from now on.
        state.generation = state.generation.wrapping_add(1);
        std::mem::swap(&mut state.vars, vars);
        let req_rep = state.table.lend_request(req);
        let res_rep = res.map(|msg| state.table.lend_response(ResponseCtx { msg, source }));
        // Host code reached from the guest (WASI) must not take the worker
        // down with it: a panic there counts as a trap of this instance.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            hook(
                &warm.router,
                &mut *store,
                Resource::new_borrow(req_rep),
                res_rep.map(Resource::new_borrow),
            )
        }))
        .unwrap_or_else(|_| Err(wasmtime::Error::msg("host panicked during the hook")));
        let state = store.data_mut();
        state.deadline.end();
        std::mem::swap(&mut state.vars, vars);
        let req = match state.table.take_request() {
            Some(req) => req,
            None => table_broken(),
        };
        let res = res_rep.and_then(|_| state.table.take_response().map(|r| r.msg));
        let ended = Instant::now();
        self.guest
            .metrics
            .hook(which, ended.saturating_duration_since(started));
        match result {
            Ok(value) => {
                self.health.succeeded();
                let actions = std::mem::take(&mut state.actions);
                let mut idle = self.lock();
                if idle.len() < self.guest.limits.idle_instances {
                    idle.push(warm);
                }
                (req, res, Ok((value, actions)), ended)
            }
            Err(err) => {
                let err = match err.downcast_ref::<Trap>() {
                    Some(Trap::Interrupt) => {
                        HookError::Deadline(self.guest.limits.hook_deadline_ms)
                    }
                    _ => HookError::Trap(format!("{err:#}")),
                };
                self.count_failure(&err, started);
                (req, res, Err(err), ended)
            }
        }
    }
}

/// The least time an instantiation is given (see [`Pool::instantiate`]).
const INSTANTIATE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(1);

impl Pool {
    /// Counts a failed hook call; a crash loop suspends the version.
    fn count_failure(&self, err: &HookError, now: Instant) {
        let m = &self.guest.metrics;
        match err {
            HookError::Deadline(_) => m.deadlines.inc(),
            HookError::Trap(_) => m.traps.inc(),
            HookError::Instantiate(_) => m.instantiate_failures.inc(),
            HookError::Busy(_) => {
                m.busy.inc();
                return; // overload, not the guest's fault
            }
            HookError::Suspended(_) => return,
        };
        if let Some(backoff) = self.health.failed(now) {
            tracing::warn!(
                tenant = %self.guest.tenant,
                version = self.guest.version,
                backoff_ms = backoff.as_millis() as u64,
                "crash loop: the tenant's new requests are answered 503 for a while"
            );
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        tracing::info!(
            tenant = %self.guest.tenant,
            version = self.guest.version,
            origin = %self.origin,
            "version unloaded: out of service and no transaction left on it"
        );
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
fn table_broken() -> ! {
    panic!("resource table out of step with the pool: the request lent to the hook is gone")
}
