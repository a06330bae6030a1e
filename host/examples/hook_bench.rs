//! Cost of a route hook call, per component, through the same script
//! engine and instance pool the proxy uses. Prints figures; asserts nothing.
//!
//! ```sh
//! cargo run --release -p wisp --example hook_bench -- [--iters N] [NAME=PATH.wasm ...]
//! ```
//!
//! The bundled Rust default routing is always measured; add components
//! (e.g. `js=target/e2e-js/default-js.wasm`) to compare. For each:
//! - compile: first load with an empty compile cache (cranelift + write);
//! - cached load: a second engine loading the same bytes from the cache;
//! - warm: µs per hook call on pooled instances (what the proxy pays);
//! - fresh: µs per hook call when every call instantiates (idle_instances = 0).
//!
//! Two requests alternate: an INVITE that is record-routed and relayed
//! (max-forwards, sanity, the in-dialog test of request-info, record-route,
//! a `relay` decision) and
//! an OPTIONS to the proxy itself, answered 200. The actions each component
//! asks for are checked against that (`--any-actions` skips the check, to
//! time other routing).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use wisp::proxy::{Action, Locality, RequestCtx, Source, TxVars};
use wisp::script::{Guest, Limits, Pool, ScriptEngine, DEFAULT_COMPONENT};
use wisp::transport::{Listener, Transport};

const PROXY: &str = "127.0.0.1:5060";

fn main() -> anyhow::Result<()> {
    let mut iters = 20_000u32;
    let mut check_actions = true;
    let mut components: Vec<(String, Vec<u8>)> = vec![("rust".into(), DEFAULT_COMPONENT.to_vec())];
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--any-actions" {
            check_actions = false;
        } else if arg == "--iters" {
            iters = args.next().and_then(|v| v.parse().ok()).unwrap_or(iters);
        } else if let Some((name, path)) = arg.split_once('=') {
            let wasm = std::fs::read(path).map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
            components.push((name.to_owned(), wasm));
        } else {
            anyhow::bail!("usage: hook_bench [--iters N] [--any-actions] [NAME=PATH.wasm ...]");
        }
    }

    println!(
        "{:<8} {:>9} {:>10} {:>12} {:>10} {:>10} {:>10}",
        "guest", "size", "compile", "cached load", "warm µs", "warm p99", "fresh µs"
    );
    for (name, wasm) in &components {
        let cache = tempfile::tempdir()?;
        let t = Instant::now();
        let warm_pool = load(wasm, name, cache.path(), Limits::default())?;
        let compile = t.elapsed();
        let t = Instant::now();
        let fresh_pool = load(
            wasm,
            name,
            cache.path(),
            Limits {
                idle_instances: 0,
                ..Limits::default()
            },
        )?;
        let cached = t.elapsed();

        let (warm, warm_p99) = per_call(&warm_pool, iters, check_actions)?;
        let fresh_iters = (iters / 20).max(50);
        let (fresh, _) = per_call(&fresh_pool, fresh_iters, check_actions)?;
        println!(
            "{:<8} {:>7.1}MB {:>8.2} s {:>9.1} ms {:>10.1} {:>10.1} {:>10.1}",
            name,
            wasm.len() as f64 / 1e6,
            compile.as_secs_f64(),
            cached.as_secs_f64() * 1e3,
            warm,
            warm_p99,
            fresh,
        );
    }
    println!("(load times include one instantiation; warm = pooled instances, {iters} calls after 200 warm-up calls)");
    Ok(())
}

fn load(wasm: &[u8], name: &str, cache: &std::path::Path, limits: Limits) -> anyhow::Result<Pool> {
    let engine = ScriptEngine::new(Some(cache.to_owned()))?;
    let local: SocketAddr = PROXY.parse()?;
    let locality = Arc::new(Locality::new(
        vec![Listener {
            transport: Transport::Udp,
            local,
            advertise: None,
        }],
        Vec::new(),
    ));
    let guest = Arc::new(Guest {
        tenant: name.to_owned(),
        version: 1,
        params: BTreeMap::new(),
        limits,
        locality,
        metrics: wisp::metrics::Metrics::new().tenant(name),
        services: Arc::new(wisp::services::Services::with_storage(
            wisp::services::Storage::in_memory()?,
        )),
        allow: Default::default(),
        domains: Default::default(),
        log_capture: None,
    });
    engine.load_checked(wasm, name, guest)
}

fn request(method: &str, uri: &str, n: u32) -> RequestCtx {
    let text = format!(
        "{method} {uri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKbench{n};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@127.0.0.1:5070>;tag=a{n}\r\n\
         To: <{uri}>\r\n\
         Call-ID: bench-{n}@127.0.0.1\r\n\
         CSeq: 1 {method}\r\n\
         Contact: <sip:alice@127.0.0.1:5070>\r\n\
         Content-Length: 0\r\n\r\n"
    );
    let msg = wisp::sip::parse(Bytes::from(text)).expect("bench request parses");
    RequestCtx::new(
        msg,
        Source {
            transport: Transport::Udp,
            remote: "127.0.0.1:5070".parse().expect("addr"),
            listener: 0,
            // Loopback, which the server trusts by default: the bundled
            // routing relays to a foreign domain for trusted sources only.
            trusted: true,
        },
    )
}

/// Median and 99th percentile µs per hook call, requests prepared outside
/// the timed section.
fn per_call(pool: &Pool, iters: u32, check_actions: bool) -> anyhow::Result<(f64, f64)> {
    let invite = request("INVITE", "sip:bob@127.0.0.2:5080", 0);
    let options = request("OPTIONS", &format!("sip:{PROXY}"), 0);
    let mut samples = Vec::with_capacity(iters as usize);
    for i in 0..iters + 200 {
        let req = if i % 2 == 0 {
            invite.clone()
        } else {
            options.clone()
        };
        let t = Instant::now();
        let (_, result) = pool.route(req, &mut TxVars::default());
        let spent = t.elapsed();
        let ((), actions) = result.map_err(|e| anyhow::anyhow!("hook failed: {e}"))?;
        let expected = if i % 2 == 0 {
            matches!(actions.as_slice(), [Action::Relay { .. }])
        } else {
            matches!(actions.as_slice(), [Action::Reply { code: 200, .. }])
        };
        anyhow::ensure!(
            expected || !check_actions,
            "unexpected actions (the default routing relays the INVITE and answers the OPTIONS 200): {actions:?}"
        );
        if i >= 200 {
            samples.push(spent);
        }
    }
    samples.sort();
    let at = |q: f64| micros(samples[((samples.len() - 1) as f64 * q) as usize]);
    Ok((at(0.5), at(0.99)))
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
