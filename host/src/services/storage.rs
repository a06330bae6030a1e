//! The proxy's SQLite database: location bindings and subscribers.
//!
//! Writes go to one thread that owns the writing connection
//! ([`super::writer`]); reads run on a connection of the reading thread's
//! own ([`super::readers`]). In WAL mode the readers never wait for the
//! writer, and no thread that runs hooks takes a lock another holds. The
//! schema is versioned with `PRAGMA user_version`; [`MIGRATIONS`] brings
//! an older file up to date.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use serde::Deserialize;

use super::readers::Readers;
pub use super::storage_error::StorageError;
use super::writer::{Wait, Writer, QUEUE_CAPACITY};

/// The `[storage]` section of the configuration file: where registrations
/// and subscribers are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// The SQLite database file, created when missing. Relative paths are
    /// taken from the working directory. Default: `wisp.db`.
    pub path: PathBuf,
    /// How long a change of a persistent binding may wait in memory
    /// before the writer thread writes it (usrloc's `timer_interval` of
    /// `db_mode = 2`), ms; what a crash can lose. 10 to 60000; default 1000.
    pub location_write_interval_ms: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            path: PathBuf::from("wisp.db"),
            location_write_interval_ms: 1000,
        }
    }
}

impl StorageConfig {
    /// The checks serde cannot express.
    pub fn check(&self) -> Result<(), String> {
        if !(10..=60_000).contains(&self.location_write_interval_ms) {
            return Err(format!(
                "[storage] location_write_interval_ms = {}: must be 10 to 60000",
                self.location_write_interval_ms
            ));
        }
        Ok(())
    }

    /// `location_write_interval_ms`, within its bounds.
    pub fn location_write_interval(&self) -> Duration {
        Duration::from_millis(self.location_write_interval_ms.clamp(10, 60_000))
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
    // 2: RFC 5626 outbound: a binding's instance and reg-id (echoed in the
    // 200 OK; a new flow of the same instance and reg-id replaces it).
    "ALTER TABLE location ADD COLUMN instance TEXT NOT NULL DEFAULT '';
    ALTER TABLE location ADD COLUMN reg_id INTEGER NOT NULL DEFAULT 0;",
];

/// The open database: its writer thread and its readers.
pub struct Storage {
    writer: Writer,
    readers: Readers,
    path: PathBuf,
}

impl Storage {
    /// Opens (creating when missing) and migrates the database at `path`.
    ///
    /// The file holds the subscribers' HA1s, which let anyone who reads
    /// them authenticate as those subscribers: a missing file is created
    /// with mode 0600 before SQLite opens it, and SQLite gives its `-wal`
    /// and `-shm` files the mode of the database file. An existing file
    /// that its group or others may read is used as it is, with a warning
    /// naming it (see [`warn_if_readable`]).
    pub fn open(path: &Path) -> Result<Storage, StorageError> {
        let open_err = |source| StorageError::Open {
            path: path.to_owned(),
            source,
        };
        create_private(path);
        let conn = Connection::open(path).map_err(open_err)?;
        warn_if_readable(path);
        Storage::init(conn, path, path.to_owned())
    }

    /// A private database in memory, for tests and `wisp check`. It is
    /// shared by its writer and readers through SQLite's `memdb` VFS (a
    /// name starting with `/`), under a name no other database has.
    pub fn in_memory() -> Result<Storage, StorageError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let uri = format!(
            "file:/wisp-{}-{}?vfs=memdb",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let conn = Connection::open_with_flags(&uri, OpenFlags::default()).map_err(|source| {
            StorageError::Open {
                path: PathBuf::from(&uri),
                source,
            }
        })?;
        Storage::init(conn, Path::new(":memory:"), PathBuf::from(uri))
    }

