//! Compiled components cached on disk, keyed by the component's bytes and
//! by everything in the engine that changes the machine code (wasmtime
//! version, its configuration, the CPU features it targets).

use std::hash::{Hash, Hasher};
use std::path::PathBuf;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::Engine;

/// The `[engine]` section of the configuration file: script engine
/// settings shared by all tenants.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Where compiled components are cached. Default: `$XDG_CACHE_HOME/wisp`
    /// or `~/.cache/wisp`, else a folder under the system temp dir.
    pub cache_dir: Option<PathBuf>,
}

pub(super) struct CompileCache {
    dir: Option<PathBuf>,
    engine_key: String,
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
    pub(super) fn new(engine: &Engine, dir: Option<PathBuf>) -> CompileCache {
        let mut hasher = ShaHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_key = hex::encode(&hasher.0.finalize()[..12]);
        let dir = dir.or_else(default_dir);
        CompileCache { dir, engine_key }
    }

    /// The compiled component: from the cache when present and loadable,
    /// else compiled now and stored. A cache that cannot be written only
    /// costs compile time, so its errors are logged, not returned.
    pub(super) fn component(&self, engine: &Engine, wasm: &[u8]) -> anyhow::Result<Component> {
        let Some(dir) = &self.dir else {
            return Ok(Component::new(engine, wasm)?);
        };
        let key = hex::encode(&Sha256::digest(wasm)[..16]);
        let path = dir.join(format!("{}-{key}.cwasm", self.engine_key));
        if path.exists() {
            // SAFETY: the file was written by `precompile_component` of an
            // engine with the same compatibility hash (it is in the name),
            // into a folder that belongs to wisp.
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

fn write_atomically(dir: &PathBuf, path: &PathBuf, data: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
}

fn default_dir() -> Option<PathBuf> {
    if let Some(xdg) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(xdg).join("wisp"));
    }
    if let Some(home) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(home).join(".cache").join("wisp"));
    }
    Some(std::env::temp_dir().join("wisp-cache"))
}
