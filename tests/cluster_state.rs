//! Issue #17: what the guests and the registrar keep, shared by two nodes
//! through one real redis-server on loopback ([cluster]): kv keys (TTL,
//! incr, delete, the tenant's key quota), rate-limit counters, and the
//! subscribers `wisp user add` writes (cached by each node, the cache
//! dropped when `wisp user del` says so). And what Redis away does to
//! each: kv writes fail as unavailable, rate limits count per node,
//! an uncached subscriber gets a 500, not a 401.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wisp_tests::{
    build_guest, header_of, udp_exchange, wisp_binary, RedisServer, Request, Routing, Tenant, Ua,
    Wisp, WispBuilder,
};

const WAIT: Duration = Duration::from_secs(3);

/// The `[cluster]` section of node `node`.
fn cluster_toml(redis: &RedisServer, node: &str) -> String {
    format!(
        "[cluster]\nredis = \"{}\"\nnode = \"{node}\"\ntimeout_ms = 250\n",
        redis.url()
    )
}

/// kv and rate limits by what a request's X-Op header says.
const GUEST: &str = r#"
use wisp_sdk::prelude::*;
struct G;
impl Router for G {
    fn route(req: &Request) -> Flow {
        if *req.method() == Method::Ack {
            return req.exit();
        }
        let op = req.header("X-Op").unwrap_or_default();
        let w: Vec<&str> = op.split_whitespace().collect();
        match w.as_slice() {
            ["set", k, v] => match kv::set(k, v, Some(60)) {
                Ok(()) => req.reply(200, "set"),
                Err(err) => req.reply(500, &format!("set failed: {err}")),
            },
            ["get", k] => req.reply(200, &format!("value {}", kv::get(k).unwrap_or("-".into()))),
            ["incr", k] => match kv::incr(k, 1, Some(60)) {
                Ok(n) => req.reply(200, &format!("count {n}")),
                Err(err) => req.reply(500, &format!("incr failed: {err}")),
            },
            ["del", k] => req.reply(200, &format!("deleted {}", kv::delete(k))),
            ["limit", k] => {
                if ratelimit::check(k, 5, 60) {
                    req.reply(200, "allowed")
                } else {
                    req.reply(429, "limited")
                }
            }
            _ => req.reply(400, "no op"),
        }
    }
}
wisp_sdk::export_router!(G);
"#;

/// The status line of the answer to an OPTIONS carrying `op`.
fn op(wisp: &Wisp, op: &str) -> String {
    let options = Request::new("OPTIONS", &wisp.uri("kv"))
        .headers(&format!("Max-Forwards: 70\r\nX-Op: {op}\r\n"))
        .to_string();
    let answer = udp_exchange(wisp.addr(), options.as_bytes(), WAIT)
        .expect("udp")
        .unwrap_or_else(|| panic!("no answer to {op:?}"));
    answer.lines().next().unwrap_or_default().to_owned()
}

fn node(wasm: &std::path::Path, redis: &RedisServer, name: &str) -> Wisp {
    WispBuilder::new()
        .tenant(
            Tenant::new("shared")
                .component(wasm)
                .toml("limits = { kv_keys = 4 }\n"),
        )
        .toml(&cluster_toml(redis, name))
        .start()
        .expect("wisp starts")
}

