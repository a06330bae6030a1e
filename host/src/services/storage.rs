//! The proxy's SQLite database: location bindings and subscribers.
//!
//! One connection behind a mutex, in WAL mode: hooks run on a few worker
//! threads and each statement is short. The schema is versioned with
//! `PRAGMA user_version`; [`MIGRATIONS`] brings an older file up to date.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::Connection;
use serde::Deserialize;

/// The `[storage]` section of the configuration file: where registrations
/// and subscribers are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// The SQLite database file, created when missing. Relative paths are
    /// taken from the working directory. Default: `wisp.db`.
    pub path: PathBuf,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            path: PathBuf::from("wisp.db"),
        }
    }
}

/// Schema steps, applied in order; `user_version` counts those done.
const MIGRATIONS: &[&str] = &[
    // 1: location bindings and subscribers.
    "CREATE TABLE location (
        tenant TEXT NOT NULL,
        aor TEXT NOT NULL,
        contact TEXT NOT NULL,
        expires INTEGER NOT NULL,
        q REAL NOT NULL DEFAULT 1.0,
        call_id TEXT NOT NULL,
        cseq INTEGER NOT NULL,
        path TEXT NOT NULL DEFAULT '',
        received TEXT NOT NULL DEFAULT '',
        user_agent TEXT NOT NULL DEFAULT '',
        methods TEXT NOT NULL DEFAULT '',
        nat INTEGER NOT NULL DEFAULT 0,
        persistent INTEGER NOT NULL DEFAULT 1,
        PRIMARY KEY (tenant, aor, contact)
    );
    CREATE INDEX location_expires ON location (expires);
    CREATE TABLE subscriber (
        tenant TEXT NOT NULL,
        username TEXT NOT NULL,
        domain TEXT NOT NULL,
        ha1_md5 TEXT NOT NULL,
        ha1_sha256 TEXT NOT NULL,
        PRIMARY KEY (tenant, username, domain)
    );",
];

/// Why the database cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("database {path} has schema version {found}, newer than this wisp knows ({known})")]
    TooNew {
        path: PathBuf,
        found: i64,
        known: usize,
    },
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
}

/// The open database.
pub struct Storage {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl Storage {
    /// Opens (creating when missing) and migrates the database at `path`.
    pub fn open(path: &Path) -> Result<Storage, StorageError> {
        let open_err = |source| StorageError::Open {
            path: path.to_owned(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        Storage::init(conn, path)
    }

    /// A private database in memory, for tests.
    pub fn in_memory() -> Result<Storage, StorageError> {
        Storage::init(Connection::open_in_memory()?, Path::new(":memory:"))
    }

    fn init(mut conn: Connection, path: &Path) -> Result<Storage, StorageError> {
        let open_err = |source| StorageError::Open {
            path: path.to_owned(),
            source,
        };
        // WAL lets readers and the writer overlap; NORMAL sync is durable
        // across a crash of the process (not of the OS), as usrloc is.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        // Checkpoints (the only step that waits for the disk) are left to
        // the purge thread's own connection, off the hook calls' path.
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(open_err)?;
        migrate(&mut conn, path)?;
        Ok(Storage {
            conn: Mutex::new(conn),
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A second connection to the same file, for checkpoints (None for a
    /// database in memory).
    pub fn checkpointer(&self) -> Result<Option<Connection>, StorageError> {
        if self.path == Path::new(":memory:") {
            return Ok(None);
        }
        let conn = Connection::open(&self.path).map_err(|source| StorageError::Open {
            path: self.path.clone(),
            source,
        })?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(Some(conn))
    }

    /// The connection, for one short statement or transaction.
    pub fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves a connection SQLite keeps
        // consistent (an open transaction is rolled back when dropped).
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Copies the write-ahead log into the database file without blocking
/// readers or the writer (`PRAGMA wal_checkpoint(PASSIVE)`).
pub fn checkpoint(conn: &Connection) -> Result<(), StorageError> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
    Ok(())
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StorageError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let done = usize::try_from(version).unwrap_or(usize::MAX);
    if done > MIGRATIONS.len() {
        return Err(StorageError::TooNew {
            path: path.to_owned(),
            found: version,
            known: MIGRATIONS.len(),
        });
    }
    for (i, step) in MIGRATIONS.iter().enumerate().skip(done) {
        let tx = conn.transaction()?;
        tx.execute_batch(step)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
        tracing::info!(path = %path.display(), version = i + 1, "database schema migrated");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_once_and_refuses_newer_schemas() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("wisp.db");
        let storage = Storage::open(&path).expect("open");
        let version: i64 = storage
            .conn()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .expect("version");
        assert_eq!(version, MIGRATIONS.len() as i64);
        drop(storage);
        // Reopening does not run the steps again (CREATE TABLE would fail).
        let storage = Storage::open(&path).expect("reopen");
        let checkpointer = storage.checkpointer().expect("second connection");
        checkpoint(checkpointer.as_ref().expect("a file")).expect("checkpoint");
        assert!(Storage::in_memory()
            .expect("memory")
            .checkpointer()
            .expect("none")
            .is_none());
        storage
            .conn()
            .pragma_update(None, "user_version", 99)
            .expect("bump");
        drop(storage);
        let err = Storage::open(&path).err().expect("too new");
        assert!(err.to_string().contains("newer"), "{err}");
    }
}
