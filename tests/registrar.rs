//! The registrar, location and digest authentication of the default
//! routing (Kamailio's default config with its `WITH_*` features), on the
//! wire: raw SIP over UDP for the exact answers, SIPp for whole calls.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use wisp_tests::{
    assert_all_successful, challenge_param, free_port, header_of, headers_of, response_to,
    scenario, Routing, SilentPeer, Sipp, Transport, Ua, Wisp, WispBuilder,
};

const WAIT: Duration = Duration::from_secs(5);

/// A caller of a foreign domain (TEST-NET-2), none of wisp's users.
const OUTSIDER: &str = "sip:x@198.51.100.1";

fn status(reply: &str) -> &str {
    reply.lines().next().unwrap_or_default()
}

/// A test run with the Rust default routing and with its TypeScript port.
macro_rules! both {
    ($name:ident, $rust:ident, $js:ident) => {
        #[test]
        fn $rust() {
            $name(Routing::Rust)
        }

        #[test]
        fn $js() {
            $name(Routing::Js)
        }
    };
}

both!(
    register_with_digest_auth,
    register_with_digest_auth_rust,
    register_with_digest_auth_js
);

fn register_with_digest_auth(routing: Routing) {
    let wisp = WispBuilder::new()
        .routing(routing)
        .param("WITH_AUTH", "yes")
        .subscriber("alice@127.0.0.1", "wonderland")
        .subscriber("bob@127.0.0.1", "builder")
        .start()
        .expect("wisp starts");
    let alice = wisp.uri("alice");
    let mut ua = Ua::new(wisp.addr());
    let contact = format!("Contact: <sip:alice@127.0.0.1:{}>\r\n", ua.port());

    // No credentials: 401 with a SHA-256 and an MD5 challenge (RFC 8760).
    let reply = ua.register(&alice, &contact);
    assert_eq!(status(&reply), "SIP/2.0 401 Unauthorized", "{reply}");
    let challenges = headers_of(&reply, "WWW-Authenticate");
    assert_eq!(challenges.len(), 2, "{reply}");
    assert!(challenges[0].contains("algorithm=SHA-256"), "{reply}");
    assert!(challenges[1].contains("algorithm=MD5"), "{reply}");
    assert_eq!(challenge_param(challenges[0], "realm"), Some("127.0.0.1"));
    assert_eq!(challenge_param(challenges[0], "qop"), Some("auth"));
    let (sha256, md5) = (challenges[0], challenges[1]);

    // A wrong password: challenged again.
    let reply = ua.register_answering(&alice, &contact, sha256, ("alice", "rabbit"), 1);
    assert_eq!(status(&reply), "SIP/2.0 401 Unauthorized", "{reply}");

    // The right one, SHA-256: 200 listing the binding.
    let reply = ua.register_answering(&alice, &contact, sha256, ("alice", "wonderland"), 2);
    assert_eq!(status(&reply), "SIP/2.0 200 OK", "{reply}");
    let bound = header_of(&reply, "Contact").unwrap_or_default().to_owned();
    assert!(
        bound.contains(&format!("sip:alice@127.0.0.1:{}", ua.port())),
        "{reply}"
    );
    assert!(bound.contains("expires="), "{reply}");

    // The same credentials again (same nonce and nonce-count): a replay.
    let reply = ua.register_answering(&alice, &contact, sha256, ("alice", "wonderland"), 2);
    assert_eq!(status(&reply), "SIP/2.0 401 Unauthorized", "{reply}");

    // MD5 with the next nonce-count of the other challenge works too.
    let reply = ua.register_answering(&alice, &contact, md5, ("alice", "wonderland"), 1);
    assert_eq!(status(&reply), "SIP/2.0 200 OK", "{reply}");

    // Authenticated as alice, registering bob: 403 (`$au != $tU`).
    let bob = wisp.uri("bob");
    let reply = ua.register_answering(&bob, &contact, md5, ("alice", "wonderland"), 2);
    assert_eq!(status(&reply), "SIP/2.0 403 Forbidden auth ID", "{reply}");

    // An unknown user: challenged, never let in.
    let carol = wisp.uri("carol");
    let reply = ua.register_answering(&carol, &contact, md5, ("carol", "x"), 3);
    assert_eq!(status(&reply), "SIP/2.0 401 Unauthorized", "{reply}");
}

