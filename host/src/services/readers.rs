//! Read-only connections, one per thread that reads.
//!
//! A hook's lookup (bindings, a subscriber's HA1) runs on the receiving
//! thread that called it, on that thread's own connection: no lock is
//! shared with other threads, and in WAL mode a reader never waits for
//! the writer. A read started after a write returned sees it (the writer
//! commits before answering), which is all the read-your-writes a hook
//! needs.

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::storage_error::StorageError;

/// How long a read waits for a lock it cannot take. In WAL mode that is
/// only the moments the log is recovered or reset; a hook must not wait
/// longer than a fraction of its deadline.
const READ_BUSY_TIMEOUT: Duration = Duration::from_millis(100);

/// Page cache of one reader, KiB: there is one reader per thread, and
/// the hot pages (a few bindings, a few subscribers) are few.
const READ_CACHE_KIB: i64 = 512;

struct Reader {
    database: u64,
    /// Gone when its database is dropped: the connection is closed the
    /// next time the thread opens one.
    alive: Weak<()>,
    conn: Connection,
}

thread_local! {
    static READERS: RefCell<Vec<Reader>> = const { RefCell::new(Vec::new()) };
}

/// The read side of one database: opens a thread's connection when the
/// thread first reads.
pub struct Readers {
    database: u64,
    alive: Arc<()>,
    /// A path, or a `file:` URI for a shared database in memory.
    target: PathBuf,
}

impl Readers {
    pub fn new(target: PathBuf) -> Readers {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        Readers {
            database: NEXT.fetch_add(1, Ordering::Relaxed),
            alive: Arc::new(()),
            target,
        }
    }

    /// Runs `f` on this thread's connection (opened on first use).
    pub fn with<T, E>(&self, f: impl FnOnce(&Connection) -> Result<T, E>) -> Result<T, E>
    where
        E: From<StorageError>,
    {
        let opened = READERS
            .try_with(|cell| -> Result<(), StorageError> {
                if cell.borrow().iter().any(|r| r.database == self.database) {
                    return Ok(());
                }
                let conn = self.open()?;
                let mut readers = cell
                    .try_borrow_mut()
                    .map_err(|_| StorageError::ReaderBusy)?;
                readers.retain(|r| r.alive.strong_count() > 0);
                readers.push(Reader {
                    database: self.database,
                    alive: Arc::downgrade(&self.alive),
                    conn,
                });
                Ok(())
            })
            .map_err(|_| StorageError::ReaderBusy)?;
        opened?;
        READERS
            .try_with(|cell| {
                let readers = cell.borrow();
                let reader = readers
                    .iter()
                    .find(|r| r.database == self.database)
                    .ok_or(StorageError::ReaderBusy)?;
                f(&reader.conn)
            })
            .map_err(|_| StorageError::ReaderBusy)?
    }

    fn open(&self) -> Result<Connection, StorageError> {
        let open_err = |source| StorageError::Open {
            path: self.target.clone(),
            source,
        };
        let conn = Connection::open_with_flags(
            &self.target,
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_URI
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open_err)?;
        conn.busy_timeout(READ_BUSY_TIMEOUT).map_err(open_err)?;
        conn.pragma_update(None, "cache_size", -READ_CACHE_KIB)
            .map_err(open_err)?;
        Ok(conn)
    }
}