#[test]
fn kv_and_rate_limits_are_shared_by_the_nodes() {
    let wasm = build_guest("cluster-state", GUEST).expect("guest builds");
    let mut redis = RedisServer::start().expect("redis-server starts");
    let a = node(&wasm, &redis, "a");
    let b = node(&wasm, &redis, "b");

    // A value set through one node is read through the other; a delete
    // through that one is seen by the first.
    assert_eq!(op(&a, "set greeting hello"), "SIP/2.0 200 set");
    assert_eq!(op(&b, "get greeting"), "SIP/2.0 200 value hello");
    assert_eq!(
        redis.keys("wisp:shared:kv:*").expect("keys"),
        vec!["wisp:shared:kv:greeting"]
    );
    assert_eq!(
        redis
            .command("TTL wisp:shared:kv:greeting")
            .expect("ttl")
            .trim(),
        ":60"
    );
    assert_eq!(op(&b, "del greeting"), "SIP/2.0 200 deleted true");
    assert_eq!(op(&a, "get greeting"), "SIP/2.0 200 value -");
    assert_eq!(op(&a, "del greeting"), "SIP/2.0 200 deleted false");

    // Counted at both: no increment lost.
    for (i, node) in [&a, &b, &a, &b, &b].into_iter().enumerate() {
        assert_eq!(
            op(node, "incr calls"),
            format!("SIP/2.0 200 count {}", i + 1)
        );
    }
    assert_eq!(op(&a, "set word x"), "SIP/2.0 200 set");
    assert!(op(&b, "incr word").starts_with("SIP/2.0 500 incr failed: invalid argument:"));

    // The tenant's 4 keys, across the cluster: calls, word, two more.
    assert_eq!(op(&a, "set k3 v"), "SIP/2.0 200 set");
    assert_eq!(op(&b, "set k4 v"), "SIP/2.0 200 set");
    let refused = op(&a, "set k5 v");
    assert!(
        refused.starts_with("SIP/2.0 500 set failed: not allowed: kv quota"),
        "{refused}"
    );
    assert_eq!(
        op(&b, "set k4 changed"),
        "SIP/2.0 200 set",
        "a key there may change"
    );
    assert_eq!(op(&b, "del k3"), "SIP/2.0 200 deleted true");
    assert_eq!(op(&a, "set k5 v"), "SIP/2.0 200 set", "room again");

    // 5 hits a minute for a key, whichever node sees them (all in one
    // minute of the clock: the window is fixed).
    let second = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() % 60);
    if second >= 55 {
        std::thread::sleep(Duration::from_secs(61 - second));
    }
    let hits: Vec<String> = [&a, &b, &a, &b, &a, &b, &a]
        .into_iter()
        .map(|n| op(n, "limit caller-1"))
        .collect();
    let allowed = hits.iter().filter(|s| s.ends_with("200 allowed")).count();
    assert_eq!(allowed, 5, "{hits:?}");
    assert!(
        hits[5..].iter().all(|s| s.ends_with("429 limited")),
        "{hits:?}"
    );
    assert_eq!(
        op(&b, "limit caller-2"),
        "SIP/2.0 200 allowed",
        "another key"
    );
    let counters = redis.keys("wisp:shared:rl:60:*").expect("keys");
    assert_eq!(counters.len(), 2, "{counters:?}");
    let caller_1 = counters
        .iter()
        .find(|k| k.ends_with(":caller-1"))
        .expect("caller-1's counter");
    let counted = redis.command(&format!("GET {caller_1}")).expect("get");
    assert_eq!(counted, "$1\r\n5\r\n", "refused hits are not counted");

    // Redis away: writes fail as unavailable (the guest knows), reads
    // find nothing, rate limits are counted by each node alone.
    redis.stop();
    std::thread::sleep(Duration::from_millis(300));
    let failed = op(&a, "set greeting again");
    assert!(
        failed.starts_with("SIP/2.0 500 set failed: unavailable:"),
        "{failed}"
    );
    assert!(op(&b, "incr calls").starts_with("SIP/2.0 500 incr failed: unavailable:"));
    assert_eq!(op(&a, "get calls"), "SIP/2.0 200 value -");
    let local: Vec<String> = (0..6).map(|_| op(&a, "limit caller-3")).collect();
    assert_eq!(
        local.iter().filter(|s| s.ends_with("200 allowed")).count(),
        5,
        "{local:?}"
    );
    let mut a = a;
    a.wait_for_log("cluster kv: redis failed", 1, WAIT)
        .expect("said once");
    assert!(
        a.log_lines_with("cluster kv: redis failed").is_empty(),
        "once"
    );

    // Redis back (empty: no persistence): the nodes write to it again.
    redis.start_again().expect("redis-server starts again");
    let until = Instant::now() + Duration::from_secs(10);
    let started = Instant::now();
    while op(&a, "set greeting back") != "SIP/2.0 200 set" {
        assert!(Instant::now() < until, "no kv after redis came back");
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "kv through redis again {:?} after it restarted",
        started.elapsed()
    );
    let until = Instant::now() + Duration::from_secs(10);
    while op(&b, "get greeting") != "SIP/2.0 200 value back" {
        assert!(Instant::now() < until, "b does not read redis again");
        std::thread::sleep(Duration::from_millis(100));
    }
    a.wait_for_log("cluster kv: redis answers again", 1, WAIT)
        .expect("said once");
}