both!(
    expired_nonce_is_stale,
    expired_nonce_is_stale_rust,
    expired_nonce_is_stale_js
);

/// Credentials with an expired nonce: challenged again with stale=true,
/// and the new nonce works with the same password.
fn expired_nonce_is_stale(routing: Routing) {
    let wisp = WispBuilder::new()
        .routing(routing)
        .param("WITH_AUTH", "yes")
        .param("AUTH_NONCE_EXPIRES", "1")
        .subscriber("alice@127.0.0.1", "wonderland")
        .start()
        .expect("wisp starts");
    let alice = wisp.uri("alice");
    let mut ua = Ua::new(wisp.addr());
    let contact = format!("Contact: <sip:alice@127.0.0.1:{}>\r\n", ua.port());
    let reply = ua.register(&alice, &contact);
    let first = headers_of(&reply, "WWW-Authenticate")[0].to_owned();
    assert!(!first.contains("stale"), "{reply}");
    // Past the nonce's lifetime of one second.
    std::thread::sleep(Duration::from_millis(1100));
    let reply = ua.register_answering(&alice, &contact, &first, ("alice", "wonderland"), 1);
    assert_eq!(status(&reply), "SIP/2.0 401 Unauthorized", "{reply}");
    let renewed = headers_of(&reply, "WWW-Authenticate")[0].to_owned();
    assert!(renewed.contains("stale=true"), "{reply}");
    let reply = ua.register_answering(&alice, &contact, &renewed, ("alice", "wonderland"), 1);
    assert_eq!(status(&reply), "SIP/2.0 200 OK", "{reply}");
}

both!(
    callers_must_authenticate_and_no_open_relay,
    callers_must_authenticate_and_no_open_relay_rust,
    callers_must_authenticate_and_no_open_relay_js
);

fn callers_must_authenticate_and_no_open_relay(routing: Routing) {
    let wisp = WispBuilder::new()
        .routing(routing)
        .param("WITH_AUTH", "yes")
        .start()
        .expect("wisp starts");
    let mut ua = Ua::new(wisp.addr());

    // A caller of our domain: 407 with a proxy challenge.
    let bob = wisp.uri("bob");
    let invite = ua.request("INVITE", &bob, &wisp.uri("alice"));
    let reply = ua.send(&invite);
    assert_eq!(
        status(&reply),
        "SIP/2.0 407 Proxy Authentication Required",
        "{reply}"
    );
    assert_eq!(headers_of(&reply, "Proxy-Authenticate").len(), 2, "{reply}");

    // From a foreign domain to a foreign domain: not relayed.
    let invite = ua.request("INVITE", "sip:someone@192.0.2.10", OUTSIDER);
    let reply = ua.send(&invite);
    assert_eq!(status(&reply), "SIP/2.0 403 Not relaying", "{reply}");

    // From a foreign domain to an unknown user of ours: 404.
    let invite = ua.request("INVITE", &bob, OUTSIDER);
    let reply = ua.send(&invite);
    assert_eq!(status(&reply), "SIP/2.0 404 Not Found", "{reply}");
}

both!(
    trusted_addresses_skip_authentication,
    trusted_addresses_skip_authentication_rust,
    trusted_addresses_skip_authentication_js
);

fn trusted_addresses_skip_authentication(routing: Routing) {
    let wisp = WispBuilder::new()
        .routing(routing)
        .param("WITH_AUTH", "yes")
        .param("WITH_IPAUTH", "yes")
        .param("IPAUTH_ALLOW", "127.0.0.0/8")
        .start()
        .expect("wisp starts");
    let mut ua = Ua::new(wisp.addr());
    let invite = ua.request("INVITE", &wisp.uri("bob"), &wisp.uri("alice"));
    let reply = ua.send(&invite);
    // Let through without a challenge; bob is not registered.
    assert_eq!(status(&reply), "SIP/2.0 404 Not Found", "{reply}");
}

both!(
    location_without_auth,
    location_without_auth_rust,
    location_without_auth_js
);

