//! PJSIP, a real SIP user agent (pjsua2, PyPI package `pjsua2-python`,
//! driven by tests/pjsua/ua.py), against wisp over TLS: two user agents
//! register with digest authentication over TLS connections they verify
//! against the test CA, one calls the other through wisp (the INVITE
//! challenged too), the callee answers, the caller hangs up a second later,
//! and the BYE crosses wisp both ways.
//!
//! The domain is a loopback address of its own with wisp on the standard
//! ports (UDP 5060, TLS 5061): PJSIP leaves the port out of From and To
//! (RFC 3261 Table 1), and wisp's "myself" is an address *and* a port, a
//! portless URI meaning 5060. On a free port of 127.0.0.1 alice's From
//! would not be wisp's domain and her INVITE would go through unchallenged.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use wisp_tests::{repo_root, Pki, Routing, TlsClient, Wisp, WispBuilder};

/// The release the tests are written against; tests/run.sh installs it.
const PJSUA2: &str = "pjsua2-python==2.15.1.post1";

/// Fails, saying how to install it, when Python cannot import pjsua2.
fn require_pjsua2() {
    let out = Command::new("python3")
        .args(["-c", "import pjsua2"])
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "pjsua2 is missing: `python3 -m pip install {PJSUA2}` (tests/run.sh does): {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(err) => panic!("cannot run python3 ({err}); then `python3 -m pip install {PJSUA2}`"),
    }
}

/// A loopback address (127/8, never 127.0.0.x) whose UDP 5060 and TCP
/// 5061 are free, chosen by this process so that runs side by side seldom
/// meet.
fn loopback_domain() -> Ipv4Addr {
    let mut seed = std::process::id()
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
    for _ in 0..100 {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let [a, b, c, _] = seed.to_be_bytes();
        let ip = Ipv4Addr::new(127, a % 254 + 1, b, c % 254 + 1);
        let udp = UdpSocket::bind((ip, 5060));
        let tcp = TcpListener::bind((ip, 5061));
        if udp.is_ok() && tcp.is_ok() {
            return ip;
        }
    }
    panic!("no loopback address with UDP 5060 and TCP 5061 free");
}

/// A ua.py process, killed by PID when dropped.
struct Ua {
    name: &'static str,
    child: Option<Child>,
    events: mpsc::Receiver<Value>,
    /// Every event read so far, in order.
    seen: Vec<Value>,
}

impl Ua {
    fn start(name: &'static str, args: &[String]) -> Ua {
        let script: PathBuf = repo_root().join("tests/pjsua/ua.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start python3 tests/pjsua/ua.py");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                eprintln!("[{name}] {line}");
                match serde_json::from_str::<Value>(&line) {
                    Ok(event) => {
                        let _ = tx.send(event);
                    }
                    Err(err) => eprintln!("[{name}] not an event ({err}): {line}"),
                }
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[{name} pjsip] {line}");
            }
        });
        Ua {
            name,
            child: Some(child),
            events,
            seen: Vec::new(),
        }
    }

    /// Waits for the first event named `event` and returns it.
    fn wait_for(&mut self, event: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        if let Some(found) = self.seen.iter().find(|e| e["event"] == event) {
            return found.clone();
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(e) => {
                    self.seen.push(e.clone());
                    if e["event"] == event {
                        return e;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                    "{}: no {event:?} event within {timeout:?}; events: {:#?}",
                    self.name, self.seen
                ),
                Err(mpsc::RecvTimeoutError::Disconnected) => panic!(
                    "{}: ended without a {event:?} event ({:?}); events: {:#?}",
                    self.name,
                    self.child.as_mut().map(|c| c.wait()),
                    self.seen
                ),
            }
        }
    }

    /// Waits for the process to exit; its status and every event.
    fn finish(mut self, timeout: Duration) -> (ExitStatus, Vec<Value>) {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} still running after {timeout:?}; events: {:#?}",
                    self.name, self.seen
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        // The reader stops at the end of stdout.
        while let Ok(e) = self.events.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(e);
        }
        (status, std::mem::take(&mut self.seen))
    }
}

impl Drop for Ua {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The events named `event`.
fn all<'a>(events: &'a [Value], event: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == event).collect()
}

/// The one event named `event` whose `key` is `value`, or a panic listing
/// the events.
fn one<'a>(who: &str, events: &'a [Value], event: &str, key: &str, value: Value) -> &'a Value {
    let found: Vec<&Value> = all(events, event)
        .into_iter()
        .filter(|e| e[key] == value)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{who}: expected one {event:?} event with {key} = {value}; events: {events:#?}"
    );
    found[0]
}

/// Waits for wisp's accounting line of the call's end: a 200 to the BYE
/// of `call_id` went through it.
fn wait_for_acc_stop(wisp: &Wisp, call_id: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let call = format!("call_id={call_id} ");
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match wisp.log.recv_timeout(left) {
            Ok(line)
                if line.contains("wisp::acc")
                    && line.contains("event=\"stop\"")
                    && line.contains("method=BYE")
                    && line.contains("code=200")
                    && line.contains(&call) =>
            {
                return
            }
            Ok(_) => {}
            Err(_) => panic!("wisp logged no acc stop of call {call_id} within {timeout:?}"),
        }
    }
}

