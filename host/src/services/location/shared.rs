//! The bindings of a cluster (`[cluster]`): Redis holds them, the
//! in-memory table of `table.rs` is this node's cache of them.
//!
//! Layout: `wisp:{tenant}:loc:{aor}` is the JSON list of the address of
//! record's bindings, expiring with the last of them; `wisp:{tenant}:index:loc`
//! is a sorted set of the tenant's addresses of record by that expiry (for
//! `max_aors` across the cluster). A REGISTER reads the list, applies
//! itself (RFC 3261 §10.3, the same code as a node alone) and writes the
//! result with a compare-and-set script that also publishes the change on
//! `wisp:loc`; a conflict with a REGISTER of the same address of record at
//! another node reads again. It answers only once Redis has the bindings:
//! with Redis away it is refused (500) and nothing changed.
//!
//! Every node drops its cached copy of an address of record another node
//! changed (pub/sub), and its whole cache when the link comes back up
//! (changes may have been missed). A lookup reads the cache first, Redis
//! on a miss; so while Redis is away, the addresses of record this node
//! has looked up or registered lately are still found. A read that raced
//! an invalidation is not cached (a generation per slot of addresses).
//!
//! Flows: a binding saved over a connection (TCP, TLS, WS, QUIC) that only
//! this node holds gets a Path to this node first,
//! `<sip:{flow token}@{node address};lr;ob>`, so that a request for it
//! through another node comes here; here, the lookup recognises its own
//! flow Path and sends the request straight down the connection. The
//! token is this process's (`proxy::flow`): only the node that holds the
//! connection needs to read it.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use serde::{Deserialize, Serialize};

use super::table::Location;
use super::{sort, Binding, Register, SaveError, SaveOptions};
use crate::cluster::{Cluster, ClusterError};
use crate::services::storage::StorageError;
use crate::services::Services;
use crate::transport::Target;

/// The channel of binding changes: `node\ntenant\naor`.
pub const CHANNEL: &str = "wisp:loc";

/// A random value set once in a Redis: another value (or none) after a
/// reconnect means Redis lost what it held.
const EPOCH: &str = "wisp:epoch";

/// Bytes of a stored list read at most: a list is at most
/// `max_contacts` bindings of a few hundred bytes; more is not ours.
const MAX_VALUE: usize = 1 << 20;

/// Tries of a REGISTER whose compare-and-set lost to another node's.
const CAS_TRIES: usize = 5;

/// Slots of invalidation generations.
const SLOTS: usize = 256;

/// KEYS: the list, the tenant's index. ARGV: the list read (""
/// for none), the new list ("" to remove), its expiry (unix s), now (unix
/// s), max_aors (0: none), the aor, the change's message.
/// Returns 1 written, 0 changed meanwhile, -1 past max_aors.
const CAS: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur == false then cur = '' end
if cur ~= ARGV[1] then return 0 end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[6])
else
  local max = tonumber(ARGV[5])
  if max > 0 and redis.call('ZSCORE', KEYS[2], ARGV[6]) == false then
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[4])
    if redis.call('ZCARD', KEYS[2]) >= max then return -1 end
  end
  local ttl = tonumber(ARGV[3]) - tonumber(ARGV[4])
  if ttl < 1 then ttl = 1 end
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ttl)
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[6])
end
redis.call('PUBLISH', 'wisp:loc', ARGV[7])
return 1
";

/// A binding as stored in Redis: every field named, so that nodes of
/// neighbouring versions read each other's lists.
#[derive(Serialize, Deserialize)]
struct Stored {
    contact: String,
    expires: i64,
    q: f32,
    call_id: String,
    cseq: u32,
    #[serde(default)]
    path: Vec<String>,
    #[serde(default)]
    received: Option<String>,
    #[serde(default)]
    user_agent: String,
    #[serde(default)]
    methods: Vec<String>,
    #[serde(default)]
    nat: bool,
    #[serde(default)]
    instance: String,
    #[serde(default)]
    reg_id: u32,
}

