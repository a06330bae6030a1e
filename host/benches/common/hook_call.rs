//! The bundled Rust routing and the messages of one record-routed call,
//! shared by the criterion bench (`benches/route_hook.rs`) and the
//! callgrind driver (`examples/hook_count.rs`), so that both time the same
//! hooks on the same messages.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use wisp::proxy::{Action, Locality, RequestCtx, Source, TxVars};
use wisp::script::{Guest, Limits, Pool, ScriptEngine, DEFAULT_COMPONENT};
use wisp::sip::Message;
use wisp::transport::{Listener, Transport};

const PROXY: &str = "127.0.0.1:5060";
const CALLER: &str = "127.0.0.1:5070";
const CALLEE: &str = "127.0.0.2:5080";

pub fn pool(cache: &std::path::Path) -> Pool {
    let engine = ScriptEngine::new(Some(cache.to_owned())).expect("engine");
    let local: SocketAddr = PROXY.parse().expect("proxy address");
    let locality = Arc::new(Locality::new(
        vec![Listener {
            transport: Transport::Udp,
            local,
            advertise: None,
        }],
        Vec::new(),
    ));
    let guest = Arc::new(Guest {
        tenant: "bench".to_owned(),
        version: 1,
        params: BTreeMap::new(),
        limits: Limits::default(),
        locality,
        metrics: wisp::metrics::Metrics::new().tenant("bench"),
        services: Arc::new(wisp::services::Services::with_storage(
            wisp::services::Storage::in_memory().expect("in-memory storage"),
        )),
        allow: Default::default(),
        domains: Default::default(),
        log_capture: None,
    });
    engine
        .load_checked(DEFAULT_COMPONENT, "bench", guest)
        .expect("the bundled routing loads")
}

/// Where the callee's responses come from (CALLEE, built without parsing:
/// it is called inside timed loops).
pub fn callee() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 2], 5080))
}

/// One message of the call as it comes off the wire. Each hook call gets it
/// afresh, in the state the proxy core hands a hook its message: parsed
/// (with the parser's spare room for the header lines a route adds; a
/// clone has none, and would time a reallocation the server does not
/// make) and validated (`sip::validate` runs before any hook and parses
/// the From, To, CSeq and top Via views, which the hooks then read without
/// parsing them again). Preparing it is not part of what is timed.
pub struct Wire(Bytes);

impl Wire {
    fn new(text: String) -> Wire {
        let wire = Wire(Bytes::from(text));
        drop(wire.message());
        wire
    }

    /// The message as a hook gets it.
    pub fn message(&self) -> Message {
        let msg = wisp::sip::parse(self.0.clone()).expect("bench message parses");
        wisp::sip::validate(&msg).expect("bench message is valid");
        msg
    }

    /// The request as the route hook gets it.
    pub fn request(&self) -> RequestCtx {
        request(self.message())
    }
}

fn request(msg: Message) -> RequestCtx {
    RequestCtx::new(
        msg,
        Source {
            transport: Transport::Udp,
            remote: CALLER.parse().expect("caller address"),
            listener: 0,
            // Loopback, which the server trusts by default: the bundled
            // routing relays to a foreign domain for trusted sources only.
            trusted: true,
        },
    )
}

/// The messages of one call as they reach wisp: the caller's requests
/// (ACK and BYE carry the Record-Route wisp put in the 200) and the
/// callee's responses.
pub struct Call {
    pub invite: Wire,
    pub ack: Wire,
    pub bye: Wire,
    pub ringing: Wire,
    pub ok_invite: Wire,
    pub ok_bye: Wire,
}

/// What [`all_hooks`] takes: the call's requests and the callee's
/// responses, each as a hook gets it.
pub type CallMessages = ((RequestCtx, RequestCtx, RequestCtx), [Message; 3]);

impl Call {
    /// The six messages of the call, each as a hook gets it.
    pub fn messages(&self) -> CallMessages {
        (
            (
                self.invite.request(),
                self.ack.request(),
                self.bye.request(),
            ),
            [
                self.ringing.message(),
                self.ok_invite.message(),
                self.ok_bye.message(),
            ],
        )
    }
}

