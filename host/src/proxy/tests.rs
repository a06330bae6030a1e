//! The proxy core on a fake clock (a base `Instant` plus milliseconds),
//! with scripted hooks instead of wasm: forking, CANCEL, response
//! selection, final-response timers, ACKs and RFC 3263 failover, checked
//! message by message.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::core::AMPLIFICATION;
use super::secret;
use super::*;
use crate::sip::{parse, response_to, HeaderName, Message, Method};
use crate::transaction::{Timers, Transactions};
use crate::transport::{Listener, Target, Transport};

const CALLER: &str = "192.0.2.1:5060";
const UAS_A: &str = "192.0.2.10:5060";
const UAS_B: &str = "192.0.2.11:5060";
const UAS_C: &str = "192.0.2.12:5060";

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("address")
}

fn udp(text: &str) -> Target {
    Target {
        transport: Transport::Udp,
        addr: addr(text),
    }
}

fn msg(text: &str) -> Message {
    let text = text.replace("\r\n", "\n").replace('\n', "\r\n");
    parse(Bytes::from(text)).expect("test message parses")
}

/// A request from the caller, to bob at the proxy.
fn request(method: &str, branch: &str, to_tag: Option<&str>, cseq: u32) -> Message {
    let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    msg(&format!(
        "{method} sip:bob@127.0.0.1 SIP/2.0\n\
         Via: SIP/2.0/UDP 192.0.2.1:5060;branch={branch}\n\
         Max-Forwards: 70\n\
         From: Alice <sip:alice@example.org>;tag=a1\n\
         To: Bob <sip:bob@example.com>{to_tag}\n\
         Call-ID: call-1@example.org\n\
         CSeq: {cseq} {method}\n\
         Contact: <sip:alice@192.0.2.1>\n\
         Content-Length: 0\n\n"
    ))
}

fn invite() -> Message {
    request("INVITE", "z9hG4bKcaller1", None, 1)
}

/// The caller's CANCEL of [`invite`].
fn cancel() -> Message {
    request("CANCEL", "z9hG4bKcaller1", None, 1)
}

/// What the route hook of a test does with a request.
type RouteScript = Box<dyn FnMut(&mut RequestCtx) -> Vec<Action>>;
/// What its failure hook does: given the best response, the actions.
type FailureScript = Box<dyn FnMut(&mut RequestCtx, &Message) -> Vec<Action>>;

/// Hooks played by closures; every call is logged.
struct Scripted {
    route: RouteScript,
    failure: FailureScript,
    calls: Vec<String>,
    replied: Vec<u16>,
    /// What the route hook arms and asks to account (`proxy.arm`,
    /// `acc.account`).
    arm: Option<Armed>,
    account: Accounted,
    /// The records asked of the hooks, as "code method to-tag".
    accounted: Vec<String>,
}

impl Hooks for Scripted {
    type Pinned = ();

    fn route(&mut self, mut req: RequestCtx, vars: &mut TxVars) -> (RequestCtx, Routed<()>) {
        self.calls.push(format!(
            "route {}",
            req.msg.method().map_or("?", Method::as_str)
        ));
        vars.armed = self.arm;
        vars.accounted = self.account;
        let actions = (self.route)(&mut req);
        (
            req,
            Routed::Actions {
                pinned: (),
                actions,
            },
        )
    }

    fn on_branch(
        &mut self,
        _: &(),
        req: RequestCtx,
        index: u32,
        _vars: &mut TxVars,
    ) -> (RequestCtx, Result<(), HookFailed>) {
        self.calls.push(format!("branch {index}"));
        (req, Ok(()))
    }

    fn on_reply(
        &mut self,
        _: &(),
        req: RequestCtx,
        res: Message,
        _source: SocketAddr,
        _vars: &mut TxVars,
    ) -> (RequestCtx, Message, Result<bool, HookFailed>) {
        self.calls
            .push(format!("reply {}", res.status().unwrap_or(0)));
        (req, res, Ok(true))
    }

    fn on_failure(
        &mut self,
        _: &(),
        mut req: RequestCtx,
        best: Message,
        _vars: &mut TxVars,
    ) -> (RequestCtx, Message, Result<Vec<Action>, HookFailed>) {
        self.calls
            .push(format!("failure {}", best.status().unwrap_or(0)));
        let actions = (self.failure)(&mut req, &best);
        (req, best, Ok(actions))
    }

    fn replied(&mut self, _: &(), code: u16) {
        self.replied.push(code);
    }

    fn account(&mut self, _: &(), req: &Message, code: u16, _: &str, answer: Option<&Message>) {
        let to = answer.and_then(|answer| answer.to().ok());
        self.accounted.push(format!(
            "{code} {} {}",
            req.method().map_or("?", Method::as_str),
            to.and_then(|to| to.tag()).unwrap_or("-")
        ));
    }
}

/// A core, its hooks and a fake clock.
struct Proxy {
    core: Core<()>,
    hooks: Scripted,
    t0: Instant,
}

/// Relays every request to `destination` (a stateful proxy's route hook).
fn relay_to(destination: &'static str) -> RouteScript {
    Box::new(move |_| {
        vec![Action::Relay {
            destination: Some(format!("sip:{destination}")),
        }]
    })
}

impl Proxy {
    fn new(route: RouteScript) -> Proxy {
        let locality = Locality::new(
            vec![Listener {
                transport: Transport::Udp,
                local: addr("127.0.0.1:5060"),
                advertise: None,
            }],
            vec![],
        );
        Proxy {
            core: Core::new(
                Transactions::new(Timers::default()),
                Arc::new(locality),
                0,
                Arc::new(Admission::default()),
            ),
            hooks: Scripted {
                route,
                failure: Box::new(|_, _| Vec::new()),
                calls: Vec::new(),
                replied: Vec::new(),
                arm: None,
                account: Accounted::default(),
                accounted: Vec::new(),
            },
            t0: Instant::now(),
        }
    }

    fn with_failure(mut self, failure: FailureScript) -> Proxy {
        self.hooks.failure = failure;
        self
    }

    fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }

    /// `message` arrives from `from` at `ms`.
    fn recv(&mut self, ms: u64, from: &str, message: Message) {
        let source = Source {
            transport: Transport::Udp,
            remote: addr(from),
            listener: 0,
            trusted: false,
        };
        let now = self.at(ms);
        self.core.handle(now, message, source, &mut self.hooks);
    }

    /// Time passes to `ms`: every timer due by then fires, in order.
    fn advance(&mut self, ms: u64) {
        let end = self.at(ms);
        while let Some(due) = self.core.poll_timeout().filter(|d| *d <= end) {
            self.core.handle_timeout(due, &mut self.hooks);
        }
    }

    /// Everything queued to send, parsed.
    fn sent(&mut self) -> Vec<(Target, Message)> {
        let mut out = Vec::new();
        while let Some(t) = self.core.poll_transmit() {
            out.push((t.target, parse(t.data).expect("we send parsable messages")));
        }
        out
    }

    fn lookups(&mut self) -> Vec<(LookupId, Destination)> {
        let mut out = Vec::new();
        while let Some(Event::Resolve {
            id, destination, ..
        }) = self.core.poll_event()
        {
            out.push((id, destination));
        }
        out
    }
}

/// A one-line summary of a message: "INVITE" or "180", to compare lists.
fn line(m: &Message) -> String {
    match m.status() {
        Some(code) => code.to_string(),
        None => m.method().map_or("?", Method::as_str).to_string(),
    }
}

/// (where, what) for each message sent.
fn summary(sent: &[(Target, Message)]) -> Vec<(String, String)> {
    sent.iter()
        .map(|(t, m)| (t.addr.to_string(), line(m)))
        .collect()
}

fn pair(to: &str, what: &str) -> (String, String) {
    (to.to_string(), what.to_string())
}

/// The request last sent to `to` with `method`.
fn last_to(sent: &[(Target, Message)], to: &str, method: &str) -> Message {
    sent.iter()
        .rev()
        .find(|(t, m)| t.addr == addr(to) && m.method().map(Method::as_str) == Some(method))
        .map(|(_, m)| m.clone())
        .unwrap_or_else(|| panic!("no {method} sent to {to}"))
}

fn answer(req: &Message, code: u16, tag: &str) -> Message {
    response_to(req, code, "Test", Some(tag))
}

