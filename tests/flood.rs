//! Flood control (Kamailio's pike) and the guests' `ratelimit` service,
//! against the real binary: 127.0.0.1 is trusted by default, 127.0.0.2 is
//! not, so an attacker on 127.0.0.2 meets the limits while the tests'
//! legitimate traffic on 127.0.0.1 does not.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use wisp_tests::{
    assert_all_successful, build_guest, free_port, scenario, Request, Routing, Sipp, Tenant,
    Transport, Wisp, WispBuilder,
};

/// The value of a metric line (its name with labels, as rendered), 0 when
/// absent.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

fn metrics(wisp: &Wisp) -> String {
    let out = wisp.ctl(&["metrics"]).expect("wisp ctl metrics");
    assert!(out.success, "{out:?}");
    out.stdout
}

/// 5,000 INVITEs a second from 127.0.0.2 for 10 s, while SIPp on
/// 127.0.0.1 places 100 calls a second through wisp: every call goes
/// through, the flooder is banned at once, and wisp's memory stays where
/// it was.
#[test]
fn a_flood_is_banned_while_calls_go_through() {
    const CALLS: u32 = 1000;
    const FLOOD_RATE: u32 = 5000;
    const FLOOD: u32 = FLOOD_RATE * 10;
    let wisp = WispBuilder::new()
        .routing(Routing::Rust)
        .admin()
        .start()
        .expect("wisp starts");
    let uas_port = free_port();
    let uas = Sipp::uas(scenario("uas.xml"), Transport::Udp, uas_port, CALLS)
        .spawn()
        .expect("uas starts");
    std::thread::sleep(Duration::from_millis(500));
    let rss_before = wisp.rss_kib().expect("rss");

    let callee: SocketAddr = format!("127.0.0.1:{uas_port}").parse().expect("addr");
    let mut uac = Sipp::uac(
        scenario("uac.xml"),
        Transport::Udp,
        callee,
        wisp.addr(),
        CALLS,
    );
    uac.rate = 100;
    uac.timeout = Duration::from_secs(120);
    let uac = uac.spawn().expect("uac starts");

    // The flooder: INVITEs to wisp itself, from 127.0.0.2 (the later
    // -i wins over the harness's 127.0.0.1).
    let mut flood = Sipp::uac(
        scenario("flood-invite.xml"),
        Transport::Udp,
        wisp.addr(),
        wisp.addr(),
        FLOOD,
    );
    flood.rate = FLOOD_RATE;
    flood.timeout = Duration::from_secs(60);
    flood.extra = vec!["-i".into(), "127.0.0.2".into()];
    let started = Instant::now();
    let flooder = flood.spawn().expect("flooder starts");
    let mut wisp = wisp;
    wisp.wait_for_log("source banned", 1, Duration::from_secs(30))
        .expect("the flooder is banned");
    let banned_after = started.elapsed();
    let flood_outcome = flooder.wait().expect("flooder runs");
    let flood_took = started.elapsed();

    let outcome = uac.wait().expect("uac runs");
    drop(uas);
    let rss_after = wisp.rss_kib().expect("rss");
    let text = metrics(&wisp);
    let limit = metric(&text, "wisp_flood_dropped_total{reason=\"limit\"}");
    let banned = metric(&text, "wisp_flood_dropped_total{reason=\"banned\"}");
    let bans = metric(&text, "wisp_flood_bans_total{by=\"flood\"}");
    let banned_now = metric(&text, "wisp_flood_banned");
    let sent = flood_outcome.successful + flood_outcome.failed;
    eprintln!(
        "flood: {sent} INVITEs from 127.0.0.2 in {:.1} s ({:.0}/s); banned {} ms after the flood started",
        flood_took.as_secs_f64(),
        sent as f64 / flood_took.as_secs_f64(),
        banned_after.as_millis()
    );
    eprintln!(
        "flood: dropped {} past the limit and {} while banned ({} let through of {sent}); bans {bans}, banned now {banned_now}",
        limit,
        banned,
        sent as f64 - limit - banned
    );
    eprintln!(
        "flood: wisp RSS {} KiB before, {} KiB after ({:+} KiB)",
        rss_before,
        rss_after,
        rss_after as i64 - rss_before as i64
    );
    assert_all_successful("calls from 127.0.0.1 under the flood", &outcome, CALLS);
    assert_eq!(bans, 1.0, "one ban:\n{text}");
    assert_eq!(banned_now, 1.0);
    assert_eq!(limit, 1.0, "the request past the limit starts the ban");
    assert!(
        banned > f64::from(FLOOD) / 2.0,
        "most of the flood dropped as banned: {banned}"
    );
    // Generous: wisp's growth under the flood is a few MiB.
    assert!(
        rss_after < rss_before + 64 * 1024,
        "RSS {rss_before} -> {rss_after} KiB"
    );
}

/// A UDP socket on 127.0.0.2 (not trusted) or 127.0.0.1 (trusted) that
/// asks wisp one request at a time.
struct Asker {
    socket: UdpSocket,
    wisp: SocketAddr,
}

