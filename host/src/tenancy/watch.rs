//! `[reload] watch = true`: a configuration reload whenever the
//! configuration file or a tenant's component file changes on disk.
//!
//! Folders are watched rather than files, since editors and build tools
//! replace a file (write a new one, rename it over) more often than they
//! write into it. Events are gathered until the folder has been quiet for
//! a moment, so that one save makes one reload.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use notify::{RecursiveMode, Watcher};

use super::Tenancy;

/// How long the files must be left alone before a reload.
const QUIET: Duration = Duration::from_millis(300);

/// Starts the watching thread; it lives as long as the process.
pub fn spawn(tenancy: Arc<Tenancy>) -> anyhow::Result<()> {
    let (tx, rx) = channel();
    let mut watcher = notify::recommended_watcher(tx).context("cannot watch files")?;
    let mut folders = BTreeSet::new();
    let mut files = tenancy.watched_files();
    watch_folders(&mut watcher, &files, &mut folders)?;
    std::thread::Builder::new()
        .name("wisp-watch".into())
        .spawn(move || loop {
            let Ok(event) = rx.recv() else { return };
            tracing::trace!(?event, "file event");
            if !touches(&event, &files) {
                continue;
            }
            // Let the writer finish: wait until our files have been quiet
            // for a moment (other files in the folder, a database say, may
            // never be).
            let mut last_change = Instant::now();
            loop {
                let left = QUIET.saturating_sub(last_change.elapsed());
                if left.is_zero() {
                    break;
                }
                match rx.recv_timeout(left) {
                    Ok(event) if touches(&event, &files) => last_change = Instant::now(),
                    Ok(_) | Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
            tracing::info!("a watched file changed: reloading the configuration");
            // A refused reload is logged by reload_config; the next change
            // tries again.
            let _ = tenancy.reload_config();
            files = tenancy.watched_files();
            if let Err(err) = watch_folders(&mut watcher, &files, &mut folders) {
                tracing::warn!(err = %format!("{err:#}"), "cannot watch a new folder");
            }
        })
        .context("cannot start the watching thread")?;
    Ok(())
}

fn watch_folders(
    watcher: &mut impl Watcher,
    files: &[PathBuf],
    folders: &mut BTreeSet<PathBuf>,
) -> anyhow::Result<()> {
    for file in files {
        let folder = folder_of(file).to_path_buf();
        if folders.insert(folder.clone()) {
            watcher
                .watch(&folder, RecursiveMode::NonRecursive)
                .with_context(|| format!("cannot watch {}", folder.display()))?;
        }
    }
    Ok(())
}

/// Whether an event changed one of the files (reads, ours included, do
/// not count; a watcher error counts, to be safe).
fn touches(event: &notify::Result<notify::Event>, files: &[PathBuf]) -> bool {
    match event {
        Ok(event) => {
            let kind = event.kind;
            (kind.is_modify() || kind.is_create() || kind.is_remove())
                && event
                    .paths
                    .iter()
                    .any(|p| files.iter().any(|f| same_file(p, f)))
        }
        Err(_) => true,
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    a == b || (a.file_name() == b.file_name() && canonical_parent(a) == canonical_parent(b))
}

fn canonical_parent(p: &Path) -> Option<PathBuf> {
    std::fs::canonicalize(folder_of(p)).ok()
}

/// The folder a file is in; "." for a bare file name.
fn folder_of(file: &Path) -> &Path {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}