/// Relays an INVITE to A, and to B as an appended branch.
fn to_a_and_b() -> RouteScript {
    Box::new(|req| {
        req.branches.push(BranchTarget {
            uri: "sip:bob@192.0.2.11".into(),
            ..BranchTarget::default()
        });
        vec![Action::Relay {
            destination: Some(format!("sip:{UAS_A}")),
        }]
    })
}

#[test]
fn parallel_forking_one_200_cancels_the_others() {
    let mut p = Proxy::new(to_a_and_b());
    p.recv(0, CALLER, invite());
    let sent = p.sent();
    assert_eq!(
        summary(&sent),
        vec![
            pair(CALLER, "100"),
            pair(UAS_A, "INVITE"),
            pair(UAS_B, "INVITE")
        ]
    );
    let (to_a, to_b) = (
        last_to(&sent, UAS_A, "INVITE"),
        last_to(&sent, UAS_B, "INVITE"),
    );
    assert_eq!(to_b.uri(), Some("sip:bob@192.0.2.11"));
    // Our Via on top, with a branch of our own per branch.
    let branch = |m: &Message| m.top_via().expect("via").branch().map(str::to_owned);
    assert_ne!(branch(&to_a), branch(&to_b));
    assert!(branch(&to_a).is_some_and(|b| b.starts_with("z9hG4bKwsp")));

    p.recv(10, UAS_A, answer(&to_a, 180, "a"));
    p.recv(20, UAS_B, answer(&to_b, 180, "b"));
    assert_eq!(
        summary(&p.sent()),
        vec![pair(CALLER, "180"), pair(CALLER, "180")]
    );
    p.recv(30, UAS_A, answer(&to_a, 200, "a"));
    let sent = p.sent();
    assert_eq!(
        summary(&sent),
        vec![pair(CALLER, "200"), pair(UAS_B, "CANCEL")]
    );
    // The 200 upstream lost our Via.
    assert_eq!(sent[0].1.values(&HeaderName::Via).count(), 1);
    // B's 487 is acknowledged hop by hop and goes no further.
    p.recv(40, UAS_B, answer(&to_b, 487, "b"));
    assert_eq!(summary(&p.sent()), vec![pair(UAS_B, "ACK")]);
    assert!(!p.hooks.calls.iter().any(|c| c.starts_with("failure")));
}

#[test]
fn serial_forking_from_the_failure_hook() {
    let mut p = Proxy::new(relay_to(UAS_A)).with_failure(Box::new(|_, best| {
        assert_eq!(best.status(), Some(486));
        vec![Action::Relay {
            destination: Some(format!("sip:{UAS_B}")),
        }]
    }));
    p.recv(0, CALLER, invite());
    let to_a = last_to(&p.sent(), UAS_A, "INVITE");
    p.recv(10, UAS_A, answer(&to_a, 486, "a"));
    let sent = p.sent();
    assert_eq!(
        summary(&sent),
        vec![pair(UAS_A, "ACK"), pair(UAS_B, "INVITE")]
    );
    let to_b = last_to(&sent, UAS_B, "INVITE");
    p.recv(20, UAS_B, answer(&to_b, 200, "b"));
    assert_eq!(summary(&p.sent()), vec![pair(CALLER, "200")]);
    assert_eq!(
        p.hooks.calls,
        vec![
            "route INVITE",
            "branch 0",
            "reply 486",
            "failure 486",
            "branch 1",
            "reply 200"
        ]
    );
}

/// A transaction runs only the hooks its routing armed; with none armed,
/// no hook but route runs, and the responses go their way all the same.
#[test]
fn hooks_not_armed_are_not_called() {
    let mut p =
        Proxy::new(to_a_and_b()).with_failure(Box::new(|_, _| panic!("on-failure is not armed")));
    p.hooks.arm = Some(Armed::default());
    p.recv(0, CALLER, invite());
    let sent = p.sent();
    let (to_a, to_b) = (
        last_to(&sent, UAS_A, "INVITE"),
        last_to(&sent, UAS_B, "INVITE"),
    );
    p.recv(10, UAS_A, answer(&to_a, 180, "a"));
    p.recv(20, UAS_A, answer(&to_a, 486, "a"));
    p.recv(30, UAS_B, answer(&to_b, 404, "b"));
    let sent = p.sent();
    assert_eq!(
        summary(&sent)[..3],
        [pair(CALLER, "180"), pair(UAS_A, "ACK"), pair(UAS_B, "ACK")]
    );
    assert_eq!(sent.len(), 4);
    assert_eq!(sent[3].0, udp(CALLER));
    assert!(sent[3].1.status().is_some_and(|code| code >= 400));
    assert_eq!(p.hooks.calls, vec!["route INVITE"]);

    // Armed: those hooks, and only those.
    let mut p = Proxy::new(relay_to(UAS_A));
    p.hooks.arm = Some(Armed {
        on_reply: true,
        ..Armed::default()
    });
    p.recv(0, CALLER, invite());
    let to_a = last_to(&p.sent(), UAS_A, "INVITE");
    p.recv(10, UAS_A, answer(&to_a, 486, "a"));
    assert_eq!(p.hooks.calls, vec!["route INVITE", "reply 486"]);
}

/// An INVITE relayed to A by a routing that asked `account` of the host:
/// the proxy, and the INVITE A got.
fn accounted_invite(account: Accounted) -> (Proxy, Message) {
    let mut p = Proxy::new(relay_to(UAS_A));
    p.hooks.account = account;
    p.recv(0, CALLER, invite());
    let to_a = last_to(&p.sent(), UAS_A, "INVITE");
    (p, to_a)
}

/// The host accounts what the routing asked (`acc.account`) once, on the
/// final answer that goes upstream: a 2xx if `answered` (retransmissions
/// not again), a failure if `failed`, a cancelled call's 487 too.
#[test]
fn the_final_answer_is_accounted_once_when_asked() {
    let answered = Accounted {
        answered: true,
        failed: false,
    };
    let failed = Accounted {
        answered: false,
        failed: true,
    };
    let (mut p, to_a) = accounted_invite(answered);
    p.recv(10, UAS_A, answer(&to_a, 180, "a"));
    p.recv(20, UAS_A, answer(&to_a, 200, "a"));
    p.recv(520, UAS_A, answer(&to_a, 200, "a"));
    assert_eq!(
        summary(&p.sent())[1..],
        [pair(CALLER, "200"), pair(CALLER, "200")]
    );
    assert_eq!(p.hooks.accounted, vec!["200 INVITE a"]);

    // What was not asked is not recorded.
    for (account, code) in [(answered, 486), (failed, 200)] {
        let (mut p, to_a) = accounted_invite(account);
        p.recv(10, UAS_A, answer(&to_a, code, "a"));
        assert!(
            p.hooks.accounted.is_empty(),
            "{code}: {:?}",
            p.hooks.accounted
        );
    }

    // Asked: the failure, and a cancelled call's 487 (a missed call).
    let (mut p, to_a) = accounted_invite(failed);
    p.recv(10, UAS_A, answer(&to_a, 486, "a"));
    assert_eq!(p.hooks.accounted, vec!["486 INVITE a"]);

    let (mut p, to_a) = accounted_invite(failed);
    p.recv(10, UAS_A, answer(&to_a, 180, "a"));
    p.recv(20, CALLER, cancel());
    p.recv(30, UAS_A, answer(&to_a, 487, "a"));
    assert_eq!(p.hooks.accounted, vec!["487 INVITE a"]);
}

/// Relays an INVITE to A, B and C at once.
fn three_way() -> Proxy {
    Proxy::new(Box::new(|req| {
        for uas in ["sip:bob@192.0.2.11", "sip:bob@192.0.2.12"] {
            req.branches.push(BranchTarget {
                uri: uas.into(),
                ..BranchTarget::default()
            });
        }
        vec![Action::Relay {
            destination: Some(format!("sip:{UAS_A}")),
        }]
    }))
}

/// Three branches answer `codes` in order; what goes upstream.
fn selected(codes: [(u16, &str); 3]) -> Vec<Message> {
    let mut p = three_way();
    p.recv(0, CALLER, invite());
    let sent = p.sent();
    for (i, (uas, (code, header))) in [UAS_A, UAS_B, UAS_C].into_iter().zip(codes).enumerate() {
        let mut res = answer(&last_to(&sent, uas, "INVITE"), code, "t");
        if !header.is_empty() {
            let (name, value) = header.split_once(": ").expect("header");
            res.append_header(HeaderName::parse(name), value)
                .expect("header");
        }
        p.recv(10 * (i as u64 + 1), uas, res);
    }
    p.sent()
        .into_iter()
        .filter(|(t, _)| t.addr == addr(CALLER))
        .map(|(_, m)| m)
        .collect()
}

