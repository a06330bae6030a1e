//! Warm instances of one component version, reused across hook calls.
//!
//! Instantiating costs ~10–25 µs and a call on a warm instance ~2 µs, so
//! instances are kept between messages. An instance whose call trapped or
//! ran out of time is dropped, never reused: its state is undefined.

use std::sync::{Arc, Mutex};

use wasmtime::{Engine, Store, Trap};

use super::call::{Action, Guest, HookError, HostState, RequestCtx};
use super::{deadline_ticks, Loaded, Router, RouterPre};

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

    /// Instantiates one instance and keeps it warm; fails if the component
    /// cannot start (a trap in its initialisation, a limit hit).
    pub(super) fn warm_up(&self) -> Result<(), HookError> {
        let warm = self.instantiate()?;
        self.lock().push(warm);
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

    /// Runs the route hook on `req`. The request comes back in every case
    /// (the proxy may still have to answer it), with the guest's actions
    /// or the reason the hook failed.
    pub fn route(&self, req: RequestCtx) -> (RequestCtx, Result<Vec<Action>, HookError>) {
        let warm = self.lock().pop();
        let mut warm = match warm {
            Some(warm) => warm,
            None => match self.instantiate() {
                Ok(warm) => warm,
                Err(err) => return (req, Err(err)),
            },
        };
        let store = &mut warm.store;
        store.set_epoch_deadline(deadline_ticks(&self.guest.limits));
        store.data_mut().actions.clear();
        let handle = match store.data_mut().table.push(req) {
            Ok(handle) => handle,
            Err(err) => unreachable_table(err),
        };
        let rep = handle.rep();
        // Host code reached from the guest (WASI) must not take the worker
        // down with it: a panic there counts as a trap of this instance.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            warm.router.call_route(&mut *store, handle)
        }))
        .unwrap_or_else(|_| Err(wasmtime::Error::msg("host panicked during the hook")));
        let state = store.data_mut();
        let req = match state
            .table
            .delete(wasmtime::component::Resource::<RequestCtx>::new_own(rep))
        {
            Ok(req) => req,
            Err(err) => unreachable_table(err),
        };
        match result {
            Ok(()) => {
                let actions = std::mem::take(&mut state.actions);
                let mut idle = self.lock();
                if idle.len() < self.guest.limits.idle_instances {
                    idle.push(warm);
                }
                (req, Ok(actions))
            }
            Err(err) => {
                let err = match err.downcast_ref::<Trap>() {
                    Some(Trap::Interrupt) => {
                        HookError::Deadline(self.guest.limits.hook_deadline_ms)
                    }
                    _ => HookError::Trap(format!("{err:#}")),
                };
                (req, Err(err))
            }
        }
    }
}

/// The table belongs to this store and holds only what the host put in it.
fn unreachable_table(err: wasmtime::component::ResourceTableError) -> ! {
    panic!("resource table out of step with the pool: {err}")
}