/// A registered user is reached at its contact; without a binding, 404.
/// Registered, refreshed, removed, with `Contact: *`, limits.
fn location_without_auth(routing: Routing) {
    let wisp = WispBuilder::new()
        .routing(routing)
        .param("REG_MAX_CONTACTS", "2")
        .start()
        .expect("wisp starts");
    let peer = SilentPeer::start().expect("peer");
    let mut ua = Ua::new(wisp.addr());
    let carol = wisp.uri("carol");
    let contact = format!("<sip:carol@127.0.0.1:{}>", peer.addr().port());

    let reply = ua.register(&carol, &format!("Contact: {contact};expires=600\r\n"));
    assert_eq!(status(&reply), "SIP/2.0 200 OK", "{reply}");
    assert_eq!(
        header_of(&reply, "Contact"),
        Some(format!("{contact};expires=600").as_str())
    );
    assert!(
        header_of(&reply, "Date").is_some_and(|d| d.ends_with(" GMT")),
        "{reply}"
    );

    // A request for carol goes to her contact, the Request-URI rewritten.
    let options = ua.request("OPTIONS", &carol, OUTSIDER);
    ua.send_no_wait(&options);
    let relayed = format!("OPTIONS sip:carol@127.0.0.1:{} SIP/2.0", peer.addr().port());
    peer.wait_for(&relayed, WAIT).expect("relayed to carol");

    // Unknown user: 404.
    let dave = wisp.uri("dave");
    let invite = ua.request("INVITE", &dave, OUTSIDER);
    assert_eq!(status(&ua.send(&invite)), "SIP/2.0 404 Not Found");

    // Too brief: 423 with Min-Expires.
    let reply = ua.register(&carol, &format!("Contact: {contact};expires=10\r\n"));
    assert_eq!(status(&reply), "SIP/2.0 423 Interval Too Brief", "{reply}");
    assert_eq!(header_of(&reply, "Min-Expires"), Some("60"));

    // Two more contacts would be three: refused, nothing changed.
    let reply = ua.register(
        &carol,
        "Contact: <sip:carol@192.0.2.1>, <sip:carol@192.0.2.2>\r\n",
    );
    assert_eq!(
        status(&reply),
        "SIP/2.0 403 Too Many Registered Contacts",
        "{reply}"
    );
    // A query (no Contact) lists the bindings.
    let reply = ua.register(&carol, "");
    assert_eq!(headers_of(&reply, "Contact").len(), 1, "{reply}");

    // One more is fine; un-REGISTER of one removes only it.
    let reply = ua.register(&carol, "Contact: <sip:carol@192.0.2.1>;q=0.5\r\n");
    assert_eq!(headers_of(&reply, "Contact").len(), 2, "{reply}");
    let reply = ua.register(&carol, &format!("Contact: {contact}\r\nExpires: 0\r\n"));
    assert_eq!(status(&reply), "SIP/2.0 200 OK", "{reply}");
    let left = headers_of(&reply, "Contact");
    assert_eq!(left.len(), 1, "{reply}");
    assert!(left[0].starts_with("<sip:carol@192.0.2.1>"), "{reply}");

    // Contact: * with Expires: 0 removes them all: carol is gone.
    let reply = ua.register(&carol, "Contact: *\r\nExpires: 0\r\n");
    assert_eq!(status(&reply), "SIP/2.0 200 OK", "{reply}");
    assert!(headers_of(&reply, "Contact").is_empty(), "{reply}");
    let invite = ua.request("INVITE", &carol, OUTSIDER);
    assert_eq!(status(&ua.send(&invite)), "SIP/2.0 404 Not Found");
}

both!(
    expired_bindings_are_gone,
    expired_bindings_are_gone_rust,
    expired_bindings_are_gone_js
);

fn expired_bindings_are_gone(routing: Routing) {
    let wisp = WispBuilder::new()
        .routing(routing)
        .param("REG_MIN_EXPIRES", "1")
        .start()
        .expect("wisp starts");
    let mut ua = Ua::new(wisp.addr());
    let erin = wisp.uri("erin");
    let reply = ua.register(&erin, "Contact: <sip:erin@192.0.2.1>;expires=1\r\n");
    assert_eq!(status(&reply), "SIP/2.0 200 OK", "{reply}");
    assert_eq!(headers_of(&reply, "Contact").len(), 1, "{reply}");
    // Queries until the binding has expired (a second, whole seconds).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = ua.register(&erin, "");
        if headers_of(&reply, "Contact").is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "still bound: {reply}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let invite = ua.request("INVITE", &erin, OUTSIDER);
    assert_eq!(status(&ua.send(&invite)), "SIP/2.0 404 Not Found");
}

