//! What one hook call works on: the request handed to the guest, the
//! actions the guest asks for, and the store data behind them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use std::any::Any;

use wasmtime::component::{Resource, ResourceTable, ResourceTableError};
use wasmtime::ResourceLimiter;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::limits::Limits;
use crate::metrics::TenantMetrics;
use crate::proxy::{Action, Locality, RequestCtx, TxVars};
use crate::sip::{Host, Message, Scheme, Uri};
use arc_swap::ArcSwap;

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
    /// The tenant's `domains`: local for its routing (`is-myself`).
    pub domains: Arc<Domains>,
    /// Where `log.write` also copies what the guest logs, as (level,
    /// message): the `wisp test` runner shows a case's log with its
    /// outcome. None in the server, whose log is tracing's.
    pub log_capture: Option<LogCapture>,
}

/// What a guest logged, as (level, message), for `wisp test`.
pub type LogCapture = Arc<std::sync::Mutex<Vec<(String, String)>>>;

#[cfg(test)]
impl Guest {
    /// A tenant's guest for tests: no params, default limits, no
    /// listeners or domains, services on in-memory storage.
    pub(crate) fn for_tests(tenant: &str) -> Guest {
        let storage = crate::services::Storage::in_memory().expect("in-memory storage");
        Guest {
            tenant: tenant.into(),
            version: 1,
            params: BTreeMap::new(),
            limits: Limits::default(),
            locality: Arc::new(Locality::new(Vec::new(), Vec::new())),
            metrics: crate::metrics::Metrics::new().tenant(tenant),
            services: Arc::new(crate::services::Services::with_storage(storage)),
            allow: Default::default(),
            domains: Default::default(),
            log_capture: None,
        }
    }
}

impl Guest {
    /// Whether a URI names this proxy for this tenant: a listener or an
    /// alias of the process, or one of the tenant's own `domains` on a
    /// port wisp listens on (5060 when none is written, 5061 for sips).
    /// Other tenants' domains are not local for this one.
    pub fn is_myself(&self, uri: &Uri) -> bool {
        let port = uri.port.unwrap_or(if uri.scheme == Scheme::Sips {
            5061
        } else {
            5060
        });
        self.is_myself_host(&uri.host, port)
    }

    /// [`Guest::is_myself`] for a URI's host and port (the default port of
    /// its scheme when it has none).
    pub fn is_myself_host(&self, host: &crate::sip::Host, port: u16) -> bool {
        // The port first: a look at the listeners is cheaper than the
        // load of the shared domain list.
        self.locality.is_myself_host(host, port)
            || self
                .locality
                .listeners()
                .iter()
                .any(|l| l.local.port() == port)
                && self.domains.contains(host)
    }
}

/// The domains a tenant claims (the `domains` of its `[[tenant]]`), in
/// lower case. Shared by every version of the tenant and replaced in place
/// by a configuration reload, so that a domain added at runtime is local
/// for the tenant's routing at once, without a new version.
#[derive(Default)]
pub struct Domains(ArcSwap<Vec<String>>);

impl Domains {
    pub fn new(list: &[String]) -> Domains {
        let domains = Domains::default();
        domains.set(list);
        domains
    }

    pub fn set(&self, domains: &[String]) {
        self.0.store(Arc::new(
            domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
        ));
    }

    /// Whether `host` is one of the domains (a name in any case, or an IP).
    pub fn contains(&self, host: &Host) -> bool {
        let domains = self.0.load();
        if domains.is_empty() {
            return false;
        }
        match host {
            Host::Name(name) => domains.iter().any(|d| d.eq_ignore_ascii_case(name)),
            // The address written once, not once per domain.
            Host::V4(ip) => domains.contains(&ip.to_string()),
            Host::V6(ip) => domains.contains(&ip.to_string()),
        }
    }
}

