//! Routing components built for the tests: Rust guests with wisp-sdk,
//! TypeScript ones with sdk-js (cached and precompiled), and the choice of
//! default routing a test runs against.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{repo_root, wisp_binary, Tenant};

/// Builds a routing component from Rust source with wisp-sdk, the way a
/// user would: a cdylib crate built for wasm32-wasip2. Returns the .wasm path.
pub fn build_guest(name: &str, lib_rs: &str) -> Result<PathBuf> {
    // Tests of one binary run at once: one build at a time, so that no
    // test rewrites a crate another is building.
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    let root = repo_root();
    let crate_dir = root.join("target/e2e-guests/src").join(name);
    std::fs::create_dir_all(crate_dir.join("src"))?;
    std::fs::write(
        crate_dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
             [lib]\ncrate-type = [\"cdylib\"]\n\n\
             [dependencies]\nwisp-sdk = {{ path = \"{sdk}\" }}\n\n\
             [profile.release]\nopt-level = \"s\"\n\n[workspace]\n",
            sdk = root.join("sdk-rust").display()
        ),
    )?;
    std::fs::write(crate_dir.join("src/lib.rs"), lib_rs)?;
    let target_dir = root.join("target/e2e-guests/target");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(crate_dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("building guest {name} failed");
    }
    let wasm = target_dir
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", name.replace('-', "_")));
    if !wasm.exists() {
        bail!("{} was not produced", wasm.display());
    }
    Ok(wasm)
}

/// Which build of the default routing a test runs against: the Rust one
/// bundled into the binary (guests/default), or the TypeScript port
/// (guests/default-js) built with sdk-js.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routing {
    Rust,
    Js,
}

impl Routing {
    /// The tenant that runs this routing. For JS, the component is built
    /// (or taken from the cache) and precompiled first.
    pub fn tenant(self) -> Result<Tenant> {
        match self {
            Routing::Rust => Ok(Tenant::new("default")),
            Routing::Js => Ok(Tenant::new("default-js").component(&default_js_component()?)),
        }
    }

    /// [`Routing::tenant`]'s `[[tenant]]` section.
    pub fn tenant_toml(self) -> Result<String> {
        Ok(self.tenant()?.to_toml())
    }

    /// [`Routing::tenant_toml`] with tenant params, given as (KEY, value).
    pub fn tenant_with_params(self, params: &[(&str, &str)]) -> Result<String> {
        let tenant = params
            .iter()
            .fold(self.tenant()?, |t, (k, v)| t.param(k, v));
        Ok(tenant.to_toml())
    }
}

/// guests/default-js built to a component with its build script, once per
/// test process. See [`cached_js_build`] for the caching.
pub fn default_js_component() -> Result<PathBuf> {
    static BUILT: OnceLock<Mutex<Option<PathBuf>>> = OnceLock::new();
    let mut built = BUILT
        .get_or_init(|| Mutex::new(None))
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(path) = built.as_ref() {
        return Ok(path.clone());
    }
    let root = repo_root();
    let script = root.join("guests/default-js/build.sh");
    let wasm = cached_js_build(
        "default-js",
        &[root.join("guests/default-js/route.ts"), script.clone()],
        |out| {
            let status = Command::new("bash")
                .arg(&script)
                .arg(out)
                .stdin(Stdio::null())
                .status()
                .context("cannot run guests/default-js/build.sh (needs node and npm)")?;
            if !status.success() {
                bail!("guests/default-js/build.sh failed ({status})");
            }
            Ok(())
        },
    )?;
    *built = Some(wasm.clone());
    Ok(wasm)
}

/// Builds a routing component from TypeScript source with sdk-js, the way
/// a user would (`wisp-js build route.ts -o route.wasm`). Returns the .wasm
/// path; see [`cached_js_build`] for the caching.
pub fn build_js_guest(name: &str, route_ts: &str) -> Result<PathBuf> {
    let root = repo_root();
    let src = root.join("target/e2e-js/src").join(name);
    std::fs::create_dir_all(&src)?;
    let source = src.join("route.ts");
    if std::fs::read_to_string(&source).ok().as_deref() != Some(route_ts) {
        std::fs::write(&source, route_ts)?;
    }
    cached_js_build(name, std::slice::from_ref(&source), |out| {
        ensure_sdk_js()?;
        let status = Command::new("node")
            .arg(root.join("sdk-js/bin/wisp-js.mjs"))
            .arg("build")
            .arg(&source)
            .arg("-o")
            .arg(out)
            .stdin(Stdio::null())
            .status()
            .context("cannot run node")?;
        if !status.success() {
            bail!("wisp-js build of {name} failed ({status})");
        }
        Ok(())
    })
}