#[test]
fn selection_prefers_6xx() {
    let upstream = selected([(486, ""), (603, ""), (302, "")]);
    assert_eq!(upstream.iter().map(line).collect::<Vec<_>>(), vec!["603"]);
}

#[test]
fn selection_takes_the_lowest_class() {
    let upstream = selected([(486, ""), (302, ""), (500, "")]);
    assert_eq!(upstream.iter().map(line).collect::<Vec<_>>(), vec!["302"]);
    let upstream = selected([(500, ""), (404, ""), (502, "")]);
    assert_eq!(upstream.iter().map(line).collect::<Vec<_>>(), vec!["404"]);
}

#[test]
fn selection_merges_challenges() {
    let upstream = selected([
        (401, "WWW-Authenticate: Digest realm=\"a\", nonce=\"1\""),
        (407, "Proxy-Authenticate: Digest realm=\"b\", nonce=\"2\""),
        (401, "WWW-Authenticate: Digest realm=\"c\", nonce=\"3\""),
    ]);
    assert_eq!(upstream.len(), 1);
    let best = &upstream[0];
    assert!(matches!(best.status(), Some(401 | 407)));
    let www: Vec<_> = best.header_lines(&HeaderName::WwwAuthenticate).collect();
    let proxy: Vec<_> = best.header_lines(&HeaderName::ProxyAuthenticate).collect();
    assert_eq!(www.len(), 2, "{www:?}");
    assert_eq!(proxy.len(), 1, "{proxy:?}");
}

#[test]
fn a_503_from_downstream_goes_up_as_500() {
    let mut p = Proxy::new(relay_to(UAS_A));
    p.recv(0, CALLER, invite());
    let to_a = last_to(&p.sent(), UAS_A, "INVITE");
    p.recv(10, UAS_A, answer(&to_a, 503, "a"));
    assert_eq!(
        summary(&p.sent()),
        vec![pair(UAS_A, "ACK"), pair(CALLER, "500")]
    );
}

#[test]
fn cancel_before_a_provisional_waits_for_one() {
    let mut p = Proxy::new(relay_to(UAS_A));
    p.recv(0, CALLER, invite());
    let to_a = last_to(&p.sent(), UAS_A, "INVITE");
    p.recv(100, CALLER, cancel());
    // The CANCEL is answered at once; none goes down before a 1xx (§9.1).
    assert_eq!(summary(&p.sent()), vec![pair(CALLER, "200")]);
    p.recv(200, UAS_A, answer(&to_a, 180, "a"));
    // The 1xx lets the CANCEL go down; the 1xx itself still goes up.
    let sent = p.sent();
    assert_eq!(
        summary(&sent),
        vec![pair(UAS_A, "CANCEL"), pair(CALLER, "180")]
    );
    let cancel_down = last_to(&sent, UAS_A, "CANCEL");
    assert_eq!(
        cancel_down.top_via().expect("via").branch(),
        to_a.top_via().expect("via").branch()
    );
    p.recv(210, UAS_A, answer(&cancel_down, 200, "a"));
    p.recv(220, UAS_A, answer(&to_a, 487, "a"));
    assert_eq!(
        summary(&p.sent()),
        vec![pair(UAS_A, "ACK"), pair(CALLER, "487")]
    );
    // No failure hook after a CANCEL.
    assert!(!p.hooks.calls.iter().any(|c| c.starts_with("failure")));
}

#[test]
fn cancel_after_a_provisional_goes_down_at_once() {
    let mut p = Proxy::new(relay_to(UAS_A));
    p.recv(0, CALLER, invite());
    let to_a = last_to(&p.sent(), UAS_A, "INVITE");
    p.recv(10, UAS_A, answer(&to_a, 180, "a"));
    assert_eq!(summary(&p.sent()), vec![pair(CALLER, "180")]);
    p.recv(20, CALLER, cancel());
    assert_eq!(
        summary(&p.sent()),
        vec![pair(CALLER, "200"), pair(UAS_A, "CANCEL")]
    );
    p.recv(30, UAS_A, answer(&to_a, 487, "a"));
    assert_eq!(
        summary(&p.sent()),
        vec![pair(UAS_A, "ACK"), pair(CALLER, "487")]
    );
}

/// Relays to A with fr_inv_timer 10 s and fr_timer 3 s.
fn with_fr_timers() -> Proxy {
    Proxy::new(Box::new(|req| {
        req.fr_timers = Some((Duration::from_secs(10), Duration::from_secs(3)));
        vec![Action::Relay {
            destination: Some(format!("sip:{UAS_A}")),
        }]
    }))
}

#[test]
fn fr_timer_ends_a_branch_that_never_answered() {
    let mut p = with_fr_timers();
    p.recv(0, CALLER, invite());
    p.sent();
    p.advance(2_999);
    // Only Timer A retransmissions of the INVITE so far (0.5, 1.5 s).
    assert_eq!(
        summary(&p.sent()),
        vec![pair(UAS_A, "INVITE"), pair(UAS_A, "INVITE")]
    );
    p.advance(3_000);
    // fr_timer: 408 upstream; no CANCEL, since nothing rang (§9.1).
    assert_eq!(summary(&p.sent()), vec![pair(CALLER, "408")]);
    assert_eq!(
        p.hooks.calls.last().map(String::as_str),
        Some("failure 408")
    );
}

#[test]
fn fr_inv_timer_cancels_a_branch_that_rings_too_long() {
    let mut p = with_fr_timers();
    p.recv(0, CALLER, invite());
    let to_a = last_to(&p.sent(), UAS_A, "INVITE");
    p.recv(1_000, UAS_A, answer(&to_a, 180, "a"));
    assert_eq!(summary(&p.sent()), vec![pair(CALLER, "180")]);
    // Past fr_timer (3 s): the 180 moved the deadline to fr_inv_timer.
    p.advance(10_999);
    assert!(p.sent().iter().all(|(t, _)| t.addr != addr(CALLER)));
    p.advance(11_000);
    assert_eq!(
        summary(&p.sent()),
        vec![pair(UAS_A, "CANCEL"), pair(CALLER, "408")]
    );
}

#[test]
fn the_default_fr_timer_answers_408_after_30_s() {
    let mut p = Proxy::new(relay_to(UAS_A));
    p.recv(0, CALLER, invite());
    p.sent();
    p.advance(29_999);
    assert!(p.sent().iter().all(|(t, _)| t.addr != addr(CALLER)));
    // fr_timer (30 s) runs out before Timer B (64*T1 = 32 s).
    p.advance(30_000);
    assert_eq!(summary(&p.sent()), vec![pair(CALLER, "408")]);
    assert_eq!(DEFAULT_FR, Duration::from_secs(30));
    assert_eq!(DEFAULT_FR_INVITE, Duration::from_secs(120));
}

#[test]
fn retransmitted_2xx_are_forwarded() {
    let mut p = Proxy::new(relay_to(UAS_A));
    p.recv(0, CALLER, invite());
    let to_a = last_to(&p.sent(), UAS_A, "INVITE");
    let ok = answer(&to_a, 200, "a");
    p.recv(10, UAS_A, ok.clone());
    p.recv(510, UAS_A, ok.clone());
    p.recv(1510, UAS_A, ok);
    assert_eq!(
        summary(&p.sent()),
        vec![
            pair(CALLER, "200"),
            pair(CALLER, "200"),
            pair(CALLER, "200")
        ]
    );
}

#[test]
fn ack_of_a_2xx_goes_end_to_end_through_the_route_hook() {
    let mut p = Proxy::new(relay_to(UAS_A));
    p.recv(0, CALLER, invite());
    let to_a = last_to(&p.sent(), UAS_A, "INVITE");
    p.recv(10, UAS_A, answer(&to_a, 200, "a"));
    p.sent();
    // The ACK is a new transaction (new branch) with the To tag.
    p.recv(20, CALLER, request("ACK", "z9hG4bKcallerack", Some("a"), 1));
    let sent = p.sent();
    assert_eq!(summary(&sent), vec![pair(UAS_A, "ACK")]);
    assert_eq!(p.hooks.calls.last().map(String::as_str), Some("route ACK"));
    // Our Via on top: the ACK is forwarded, not generated.
    assert_eq!(sent[0].1.values(&HeaderName::Via).count(), 2);
}

