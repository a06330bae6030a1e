//! Read-only connections, one per thread that reads.
//!
//! A hook's lookup (bindings, a subscriber's HA1) runs on the receiving
//! thread that called it, on that thread's own connection: no lock is
//! shared with other threads, and in WAL mode a reader never waits for
//! the writer. A read started after a write returned sees it (the writer
//! commits before answering), which is all the read-your-writes a hook
//! needs.
//!
//! A reader also remembers what [`Readers::memo`] read (a subscriber's
//! HA1), for as long as nobody changed the database. This process's own
//! writes are counted by its writer thread and drop the remembered
//! answers at once. Another process's (`wisp user add/del`) show in
//! SQLite's `PRAGMA data_version` on the reading connection, which is
//! asked at most every [`MEMO_RECHECK`]: asking costs a read transaction
//! (SQLite's file locks and a `stat`, three system calls and a shared
//! heap lock), as much as the lookup it would spare, and at 1000
//! registrations a second it was a third of wisp's system calls.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

use super::storage_error::StorageError;
use crate::sip::write::push_decimal;
use crate::transaction::hash::KeyedState;

/// How long a read waits for a lock it cannot take. In WAL mode that is
/// only the moments the log is recovered or reset; a hook must not wait
/// longer than a fraction of its deadline.
const READ_BUSY_TIMEOUT: Duration = Duration::from_millis(100);

/// Page cache of one reader, KiB: there is one reader per thread, and
/// the hot pages (a few bindings, a few subscribers) are few.
const READ_CACHE_KIB: i64 = 512;

/// Answers a thread's reader remembers at most; past it they are all
/// forgotten at once (the hot ones come back with their next lookup).
const MEMO_ENTRIES: usize = 1024;

/// Keys longer than this (all their parts) are never remembered: what
/// peers send bounds no memory.
const MEMO_KEY_BYTES: usize = 512;

/// How long a thread trusts what it remembers without asking SQLite
/// whether another process changed the database: how late a `wisp user`
/// change from another process may be seen.
pub const MEMO_RECHECK: Duration = Duration::from_millis(100);

struct Reader {
    database: u64,
    /// Gone when its database is dropped: the connection is closed the
    /// next time the thread opens one.
    alive: Weak<()>,
    conn: Connection,
    memo: RefCell<Memo>,
}

/// What [`Readers::memo`] read on one connection, while the database's
/// `data_version` (as that connection sees it) is `version` and this
/// process has made `writes` writes.
#[derive(Default)]
struct Memo {
    version: Option<i64>,
    writes: u64,
    /// When `version` was last asked.
    checked: Option<Instant>,
    answers: HashMap<Box<str>, Option<String>, KeyedState>,
    /// The key being looked up, built here to spare an allocation.
    key: String,
}

thread_local! {
    static READERS: RefCell<Vec<Reader>> = const { RefCell::new(Vec::new()) };
}

/// The read side of one database: opens a thread's connection when the
/// thread first reads.
pub struct Readers {
    database: u64,
    alive: Arc<()>,
    /// Writes this process's writer ran (see `Writer::ran`).
    writes: Arc<AtomicU64>,
    /// A path, or a `file:` URI for a shared database in memory.
    target: PathBuf,
}

impl Readers {
    /// `writes`: the count of this process's writes to the database.
    pub fn new(target: PathBuf, writes: Arc<AtomicU64>) -> Readers {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        Readers {
            database: NEXT.fetch_add(1, Ordering::Relaxed),
            alive: Arc::new(()),
            writes,
            target,
        }
    }

    /// Runs `f` on this thread's connection (opened on first use).
    pub fn with<T, E>(&self, f: impl FnOnce(&Connection) -> Result<T, E>) -> Result<T, E>
    where
        E: From<StorageError>,
    {
        self.with_reader(|reader| f(&reader.conn))
    }

    /// The answer of `read` for the key made of `parts`: what this
    /// thread's connection read for the same key before, unless this
    /// process wrote since or another connection committed (`PRAGMA
    /// data_version`, asked at most every [`MEMO_RECHECK`]), else `read`'s
    /// answer on it, remembered. `read` must depend on the key only.
    /// The counts are taken before `read` runs: a commit in between
    /// leaves an answer newer than its counts, dropped at the next ask.
    pub fn memo(
        &self,
        parts: &[&str],
        read: impl FnOnce(&Connection) -> Result<Option<String>, StorageError>,
    ) -> Result<Option<String>, StorageError> {
        self.with_reader(|reader| {
            // Re-entered (a `read` that reads again): no memo then.
            let Ok(mut memo) = reader.memo.try_borrow_mut() else {
                return read(&reader.conn);
            };
            let Memo {
                version: seen,
                writes: seen_writes,
                checked,
                answers,
                key,
            } = &mut *memo;
            let writes = self.writes.load(Ordering::Acquire);
            let now = Instant::now();
            // `checked` is set with `version`: nothing to trust before.
            let trusted = *seen_writes == writes
                && checked.is_some_and(|at| now.saturating_duration_since(at) < MEMO_RECHECK);
            if !trusted {
                let version: i64 = reader
                    .conn
                    .prepare_cached("PRAGMA data_version")?
                    .query_row([], |r| r.get(0))?;
                if *seen != Some(version) || *seen_writes != writes {
                    answers.clear();
                    *seen = Some(version);
                    *seen_writes = writes;
                }
                *checked = Some(now);
            }
            key.clear();
            for part in parts {
                // Length-prefixed: no two lists of parts make one key.
                push_decimal(key, part.len() as u64);
                key.push(':');
                key.push_str(part);
            }
            if let Some(answer) = answers.get(key.as_str()) {
                return Ok(answer.clone());
            }
            let answer = read(&reader.conn)?;
            if key.len() <= MEMO_KEY_BYTES {
                if answers.len() >= MEMO_ENTRIES {
                    answers.clear();
                }
                answers.insert(key.as_str().into(), answer.clone());
            }
            Ok(answer)
        })
    }

    /// Runs `f` on this thread's reader (opened on first use).
    fn with_reader<T, E>(&self, f: impl FnOnce(&Reader) -> Result<T, E>) -> Result<T, E>
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
                    memo: RefCell::default(),
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
                f(reader)
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
