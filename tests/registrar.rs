//! The registrar, location and digest authentication of the default
//! routing (Kamailio's default config with its `WITH_*` features), on the
//! wire: raw SIP over UDP for the exact answers, SIPp for whole calls.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use md5::Md5;
use sha2::{Digest, Sha256};
use wisp_tests::{
    add_subscriber_to as add_subscriber, assert_all_successful, free_port, header_of, scenario,
    Routing, SilentPeer, Sipp, Transport, Wisp,
};

const WAIT: Duration = Duration::from_secs(5);

/// A user agent on its own UDP socket, talking raw SIP to wisp.
struct Ua {
    socket: UdpSocket,
    wisp: SocketAddr,
    seq: u32,
    call_id: String,
}

impl Ua {
    fn new(wisp: SocketAddr) -> Ua {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket.set_read_timeout(Some(WAIT)).expect("timeout");
        Ua {
            socket,
            wisp,
            seq: 0,
            call_id: format!("ua-{}-{}", std::process::id(), free_port()),
        }
    }

    fn port(&self) -> u16 {
        self.socket.local_addr().expect("addr").port()
    }

    /// Sends a request and returns its final answer (provisionals skipped).
    fn send(&self, message: &str) -> String {
        self.socket
            .send_to(message.as_bytes(), self.wisp)
            .expect("send");
        self.final_answer()
    }

    /// The next final answer to a request already sent (provisionals skipped).
    fn final_answer(&self) -> String {
        let deadline = Instant::now() + WAIT;
        let mut buf = vec![0u8; 65_536];
        loop {
            assert!(Instant::now() < deadline, "no final answer in time");
            let len = match self.socket.recv(&mut buf) {
                Ok(len) => len,
                Err(err) => panic!("no answer: {err}"),
            };
            let text = String::from_utf8_lossy(&buf[..len]).into_owned();
            if !text.starts_with("SIP/2.0 1") {
                return text;
            }
        }
    }

    /// A request of this UA's dialog-less call, with a fresh branch and CSeq.
    fn request(&mut self, method: &str, uri: &str, from: &str, to: &str, extra: &str) -> String {
        self.seq += 1;
        format!(
            "{method} {uri} SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{call}x{seq};rport\r\n\
             From: <{from}>;tag=f{seq}\r\n\
             To: <{to}>\r\n\
             Call-ID: {call}\r\n\
             CSeq: {seq} {method}\r\n\
             Max-Forwards: 70\r\n\
             {extra}\
             Content-Length: 0\r\n\r\n",
            port = self.port(),
            call = self.call_id,
            seq = self.seq,
        )
    }

    /// A REGISTER of `aor` (a SIP URI) with `extra` headers.
    fn register(&mut self, aor: &str, extra: &str) -> String {
        let registrar = format!("sip:{}", self.wisp);
        let msg = self.request("REGISTER", &registrar, aor, aor, extra);
        self.send(&msg)
    }
}

fn status(reply: &str) -> &str {
    reply.lines().next().unwrap_or_default()
}

/// The value of `name="value"` or `name=value` in a challenge.
fn param<'a>(challenge: &'a str, name: &str) -> Option<&'a str> {
    let start = challenge.find(&format!("{name}="))? + name.len() + 1;
    let rest = &challenge[start..];
    match rest.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next(),
        None => rest.split([',', ' ']).next(),
    }
}

fn hash(algorithm: &str, data: &str) -> String {
    match algorithm {
        "SHA-256" => hex::encode(Sha256::digest(data.as_bytes())),
        _ => hex::encode(Md5::digest(data.as_bytes())),
    }
}

