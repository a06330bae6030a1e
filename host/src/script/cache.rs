//! Compiled components cached on disk, keyed by the component's bytes and
//! by everything in the engine that changes the machine code (wasmtime
//! version, its configuration, the CPU features it targets).
//!
//! A cached artifact is native code that wisp maps and runs without
//! checking it, so whoever can write the cache folder can run code as wisp.
//! The folder is therefore private: created with mode 0700, and used only
//! while it is a directory owned by wisp's effective user that neither the
//! group nor others can write, below folders that others cannot rename it
//! out of (see [`check_private`]). Without such a folder wisp compiles every
//! component at each start and caches nothing; it never falls back to a
//! shared folder such as `/tmp`.

use std::fs::DirBuilder;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::Engine;

/// The `[engine]` section of the configuration file: script engine
/// settings shared by all tenants.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Where compiled components are cached: a private folder (created
    /// 0700; refused when another user owns it or may write it). Default:
    /// `$XDG_CACHE_HOME/wisp` or `$HOME/.cache/wisp`; with neither set,
    /// no cache.
    pub cache_dir: Option<PathBuf>,
}

pub(super) struct CompileCache {
    /// The private folder, when there is one fit for use.
    dir: Option<PathBuf>,
    engine_key: String,
}

/// Why a folder cannot hold the compile cache.
#[derive(Debug, thiserror::Error)]
pub(super) enum CacheDirError {
    #[error("cannot create the folder: {0}")]
    Create(std::io::Error),
    #[error("cannot inspect {path}: {source}")]
    Inspect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("not a directory")]
    NotDirectory,
    #[error("the folder belongs to uid {owner}, not to wisp's effective uid {euid}")]
    Owner { owner: u32, euid: u32 },
    #[error("its group or other users may write the folder (mode {mode:04o})")]
    Writable { mode: u32 },
    #[error("{path} above it may be written by its group or other users (mode {mode:04o}, no sticky bit), who could replace the cache")]
    WritableAncestor { path: PathBuf, mode: u32 },
}

/// Feeds `Hash` output into SHA-256, so the engine's compatibility hash
/// gives a key that is stable across runs (std's hashers are not).
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        0 // unused: the digest is read with finalize
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

impl CompileCache {
    /// The cache in `dir` (the configured `cache_dir`), else in the default
    /// folder. When that folder is missing and cannot be made, or is not
    /// private, or there is no default (neither `XDG_CACHE_HOME` nor
    /// `HOME`), the cache is off: this logs one warning saying why (there
    /// is one engine per process) and components are compiled at each load.
    pub(super) fn new(engine: &Engine, dir: Option<PathBuf>) -> CompileCache {
        let mut hasher = ShaHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_key = hex::encode(&hasher.0.finalize()[..12]);
        let dir = match dir.or_else(default_dir) {
            None => {
                tracing::warn!(
                    "no compile cache: neither XDG_CACHE_HOME nor HOME is set and [engine] cache_dir is not configured; every component is compiled at each start"
                );
                None
            }
            Some(dir) => match prepare(&dir) {
                Ok(()) => {
                    tracing::debug!(dir = %dir.display(), "compile cache");
                    Some(dir)
                }
                Err(err) => {
                    tracing::warn!(
                        dir = %dir.display(),
                        "no compile cache: {err}; every component is compiled at each start"
                    );
                    None
                }
            },
        };
        CompileCache { dir, engine_key }
    }

    /// The folder in use, if any.
    #[cfg(test)]
    pub(super) fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The compiled component: from the cache when present and loadable,
    /// else compiled now and stored. A cache that cannot be written only
    /// costs compile time, so its errors are logged, not returned.
    pub(super) fn component(&self, engine: &Engine, wasm: &[u8]) -> anyhow::Result<Component> {
        let Some(dir) = &self.dir else {
            return Ok(Component::new(engine, wasm)?);
        };
        // Checked again at each load: the folder may have changed since
        // the start (removed, or its mode widened).
        if let Err(err) = check_private(dir, euid()) {
            tracing::warn!(
                dir = %dir.display(),
                "compile cache not used: the folder is no longer private ({err})"
            );
            return Ok(Component::new(engine, wasm)?);
        }
        let key = hex::encode(&Sha256::digest(wasm)[..16]);
        let path = dir.join(format!("{}-{key}.cwasm", self.engine_key));
        if path.exists() {
            // SAFETY: deserializing runs whatever native code the file
            // holds, unchecked. It is sound only because the folder is
            // private, just checked above: owned by this user, writable by
            // no one else, under folders no one else can rename it out of.
            // So the file was written by a wisp of this user, through
            // `precompile_component` of an engine with the same
            // compatibility hash (it is in the name). Never load from a
            // folder that fails `check_private`.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => return Ok(component),
                Err(err) => {
                    tracing::warn!(path = %path.display(), %err, "ignoring unusable compile cache entry")
                }
            }
        }
        let compiled = engine.precompile_component(wasm)?;
        if let Err(err) = write_atomically(dir, &path, &compiled) {
            tracing::warn!(path = %path.display(), %err, "cannot write the compile cache");
        }
        // SAFETY: these bytes were produced just now by this engine.
        Ok(unsafe { Component::deserialize(engine, &compiled) }?)
    }
}

