//! Why the database cannot be used: one error for the storage, its
//! writer thread and its readers.

use std::path::PathBuf;
use std::time::Duration;

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
    /// The writer's queue is full: the write was refused, nothing written.
    #[error("database writer overloaded ({0} writes waiting)")]
    QueueFull(usize),
    /// The write waited its time in the queue and was withdrawn unstarted:
    /// nothing written.
    #[error("database write not started within {0:?}")]
    Late(Duration),
    /// The write started but had not finished when its caller stopped
    /// waiting: it may yet be applied.
    #[error("database write unfinished {0:?} after it was queued")]
    Unfinished(Duration),
    #[error("database writer dropped the write (stopped, or the write panicked)")]
    WriterGone,
    #[error("database reader of this thread in use (a read inside a read)")]
    ReaderBusy,
    #[error("cannot start the database writer: {0}")]
    Thread(#[from] std::io::Error),
    /// With `[cluster]`, what the database holds alone is in Redis, and
    /// Redis failed (or answered what wisp cannot have written).
    #[error("cluster store: {0}")]
    Cluster(#[from] crate::cluster::ClusterError),
}

impl StorageError {
    /// Nothing was written because the writer is behind: worth a 503
    /// (try again later) rather than a 500.
    pub fn is_overload(&self) -> bool {
        matches!(self, StorageError::QueueFull(_) | StorageError::Late(_))
    }
}