impl Asker {
    fn on(ip: &str, wisp: SocketAddr) -> Asker {
        let socket = UdpSocket::bind((ip, 0)).expect("bind");
        socket
            .set_read_timeout(Some(Duration::from_millis(1500)))
            .expect("timeout");
        Asker { socket, wisp }
    }

    /// The first line of the answer to an OPTIONS with `X-Op: op`; None
    /// when nothing came back.
    fn ask(&self, op: &str) -> Option<String> {
        let msg = Request::new("OPTIONS", &format!("sip:rl@{}", self.wisp))
            .headers(&format!("Max-Forwards: 70\r\nX-Op: {op}\r\n"))
            .to_string();
        self.socket
            .send_to(msg.as_bytes(), self.wisp)
            .expect("send");
        let mut buf = [0u8; 4096];
        loop {
            let (n, _) = self.socket.recv_from(&mut buf).ok()?;
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let first = text.lines().next().unwrap_or_default().to_owned();
            if !first.starts_with("SIP/2.0 1") {
                return Some(first);
            }
        }
    }
}

const RATELIMIT_GUEST: &str = r#"
use wisp_sdk::prelude::*;
struct G;
impl Router for G {
    fn route(req: &Request) -> Flow {
        let op = req.header("X-Op").unwrap_or_default();
        let mut words = op.split_whitespace();
        match (words.next(), words.next()) {
            (Some("banned"), Some(ip)) => {
                let left = ratelimit::banned(ip);
                req.reply(200, &format!("left {}", left.map_or(-1, i64::from)))
            }
            (Some("unban"), Some(ip)) => {
                req.reply(200, &format!("unbanned {}", ratelimit::unban(ip)))
            }
            _ => {
                let key = format!("src:{}", req.source().ip);
                if ratelimit::check(&key, 3, 60) {
                    req.reply(200, "allowed")
                } else if ratelimit::ban_source(req, 30).is_ok() {
                    req.reply(403, "banned")
                } else {
                    req.reply(403, "refused")
                }
            }
        }
    }
}
wisp_sdk::export_router!(G);
"#;

/// A guest limits by its own key and bans what goes past it: the ban
/// drops the source's messages before any hook; a trusted source cannot
/// be banned; the guest reads and lifts its ban.
#[test]
fn the_routing_rate_limits_and_bans() {
    let wasm = build_guest("ratelimiter", RATELIMIT_GUEST).expect("guest builds");
    let wisp = WispBuilder::new()
        .tenant(Tenant::new("limits").component(&wasm))
        .admin()
        .start()
        .expect("wisp starts");
    let attacker = Asker::on("127.0.0.2", wisp.addr());
    let local = Asker::on("127.0.0.1", wisp.addr());
    for _ in 0..3 {
        assert_eq!(
            attacker.ask("check").as_deref(),
            Some("SIP/2.0 200 allowed")
        );
    }
    assert_eq!(attacker.ask("check").as_deref(), Some("SIP/2.0 403 banned"));
    assert_eq!(attacker.ask("check"), None, "dropped before the hook");
    // 127.0.0.1 has a key of its own, and is trusted: never banned.
    for _ in 0..3 {
        assert_eq!(local.ask("check").as_deref(), Some("SIP/2.0 200 allowed"));
    }
    assert_eq!(local.ask("check").as_deref(), Some("SIP/2.0 403 refused"));
    assert_eq!(local.ask("check").as_deref(), Some("SIP/2.0 403 refused"));
    let left = local.ask("banned 127.0.0.2").expect("answered");
    let secs: i64 = left
        .strip_prefix("SIP/2.0 200 left ")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{left}"));
    assert!((25..=30).contains(&secs), "{left}");
    assert_eq!(
        local.ask("banned 127.0.0.3").as_deref(),
        Some("SIP/2.0 200 left -1")
    );
    assert_eq!(
        local.ask("unban 127.0.0.2").as_deref(),
        Some("SIP/2.0 200 unbanned true")
    );
    // Heard again (and still past its limit: banned again).
    assert_eq!(attacker.ask("check").as_deref(), Some("SIP/2.0 403 banned"));

    let text = metrics(&wisp);
    eprintln!(
        "{}",
        text.lines()
            .filter(|l| l.contains("ratelimit") || l.contains("flood"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(metric(&text, "wisp_flood_bans_total{by=\"guest\"}"), 2.0);
    assert_eq!(
        metric(
            &text,
            "wisp_ratelimit_total{tenant=\"limits\",kind=\"bans\"}"
        ),
        2.0
    );
    assert_eq!(
        metric(
            &text,
            "wisp_ratelimit_total{tenant=\"limits\",kind=\"refused\"}"
        ),
        4.0
    );
    assert!(metric(&text, "wisp_flood_dropped_total{reason=\"banned\"}") >= 1.0);
    assert_eq!(metric(&text, "wisp_flood_bans_total{by=\"flood\"}"), 0.0);
}
