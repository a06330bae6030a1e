//! The one thread that writes to the database.
//!
//! Hooks run on the proxy's receiving threads; a write there used to take
//! the process-wide connection lock, so one slow commit held up every
//! thread that touched storage. Now every write is a job sent through a
//! bounded queue to a thread that owns the writing connection: the caller
//! waits for its own job only, never for a lock other readers hold, and a
//! full queue or a stalled disk costs the caller an error within its wait,
//! not an unbounded block. One writer also means writes never meet
//! `SQLITE_BUSY` among themselves, and that two REGISTERs of one address
//! of record are checked and applied one after the other, in the order
//! they were queued.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::storage_error::StorageError;

/// Writes waiting at most; past it a hook's write is refused at once
/// (`StorageError::QueueFull`). A write is a few tens of microseconds, so
/// a full queue is tens of milliseconds of work: more would only make
/// callers time out waiting.
pub const QUEUE_CAPACITY: usize = 1024;

// Where a job is: a caller that stops waiting while its job is still
// queued takes it back (the writer skips it), so "not started" is a
// promise that nothing was written.
const QUEUED: u8 = 0;
const RUNNING: u8 = 1;
const WITHDRAWN: u8 = 2;

/// How long a hook waits for its write, counted from when it is queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wait {
    /// For the writer to take the write up; past it the write is
    /// withdrawn, nothing written.
    pub to_start: Duration,
    /// For the write to be done once started.
    pub to_finish: Duration,
}

impl Wait {
    /// A hook's write. The writer should take it up within microseconds;
    /// a quarter of a second means the queue is stuck behind a stalled
    /// disk, and the guest can still answer 503 (`Retry-After`) in time.
    /// A started write's result is what the answer says (200 or 500), so
    /// it is worth up to a second: under load a 2-core machine can leave
    /// the writer thread unscheduled for tens of milliseconds, and a
    /// registration must not fail for that. The hook's deadline does not
    /// count this time (see `script::call::StorageTime`); the receiving
    /// thread running the hook does wait it.
    pub const HOOK: Wait = Wait {
        to_start: Duration::from_millis(250),
        to_finish: Duration::from_secs(1),
    };
}

struct Job {
    state: Arc<AtomicU8>,
    run: Box<dyn FnOnce(&mut Connection) + Send>,
}

/// The writer thread and its queue. Dropping it lets the thread finish
/// the writes already queued, then waits for it (the connection closes).
pub struct Writer {
    queue: Option<SyncSender<Job>>,
    thread: Option<JoinHandle<()>>,
    capacity: usize,
    /// Writes run, counted before their callers hear of them: readers
    /// that remember answers drop them when it moves.
    ran: Arc<AtomicU64>,
}