pub fn call() -> Call {
    let common = |method: &str, cseq: u32, to_tag: &str, route: &str| {
        format!(
            "{method} sip:bob@{CALLEE} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {CALLER};branch=z9hG4bKbench{method}{cseq};rport\r\n\
             Max-Forwards: 70\r\n\
             {route}\
             From: \"alice\" <sip:alice@{CALLER}>;tag=a1\r\n\
             To: <sip:bob@{CALLEE}>{to_tag}\r\n\
             Call-ID: bench-1@127.0.0.1\r\n\
             CSeq: {cseq} {method}\r\n\
             Contact: <sip:alice@{CALLER};transport=udp>\r\n"
        )
    };
    let sdp = "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\n\
               c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n\
               a=rtpmap:0 PCMU/8000\r\n";
    let invite = format!(
        "{}Subject: bench\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        common("INVITE", 1, "", ""),
        sdp.len()
    );
    let route = format!("Route: <sip:{PROXY};lr>\r\n");
    let ack = format!(
        "{}Content-Length: 0\r\n\r\n",
        common("ACK", 1, ";tag=b1", &route)
    );
    let bye = format!(
        "{}Content-Length: 0\r\n\r\n",
        common("BYE", 2, ";tag=b1", &route)
    );
    let response = |code: &str, cseq: &str, body: &str| {
        format!(
            "SIP/2.0 {code}\r\n\
             Via: SIP/2.0/UDP {PROXY};branch=z9hG4bKwisp1\r\n\
             Via: SIP/2.0/UDP {CALLER};branch=z9hG4bKbench;rport=5070;received=127.0.0.1\r\n\
             Record-Route: <sip:{PROXY};lr>\r\n\
             From: \"alice\" <sip:alice@{CALLER}>;tag=a1\r\n\
             To: <sip:bob@{CALLEE}>;tag=b1\r\n\
             Call-ID: bench-1@127.0.0.1\r\n\
             CSeq: {cseq}\r\n\
             Contact: <sip:{CALLEE};transport=udp>\r\n\
             {body}"
        )
    };
    Call {
        invite: Wire::new(invite),
        ack: Wire::new(ack),
        bye: Wire::new(bye),
        ringing: Wire::new(response(
            "180 Ringing",
            "1 INVITE",
            "Content-Length: 0\r\n\r\n",
        )),
        ok_invite: Wire::new(response(
            "200 OK",
            "1 INVITE",
            &format!(
                "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
                sdp.len()
            ),
        )),
        ok_bye: Wire::new(response("200 OK", "2 BYE", "Content-Length: 0\r\n\r\n")),
    }
}

/// The route hook's actions, failing loudly if the routing did not do
/// what a call needs (so that a broken guest is not timed as a fast one).
fn route(pool: &Pool, req: RequestCtx, vars: &mut TxVars) -> (RequestCtx, Vec<Action>) {
    let (req, result) = pool.route(req, vars);
    let ((), actions) = result.expect("route hook runs");
    (req, actions)
}

pub fn check(pool: &Pool, call: &Call) {
    let mut vars = TxVars::default();
    let (_, actions) = route(pool, call.invite.request(), &mut vars);
    assert!(
        matches!(actions.as_slice(), [Action::Relay { .. }]),
        "INVITE: {actions:?}"
    );
    let (_, actions) = route(pool, call.ack.request(), &mut TxVars::default());
    assert!(
        matches!(actions.as_slice(), [Action::Forward { .. }]),
        "ACK: {actions:?}"
    );
    let (_, actions) = route(pool, call.bye.request(), &mut TxVars::default());
    assert!(
        matches!(actions.as_slice(), [Action::Relay { .. }]),
        "BYE: {actions:?}"
    );
    let (_, _, kept) = pool.on_reply(
        call.invite.request(),
        call.ok_invite.message(),
        callee(),
        &mut vars,
    );
    assert!(kept.expect("on-reply runs").0, "on-reply drops the 200");
}

/// The six hooks one call runs in wisp: route on the INVITE, on-reply on
/// the 180 and the 200, route on the ACK and the BYE, on-reply on the
/// BYE's 200.
pub fn all_hooks(pool: &Pool, ((invite, ack, bye), [ringing, ok_invite, ok_bye]): CallMessages) {
    let mut vars = TxVars::default();
    let (invite, r) = pool.route(invite, &mut vars);
    black_box(&r);
    let (invite, _, r) = pool.on_reply(invite, ringing, callee(), &mut vars);
    black_box(&r);
    let (_, _, r) = pool.on_reply(invite, ok_invite, callee(), &mut vars);
    black_box(&r);
    let (_, r) = pool.route(ack, &mut TxVars::default());
    black_box(&r);
    let mut bye_vars = TxVars::default();
    let (bye, r) = pool.route(bye, &mut bye_vars);
    black_box(&r);
    drop(black_box(pool.on_reply(
        bye,
        ok_bye,
        callee(),
        &mut bye_vars,
    )));
}