/// Credentials answering `challenge` (qop=auth), computed from scratch
/// as RFC 7616 §3.4.1 says.
fn credentials(
    challenge: &str,
    user: &str,
    password: &str,
    method: &str,
    uri: &str,
    nc: u32,
) -> String {
    let realm = param(challenge, "realm").expect("realm");
    let nonce = param(challenge, "nonce").expect("nonce");
    let algorithm = param(challenge, "algorithm").unwrap_or("MD5");
    let ha1 = hash(algorithm, &format!("{user}:{realm}:{password}"));
    let ha2 = hash(algorithm, &format!("{method}:{uri}"));
    let nc = format!("{nc:08x}");
    let response = hash(
        algorithm,
        &format!("{ha1}:{nonce}:{nc}:0a4f113b:auth:{ha2}"),
    );
    format!(
        "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", \
         response=\"{response}\", algorithm={algorithm}, qop=auth, nc={nc}, cnonce=\"0a4f113b\""
    )
}

/// Every value of a header in a message (one per line).
fn headers<'a>(message: &'a str, name: &str) -> Vec<&'a str> {
    message
        .lines()
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
        .collect()
}

fn tenant(routing: Routing, params: &[(&str, &str)]) -> String {
    routing.tenant_with_params(params).expect("tenant")
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

/// Waits until the peer got a message containing `needle`.
fn peer_gets(peer: &SilentPeer, needle: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(m) = peer.received().into_iter().find(|m| m.contains(needle)) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "the peer got no message with {needle:?}: {:?}",
            peer.received()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

both!(
    register_with_digest_auth,
    register_with_digest_auth_rust,
    register_with_digest_auth_js
);

fn register_with_digest_auth(routing: Routing) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("wisp.db");
    let toml = tenant(routing, &[("WITH_AUTH", "yes")]);
    add_subscriber(&db, &toml, "alice@127.0.0.1", "wonderland").expect("user add");
    add_subscriber(&db, &toml, "bob@127.0.0.1", "builder").expect("user add");
    let wisp = Wisp::start_with_db(&toml, &db).expect("wisp starts");
    let me = format!("127.0.0.1:{}", wisp.port);
    let alice = format!("sip:alice@{me}");
    let registrar = format!("sip:{me}");
    let mut ua = Ua::new(wisp.addr());
    let contact = format!("Contact: <sip:alice@127.0.0.1:{}>\r\n", ua.port());

    // No credentials: 401 with a SHA-256 and an MD5 challenge (RFC 8760).
    let reply = ua.register(&alice, &contact);
    assert_eq!(status(&reply), "SIP/2.0 401 Unauthorized", "{reply}");
    let challenges = headers(&reply, "WWW-Authenticate");
    assert_eq!(challenges.len(), 2, "{reply}");
    assert!(challenges[0].contains("algorithm=SHA-256"), "{reply}");
    assert!(challenges[1].contains("algorithm=MD5"), "{reply}");
    assert_eq!(param(challenges[0], "realm"), Some("127.0.0.1"));
    assert_eq!(param(challenges[0], "qop"), Some("auth"));

    // A wrong password: challenged again.
    let auth = credentials(challenges[0], "alice", "rabbit", "REGISTER", &registrar, 1);
    let reply = ua.register(&alice, &format!("{contact}Authorization: {auth}\r\n"));
    assert_eq!(status(&reply), "SIP/2.0 401 Unauthorized", "{reply}");

    // The right one, SHA-256: 200 listing the binding.
    let auth = credentials(
        challenges[0],
        "alice",
        "wonderland",
        "REGISTER",
        &registrar,
        2,
    );
    let with_auth = format!("{contact}Authorization: {auth}\r\n");
    let reply = ua.register(&alice, &with_auth);
    assert_eq!(status(&reply), "SIP/2.0 200 OK", "{reply}");
    let bound = header_of(&reply, "Contact").unwrap_or_default().to_owned();
    assert!(
        bound.contains(&format!("sip:alice@127.0.0.1:{}", ua.port())),
        "{reply}"
    );
    assert!(bound.contains("expires="), "{reply}");

    // The same credentials again (same nonce and nonce-count): a replay.
    let reply = ua.register(&alice, &with_auth);
    assert_eq!(status(&reply), "SIP/2.0 401 Unauthorized", "{reply}");

    // MD5 with the next nonce-count of the other challenge works too.
    let auth = credentials(
        challenges[1],
        "alice",
        "wonderland",
        "REGISTER",
        &registrar,
        1,
    );
    let reply = ua.register(&alice, &format!("{contact}Authorization: {auth}\r\n"));
    assert_eq!(status(&reply), "SIP/2.0 200 OK", "{reply}");

    // Authenticated as alice, registering bob: 403 (`$au != $tU`).
    let bob = format!("sip:bob@{me}");
    let auth = credentials(
        challenges[1],
        "alice",
        "wonderland",
        "REGISTER",
        &registrar,
        2,
    );
    let reply = ua.register(&bob, &format!("{contact}Authorization: {auth}\r\n"));
    assert_eq!(status(&reply), "SIP/2.0 403 Forbidden auth ID", "{reply}");

    // An unknown user: challenged, never let in.
    let carol = format!("sip:carol@{me}");
    let auth = credentials(challenges[1], "carol", "x", "REGISTER", &registrar, 3);
    let reply = ua.register(&carol, &format!("{contact}Authorization: {auth}\r\n"));
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
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("wisp.db");
    let toml = tenant(
        routing,
        &[("WITH_AUTH", "yes"), ("AUTH_NONCE_EXPIRES", "1")],
    );
    add_subscriber(&db, &toml, "alice@127.0.0.1", "wonderland").expect("user add");
    let wisp = Wisp::start_with_db(&toml, &db).expect("wisp starts");
    let me = format!("127.0.0.1:{}", wisp.port);
    let alice = format!("sip:alice@{me}");
    let registrar = format!("sip:{me}");
    let mut ua = Ua::new(wisp.addr());
    let contact = format!("Contact: <sip:alice@127.0.0.1:{}>\r\n", ua.port());
    let reply = ua.register(&alice, &contact);
    let first = headers(&reply, "WWW-Authenticate")[0].to_owned();
    assert!(!first.contains("stale"), "{reply}");
    // Past the nonce's lifetime of one second.
    std::thread::sleep(Duration::from_millis(1100));
    let auth = credentials(&first, "alice", "wonderland", "REGISTER", &registrar, 1);
    let reply = ua.register(&alice, &format!("{contact}Authorization: {auth}\r\n"));
    assert_eq!(status(&reply), "SIP/2.0 401 Unauthorized", "{reply}");
    let renewed = headers(&reply, "WWW-Authenticate")[0].to_owned();
    assert!(renewed.contains("stale=true"), "{reply}");
    let auth = credentials(&renewed, "alice", "wonderland", "REGISTER", &registrar, 1);
    let reply = ua.register(&alice, &format!("{contact}Authorization: {auth}\r\n"));
    assert_eq!(status(&reply), "SIP/2.0 200 OK", "{reply}");
}

both!(
    callers_must_authenticate_and_no_open_relay,
    callers_must_authenticate_and_no_open_relay_rust,
    callers_must_authenticate_and_no_open_relay_js
);

fn callers_must_authenticate_and_no_open_relay(routing: Routing) {
    let toml = tenant(routing, &[("WITH_AUTH", "yes")]);
    let wisp = Wisp::start(&toml).expect("wisp starts");
    let me = format!("127.0.0.1:{}", wisp.port);
    let mut ua = Ua::new(wisp.addr());

    // A caller of our domain: 407 with a proxy challenge.
    let bob = format!("sip:bob@{me}");
    let invite = ua.request("INVITE", &bob, &format!("sip:alice@{me}"), &bob, "");
    let reply = ua.send(&invite);
    assert_eq!(
        status(&reply),
        "SIP/2.0 407 Proxy Authentication Required",
        "{reply}"
    );
    assert_eq!(headers(&reply, "Proxy-Authenticate").len(), 2, "{reply}");

    // From a foreign domain to a foreign domain: not relayed.
    let far = "sip:someone@192.0.2.10";
    let invite = ua.request("INVITE", far, "sip:x@198.51.100.1", far, "");
    let reply = ua.send(&invite);
    assert_eq!(status(&reply), "SIP/2.0 403 Not relaying", "{reply}");

    // From a foreign domain to an unknown user of ours: 404.
    let invite = ua.request("INVITE", &bob, "sip:x@198.51.100.1", &bob, "");
    let reply = ua.send(&invite);
    assert_eq!(status(&reply), "SIP/2.0 404 Not Found", "{reply}");
}

both!(
    trusted_addresses_skip_authentication,
    trusted_addresses_skip_authentication_rust,
    trusted_addresses_skip_authentication_js
);

fn trusted_addresses_skip_authentication(routing: Routing) {
    let toml = tenant(
        routing,
        &[
            ("WITH_AUTH", "yes"),
            ("WITH_IPAUTH", "yes"),
            ("IPAUTH_ALLOW", "127.0.0.0/8"),
        ],
    );
    let wisp = Wisp::start(&toml).expect("wisp starts");
    let me = format!("127.0.0.1:{}", wisp.port);
    let mut ua = Ua::new(wisp.addr());
    let bob = format!("sip:bob@{me}");
    let invite = ua.request("INVITE", &bob, &format!("sip:alice@{me}"), &bob, "");
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
    let toml = tenant(routing, &[("REG_MAX_CONTACTS", "2")]);
    let wisp = Wisp::start(&toml).expect("wisp starts");
    let me = format!("127.0.0.1:{}", wisp.port);
    let peer = SilentPeer::start().expect("peer");
    let mut ua = Ua::new(wisp.addr());
    let carol = format!("sip:carol@{me}");
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
    let options = ua.request("OPTIONS", &carol, "sip:x@198.51.100.1", &carol, "");
    ua.socket
        .send_to(options.as_bytes(), wisp.addr())
        .expect("send");
    peer_gets(
        &peer,
        &format!("OPTIONS sip:carol@127.0.0.1:{} SIP/2.0", peer.addr().port()),
    );

    // Unknown user: 404.
    let dave = format!("sip:dave@{me}");
    let invite = ua.request("INVITE", &dave, "sip:x@198.51.100.1", &dave, "");
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
    assert_eq!(headers(&reply, "Contact").len(), 1, "{reply}");

    // One more is fine; un-REGISTER of one removes only it.
    let reply = ua.register(&carol, "Contact: <sip:carol@192.0.2.1>;q=0.5\r\n");
    assert_eq!(headers(&reply, "Contact").len(), 2, "{reply}");
    let reply = ua.register(&carol, &format!("Contact: {contact}\r\nExpires: 0\r\n"));
    assert_eq!(status(&reply), "SIP/2.0 200 OK", "{reply}");
    let left = headers(&reply, "Contact");
    assert_eq!(left.len(), 1, "{reply}");
    assert!(left[0].starts_with("<sip:carol@192.0.2.1>"), "{reply}");

    // Contact: * with Expires: 0 removes them all: carol is gone.
    let reply = ua.register(&carol, "Contact: *\r\nExpires: 0\r\n");
    assert_eq!(status(&reply), "SIP/2.0 200 OK", "{reply}");
    assert!(headers(&reply, "Contact").is_empty(), "{reply}");
    let invite = ua.request("INVITE", &carol, "sip:x@198.51.100.1", &carol, "");
    assert_eq!(status(&ua.send(&invite)), "SIP/2.0 404 Not Found");
}

both!(
    expired_bindings_are_gone,
    expired_bindings_are_gone_rust,
    expired_bindings_are_gone_js
);

fn expired_bindings_are_gone(routing: Routing) {
    let toml = tenant(routing, &[("REG_MIN_EXPIRES", "1")]);
    let wisp = Wisp::start(&toml).expect("wisp starts");
    let me = format!("127.0.0.1:{}", wisp.port);
    let mut ua = Ua::new(wisp.addr());
    let erin = format!("sip:erin@{me}");
    let reply = ua.register(&erin, "Contact: <sip:erin@192.0.2.1>;expires=1\r\n");
    assert_eq!(status(&reply), "SIP/2.0 200 OK", "{reply}");
    assert_eq!(headers(&reply, "Contact").len(), 1, "{reply}");
    // Queries until the binding has expired (a second, whole seconds).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = ua.register(&erin, "");
        if headers(&reply, "Contact").is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "still bound: {reply}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let invite = ua.request("INVITE", &erin, "sip:x@198.51.100.1", &erin, "");
    assert_eq!(status(&ua.send(&invite)), "SIP/2.0 404 Not Found");
}

/// Registers `user` at wisp with a contact at `contact`, no auth.
fn register_plain(wisp: &Wisp, user: &str, contact: SocketAddr) -> String {
    let mut ua = Ua::new(wisp.addr());
    let aor = format!("sip:{user}@127.0.0.1:{}", wisp.port);
    ua.register(
        &aor,
        &format!("Contact: <sip:{user}@{contact}>;expires=600\r\n"),
    )
}

/// Whether a query of `user` at a (new) wisp lists a binding.
fn bound(wisp: &Wisp, user: &str) -> bool {
    let mut ua = Ua::new(wisp.addr());
    let aor = format!("sip:{user}@127.0.0.1:{}", wisp.port);
    let reply = ua.register(&aor, "");
    assert_eq!(status(&reply), "SIP/2.0 200 OK", "{reply}");
    !headers(&reply, "Contact").is_empty()
}

fn restart(toml: &str, db: &Path) -> (bool, Option<String>) {
    let peer = SilentPeer::start().expect("peer");
    let wisp = Wisp::start_with_db(toml, db).expect("wisp starts");
    let reply = register_plain(&wisp, "frank", peer.addr());
    assert_eq!(status(&reply), "SIP/2.0 200 OK", "{reply}");
    drop(wisp);
    let wisp = Wisp::start_with_db(toml, db).expect("wisp starts again");
    let kept = bound(&wisp, "frank");
    let forwarded = kept.then(|| {
        let mut ua = Ua::new(wisp.addr());
        let frank = format!("sip:frank@127.0.0.1:{}", wisp.port);
        let options = ua.request("OPTIONS", &frank, "sip:x@198.51.100.1", &frank, "");
        ua.socket
            .send_to(options.as_bytes(), wisp.addr())
            .expect("send");
        peer_gets(&peer, "OPTIONS sip:frank@")
    });
    (kept, forwarded)
}

both!(
    registrations_survive_a_restart_with_usrlocdb,
    registrations_survive_a_restart_with_usrlocdb_rust,
    registrations_survive_a_restart_with_usrlocdb_js
);

fn registrations_survive_a_restart_with_usrlocdb(routing: Routing) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (kept, forwarded) = restart(
        &tenant(routing, &[("WITH_USRLOCDB", "yes")]),
        &dir.path().join("wisp.db"),
    );
    assert!(kept, "the binding is gone after a restart");
    assert!(forwarded.is_some());
}