impl Writer {
    /// Starts the thread `wisp-db-writer` owning `conn`, with room for
    /// `capacity` waiting writes.
    pub fn spawn(conn: Connection, capacity: usize) -> std::io::Result<Writer> {
        let (queue, jobs) = mpsc::sync_channel::<Job>(capacity);
        let thread = std::thread::Builder::new()
            .name("wisp-db-writer".into())
            .spawn(move || run(conn, jobs))?;
        Ok(Writer {
            queue: Some(queue),
            thread: Some(thread),
            capacity,
            ran: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The count of writes run (committed or not), which moves before a
    /// write's caller gets its result.
    pub fn ran(&self) -> Arc<AtomicU64> {
        self.ran.clone()
    }

    /// Runs `f` on the writer's connection and returns its result.
    ///
    /// With `wait` (a hook's call): refused at once when the queue is
    /// full; withdrawn unstarted when the writer has not taken it up
    /// within `wait.to_start` ([`StorageError::Late`]); once started,
    /// waited for until `wait.to_finish`, then given up with its outcome
    /// unknown ([`StorageError::Unfinished`]). Without (maintenance, the
    /// command line): waits for room and for the result however long they
    /// take.
    pub fn submit<T, F>(&self, wait: Option<Wait>, f: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> T + Send + 'static,
    {
        let queue = self.queue.as_ref().ok_or(StorageError::WriterGone)?;
        let (reply, result) = mpsc::sync_channel(1);
        let state = Arc::new(AtomicU8::new(QUEUED));
        let ran = self.ran.clone();
        let job = Job {
            state: state.clone(),
            run: Box::new(move |conn| {
                let value = f(conn);
                ran.fetch_add(1, Ordering::Release);
                // The caller may have stopped waiting: nobody to tell.
                let _ = reply.send(value);
            }),
        };
        let Some(wait) = wait else {
            queue.send(job).map_err(|_| StorageError::WriterGone)?;
            // Disconnected: the job was dropped unrun or panicked.
            return result.recv().map_err(|_| StorageError::WriterGone);
        };
        let submitted = Instant::now();
        queue.try_send(job).map_err(|err| match err {
            TrySendError::Full(_) => StorageError::QueueFull(self.capacity),
            TrySendError::Disconnected(_) => StorageError::WriterGone,
        })?;
        match result.recv_timeout(wait.to_start) {
            Ok(value) => return Ok(value),
            Err(RecvTimeoutError::Disconnected) => return Err(StorageError::WriterGone),
            Err(RecvTimeoutError::Timeout) => {}
        }
        if state
            .compare_exchange(QUEUED, WITHDRAWN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            return Err(StorageError::Late(wait.to_start));
        }
        // Started: a write takes microseconds unless the disk or the CPU is
        // slow to serve it, and its result decides the answer (200 or 500):
        // worth the rest of the wait.
        let left = wait.to_finish.saturating_sub(submitted.elapsed());
        match result.recv_timeout(left) {
            Ok(value) => Ok(value),
            Err(RecvTimeoutError::Disconnected) => Err(StorageError::WriterGone),
            Err(RecvTimeoutError::Timeout) => Err(StorageError::Unfinished(wait.to_finish)),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            // Not from the writer itself (a job holding the last Storage):
            // joining there would wait for ever.
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

fn run(mut conn: Connection, jobs: mpsc::Receiver<Job>) {
    while let Ok(job) = jobs.recv() {
        if job
            .state
            .compare_exchange(QUEUED, RUNNING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            tracing::debug!("storage write withdrawn by its caller before it started");
            continue;
        }
        let run = job.run;
        // A panic costs that write (its caller sees the writer gone for
        // it), not the thread every later write needs.
        if catch_unwind(AssertUnwindSafe(|| run(&mut conn))).is_err() {
            tracing::error!("a storage write panicked");
        }
        // A write must not leave a transaction open: every later write
        // would become part of it.
        if !conn.is_autocommit() {
            tracing::error!("a storage write left a transaction open; rolled back");
            if let Err(err) = conn.execute_batch("ROLLBACK") {
                tracing::error!(%err, "cannot roll back");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    fn writer(capacity: usize) -> Writer {
        let conn = Connection::open_in_memory().expect("memory");
        conn.execute_batch("CREATE TABLE t (n INTEGER)")
            .expect("table");
        Writer::spawn(conn, capacity).expect("spawn")
    }

    fn wait(to_start_ms: u64, to_finish_ms: u64) -> Wait {
        Wait {
            to_start: Duration::from_millis(to_start_ms),
            to_finish: Duration::from_millis(to_finish_ms),
        }
    }

    fn count(w: &Writer) -> i64 {
        w.submit(None, |c| {
            c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        })
        .expect("submitted")
        .expect("counted")
    }

    #[test]
    fn jobs_run_in_the_order_queued() {
        let w = Arc::new(writer(64));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let w = w.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        w.submit(Some(wait(10_000, 10_000)), move |c| {
                            c.execute("INSERT INTO t VALUES (?1)", [t * 1000 + i])
                        })
                        .expect("queued")
                        .expect("inserted");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(count(&w), 200);
        // Each thread's writes are in its own order: rowids follow the queue.
        let rows: Vec<i64> = w
            .submit(None, |c| {
                let mut s = c.prepare("SELECT n FROM t ORDER BY rowid")?;
                let rows = s.query_map([], |r| r.get(0))?;
                rows.collect::<rusqlite::Result<Vec<i64>>>()
            })
            .expect("submitted")
            .expect("rows");
        for t in 0..4 {
            let mine: Vec<i64> = rows.iter().copied().filter(|n| n / 1000 == t).collect();
            assert!(mine.windows(2).all(|p| p[0] < p[1]), "{mine:?}");
        }
    }

    #[test]
    fn late_jobs_are_withdrawn_and_a_full_queue_refuses() {
        let w = writer(1);
        let (go, wait_go) = channel::<()>();
        let (started, is_started) = channel::<()>();
        std::thread::scope(|s| {
            let w = &w;
            // Hold the writer in a job until told to go on.
            s.spawn(move || {
                w.submit(None, move |_| {
                    started.send(()).expect("started");
                    wait_go.recv().expect("go");
                })
                .expect("blocking job")
            });
            is_started.recv().expect("writer busy");
            let short = wait(20, 20);
            // The writer is busy: this one waits in the queue, then is withdrawn.
            let late = w.submit(Some(short), |c| c.execute("INSERT INTO t VALUES (1)", []));
            assert!(matches!(late, Err(StorageError::Late(_))), "{late:?}");
            assert!(late.err().is_some_and(|e| e.is_overload()));
            // Its place stays taken until the writer skips it: full.
            let full = w.submit(Some(short), |c| c.execute("INSERT INTO t VALUES (2)", []));
            assert!(matches!(full, Err(StorageError::QueueFull(1))), "{full:?}");
            assert!(full.err().is_some_and(|e| e.is_overload()));
            go.send(()).expect("go");
        });
        // The withdrawn insert never ran.
        assert_eq!(count(&w), 0);
    }

    /// A started write is waited for past `to_start`, up to `to_finish`.
    #[test]
    fn a_started_job_is_waited_for() {
        let w = writer(4);
        let out = w.submit(Some(wait(300, 5_000)), |c| {
            std::thread::sleep(Duration::from_millis(400));
            c.execute("INSERT INTO t VALUES (1)", [])
        });
        assert_eq!(out.expect("done").expect("inserted"), 1);
    }

    #[test]
    fn a_running_job_past_the_wait_is_unfinished() {
        let w = writer(4);
        let (go, wait_go) = channel::<()>();
        let out = w.submit(Some(wait(300, 400)), move |c| {
            // Held until the caller has given up.
            wait_go.recv().expect("go");
            c.execute("INSERT INTO t VALUES (1)", [])
        });
        assert!(matches!(out, Err(StorageError::Unfinished(_))), "{out:?}");
        assert!(!out.err().is_some_and(|e| e.is_overload()));
        go.send(()).expect("go");
        // It did finish, later: the outcome was unknown, not a failure.
        assert_eq!(count(&w), 1);
    }

    #[test]
    fn errors_and_panics_reach_the_caller_and_the_writer_goes_on() {
        let w = writer(4);
        let err = w
            .submit(Some(wait(5_000, 5_000)), |c| {
                c.execute("INSERT INTO missing VALUES (1)", [])
            })
            .expect("ran");
        assert!(err.is_err());
        let panicked = w.submit::<(), _>(Some(wait(5_000, 5_000)), |_| {
            panic!("a bug in a write");
        });
        assert!(matches!(panicked, Err(StorageError::WriterGone)));
        // A transaction left open is rolled back, not joined by the next write.
        w.submit(None, |c| {
            c.execute_batch("BEGIN; INSERT INTO t VALUES (7);")
        })
        .expect("ran")
        .expect("begun");
        assert_eq!(count(&w), 0);
        w.submit(None, |c| c.execute("INSERT INTO t VALUES (8)", []))
            .expect("ran")
            .expect("inserted");
        assert_eq!(count(&w), 1);
    }
}