/// `wisp user ACTION ARGS --config CONFIG`.
fn user(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(wisp_binary().expect("wisp built"))
        .arg("user")
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .output()
        .expect("wisp user runs")
}

/// REGISTERs `user` at `wisp` with its challenge: the final status line.
fn register(wisp: &Wisp, user: &str, password: &str) -> String {
    let aor = wisp.uri(user);
    let mut ua = Ua::new(wisp.addr());
    let contact = format!("Contact: <sip:{user}@127.0.0.1:{}>\r\n", ua.port());
    let first = ua.register(&aor, &contact);
    let status = first.lines().next().unwrap_or_default().to_owned();
    if !status.starts_with("SIP/2.0 401") {
        return status;
    }
    let challenge = header_of(&first, "WWW-Authenticate")
        .expect("a challenge")
        .to_owned();
    let reply = ua.register_answering(&aor, &contact, &challenge, (user, password), 1);
    reply.lines().next().unwrap_or_default().to_owned()
}

#[test]
fn subscribers_are_read_from_redis_and_their_removal_seen() {
    let redis = RedisServer::start().expect("redis-server starts");
    let start = |name: &str| {
        WispBuilder::new()
            .routing(Routing::Rust)
            .param("WITH_AUTH", "yes")
            .toml(&cluster_toml(&redis, name))
            .subscriber("alice@127.0.0.1", "wonderland")
            .start()
            .expect("wisp starts")
    };
    let a = start("a");
    let b = start("b");

    // Stored once (each start added alice again: the same hashes), in the
    // tenant's hash, without the password.
    assert_eq!(
        redis.keys("wisp:*:sub:*").expect("keys"),
        vec!["wisp:default:sub:ha1"]
    );
    let listed = user(&a.config_path, &["list"]);
    assert!(listed.status.success(), "{listed:?}");
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout),
        "alice@127.0.0.1\tdefault\n"
    );

    for node in [&a, &b] {
        assert_eq!(register(node, "alice", "wonderland"), "SIP/2.0 200 OK");
        assert_eq!(
            register(node, "alice", "rabbit"),
            "SIP/2.0 401 Unauthorized"
        );
    }
    // Added through one node's configuration, at once known at both.
    let added = user(&b.config_path, &["add", "bob@127.0.0.1", "builder"]);
    assert!(added.status.success(), "{added:?}");
    assert_eq!(register(&a, "bob", "builder"), "SIP/2.0 200 OK");
    assert_eq!(register(&b, "bob", "builder"), "SIP/2.0 200 OK");

    // Removed: both caches drop alice when told (not after their 30 s).
    let removed = user(&a.config_path, &["del", "alice@127.0.0.1"]);
    assert!(removed.status.success(), "{removed:?}");
    let started = Instant::now();
    for node in [&b, &a] {
        let until = Instant::now() + Duration::from_secs(2);
        loop {
            let status = register(node, "alice", "wonderland");
            if status == "SIP/2.0 401 Unauthorized" {
                break;
            }
            assert!(Instant::now() < until, "alice still known: {status}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    eprintln!("removal seen by both nodes within {:?}", started.elapsed());
    let again = user(&a.config_path, &["del", "alice@127.0.0.1"]);
    assert!(!again.status.success(), "no alice to remove");

    // Redis away: a subscriber no node has cached cannot be checked, and
    // the answer says the server failed, not that the password is wrong.
    let carol = user(&a.config_path, &["add", "carol@127.0.0.1", "x"]);
    assert!(carol.status.success(), "{carol:?}");
    let mut redis = redis;
    redis.stop();
    std::thread::sleep(Duration::from_millis(300));
    let status = register(&a, "carol", "x");
    assert!(status.starts_with("SIP/2.0 5"), "{status}");
    let offline = user(&a.config_path, &["add", "dave@127.0.0.1", "x"]);
    assert!(
        !offline.status.success(),
        "nothing saved while redis is away"
    );
    assert!(
        String::from_utf8_lossy(&offline.stderr).contains("unavailable"),
        "{offline:?}"
    );
}
