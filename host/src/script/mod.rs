//! The script engine: routing components run in wasmtime.
//!
//! One [`ScriptEngine`] per process compiles components (cached on disk)
//! and links the host API; each tenant gets a [`Pool`] of warm instances
//! of its component, checked out for one hook call at a time.

mod cache;
mod call;
mod decide;
mod dispatcher_api;
mod fields;
mod health;
mod host_api;
mod limits;
mod pool;
mod ratelimit_api;
mod services_api;
mod watchdog;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine};

pub use cache::EngineConfig;
pub use call::{Domains, Guest, HookError, LogCapture, ResponseCtx};
pub use health::{HealthCounts, HookTime};
pub use limits::Limits;
pub use pool::Pool;

wasmtime::component::bindgen!({
    path: "../wit",
    world: "router",
    with: {
        "wisp:proxy/sip.request": crate::proxy::RequestCtx,
        "wisp:proxy/sip.response": call::ResponseCtx,
        "wisp:proxy/sip.fields": fields::Fields,
    },
    imports: { default: trappable },
    // Replies the services hand out are told from the guest's own by
    // comparing them (see `HostState::issued`).
    additional_derives: [PartialEq],
});

/// The version of the `wisp:proxy` package this host implements.
pub const WIT_VERSION: &str = "0.2.3";

/// The bundled default routing component (guests/default), built by build.rs.
pub static DEFAULT_COMPONENT: &[u8] = include_bytes!(env!("WISP_DEFAULT_COMPONENT"));

/// The process-wide wasmtime engine, its linker and the compile cache.
pub struct ScriptEngine {
    engine: Engine,
    linker: Linker<call::HostState>,
    cache: cache::CompileCache,
    /// Stops hooks past their deadline.
    watchdog: watchdog::Watchdog,
    /// The components loaded last, linked, by the SHA-256 of their bytes:
    /// a thousand tenants on the same routing share one compiled and
    /// linked component instead of loading it a thousand times.
    linked: std::sync::Mutex<Vec<([u8; 32], RouterPre<call::HostState>)>>,
}

/// Linked components kept for the next load of the same bytes.
const LINKED_KEPT: usize = 8;

/// A component compiled and linked, ready to instantiate.
pub struct Loaded {
    pub(crate) pre: RouterPre<call::HostState>,
    /// Where it came from, for logs.
    pub origin: String,
}

impl ScriptEngine {
    /// Creates the engine and starts the thread that drives hook deadlines.
    pub fn new(cache_dir: Option<PathBuf>) -> anyhow::Result<Arc<ScriptEngine>> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        // Hooks are synchronous calls; the component-model async machinery
        // costs time on every call and is not needed.
        config.concurrency_support(false);
        config.max_wasm_stack(512 << 10);
        let engine = Engine::new(&config)
            .map_err(anyhow::Error::from)
            .context("cannot create the wasm engine")?;

        let mut linker = Linker::new(&engine);
        // Rust guests built with std import WASI; they get a context with no
        // files, sockets, environment or clocks beyond the defaults.
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        forbid_blocking(&mut linker)?;
        Router::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |s| s)?;

        let watchdog = watchdog::Watchdog::start(&engine)?;

        let cache = cache::CompileCache::new(&engine, cache_dir);
        Ok(Arc::new(ScriptEngine {
            engine,
            linker,
            cache,
            watchdog,
            linked: std::sync::Mutex::new(Vec::new()),
        }))
    }

    /// Compiles (or loads from the cache) and links a component. Fails with
    /// a message naming what is wrong: not wasm, not a component, or a
    /// component that does not implement the `wisp:proxy/router` world.
    pub fn load(&self, wasm: &[u8], origin: &str) -> anyhow::Result<Loaded> {
        use sha2::Digest;
        let digest: [u8; 32] = sha2::Sha256::digest(wasm).into();
        let mut linked = self.linked.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = linked.iter().position(|(d, _)| *d == digest) {
            // Most recently used last.
            let entry = linked.remove(i);
            let pre = entry.1.clone();
            linked.push(entry);
            return Ok(Loaded {
                pre,
                origin: origin.to_owned(),
            });
        }
        drop(linked);
        let component: Component = self
            .cache
            .component(&self.engine, wasm)
            .with_context(|| format!("{origin}: not a valid wasm component"))?;
        check_version(&self.engine, &component, origin)?;
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(anyhow::Error::from)
            .with_context(|| {
                format!("{origin}: cannot link the component to the wisp:proxy host API")
            })?;
        let pre = RouterPre::new(instance_pre)
            .map_err(anyhow::Error::from)
            .with_context(|| {
                format!("{origin}: the component does not export the wisp:proxy/router hooks")
            })?;
        let mut linked = self.linked.lock().unwrap_or_else(|e| e.into_inner());
        if linked.len() >= LINKED_KEPT {
            linked.remove(0);
        }
        linked.push((digest, pre.clone()));
        drop(linked);
        Ok(Loaded {
            pre,
            origin: origin.to_owned(),
        })
    }

    /// Loads a component and instantiates it once, so that a component
    /// that traps in its start function is refused before it serves.
    pub fn load_checked(
        &self,
        wasm: &[u8],
        origin: &str,
        guest: Arc<Guest>,
    ) -> anyhow::Result<Pool> {
        let loaded = self.load(wasm, origin)?;
        let pool = Pool::new(self.engine.clone(), self.watchdog.clone(), loaded, guest);
        // One warm instance per worker thread (see proxy::run).
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        pool.warm_up(workers)
            .with_context(|| format!("{origin}: cannot instantiate"))?;
        Ok(pool)
    }
}

