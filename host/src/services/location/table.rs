//! The bindings in memory: per tenant, split in [`SHARDS`] by a keyed
//! hash of the address of record, each shard behind a lock of its own.
//!
//! A REGISTER is applied under its shard's lock on the hook's thread; two
//! threads meet on a lock only when their addresses of record fall in the
//! same shard of the same tenant. A shard also remembers the addresses of
//! record whose persistent bindings changed since the database was last
//! written (see `behind.rs`).
//!
//! Memory is bounded by the tenant's limits: at most `max_aors` addresses
//! of record (refused 403 past it), each with at most `max_contacts`
//! bindings, and at most [`max_unwritten`] addresses waiting to be
//! written (refused 503 past it: the database is too far behind).

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::Duration;

use super::shared::Shared;
use super::{sort, Binding, Register, SaveError, SaveOptions};
use crate::cluster::ClusterError;
use crate::services::storage::StorageError;
use crate::sip::Message;
use crate::transaction::hash::KeyedState;
use crate::transport::Target;

/// Shards of a tenant's bindings.
pub const SHARDS: usize = 16;

/// How long a change of a persistent binding may wait to be written, by
/// default (`[storage] location_write_interval_ms`).
pub const DEFAULT_WRITE_INTERVAL: Duration = Duration::from_secs(1);

/// Addresses of record of a tenant that may wait to be written at most:
/// past it a REGISTER that would add one is refused 503 (the database
/// has fallen behind, a stalled disk), so that memory stays bounded. The
/// live ones are at most `max_aors`; as many again may be removed ones.
pub fn max_unwritten(max_aors: u32) -> usize {
    (max_aors as usize).saturating_mul(2).saturating_add(1024)
}

/// The bindings of a shard, and the addresses of record of it whose
/// persistent bindings changed since the last write.
#[derive(Default)]
pub(super) struct ShardTable {
    /// Never an empty list: an address of record without bindings goes.
    /// Keyed by what UAs send: foldhash with a random seed, not SipHash.
    pub(super) aors: HashMap<Box<str>, Vec<Binding>, KeyedState>,
    pub(super) unwritten: HashSet<Box<str>, KeyedState>,
}

/// One shard, on a cache line of its own.
#[derive(Default)]
#[repr(align(64))]
pub(super) struct Shard(Mutex<ShardTable>);

impl Shard {
    pub(super) fn lock(&self) -> MutexGuard<'_, ShardTable> {
        // A panic while holding a shard leaves a table that is still whole:
        // changes are made on a copy and put in place at once.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One tenant's bindings.
pub(super) struct TenantTable {
    pub(super) name: Arc<str>,
    pub(super) shards: Box<[Shard]>,
    /// Addresses of record in `shards` (with bindings, maybe expired).
    aors: AtomicUsize,
    /// Entries of the shards' `unwritten`.
    pub(super) unwritten: AtomicUsize,
}

impl TenantTable {
    fn new(name: &str) -> TenantTable {
        TenantTable {
            name: Arc::from(name),
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            aors: AtomicUsize::new(0),
            unwritten: AtomicUsize::new(0),
        }
    }

    /// Takes a place for one more address of record, unless `max` are
    /// there (0: no limit).
    fn reserve_aor(&self, max: u32) -> bool {
        self.aors
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (max == 0 || n < max as usize).then_some(n + 1)
            })
            .is_ok()
    }

    /// Counts an address of record put in the cache of a cluster's
    /// bindings (bounded by `max_aors` in Redis already).
    pub(super) fn count_aor(&self) {
        self.aors.fetch_add(1, Ordering::AcqRel);
    }

    pub(super) fn release_aor(&self) {
        let _ = self
            .aors
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(1))
            });
    }

    /// Marks `aor` of `shard` to be written; false when it is not yet and
    /// `max` addresses wait already.
    pub(super) fn mark_unwritten(&self, shard: &mut ShardTable, aor: &str, max: usize) -> bool {
        if shard.unwritten.contains(aor) {
            return true;
        }
        if self.unwritten.load(Ordering::Acquire) >= max {
            return false;
        }
        shard.unwritten.insert(aor.into());
        self.unwritten.fetch_add(1, Ordering::AcqRel);
        true
    }

    /// Drops the expired bindings of every shard; how many.
    fn purge(&self, now: i64) -> usize {
        let mut purged = 0;
        for shard in self.shards.iter() {
            let mut table = shard.lock();
            let before = table.aors.len();
            table.aors.retain(|_, bindings| {
                let n = bindings.len();
                bindings.retain(|b| b.expires > now);
                purged += n - bindings.len();
                !bindings.is_empty()
            });
            for _ in table.aors.len()..before {
                self.release_aor();
            }
        }
        purged
    }

    /// Puts loaded bindings in place, whatever the limits.
    pub(super) fn insert_loaded(&self, shard: &Shard, aor: &str, binding: Binding) {
        let mut table = shard.lock();
        match table.aors.get_mut(aor) {
            Some(bindings) => {
                bindings.retain(|b| b.contact != binding.contact);
                bindings.push(binding);
                sort(bindings);
            }
            None => {
                table.aors.insert(aor.into(), vec![binding]);
                self.aors.fetch_add(1, Ordering::AcqRel);
            }
        }
    }
}

