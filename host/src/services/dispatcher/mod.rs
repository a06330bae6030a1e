//! The dispatcher (Kamailio's dispatcher module): each tenant's sets of
//! destinations, their states, and the choice of one by an algorithm.
//!
//! Sets come from the tenant's `dispatcher` section and are replaced at
//! every configuration load ([`Dispatcher::configure`]); a destination
//! that stays in its set keeps its state across a reload. States change by
//! `mark` (the WIT) and by OPTIONS probes ([`probe`]), which run on a
//! thread of their own with a socket of their own, started when a tenant
//! first asks for probing.

pub mod config;
mod probe;
pub mod select;
pub mod shared;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};

pub use config::{DestinationConfig, DispatcherConfig, SetConfig};
pub use select::Algorithm;

/// Whether a destination takes requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Up,
    /// Taken down by probes or `mark`; probed, and up at the first answer.
    Down,
    /// Out of service until marked up; not probed.
    Disabled,
}

impl State {
    fn from_u8(v: u8) -> State {
        match v {
            0 => State::Up,
            1 => State::Down,
            _ => State::Disabled,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            State::Up => 0,
            State::Down => 1,
            State::Disabled => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Up => "up",
            State::Down => "down",
            State::Disabled => "disabled",
        }
    }
}

/// One destination, as configured, with its state.
#[derive(Debug)]
pub struct Dest {
    pub uri: String,
    pub weight: u32,
    pub priority: i32,
    pub attrs: String,
    pub probe: bool,
    state: AtomicU8,
    /// Failed probes in a row.
    failures: AtomicU32,
}

impl Dest {
    pub fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::Relaxed))
    }

    /// Sets the state; whether it changed.
    fn set_state(&self, state: State) -> bool {
        self.state.swap(state.as_u8(), Ordering::Relaxed) != state.as_u8()
    }
}

/// One set of a tenant.
#[derive(Debug)]
pub struct Set {
    pub id: u32,
    pub dests: Vec<Dest>,
    /// The round-robin turn.
    turn: AtomicU64,
    /// The smooth weighted round-robin's running weights, by destination.
    current_weights: Mutex<Vec<i64>>,
}

impl Set {
    fn new(config: &SetConfig) -> Set {
        Set {
            id: config.id,
            dests: config
                .destinations
                .iter()
                .map(|d| Dest {
                    uri: d.uri.clone(),
                    weight: d.weight,
                    priority: d.priority,
                    attrs: d.attrs.clone(),
                    probe: d.probe,
                    state: AtomicU8::new(
                        if d.disabled {
                            State::Disabled
                        } else {
                            State::Up
                        }
                        .as_u8(),
                    ),
                    failures: AtomicU32::new(0),
                })
                .collect(),
            turn: AtomicU64::new(0),
            current_weights: Mutex::new(Vec::new()),
        }
    }

    pub fn dest(&self, uri: &str) -> Option<&Dest> {
        self.dests.iter().find(|d| d.uri == uri)
    }
}

/// A tenant's sets and how they are probed.
#[derive(Debug)]
pub struct TenantSets {
    pub config: DispatcherConfig,
    pub sets: BTreeMap<u32, Set>,
}

impl TenantSets {
    pub fn set(&self, id: u32) -> Option<&Set> {
        self.sets.get(&id)
    }
}

/// Why a state changed, for the log.
#[derive(Debug, Clone, Copy)]
pub enum Cause {
    Probe,
    Mark,
    /// Another node of the cluster changed it.
    Cluster,
}

impl Cause {
    fn as_str(self) -> &'static str {
        match self {
            Cause::Probe => "probe",
            Cause::Mark => "mark",
            Cause::Cluster => "cluster",
        }
    }
}

/// Every tenant's sets (shared by every worker; see the module docs).
#[derive(Default)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    tenants: RwLock<HashMap<String, Arc<TenantSets>>>,
    /// The probe thread was started.
    probing: std::sync::OnceLock<()>,
    /// With `[cluster]`: the queue to the thread that shares the states.
    shared: std::sync::OnceLock<shared::Sync>,
}

