//! A thousand tenants in one process, each with a domain of its own and a
//! subscriber, on the bundled routing with WITH_AUTH: a tenant's domain is
//! local for its routing (a user of it registers and is called through
//! it; an OPTIONS to another tenant's domain is answered there, not
//! relayed), and memory per idle tenant is measured (issue: at most 1 MiB).

use std::path::Path;
use std::time::{Duration, Instant};

use wisp_tests::{
    challenge_param, header_of, request, udp_reply, Request, SilentPeer, Tenant, Ua, Wisp,
    WispBuilder,
};

const TENANTS: usize = 1000;
/// The tenant whose user registers and is called.
const CALLED: usize = 517;
const WAIT: Duration = Duration::from_secs(10);

/// Wisp with `count` tenants `t0` … on domains `t0.example` …, each
/// with the subscriber `alice@tN.example` (password `pw-N`) in `db`.
fn start(count: usize, db: &Path) -> (Wisp, Duration) {
    let storage = wisp::services::Storage::open(db).expect("database");
    let mut builder = WispBuilder::new().db(db);
    for i in 0..count {
        let (name, domain) = (format!("t{i}"), format!("t{i}.example"));
        wisp::services::subscribers::add(&storage, &name, "alice", &domain, &format!("pw-{i}"))
            .expect("subscriber added");
        builder = builder.tenant(Tenant::new(&name).domain(&domain).param("WITH_AUTH", "yes"));
    }
    drop(storage);
    let started = Instant::now();
    let wisp = builder.start().expect("wisp starts");
    let took = started.elapsed();
    // Settle: the first seconds allocate what they keep (threads, caches).
    std::thread::sleep(Duration::from_secs(2));
    (wisp, took)
}

fn status(reply: &str) -> &str {
    reply.lines().next().unwrap_or_default()
}

#[test]
fn a_thousand_tenants_each_serving_its_own_domain() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (one, one_took) = start(1, &dir.path().join("one.db"));
    let base = one.rss_kib().expect("rss");
    drop(one);

    let (wisp, took) = start(TENANTS, &dir.path().join("many.db"));
    let rss = wisp.rss_kib().expect("rss");
    let per_tenant = rss.saturating_sub(base) as f64 / (TENANTS - 1) as f64;
    eprintln!(
        "{TENANTS} tenants: started in {:.1} s (1 tenant: {:.1} s); resident memory \
         {rss} KiB, {base} KiB with 1 tenant: {per_tenant:.0} KiB per idle tenant",
        took.as_secs_f64(),
        one_took.as_secs_f64()
    );

    // alice of tenant t517 registers through her domain, with her password.
    let domain = format!("t{CALLED}.example");
    let aor = format!("sip:alice@{domain}");
    let phone = SilentPeer::start().expect("alice's phone");
    let contact = format!("Contact: <sip:alice@{}>\r\n", phone.addr());
    let mut ua = Ua::new(wisp.addr());
    let reply = ua.register(&aor, &contact);
    assert_eq!(status(&reply), "SIP/2.0 401 Unauthorized", "{reply}");
    let challenge = header_of(&reply, "WWW-Authenticate").expect("challenge");
    assert_eq!(challenge_param(challenge, "realm"), Some(domain.as_str()));
    let password = format!("pw-{CALLED}");
    let reply = ua.register_answering(&aor, &contact, challenge, ("alice", &password), 1);
    assert_eq!(status(&reply), "SIP/2.0 200 OK", "{reply}");

    // A caller from outside calls her through the domain: wisp takes the
    // domain as its own, finds her binding and relays to her phone.
    let invite = Request::new("INVITE", &format!("sip:alice@{domain}:{}", wisp.port))
        .from("sip:bob@198.51.100.1")
        .to_string();
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("caller socket");
    socket
        .send_to(invite.as_bytes(), wisp.addr())
        .expect("send");
    let relayed = phone
        .wait_for(&format!("INVITE sip:alice@{}", phone.addr()), WAIT)
        .expect("the INVITE reaches alice's phone");
    assert!(relayed.contains("Call-ID: "), "{relayed}");

    // Another tenant's domain is answered by that tenant, here.
    for other in [0, 7, CALLED + 1, TENANTS - 1] {
        let uri = format!("sip:t{other}.example:{}", wisp.port);
        let reply = udp_reply(wisp.addr(), request("OPTIONS", &uri, "").as_bytes());
        assert_eq!(status(&reply), "SIP/2.0 200 OK", "t{other}: {reply}");
    }
    // A domain no tenant claims is not taken for one.
    let uri = format!("sip:t{TENANTS}.example:{}", wisp.port);
    let reply = udp_reply(wisp.addr(), request("OPTIONS", &uri, "").as_bytes());
    assert_ne!(status(&reply), "SIP/2.0 200 OK", "{reply}");

    assert!(
        per_tenant <= 1024.0,
        "{per_tenant:.0} KiB per idle tenant, more than 1 MiB"
    );
}

/// A tenant added by a configuration reload serves its domain at once, and
/// a domain added to a tenant that is otherwise unchanged is local for its
/// routing too: no alias, no restart.
#[test]
fn a_tenant_added_at_runtime_serves_its_domain() {
    let wisp = WispBuilder::new()
        .admin()
        .tenant(Tenant::new("first").domain("first.example"))
        .start()
        .expect("wisp starts");
    let ask = |domain: &str| {
        let uri = format!("sip:{domain}:{}", wisp.port);
        let reply = udp_reply(wisp.addr(), request("OPTIONS", &uri, "").as_bytes());
        status(&reply).to_owned()
    };
    assert_eq!(ask("first.example"), "SIP/2.0 200 OK");
    wisp.rewrite_config(
        "[[tenant]]\nname = \"first\"\ndomains = [\"first.example\", \"also.example\"]\n\
         [[tenant]]\nname = \"late\"\ndomains = [\"late.example\"]\n",
    )
    .expect("rewrite");
    let reload = wisp.ctl(&["reload"]).expect("ctl");
    assert!(reload.success, "{reload:?}");
    assert_eq!(ask("late.example"), "SIP/2.0 200 OK");
    assert_eq!(ask("also.example"), "SIP/2.0 200 OK");
    assert_eq!(ask("first.example"), "SIP/2.0 200 OK");
}