/// Registers `user` at wisp with a contact at `contact`, no auth.
fn register_plain(wisp: &Wisp, user: &str, contact: SocketAddr) -> String {
    let mut ua = Ua::new(wisp.addr());
    ua.register(
        &wisp.uri(user),
        &format!("Contact: <sip:{user}@{contact}>;expires=600\r\n"),
    )
}

/// Whether a query of `user` at a (new) wisp lists a binding.
fn bound(wisp: &Wisp, user: &str) -> bool {
    let mut ua = Ua::new(wisp.addr());
    let reply = ua.register(&wisp.uri(user), "");
    assert_eq!(status(&reply), "SIP/2.0 200 OK", "{reply}");
    !headers_of(&reply, "Contact").is_empty()
}

/// How the first wisp of [`restart`] stops.
#[derive(Clone, Copy)]
enum Stop {
    /// Killed (SIGKILL, a crash) once it logged that it wrote the bindings.
    KillAfterWrite,
    /// SIGTERM right after the REGISTER: a clean shutdown.
    Term,
}

/// Registers frank, restarts wisp on the same database, and tells whether
/// frank is still bound and, if so, the request relayed to him.
fn restart(wisp: WispBuilder, stop: Stop) -> (bool, Option<String>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let wisp = wisp.db(&dir.path().join("wisp.db"));
    let peer = SilentPeer::start().expect("peer");
    let mut first = wisp.start().expect("wisp starts");
    let reply = register_plain(&first, "frank", peer.addr());
    assert_eq!(status(&reply), "SIP/2.0 200 OK", "{reply}");
    match stop {
        // Written behind within `location_write_interval_ms` (1 s).
        Stop::KillAfterWrite => first
            .wait_for_log("bindings written to the database", 1, WAIT)
            .expect("bindings written"),
        Stop::Term => {
            let status = first.terminate().expect("wisp stops");
            assert!(status.success(), "SIGTERM is a clean stop, not {status}");
        }
    }
    drop(first);
    let wisp = wisp.start().expect("wisp starts again");
    let kept = bound(&wisp, "frank");
    let forwarded = kept.then(|| {
        let mut ua = Ua::new(wisp.addr());
        let options = ua.request("OPTIONS", &wisp.uri("frank"), OUTSIDER);
        ua.send_no_wait(&options);
        peer.wait_for("OPTIONS sip:frank@", WAIT)
            .expect("relayed to frank")
    });
    (kept, forwarded)
}

both!(
    registrations_survive_a_restart_with_usrlocdb,
    registrations_survive_a_restart_with_usrlocdb_rust,
    registrations_survive_a_restart_with_usrlocdb_js
);

/// Persistent bindings are written behind: a crash after the write keeps
/// them, and a clean shutdown right after the REGISTER writes them.
fn registrations_survive_a_restart_with_usrlocdb(routing: Routing) {
    for stop in [Stop::KillAfterWrite, Stop::Term] {
        let (kept, forwarded) = restart(
            WispBuilder::new()
                .routing(routing)
                .param("WITH_USRLOCDB", "yes"),
            stop,
        );
        assert!(kept, "the binding is gone after a restart");
        assert!(forwarded.is_some());
    }
}

both!(
    registrations_do_not_survive_a_restart_without_usrlocdb,
    registrations_do_not_survive_a_restart_without_usrlocdb_rust,
    registrations_do_not_survive_a_restart_without_usrlocdb_js
);

fn registrations_do_not_survive_a_restart_without_usrlocdb(routing: Routing) {
    let (kept, _) = restart(WispBuilder::new().routing(routing), Stop::Term);
    assert!(
        !kept,
        "a binding without WITH_USRLOCDB outlived the process"
    );
}

both!(
    nat_binding_is_reached_at_its_source,
    nat_binding_is_reached_at_its_source_rust,
    nat_binding_is_reached_at_its_source_js
);

