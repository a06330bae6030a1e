//! The services routing scripts call beside the SIP core, as Kamailio's
//! modules provide them: location (registrar/usrloc), digest
//! authentication (auth/auth_db), key-value (htable), IP allow-lists
//! (permissions), NAT helpers (nathelper), accounting (acc) and rate
//! limits (pipelimit).
//!
//! Everything a tenant stores is keyed by its name. The WIT adapters are
//! in `script/services_api.rs`; each module here is plain Rust, one idea
//! per file.

pub mod acc;
pub mod auth;
pub mod digest;
pub mod dispatcher;
pub mod kv;
pub mod location;
pub mod nat;
pub mod nonce;
pub mod permissions;
pub mod ratelimit;
mod readers;
pub mod shared;
pub mod storage;
mod storage_error;
pub mod subscribers;
pub mod writer;

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

pub use storage::{Storage, StorageConfig, StorageError};
pub use writer::Wait;

/// How often expired bindings, nonces and keys are purged and the
/// database checkpointed.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(10);

/// The services shared by every tenant and worker of the process.
pub struct Services {
    pub storage: Storage,
    /// The registrar's bindings, in memory, written behind to `storage`.
    pub location: location::Location,
    pub nonces: nonce::Nonces,
    pub kv: kv::Kv,
    /// The flood control and its ban list (the server puts `[flood]` and
    /// `trusted` in force; the `ratelimit` interface bans through it).
    pub flood: Arc<crate::transport::Flood>,
    /// The guests' rate limits by key.
    pub ratelimits: ratelimit::RateLimits,
    /// Each tenant's dispatcher sets and their states.
    pub dispatcher: dispatcher::Dispatcher,
    /// The link to the cluster's Redis (`[cluster]`); None on a node
    /// alone, where the embedded storage serves everything.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// With `[cluster]`: the subscriber lookups read from Redis, dropped
    /// as the cluster says they changed.
    pub subscriber_cache: shared::subscribers::Cache,
}

impl Services {
    /// Opens the database of `config` (creating and migrating it).
    pub fn open(
        config: &StorageConfig,
        cluster: Option<Arc<crate::cluster::Cluster>>,
    ) -> Result<Arc<Services>, StorageError> {
        let mut services = Services::with_storage(Storage::open(&config.path)?);
        services.location = location::Location::new(config.location_write_interval());
        if let Some(cluster) = &cluster {
            services.subscriber_cache.attach(cluster);
            if let Err(err) = services.dispatcher.join(cluster.clone()) {
                tracing::warn!(%err, "cannot share the dispatcher's states through the cluster");
            }
        }
        services.cluster = cluster.clone();
        let services = Arc::new(services);
        if let Some(cluster) = cluster {
            // Redis holds the bindings and the nonces; this node caches.
            services
                .location
                .join(cluster.clone(), Arc::downgrade(&services));
            services.nonces.join(cluster);
        }
        Ok(services)
    }

    pub fn with_storage(storage: Storage) -> Services {
        Services {
            storage,
            location: location::Location::default(),
            nonces: nonce::Nonces::default(),
            kv: kv::Kv::default(),
            flood: Arc::default(),
            ratelimits: ratelimit::RateLimits::default(),
            dispatcher: dispatcher::Dispatcher::default(),
            cluster: None,
            subscriber_cache: Default::default(),
        }
    }

    /// For a serving proxy: drops the bindings an older wisp saved
    /// without persistence, loads the persistent ones into memory, and
    /// starts the threads that end with the services: `wisp-location`
    /// writes the changed persistent bindings behind every
    /// `location_write_interval_ms`, and the purge timer purges and
    /// checkpoints the database's write-ahead log on a connection of its
    /// own.
    pub fn start(self: &Arc<Self>) -> anyhow::Result<()> {
        if self.location.clustered() {
            // The bindings are the cluster's (in Redis): the database's
            // rows of a run alone are not loaded, nothing is written behind.
            tracing::info!("bindings and nonces shared through the cluster's redis");
            return self.start_purge();
        }
        let dropped = location::drop_volatile(&self.storage)?;
        if dropped > 0 {
            tracing::info!(
                dropped,
                "bindings of the last run without persistence dropped"
            );
        }
        let loaded = self.location.load(&self.storage, location::unix_now())?;
        tracing::info!(bindings = loaded, "persistent bindings loaded");
        let weak: Weak<Services> = Arc::downgrade(self);
        let interval = self.location.write_interval();
        std::thread::Builder::new()
            .name("wisp-location".into())
            .spawn(move || loop {
                std::thread::sleep(interval);
                let Some(services) = weak.upgrade() else {
                    return;
                };
                services.write_bindings();
            })?;
        self.start_purge()
    }

    /// The purge timer: purges and checkpoints the database's write-ahead
    /// log on a connection of its own.
    fn start_purge(self: &Arc<Self>) -> anyhow::Result<()> {
        let checkpointer = self.storage.checkpointer()?;
        let weak: Weak<Services> = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("wisp-purge".into())
            .spawn(move || loop {
                std::thread::sleep(PURGE_INTERVAL);
                let Some(services) = weak.upgrade() else {
                    return;
                };
                services.purge();
                drop(services);
                if let Some(conn) = &checkpointer {
                    if let Err(err) = storage::checkpoint(conn) {
                        tracing::warn!(%err, "database checkpoint failed");
                    }
                }
            })?;
        Ok(())
    }

    /// Writes the changed persistent bindings to the database now (the
    /// `wisp-location` thread, and a clean shutdown).
    pub fn write_bindings(&self) {
        match self.location.write_behind(&self.storage) {
            Ok(0) => {}
            Ok(n) => tracing::debug!(
                target: "wisp::registrar",
                aors = n,
                "bindings written to the database"
            ),
            Err(err) => tracing::warn!(%err, "cannot write the bindings; tried again later"),
        }
    }

    /// At a clean shutdown: writes what the database does not have yet.
    pub fn stop(&self) {
        let unwritten = self.location.unwritten();
        self.write_bindings();
        if unwritten > 0 {
            tracing::info!(aors = unwritten, "bindings written before stopping");
        }
    }

    /// Removes what has expired: bindings (in memory and in the
    /// database), nonces, keys.
    pub fn purge(&self) {
        let now = location::unix_now();
        let n = self.location.purge(now);
        if n > 0 {
            tracing::debug!(bindings = n, "expired bindings purged");
        }
        if let Err(err) = location::purge_expired(&self.storage, now) {
            tracing::warn!(%err, "cannot purge expired bindings from the database");
        }
        let now = Instant::now();
        self.nonces.purge(now);
        self.kv.purge(now);
        self.flood.purge(now);
        self.ratelimits.purge(now);
    }
}