#[test]
fn pjsip_registers_with_digest_and_calls_over_tls() {
    require_pjsua2();
    let ip = loopback_domain();
    let pki = Pki::new().expect("CA");
    let server = pki
        .issue("wisp", &format!("IP:{ip}"))
        .expect("wisp's certificate");
    let tls_addr = SocketAddr::new(IpAddr::V4(ip), 5061);
    let wisp = WispBuilder::new()
        .listen_on(&[&ip.to_string()])
        .toml(&format!(
            "[[listen]]\ntransport = \"udp\"\naddress = \"{ip}:5060\"\n\
             [[listen]]\ntransport = \"tls\"\naddress = \"{tls_addr}\"\n\
             certificate = \"{}\"\nprivate_key = \"{}\"\n",
            server.certificate.display(),
            server.private_key.display()
        ))
        .routing(Routing::Rust)
        .param("WITH_AUTH", "yes")
        .subscriber(&format!("alice@{ip}"), "wonderland")
        .subscriber(&format!("bob@{ip}"), "builder")
        .start()
        .expect("wisp starts");
    // Its TLS listener is up, serving the certificate for the address
    // (the builder waits for two listeners of four).
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(err) = TlsClient::connect(tls_addr, &ip.to_string(), &pki.ca, None) {
        assert!(Instant::now() < deadline, "wisp's TLS listener: {err:#}");
        std::thread::sleep(Duration::from_millis(100));
    }

    let ua_args = |user: &str, password: &str, rest: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [
            "--user",
            user,
            "--password",
            password,
            "--domain",
            &ip.to_string(),
            "--proxy",
            &tls_addr.to_string(),
            "--ca",
            &pki.ca.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(rest.iter().map(|s| s.to_string()));
        args
    };

    // A wrong password: refused, after pjsua answered the challenge.
    let intruder = Ua::start(
        "intruder",
        &ua_args("alice", "rabbit", &["--answer", "--timeout", "20"]),
    );
    let (status, events) = intruder.finish(Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "{events:#?}");
    one("intruder", &events, "registered", "code", 401.into());

    let mut bob = Ua::start(
        "bob",
        &ua_args("bob", "builder", &["--answer", "--timeout", "40"]),
    );
    let registered = bob.wait_for("registered", Duration::from_secs(20));
    assert_eq!(registered["code"], 200, "bob: {registered}");
    let alice = Ua::start(
        "alice",
        &ua_args(
            "alice",
            "wonderland",
            &[
                "--call",
                &format!("sip:bob@{ip}"),
                "--hangup-after",
                "1000",
                "--timeout",
                "30",
            ],
        ),
    );
    let (alice_status, alice_events) = alice.finish(Duration::from_secs(40));
    let (bob_status, bob_events) = bob.finish(Duration::from_secs(20));
    assert!(alice_status.success(), "alice: {alice_status}");
    assert!(bob_status.success(), "bob: {bob_status}");

    for (who, events) in [("alice", &alice_events), ("bob", &bob_events)] {
        // A verified TLS connection to wisp, carrying everything.
        let tls = one(who, events, "tls", "state", "connected".into());
        assert_eq!(tls["verified"], true, "{who}: {tls}");
        assert_eq!(tls["remote"], tls_addr.to_string(), "{who}: {tls}");
        eprintln!("{who}: TLS cipher {}", tls["cipher"]);
        one(who, events, "registered", "code", 200.into());
        one(who, events, "call_state", "state", "CONFIRMED".into());
        one(who, events, "media", "status", "active".into());
        one(who, events, "ended", "event", "ended".into());
        one(who, events, "done", "ok", true.into());
        assert!(all(events, "error").is_empty(), "{who}: {events:#?}");
    }
    // The INVITE was challenged (digest for the call, not only the
    // REGISTER), and the call alice made is the one bob answered.
    one(
        "alice",
        &alice_events,
        "challenged",
        "method",
        "INVITE".into(),
    );
    let incoming = one("bob", &bob_events, "incoming", "event", "incoming".into());
    assert!(
        incoming["remote"]
            .as_str()
            .is_some_and(|r| r.contains(&format!("sip:alice@{ip}"))),
        "bob: {incoming}"
    );
    let call_id = |events: &[Value]| {
        one("", events, "call_state", "state", "CONFIRMED".into())["call_id"]
            .as_str()
            .map(str::to_owned)
            .expect("call_id")
    };
    let call = call_id(&alice_events);
    assert_eq!(call, call_id(&bob_events), "one call");
    // Alice hung up with a BYE answered 200; bob got that BYE.
    let sent = one("alice", &alice_events, "bye", "direction", "sent".into());
    assert_eq!(sent["code"], 200, "alice: {sent}");
    let received = one("bob", &bob_events, "bye", "direction", "received".into());
    assert_eq!(received["code"], 200, "bob: {received}");
    // And wisp saw the call end.
    wait_for_acc_stop(&wisp, &call, Duration::from_secs(5));
}