/// WITH_NAT: a contact with a private address registered from elsewhere
/// is reached where the REGISTER came from.
fn nat_binding_is_reached_at_its_source(routing: Routing) {
    let wisp = WispBuilder::new()
        .routing(routing)
        .param("WITH_NAT", "yes")
        .start()
        .expect("wisp starts");
    let mut ua = Ua::new(wisp.addr());
    let gina = wisp.uri("gina");
    let reply = ua.register(&gina, "Contact: <sip:gina@10.0.0.5:5060>\r\n");
    assert_eq!(status(&reply), "SIP/2.0 200 OK", "{reply}");
    // The reply went to the source port (force_rport).
    let via = header_of(&reply, "Via").unwrap_or_default();
    assert!(via.contains(&format!("rport={}", ua.port())), "{reply}");

    let mut caller = Ua::new(wisp.addr());
    let options = caller.request("OPTIONS", &gina, OUTSIDER);
    caller.send_no_wait(&options);
    // gina's UA (our `ua` socket) gets it, the Request-URI her contact.
    let got = ua.receive();
    assert!(
        got.starts_with("OPTIONS sip:gina@10.0.0.5:5060 SIP/2.0"),
        "{got}"
    );
    // Her answer names her private address; the caller gets it fixed to
    // the address the answer came from (fix_nated_contact in REPLY_ONE).
    let contact = "Contact: <sip:gina@10.0.0.5:5060>\r\n";
    ua.send_no_wait(&response_to(&got, "200 OK", "gina", contact));
    let reply = caller.receive();
    assert_eq!(status(&reply), "SIP/2.0 200 OK", "{reply}");
    assert_eq!(
        header_of(&reply, "Contact"),
        Some(format!("<sip:gina@127.0.0.1:{}>", ua.port()).as_str()),
        "{reply}"
    );
}

both!(
    pstn_numbers_go_to_the_gateway,
    pstn_numbers_go_to_the_gateway_rust,
    pstn_numbers_go_to_the_gateway_js
);

/// WITH_PSTN: international numbers go to the gateway, from local users only.
fn pstn_numbers_go_to_the_gateway(routing: Routing) {
    let gw = SilentPeer::start().expect("gateway");
    let port = gw.addr().port().to_string();
    let wisp = WispBuilder::new()
        .routing(routing)
        .param("WITH_PSTN", "yes")
        .param("PSTN_GW_IP", "127.0.0.1")
        .param("PSTN_GW_PORT", &port)
        .start()
        .expect("wisp starts");
    let mut ua = Ua::new(wisp.addr());
    let number = wisp.uri("+493012345678");
    let invite = ua.request("INVITE", &number, OUTSIDER);
    assert_eq!(status(&ua.send(&invite)), "SIP/2.0 403 Not Allowed");
    let invite = ua.request("INVITE", &number, &wisp.uri("alice"));
    ua.send_no_wait(&invite);
    let relayed = format!("INVITE sip:+493012345678@127.0.0.1:{port} SIP/2.0");
    gw.wait_for(&relayed, WAIT).expect("relayed to the gateway");
}

both!(
    authenticated_call_to_a_registered_user,
    authenticated_call_to_a_registered_user_rust,
    authenticated_call_to_a_registered_user_js
);