/// A response handed to a hook (the `response` resource of the WIT).
pub struct ResponseCtx {
    pub msg: Message,
    /// The address it came from; none for a response the proxy made
    /// itself (a 408 of a branch that timed out, say).
    pub source: Option<std::net::SocketAddr>,
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
    pub(super) table: HookTable,
    pub(super) limits: InstanceLimits,
    pub(super) guest: Arc<Guest>,
    /// What the current hook call decided, as the proxy core's actions.
    pub(super) actions: Vec<Action>,
    /// Counts hook calls on this store: `fields` handles carry it, so
    /// that one kept from an earlier call is told apart (see `fields`).
    pub(super) generation: u32,
    /// Replies the services made in the current hook call (a registrar's
    /// 200, a challenge, a refusal): returned as the hook's decision, they
    /// are the host's text, not charged to the hook's caps.
    pub(super) issued: Vec<super::wisp::proxy::sip::Reply>,
    /// Whether a service may answer the current hook call's request
    /// itself (`save-and-reply`, `authorize-or-challenge`): in the hooks
    /// whose decision may be a reply, route and on-failure.
    pub(super) answerable: bool,
    /// The answer a service gave the request in the current hook call:
    /// it stands for the hook's decision.
    pub(super) answer: Option<Action>,
    /// What the current hook call has asked of the host so far, against
    /// the per-hook caps of its [`Limits`].
    pub(super) effects: HookEffects,
    /// The current transaction's variables, lent for the hook call.
    pub(super) vars: TxVars,
    /// Host time the current hook spent waiting for storage, and how much
    /// of it the deadline has given back (see [`StorageTime`]).
    pub(super) storage_time: StorageTime,
    /// When the current hook must end, as the watchdog sees it.
    pub(super) deadline: super::watchdog::Deadline,
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
        HostState {
            wasi: WasiCtx::builder().build(),
            table: HookTable::default(),
            limits: InstanceLimits::new(&guest.limits),
            guest,
            actions: Vec::new(),
            generation: 0,
            issued: Vec::new(),
            answerable: false,
            answer: None,
            effects: HookEffects::default(),
            vars: TxVars::default(),
            storage_time: StorageTime::default(),
            deadline: super::watchdog::Deadline::unwatched(),
        }
    }
}

/// The rep of the hook call's request, and of its response: each is the
/// only one of its type a hook is lent (the guest tells them apart by
/// their resource types, `fields` by the parent it encodes).
pub(super) const LENT_REP: u32 = 0;

/// The store's resource table (WASI's handles), with the request and the
/// response of the current hook call kept beside it rather than in it:
/// a `ResourceTable` boxes what it holds, which cost an allocation and a
/// free, and two copies, of every message lent to every hook call.
/// Reading them goes through [`HookTable::get`] as reading the table did.
#[derive(Default)]
pub(super) struct HookTable {
    pub(super) wasi: ResourceTable,
    request: Option<RequestCtx>,
    response: Option<ResponseCtx>,
}

impl HookTable {
    /// Lends `req` to the hook call: the rep of its handle.
    pub(super) fn lend_request(&mut self, req: RequestCtx) -> u32 {
        self.request = Some(req);
        LENT_REP
    }

    /// Lends `res` to the hook call: the rep of its handle.
    pub(super) fn lend_response(&mut self, res: ResponseCtx) -> u32 {
        self.response = Some(res);
        LENT_REP
    }

    /// Takes the request back after the hook call.
    pub(super) fn take_request(&mut self) -> Option<RequestCtx> {
        self.request.take()
    }

    /// Takes the response back after the hook call.
    pub(super) fn take_response(&mut self) -> Option<ResponseCtx> {
        self.response.take()
    }

    /// What `key` names: the lent request or response, or an entry of the
    /// resource table.
    pub(super) fn get<T: Any>(&self, key: &Resource<T>) -> Result<&T, ResourceTableError> {
        if key.rep() == LENT_REP {
            let lent = (self.request.as_ref().map(|r| r as &dyn Any))
                .and_then(|r| r.downcast_ref::<T>())
                .or_else(|| {
                    (self.response.as_ref().map(|r| r as &dyn Any))
                        .and_then(|r| r.downcast_ref::<T>())
                });
            if let Some(lent) = lent {
                return Ok(lent);
            }
        }
        self.wasi.get(key)
    }

