//! Versions across nodes (issue #17): three wisp nodes sharing one
//! redis-server on loopback. `wisp ctl reload` on node A publishes the
//! tenant's new component; B and C serve it within a second. A canary
//! stays on its node and its promotion is published; a node started later
//! takes the cluster's version; a component that cannot be built (or
//! whose bytes do not match their sha256) leaves every node on the
//! version it serves, and each says so in the served hash and its status.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;
use sha2::{Digest, Sha256};
use wisp_tests::{build_guest, RedisServer, Tenant, Wisp, WispBuilder};

/// `redis-cli ARGS...` against `redis`, with `stdin` as the last argument
/// (`-x`): binary values, which the harness's inline commands cannot send.
fn cli(redis: &RedisServer, args: &[&str], stdin: Option<&[u8]>) -> Result<String> {
    let mut cmd = Command::new("redis-cli");
    cmd.args(["-h", "127.0.0.1", "-p", &redis.port.to_string()]);
    if stdin.is_some() {
        cmd.arg("-x");
    }
    let mut child = cmd
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run redis-cli")?;
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin.unwrap_or_default())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "redis-cli {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A guest that stamps what it relays with `name`: two of them are two
/// versions of one tenant's routing.
fn stamp_guest(name: &str) -> String {
    format!(
        r#"
use wisp_sdk::prelude::*;

struct Stamp;

impl Router for Stamp {{
    fn route(req: &Request) -> Flow {{
        req.max_forwards(Some(10))?;
        req.append_header("X-Version", "{name}")?;
        req.relay()
    }}
}}

wisp_sdk::export_router!(Stamp);
"#
    )
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A node: its own copy of the tenant's component (its own disk).
struct Node {
    name: &'static str,
    wisp: Wisp,
    component: PathBuf,
    _dir: tempfile::TempDir,
}

impl Node {
    fn start(name: &'static str, redis: &RedisServer, component: &[u8]) -> Result<Node> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("main.wasm");
        std::fs::write(&path, component)?;
        let wisp = WispBuilder::new()
            .admin()
            .tenant(Tenant::new("main").component(&path))
            .toml(&format!(
                "[cluster]\nredis = \"{}\"\nnode = \"{name}\"\n",
                redis.url()
            ))
            .start()?;
        Ok(Node {
            name,
            wisp,
            component: path,
            _dir: dir,
        })
    }

    /// GET on the admin API, as JSON.
    fn admin(&self, path: &str) -> Result<Value> {
        admin_get(&self.wisp.config_path, path)
    }

    /// The digest of the stable version of tenant "main" and its cluster
    /// status.
    fn main(&self) -> Result<(String, Value)> {
        let t = self.admin("/tenants/main")?;
        let digest = t["stable"]["digest"]
            .as_str()
            .context("no stable digest")?
            .to_owned();
        Ok((digest, t["cluster"].clone()))
    }
}

/// A plain HTTP/1.1 GET on the admin API of the wisp whose configuration
/// is at `config` (its `[admin]` address and token).
fn admin_get(config: &Path, path: &str) -> Result<Value> {
    let text = std::fs::read_to_string(config)?;
    let admin = text.split("[admin]").nth(1).context("no [admin] section")?;
    let field = |key: &str| -> Result<String> {
        admin
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key} = \"")))
            .and_then(|v| v.strip_suffix('"'))
            .map(str::to_owned)
            .with_context(|| format!("no {key} in [admin]"))
    };
    let (address, token) = (field("address")?, field("token")?);
    let mut stream = TcpStream::connect(&address)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("no end of headers")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {head}\n{body}");
    }
    Ok(serde_json::from_str(body)?)
}

