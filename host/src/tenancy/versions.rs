//! Versions across nodes: a tenant's routing component, content-addressed
//! in Redis, served by every node.
//!
//! | key                        | holds                                       |
//! |----------------------------|---------------------------------------------|
//! | `wisp:component:{sha256}`  | a component's bytes                         |
//! | `wisp:{tenant}:version`    | the sha256 of the tenant's cluster version  |
//! | `wisp:{tenant}:served`     | hash: node → the sha256 it serves, or `failed: why` |
//!
//! A local change that puts another component in service (reload,
//! promote, configuration reload with a changed file) stores the bytes and
//! the version in one MULTI/EXEC, and PUBLISHes the tenant's name on
//! [`CHANNEL`]. Every node (this one too) then reads the version, fetches
//! the bytes, checks their sha256, builds them with its own params and
//! limits on the `wisp-versions` thread (never the link's), and swaps them
//! in through [`Tenancy::adopt`]: in-flight transactions finish on the
//! version they started on. A node that cannot fetch or build it keeps
//! what it serves and says so: a warning in its log and `failed: …` in
//! the served hash. At start, when the link comes (back) up and every
//! [`RESYNC`], each node compares its versions with the cluster's, so a
//! node started later, or cut off during a publish, catches up.
//!
//! A reload made while Redis is away serves on this node at once and is
//! published when the link is back (then it is the cluster's newest, even
//! over one published meanwhile by another node: the last publish wins).

use std::collections::{HashMap, HashSet};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use sha2::{Digest, Sha256};

use crate::cluster::{Cluster, ClusterError};
use crate::tenancy::{ClusterView, SharedVersions, Tenancy};

/// Where a new version is announced; the payload is the tenant's name.
pub const CHANNEL: &str = "wisp:versions";
/// A component larger than this is refused before it is fetched.
const MAX_COMPONENT: u64 = 256 << 20;
/// How often unpublished versions are tried again while Redis answers.
const RETRY: Duration = Duration::from_secs(5);
/// How often every tenant is compared with the cluster's version, should
/// an announcement have been missed without the link going down.
const RESYNC: Duration = Duration::from_secs(30);
/// Longest failure reason kept in the served hash.
const MAX_REASON: usize = 400;
/// Components go to and from Redis in pieces of this size, each one
/// command bounded by `[cluster] timeout_ms`: a large component over a
/// slow link needs more commands, not a longer timeout.
const CHUNK: usize = 512 << 10;
/// How long a half-uploaded component may stay, should its node die.
const UPLOAD_TTL_S: u64 = 3600;

pub fn component_key(digest: &str) -> String {
    format!("wisp:component:{digest}")
}

pub fn version_key(tenant: &str) -> String {
    format!("wisp:{tenant}:version")
}

pub fn served_key(tenant: &str) -> String {
    format!("wisp:{tenant}:served")
}

enum Job {
    /// A version of this tenant was published (maybe by this node).
    Published(String),
    /// Compare every tenant with the cluster.
    SyncAll,
    /// The link came (back) up: publish what waits, then compare.
    Up,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabel {
    tenant: String,
}

/// The cluster side of this node's versions.
pub struct Versions {
    cluster: Arc<Cluster>,
    jobs: Mutex<Sender<Job>>,
    state: Mutex<State>,
    /// `wisp_cluster_version_in_sync{tenant}`: 1 while this node serves
    /// the cluster's version of the tenant (or the cluster has none).
    in_sync: Family<TenantLabel, Gauge>,
}

/// A version put in service here and not yet published: (digest, component).
type Unpublished = (String, Arc<[u8]>);

#[derive(Default)]
struct State {
    /// The cluster's version of each tenant, as last read or published.
    cluster: HashMap<String, String>,
    /// The version this node could not serve, and why.
    failed: HashMap<String, (String, String)>,
    /// Put in service here while Redis was away: (digest, component).
    unpublished: HashMap<String, Unpublished>,
}

/// Shares `tenancy`'s versions through `cluster`: local changes are
/// published from now on, and the cluster's versions taken on the
/// `wisp-versions` thread.
pub fn start(cluster: Arc<Cluster>, tenancy: Arc<Tenancy>) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel();
    let versions = Arc::new(Versions {
        cluster: cluster.clone(),
        jobs: Mutex::new(tx),
        state: Mutex::new(State::default()),
        in_sync: Family::default(),
    });
    let family = versions.in_sync.clone();
    tenancy.metrics().register(move |registry| {
        registry.register(
            "cluster_version_in_sync",
            "1 while this node serves the cluster's version of the tenant, 0 while it could not take it",
            family,
        )
    });
    tenancy.share_versions(versions.clone());
    let on_message = versions.clone();
    cluster.subscribe(
        CHANNEL,
        Box::new(move |payload| match tenant_name(payload) {
            Some(tenant) => on_message.queue(Job::Published(tenant)),
            None => tracing::debug!("a version announcement that names no tenant, ignored"),
        }),
    );
    let on_up = versions.clone();
    cluster.on_up(Box::new(move || on_up.queue(Job::Up)));
    // The link may be up already, and its first `on_up` gone by.
    versions.queue(Job::SyncAll);
    let worker = versions.clone();
    std::thread::Builder::new()
        .name("wisp-versions".into())
        .spawn(move || worker.run(&tenancy, &rx))
        .context("cannot start the wisp-versions thread")?;
    Ok(())
}