#[test]
fn ack_of_a_non_2xx_is_hop_by_hop() {
    let mut p = Proxy::new(relay_to(UAS_A));
    p.recv(0, CALLER, invite());
    let to_a = last_to(&p.sent(), UAS_A, "INVITE");
    p.recv(10, UAS_A, answer(&to_a, 486, "a"));
    let sent = p.sent();
    assert_eq!(
        summary(&sent),
        vec![pair(UAS_A, "ACK"), pair(CALLER, "486")]
    );
    // Our ACK downstream: our branch, the INVITE's CSeq number.
    let ack = &sent[0].1;
    assert_eq!(
        ack.top_via().expect("via").branch(),
        to_a.top_via().expect("via").branch()
    );
    // The caller's ACK (same branch as its INVITE) ends here.
    let calls = p.hooks.calls.len();
    p.recv(20, CALLER, request("ACK", "z9hG4bKcaller1", Some("a"), 1));
    assert!(p.sent().is_empty());
    assert_eq!(p.hooks.calls.len(), calls, "no hook for an absorbed ACK");
}

#[test]
fn a_name_is_resolved_and_the_next_target_tried_after_a_503() {
    let mut p = Proxy::new(relay_to("bob@sip.example.com"));
    p.recv(0, CALLER, invite());
    // 100 Trying only: the branch waits for its name.
    assert_eq!(summary(&p.sent()), vec![pair(CALLER, "100")]);
    let lookups = p.lookups();
    assert_eq!(lookups.len(), 1);
    let (id, destination) = &lookups[0];
    assert_eq!(
        destination.host,
        crate::sip::Host::Name("sip.example.com".into())
    );
    let now = p.at(50);
    p.core
        .handle_resolved(now, *id, Ok(vec![udp(UAS_A), udp(UAS_B)]), &mut p.hooks);
    let to_a = last_to(&p.sent(), UAS_A, "INVITE");
    p.recv(60, UAS_A, answer(&to_a, 503, "a"));
    let sent = p.sent();
    assert_eq!(
        summary(&sent),
        vec![pair(UAS_A, "ACK"), pair(UAS_B, "INVITE")]
    );
    let to_b = last_to(&sent, UAS_B, "INVITE");
    assert_ne!(
        to_a.top_via().expect("via").branch(),
        to_b.top_via().expect("via").branch(),
        "a new transaction for the next target"
    );
    p.recv(70, UAS_B, answer(&to_b, 200, "b"));
    assert_eq!(summary(&p.sent()), vec![pair(CALLER, "200")]);
}

#[test]
fn a_timeout_moves_on_to_the_next_target() {
    // A MESSAGE, with fr_timer past Timer F (64*T1 = 32 s).
    let mut p = Proxy::new(Box::new(|req| {
        req.fr_timers = Some((Duration::from_secs(120), Duration::from_secs(60)));
        vec![Action::Relay {
            destination: Some("sip:bob@sip.example.com".into()),
        }]
    }));
    p.recv(0, CALLER, request("MESSAGE", "z9hG4bKmsg1", None, 1));
    let (id, _) = p.lookups()[0].clone();
    let now = p.at(0);
    p.core
        .handle_resolved(now, id, Ok(vec![udp(UAS_A), udp(UAS_B)]), &mut p.hooks);
    p.advance(31_999);
    assert!(summary(&p.sent())
        .iter()
        .all(|sent| *sent == pair(UAS_A, "MESSAGE")));
    // Timer F: A timed out, B gets the request.
    p.advance(32_000);
    let sent = p.sent();
    assert_eq!(summary(&sent), vec![pair(UAS_B, "MESSAGE")]);
    p.recv(
        32_010,
        UAS_B,
        answer(&last_to(&sent, UAS_B, "MESSAGE"), 200, "b"),
    );
    assert_eq!(summary(&p.sent()), vec![pair(CALLER, "200")]);
}

#[test]
fn an_unresolvable_name_ends_the_branch_with_503() {
    let mut p = Proxy::new(relay_to("bob@nowhere.example.com"));
    p.recv(0, CALLER, invite());
    p.sent();
    let (id, _) = p.lookups()[0].clone();
    let now = p.at(2_000);
    p.core
        .handle_resolved(now, id, Err("timed out".into()), &mut p.hooks);
    assert_eq!(summary(&p.sent()), vec![pair(CALLER, "503")]);
    assert_eq!(
        p.hooks.calls.last().map(String::as_str),
        Some("failure 503")
    );
}

#[test]
fn cancel_while_a_name_is_resolved_ends_the_branch() {
    let mut p = Proxy::new(relay_to("bob@sip.example.com"));
    p.recv(0, CALLER, invite());
    p.sent();
    let (id, _) = p.lookups()[0].clone();
    p.recv(10, CALLER, cancel());
    assert_eq!(
        summary(&p.sent()),
        vec![pair(CALLER, "200"), pair(CALLER, "487")]
    );
    // The answer that comes later sends nothing.
    let now = p.at(20);
    p.core
        .handle_resolved(now, id, Ok(vec![udp(UAS_A)]), &mut p.hooks);
    assert!(p.sent().is_empty());
}

#[test]
fn a_stateless_forward_waits_for_its_name() {
    let mut p = Proxy::new(Box::new(|_| {
        vec![Action::Forward {
            destination: Some("sip:sip.example.com".into()),
        }]
    }));
    p.recv(0, CALLER, request("MESSAGE", "z9hG4bKmsg1", None, 1));
    assert!(p.sent().is_empty());
    let (id, _) = p.lookups()[0].clone();
    let now = p.at(5);
    p.core
        .handle_resolved(now, id, Ok(vec![udp(UAS_C)]), &mut p.hooks);
    assert_eq!(summary(&p.sent()), vec![pair(UAS_C, "MESSAGE")]);
}

#[test]
fn lookups_waiting_are_bounded() {
    let mut p = Proxy::new(relay_to("bob@sip.example.com")).limits(ProxyLimits {
        max_transactions_per_source: usize::MAX,
        ..ProxyLimits::default()
    });
    for i in 0..MAX_PARKED + 1 {
        p.recv(
            0,
            CALLER,
            request("INVITE", &format!("z9hG4bKflood{i}"), None, 1),
        );
    }
    assert_eq!(p.lookups().len(), MAX_PARKED);
    let last: Vec<_> = summary(&p.sent()).into_iter().rev().take(1).collect();
    assert_eq!(last, vec![pair(CALLER, "503")]);
}

/// Listeners on 127.0.0.1: each transport at its port.
fn listeners(of: &[(Transport, u16)]) -> Vec<Listener> {
    of.iter()
        .map(|&(transport, port)| Listener {
            transport,
            local: SocketAddr::from(([127, 0, 0, 1], port)),
            advertise: None,
        })
        .collect()
}

impl Proxy {
    /// The same proxy with other limits.
    fn limits(mut self, limits: ProxyLimits) -> Proxy {
        self.core = Core::new(
            Transactions::new(Timers::default()),
            self.core.fx.locality.clone(),
            0,
            Arc::new(Admission::new(limits)),
        );
        self
    }

    /// A proxy on these listeners instead of UDP alone.
    fn on(mut self, listeners: Vec<Listener>) -> Proxy {
        self.core = Core::new(
            Transactions::new(Timers::default()),
            Arc::new(Locality::new(listeners, vec![])),
            0,
            Arc::new(Admission::default()),
        );
        self
    }
}

const UDP_AND_WS: &[(Transport, u16)] = &[(Transport::Udp, 5060), (Transport::Ws, 8080)];

/// A proxy with a UDP and a WebSocket listener, relaying a UDP caller's
/// INVITE to a browser on its flow (as `registrar.lookup` would).
fn to_a_browser(browser: Target) -> Proxy {
    let locality = Locality::new(listeners(UDP_AND_WS), vec![]);
    Proxy::new(Box::new(move |req: &mut RequestCtx| {
        req.record_route = true;
        // An in-dialog request follows our Route entries (and the flow
        // token in them); an initial one goes to the binding's flow.
        let routed = loose_route(&mut req.msg, &locality);
        req.dst_uri = Some(routed.flow.unwrap_or(browser).uri());
        vec![Action::Relay { destination: None }]
    }))
    .on(listeners(UDP_AND_WS))
}