/// Polls until every node serves `digest`; how long it took.
fn until_served(nodes: &[&Node], digest: &str, within: Duration) -> Result<Duration> {
    let started = Instant::now();
    loop {
        let mut missing = Vec::new();
        for node in nodes {
            let (serving, _) = node.main()?;
            if serving != digest {
                missing.push(format!("{} serves {serving}", node.name));
            }
        }
        if missing.is_empty() {
            return Ok(started.elapsed());
        }
        if started.elapsed() > within {
            bail!("not serving {digest} after {within:?}: {missing:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Polls the served hash until `node` reports a failure; the entry.
fn until_failed(redis: &RedisServer, node: &str, within: Duration) -> Result<String> {
    let started = Instant::now();
    loop {
        let served = cli(redis, &["HGET", "wisp:main:served", node], None)?;
        if served.starts_with("failed:") {
            return Ok(served.trim().to_owned());
        }
        if started.elapsed() > within {
            bail!("{node} reported no failure within {within:?}: {served:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Publishes `bytes` as the component `digest` of tenant "main" by hand,
/// as a node would.
fn publish_by_hand(redis: &RedisServer, digest: &str, bytes: &[u8]) -> Result<()> {
    let component = format!("wisp:component:{digest}");
    cli(redis, &["SET", &component], Some(bytes))?;
    cli(redis, &["SET", "wisp:main:version", digest], None)?;
    cli(redis, &["PUBLISH", "wisp:versions", "main"], None)?;
    Ok(())
}

#[test]
fn a_reload_on_one_node_is_served_by_all() -> Result<()> {
    let one = std::fs::read(build_guest("cluster-one", &stamp_guest("one"))?)?;
    let two = std::fs::read(build_guest("cluster-two", &stamp_guest("two"))?)?;
    let (sha_one, sha_two) = (sha256(&one), sha256(&two));
    let redis = RedisServer::start()?;
    let a = Node::start("a", &redis, &one)?;
    let b = Node::start("b", &redis, &one)?;
    let c = Node::start("c", &redis, &one)?;
    until_served(&[&a, &b, &c], &sha_one, Duration::from_secs(5))?;

    // A new component on A's disk, and a configuration reload on A.
    std::fs::write(&a.component, &two)?;
    let started = Instant::now();
    let out = a.wisp.ctl(&["reload"])?;
    let reload_took = started.elapsed();
    assert!(out.success, "{out:?}");
    assert!(
        out.stdout.contains("reloaded") && out.stdout.contains("cluster: published"),
        "{out:?}"
    );
    let took = until_served(&[&b, &c], &sha_two, Duration::from_secs(5))?;
    eprintln!(
        "reload on A: {reload_took:?} (its own build and publish); B and C served the new version {took:?} after it returned, {:?} after it started",
        started.elapsed()
    );
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert_eq!(a.main()?.0, sha_two);
    // B and C serve it, but their files did not change.
    assert_eq!(std::fs::read(&b.component)?, one);
    let versions = c.admin("/versions")?;
    assert_eq!(versions["main"]["version"], sha_two, "{versions}");
    for node in ["a", "b", "c"] {
        assert_eq!(versions["main"]["served"][node], sha_two, "{versions}");
    }
    let out = c.wisp.ctl(&["versions"])?;
    assert!(out.success && out.stdout.contains(&sha_two), "{out:?}");

    // A configuration reload on B, whose file did not change, keeps the
    // cluster's version (it does not publish B's old file).
    let out = b.wisp.ctl(&["reload"])?;
    assert!(out.success && out.stdout.contains("unchanged"), "{out:?}");
    assert_eq!(b.main()?.0, sha_two);

    // A canary stays on its node; its promotion is published.
    let out = b.wisp.ctl(&[
        "reload",
        "main",
        "--component",
        &c.component.display().to_string(),
        "--canary",
        "10",
    ])?;
    assert!(out.success && out.stdout.contains("canary"), "{out:?}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(a.main()?.0, sha_two);
    assert_eq!(c.main()?.0, sha_two);
    let out = b.wisp.ctl(&["promote", "main"])?;
    assert!(
        out.success && out.stdout.contains("cluster: published"),
        "{out:?}"
    );
    let took = until_served(&[&a, &c], &sha_one, Duration::from_secs(5))?;
    eprintln!("promote on B: A and C served the promoted version {took:?} after it returned");
    assert!(took < Duration::from_secs(1), "{took:?}");

    // A node started later (its file: the second component) takes the
    // cluster's version.
    let d = Node::start("d", &redis, &two)?;
    let took = until_served(&[&d], &sha_one, Duration::from_secs(5))?;
    eprintln!("node D started later served the cluster's version {took:?} after it listened");

    // A published component that cannot be built: every node keeps what
    // it serves and says so.
    let broken = b"\0asm this is not a component".to_vec();
    let sha_broken = sha256(&broken);
    publish_by_hand(&redis, &sha_broken, &broken)?;
    for node in ["a", "b", "c", "d"] {
        let served = until_failed(&redis, node, Duration::from_secs(5))?;
        assert!(served.contains(&sha_one), "{node}: {served}");
        eprintln!("{node}: {served}");
    }
    for node in [&a, &b, &c, &d] {
        let (serving, cluster) = node.main()?;
        assert_eq!(serving, sha_one, "{}", node.name);
        assert_eq!(cluster["version"], sha_broken.as_str(), "{cluster}");
        assert!(
            cluster["failed"]
                .as_str()
                .is_some_and(|f| f.contains("cannot build")),
            "{cluster}"
        );
    }
    let metrics = Command::new(wisp_tests::wisp_binary()?)
        .arg("--config")
        .arg(&c.wisp.config_path)
        .args(["ctl", "metrics"])
        .output()?;
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    assert!(
        metrics.contains("wisp_cluster_version_in_sync{tenant=\"main\"} 0"),
        "{metrics}"
    );

    // Bytes that do not match the digest they are published under.
    publish_by_hand(&redis, &sha_two, b"tampered")?;
    let started = Instant::now();
    loop {
        let (serving, cluster) = c.main()?;
        assert_eq!(serving, sha_one);
        if cluster["failed"]
            .as_str()
            .is_some_and(|f| f.contains("whose sha256 is"))
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no hash mismatch reported: {cluster}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // A good version published afterwards is taken again by all.
    std::fs::write(&a.component, &two)?;
    let out = a.wisp.ctl(&["reload", "main"])?;
    assert!(out.success, "{out:?}");
    // The tampered bytes stay under sha_two's key until published again:
    // A's reload writes the right ones.
    until_served(&[&b, &c, &d], &sha_two, Duration::from_secs(2))?;
    Ok(())
}

#[test]
fn a_reload_while_redis_is_away_is_published_when_it_returns() -> Result<()> {
    let one = std::fs::read(build_guest("cluster-one", &stamp_guest("one"))?)?;
    let two = std::fs::read(build_guest("cluster-two", &stamp_guest("two"))?)?;
    let (sha_one, sha_two) = (sha256(&one), sha256(&two));
    let mut redis = RedisServer::start()?;
    let a = Node::start("a", &redis, &one)?;
    let b = Node::start("b", &redis, &one)?;
    until_served(&[&a, &b], &sha_one, Duration::from_secs(5))?;

    // Redis goes away; a reload on A serves there at once, unpublished.
    redis.stop();
    std::fs::write(&a.component, &two)?;
    let out = a.wisp.ctl(&["reload"])?;
    assert!(
        out.success && out.stdout.contains("reloaded") && out.stdout.contains("not published"),
        "{out:?}"
    );
    let (serving, cluster) = a.main()?;
    assert_eq!(serving, sha_two);
    assert_eq!(cluster["unpublished"], sha_two.as_str(), "{cluster}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(b.main()?.0, sha_one, "B took nothing while Redis was away");

    // Redis back (empty): A publishes, B takes it.
    redis.start_again()?;
    let took = until_served(&[&b], &sha_two, Duration::from_secs(15))?;
    eprintln!(
        "Redis back: B served A's unpublished version {took:?} after redis-server answered PING"
    );
    let version = redis.command("GET wisp:main:version")?;
    assert!(version.contains(&sha_two), "{version:?}");
    assert!(a.main()?.1["unpublished"].is_null());
    Ok(())
}