/// `npm ci` in sdk-js when its node_modules is missing or older than the
/// lock file (tests/run.sh does it up front; this covers a bare `cargo test`).
fn ensure_sdk_js() -> Result<()> {
    let sdk = repo_root().join("sdk-js");
    let modified = |p: PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let installed = modified(sdk.join("node_modules/.package-lock.json"));
    let locked = modified(sdk.join("package-lock.json"));
    if installed.is_some() && installed >= locked {
        return Ok(());
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&sdk)
        .stdin(Stdio::null())
        .status()
        .context("cannot run npm (install node and npm)")?;
    if !status.success() {
        bail!("npm ci in sdk-js failed ({status})");
    }
    Ok(())
}

/// A JS component built by `build` into a temporary path, kept in
/// target/e2e-js under a hash of everything that goes into it (`sources`,
/// sdk-js, its package-lock, the WIT), so a second test run does not
/// rebuild it. The compiled machine code is then cached by wisp itself in
/// target/e2e-cache: it is precompiled here with `wisp check`, so that
/// tests starting wisp in parallel do not all compile it at once.
pub fn cached_js_build(
    name: &str,
    sources: &[PathBuf],
    build: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    let root = repo_root();
    let mut files = sources.to_vec();
    files.extend(
        [
            "sdk-js/src/index.ts",
            "sdk-js/bin/wisp-js.mjs",
            "sdk-js/package.json",
            "sdk-js/package-lock.json",
        ]
        .iter()
        .map(|f| root.join(f)),
    );
    files.extend(wit_files(&root.join("wit"))?);
    let key = hash_files(&files)?;
    let dir = root.join("target/e2e-js");
    let wasm = dir.join(format!("{name}-{key:016x}.wasm"));
    if !wasm.exists() {
        std::fs::create_dir_all(&dir)?;
        let tmp = dir.join(format!("{name}-{key:016x}.tmp{}.wasm", std::process::id()));
        let started = Instant::now();
        build(&tmp)?;
        std::fs::rename(&tmp, &wasm)?;
        eprintln!(
            "built {} in {:.1} s",
            wasm.display(),
            started.elapsed().as_secs_f64()
        );
    }
    let took = precompile(&wasm, &repo_root().join("target/e2e-cache"))?;
    eprintln!(
        "wisp check loaded {} in {:.1} s",
        wasm.display(),
        took.as_secs_f64()
    );
    Ok(wasm)
}

/// Loads a component with `wisp check`, which compiles it into `cache`
/// (the tests' is target/e2e-cache) unless it is there, and instantiates
/// it once; how long that took.
pub fn precompile(wasm: &Path, cache: &Path) -> Result<Duration> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("check.toml");
    std::fs::write(
        &config,
        format!(
            "[[listen]]\ntransport = \"udp\"\naddress = \"127.0.0.1:5060\"\n\n\
             [engine]\ncache_dir = \"{cache}\"\n\n\
             [[tenant]]\nname = \"precompile\"\ncomponent = \"{wasm}\"\n",
            cache = cache.display(),
            wasm = wasm.display(),
        ),
    )?;
    let started = Instant::now();
    let output = Command::new(wisp_binary()?)
        .arg("check")
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .output()
        .context("cannot run wisp check")?;
    if !output.status.success() {
        bail!(
            "wisp check refused {}:\n{}",
            wasm.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(started.elapsed())
}

fn wit_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "wit"))
        .collect();
    files.sort();
    Ok(files)
}

/// A cache key over file names and contents (std's SipHash with fixed
/// keys: stable for a given toolchain, which is all a build cache needs).
fn hash_files(files: &[PathBuf]) -> Result<u64> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for file in files {
        file.file_name().hash(&mut hasher);
        std::fs::read(file)
            .with_context(|| format!("cannot read {}", file.display()))?
            .hash(&mut hasher);
    }
    Ok(hasher.finish())
}

/// A trunk's routing, for [`build_guest`]: relays every initial request to
/// the tenant param NEXT (when set; a SIP URI, its transport parameter
/// chooses the hop's transport) and record-routes INVITEs; in-dialog
/// requests follow their Route set.
pub const TRUNK_GUEST: &str = r#"
use wisp_sdk::prelude::*;

struct Trunk;

impl Router for Trunk {
    fn route(req: &Request) -> Flow {
        if req.in_dialog() {
            req.loose_route();
            return req.relay();
        }
        if *req.method() == Method::Invite {
            req.record_route()?;
        }
        match config::param("NEXT").filter(|n| !n.is_empty()) {
            Some(next) if !matches!(req.method(), Method::Ack | Method::Cancel) => req.relay_to(&next),
            _ => req.relay(),
        }
    }
}

wisp_sdk::export_router!(Trunk);
"#;