fn write_atomically(dir: &Path, path: &Path, data: &[u8]) -> std::io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    // A leftover of a process that had this id and died mid-write.
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(data)?;
    drop(file);
    std::fs::rename(&tmp, path)
}

/// `$XDG_CACHE_HOME/wisp`, else `$HOME/.cache/wisp`; None without either
/// (as absolute paths; the XDG spec says to ignore a relative one).
fn default_dir() -> Option<PathBuf> {
    default_dir_from(std::env::var_os("XDG_CACHE_HOME"), std::env::var_os("HOME"))
}

fn default_dir_from(
    xdg_cache_home: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> Option<PathBuf> {
    let absolute = |v: std::ffi::OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    if let Some(xdg) = xdg_cache_home.and_then(absolute) {
        return Some(xdg.join("wisp"));
    }
    home.and_then(absolute)
        .map(|home| home.join(".cache").join("wisp"))
}

/// Creates `dir` when missing (mode 0700, parents too) and checks that it
/// is private.
fn prepare(dir: &Path) -> Result<(), CacheDirError> {
    if !dir.exists() {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(CacheDirError::Create)?;
    }
    check_private(dir, euid())
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Whether `dir` is fit to hold native code that wisp will run: a
/// directory (symbolic links followed) owned by `euid`, which neither its
/// group nor others may write, and whose ancestors others may not write
/// either unless they carry the sticky bit (as `/tmp` does: there, others
/// cannot remove or rename what is not theirs). Anyone who can write the
/// folder, or replace it, can make wisp run their code.
pub(super) fn check_private(dir: &Path, euid: u32) -> Result<(), CacheDirError> {
    let inspect = |path: &Path| {
        std::fs::metadata(path).map_err(|source| CacheDirError::Inspect {
            path: path.to_owned(),
            source,
        })
    };
    let meta = inspect(dir)?;
    if !meta.is_dir() {
        return Err(CacheDirError::NotDirectory);
    }
    if meta.uid() != euid {
        return Err(CacheDirError::Owner {
            owner: meta.uid(),
            euid,
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(CacheDirError::Writable { mode });
    }
    // The folders above, as the kernel resolves them (links followed).
    let real = std::fs::canonicalize(dir).map_err(|source| CacheDirError::Inspect {
        path: dir.to_owned(),
        source,
    })?;
    for ancestor in real.ancestors().skip(1) {
        let mode = inspect(ancestor)?.mode() & 0o7777;
        if mode & 0o022 != 0 && mode & 0o1000 == 0 {
            return Err(CacheDirError::WritableAncestor {
                path: ancestor.to_owned(),
                mode,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    #[test]
    fn default_folder_follows_xdg_then_home_and_never_tmp() {
        let some = |s: &str| Some(OsString::from(s));
        assert_eq!(
            default_dir_from(some("/x/cache"), some("/home/a")),
            Some(PathBuf::from("/x/cache/wisp"))
        );
        assert_eq!(
            default_dir_from(None, some("/home/a")),
            Some(PathBuf::from("/home/a/.cache/wisp"))
        );
        // Empty or relative values count as unset.
        assert_eq!(
            default_dir_from(some(""), some("/home/a")),
            Some(PathBuf::from("/home/a/.cache/wisp"))
        );
        assert_eq!(
            default_dir_from(some("rel"), some("/home/a")),
            Some(PathBuf::from("/home/a/.cache/wisp"))
        );
        assert_eq!(default_dir_from(None, None), None);
        assert_eq!(default_dir_from(some(""), some("")), None);
        assert_eq!(default_dir_from(None, some("relative")), None);
    }

    #[test]
    fn a_missing_folder_is_made_private() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("a/b/wisp");
        prepare(&dir).expect("made and private");
        for made in [root.path().join("a"), root.path().join("a/b"), dir.clone()] {
            let mode = std::fs::metadata(&made).expect("made").mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", made.display());
        }
        // An existing private folder is used as it is (0755 is readable by
        // others, which exposes nothing: only writing matters).
        chmod(&dir, 0o755);
        prepare(&dir).expect("still private");
    }

    #[test]
    fn folders_others_may_write_are_refused() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("wisp");
        prepare(&dir).expect("private");
        for mode in [0o770, 0o707, 0o720, 0o702, 0o1777] {
            chmod(&dir, mode);
            let err = check_private(&dir, euid()).expect_err("writable by others");
            assert!(
                matches!(err, CacheDirError::Writable { .. }),
                "{mode:o}: {err}"
            );
        }
        chmod(&dir, 0o700);
        // Owned by someone else.
        let err = check_private(&dir, euid().wrapping_add(1)).expect_err("not ours");
        assert!(matches!(err, CacheDirError::Owner { .. }), "{err}");
        // A file, or nothing at all.
        let file = root.path().join("file");
        std::fs::write(&file, b"").expect("file");
        assert!(matches!(
            check_private(&file, euid()),
            Err(CacheDirError::NotDirectory)
        ));
        assert!(matches!(
            check_private(&root.path().join("none"), euid()),
            Err(CacheDirError::Inspect { .. })
        ));
    }

    #[test]
    fn a_folder_others_can_replace_is_refused() {
        let root = tempfile::tempdir().expect("tempdir");
        let shared = root.path().join("shared");
        let dir = shared.join("wisp");
        prepare(&dir).expect("private");
        // Others may write the folder above: they could rename ours away
        // and put theirs in its place.
        chmod(&shared, 0o777);
        let err = check_private(&dir, euid()).expect_err("replaceable");
        assert!(
            matches!(&err, CacheDirError::WritableAncestor { path, .. } if path.ends_with("shared")),
            "{err}"
        );
        // With the sticky bit (as /tmp), they cannot.
        chmod(&shared, 0o1777);
        check_private(&dir, euid()).expect("sticky parent");
        // Through a symbolic link, the folders checked are the real ones.
        chmod(&shared, 0o777);
        let link = root.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).expect("symlink");
        assert!(check_private(&link, euid()).is_err());
        chmod(&shared, 0o700);
        check_private(&link, euid()).expect("private through the link");
    }

    #[test]
    fn an_unfit_folder_turns_the_cache_off() {
        let engine = Engine::default();
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("wisp");
        let cache = CompileCache::new(&engine, Some(dir.clone()));
        assert_eq!(cache.dir(), Some(dir.as_path()));
        chmod(&dir, 0o777);
        let cache = CompileCache::new(&engine, Some(dir.clone()));
        assert_eq!(cache.dir(), None);
        // Off, it still compiles, and writes nothing.
        let wasm = wat_component();
        cache.component(&engine, &wasm).expect("compiled");
        assert_eq!(std::fs::read_dir(&dir).expect("dir").count(), 0);
    }

    #[test]
    fn a_private_folder_caches_and_one_gone_public_is_skipped() {
        let engine = Engine::default();
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("wisp");
        let cache = CompileCache::new(&engine, Some(dir.clone()));
        let wasm = wat_component();
        cache.component(&engine, &wasm).expect("compiled");
        let entries: Vec<_> = std::fs::read_dir(&dir)
            .expect("dir")
            .map(|e| e.expect("entry").path())
            .collect();
        assert_eq!(entries.len(), 1, "{entries:?}");
        assert_eq!(
            std::fs::metadata(&entries[0]).expect("entry").mode() & 0o777,
            0o600
        );
        // Someone widened the folder after the start: its entries are no
        // longer trusted (a corrupt one would fail loading if they were).
        std::fs::write(&entries[0], b"planted").expect("overwrite");
        chmod(&dir, 0o777);
        cache
            .component(&engine, &wasm)
            .expect("compiled again, not loaded");
        assert_eq!(std::fs::read(&entries[0]).expect("entry"), b"planted");
    }

    /// The smallest component: no imports, no exports.
    fn wat_component() -> Vec<u8> {
        // (component) in the binary format: magic, version 0x0d, layer 1.
        b"\0asm\x0d\0\x01\0".to_vec()
    }
}
