//! What one hook call works on: the request handed to the guest, the
//! actions the guest asks for, and the store data behind them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::limits::Limits;
use crate::metrics::TenantMetrics;
use crate::proxy::{Action, Locality, TxVars};
use crate::sip::Message;

/// What a tenant's guest is given, whichever instance runs it.
pub struct Guest {
    pub tenant: String,
    /// This version's number within the tenant (1 for the first load).
    pub version: u64,
    pub params: BTreeMap<String, String>,
    pub limits: Limits,
    pub locality: Arc<Locality>,
    pub metrics: TenantMetrics,
    /// Location, subscribers, key-value and the other services (shared).
    pub services: Arc<crate::services::Services>,
    /// The tenant's `IPAUTH_ALLOW` list, parsed once.
    pub allow: crate::services::permissions::AllowList,
}

/// A response handed to a hook (the `response` resource of the WIT).
pub struct ResponseCtx {
    pub msg: Message,
}

/// Why a hook call failed. The request gets a 500 (503 when the guest was
/// not run); an instance that trapped or ran out of time is dropped.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("hook ran past its deadline of {0} ms")]
    Deadline(u64),
    #[error("guest trapped: {0}")]
    Trap(String),
    #[error("cannot instantiate the component: {0}")]
    Instantiate(String),
    /// Crash-loop backoff: the guest was not run.
    #[error("suspended for {} ms after a crash loop", .0.as_millis())]
    Suspended(Duration),
    /// A service the hook called met a storage failure it could not
    /// report to the guest: not the guest's fault.
    #[error("storage failure in a service call: {0}")]
    Storage(String),
    /// Every instance the tenant may have is busy.
    #[error("all {0} instances busy")]
    Busy(usize),
}

impl HookError {
    /// The guest was not run: the request deserves a 503, not a 500.
    pub fn is_overload(&self) -> bool {
        matches!(self, HookError::Suspended(_) | HookError::Busy(_))
    }
}

/// The data of one wasmtime Store: one per warm instance.
pub struct HostState {
    pub(super) wasi: WasiCtx,
    pub(super) table: ResourceTable,
    pub(super) limits: StoreLimits,
    pub(super) guest: Arc<Guest>,
    /// Actions asked for during the current hook call.
    pub(super) actions: Vec<Action>,
    /// The current transaction's variables, lent for the hook call.
    pub(super) vars: TxVars,
    /// Where the response of an on-reply call came from.
    pub(super) reply_source: Option<std::net::SocketAddr>,
    /// Host time the current hook spent waiting for storage, and how much
    /// of it the deadline has given back (see [`StorageTime`]).
    pub(super) storage_time: StorageTime,
}

/// The hook deadline is the guest's own time: waiting for the database
/// (a write queued behind others, a disk or a CPU slow to serve it) is the
/// host's, and a REGISTER whose write is merely slow must not be stopped
/// as a runaway guest. The deadline is extended by what storage calls took,
/// up to [`STORAGE_CREDIT`] per hook, so a hook still ends within
/// `hook_deadline_ms` + that much however many storage calls it makes.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct StorageTime {
    waited: Duration,
    credited: Duration,
}

/// The most host time in storage calls one hook is not charged for: the
/// longest a write may take ([`crate::services::Wait::HOOK`]), so that one
/// write waited for to the end never costs its hook the deadline.
pub(super) const STORAGE_CREDIT: Duration = crate::services::Wait::HOOK.to_finish;

impl StorageTime {
    /// A storage call took `took`.
    pub(super) fn add(&mut self, took: Duration) {
        self.waited = self.waited.saturating_add(took);
    }

    /// At the deadline: the time not yet given back (zero: stop the hook).
    pub(super) fn owed(&mut self) -> Duration {
        let owed = self
            .waited
            .min(STORAGE_CREDIT)
            .saturating_sub(self.credited);
        self.credited += owed;
        owed
    }
}

impl HostState {
    pub(super) fn new(guest: Arc<Guest>) -> Self {
        let memory = usize::try_from(guest.limits.memory_mib << 20).unwrap_or(usize::MAX);
        HostState {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(memory)
                .instances(64)
                .trap_on_grow_failure(false)
                .build(),
            guest,
            actions: Vec::new(),
            vars: TxVars::default(),
            reply_source: None,
            storage_time: StorageTime::default(),
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn storage_time_is_given_back_once_and_up_to_the_bound() {
        let mut time = StorageTime::default();
        assert_eq!(time.owed(), Duration::ZERO, "no storage call: stop");
        time.add(30 * MS);
        assert_eq!(time.owed(), 30 * MS);
        assert_eq!(time.owed(), Duration::ZERO, "given back once");
        time.add(10 * MS);
        assert_eq!(time.owed(), 10 * MS);
        time.add(STORAGE_CREDIT * 3);
        assert_eq!(
            time.owed(),
            STORAGE_CREDIT - 40 * MS,
            "never past the bound"
        );
        assert_eq!(time.owed(), Duration::ZERO);
    }
}