    /// [`HookTable::get`], mutable.
    pub(super) fn get_mut<T: Any>(
        &mut self,
        key: &Resource<T>,
    ) -> Result<&mut T, ResourceTableError> {
        if key.rep() == LENT_REP {
            if let Some(req) = self.request.as_mut() {
                if let Some(lent) = (req as &mut dyn Any).downcast_mut::<T>() {
                    return Ok(lent);
                }
            }
            if let Some(res) = self.response.as_mut() {
                if let Some(lent) = (res as &mut dyn Any).downcast_mut::<T>() {
                    return Ok(lent);
                }
            }
        }
        self.wasi.get_mut(key)
    }
}

/// What one hook call asked of the host: counted against the per-hook
/// caps of the tenant's [`Limits`] by the host calls that make messages,
/// branches and sends. The pool starts every hook call at zero.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct HookEffects {
    /// Headers added (`fields.append` and `set`, headers of a `reply`).
    pub(super) headers: usize,
    /// Bytes of text handed to the host for messages.
    pub(super) bytes: usize,
    /// `append-branch` calls and `relay` decisions.
    pub(super) branches: usize,
    /// `forward` decisions.
    pub(super) forwards: usize,
    /// Replies decided.
    pub(super) replies: usize,
}

/// Linear memories one instance may create (every core instance of the
/// component together): one. The bundled Rust routing and the JavaScript
/// runtime (StarlingMonkey, by sdk-js) each have one; a component that
/// declares more fails to instantiate, so to load, and the memory cap
/// cannot be multiplied by declaring memories.
pub(super) const MAX_MEMORIES: usize = 1;
/// Tables one instance may create (both bundled routings have 2).
pub(super) const MAX_TABLES: usize = 8;
/// Table elements of all tables of one instance together, a pointer or
/// two each (the bundled Rust routing has 85, the JavaScript one ~7,800).
pub(super) const MAX_TABLE_ELEMENTS: usize = 100_000;
/// Core instances one component instance may create.
pub(super) const MAX_INSTANCES: usize = 64;

/// What one instance (a Store) may take: all its linear memories together
/// within the tenant's `memory_mib`, and a bounded number of memories,
/// tables, table elements and core instances. A component that declares
/// more memories than [`MAX_MEMORIES`] fails to instantiate (so to load);
/// one whose memories together start above the cap too.
///
/// Every growth the limiter allows is counted for good: a growth that
/// then fails is not given back, so a guest cannot make room by failing
/// (wasmtime reports some failures without asking first). Growth past a
/// memory's declared maximum is refused here, not left to fail.
#[derive(Debug)]
pub(super) struct InstanceLimits {
    memory: usize,
    memory_used: usize,
    elements_used: usize,
    /// Memories and tables made (growths from nothing), for tests.
    made: (usize, usize),
}

impl InstanceLimits {
    pub(super) fn new(limits: &Limits) -> InstanceLimits {
        InstanceLimits {
            memory: usize::try_from(limits.memory_mib.saturating_mul(1 << 20))
                .unwrap_or(usize::MAX),
            memory_used: 0,
            elements_used: 0,
            made: (0, 0),
        }
    }

    /// Bytes of linear memory and table elements the instance has, and
    /// the memories and tables it made.
    #[cfg(test)]
    pub(super) fn used(&self) -> (usize, usize, (usize, usize)) {
        (self.memory_used, self.elements_used, self.made)
    }
}

/// Takes `desired - current` more of `used`, within `cap` and the
/// declared maximum; false (nothing taken) when either is passed.
fn grow(used: &mut usize, cap: usize, current: usize, desired: usize, max: Option<usize>) -> bool {
    let more = desired.saturating_sub(current);
    let total = used.saturating_add(more);
    if total > cap || max.is_some_and(|m| desired > m) {
        return false;
    }
    *used = total;
    true
}