both!(
    registrations_do_not_survive_a_restart_without_usrlocdb,
    registrations_do_not_survive_a_restart_without_usrlocdb_rust,
    registrations_do_not_survive_a_restart_without_usrlocdb_js
);

fn registrations_do_not_survive_a_restart_without_usrlocdb(routing: Routing) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (kept, _) = restart(&tenant(routing, &[]), &dir.path().join("wisp.db"));
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
    let wisp = Wisp::start(&tenant(routing, &[("WITH_NAT", "yes")])).expect("wisp starts");
    let me = format!("127.0.0.1:{}", wisp.port);
    let mut ua = Ua::new(wisp.addr());
    let gina = format!("sip:gina@{me}");
    let reply = ua.register(&gina, "Contact: <sip:gina@10.0.0.5:5060>\r\n");
    assert_eq!(status(&reply), "SIP/2.0 200 OK", "{reply}");
    // The reply went to the source port (force_rport).
    let via = header_of(&reply, "Via").unwrap_or_default();
    assert!(via.contains(&format!("rport={}", ua.port())), "{reply}");

    let caller = Ua::new(wisp.addr());
    let mut caller = caller;
    let options = caller.request("OPTIONS", &gina, "sip:x@198.51.100.1", &gina, "");
    caller
        .socket
        .send_to(options.as_bytes(), wisp.addr())
        .expect("send");
    // gina's UA (our `ua` socket) gets it, the Request-URI her contact.
    let mut buf = vec![0u8; 65_536];
    let len = ua.socket.recv(&mut buf).expect("relayed to the source");
    let got = String::from_utf8_lossy(&buf[..len]).into_owned();
    assert!(
        got.starts_with("OPTIONS sip:gina@10.0.0.5:5060 SIP/2.0"),
        "{got}"
    );
    // Her answer names her private address; the caller gets it fixed to
    // the address the answer came from (fix_nated_contact in REPLY_ONE).
    let mut answer = String::from("SIP/2.0 200 OK\r\n");
    for line in got.lines() {
        let name = line.split(':').next().unwrap_or_default();
        if ["Via", "From", "Call-ID", "CSeq"].contains(&name) {
            answer.push_str(&format!("{line}\r\n"));
        } else if name == "To" {
            answer.push_str(&format!("{line};tag=gina\r\n"));
        }
    }
    answer.push_str("Contact: <sip:gina@10.0.0.5:5060>\r\nContent-Length: 0\r\n\r\n");
    ua.socket
        .send_to(answer.as_bytes(), wisp.addr())
        .expect("answer");
    let len = caller.socket.recv(&mut buf).expect("the answer comes back");
    let reply = String::from_utf8_lossy(&buf[..len]);
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
    let toml = tenant(
        routing,
        &[
            ("WITH_PSTN", "yes"),
            ("PSTN_GW_IP", "127.0.0.1"),
            ("PSTN_GW_PORT", &port),
        ],
    );
    let wisp = Wisp::start(&toml).expect("wisp starts");
    let me = format!("127.0.0.1:{}", wisp.port);
    let mut ua = Ua::new(wisp.addr());
    let number = format!("sip:+493012345678@{me}");
    let invite = ua.request("INVITE", &number, "sip:x@198.51.100.1", &number, "");
    assert_eq!(status(&ua.send(&invite)), "SIP/2.0 403 Not Allowed");
    let invite = ua.request("INVITE", &number, &format!("sip:alice@{me}"), &number, "");
    ua.socket
        .send_to(invite.as_bytes(), wisp.addr())
        .expect("send");
    peer_gets(
        &gw,
        &format!("INVITE sip:+493012345678@127.0.0.1:{port} SIP/2.0"),
    );
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
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("wisp.db");
    let toml = tenant(
        routing,
        &[
            ("WITH_AUTH", "yes"),
            ("WITH_USRLOCDB", "yes"),
            // SIPp 3.6 reads only the first challenge and knows only MD5.
            ("AUTH_ALGORITHMS", "MD5"),
        ],
    );
    add_subscriber(&db, &toml, "alice@127.0.0.1", "wonderland").expect("user add");
    add_subscriber(&db, &toml, "bob@127.0.0.1", "builder").expect("user add");
    let mut wisp = Wisp::start_with_db(&toml, &db).expect("wisp starts");

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
    let mut wisp = Wisp::start(&tenant(routing, &[])).expect("wisp starts");
    let me = format!("127.0.0.1:{}", wisp.port);
    let mut ua = Ua::new(wisp.addr());

    // hank is behind an edge proxy (the peer), which put itself in Path.
    let edge = SilentPeer::start().expect("edge");
    let hank = format!("sip:hank@{me}");
    let path = format!("<sip:{};lr>", edge.addr());
    let reply = ua.register(
        &hank,
        &format!("Contact: <sip:hank@192.0.2.5>\r\nPath: {path}\r\n"),
    );
    assert_eq!(status(&reply), "SIP/2.0 200 OK", "{reply}");
    assert_eq!(header_of(&reply, "Path"), Some(path.as_str()), "{reply}");
    let options = ua.request("OPTIONS", &hank, "sip:x@198.51.100.1", &hank, "");
    ua.socket
        .send_to(options.as_bytes(), wisp.addr())
        .expect("send");
    let got = peer_gets(&edge, "OPTIONS sip:hank@192.0.2.5 SIP/2.0");
    assert_eq!(header_of(&got, "Route"), Some(path.as_str()), "{got}");

    // ivy has two phones: both get the request.
    let (one, two) = (
        SilentPeer::start().expect("phone"),
        SilentPeer::start().expect("phone"),
    );
    let ivy = format!("sip:ivy@{me}");
    let reply = ua.register(
        &ivy,
        &format!(
            "Contact: <sip:ivy@{}>;q=0.4, <sip:ivy@{}>;q=0.9\r\n",
            one.addr(),
            two.addr()
        ),
    );
    assert_eq!(headers(&reply, "Contact").len(), 2, "{reply}");
    let options = ua.request("OPTIONS", &ivy, "sip:x@198.51.100.1", &ivy, "");
    ua.socket
        .send_to(options.as_bytes(), wisp.addr())
        .expect("send");
    peer_gets(&one, &format!("OPTIONS sip:ivy@{} SIP/2.0", one.addr()));
    peer_gets(&two, &format!("OPTIONS sip:ivy@{} SIP/2.0", two.addr()));

    // jack is busy: the caller gets 486 and a "failed" record is written.
    let jack_phone = Ua::new(wisp.addr());
    let jack = format!("sip:jack@{me}");
    let reply = ua.register(
        &jack,
        &format!("Contact: <sip:jack@127.0.0.1:{}>\r\n", jack_phone.port()),
    );
    assert_eq!(status(&reply), "SIP/2.0 200 OK", "{reply}");
    let caller = Ua::new(wisp.addr());
    let mut caller = caller;
    let invite = caller.request("INVITE", &jack, "sip:x@198.51.100.1", &jack, "");
    caller
        .socket
        .send_to(invite.as_bytes(), wisp.addr())
        .expect("send");
    let mut buf = vec![0u8; 65_536];
    let len = jack_phone
        .socket
        .recv(&mut buf)
        .expect("INVITE reaches jack");
    let got = String::from_utf8_lossy(&buf[..len]).into_owned();
    assert!(got.starts_with("INVITE sip:jack@"), "{got}");
    let mut busy = String::from("SIP/2.0 486 Busy Here\r\n");
    for line in got.lines() {
        let name = line.split(':').next().unwrap_or_default();
        if ["Via", "From", "Call-ID", "CSeq"].contains(&name) {
            busy.push_str(&format!("{line}\r\n"));
        } else if name == "To" {
            busy.push_str(&format!("{line};tag=jack\r\n"));
        }
    }
    busy.push_str("Content-Length: 0\r\n\r\n");
    jack_phone
        .socket
        .send_to(busy.as_bytes(), wisp.addr())
        .expect("486");
    let answer = caller.final_answer();
    assert_eq!(status(&answer), "SIP/2.0 486 Busy Here", "{answer}");
    wisp.wait_for_log("event=\"failed\"", 1, WAIT)
        .expect("acc failed record");
}