/// The location service's bindings, in memory, for every tenant; written
/// behind to the database (see the module's documentation).
pub struct Location {
    pub(super) tenants: RwLock<HashMap<Box<str>, Arc<TenantTable>, KeyedState>>,
    /// Keyed with random keys: a UA chooses its address of record, and
    /// must not steer them all to one shard.
    hasher: KeyedState,
    pub(super) write_interval: Duration,
    /// Held through a write, so that two writes (the timer's and the
    /// shutdown's) cannot apply an older picture after a newer one.
    pub(super) writing: Mutex<()>,
    /// With `[cluster]`: Redis holds the bindings, this table caches them
    /// (`shared.rs`).
    pub(super) shared: OnceLock<Shared>,
}

impl Default for Location {
    fn default() -> Self {
        Location::new(DEFAULT_WRITE_INTERVAL)
    }
}

impl Location {
    /// An empty table whose changes are to be written within `write_interval`.
    pub fn new(write_interval: Duration) -> Location {
        Location {
            tenants: RwLock::default(),
            hasher: KeyedState::default(),
            write_interval,
            writing: Mutex::default(),
            shared: OnceLock::new(),
        }
    }

    /// How long a change of a persistent binding may wait to be written.
    pub fn write_interval(&self) -> Duration {
        self.write_interval
    }

    pub(super) fn tenant(&self, tenant: &str) -> Option<Arc<TenantTable>> {
        self.tenants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(tenant)
            .cloned()
    }

    pub(super) fn tenant_or_new(&self, tenant: &str) -> Arc<TenantTable> {
        if let Some(table) = self.tenant(tenant) {
            return table;
        }
        self.tenants
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(tenant.into())
            .or_insert_with(|| Arc::new(TenantTable::new(tenant)))
            .clone()
    }