fn ws(text: &str) -> Target {
    Target {
        transport: Transport::Ws,
        addr: addr(text),
    }
}

#[test]
fn a_browser_on_a_flow_is_record_routed_twice_with_a_token_that_leads_back_to_it() {
    let browser = ws("192.0.2.50:51000");
    let mut p = to_a_browser(browser);
    p.recv(0, CALLER, invite());
    let sent = p.sent();
    let (target, out) = sent
        .iter()
        .find(|(_, m)| m.method() == Some(&Method::Invite))
        .expect("INVITE relayed");
    assert_eq!(*target, browser);
    let rr: Vec<String> = out
        .values(&HeaderName::RecordRoute)
        .map(str::to_owned)
        .collect();
    assert_eq!(rr.len(), 2, "{rr:?}");
    // The entry facing the browser names its flow; the other, the UDP side.
    let token = rr[0]
        .strip_prefix("<sip:")
        .and_then(|r| r.split_once('@'))
        .map(|(user, rest)| {
            let tag = secret::route_tag("call-1@example.org");
            assert_eq!(rest, format!("127.0.0.1:8080;transport=ws;lr;ri={tag}>"));
            user.to_owned()
        })
        .expect("a user part in the browser side's entry");
    assert_eq!(flow::flow_of(&token), Some(browser));
    assert_eq!(
        rr[1],
        format!(
            "<sip:127.0.0.1:5060;lr;ri={}>",
            secret::route_tag("call-1@example.org")
        )
    );

    // The caller's BYE follows the route set (the Record-Route reversed):
    // the entry next to the browser sends it down the flow, although
    // its Request-URI is the browser's `*.invalid` Contact.
    let bye = |route: &str| {
        msg(&format!(
            "BYE sip:k3ue8r1a@df7jal23ls0d.invalid;transport=ws SIP/2.0\n\
             Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKbye{}\n\
             Max-Forwards: 70\n\
             Route: {}, {route}\n\
             From: Alice <sip:alice@example.org>;tag=a1\n\
             To: Bob <sip:bob@example.com>;tag=b1\n\
             Call-ID: call-1@example.org\n\
             CSeq: 2 BYE\n\
             Content-Length: 0\n\n",
            route.len(),
            rr[1]
        ))
    };
    let elsewhere = ws("198.51.100.9:40000");
    let mut p = to_a_browser(elsewhere);
    p.recv(10, CALLER, bye(&rr[0]));
    let sent = p.sent();
    let (target, out) = sent
        .iter()
        .find(|(_, m)| m.method() == Some(&Method::Bye))
        .expect("BYE relayed");
    assert_eq!(*target, browser);
    assert!(
        out.header(&HeaderName::Route).is_none(),
        "our entries popped"
    );

    // A token with one bit changed names no flow: the BYE does not go to
    // the browser (here, to where the script sends anything else).
    let forged = rr[0].replacen(
        &token[..2],
        if &token[..2] == "03" { "04" } else { "03" },
        1,
    );
    let mut p = to_a_browser(elsewhere);
    p.recv(20, CALLER, bye(&forged));
    let sent = p.sent();
    let (target, _) = sent
        .iter()
        .find(|(_, m)| m.method() == Some(&Method::Bye))
        .expect("BYE relayed");
    assert_eq!(*target, elsewhere);
}

#[test]
fn a_flow_that_is_gone_fails_the_branch_with_430() {
    let browser = ws("192.0.2.50:51000");
    let mut p = to_a_browser(browser);
    p.recv(0, CALLER, invite());
    let mut failed = None;
    while let Some(t) = p.core.poll_transmit() {
        if t.target == browser {
            failed = t.tx;
        }
    }
    // The driver found no connection to send on.
    let tx = failed.expect("the INVITE went to the flow on a transaction");
    let now = p.at(1);
    p.core.handle_transport_error(now, tx, &mut p.hooks);
    let sent = p.sent();
    let up: Vec<_> = sent
        .iter()
        .filter(|(t, _)| t.addr == addr(CALLER))
        .map(|(_, m)| line(m))
        .collect();
    assert_eq!(up, vec!["430"], "{sent:?}");
}

#[test]
fn a_connection_that_cannot_be_opened_fails_its_branches_at_once() {
    let with_tcp = || {
        Proxy::new(relay_to("192.0.2.10:5060;transport=tcp"))
            .on(listeners(&[(Transport::Udp, 5060), (Transport::Tcp, 5060)]))
    };
    let mut p = with_tcp();
    p.recv(0, CALLER, invite());
    let tcp = Target {
        transport: Transport::Tcp,
        addr: addr(UAS_A),
    };
    let sent = p.sent();
    assert!(sent.iter().any(|(t, m)| *t == tcp && line(m) == "INVITE"));
    // The driver could not connect: no waiting for Timer B (32 s).
    let now = p.at(5);
    p.core.handle_connection_failed(now, tcp, &mut p.hooks);
    let up: Vec<_> = p
        .sent()
        .iter()
        .filter(|(t, _)| t.addr == addr(CALLER))
        .map(|(_, m)| line(m))
        .collect();
    assert_eq!(up, vec!["503"]);
    // Another target's failure touches nothing.
    let mut p = with_tcp();
    p.recv(0, CALLER, invite());
    p.sent();
    let other = Target {
        transport: Transport::Tcp,
        addr: addr(UAS_B),
    };
    let now = p.at(5);
    p.core.handle_connection_failed(now, other, &mut p.hooks);
    assert!(p.sent().is_empty());
    p.advance(31_000);
    let late: Vec<_> = p
        .sent()
        .iter()
        .filter(|(t, _)| t.addr == addr(CALLER))
        .map(|(_, m)| line(m))
        .collect();
    // (the 408 is retransmitted to the UDP caller until its ACK)
    assert!(
        !late.is_empty() && late.iter().all(|l| l == "408"),
        "the untouched branch waits for its timer: {late:?}"
    );
}

#[test]
fn outbound_flows_on_tcp_get_tokens_and_430() {
    // A TCP caller whose Contact says `ob` (RFC 5626), relayed to a TCP
    // callee's flow (a binding's received URI with `;ob`).
    let callee = Target {
        transport: Transport::Tcp,
        addr: addr("192.0.2.60:40111"),
    };
    let route: RouteScript = Box::new(move |req: &mut RequestCtx| {
        req.record_route = true;
        req.dst_uri = Some(format!("{};ob", callee.uri()));
        vec![Action::Relay { destination: None }]
    });
    let mut p = Proxy::new(route).on(listeners(&[(Transport::Tcp, 5060)]));
    let caller = Source {
        transport: Transport::Tcp,
        remote: addr("192.0.2.61:40222"),
        listener: 0,
        trusted: false,
    };
    let invite = msg("INVITE sip:bob@127.0.0.1 SIP/2.0\n\
         Via: SIP/2.0/TCP 192.0.2.61:40222;branch=z9hG4bKob1\n\
         Max-Forwards: 70\n\
         From: <sip:alice@example.org>;tag=a1\n\
         To: <sip:bob@example.com>\n\
         Call-ID: ob-1@example.org\n\
         CSeq: 1 INVITE\n\
         Contact: <sip:alice@10.0.0.5:5060;transport=tcp;ob>\n\
         Content-Length: 0\n\n");
    let now = p.at(0);
    p.core.handle(now, invite, caller, &mut p.hooks);
    let mut failed = None;
    let mut rr = Vec::new();
    while let Some(t) = p.core.poll_transmit() {
        if t.target == callee {
            failed = t.tx;
            let out = parse(t.data).expect("parses");
            rr = out
                .values(&HeaderName::RecordRoute)
                .map(str::to_owned)
                .collect();
        }
    }
    assert_eq!(rr.len(), 2, "{rr:?}");
    let token = |entry: &str| {
        entry
            .strip_prefix("<sip:")
            .and_then(|e| e.split_once('@'))
            .and_then(|(user, _)| flow::flow_of(user))
    };
    assert_eq!(token(&rr[0]), Some(callee), "{rr:?}");
    assert_eq!(
        token(&rr[1]),
        Some(Target {
            transport: Transport::Tcp,
            addr: caller.remote
        }),
        "{rr:?}"
    );
    // The callee's connection is gone: 430, not 503.
    let now = p.at(1);
    let tx = failed.expect("sent on a transaction");
    p.core.handle_transport_error(now, tx, &mut p.hooks);
    let up: Vec<_> = p
        .sent()
        .iter()
        .filter(|(t, _)| t.addr == caller.remote)
        .map(|(_, m)| line(m))
        .collect();
    assert_eq!(up, vec!["430"]);
}