/// Refuses a component built against another version of `wisp:proxy`,
/// before linking: the linker's own error would name one missing function
/// and leave the operator to guess that the whole contract changed.
fn check_version(engine: &Engine, component: &Component, origin: &str) -> anyhow::Result<()> {
    let ty = component.component_type();
    let names = ty
        .imports(engine)
        .map(|(name, _)| name)
        .chain(ty.exports(engine).map(|(name, _)| name));
    for name in names {
        let Some(version) = wit_version(name) else {
            continue;
        };
        if sdk_series(version) != sdk_series(WIT_VERSION) {
            anyhow::bail!(
                "{origin} speaks wisp:proxy@{version}; this wisp speaks wisp:proxy@{WIT_VERSION}: \
                 rebuild it with the {} SDK",
                sdk_series(WIT_VERSION)
            );
        }
        if patch(version) > patch(WIT_VERSION) {
            anyhow::bail!(
                "{origin} speaks wisp:proxy@{version}, newer than this wisp's \
                 wisp:proxy@{WIT_VERSION}: upgrade wisp, or build it with the SDK of {WIT_VERSION}"
            );
        }
    }
    Ok(())
}

/// The patch number of "0.2.3": a component of an older patch of the same
/// series imports a subset of this host's functions, with the same types
/// (the linker matches `@0.2.0` imports with `@0.2.3` definitions).
fn patch(version: &str) -> Option<u32> {
    version.rsplit_once('.')?.1.parse().ok()
}

/// The version of a `wisp:proxy/<interface>@<version>` name; none for
/// other packages' names and for names without a version.
fn wit_version(name: &str) -> Option<&str> {
    let rest = name.strip_prefix("wisp:proxy/")?;
    rest.split_once('@').map(|(_, version)| version)
}

/// "0.2" for "0.2.0": how the SDK releases are named.
fn sdk_series(version: &str) -> &str {
    version
        .rsplit_once('.')
        .map_or(version, |(series, _)| series)
}

/// The WASI version wasmtime-wasi links (guests built against any 0.2.x
/// match it).
const WASI_IO: &str = "wasi:io/poll@0.2.12";