impl Dispatcher {
    /// Puts the tenants' sections in force (at start and at every
    /// configuration reload): tenants not named lose their sets; a
    /// destination still in its set keeps its state and probe count.
    pub fn configure<'a>(
        &self,
        tenants: impl IntoIterator<Item = (&'a str, &'a DispatcherConfig)>,
    ) {
        let mut map = self
            .inner
            .tenants
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let mut next = HashMap::new();
        let mut probes = false;
        for (name, config) in tenants {
            if config.set.is_empty() {
                continue;
            }
            let old = map.get(name);
            let sets = config
                .set
                .iter()
                .map(|s| {
                    let set = Set::new(s);
                    if let Some(old) = old.and_then(|o| o.set(s.id)) {
                        set.turn
                            .store(old.turn.load(Ordering::Relaxed), Ordering::Relaxed);
                        for d in &set.dests {
                            if let Some(o) = old.dest(&d.uri) {
                                d.set_state(o.state());
                                d.failures
                                    .store(o.failures.load(Ordering::Relaxed), Ordering::Relaxed);
                            }
                        }
                    }
                    (s.id, set)
                })
                .collect();
            probes |= config.probes();
            next.insert(
                name.to_owned(),
                Arc::new(TenantSets {
                    config: config.clone(),
                    sets,
                }),
            );
        }
        *map = next;
        drop(map);
        // New sets take the cluster's states.
        if let Some(sync) = self.inner.shared.get() {
            sync.send(shared::Job::Pull);
        }
        if probes {
            self.inner.probing.get_or_init(|| {
                if let Err(err) = probe::start(Arc::downgrade(&self.inner)) {
                    tracing::error!(%err, "cannot start the dispatcher's probes");
                }
            });
        }
    }

    /// A tenant's sets; none when it has no `dispatcher` section.
    pub fn tenant(&self, tenant: &str) -> Option<Arc<TenantSets>> {
        self.inner.tenant(tenant)
    }

    /// Sets a destination's state (`mark`); false when the tenant has no
    /// such set or destination.
    pub fn mark(&self, tenant: &str, set: u32, uri: &str, state: State, cause: Cause) -> bool {
        self.inner.mark(tenant, set, uri, state, cause)
    }

    /// Shares the states with the other nodes of the cluster (see
    /// [`shared`]); once, when the services open.
    pub fn join(&self, cluster: Arc<crate::cluster::Cluster>) -> std::io::Result<()> {
        if self.inner.shared.get().is_some() {
            return Ok(());
        }
        let sync = shared::join(&self.inner, cluster)?;
        sync.send(shared::Job::Pull);
        let _ = self.inner.shared.set(sync);
        Ok(())
    }
}

impl Inner {
    fn tenant(&self, tenant: &str) -> Option<Arc<TenantSets>> {
        self.tenants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(tenant)
            .cloned()
    }