fn text(m: &Message) -> String {
    String::from_utf8_lossy(&m.to_bytes()).into_owned()
}

/// The message of `sent` to `to`, whatever it is.
fn only_to(sent: &[(Target, Message)], to: &str) -> Vec<Message> {
    sent.iter()
        .filter(|(t, _)| t.addr == addr(to))
        .map(|(_, m)| m.clone())
        .collect()
}

#[test]
fn a_request_relayed_back_to_us_unchanged_is_a_loop_482() {
    const ME: &str = "127.0.0.1:5060";
    let mut p = Proxy::new(relay_to("bob@127.0.0.1"));
    p.recv(0, CALLER, invite());
    let sent = p.sent();
    let looped = last_to(&sent, ME, "INVITE");
    // It comes back to us from ourselves: our Via on top, same loop hash.
    p.recv(1, ME, looped);
    let sent = p.sent();
    assert_eq!(summary(&sent), vec![pair(ME, "482")]);
    assert_eq!(
        p.hooks.calls,
        ["route INVITE", "branch 0"],
        "no hook for a loop"
    );
}

#[test]
fn a_spiral_whose_request_uri_changed_is_no_loop() {
    const ME: &str = "127.0.0.1:5060";
    let mut hops = 0;
    let mut p = Proxy::new(Box::new(move |req: &mut RequestCtx| {
        hops += 1;
        // First the AOR, then its contact (another user at this proxy).
        let uri = if hops == 1 {
            "sip:carol@127.0.0.1"
        } else {
            "sip:dave@192.0.2.10"
        };
        vec![Action::Relay {
            destination: Some(uri.to_owned()),
        }]
        .into_iter()
        .inspect(|_| {
            let _ = req.msg.set_uri(uri);
        })
        .collect()
    }));
    p.recv(0, CALLER, invite());
    let back = last_to(&p.sent(), ME, "INVITE");
    assert_eq!(back.uri(), Some("sip:carol@127.0.0.1"));
    p.recv(1, ME, back);
    let sent = p.sent();
    assert_eq!(summary(&sent), vec![pair(ME, "100"), pair(UAS_A, "INVITE")]);
}

#[test]
fn max_forwards_is_capped_on_arrival() {
    let mut p = Proxy::new(relay_to("bob@192.0.2.10"));
    let huge = msg(&text(&request("INVITE", "z9hG4bKmf", None, 1))
        .replace("Max-Forwards: 70", "Max-Forwards: 4294967295"));
    p.recv(0, CALLER, huge);
    let out = last_to(&p.sent(), UAS_A, "INVITE");
    assert_eq!(out.header(&HeaderName::MaxForwards), Some("69"));
}

#[test]
fn max_breadth_is_shared_between_parallel_branches_and_bounds_forking() {
    let fork = |n: usize| -> RouteScript {
        Box::new(move |req: &mut RequestCtx| {
            for i in 1..n {
                req.branches.push(BranchTarget {
                    uri: format!("sip:bob@192.0.2.{}", 100 + i),
                    ..BranchTarget::default()
                });
            }
            vec![Action::Relay {
                destination: Some("sip:bob@192.0.2.100".into()),
            }]
        })
    };
    let breadth = |m: &Message| {
        m.header(&HeaderName::parse("Max-Breadth"))
            .and_then(|v| v.parse::<u32>().ok())
    };
    // No Max-Breadth: 60 shared by 16 branches (12 get 4, 4 get 3).
    let mut p = Proxy::new(fork(16));
    p.recv(0, CALLER, invite());
    let invites: Vec<Message> = p
        .sent()
        .into_iter()
        .filter(|(_, m)| m.method() == Some(&Method::Invite))
        .map(|(_, m)| m)
        .collect();
    assert_eq!(invites.len(), 16);
    let shares: Vec<u32> = invites.iter().filter_map(breadth).collect();
    assert_eq!(shares.iter().sum::<u32>(), 60);
    assert!(shares.iter().all(|s| (3..=4).contains(s)), "{shares:?}");
    // Max-Breadth 4 from upstream: four branches of 1; the twelve others
    // end 440 without a message.
    let mut p = Proxy::new(fork(16));
    let narrow =
        msg(&text(&invite()).replace("Max-Forwards: 70", "Max-Forwards: 70\r\nMax-Breadth: 4"));
    p.recv(0, CALLER, narrow);
    let sent = p.sent();
    let invites: Vec<&Message> = sent
        .iter()
        .filter(|(_, m)| m.method() == Some(&Method::Invite))
        .map(|(_, m)| m)
        .collect();
    assert_eq!(invites.len(), 4);
    assert!(invites.iter().all(|m| breadth(m) == Some(1)));
    // Those four fail: the answer upstream is the best, not a 440 storm.
    for (t, m) in sent
        .iter()
        .filter(|(_, m)| m.method() == Some(&Method::Invite))
    {
        p.recv(5, &t.addr.to_string(), answer(m, 486, "x"));
    }
    let up = only_to(&p.sent(), CALLER);
    assert_eq!(up.iter().map(line).collect::<Vec<_>>(), ["486"]);
}

#[test]
fn a_response_from_another_address_does_not_touch_the_call() {
    let mut p = Proxy::new(relay_to("bob@192.0.2.10"));
    p.recv(0, CALLER, invite());
    let out = last_to(&p.sent(), UAS_A, "INVITE");
    // Someone who saw (or guessed) the branch forges a 603 from elsewhere.
    p.recv(5, "198.51.100.66:5060", answer(&out, 603, "forged"));
    assert!(
        only_to(&p.sent(), CALLER).is_empty(),
        "the forged 603 went upstream"
    );
    // The callee's own answer still counts.
    p.recv(10, UAS_A, answer(&out, 200, "real"));
    let up = only_to(&p.sent(), CALLER);
    assert_eq!(up.iter().map(line).collect::<Vec<_>>(), ["200"]);
}

#[test]
fn a_stray_response_goes_only_to_a_via_we_can_prove_we_added() {
    let mut p = Proxy::new(Box::new(|_: &mut RequestCtx| {
        vec![Action::Forward {
            destination: Some("sip:192.0.2.10".into()),
        }]
    }));
    p.recv(0, CALLER, request("MESSAGE", "z9hG4bKst1", None, 1));
    let out = last_to(&p.sent(), UAS_A, "MESSAGE");
    // The true answer of a stateless forward goes to the caller.
    p.recv(5, UAS_A, answer(&out, 200, "x"));
    assert_eq!(summary(&p.sent()), vec![pair(CALLER, "200")]);
    // The same branch above another Via: a stray response asking us to
    // write into 10.0.0.5:6379.
    let forged = msg(&text(&answer(&out, 200, "x")).replace(
        "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKst1",
        "SIP/2.0/TCP 10.0.0.5:6379;branch=z9hG4bKst1",
    ));
    p.recv(6, UAS_A, forged);
    assert!(p.sent().is_empty());
    // An old-style branch of ours, made up: nothing either.
    let made_up = msg(&text(&answer(&out, 200, "x")).replace(
        out.top_via().expect("via").branch().expect("branch"),
        "z9hG4bKwsp1-1",
    ));
    p.recv(7, UAS_A, made_up);
    assert!(p.sent().is_empty());
}

#[test]
fn a_source_past_its_transactions_gets_503_without_one() {
    let mut p = Proxy::new(relay_to("bob@192.0.2.10")).limits(ProxyLimits {
        max_transactions_per_source: 2,
        ..ProxyLimits::default()
    });
    for i in 0..3 {
        p.recv(
            0,
            CALLER,
            request("INVITE", &format!("z9hG4bKtx{i}"), None, 1),
        );
    }
    let up: Vec<String> = only_to(&p.sent(), CALLER).iter().map(line).collect();
    assert_eq!(up, ["100", "100", "503"]);
    assert_eq!(p.core.len().0, 4, "two server and two client transactions");
    // Another source is not held back by this one.
    let mut other = request("INVITE", "z9hG4bKother", None, 1);
    other
        .set_top_via(
            crate::sip::Via::parse("SIP/2.0/UDP 192.0.2.2:5060;branch=z9hG4bKother").expect("via"),
        )
        .expect("via");
    p.recv(1, "192.0.2.2:5060", other);
    assert_eq!(
        summary(&only_to_pairs(&p.sent(), "192.0.2.2:5060")),
        vec![pair("192.0.2.2:5060", "100")]
    );
}

