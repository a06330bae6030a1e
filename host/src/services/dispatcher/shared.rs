//! Destination states shared by the nodes of a cluster (`[cluster]`),
//! through its Redis.
//!
//! Each set's states are the hash `wisp:{tenant}:ds:{set}` (field: the
//! destination's URI, value: `up`, `down` or `disabled`). A change made on
//! a node (a probe's verdict, a `mark`) is written there and published on
//! [`CHANNEL`] as `[node, tenant, set, uri, state]` in one `MULTI`; the
//! other nodes apply it at once (their log says `cause="cluster"`). A node
//! reads the hashes of its tenants' sets when it loads or reloads its
//! configuration and each time the link comes (back) up, since changes
//! may have been missed meanwhile: then the states in Redis win, and each
//! node's own probes correct what went stale within `probe_threshold`
//! intervals. Every node probes on its own; a destination's state is the
//! last change any node made.
//!
//! Redis and its messages are hostile input: a message or a value that
//! does not parse, or names a set or URI this node does not have, is
//! ignored. Writes never block a hook or the prober: they are queued
//! (bounded) for a thread of their own, `wisp-dispatcher-sync`.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Weak};

use super::{Cause, Inner, State};
use crate::cluster::Cluster;

/// The channel of state changes.
pub const CHANNEL: &str = "wisp:dispatcher";
/// Changes waiting to be written at most; past it one is dropped (and
/// logged), and the next pull or probe puts things right.
const QUEUE: usize = 4096;

/// The hash of a set's states.
pub fn hash_key(tenant: &str, set: u32) -> String {
    Cluster::key(tenant, "ds", &set.to_string())
}

fn parse_state(text: &str) -> Option<State> {
    match text {
        "up" => Some(State::Up),
        "down" => Some(State::Down),
        "disabled" => Some(State::Disabled),
        _ => None,
    }
}

/// What the sync thread does.
pub(super) enum Job {
    /// Write and publish a change made here.
    Push {
        tenant: String,
        set: u32,
        uri: String,
        state: State,
    },
    /// Read every set's states from Redis.
    Pull,
}

/// The queue to the sync thread.
pub(super) struct Sync {
    jobs: SyncSender<Job>,
}

impl Sync {
    pub(super) fn send(&self, job: Job) {
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => tracing::warn!(
                target: "wisp::dispatcher",
                "cluster: too many dispatcher changes waiting for redis; one dropped"
            ),
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

/// Joins the cluster: local changes are pushed, the others' applied, the
/// states pulled now and at every reconnect.
pub(super) fn join(inner: &Arc<Inner>, cluster: Arc<Cluster>) -> std::io::Result<Sync> {
    let (jobs, queue) = sync_channel(QUEUE);
    let weak = Arc::downgrade(inner);
    let link = cluster.clone();
    std::thread::Builder::new()
        .name("wisp-dispatcher-sync".into())
        .spawn(move || run(&weak, &link, &queue))?;
    let node = cluster.node().to_owned();
    let weak = Arc::downgrade(inner);
    cluster.subscribe(
        CHANNEL,
        Box::new(move |payload| {
            let Ok((from, tenant, set, uri, state)) =
                serde_json::from_slice::<(String, String, u32, String, String)>(payload)
            else {
                return;
            };
            if from == node {
                return;
            }
            let (Some(inner), Some(state)) = (weak.upgrade(), parse_state(&state)) else {
                return;
            };
            inner.mark(&tenant, set, &uri, state, Cause::Cluster);
        }),
    );
    let on_up = jobs.clone();
    cluster.on_up(Box::new(move || {
        let _ = on_up.try_send(Job::Pull);
    }));
    Ok(Sync { jobs })
}

fn run(inner: &Weak<Inner>, cluster: &Cluster, queue: &Receiver<Job>) {
    while let Ok(job) = queue.recv() {
        let Some(inner) = inner.upgrade() else {
            return;
        };
        match job {
            Job::Push {
                tenant,
                set,
                uri,
                state,
            } => push(cluster, &tenant, set, &uri, state),
            Job::Pull => pull(&inner, cluster),
        }
    }
}

fn push(cluster: &Cluster, tenant: &str, set: u32, uri: &str, state: State) {
    let payload =
        serde_json::to_vec(&(cluster.node(), tenant, set, uri, state.as_str())).unwrap_or_default();
    let mut pipe = redis::pipe();
    pipe.atomic()
        .hset(hash_key(tenant, set), uri, state.as_str())
        .ignore()
        .publish(CHANNEL, payload)
        .ignore();
    if let Err(err) = cluster.pipeline::<()>(pipe) {
        tracing::warn!(
            target: "wisp::dispatcher",
            %err,
            tenant,
            set,
            uri,
            "cluster: a dispatcher state change did not reach redis; the other nodes keep theirs"
        );
    }
}

fn pull(inner: &Inner, cluster: &Cluster) {
    for (tenant, sets) in inner.snapshot() {
        for set in sets.sets.values() {
            let mut cmd = redis::cmd("HGETALL");
            cmd.arg(hash_key(&tenant, set.id));
            let states = match cluster.query::<Vec<(String, String)>>(cmd) {
                Ok(states) => states,
                Err(err) => {
                    tracing::warn!(target: "wisp::dispatcher", %err, "cluster: cannot read the dispatcher states");
                    return;
                }
            };
            for (uri, state) in states {
                if let Some(state) = parse_state(&state) {
                    // Only the URIs this set has: others are ignored.
                    inner.mark(&tenant, set.id, &uri, state, Cause::Cluster);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_states() {
        assert_eq!(hash_key("t", 7), "wisp:t:ds:7");
        assert_eq!(parse_state("down"), Some(State::Down));
        assert_eq!(parse_state("DOWN"), None);
        assert_eq!(parse_state(""), None);
    }
}