impl From<&Binding> for Stored {
    fn from(b: &Binding) -> Stored {
        Stored {
            contact: b.contact.clone(),
            expires: b.expires,
            q: b.q,
            call_id: b.call_id.clone(),
            cseq: b.cseq,
            path: b.path.clone(),
            received: b.received.clone(),
            user_agent: b.user_agent.clone(),
            methods: b.methods.clone(),
            nat: b.nat,
            instance: b.instance.clone(),
            reg_id: b.reg_id,
        }
    }
}

impl From<Stored> for Binding {
    fn from(s: Stored) -> Binding {
        Binding {
            contact: s.contact,
            expires: s.expires,
            // Not trusted: a q outside 0..1 would upset the order.
            q: if s.q.is_finite() {
                s.q.clamp(0.0, 1.0)
            } else {
                1.0
            },
            call_id: s.call_id,
            cseq: s.cseq,
            path: s.path,
            received: s.received,
            user_agent: s.user_agent,
            methods: s.methods,
            nat: s.nat,
            instance: s.instance,
            reg_id: s.reg_id,
            // Redis keeps them as long as it keeps anything.
            persistent: true,
        }
    }
}

fn encode(bindings: &[Binding]) -> String {
    let stored: Vec<Stored> = bindings.iter().map(Stored::from).collect();
    serde_json::to_string(&stored).unwrap_or_default()
}

/// The bindings of a stored list; what is not a list of ours counts as
/// none (and is replaced by the next REGISTER), said in the log.
fn decode(raw: &[u8], key: &str) -> Vec<Binding> {
    if raw.is_empty() {
        return Vec::new();
    }
    if raw.len() > MAX_VALUE {
        tracing::warn!(
            key,
            bytes = raw.len(),
            "cluster: binding list too long; ignored"
        );
        return Vec::new();
    }
    match serde_json::from_slice::<Vec<Stored>>(raw) {
        Ok(list) => {
            let mut bindings: Vec<Binding> = list.into_iter().map(Binding::from).collect();
            sort(&mut bindings);
            bindings
        }
        Err(err) => {
            tracing::warn!(key, %err, "cluster: binding list unreadable; ignored");
            Vec::new()
        }
    }
}

/// The cluster side of [`Location`].
pub(crate) struct Shared {
    pub(super) cluster: Arc<Cluster>,
    /// The epoch of the Redis this node last saw ([`EPOCH`]).
    epoch: std::sync::Mutex<Option<String>>,
    generations: Box<[AtomicU64]>,
    hasher: RandomState,
}

impl Shared {
    fn slot(&self, tenant: &str, aor: &str) -> &AtomicU64 {
        let i = self.hasher.hash_one((tenant, aor)) as usize % SLOTS;
        &self.generations[i]
    }

    fn generation(&self, tenant: &str, aor: &str) -> u64 {
        self.slot(tenant, aor).load(Ordering::Acquire)
    }

    fn bump(&self, tenant: &str, aor: &str) {
        self.slot(tenant, aor).fetch_add(1, Ordering::AcqRel);
    }

