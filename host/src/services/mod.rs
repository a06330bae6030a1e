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
pub mod kv;
pub mod location;
pub mod nat;
pub mod nonce;
pub mod permissions;
pub mod ratelimit;
mod readers;
pub mod storage;
mod storage_error;
pub mod subscribers;
pub mod writer;

use std::path::Path;
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
    pub nonces: nonce::Nonces,
    pub kv: kv::Kv,
    /// The flood control and its ban list (the server puts `[flood]` and
    /// `trusted` in force; the `ratelimit` interface bans through it).
    pub flood: Arc<crate::transport::Flood>,
    /// The guests' rate limits by key.
    pub ratelimits: ratelimit::RateLimits,
}

impl Services {
    /// Opens the database at `path` (creating and migrating it).
    pub fn open(path: &Path) -> Result<Arc<Services>, StorageError> {
        Ok(Arc::new(Services::with_storage(Storage::open(path)?)))
    }

    pub fn with_storage(storage: Storage) -> Services {
        Services {
            storage,
            nonces: nonce::Nonces::default(),
            kv: kv::Kv::default(),
            flood: Arc::default(),
            ratelimits: ratelimit::RateLimits::default(),
        }
    }

    /// For a serving proxy: drops the bindings the last run saved without
    /// persistence, and starts the purge timer (a thread that ends with
    /// the services), which also checkpoints the database's write-ahead
    /// log on a connection of its own.
    pub fn start(self: &Arc<Self>) -> anyhow::Result<()> {
        let dropped = location::drop_volatile(&self.storage)?;
        if dropped > 0 {
            tracing::info!(
                dropped,
                "bindings of the last run without persistence dropped"
            );
        }
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

    /// Removes what has expired: bindings, nonces, keys.
    pub fn purge(&self) {
        match location::purge_expired(&self.storage, location::unix_now()) {
            Ok(0) => {}
            Ok(n) => tracing::debug!(bindings = n, "expired bindings purged"),
            Err(err) => tracing::warn!(%err, "cannot purge expired bindings"),
        }
        let now = Instant::now();
        self.nonces.purge(now);
        self.kv.purge(now);
        self.flood.purge(now);
        self.ratelimits.purge(now);
    }
}
