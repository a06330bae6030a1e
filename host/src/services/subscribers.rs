//! Subscribers: who may authenticate, as `wisp user add` stores them.
//! Only HA1 hashes (MD5 and SHA-256) are kept, never the password.
//!
//! In the database, or with `[cluster]` in Redis (see
//! [`crate::services::shared::subscribers`]): [`lookup_ha1`] and [`Store`] choose.

use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, OptionalExtension};

use super::digest::{ha1, Algorithm};
use super::shared::subscribers as shared;
use super::storage::{Storage, StorageError};
use super::Services;
use crate::cluster::Cluster;

/// The HA1 of a subscriber for an algorithm, if the subscriber exists:
/// with `[cluster]` from Redis through the node's cache, else from the
/// database. An error is not "no such user".
pub fn lookup_ha1(
    services: &Services,
    tenant: &str,
    username: &str,
    domain: &str,
    algorithm: Algorithm,
) -> Result<Option<String>, StorageError> {
    match &services.cluster {
        Some(cluster) => Ok(services
            .subscriber_cache
            .ha1(cluster, tenant, username, domain, algorithm)?),
        None => ha1_of(&services.storage, tenant, username, domain, algorithm),
    }
}

/// Where `wisp user` keeps the subscribers: the database, or with
/// `[cluster]` Redis (the database is then not used for them).
pub enum Store {
    Database(Storage),
    Cluster {
        cluster: Arc<Cluster>,
        /// The configuration's tenants, whose subscribers a list shows.
        tenants: Vec<String>,
    },
}

/// How long `wisp user` waits for Redis.
const CONNECT_WAIT: Duration = Duration::from_secs(5);

impl Store {
    /// Redis with `[cluster]` (`tenants`: the configuration's), the
    /// database of `[storage]` without.
    pub fn open(
        cluster: Option<&crate::cluster::ClusterConfig>,
        storage: &super::StorageConfig,
        tenants: Vec<String>,
    ) -> anyhow::Result<Store> {
        Ok(match cluster {
            Some(cluster) => Store::Cluster {
                cluster: shared::connect(cluster, CONNECT_WAIT)?,
                tenants,
            },
            None => Store::Database(Storage::open(&storage.path)?),
        })
    }

    /// Adds a subscriber, or changes its password.
    pub fn add(
        &self,
        tenant: &str,
        username: &str,
        domain: &str,
        password: &str,
    ) -> Result<(), StorageError> {
        match self {
            Store::Database(storage) => add(storage, tenant, username, domain, password),
            Store::Cluster { cluster, .. } => {
                Ok(shared::add(cluster, tenant, username, domain, password)?)
            }
        }
    }

    /// Removes a subscriber; whether there was one.
    pub fn delete(&self, tenant: &str, username: &str, domain: &str) -> Result<bool, StorageError> {
        match self {
            Store::Database(storage) => delete(storage, tenant, username, domain),
            Store::Cluster { cluster, .. } => {
                Ok(shared::delete(cluster, tenant, username, domain)?)
            }
        }
    }

    /// Every subscriber, sorted; of one tenant when given.
    pub fn list(&self, tenant: Option<&str>) -> Result<Vec<Subscriber>, StorageError> {
        let (cluster, tenants) = match self {
            Store::Database(storage) => return list(storage, tenant),
            Store::Cluster { cluster, tenants } => (cluster, tenants),
        };
        let mut names: Vec<&str> = match tenant {
            Some(t) => vec![t],
            None => tenants.iter().map(String::as_str).collect(),
        };
        names.sort_unstable();
        let mut all = Vec::new();
        for name in names {
            all.extend(
                shared::list(cluster, name)?
                    .into_iter()
                    .map(|s| Subscriber {
                        tenant: name.to_owned(),
                        username: s.username,
                        domain: s.domain,
                    }),
            );
        }
        Ok(all)
    }
}

/// One subscriber as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscriber {
    pub tenant: String,
    pub username: String,
    pub domain: String,
}

/// Adds a subscriber, or changes the password of an existing one. The
/// digest realm is the domain, as Kamailio's default config uses `$td`/`$fd`.
pub fn add(
    storage: &Storage,
    tenant: &str,
    username: &str,
    domain: &str,
    password: &str,
) -> Result<(), StorageError> {
    let row = (
        tenant.to_owned(),
        username.to_owned(),
        domain.to_owned(),
        ha1(Algorithm::Md5, username, domain, password),
        ha1(Algorithm::Sha256, username, domain, password),
    );
    storage.write(move |conn| {
        conn.execute(
            "INSERT INTO subscriber (tenant, username, domain, ha1_md5, ha1_sha256)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (tenant, username, domain)
             DO UPDATE SET ha1_md5 = excluded.ha1_md5, ha1_sha256 = excluded.ha1_sha256",
            params![row.0, row.1, row.2, row.3, row.4],
        )?;
        Ok(())
    })
}

/// Removes a subscriber; whether there was one.
pub fn delete(
    storage: &Storage,
    tenant: &str,
    username: &str,
    domain: &str,
) -> Result<bool, StorageError> {
    let key = (tenant.to_owned(), username.to_owned(), domain.to_owned());
    storage.write(move |conn| {
        let n = conn.execute(
            "DELETE FROM subscriber WHERE tenant = ?1 AND username = ?2 AND domain = ?3",
            params![key.0, key.1, key.2],
        )?;
        Ok(n > 0)
    })
}

