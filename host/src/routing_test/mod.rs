//! `wisp test COMPONENT CASES...`: routing unit tests without a network.
//!
//! A routing component is a pure function of the messages it is handed
//! and the state of the services it calls, so a case needs no socket:
//! seed the services, hand a request (or a response) to a hook, compare
//! what it returned with what the case expects. docs/testing-routing.md
//! is the walkthrough and the format's reference.
//!
//! One idea per file: `format` (the TOML), `message` (SIP text and
//! addresses), `pcap` (messages from captures), `seed` (the services'
//! starting state), `credentials` (digest answers to a challenge), `run`
//! (hooks called, outcomes read), `dialog` (the Record-Route of a
//! dialog, for in-dialog cases), `diff` (expected against got).

mod credentials;
mod dialog;
mod diff;
mod format;
mod message;
mod pcap;
mod run;
mod seed;

use std::io::Write;
use std::path::{Path, PathBuf};

pub use run::Component;

/// What a run came to: the exit status of `wisp test`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every case passed (exit 0).
    Passed,
    /// A case's outcome differs from its expectation (exit 1).
    Failed,
    /// A case file could not be read or a case could not be set up
    /// (exit 2): the file is wrong, whatever the routing does.
    Error,
}

impl Verdict {
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Passed => 0,
            Verdict::Failed => 1,
            Verdict::Error => 2,
        }
    }
}

/// Counts of a run.
#[derive(Debug, Default)]
struct Tally {
    passed: usize,
    failed: usize,
    errors: usize,
}

/// Runs every case of every file against `component`, writing one line
/// per case (and the differences of a failed one) to `out`.
pub fn run_files(component: &Component, files: &[PathBuf], out: &mut impl Write) -> Verdict {
    let mut tally = Tally::default();
    for path in files {
        if let Err(err) = run_file(component, path, out, &mut tally) {
            tally.errors += 1;
            let _ = writeln!(out, "ERROR   {}: {err}", path.display());
        }
    }
    let _ = writeln!(
        out,
        "\n{} cases: {} ok, {} failed{}",
        tally.passed + tally.failed,
        tally.passed,
        tally.failed,
        match tally.errors {
            0 => String::new(),
            n => format!(", {n} not run (errors in the case files)"),
        }
    );
    if tally.errors > 0 {
        Verdict::Error
    } else if tally.failed > 0 {
        Verdict::Failed
    } else {
        Verdict::Passed
    }
}

/// Runs one file's cases in order; an error for a file that cannot run
/// at all.
fn run_file(
    component: &Component,
    path: &Path,
    out: &mut impl Write,
    tally: &mut Tally,
) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let file = format::parse(&text)?;
    if file.cases.is_empty() {
        return Err("no [[case]] in the file".into());
    }
    let mut running = run::FileRun::new(component, &file, path).map_err(|e| e.0)?;
    let shown = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    for (i, case) in file.cases.iter().enumerate() {
        let label = format!("{shown} #{} {}", i + 1, case.name);
        match running.run(i, case) {
            Err(err) => {
                tally.errors += 1;
                let _ = writeln!(out, "ERROR   {label}: {}", err.0);
            }
            Ok(outcome) => {
                let diff = diff::compare(&case.expect, &outcome);
                if diff.is_empty() {
                    tally.passed += 1;
                    let _ = writeln!(out, "ok      {label}");
                } else {
                    tally.failed += 1;
                    let _ = writeln!(out, "FAILED  {label}");
                    for mismatch in &diff {
                        let _ = writeln!(out, "        {mismatch}");
                    }
                    if !outcome.log.is_empty() {
                        let _ = writeln!(
                            out,
                            "        (the hook logged: {})",
                            outcome.log.join(" | ")
                        );
                    }
                }
            }
        }
    }
    Ok(())
}