    fn bump_all(&self) {
        for g in self.generations.iter() {
            g.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// The Path to this node for a binding on `flow`, a connection only
    /// this node holds.
    fn flow_path(&self, flow: Target) -> Option<String> {
        let address = self.cluster.address()?;
        Some(format!(
            "<sip:{}@{address};lr;ob>",
            crate::proxy::flow::token(flow)
        ))
    }

    /// Whether `path` is the Path [`Shared::flow_path`] gives: ours, for a
    /// flow of this node.
    pub(super) fn is_own_flow_path(&self, path: &str) -> bool {
        let Some(address) = self.cluster.address() else {
            return false;
        };
        let Some(rest) = path.strip_prefix("<sip:") else {
            return false;
        };
        let Some((token, after)) = rest.split_once('@') else {
            return false;
        };
        after.strip_prefix(address).is_some_and(|p| p == ";lr;ob>")
            && crate::proxy::flow::flow_of(token).is_some()
    }
}

/// The message of a change of `aor`.
fn message(node: &str, tenant: &str, aor: &str) -> String {
    format!("{node}\n{tenant}\n{aor}")
}

impl Location {
    /// Makes this table the cache of the cluster's bindings (`[cluster]`):
    /// subscribes to the changes of other nodes and forgets everything
    /// when the link comes back up.
    pub fn join(&self, cluster: Arc<Cluster>, owner: Weak<Services>) {
        let shared = Shared {
            cluster: cluster.clone(),
            epoch: std::sync::Mutex::new(None),
            generations: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            hasher: RandomState::new(),
        };
        if self.shared.set(shared).is_err() {
            return;
        }
        let node = cluster.node().to_owned();
        let services = owner.clone();
        cluster.subscribe(
            CHANNEL,
            Box::new(move |payload| {
                let Some(services) = services.upgrade() else {
                    return;
                };
                let Ok(text) = std::str::from_utf8(payload) else {
                    return;
                };
                let mut parts = text.splitn(3, '\n');
                let (Some(from), Some(tenant), Some(aor)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    return;
                };
                // Our own changes are in the cache already.
                if from != node {
                    services.location.forget(tenant, aor);
                }
            }),
        );
        cluster.on_up(Box::new(move || {
            // Off the link's thread: the check talks to Redis.
            let owner = owner.clone();
            let spawned = std::thread::Builder::new()
                .name("wisp-reseed".into())
                .spawn(move || {
                    if let Some(services) = owner.upgrade() {
                        services.location.rejoin();
                    }
                });
            if let Err(err) = spawned {
                tracing::warn!(%err, "cannot check the cluster's bindings after a reconnect");
            }
        }));
    }

    /// The link is (back) up. When Redis lost what it held (restarted
    /// without persistence, or a new one: its epoch key is not the one
    /// this node saw), this node writes back the live bindings it caches,
    /// without replacing any a REGISTER wrote meanwhile; then it forgets
    /// its cache, which may have missed changes while the link was down.
    /// Until then the cache keeps serving lookups.
    fn rejoin(&self) {
        let Some(shared) = self.shared.get() else {
            return;
        };
        let cluster = &shared.cluster;
        let mut fresh = [0u8; 8];
        crate::random::fill(&mut fresh);
        let mut epoch = redis::cmd("SET");
        epoch
            .arg(EPOCH)
            .arg(hex::encode(fresh))
            .arg("NX")
            .arg("GET");
        // SET NX GET: the epoch there before, or none (ours is set).
        let before = match cluster.query::<Option<String>>(epoch) {
            Ok(before) => before.unwrap_or_else(|| hex::encode(fresh)),
            Err(err) => {
                tracing::warn!(%err, "cluster: cannot read the epoch; cache dropped");
                self.forget_all();
                return;
            }
        };
        let seen = {
            let mut seen = shared.epoch.lock().unwrap_or_else(|e| e.into_inner());
            seen.replace(before.clone())
        };
        if seen.is_some_and(|seen| seen != before) {
            let written = self.write_back(shared);
            tracing::warn!(
                aors = written,
                "cluster: redis lost its bindings (restarted without persistence?); this node wrote back those it had"
            );
        }
        self.forget_all();
    }

    /// Writes every live binding list of the cache to Redis where Redis
    /// has none; how many.
    fn write_back(&self, shared: &Shared) -> usize {
        let now = super::unix_now();
        let mut written = 0;
        for table in self.all() {
            let mut lists = Vec::new();
            for shard in table.shards.iter() {
                let shard = shard.lock();
                for (aor, bindings) in &shard.aors {
                    let live: Vec<Binding> = bindings
                        .iter()
                        .filter(|b| b.expires > now)
                        .cloned()
                        .collect();
                    if !live.is_empty() {
                        lists.push((aor.to_string(), live));
                    }
                }
            }
            for (aor, bindings) in lists {
                let expires = bindings.iter().map(|b| b.expires).max().unwrap_or(now);
                let mut pipe = redis::pipe();
                pipe.cmd("SET")
                    .arg(Cluster::key(&table.name, "loc", &aor))
                    .arg(encode(&bindings))
                    .arg("EX")
                    .arg((expires - now).max(1))
                    .arg("NX")
                    .ignore()
                    .zadd(Cluster::key(&table.name, "index", "loc"), &aor, expires)
                    .ignore();
                match shared.cluster.pipeline::<()>(pipe) {
                    Ok(()) => written += 1,
                    Err(err) => {
                        tracing::warn!(%err, "cluster: writing back the bindings stopped");
                        return written;
                    }
                }
            }
        }
        written
    }

    /// Whether the bindings live in Redis.
    pub fn clustered(&self) -> bool {
        self.shared.get().is_some()
    }

    fn forget(&self, tenant: &str, aor: &str) {
        let Some(shared) = self.shared.get() else {
            return;
        };
        shared.bump(tenant, aor);
        self.drop_cached(tenant, aor);
    }

    fn forget_all(&self) {
        let Some(shared) = self.shared.get() else {
            return;
        };
        shared.bump_all();
        for table in self.all() {
            for shard in table.shards.iter() {
                let mut shard = shard.lock();
                let n = shard.aors.len();
                shard.aors.clear();
                for _ in 0..n {
                    table.release_aor();
                }
            }
        }
    }

    /// REGISTER with `[cluster]`: see the module's documentation. `flow`:
    /// the connection it came over, when only this node can reach it.
    pub(super) fn save_shared(
        &self,
        shared: &Shared,
        tenant: &str,
        mut register: Register,
        flow: Option<Target>,
        opts: &SaveOptions,
    ) -> Result<Vec<Binding>, SaveError> {
        let now = register.now;
        if let Some(flow) = flow {
            if let Some(path) = shared.flow_path(flow) {
                register.path.insert(0, path);
                if register.received.is_none() {
                    register.received = Some(format!(
                        "{};ob",
                        crate::services::nat::received_uri(flow.addr, flow.transport)
                    ));
                }
            }
        }
        let aor = register.aor.clone();
        let key = Cluster::key(tenant, "loc", &aor);
        let index = Cluster::key(tenant, "index", "loc");
        let cluster = &shared.cluster;
        let change = message(cluster.node(), tenant, &aor);
        for _ in 0..CAS_TRIES {
            let generation = shared.generation(tenant, &aor);
            let raw: Option<Vec<u8>> = cluster
                .query(redis::Cmd::get(&key))
                .map_err(cluster_error)?;
            let raw = raw.unwrap_or_default();
            let stored = decode(&raw, &key);
            let after = register.apply(&stored)?;
            if !register.changes() {
                self.cache(shared, generation, tenant, &aor, &after);
                return Ok(after);
            }
            let expires = after.iter().map(|b| b.expires).max().unwrap_or(now);
            let new = if after.is_empty() {
                String::new()
            } else {
                encode(&after)
            };
            let mut cas = redis::cmd("EVAL");
            cas.arg(CAS)
                .arg(2)
                .arg(&key)
                .arg(&index)
                .arg(raw.as_slice())
                .arg(&new)
                .arg(expires)
                .arg(now)
                .arg(opts.max_aors)
                .arg(&aor)
                .arg(&change);
            match cluster.query::<i64>(cas).map_err(cluster_error)? {
                1 => {
                    self.cache(shared, generation, tenant, &aor, &after);
                    return Ok(after);
                }
                -1 => return Err(SaveError::TooManyAors(opts.max_aors)),
                _ => continue,
            }
        }
        tracing::warn!(
            tenant,
            aor,
            "cluster: REGISTER lost {CAS_TRIES} races for its address of record"
        );
        Err(SaveError::Storage(StorageError::Cluster(
            ClusterError::Redis("too many concurrent changes".into()),
        )))
    }

    /// Puts what Redis holds for `aor` in the cache, unless an
    /// invalidation came since `generation` was read.
    fn cache(
        &self,
        shared: &Shared,
        generation: u64,
        tenant: &str,
        aor: &str,
        bindings: &[Binding],
    ) {
        let table = self.tenant_or_new(tenant);
        let mut shard = self.shard(&table, aor).lock();
        let present = shard.aors.contains_key(aor);
        if bindings.is_empty() || shared.generation(tenant, aor) != generation {
            if shard.aors.remove(aor).is_some() {
                table.release_aor();
            }
            return;
        }
        shard.aors.insert(aor.into(), bindings.to_vec());
        if !present {
            table.count_aor();
        }
    }

    fn drop_cached(&self, tenant: &str, aor: &str) {
        let Some(table) = self.tenant(tenant) else {
            return;
        };
        let mut shard = self.shard(&table, aor).lock();
        if shard.aors.remove(aor).is_some() {
            table.release_aor();
        }
    }

    /// The bindings of `aor`: the cache's, else Redis's (then cached).
    /// While Redis is away a miss is [`ClusterError::Down`].
    pub(super) fn lookup_shared(
        &self,
        shared: &Shared,
        tenant: &str,
        aor: &str,
    ) -> Result<Vec<Binding>, ClusterError> {
        if let Some(table) = self.tenant(tenant) {
            let shard = self.shard(&table, aor).lock();
            if let Some(bindings) = shard.aors.get(aor) {
                return Ok(bindings.clone());
            }
        }
        let key = Cluster::key(tenant, "loc", aor);
        let generation = shared.generation(tenant, aor);
        let raw: Option<Vec<u8>> = shared.cluster.query(redis::Cmd::get(&key))?;
        let bindings = decode(&raw.unwrap_or_default(), &key);
        self.cache(shared, generation, tenant, aor, &bindings);
        Ok(bindings)
    }

    /// Removes every binding of `aor` from Redis; how many there were.
    pub(super) fn unregister_shared(
        &self,
        shared: &Shared,
        tenant: &str,
        aor: &str,
    ) -> Result<usize, ClusterError> {
        let key = Cluster::key(tenant, "loc", aor);
        let index = Cluster::key(tenant, "index", "loc");
        let raw: Option<Vec<u8>> = shared.cluster.query(redis::Cmd::get(&key))?;
        let Some(raw) = raw else {
            self.drop_cached(tenant, aor);
            return Ok(0);
        };
        let n = decode(&raw, &key).len();
        let mut del = redis::pipe();
        del.del(&key)
            .zrem(&index, aor)
            .publish(CHANNEL, message(shared.cluster.node(), tenant, aor));
        shared.cluster.pipeline::<()>(del)?;
        self.forget(tenant, aor);
        Ok(n)
    }
}

fn cluster_error(err: ClusterError) -> SaveError {
    SaveError::Storage(StorageError::Cluster(err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_lists_round_trip_and_hostile_ones_are_none() {
        let b = Binding {
            contact: "sip:alice@192.0.2.1".into(),
            expires: 100,
            q: 0.5,
            call_id: "c".into(),
            cseq: 3,
            path: vec!["<sip:x@10.0.0.1;lr;ob>".into()],
            received: Some("sip:192.0.2.1:5060;transport=tcp;ob".into()),
            user_agent: "ua".into(),
            methods: vec!["INVITE".into()],
            nat: true,
            instance: "\"<urn:uuid:1>\"".into(),
            reg_id: 1,
            persistent: true,
        };
        let raw = encode(std::slice::from_ref(&b));
        assert_eq!(decode(raw.as_bytes(), "k"), vec![b]);
        assert!(decode(b"{not json", "k").is_empty());
        assert!(decode(b"[{\"contact\":1}]", "k").is_empty());
        let q = decode(
            br#"[{"contact":"sip:a@b","expires":1,"q":7.0,"call_id":"c","cseq":1}]"#,
            "k",
        );
        assert_eq!(q[0].q, 1.0);
    }
}