/// A tenant's name from an announcement: Redis's content is not trusted.
fn tenant_name(payload: &[u8]) -> Option<String> {
    let name = std::str::from_utf8(payload).ok()?;
    (!name.is_empty() && name.len() <= 256 && !name.chars().any(char::is_control))
        .then(|| name.to_owned())
}

fn is_digest(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

/// Why a version could not be taken.
enum Refusal {
    /// Redis did not answer: tried again when the link is back.
    Unreachable(ClusterError),
    /// The version is wrong for this node: reported, not retried until
    /// it is announced again.
    Failed(String),
}

impl Versions {
    fn queue(&self, job: Job) {
        let _ = self
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(job);
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn run(&self, tenancy: &Tenancy, rx: &Receiver<Job>) {
        let mut last_sync = Instant::now();
        loop {
            let first = match rx.recv_timeout(RETRY) {
                Ok(job) => Some(job),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            // A burst of announcements makes one pass.
            let mut announced = HashSet::new();
            let mut all = first.is_none() && last_sync.elapsed() >= RESYNC;
            let mut retry = first.is_none();
            for job in first.into_iter().chain(rx.try_iter()) {
                match job {
                    Job::Published(tenant) => {
                        announced.insert(tenant);
                    }
                    Job::SyncAll => all = true,
                    Job::Up => {
                        retry = true;
                        all = true;
                    }
                }
            }
            if retry {
                self.publish_waiting();
            }
            if all {
                last_sync = Instant::now();
                for tenant in tenancy.tenant_names() {
                    let announced = announced.remove(&tenant);
                    self.sync(tenancy, &tenant, announced);
                }
            }
            for tenant in announced {
                self.sync(tenancy, &tenant, true);
            }
        }
    }

    /// Publishes again what was put in service while Redis was away.
    fn publish_waiting(&self) {
        let waiting: Vec<(String, Unpublished)> = self
            .state()
            .unpublished
            .iter()
            .map(|(t, v)| (t.clone(), v.clone()))
            .collect();
        for (tenant, (digest, wasm)) in waiting {
            if self.try_publish(&tenant, &digest, &wasm).is_ok() {
                tracing::info!(
                    tenant,
                    digest = short(&digest),
                    "a version put in service while Redis was away is published"
                );
            }
        }
    }

    /// Serves the cluster's version of `tenant`, if it is not served
    /// already. `announced`: it was just published, so a version that
    /// failed here before is tried again.
    fn sync(&self, tenancy: &Tenancy, tenant: &str, announced: bool) {
        let Some(served) = tenancy.served_digest(tenant) else {
            tracing::debug!(
                tenant,
                "a version for a tenant this node does not have, ignored"
            );
            return;
        };
        let wanted = match self
            .cluster
            .query::<Option<String>>(get(&version_key(tenant)))
        {
            Ok(wanted) => wanted,
            Err(err) => {
                tracing::debug!(tenant, %err, "cannot read the cluster's version; again when the link is up");
                return;
            }
        };
        let Some(wanted) = wanted else {
            // No cluster version yet: each node serves its own file.
            self.in_sync.get_or_create(&label(tenant)).set(1);
            self.report_served(tenant, &served);
            return;
        };
        if !is_digest(&wanted) {
            self.fail(
                tenancy,
                tenant,
                &wanted,
                &served,
                "the cluster's version is not a sha256".into(),
            );
            return;
        }
        self.state()
            .cluster
            .insert(tenant.to_owned(), wanted.clone());
        if wanted == served {
            self.state().failed.remove(tenant);
            self.in_sync.get_or_create(&label(tenant)).set(1);
            self.report_served(tenant, &served);
            return;
        }
        if self.state().unpublished.contains_key(tenant) {
            // This node's own change waits to be published: taking the
            // cluster's older one would undo it.
            return;
        }
        let failed_before = self
            .state()
            .failed
            .get(tenant)
            .is_some_and(|(digest, _)| *digest == wanted);
        if failed_before && !announced {
            return;
        }
        let started = Instant::now();
        let wasm = match self.fetch(&wanted) {
            Ok(wasm) => wasm,
            Err(Refusal::Unreachable(ClusterError::Down)) => {
                tracing::debug!(
                    tenant,
                    "cannot fetch the cluster's version; again when the link is up"
                );
                return;
            }
            Err(Refusal::Unreachable(err)) => {
                tracing::warn!(tenant, wanted = short(&wanted), %err, "cannot fetch the cluster's version; tried again within 30 s");
                return;
            }
            Err(Refusal::Failed(why)) => return self.fail(tenancy, tenant, &wanted, &served, why),
        };
        match tenancy.adopt(tenant, &wanted, wasm) {
            Ok(report) => {
                self.state().failed.remove(tenant);
                self.in_sync.get_or_create(&label(tenant)).set(1);
                self.report_served(tenant, &wanted);
                tracing::info!(
                    tenant,
                    digest = short(&wanted),
                    version = report.version,
                    took_ms = started.elapsed().as_secs_f64() * 1e3,
                    "serving the cluster's version"
                );
            }
            Err(err) => self.fail(
                tenancy,
                tenant,
                &wanted,
                &served,
                format!("cannot build it: {err}"),
            ),
        }
    }

    /// The component `digest`, checked.
    fn fetch(&self, digest: &str) -> Result<Arc<[u8]>, Refusal> {
        let key = component_key(digest);
        let mut strlen = redis::cmd("STRLEN");
        strlen.arg(&key);
        let len: u64 = self.cluster.query(strlen).map_err(Refusal::Unreachable)?;
        if len == 0 {
            return Err(Refusal::Failed(format!("{key} is missing")));
        }
        if len > MAX_COMPONENT {
            return Err(Refusal::Failed(format!(
                "{key} is {len} bytes, more than {MAX_COMPONENT}"
            )));
        }
        let mut wasm = Vec::with_capacity(len as usize);
        while (wasm.len() as u64) < len {
            let mut range = redis::cmd("GETRANGE");
            let end = (wasm.len() + CHUNK).min(len as usize) - 1;
            range.arg(&key).arg(wasm.len()).arg(end);
            let piece: Vec<u8> = self.cluster.query(range).map_err(Refusal::Unreachable)?;
            if piece.is_empty() {
                // Replaced or deleted meanwhile: the hash check below tells.
                break;
            }
            wasm.extend_from_slice(&piece);
        }
        let actual = hex::encode(Sha256::digest(&wasm));
        if actual != digest {
            return Err(Refusal::Failed(format!(
                "{key} holds a component whose sha256 is {actual}"
            )));
        }
        Ok(Arc::from(wasm))
    }

    /// Keeps what serves, and says so: log, served hash, metric.
    fn fail(&self, tenancy: &Tenancy, tenant: &str, wanted: &str, served: &str, why: String) {
        let mut why: String = why.chars().filter(|c| !c.is_control()).collect();
        if why.len() > MAX_REASON {
            let mut end = MAX_REASON;
            while !why.is_char_boundary(end) {
                end -= 1;
            }
            why.truncate(end);
            why.push('…');
        }
        tracing::warn!(
            tenant,
            wanted = short(wanted),
            serving = short(served),
            why,
            "cannot serve the cluster's version; the serving version stays"
        );
        self.in_sync.get_or_create(&label(tenant)).set(0);
        tenancy.metrics().reload(tenant, "cluster_failed", None);
        self.report_served(
            tenant,
            &format!("failed: {} {why}; serving {served}", short(wanted)),
        );
        self.state()
            .failed
            .insert(tenant.to_owned(), (wanted.to_owned(), why));
    }

    fn report_served(&self, tenant: &str, value: &str) {
        let mut hset = redis::cmd("HSET");
        hset.arg(served_key(tenant))
            .arg(self.cluster.node())
            .arg(value);
        if let Err(err) = self.cluster.query::<i64>(hset) {
            tracing::debug!(tenant, %err, "cannot record the version served");
        }
    }

    /// The bytes, the version and this node's served entry in one
    /// MULTI/EXEC, then the announcement.
    fn try_publish(&self, tenant: &str, digest: &str, wasm: &[u8]) -> Result<(), ClusterError> {
        self.store_component(digest, wasm)?;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(version_key(tenant))
            .arg(digest)
            .ignore()
            .cmd("HSET")
            .arg(served_key(tenant))
            .arg(self.cluster.node())
            .arg(digest)
            .ignore()
            .cmd("PUBLISH")
            .arg(CHANNEL)
            .arg(tenant)
            .ignore();
        self.cluster.pipeline::<()>(pipe)?;
        let mut state = self.state();
        state.unpublished.remove(tenant);
        state.failed.remove(tenant);
        state.cluster.insert(tenant.to_owned(), digest.to_owned());
        drop(state);
        self.in_sync.get_or_create(&label(tenant)).set(1);
        Ok(())
    }

    /// `wasm` under `wisp:component:{digest}`, sent in pieces to a key of
    /// this node's and renamed at the end, so the component key never
    /// holds a part. Nothing is sent when it is there already.
    fn store_component(&self, digest: &str, wasm: &[u8]) -> Result<(), ClusterError> {
        let key = component_key(digest);
        let mut strlen = redis::cmd("STRLEN");
        strlen.arg(&key);
        if self.cluster.query::<u64>(strlen)? == wasm.len() as u64 {
            return Ok(());
        }
        let upload = format!("{key}:upload:{}", self.cluster.node());
        let mut del = redis::cmd("DEL");
        del.arg(&upload);
        self.cluster.query::<i64>(del)?;
        for (i, piece) in wasm.chunks(CHUNK).enumerate() {
            let mut append = redis::cmd("APPEND");
            append.arg(&upload).arg(piece);
            self.cluster.query::<i64>(append)?;
            if i == 0 {
                // Should this node die before the end, the part goes.
                let mut expire = redis::cmd("EXPIRE");
                expire.arg(&upload).arg(UPLOAD_TTL_S);
                self.cluster.query::<i64>(expire)?;
            }
        }
        let mut rename = redis::cmd("RENAME");
        rename.arg(&upload).arg(&key);
        self.cluster.query::<()>(rename)?;
        // RENAME keeps the upload key's TTL: the component stays.
        let mut persist = redis::cmd("PERSIST");
        persist.arg(&key);
        self.cluster.query::<i64>(persist)?;
        Ok(())
    }
}

fn get(key: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("GET");
    cmd.arg(key);
    cmd
}

fn label(tenant: &str) -> TenantLabel {
    TenantLabel {
        tenant: tenant.to_owned(),
    }
}

impl SharedVersions for Versions {
    fn publish(&self, tenant: &str, digest: &str, wasm: Arc<[u8]>) -> String {
        match self.try_publish(tenant, digest, &wasm) {
            Ok(()) => {
                tracing::info!(
                    tenant,
                    digest = short(digest),
                    "version published to the cluster"
                );
                format!("published {}", short(digest))
            }
            Err(err) => {
                tracing::warn!(tenant, digest = short(digest), %err, "version serving here, not published: published when Redis answers again");
                self.state()
                    .unpublished
                    .insert(tenant.to_owned(), (digest.to_owned(), wasm));
                format!("not published ({err}): serving on this node only, published when Redis answers again")
            }
        }
    }

    fn tenants_changed(&self) {
        self.queue(Job::SyncAll);
    }

    fn view(&self, tenant: &str) -> ClusterView {
        let state = self.state();
        ClusterView {
            version: state.cluster.get(tenant).cloned(),
            failed: state
                .failed
                .get(tenant)
                .map(|(digest, why)| format!("{}: {why}", short(digest))),
            unpublished: state
                .unpublished
                .get(tenant)
                .map(|(digest, _)| digest.clone()),
        }
    }

    fn overview(&self, tenants: &[String]) -> Result<serde_json::Value, String> {
        let mut pipe = redis::pipe();
        for tenant in tenants {
            pipe.cmd("GET").arg(version_key(tenant));
            pipe.cmd("HGETALL").arg(served_key(tenant));
        }
        type Row = (Option<String>, HashMap<String, String>);
        let rows: Vec<redis::Value> = self.cluster.pipeline(pipe).map_err(|e| e.to_string())?;
        let mut out = serde_json::Map::new();
        for (tenant, pair) in tenants.iter().zip(rows.chunks(2)) {
            let [version, served] = pair else { break };
            let row: Row = (
                redis::from_redis_value_ref(version).map_err(|e| e.to_string())?,
                redis::from_redis_value_ref(served).map_err(|e| e.to_string())?,
            );
            let served: serde_json::Map<String, serde_json::Value> = row
                .1
                .into_iter()
                .map(|(node, v)| (node, serde_json::Value::String(v)))
                .collect();
            out.insert(
                tenant.clone(),
                serde_json::json!({ "version": row.0, "served": served }),
            );
        }
        Ok(serde_json::Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_and_versions_from_redis_are_checked() {
        assert_eq!(tenant_name(b"acme").as_deref(), Some("acme"));
        assert_eq!(tenant_name(b""), None);
        assert_eq!(tenant_name(b"a\nb"), None);
        assert_eq!(tenant_name(&[0xff, 0xfe]), None);
        assert_eq!(tenant_name(&[b'a'; 257]), None);
        let digest = hex::encode(Sha256::digest(b"x"));
        assert!(is_digest(&digest));
        assert!(!is_digest(&digest.to_uppercase()));
        assert!(!is_digest(&digest[1..]));
        assert!(!is_digest("../../etc/passwd"));
        assert_eq!(version_key("acme"), "wisp:acme:version");
        assert_eq!(served_key("acme"), "wisp:acme:served");
        assert_eq!(component_key(&digest), format!("wisp:component:{digest}"));
    }
}