impl ResourceLimiter for InstanceLimits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.made.0 += usize::from(current == 0);
        Ok(grow(
            &mut self.memory_used,
            self.memory,
            current,
            desired,
            maximum,
        ))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.made.1 += usize::from(current == 0);
        Ok(grow(
            &mut self.elements_used,
            MAX_TABLE_ELEMENTS,
            current,
            desired,
            maximum,
        ))
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table.wasi,
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

    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    fn section(id: u8, body: &[u8], out: &mut Vec<u8>) {
        out.push(id);
        leb(body.len(), out);
        out.extend_from_slice(body);
    }

    /// A core module with a memory of each size in `memories` (pages) and
    /// a funcref table of each size in `tables`.
    fn core_module(memories: &[usize], tables: &[usize]) -> Vec<u8> {
        let mut module = b"\0asm\x01\0\0\0".to_vec();
        if !tables.is_empty() {
            let mut body = Vec::new();
            leb(tables.len(), &mut body);
            for &elements in tables {
                body.extend([0x70, 0x00]);
                leb(elements, &mut body);
            }
            section(4, &body, &mut module);
        }
        if !memories.is_empty() {
            let mut body = Vec::new();
            leb(memories.len(), &mut body);
            for &pages in memories {
                body.push(0x00);
                leb(pages, &mut body);
            }
            section(5, &body, &mut module);
        }
        module
    }

    /// A component that instantiates each of `modules` once.
    fn component(modules: &[Vec<u8>]) -> Vec<u8> {
        let mut component = b"\0asm\x0d\0\x01\0".to_vec();
        for module in modules {
            section(1, module, &mut component);
        }
        let mut body = Vec::new();
        leb(modules.len(), &mut body);
        for i in 0..modules.len() {
            body.push(0x00);
            leb(i, &mut body);
            body.push(0x00);
        }
        section(2, &body, &mut component);
        component
    }

    fn guest(memory_mib: u64) -> Arc<Guest> {
        Arc::new(test_guest(memory_mib))
    }

    fn test_guest(memory_mib: u64) -> Guest {
        let guest = Guest::for_tests("test");
        Guest {
            limits: Limits {
                memory_mib,
                ..Limits::default()
            },
            ..guest
        }
    }

    /// Instantiates `wasm` (a component importing nothing) under the
    /// limits of a tenant with `memory_mib`: what the instance took, or
    /// why it could not be made.
    fn instantiate(wasm: &[u8], memory_mib: u64) -> Result<(usize, usize, (usize, usize)), String> {
        let engine = wasmtime::Engine::default();
        let component =
            wasmtime::component::Component::new(&engine, wasm).map_err(|e| format!("{e:#}"))?;
        let mut store = wasmtime::Store::new(&engine, HostState::new(guest(memory_mib)));
        store.limiter(|state| &mut state.limits);
        wasmtime::component::Linker::new(&engine)
            .instantiate(&mut store, &component)
            .map_err(|e| format!("{e:#}"))?;
        Ok(store.data().limits.used())
    }

    const PAGE: usize = 64 << 10;

    /// One linear memory per instance, within the cap: a second memory,
    /// declared in the same core module or in another, is refused, so the
    /// cap cannot be had twice.
    #[test]
    fn one_memory_per_instance_within_the_cap() {
        // 16 MiB is 256 pages.
        let one = component(&[core_module(&[200], &[])]);
        assert_eq!(instantiate(&one, 16), Ok((200 * PAGE, 0, (1, 0))));
        let big = component(&[core_module(&[300], &[])]);
        let err = instantiate(&big, 16).unwrap_err();
        assert!(err.contains("exceeds memory limits"), "{err}");
        let two_in_one = component(&[core_module(&[1, 1], &[])]);
        let err = instantiate(&two_in_one, 16).unwrap_err();
        assert!(err.contains("memor"), "{err}");
        let two_modules = component(&[core_module(&[1], &[]), core_module(&[1], &[])]);
        let err = instantiate(&two_modules, 16).unwrap_err();
        assert!(err.contains("memor"), "{err}");
        eprintln!("a component with two memories: {err}");
    }

    #[test]
    fn tables_are_bounded() {
        let fits = component(&[core_module(&[], &[MAX_TABLE_ELEMENTS / 2; 2])]);
        assert_eq!(instantiate(&fits, 16), Ok((0, MAX_TABLE_ELEMENTS, (0, 2))));
        let big = component(&[core_module(&[], &[MAX_TABLE_ELEMENTS / 2 + 1; 2])]);
        let err = instantiate(&big, 16).unwrap_err();
        assert!(err.contains("table"), "{err}");
        let many = component(&[core_module(&[], &[1; MAX_TABLES + 1])]);
        let err = instantiate(&many, 16).unwrap_err();
        assert!(err.contains("table"), "{err}");
    }

    /// What the bundled routing takes of the default limits: one linear
    /// memory, well under the cap.
    #[test]
    fn the_bundled_routing_fits_the_default_limits() {
        let dir = tempfile::tempdir().expect("temp dir");
        let engine = super::super::ScriptEngine::new(Some(dir.path().to_owned())).expect("engine");
        let loaded = engine
            .load(super::super::DEFAULT_COMPONENT, "bundled")
            .expect("loads");
        let limits = Limits::default();
        let mut store =
            wasmtime::Store::new(&engine.engine, HostState::new(guest(limits.memory_mib)));
        store.limiter(|state| &mut state.limits);
        store.set_epoch_deadline(1 << 20);
        loaded.pre.instantiate(&mut store).expect("instantiates");
        let (memory, elements, (memories, tables)) = store.data().limits.used();
        eprintln!(
            "bundled routing: {memories} memory, {} KiB; {tables} tables, {elements} elements",
            memory >> 10
        );
        assert_eq!(memories, 1);
        assert!(memory < (limits.memory_mib << 20) as usize / 8);
        assert!(tables <= MAX_TABLES && elements < MAX_TABLE_ELEMENTS / 100);
    }

    /// A tenant's domains are local for it on the ports wisp listens on,
    /// as they are now; other names are not.
    #[test]
    fn a_tenants_domains_are_myself_for_it() {
        use crate::transport::{Listener, Transport};
        let listener = Listener {
            transport: Transport::Udp,
            local: "127.0.0.1:5070".parse().expect("addr"),
            advertise: None,
        };
        let guest = Guest {
            locality: Arc::new(Locality::new(vec![listener], vec!["alias.example".into()])),
            domains: Arc::new(Domains::new(&["T5.Example".into(), "192.0.2.7".into()])),
            ..test_guest(16)
        };
        let myself = |uri: &str| guest.is_myself(&Uri::parse(uri).expect("uri"));
        assert!(myself("sip:alice@t5.example:5070"));
        assert!(myself("sip:T5.EXAMPLE:5070;transport=tcp"));
        assert!(myself("sip:192.0.2.7:5070"));
        assert!(myself("sip:alias.example:5070"));
        assert!(
            !myself("sip:alice@t5.example"),
            "5060: not a port of wisp's"
        );
        assert!(!myself("sip:alice@t6.example:5070"), "another tenant's");
        guest.domains.set(&["t6.example".into()]);
        assert!(myself("sip:alice@t6.example:5070"), "changed in place");
        assert!(!myself("sip:alice@t5.example:5070"));
    }

    /// A growth refused, or past a memory's maximum, takes nothing; one
    /// allowed is counted even if it then fails.
    #[test]
    fn growth_is_counted_once_and_never_given_back() {
        let mut limits = InstanceLimits::new(&Limits {
            memory_mib: 1,
            ..Limits::default()
        });
        assert!(limits.memory_growing(0, 8 * PAGE, None).unwrap());
        assert!(!limits.memory_growing(8 * PAGE, 20 * PAGE, None).unwrap());
        assert!(!limits
            .memory_growing(8 * PAGE, 10 * PAGE, Some(9 * PAGE))
            .unwrap());
        assert!(limits.memory_growing(8 * PAGE, 10 * PAGE, None).unwrap());
        limits
            .memory_grow_failed(wasmtime::Error::msg("the system said no"))
            .unwrap();
        assert_eq!(limits.used().0, 10 * PAGE);
        assert!(limits.memory_growing(0, 6 * PAGE, None).unwrap());
        assert!(!limits.memory_growing(0, PAGE, None).unwrap());
    }
}