/// Every subscriber, sorted; of one tenant when given.
pub fn list(storage: &Storage, tenant: Option<&str>) -> Result<Vec<Subscriber>, StorageError> {
    storage.read(|conn| {
        let mut stmt = conn.prepare(
            "SELECT tenant, username, domain FROM subscriber
             WHERE ?1 IS NULL OR tenant = ?1 ORDER BY tenant, domain, username",
        )?;
        let rows = stmt.query_map(params![tenant], |r| {
            Ok(Subscriber {
                tenant: r.get(0)?,
                username: r.get(1)?,
                domain: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    })
}

/// The HA1 of a subscriber for an algorithm, if the subscriber exists
/// (on the calling thread's reader, which remembers it until the
/// database changes: this process's writes are seen at the next lookup,
/// `wisp user add` or `del` from another process within 0.1 s). An
/// error is not "no such user".
pub fn ha1_of(
    storage: &Storage,
    tenant: &str,
    username: &str,
    domain: &str,
    algorithm: Algorithm,
) -> Result<Option<String>, StorageError> {
    let sql = match algorithm {
        Algorithm::Md5 => {
            "SELECT ha1_md5 FROM subscriber WHERE tenant = ?1 AND username = ?2 AND domain = ?3"
        }
        Algorithm::Sha256 => {
            "SELECT ha1_sha256 FROM subscriber WHERE tenant = ?1 AND username = ?2 AND domain = ?3"
        }
    };
    storage.read_memo(&[tenant, username, domain, algorithm.name()], |conn| {
        Ok(conn
            .prepare_cached(sql)?
            .query_row(params![tenant, username, domain], |r| r.get(0))
            .optional()?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_hashes_not_passwords() {
        let storage = Storage::in_memory().expect("db");
        add(&storage, "t", "alice", "example.com", "secret").expect("add");
        add(&storage, "t", "alice", "example.com", "better").expect("update");
        add(&storage, "u", "bob", "example.org", "pw").expect("add");
        let md5 = ha1_of(&storage, "t", "alice", "example.com", Algorithm::Md5)
            .expect("query")
            .expect("present");
        assert_eq!(md5, ha1(Algorithm::Md5, "alice", "example.com", "better"));
        // Remembered by this thread's reader, until the database changes.
        add(&storage, "t", "alice", "example.com", "best").expect("update");
        let md5 = ha1_of(&storage, "t", "alice", "example.com", Algorithm::Md5)
            .expect("query")
            .expect("present");
        assert_eq!(md5, ha1(Algorithm::Md5, "alice", "example.com", "best"));
        let sha = ha1_of(&storage, "t", "alice", "example.com", Algorithm::Sha256)
            .expect("query")
            .expect("present");
        assert_eq!(sha.len(), 64);
        let dump: Vec<String> = storage
            .read(|c| {
                let mut s = c.prepare("SELECT * FROM subscriber")?;
                let rows = s.query_map([], |r| {
                    Ok(format!(
                        "{:?}{:?}",
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?
                    ))
                })?;
                Ok::<_, StorageError>(rows.collect::<Result<_, _>>()?)
            })
            .expect("dump");
        assert!(dump
            .iter()
            .all(|row| !row.contains("better") && !row.contains("best")));
        assert_eq!(list(&storage, Some("t")).expect("list").len(), 1);
        assert_eq!(list(&storage, None).expect("list").len(), 2);
        assert!(delete(&storage, "t", "alice", "example.com").expect("del"));
        assert!(!delete(&storage, "t", "alice", "example.com").expect("del"));
        assert_eq!(
            ha1_of(&storage, "t", "alice", "example.com", Algorithm::Md5).expect("query"),
            None
        );
    }

    /// `wisp user add` and `del` write through a connection of their own
    /// (another process): a serving proxy's remembered HA1s follow them,
    /// within `MEMO_RECHECK`.
    #[test]
    fn another_connections_changes_are_seen() {
        let dir = std::env::temp_dir().join(format!(
            "wisp-subscribers-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("wisp.db");
        let serving = Storage::open(&path).expect("db");
        let lookup = || ha1_of(&serving, "t", "bob", "example.org", Algorithm::Md5).expect("query");
        let later = || std::thread::sleep(crate::services::readers::MEMO_RECHECK);
        assert_eq!(lookup(), None);
        {
            let cli = Storage::open(&path).expect("db");
            add(&cli, "t", "bob", "example.org", "one").expect("add");
        }
        later();
        assert_eq!(
            lookup(),
            Some(ha1(Algorithm::Md5, "bob", "example.org", "one"))
        );
        assert_eq!(
            lookup(),
            Some(ha1(Algorithm::Md5, "bob", "example.org", "one"))
        );
        {
            let cli = Storage::open(&path).expect("db");
            add(&cli, "t", "bob", "example.org", "two").expect("change");
        }
        later();
        assert_eq!(
            lookup(),
            Some(ha1(Algorithm::Md5, "bob", "example.org", "two"))
        );
        {
            let cli = Storage::open(&path).expect("db");
            assert!(delete(&cli, "t", "bob", "example.org").expect("del"));
        }
        later();
        assert_eq!(lookup(), None);
        drop(serving);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
