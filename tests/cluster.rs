//! `[cluster]`: wisp nodes on their own loopback ports sharing one real
//! redis-server (started by the test): digest challenges answered at
//! another node, bindings found through any node, a flow reached through
//! the node that holds it, nodes killed, Redis stopped and restarted.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use wisp_tests::{
    assert_all_successful, headers_of, scenario, RedisServer, Routing, SilentPeer, Sipp, Transport,
    Ua, Wisp, WispBuilder,
};

const WAIT: Duration = Duration::from_secs(5);

fn status(reply: &str) -> &str {
    reply.lines().next().unwrap_or_default()
}

/// A node of the cluster on `redis`, running the bundled routing; with
/// digest auth and alice as a subscriber when `auth`.
fn node(redis: &RedisServer, name: &str, auth: bool) -> Wisp {
    let mut builder = WispBuilder::new()
        .routing(Routing::Rust)
        .admin()
        .toml(&format!(
            "[cluster]\nredis = \"{}\"\nnode = \"{name}\"\n",
            redis.url()
        ));
    if auth {
        builder = builder
            .param("WITH_AUTH", "yes")
            .subscriber("alice@127.0.0.1", "wonderland");
    }
    let wisp = builder.start().expect("node starts");
    wait_for_link(&wisp, true);
    wisp
}

/// Waits until the node's `wisp_cluster_redis_up` says `up`.
fn wait_for_link(wisp: &Wisp, up: bool) {
    let want = format!("wisp_cluster_redis_up {}", u8::from(up));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if metrics(wisp).contains(&want) {
            return;
        }
        assert!(Instant::now() < deadline, "no {want} within 10 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn metrics(wisp: &Wisp) -> String {
    let out = wisp.ctl(&["metrics"]).expect("wisp ctl metrics");
    assert!(out.success, "{out:?}");
    out.stdout
}

/// An INVITE from a caller of another domain to `user` through `via`;
/// what reaches `callee` within WAIT.
fn call_reaches(via: &Wisp, user: &str, callee: &SilentPeer) -> bool {
    let mut caller = Ua::new(via.addr());
    let invite = caller.request("INVITE", &via.uri(user), "sip:carol@198.51.100.7");
    let call_id = invite
        .lines()
        .find_map(|l| l.strip_prefix("Call-ID: "))
        .unwrap_or_default()
        .to_owned();
    caller.send_no_wait(&invite);
    callee
        .wait_for(&format!("Call-ID: {call_id}"), WAIT)
        .is_ok()
}

/// Three nodes: alice takes the challenge at A and answers it at B; a call
/// through B reaches her; A killed, a call through C still does.
#[test]
fn a_challenge_from_one_node_is_answered_at_another_and_calls_survive_a_node() {
    let redis = RedisServer::start().expect("redis starts");
    let a = node(&redis, "a", true);
    let b = node(&redis, "b", true);
    let c = node(&redis, "c", true);
    let phone = SilentPeer::start().expect("phone");
    let contact = format!("Contact: <sip:alice@127.0.0.1:{}>\r\n", phone.port);

    let mut at_a = Ua::new(a.addr());
    let reply = at_a.register(&a.uri("alice"), &contact);
    assert_eq!(status(&reply), "SIP/2.0 401 Unauthorized", "{reply}");
    let challenge = headers_of(&reply, "WWW-Authenticate")[0].to_owned();
    let mut at_b = Ua::new(b.addr());
    let reply = at_b.register_answering(
        &b.uri("alice"),
        &contact,
        &challenge,
        ("alice", "wonderland"),
        1,
    );
    assert_eq!(status(&reply), "SIP/2.0 200 OK", "{reply}");
    // The nonce-count is used up cluster-wide: the same answer at C is a replay.
    let mut at_c = Ua::new(c.addr());
    let reply = at_c.register_answering(
        &c.uri("alice"),
        &contact,
        &challenge,
        ("alice", "wonderland"),
        1,
    );
    assert_eq!(status(&reply), "SIP/2.0 401 Unauthorized", "{reply}");
    assert_eq!(
        redis.keys("wisp:default:loc:*").expect("keys"),
        ["wisp:default:loc:alice"]
    );

    assert!(call_reaches(&b, "alice", &phone), "a call through B");
    drop(a);
    assert!(
        call_reaches(&c, "alice", &phone),
        "a call through C, A gone"
    );
    assert!(metrics(&c).contains("wisp_cluster_redis_up 1"));
}

/// A REGISTER over TCP at A: its binding gets a Path to A, and a call
/// through B goes through A down that connection.
#[test]
fn a_flow_is_reached_through_the_node_that_holds_it() {
    let redis = RedisServer::start().expect("redis starts");
    let a = node(&redis, "a", false);
    let b = node(&redis, "b", false);
    let mut flow = TcpStream::connect(a.addr()).expect("connects to A");
    flow.set_read_timeout(Some(WAIT)).expect("timeout");
    let local = flow.local_addr().expect("local");
    let register = format!(
        "REGISTER sip:{a} SIP/2.0\r\n\
         Via: SIP/2.0/TCP {local};branch=z9hG4bKflow1;rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:bob@{a}>;tag=f1\r\n\
         To: <sip:bob@{a}>\r\n\
         Call-ID: flow-{port}\r\n\
         CSeq: 1 REGISTER\r\n\
         Contact: <sip:bob@{local};transport=tcp>\r\n\
         Expires: 300\r\n\
         Content-Length: 0\r\n\r\n",
        a = a.addr(),
        port = local.port(),
    );
    flow.write_all(register.as_bytes()).expect("sends");
    let reply = read_message(&mut flow);
    assert_eq!(status(&reply), "SIP/2.0 200 OK", "{reply}");

    let mut caller = Ua::new(b.addr());
    let invite = caller.request("INVITE", &b.uri("bob"), "sip:carol@198.51.100.7");
    caller.send_no_wait(&invite);
    let got = read_message(&mut flow);
    assert!(got.starts_with("INVITE "), "{got}");
    // Through B, then A: two Vias of the proxies above the caller's.
    let vias = got.lines().filter(|l| l.starts_with("Via:")).count();
    assert_eq!(vias, 3, "{got}");
}

/// Reads one SIP message from a stream (headers and a body of
/// Content-Length).
fn read_message(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 4096];
    let deadline = Instant::now() + WAIT;
    loop {
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return text;
            }
        }
        assert!(Instant::now() < deadline, "no message: {text}");
        let n = stream.read(&mut byte).expect("reads");
        assert!(n > 0, "closed: {text}");
        buf.extend_from_slice(&byte[..n]);
    }
}