/// Replaces WASI's blocking waits (`poll`, `pollable.block`) with a trap.
///
/// The epoch deadline interrupts wasm code only: a guest sleeping in host
/// code (`std::thread::sleep` is a `block` on a clock) would hold its
/// worker, and every call hashed to it, for as long as it asked. A routing
/// hook has nothing to wait for, so waiting is refused outright and counts
/// as a trap of the tenant.
fn forbid_blocking(linker: &mut Linker<call::HostState>) -> anyhow::Result<()> {
    linker.allow_shadowing(true);
    let mut poll = linker.instance(WASI_IO)?;
    for name in ["poll", "[method]pollable.block"] {
        poll.func_new(name, |_store, _ty, _params, _results| {
            Err(wasmtime::Error::msg(
                "a hook may not block (WASI poll or sleep): wisp refuses it",
            ))
        })?;
    }
    linker.allow_shadowing(false);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> (tempfile::TempDir, Arc<ScriptEngine>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let engine = ScriptEngine::new(Some(dir.path().to_owned())).expect("engine");
        (dir, engine)
    }

    fn load_error(wasm: &[u8], origin: &str) -> String {
        let (_dir, engine) = engine();
        match engine.load(wasm, origin) {
            Ok(_) => panic!("{origin} loaded"),
            Err(err) => format!("{err:#}"),
        }
    }

    /// The bundled routing as built on wisp:proxy@0.1.0 (the last release
    /// of that contract) is refused before linking, with both versions
    /// named, not with the linker's complaint about one function.
    #[test]
    fn a_component_of_another_version_is_refused_at_load() {
        let old = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/router-0.1.wasm"
        ))
        .expect("tests/data/router-0.1.wasm");
        assert_eq!(
            load_error(&old, "route.wasm"),
            "route.wasm speaks wisp:proxy@0.1.0; this wisp speaks wisp:proxy@0.2.3: \
             rebuild it with the 0.2 SDK"
        );
    }

    /// The bundled routing as built on wisp:proxy@0.2.0, before `arm` and
    /// `account`: it loads and runs as it did (every hook runs), without
    /// a rebuild.
    #[test]
    fn a_component_of_an_older_patch_loads_and_runs() {
        let old = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/router-0.2.0.wasm"
        ))
        .expect("tests/data/router-0.2.0.wasm");
        let (_dir, engine) = engine();
        let loaded = match engine.load(&old, "route.wasm") {
            Ok(loaded) => loaded,
            Err(err) => panic!("{err:#}"),
        };
        let guest = Arc::new(Guest::for_tests("old"));
        let pool = Pool::new(
            engine.engine.clone(),
            engine.watchdog.clone(),
            loaded,
            guest,
        );
        // Max-Forwards 0: the routing's first call (`max-forwards`)
        // refuses it, whatever the proxy's addresses.
        let req = crate::proxy::RequestCtx::new(
            crate::sip::parse(bytes::Bytes::from_static(
                b"OPTIONS sip:bob@192.0.2.9 SIP/2.0\r\n\
                  Via: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKold1\r\n\
                  Max-Forwards: 0\r\n\
                  From: <sip:a@192.0.2.1>;tag=1\r\n\
                  To: <sip:bob@192.0.2.9>\r\n\
                  Call-ID: old-1\r\n\
                  CSeq: 1 OPTIONS\r\n\
                  Content-Length: 0\r\n\r\n",
            ))
            .expect("parses"),
            crate::proxy::Source {
                transport: crate::transport::Transport::Udp,
                remote: "192.0.2.1:5070".parse().expect("address"),
                listener: 0,
                trusted: false,
            },
        );
        let mut vars = crate::proxy::TxVars::default();
        let (_, result) = pool.route(req, &mut vars);
        let (_, actions) = result.expect("the 0.2.0 routing runs");
        assert!(
            matches!(
                actions.as_slice(),
                [crate::proxy::Action::Reply { code: 483, .. }]
            ),
            "{actions:?}"
        );
        assert_eq!(
            vars.armed, None,
            "a 0.2.0 routing arms nothing: every hook runs"
        );
    }

    #[test]
    fn patches_are_compared_by_number() {
        assert_eq!(patch("0.2.0"), Some(0));
        assert_eq!(patch("0.2.11"), Some(11));
        assert!(patch("0.2.4") > patch(WIT_VERSION));
        assert!(patch("0.2.0") < patch(WIT_VERSION));
        assert!(patch("0.2.1") < patch(WIT_VERSION));
        assert!(patch("0.2.2") < patch(WIT_VERSION));
    }

    #[test]
    fn other_load_errors_say_what_is_wrong() {
        let err = load_error(b"not wasm at all", "junk.wasm");
        assert!(
            err.starts_with("junk.wasm: not a valid wasm component"),
            "{err}"
        );
        // A core module is wasm but no component.
        let err = load_error(b"\0asm\x01\0\0\0", "core.wasm");
        assert!(
            err.starts_with("core.wasm: not a valid wasm component"),
            "{err}"
        );
        // A component of no wisp:proxy version that exports no hooks.
        let err = load_error(b"\0asm\x0d\0\x01\0", "empty.wasm");
        assert!(
            err.starts_with(
                "empty.wasm: the component does not export the wisp:proxy/router hooks"
            ),
            "{err}"
        );
    }

    #[test]
    fn versions_are_read_from_wisp_proxy_names_only() {
        assert_eq!(wit_version("wisp:proxy/sip@0.2.0"), Some("0.2.0"));
        assert_eq!(wit_version("wisp:proxy/types@0.1.0"), Some("0.1.0"));
        assert_eq!(wit_version("wasi:io/poll@0.2.6"), None);
        assert_eq!(wit_version("wisp:proxy/sip"), None);
        assert_eq!(wit_version("route"), None);
        assert_eq!(sdk_series("0.2.0"), "0.2");
    }

    /// The bundled routing speaks this host's version.
    #[test]
    fn the_bundled_routing_loads() {
        let (_dir, engine) = engine();
        if let Err(err) = engine.load(DEFAULT_COMPONENT, "bundled") {
            panic!("{err:#}");
        }
    }
}