#[test]
fn an_answered_non_invite_no_longer_counts_against_its_source() {
    let mut p = Proxy::new(Box::new(|_: &mut RequestCtx| {
        vec![Action::Reply {
            code: 200,
            reason: "OK".into(),
            headers: vec![],
        }]
    }))
    .limits(ProxyLimits {
        max_transactions_per_source: 2,
        ..ProxyLimits::default()
    });
    // A registrar behind one address (an SBC, a NAT) refreshes more
    // bindings than the limit within Timer J: each is answered.
    for i in 0..5 {
        p.recv(
            i,
            CALLER,
            request("REGISTER", &format!("z9hG4bKreg{i}"), None, 1),
        );
    }
    let up: Vec<String> = only_to(&p.sent(), CALLER).iter().map(line).collect();
    assert_eq!(up, ["200"; 5]);
    assert_eq!(p.core.len(), (0, 0));
    assert_eq!(
        (p.core.fx.txs.finished(), p.core.fx.admission.transactions()),
        (5, 0)
    );
    // A retransmission is answered again without the routing.
    let routed = p.hooks.calls.len();
    p.recv(10, CALLER, request("REGISTER", "z9hG4bKreg0", None, 1));
    let up: Vec<String> = only_to(&p.sent(), CALLER).iter().map(line).collect();
    assert_eq!(up, ["200"]);
    assert_eq!(p.hooks.calls.len(), routed);
}

#[test]
fn an_invite_answered_2xx_no_longer_counts_against_its_source() {
    let mut p = Proxy::new(relay_to(UAS_A)).limits(ProxyLimits {
        max_transactions_per_source: 2,
        ..ProxyLimits::default()
    });
    // A caller behind one address (an SBC) places more calls than the
    // limit within Timer L: each is answered.
    let mut up = Vec::new();
    for i in 0..4 {
        let invite = request("INVITE", &format!("z9hG4bKinv{i}"), None, 1);
        p.recv(i * 10, CALLER, invite);
        let sent = p.sent();
        up.extend(only_to(&sent, CALLER).iter().map(line));
        let to_a = last_to(&sent, UAS_A, "INVITE");
        p.recv(i * 10 + 5, UAS_A, answer(&to_a, 200, "a"));
        up.extend(only_to(&p.sent(), CALLER).iter().map(line));
    }
    assert_eq!(up, ["100", "200"].repeat(4));
    assert_eq!(
        (p.core.fx.txs.answered(), p.core.fx.admission.transactions()),
        (4, 0)
    );
    // Still in Accepted: a retransmitted INVITE is absorbed, not routed.
    let routed = p.hooks.calls.len();
    p.recv(100, CALLER, request("INVITE", "z9hG4bKinv0", None, 1));
    assert!(p.sent().is_empty());
    assert_eq!(p.hooks.calls.len(), routed);
    // A call not answered yet counts.
    p.recv(110, CALLER, request("INVITE", "z9hG4bKinv9", None, 1));
    assert_eq!(p.core.fx.admission.transactions(), 1);
    // Timer L ends the answered ones.
    p.advance(40_000);
    assert_eq!(p.core.fx.txs.answered(), 0);
}

fn only_to_pairs(sent: &[(Target, Message)], to: &str) -> Vec<(Target, Message)> {
    sent.iter()
        .filter(|(t, _)| t.addr == addr(to))
        .cloned()
        .collect()
}

#[test]
fn a_refused_invite_is_answered_once_and_leaves_no_transaction() {
    let mut p = Proxy::new(Box::new(|_: &mut RequestCtx| {
        vec![Action::Reply {
            code: 404,
            reason: "Not Found".into(),
            headers: vec![],
        }]
    }));
    p.recv(0, CALLER, invite());
    assert_eq!(summary(&p.sent()), vec![pair(CALLER, "404")]);
    assert_eq!(p.core.len(), (0, 0));
    // No Timer G retransmissions towards a source that may be spoofed.
    p.advance(40_000);
    assert!(p.sent().is_empty());
}

#[test]
fn a_refused_register_is_answered_once_and_its_retransmission_routed_again() {
    let mut p = Proxy::new(Box::new(|_: &mut RequestCtx| {
        vec![Action::Reply {
            code: 401,
            reason: "Unauthorized".into(),
            headers: vec![],
        }]
    }));
    p.recv(0, CALLER, request("REGISTER", "z9hG4bKchal", None, 1));
    let first = only_to(&p.sent(), CALLER);
    assert_eq!(first.iter().map(line).collect::<Vec<_>>(), ["401"]);
    // Nothing kept for Timer J: no transaction, no finished record.
    assert_eq!(p.core.len(), (0, 0));
    assert_eq!(
        (p.core.fx.txs.finished(), p.core.fx.admission.transactions()),
        (0, 0)
    );
    // A retransmission is routed again and answered with the same To tag.
    let routed = p.hooks.calls.len();
    p.recv(500, CALLER, request("REGISTER", "z9hG4bKchal", None, 1));
    let again = only_to(&p.sent(), CALLER);
    assert_eq!(again.iter().map(line).collect::<Vec<_>>(), ["401"]);
    assert_eq!(p.hooks.calls.len(), routed + 1);
    let tag = |m: &Message| m.to().ok().and_then(|t| t.tag().map(str::to_owned));
    assert!(tag(&first[0]).is_some());
    assert_eq!(tag(&first[0]), tag(&again[0]));
    assert_eq!(p.core.len(), (0, 0));
}

#[test]
fn only_a_record_route_of_ours_for_this_dialog_verifies_its_route() {
    let locality = Locality::new(listeners(&[(Transport::Udp, 5060)]), vec![]);
    let in_dialog = |route: &str, call_id: &str| {
        msg(&format!(
            "BYE sip:bob@192.0.2.10 SIP/2.0\n\
             Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKrr1\n\
             Route: {route}\n\
             From: <sip:alice@example.org>;tag=a1\n\
             To: <sip:bob@example.com>;tag=b1\n\
             Call-ID: {call_id}\n\
             CSeq: 2 BYE\n\
             Content-Length: 0\n\n"
        ))
    };
    let tag = secret::route_tag("dialog-1");
    let ours = format!("<sip:127.0.0.1:5060;lr;ri={tag}>");
    let mut m = in_dialog(&ours, "dialog-1");
    let routed = loose_route(&mut m, &locality);
    assert!(routed.had_route && routed.verified);
    // Written by the sender: no tag, another dialog's tag, a made-up one.
    for (route, call_id) in [
        ("<sip:127.0.0.1:5060;lr>".to_owned(), "dialog-1"),
        (ours.clone(), "dialog-2"),
        (
            "<sip:127.0.0.1:5060;lr;ri=0011223344556677>".to_owned(),
            "dialog-1",
        ),
    ] {
        let mut m = in_dialog(&route, call_id);
        let routed = loose_route(&mut m, &locality);
        assert!(routed.had_route && !routed.verified, "{route} {call_id}");
    }
}

#[test]
fn a_big_reply_to_an_unauthenticated_udp_request_becomes_a_small_500() {
    let contacts: Vec<(HeaderName, String)> = (0..40)
        .map(|i| {
            (
                HeaderName::Contact,
                format!("<sip:alice@192.0.2.{i}:5060;transport=udp>;expires=3600"),
            )
        })
        .collect();
    let script = move |_: &mut RequestCtx| {
        vec![Action::Reply {
            code: 200,
            reason: "OK".into(),
            headers: contacts.clone(),
        }]
    };
    let query = || request("REGISTER", "z9hG4bKq1", None, 1);
    let mut p = Proxy::new(Box::new(script.clone()));
    p.recv(0, CALLER, query());
    let sent = p.sent();
    assert_eq!(summary(&sent), vec![pair(CALLER, "500")]);
    let bytes = sent[0].1.to_bytes().len();
    assert!(bytes <= AMPLIFICATION * query().to_bytes().len(), "{bytes}");
    // From a trusted source the whole answer goes.
    let mut p = Proxy::new(Box::new(script));
    let source = Source {
        transport: Transport::Udp,
        remote: addr(CALLER),
        listener: 0,
        trusted: true,
    };
    p.core.handle(p.t0, query(), source, &mut p.hooks);
    assert_eq!(summary(&p.sent()), vec![pair(CALLER, "200")]);
}