/// Redis stopped: REGISTER answers 500, a lookup of a binding the node
/// has cached still finds it, one it has not is 500 (not a 404), the
/// metric and the log say so once; Redis back (empty): the node writes
/// back what it had, and REGISTER works again.
#[test]
fn while_redis_is_down_register_fails_and_cached_bindings_serve() {
    let mut redis = RedisServer::start().expect("redis starts");
    let mut a = node(&redis, "a", false);
    let b = node(&redis, "b", false);
    let phone = SilentPeer::start().expect("phone");
    let contact = |user: &str| format!("Contact: <sip:{user}@127.0.0.1:{}>\r\n", phone.port);
    let mut ua = Ua::new(a.addr());
    let reply = ua.register(&a.uri("dave"), &contact("dave"));
    assert_eq!(status(&reply), "SIP/2.0 200 OK", "{reply}");
    let mut ua_b = Ua::new(b.addr());
    let reply = ua_b.register(&b.uri("erin"), &contact("erin"));
    assert_eq!(status(&reply), "SIP/2.0 200 OK", "{reply}");

    redis.stop();
    a.wait_for_log("link to redis down", 1, WAIT)
        .expect("the link says it is down");
    wait_for_link(&a, false);
    let started = Instant::now();
    let reply = ua.register(&a.uri("frank"), &contact("frank"));
    assert_eq!(
        status(&reply),
        "SIP/2.0 500 Server Internal Error",
        "{reply}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "answered at once"
    );
    assert!(call_reaches(&a, "dave", &phone), "dave, cached at A");
    let mut caller = Ua::new(a.addr());
    let invite = caller.request("INVITE", &a.uri("erin"), "sip:carol@198.51.100.7");
    let reply = caller.send(&invite);
    assert!(status(&reply).starts_with("SIP/2.0 5"), "{reply}");

    redis.restart().expect("redis restarts");
    a.wait_for_log("link to redis up", 1, Duration::from_secs(10))
        .expect("the link comes back");
    a.wait_for_log("wrote back", 1, WAIT)
        .expect("A writes back its bindings");
    // B's link comes back on its own, sometimes after A's: until then
    // its lookups are answered 500, and a call that gets no further
    // waits out the deadline below.
    wait_for_link(&b, true);
    // What A had is in Redis again: B finds dave.
    let deadline = Instant::now() + WAIT;
    while !call_reaches(&b, "dave", &phone) {
        assert!(
            Instant::now() < deadline,
            "dave through B after the restart"
        );
    }
    let reply = ua.register(&a.uri("frank"), &contact("frank"));
    assert_eq!(status(&reply), "SIP/2.0 200 OK", "{reply}");
    assert!(metrics(&a).contains("wisp_cluster_redis_up 1"));
}

