//! A hostile tenant cannot grow the host: each host call that adds to a
//! message, forks, sends or stores stops at the tenant's caps (`limits` of
//! its `[[tenant]]`), the guest sees the error, and another tenant keeps
//! its own room.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use wisp_tests::{build_guest, request, udp_reply, SilentPeer, Tenant, Wisp, WispBuilder};

/// Tries each effect until the host refuses it, and says how far it got
/// (and the error) in its reply's reason phrase.
const GUEST: &str = r#"
use wisp_sdk::prelude::*;

struct Greedy;

/// How many times `f` succeeds before its first error (at most 100,000).
fn until_refused(mut f: impl FnMut(usize) -> wisp_sdk::Result<()>) -> (usize, String) {
    for i in 0..100_000 {
        if let Err(err) = f(i) {
            return (i, err.to_string());
        }
    }
    (100_000, "never refused".into())
}

fn report(req: &Request, what: &str, (n, err): (usize, String)) -> Flow {
    req.reply(200, &format!("{what}={n} ({err})"))
}

impl Router for Greedy {
    fn route(req: &Request) -> Flow {
        let user = req.uri_user().unwrap_or_default();
        let (what, arg) = user.split_once('-').unwrap_or((user.as_str(), "0"));
        let arg: usize = arg.parse().unwrap_or(0);
        match what {
            "headers" => report(req, "headers", until_refused(|_| req.append_header("X-Cap", "v"))),
            "bytes" => {
                // The reply's reason counts too: a short one, the error logged.
                let big = "b".repeat(2000);
                let (n, err) = until_refused(|_| req.append_header("X-Big", &big));
                log::warn(&format!("bytes={n} ({err})"));
                req.reply(200, &format!("bytes={n}"))
            }
            "branches" => {
                // append-branch and the relay decision share the cap: the
                // relay past it is refused by the host (500).
                let (n, err) = until_refused(|i| req.append_branch(&format!("sip:b{i}@192.0.2.1")));
                log::warn(&format!("branches={n} ({err})"));
                req.relay()
            }
            "forwards" => {
                // A hook decides once: one forward, one message sent.
                req.forward_to(&config::param("SINK").unwrap_or_default())
            }
            "replies" => {
                // A reply's headers count like appended ones: 11 are past
                // the cap of 10, and the host answers 500 instead.
                let headers: Vec<(String, String)> = (0..arg).map(|i| (format!("X-R{i}"), "v".to_owned())).collect();
                let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
                req.reply_with(200, &format!("replies={arg}"), &headers)
            }
            "vars" => {
                for i in 0..arg {
                    vars::set(&format!("v{i}"), "x")?;
                }
                req.reply(200, &format!("vars={arg}"))
            }
            "varbytes" => {
                vars::set("v", &"x".repeat(arg))?;
                req.reply(200, &format!("varbytes={arg}"))
            }
            "kv" => {
                // Keys "ARG-0", "ARG-1"... of ARG bytes each until one is
                // not stored; asked again, the same keys are rewritten.
                let value = "v".repeat(arg.max(1));
                let mut n = 0;
                while n < 100_000 {
                    let key = format!("{arg}-{n}");
                    if let Err(err) = kv::set(&key, &value, None) {
                        log::warn(&format!("kv={n} ({err})"));
                        break;
                    }
                    n += 1;
                }
                req.reply(200, &format!("kv={n}"))
            }
            "myself" => {
                let port = config::param("PORT").unwrap_or_default();
                let mine = is_myself(&format!("sip:{}:{port}", config::param("MINE").unwrap_or_default()));
                let theirs = is_myself(&format!("sip:{}:{port}", config::param("THEIRS").unwrap_or_default()));
                req.reply(200, &format!("mine={mine} theirs={theirs}"))
            }
            _ => req.reply(200, "Fine"),
        }
    }
}

wisp_sdk::export_router!(Greedy);
"#;

const LIMITS: &str = "limits = { headers_per_hook = 10, bytes_per_hook = 8192, \
    branches_per_hook = 4, forwards_per_hook = 3, replies_per_hook = 5, vars = 8, \
    var_bytes = 256, kv_keys = 100, kv_bytes = 65536 }\n";

fn start(sink: SocketAddr) -> Wisp {
    let wasm = build_guest("greedy", GUEST).expect("guest builds");
    let tenant = |name: &str, mine: &str, theirs: &str| {
        Tenant::new(name)
            .component(&wasm)
            .domain(mine)
            .param("SINK", &sink.to_string())
            .param("PORT", "$PORT")
            .param("MINE", mine)
            .param("THEIRS", theirs)
            .toml(LIMITS)
    };
    WispBuilder::new()
        .tenant(tenant("a", "a.example", "b.example"))
        .tenant(tenant("b", "b.example", "a.example"))
        .start()
        .expect("wisp starts")
}

/// The reason phrase of the answer to an OPTIONS for `user@domain`.
fn ask(wisp: &Wisp, user: &str, domain: &str) -> String {
    let uri = format!("sip:{user}@{domain}:{}", wisp.port);
    let reply = udp_reply(wisp.addr(), request("OPTIONS", &uri, "").as_bytes());
    let status = reply.lines().next().unwrap_or_default().to_owned();
    eprintln!("{user}@{domain}: {status}");
    status
}