    /// Every tenant's table, for a sweep.
    pub(super) fn all(&self) -> Vec<Arc<TenantTable>> {
        self.tenants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub(super) fn shard<'a>(&self, table: &'a TenantTable, aor: &str) -> &'a Shard {
        &table.shards[(self.hasher.hash_one(aor) % SHARDS as u64) as usize]
    }

    /// Handles a REGISTER (RFC 3261 §10.3 steps 5–8) of `tenant`:
    /// `received`, where it came from, is kept with the bindings when
    /// given (the caller gives it for a UA behind NAT or on a flow).
    /// Returns the bindings the address has afterwards, for the 200 OK.
    ///
    /// The request is read and applied here, on the caller's thread,
    /// under the lock of its address of record's shard: REGISTERs of one
    /// address of record apply one after the other, and a refused one
    /// changes nothing.
    pub fn save(
        &self,
        tenant: &str,
        req: &Message,
        received: Option<String>,
        opts: &SaveOptions,
        now: i64,
    ) -> Result<Vec<Binding>, SaveError> {
        self.save_from(tenant, req, received, None, opts, now)
    }

    /// [`Location::save`] of a REGISTER that came over `flow`, a
    /// connection only this node can reach (with `[cluster]`, the
    /// bindings get a Path to this node; a node alone needs nothing more).
    pub fn save_from(
        &self,
        tenant: &str,
        req: &Message,
        received: Option<String>,
        flow: Option<Target>,
        opts: &SaveOptions,
        now: i64,
    ) -> Result<Vec<Binding>, SaveError> {
        let register = Register::read(req, received, opts, now)?;
        if let Some(shared) = self.shared.get() {
            return self.save_shared(shared, tenant, register, flow, opts);
        }
        let table = self.tenant_or_new(tenant);
        match self.apply(&table, &register, opts) {
            // The count may hold addresses whose bindings all expired:
            // purged, the tenant may have room.
            Err(SaveError::TooManyAors(_)) => {
                table.purge(now);
                self.apply(&table, &register, opts)
            }
            done => done,
        }
    }

    fn apply(
        &self,
        table: &TenantTable,
        register: &Register,
        opts: &SaveOptions,
    ) -> Result<Vec<Binding>, SaveError> {
        let aor = register.aor.as_str();
        let mut shard = self.shard(table, aor).lock();
        let stored: &[Binding] = shard.aors.get(aor).map_or(&[], Vec::as_slice);
        let was_persistent = stored.iter().any(|b| b.persistent);
        let present = !stored.is_empty();
        let after = register.apply(stored)?;
        if !present && !after.is_empty() && !table.reserve_aor(opts.max_aors) {
            return Err(SaveError::TooManyAors(opts.max_aors));
        }
        if register.changes() && (was_persistent || register.persistent()) {
            let max = max_unwritten(opts.max_aors);
            if !table.mark_unwritten(&mut shard, aor, max) {
                if !present && !after.is_empty() {
                    table.release_aor();
                }
                return Err(SaveError::Storage(StorageError::QueueFull(max)));
            }
        }
        if after.is_empty() {
            if shard.aors.remove(aor).is_some() {
                table.release_aor();
            }
        } else if let Some(bindings) = shard.aors.get_mut(aor) {
            bindings.clone_from(&after);
        } else {
            shard.aors.insert(aor.into(), after.clone());
        }
        Ok(after)
    }

    /// The live bindings of a user, highest q first, then the most
    /// recently refreshed.
    pub fn lookup(&self, tenant: &str, aor: &str, now: i64) -> Vec<Binding> {
        self.lookup_checked(tenant, aor, now).unwrap_or_else(|err| {
            tracing::debug!(tenant, aor, %err, "lookup without the cluster's bindings");
            Vec::new()
        })
    }

    /// [`Location::lookup`], saying when the cluster's bindings could not
    /// be read (Redis away and `aor` not in this node's cache). On the
    /// node that holds a binding's flow, the Path to itself is left out:
    /// the request goes straight down the connection.
    pub fn lookup_checked(
        &self,
        tenant: &str,
        aor: &str,
        now: i64,
    ) -> Result<Vec<Binding>, ClusterError> {
        if let Some(shared) = self.shared.get() {
            let mut bindings = self.lookup_shared(shared, tenant, aor)?;
            bindings.retain(|b| b.expires > now);
            for b in &mut bindings {
                if b.path.first().is_some_and(|p| shared.is_own_flow_path(p)) {
                    b.path.remove(0);
                }
            }
            return Ok(bindings);
        }
        Ok(self.lookup_local(tenant, aor, now))
    }

    fn lookup_local(&self, tenant: &str, aor: &str, now: i64) -> Vec<Binding> {
        let Some(table) = self.tenant(tenant) else {
            return Vec::new();
        };
        let shard = self.shard(&table, aor).lock();
        shard.aors.get(aor).map_or_else(Vec::new, |bindings| {
            bindings
                .iter()
                .filter(|b| b.expires > now)
                .cloned()
                .collect()
        })
    }

    /// Whether a user has a live binding.
    pub fn registered(&self, tenant: &str, aor: &str, now: i64) -> bool {
        if self.shared.get().is_some() {
            return !self.lookup(tenant, aor, now).is_empty();
        }
        let Some(table) = self.tenant(tenant) else {
            return false;
        };
        let shard = self.shard(&table, aor).lock();
        shard
            .aors
            .get(aor)
            .is_some_and(|bindings| bindings.iter().any(|b| b.expires > now))
    }

    /// Removes every binding of a user; how many there were (expired ones
    /// not yet purged included).
    pub fn unregister(&self, tenant: &str, aor: &str) -> usize {
        self.unregister_checked(tenant, aor).unwrap_or_else(|err| {
            tracing::warn!(tenant, aor, %err, "bindings not removed");
            0
        })
    }

    /// [`Location::unregister`], saying when the cluster's Redis failed
    /// (nothing removed then).
    pub fn unregister_checked(&self, tenant: &str, aor: &str) -> Result<usize, ClusterError> {
        if let Some(shared) = self.shared.get() {
            return self.unregister_shared(shared, tenant, aor);
        }
        Ok(self.unregister_local(tenant, aor))
    }

    fn unregister_local(&self, tenant: &str, aor: &str) -> usize {
        let Some(table) = self.tenant(tenant) else {
            return 0;
        };
        let mut shard = self.shard(&table, aor).lock();
        let Some(bindings) = shard.aors.remove(aor) else {
            return 0;
        };
        table.release_aor();
        if bindings.iter().any(|b| b.persistent) && !shard.unwritten.contains(aor) {
            // Past any bound: the removal must reach the database, and
            // it adds no binding.
            shard.unwritten.insert(aor.into());
            table.unwritten.fetch_add(1, Ordering::AcqRel);
        }
        bindings.len()
    }

    /// Drops the expired bindings from memory; how many. (Their rows
    /// are purged from the database by [`super::purge_expired`].)
    pub fn purge(&self, now: i64) -> usize {
        self.all().iter().map(|table| table.purge(now)).sum()
    }

    /// Addresses of record whose changes wait to be written.
    pub fn unwritten(&self) -> usize {
        self.all()
            .iter()
            .map(|t| t.unwritten.load(Ordering::Acquire))
            .sum()
    }

    /// Addresses of record in memory, every tenant's.
    pub fn aors(&self) -> usize {
        self.all()
            .iter()
            .map(|t| t.aors.load(Ordering::Acquire))
            .sum()
    }
}