    /// `target` is what readers open: the file, or the memory URI.
    fn init(mut conn: Connection, path: &Path, target: PathBuf) -> Result<Storage, StorageError> {
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
        // Only the checkpointer or another process (`wisp user add`) can
        // hold the writer up; hooks bound their own wait.
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(open_err)?;
        // Checkpoints (the only step that waits for the disk) are left to
        // the purge thread's own connection, off the writer's path.
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(open_err)?;
        migrate(&mut conn, path)?;
        let writer = Writer::spawn(conn, QUEUE_CAPACITY)?;
        Ok(Storage {
            readers: Readers::new(target, writer.ran()),
            writer,
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
        conn.busy_timeout(Duration::from_secs(5))?;
        Ok(Some(conn))
    }

    /// Runs `f` (statements, or one transaction) on the calling thread's
    /// read-only connection.
    pub fn read<T, E>(&self, f: impl FnOnce(&Connection) -> Result<T, E>) -> Result<T, E>
    where
        E: From<StorageError>,
    {
        self.readers.with(f)
    }

    /// What `read` answers for the key made of `parts`, on the calling
    /// thread's connection: remembered by that thread until another
    /// connection commits (see [`Readers::memo`]). `read` must depend on
    /// the key only.
    pub fn read_memo(
        &self,
        parts: &[&str],
        read: impl FnOnce(&Connection) -> Result<Option<String>, StorageError>,
    ) -> Result<Option<String>, StorageError> {
        self.readers.memo(parts, read)
    }

    /// Runs `f` on the writer thread for a hook: refused at once when the
    /// writer's queue is full, and an error past `wait` (see
    /// [`Writer::submit`]). The caller waits for its own write only.
    pub fn write_within<T, E, F>(&self, wait: Wait, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StorageError> + Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, E> + Send + 'static,
    {
        self.writer.submit(Some(wait), f)?
    }

    /// Runs `f` on the writer thread, waiting as long as it takes (off the
    /// hooks' path: the purge timer, the command line).
    pub fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StorageError> + Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, E> + Send + 'static,
    {
        self.writer.submit(None, f)?
    }
}

/// Creates the database file at `path` empty, with mode 0600, unless it
/// exists (SQLite takes an empty file for an empty database). Only a file
/// this call makes is touched. When it cannot be made, SQLite's own open
/// reports why (the folder is missing or not writable).
fn create_private(path: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => tracing::info!(path = %path.display(), "database created (mode 0600)"),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(err) => {
            tracing::debug!(path = %path.display(), %err, "cannot create the database file")
        }
    }
}

/// The database file and its `-wal` and `-shm` companions that exist and
/// that the file's group or others may read, with their modes.
fn readable_by_others(path: &Path) -> Vec<(PathBuf, u32)> {
    use std::os::unix::fs::MetadataExt;
    let mut files = vec![path.to_owned()];
    for suffix in ["-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        files.push(PathBuf::from(name));
    }
    files
        .into_iter()
        .filter_map(|file| {
            let mode = std::fs::metadata(&file).ok()?.mode() & 0o777;
            (mode & 0o077 != 0).then_some((file, mode))
        })
        .collect()
}

/// Logs a warning for each database file others may read (one made by a
/// wisp before the files were created 0600, or opened up by hand). The
/// mode is not changed behind the operator's back: a group may be meant to
/// read it (backups), and a configuration tool that set it would fight us.
fn warn_if_readable(path: &Path) {
    for (file, mode) in readable_by_others(path) {
        tracing::warn!(
            "database file {} has mode {mode:04o}: other users may read the subscribers' password hashes (HA1); `chmod 600` it unless they should",
            file.display()
        );
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

    fn user_version(c: &Connection) -> Result<i64, StorageError> {
        Ok(c.pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    fn count(storage: &Storage) -> Result<i64, StorageError> {
        storage.read(|c| Ok(c.query_row("SELECT count(*) FROM subscriber", [], |r| r.get(0))?))
    }

    fn insert(storage: &Storage, n: usize) -> Result<usize, StorageError> {
        let wait = Wait {
            to_start: Duration::from_secs(5),
            to_finish: Duration::from_secs(5),
        };
        storage.write_within(wait, move |c| {
            Ok(c.execute(
                "INSERT INTO subscriber VALUES ('t', ?1, 'd', '', '')",
                [n.to_string()],
            )?)
        })
    }

    /// A write that returned is seen by the next read on any thread, file
    /// or memory; readers of different threads have connections of their own.
    #[test]
    fn reads_see_the_writes_before_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        for storage in [
            Storage::open(&dir.path().join("wisp.db")).expect("file"),
            Storage::in_memory().expect("memory"),
        ] {
            assert_eq!(count(&storage).expect("count"), 0);
            std::thread::scope(|s| {
                for t in 0..4 {
                    let storage = &storage;
                    s.spawn(move || {
                        for i in 0..25 {
                            insert(storage, t * 100 + i).expect("insert");
                            // Its own write, at once, on this thread's reader.
                            let found: i64 = storage
                                .read(|c| {
                                    Ok::<_, StorageError>(c.query_row(
                                        "SELECT count(*) FROM subscriber WHERE username = ?1",
                                        [(t * 100 + i).to_string()],
                                        |r| r.get(0),
                                    )?)
                                })
                                .expect("read");
                            assert_eq!(found, 1);
                        }
                    });
                }
            });
            assert_eq!(count(&storage).expect("count"), 100);
            // Readers are read-only: a write on one fails, it does not hide.
            let refused =
                storage.read(|c| Ok::<_, StorageError>(c.execute("DELETE FROM subscriber", [])?));
            assert!(refused.is_err());
            assert_eq!(count(&storage).expect("count"), 100);
        }
    }

    /// Two databases in memory are apart, and one dropped frees its name.
    #[test]
    fn databases_in_memory_are_private() {
        let a = Storage::in_memory().expect("a");
        let b = Storage::in_memory().expect("b");
        insert(&a, 1).expect("insert");
        assert_eq!(count(&a).expect("a"), 1);
        assert_eq!(count(&b).expect("b"), 0);
        drop(a);
        let c = Storage::in_memory().expect("c");
        assert_eq!(count(&c).expect("c"), 0);
    }

    /// A new database and its WAL companions are 0600 whatever the umask;
    /// an existing file others may read is kept as it is, and found.
    #[test]
    fn database_files_are_private() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("wisp.db");
        let storage = Storage::open(&path).expect("open");
        insert(&storage, 1).expect("insert");
        // A reader's connection opens the -shm file too.
        assert_eq!(count(&storage).expect("count"), 1);
        for suffix in ["", "-wal", "-shm"] {
            let file = dir.path().join(format!("wisp.db{suffix}"));
            let mode = std::fs::metadata(&file)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{}: {mode:o}", file.display());
        }
        assert!(readable_by_others(&path).is_empty());
        drop(storage);

        let old = dir.path().join("old.db");
        std::fs::write(&old, b"").expect("old file");
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let storage = Storage::open(&old).expect("open old");
        insert(&storage, 1).expect("insert");
        let found = readable_by_others(&old);
        assert!(found.contains(&(old.clone(), 0o644)), "{found:?}");
        assert_eq!(
            std::fs::metadata(&old).expect("old").mode() & 0o777,
            0o644,
            "left as it was"
        );
    }

    #[test]
    fn migrates_once_and_refuses_newer_schemas() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("wisp.db");
        let storage = Storage::open(&path).expect("open");
        let version: i64 = storage.read(user_version).expect("version");
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
            .write(|c| Ok::<_, StorageError>(c.pragma_update(None, "user_version", 99)?))
            .expect("bump");
        drop(storage);
        let err = Storage::open(&path).err().expect("too new");
        assert!(err.to_string().contains("newer"), "{err}");
    }
}