/// SIPp calls through A and B to a callee registered through A; A killed
/// midway, then Redis restarted: every call through B succeeds, B does
/// not crash, and a REGISTER after the restart works.
#[test]
fn load_through_two_nodes_survives_a_node_and_a_redis_restart() {
    const CALLS: u32 = 300;
    const RATE: u32 = 50;
    let mut redis = RedisServer::start().expect("redis starts");
    let a = node(&redis, "a", false);
    let mut b = node(&redis, "b", false);
    let uas_port = wisp_tests::free_port();
    let uas = Sipp::uas(scenario("uas.xml"), Transport::Udp, uas_port, 0)
        .spawn()
        .expect("uas starts");
    let mut ua = Ua::new(a.addr());
    let reply = ua.register(
        &a.uri("service"),
        &format!("Contact: <sip:service@127.0.0.1:{uas_port}>\r\n"),
    );
    assert_eq!(status(&reply), "SIP/2.0 200 OK", "{reply}");
    std::thread::sleep(Duration::from_millis(300));

    let mut via_a = Sipp::uac(
        scenario("uac.xml"),
        Transport::Udp,
        a.addr(),
        a.addr(),
        CALLS,
    );
    via_a.rate = RATE;
    via_a.timeout = Duration::from_secs(20);
    let via_a = via_a.spawn().expect("uac through A");
    let mut via_b = Sipp::uac(
        scenario("uac.xml"),
        Transport::Udp,
        b.addr(),
        b.addr(),
        CALLS,
    );
    via_b.rate = RATE;
    via_b.timeout = Duration::from_secs(30);
    let via_b = via_b.spawn().expect("uac through B");

    std::thread::sleep(Duration::from_secs(2));
    drop(a);
    std::thread::sleep(Duration::from_secs(1));
    redis.restart().expect("redis restarts");
    b.wait_for_log("link to redis down", 1, WAIT)
        .expect("B saw redis go");
    b.wait_for_log("link to redis up", 1, Duration::from_secs(10))
        .expect("B's link comes back");

    let outcome = via_b.wait().expect("uac through B ends");
    assert_all_successful("calls through B", &outcome, CALLS);
    let through_a = via_a.wait().expect("uac through A ends");
    eprintln!(
        "calls through A (killed after 2 s): {} successful, {} failed",
        through_a.successful, through_a.failed
    );
    let mut ua_b = Ua::new(b.addr());
    let reply = ua_b.register(
        &b.uri("service2"),
        &format!("Contact: <sip:service2@127.0.0.1:{uas_port}>\r\n"),
    );
    assert_eq!(status(&reply), "SIP/2.0 200 OK", "{reply}");
    assert!(metrics(&b).contains("wisp_cluster_redis_up 1"));
    drop(uas);
}