#[test]
fn a_stray_response_to_a_relayed_branch_goes_up_only_as_a_2xx_of_the_invite() {
    let mut p = Proxy::new(relay_to("bob@192.0.2.10"));
    p.recv(0, CALLER, invite());
    let out = last_to(&p.sent(), UAS_A, "INVITE");
    p.sent();
    // The real branch, another method: no transaction, no relaying.
    for method in ["BYE", "CANCEL", "OPTIONS"] {
        let forged =
            msg(&text(&answer(&out, 200, "m"))
                .replace("CSeq: 1 INVITE", &format!("CSeq: 1 {method}")));
        p.recv(5, UAS_A, forged);
        assert!(p.sent().is_empty(), "{method}");
    }
    // The callee's 200 goes up on the transaction, and so do its
    // retransmissions after it ended.
    p.recv(10, UAS_A, answer(&out, 200, "b"));
    assert_eq!(summary(&p.sent()), vec![pair(CALLER, "200")]);
    p.advance(60_000);
    p.sent();
    p.recv(61_000, UAS_A, answer(&out, 200, "b"));
    assert_eq!(summary(&p.sent()), vec![pair(CALLER, "200")]);
}

#[test]
fn a_relay_that_failed_is_let_go_at_once_and_its_transactions_absorb_the_rest() {
    let mut p = Proxy::new(relay_to("bob@192.0.2.10"));
    p.recv(0, CALLER, invite());
    let out = last_to(&p.sent(), UAS_A, "INVITE");
    p.recv(5, UAS_A, answer(&out, 486, "busy"));
    assert_eq!(line(&only_to(&p.sent(), CALLER)[0]), "486");
    let (txs, relays) = p.core.len();
    assert_eq!(relays, 0, "the failed relay is gone");
    assert_eq!(txs, 2, "its server and client transactions remain, small");
    // The callee's retransmitted 486 is absorbed (ACKed again), the
    // caller's ACK and a late CANCEL change nothing.
    p.recv(6, UAS_A, answer(&out, 486, "busy"));
    assert!(only_to(&p.sent(), CALLER).is_empty());
    p.recv(7, CALLER, request("ACK", "z9hG4bKcaller1", Some("busy"), 1));
    p.recv(8, CALLER, cancel());
    let up: Vec<String> = only_to(&p.sent(), CALLER).iter().map(line).collect();
    assert!(up.iter().all(|l| l == "200"), "{up:?}");
    p.advance(60_000);
    assert_eq!(p.core.len(), (0, 0));
}

/// Heap allocations of this thread, counted by a wrapper of the system
/// allocator (the test binary's allocator): how many per relayed message
/// and how many bytes a finished call leaves behind in the core.
mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    struct Counting;

    thread_local! {
        static ALLOCS: Cell<u64> = const { Cell::new(0) };
        static LIVE: Cell<i64> = const { Cell::new(0) };
    }

    fn count(allocs: u64, bytes: i64) {
        // try_with: nothing is counted while the thread is being torn down.
        let _ = ALLOCS.try_with(|c| c.set(c.get() + allocs));
        let _ = LIVE.try_with(|c| c.set(c.get() + bytes));
    }

    // SAFETY: every call is passed on to the system allocator unchanged.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            count(1, layout.size() as i64);
            unsafe { System.alloc(layout) }
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            count(1, layout.size() as i64);
            unsafe { System.alloc_zeroed(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            count(0, -(layout.size() as i64));
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            count(1, new_size as i64 - layout.size() as i64);
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    #[global_allocator]
    static ALLOCATOR: Counting = Counting;

    /// (allocations, live bytes) of this thread so far.
    pub(super) fn now() -> (u64, i64) {
        (ALLOCS.with(Cell::get), LIVE.with(Cell::get))
    }
}

/// One call of the benchmark's shape (INVITE / 100 / 180 / 200 / ACK,
/// BYE / 200), record-routed; numbered so that calls do not match each
/// other. Returns the allocations of the core while handling each
/// message (the test's own message building excluded).
fn one_call(p: &mut Proxy, n: u32, ms: u64) -> Vec<(String, u64, i64)> {
    let mut counts = Vec::new();
    let call = |text: String| text.replace("call-1@", &format!("call-{n}@"));
    let mut recv = |p: &mut Proxy, what: &str, from: &str, m: Message| {
        let before = counting::now();
        p.recv(ms, from, m);
        let mut sent = Vec::new();
        while let Some(t) = p.core.poll_transmit() {
            sent.push(t);
        }
        let after = counting::now();
        counts.push((what.to_string(), after.0 - before.0, after.1 - before.1));
        sent.into_iter()
            .map(|t| (t.target, parse(t.data).expect("parses")))
            .collect::<Vec<_>>()
    };
    let invite = msg(&call(text(&request(
        "INVITE",
        &format!("z9hG4bKc{n}i"),
        None,
        1,
    ))));
    let sent = recv(p, "INVITE", CALLER, invite);
    let out = last_to(&sent, UAS_A, "INVITE");
    let ringing = msg(&call(text(&answer(&out, 180, "a"))));
    recv(p, "180", UAS_A, ringing);
    let ok = msg(&call(text(&answer(&out, 200, "a"))));
    recv(p, "200", UAS_A, ok);
    let ack = msg(&call(text(&request(
        "ACK",
        &format!("z9hG4bKc{n}a"),
        Some("a"),
        1,
    ))));
    recv(p, "ACK", CALLER, ack);
    let bye = msg(&call(text(&request(
        "BYE",
        &format!("z9hG4bKc{n}b"),
        Some("a"),
        2,
    ))));
    let sent = recv(p, "BYE", CALLER, bye);
    let out = last_to(&sent, UAS_A, "BYE");
    let bye_ok = msg(&call(text(&answer(&out, 200, "a"))));
    recv(p, "BYE 200", UAS_A, bye_ok);
    counts
}

/// What the core allocates per relayed message and keeps per finished
/// call, printed (`--nocapture`) for docs/performance.md; the bounds
/// only catch a regression of several times.
#[test]
fn allocations_per_message_and_memory_kept_per_call() {
    let mut p = Proxy::new(Box::new(|req| {
        req.record_route = true;
        vec![Action::Relay {
            destination: Some(format!("sip:{UAS_A}")),
        }]
    }));
    // Warm up: tables and queues grown.
    for n in 0..200 {
        one_call(&mut p, n, 0);
    }
    let calls = 200;
    let (_, live_before) = counting::now();
    let mut total: Vec<(String, u64, i64)> = Vec::new();
    for n in 0..calls {
        let counts = one_call(&mut p, 1000 + n, 1);
        if total.is_empty() {
            total = counts;
        } else {
            for (t, (_, c, b)) in total.iter_mut().zip(counts) {
                t.1 += c;
                t.2 += b;
            }
        }
    }
    let (_, live_after) = counting::now();
    let per_call = (live_after - live_before) / i64::from(calls);
    let per_message: Vec<(String, u64)> = total
        .iter()
        .map(|(w, c, _)| (w.clone(), c / u64::from(calls)))
        .collect();
    let kept: Vec<(String, i64)> = total
        .iter()
        .map(|(w, _, b)| (w.clone(), b / i64::from(calls)))
        .collect();
    let sum: u64 = per_message.iter().map(|(_, c)| c).sum();
    eprintln!("core allocations per message: {per_message:?}, per call {sum}");
    eprintln!("core bytes kept per message: {kept:?}");
    eprintln!("core bytes kept per finished call (until its timers end): {per_call}");
    for ms in [5_100, 33_000, 130_000] {
        let before = counting::now().1;
        p.advance(ms);
        eprintln!(
            "at {ms} ms: {} bytes per call let go",
            (before - counting::now().1) / i64::from(2 * calls)
        );
    }
    assert_eq!(p.core.len(), (0, 0));
    assert!(sum < 2000, "{sum} allocations per call");
    assert!(per_call < 40_000, "{per_call} bytes kept per call");
}