/// The whole thing with SIPp: bob registers with digest auth, alice calls
/// him with proxy auth, the call reaches bob's contact; accounting records
/// the start and the end of the call.
fn authenticated_call_to_a_registered_user(routing: Routing) {
    let mut wisp = WispBuilder::new()
        .routing(routing)
        .param("WITH_AUTH", "yes")
        .param("WITH_USRLOCDB", "yes")
        // SIPp 3.6 reads only the first challenge and knows only MD5.
        .param("AUTH_ALGORITHMS", "MD5")
        .subscriber("alice@127.0.0.1", "wonderland")
        .subscriber("bob@127.0.0.1", "builder")
        .start()
        .expect("wisp starts");

    let bob_port = free_port();
    let callee = Sipp::uas(scenario("uas.xml"), Transport::Udp, bob_port, 1)
        .spawn()
        .expect("callee starts");
    let mut register = Sipp::uac(
        scenario("register-auth.xml"),
        Transport::Udp,
        wisp.addr(),
        wisp.addr(),
        1,
    );
    register.caller = "bob".into();
    register.extra = ["-au", "bob", "-ap", "builder", "-key", "contact_port"]
        .iter()
        .map(|s| s.to_string())
        .chain([bob_port.to_string()])
        .collect();
    let outcome = register.run().expect("register runs");
    assert_all_successful("REGISTER with digest", &outcome, 1);
    wisp.wait_for_log("bindings saved", 1, WAIT)
        .expect("binding saved");

    let mut caller = Sipp::uac(
        scenario("uac-auth.xml"),
        Transport::Udp,
        wisp.addr(),
        wisp.addr(),
        1,
    );
    caller.caller = "alice".into();
    caller.extra = ["-s", "bob", "-au", "alice", "-ap", "wonderland"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    caller.timeout = Duration::from_secs(30);
    let outcome = caller.run().expect("caller runs");
    assert_all_successful("authenticated call", &outcome, 1);
    let callee = callee.wait().expect("callee ends");
    assert_all_successful("registered callee", &callee, 1);

    wisp.wait_for_log("event=\"start\"", 1, WAIT)
        .expect("acc start record");
    wisp.wait_for_log("event=\"stop\"", 1, WAIT)
        .expect("acc stop record");
}

both!(
    path_forking_and_failed_calls,
    path_forking_and_failed_calls_rust,
    path_forking_and_failed_calls_js
);

/// A binding's Path becomes the Route set towards it (RFC 3327); several
/// bindings are forked to in parallel; an INVITE answered 486 everywhere
/// is accounted as failed.
fn path_forking_and_failed_calls(routing: Routing) {
    let mut wisp = WispBuilder::new()
        .routing(routing)
        .start()
        .expect("wisp starts");
    let mut ua = Ua::new(wisp.addr());

    // hank is behind an edge proxy (the peer), which put itself in Path.
    let edge = SilentPeer::start().expect("edge");
    let hank = wisp.uri("hank");
    let path = format!("<sip:{};lr>", edge.addr());
    let reply = ua.register(
        &hank,
        &format!("Contact: <sip:hank@192.0.2.5>\r\nPath: {path}\r\n"),
    );
    assert_eq!(status(&reply), "SIP/2.0 200 OK", "{reply}");
    assert_eq!(header_of(&reply, "Path"), Some(path.as_str()), "{reply}");
    let options = ua.request("OPTIONS", &hank, OUTSIDER);
    ua.send_no_wait(&options);
    let got = edge
        .wait_for("OPTIONS sip:hank@192.0.2.5 SIP/2.0", WAIT)
        .expect("relayed to the edge");
    assert_eq!(header_of(&got, "Route"), Some(path.as_str()), "{got}");

    // ivy has two phones: both get the request.
    let (one, two) = (
        SilentPeer::start().expect("phone"),
        SilentPeer::start().expect("phone"),
    );
    let ivy = wisp.uri("ivy");
    let reply = ua.register(
        &ivy,
        &format!(
            "Contact: <sip:ivy@{}>;q=0.4, <sip:ivy@{}>;q=0.9\r\n",
            one.addr(),
            two.addr()
        ),
    );
    assert_eq!(headers_of(&reply, "Contact").len(), 2, "{reply}");
    let options = ua.request("OPTIONS", &ivy, OUTSIDER);
    ua.send_no_wait(&options);
    for phone in [&one, &two] {
        let relayed = format!("OPTIONS sip:ivy@{} SIP/2.0", phone.addr());
        phone
            .wait_for(&relayed, WAIT)
            .expect("forked to each phone");
    }

    // jack is busy: the caller gets 486 and a "failed" record is written.
    let jack_phone = Ua::new(wisp.addr());
    let jack = wisp.uri("jack");
    let reply = ua.register(
        &jack,
        &format!("Contact: <sip:jack@127.0.0.1:{}>\r\n", jack_phone.port()),
    );
    assert_eq!(status(&reply), "SIP/2.0 200 OK", "{reply}");
    let mut caller = Ua::new(wisp.addr());
    let invite = caller.request("INVITE", &jack, OUTSIDER);
    caller.send_no_wait(&invite);
    let got = jack_phone.receive();
    assert!(got.starts_with("INVITE sip:jack@"), "{got}");
    jack_phone.send_no_wait(&response_to(&got, "486 Busy Here", "jack", ""));
    let answer = caller.final_answer();
    assert_eq!(status(&answer), "SIP/2.0 486 Busy Here", "{answer}");
    wisp.wait_for_log("event=\"failed\"", 1, WAIT)
        .expect("acc failed record");
}