#[test]
fn each_effect_stops_at_its_cap() {
    let sink = SilentPeer::start().expect("sink");
    let mut wisp = start(sink.addr());

    let status = ask(&wisp, "headers", "a.example");
    assert!(status.starts_with("SIP/2.0 200 headers=10 (not allowed: more than 10 headers added in one hook call (limits.headers_per_hook))"), "{status}");
    // 2005 bytes a header: four fit in 8192.
    assert_eq!(ask(&wisp, "bytes", "a.example"), "SIP/2.0 200 bytes=4");
    wisp.wait_for_log(
        "bytes=4 (not allowed: more than 8192 bytes of text for messages in one hook call (limits.bytes_per_hook))",
        1,
        WAIT,
    )
    .expect("the guest saw the error");
    // append-branch and the relay decision share the cap: four branches,
    // then the relay is a decision the host cannot carry out (500).
    assert!(ask(&wisp, "branches", "a.example").starts_with("SIP/2.0 500 "));
    wisp.wait_for_log("branches=4 (not allowed: ", 1, WAIT)
        .expect("the guest saw the error");
    wisp.wait_for_log(
        "route returned a decision the host cannot carry out: more than 4 branches",
        1,
        WAIT,
    )
    .expect("the host logged the refused relay");

    // A hook decides once (0.2): a forward sends the request once. (0.1
    // queued forwards by side effect, up to forwards_per_hook.)
    assert!(ask_nothing(&wisp, "forwards", "a.example"));
    std::thread::sleep(Duration::from_millis(500));
    let forwarded = sink
        .received()
        .iter()
        .filter(|m| m.starts_with("OPTIONS sip:forwards@"))
        .count();
    assert_eq!(forwarded, 1, "{:?}", sink.received());

    // A reply decision's headers count toward headers_per_hook, as
    // appended ones do: 10 pass, 11 are answered 500. (0.1 counted
    // replies queued by side effect, up to replies_per_hook.)
    assert!(ask(&wisp, "replies-10", "a.example").starts_with("SIP/2.0 200 replies=10"));
    assert!(ask(&wisp, "replies-11", "a.example").starts_with("SIP/2.0 500 "));
    wisp.wait_for_log("more than 10 headers", 1, WAIT)
        .expect("logged");

    // Variables: `set` is refused past the cap; the guest's `?` makes it
    // a failure, logged and answered 500.
    assert!(ask(&wisp, "vars-8", "a.example").starts_with("SIP/2.0 200 vars=8"));
    assert!(ask(&wisp, "vars-9", "a.example").starts_with("SIP/2.0 500 "));
    wisp.wait_for_log(
        "route failed: not allowed: more than 8 variables in one transaction (limits.vars)",
        1,
        WAIT,
    )
    .expect("logged");
    assert!(ask(&wisp, "varbytes-250", "a.example").starts_with("SIP/2.0 200 varbytes=250"));
    assert!(ask(&wisp, "varbytes-256", "a.example").starts_with("SIP/2.0 500 "));
    wisp.wait_for_log("(limits.var_bytes)", 1, WAIT)
        .expect("logged");
    // Nothing stayed behind.
    assert_eq!(ask(&wisp, "fine", "a.example"), "SIP/2.0 200 Fine");
}

const WAIT: Duration = Duration::from_secs(5);

#[test]
fn each_tenant_has_its_own_kv_quota() {
    let sink = SilentPeer::start().expect("sink");
    let mut wisp = start(sink.addr());
    // 100 keys at most, however small.
    assert_eq!(ask(&wisp, "kv-1", "a.example"), "SIP/2.0 200 kv=100");
    wisp.wait_for_log("kv quota reached (100 keys, 65536 bytes at most)", 1, WAIT)
        .expect("the quota is logged when reached");
    // The keys already there can be written again.
    assert_eq!(ask(&wisp, "kv-1", "a.example"), "SIP/2.0 200 kv=100");
    // Tenant b is not refused for a's keys; its values of 1000 bytes reach
    // the 64 KiB first (each key costs key + value + the entry overhead).
    let mut fit = 0;
    let mut bytes = 0;
    loop {
        let cost = format!("1000-{fit}").len() + 1000 + wisp::services::kv::ENTRY_OVERHEAD;
        if bytes + cost > 65536 {
            break;
        }
        bytes += cost;
        fit += 1;
    }
    assert_eq!(
        ask(&wisp, "kv-1000", "b.example"),
        format!("SIP/2.0 200 kv={fit}")
    );
    // And a stays full.
    assert_eq!(ask(&wisp, "kv-2", "a.example"), "SIP/2.0 200 kv=0");
}

#[test]
fn a_tenants_own_domains_are_myself_and_no_others() {
    let sink = SilentPeer::start().expect("sink");
    let wisp = start(sink.addr());
    assert_eq!(
        ask(&wisp, "myself", "a.example"),
        "SIP/2.0 200 mine=true theirs=false"
    );
    assert_eq!(
        ask(&wisp, "myself", "b.example"),
        "SIP/2.0 200 mine=true theirs=false"
    );
}

/// Whether an OPTIONS for `user@domain` gets no answer within a second
/// (it was forwarded statelessly, to a sink that answers nothing).
fn ask_nothing(wisp: &Wisp, user: &str, domain: &str) -> bool {
    let uri = format!("sip:{user}@{domain}:{}", wisp.port);
    all_replies(wisp.addr(), &request("OPTIONS", &uri, "")).is_empty()
}

/// Every answer to `message` within a second.
fn all_replies(to: SocketAddr, message: &str) -> Vec<String> {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("socket");
    socket.send_to(message.as_bytes(), to).expect("send");
    let until = Instant::now() + Duration::from_secs(1);
    let mut replies = Vec::new();
    let mut buf = vec![0u8; 65_536];
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        socket
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("timeout");
        match socket.recv_from(&mut buf) {
            Ok((len, _)) => replies.push(String::from_utf8_lossy(&buf[..len]).into_owned()),
            Err(_) => break,
        }
    }
    replies
}