    fn snapshot(&self) -> Vec<(String, Arc<TenantSets>)> {
        self.tenants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    fn mark(&self, tenant: &str, set: u32, uri: &str, state: State, cause: Cause) -> bool {
        let Some(sets) = self.tenant(tenant) else {
            return false;
        };
        let Some(dest) = sets.set(set).and_then(|s| s.dest(uri)) else {
            return false;
        };
        dest.failures.store(0, Ordering::Relaxed);
        if dest.set_state(state) {
            self.changed(tenant, set, uri, state, cause);
        }
        true
    }

    /// A probe was answered: the destination is alive.
    fn answered(&self, tenant: &str, set: u32, uri: &str) {
        let Some(sets) = self.tenant(tenant) else {
            return;
        };
        let Some(dest) = sets.set(set).and_then(|s| s.dest(uri)) else {
            return;
        };
        dest.failures.store(0, Ordering::Relaxed);
        // A disabled destination stays so (it is not probed, but an answer
        // to a probe sent before it was disabled may still come).
        if dest.state() == State::Down && dest.set_state(State::Up) {
            self.changed(tenant, set, uri, State::Up, Cause::Probe);
        }
    }

    /// A probe went unanswered: down after `threshold` in a row.
    fn unanswered(&self, tenant: &str, set: u32, uri: &str) {
        let Some(sets) = self.tenant(tenant) else {
            return;
        };
        let threshold = sets.config.probe_threshold;
        let Some(dest) = sets.set(set).and_then(|s| s.dest(uri)) else {
            return;
        };
        let failures = dest
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if failures >= threshold && dest.state() == State::Up && dest.set_state(State::Down) {
            self.changed(tenant, set, uri, State::Down, Cause::Probe);
        }
    }

    fn changed(&self, tenant: &str, set: u32, uri: &str, state: State, cause: Cause) {
        tracing::info!(
            target: "wisp::dispatcher",
            tenant,
            set,
            uri,
            state = state.as_str(),
            cause = cause.as_str(),
            "dispatcher destination {}",
            state.as_str()
        );
        if matches!(cause, Cause::Cluster) {
            return;
        }
        if let Some(sync) = self.shared.get() {
            sync.send(shared::Job::Push {
                tenant: tenant.to_owned(),
                set,
                uri: uri.to_owned(),
                state,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> DispatcherConfig {
        toml::from_str(text).expect("section")
    }

    #[test]
    fn tenants_see_their_own_sets_and_states_survive_a_reload() {
        let d = Dispatcher::default();
        let a =
            config("[[set]]\nid = 1\ndestinations = [{ uri = \"sip:a\" }, { uri = \"sip:b\" }]");
        let b = config("[[set]]\nid = 2\ndestinations = [{ uri = \"sip:c\", disabled = true }]");
        d.configure([("a", &a), ("b", &b)]);
        assert!(d.tenant("a").expect("a").set(2).is_none());
        assert!(!d.mark("a", 2, "sip:c", State::Down, Cause::Mark));
        assert_eq!(
            d.tenant("b").expect("b").set(2).expect("2").dests[0].state(),
            State::Disabled
        );
        assert!(d.mark("a", 1, "sip:b", State::Down, Cause::Mark));
        // Reloaded with one more destination: sip:b stays down.
        let a2 = config(
            "[[set]]\nid = 1\ndestinations = [{ uri = \"sip:a\" }, { uri = \"sip:b\" }, { uri = \"sip:d\" }]",
        );
        d.configure([("a", &a2)]);
        let sets = d.tenant("a").expect("a");
        let states: Vec<State> = sets
            .set(1)
            .expect("1")
            .dests
            .iter()
            .map(Dest::state)
            .collect();
        assert_eq!(states, [State::Up, State::Down, State::Up]);
        assert!(d.tenant("b").is_none(), "a tenant gone loses its sets");
    }

    #[test]
    fn probes_take_down_after_the_threshold_and_up_at_an_answer() {
        let d = Dispatcher::default();
        let a = config(
            "probe_threshold = 2\n[[set]]\nid = 1\ndestinations = [{ uri = \"sip:a\" }, { uri = \"sip:b\", disabled = true }]",
        );
        d.configure([("a", &a)]);
        let state = |uri: &str| {
            d.tenant("a")
                .expect("a")
                .set(1)
                .expect("1")
                .dest(uri)
                .expect("dest")
                .state()
        };
        d.inner.unanswered("a", 1, "sip:a");
        assert_eq!(state("sip:a"), State::Up);
        d.inner.unanswered("a", 1, "sip:a");
        assert_eq!(state("sip:a"), State::Down);
        d.inner.answered("a", 1, "sip:a");
        assert_eq!(state("sip:a"), State::Up);
        d.inner.answered("a", 1, "sip:b");
        assert_eq!(
            state("sip:b"),
            State::Disabled,
            "only a mark brings it back"
        );
    }
}
