//! Instruction counts of the hooks of `benches/route_hook.rs`, for
//! callgrind: wall-clock figures on a shared machine move by ±30%, counted
//! instructions do not.
//!
//! ```sh
//! cargo build --release -p wisp --example hook_count
//! for n in 1000 2000; do
//!   valgrind --tool=callgrind --callgrind-out-file=cg.$n \
//!     '--toggle-collect=*Pool::route*' '--toggle-collect=*Pool::on_reply*' \
//!     target/release/examples/hook_count invite $n
//! done
//! ```
//!
//! (cg.2000 − cg.1000) / 1000 is one hook call; the hooks are those of the
//! bench: `invite`, `bye`, `reply` (on-reply on the 200) and `call` (all
//! six hooks of a call).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use wisp::config::Limits;
use wisp::proxy::Locality;
use wisp::script::{
    Action, Guest, Pool, RequestCtx, ScriptEngine, Source, TxVars, DEFAULT_COMPONENT,
};
use wisp::sip::Message;
use wisp::transport::{Listener, Transport};

const PROXY: &str = "127.0.0.1:5060";
const CALLER: &str = "127.0.0.1:5070";
const CALLEE: &str = "127.0.0.2:5080";

fn pool(cache: &std::path::Path) -> Pool {
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
    });
    engine
        .load_checked(DEFAULT_COMPONENT, "bench", guest)
        .expect("the bundled routing loads")
}

/// Where the callee's responses come from (CALLEE, built without parsing:
/// it is called inside timed loops).
fn callee() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 2], 5080))
}

fn parse(text: String) -> Message {
    wisp::sip::parse(Bytes::from(text)).expect("bench message parses")
}

fn request(text: String) -> RequestCtx {
    RequestCtx::new(
        parse(text),
        Source {
            transport: Transport::Udp,
            remote: CALLER.parse().expect("caller address"),
            listener: 0,
        },
    )
}

/// The messages of one call as they reach wisp: the caller's requests
/// (ACK and BYE carry the Record-Route wisp put in the 200) and the
/// callee's responses.
struct Call {
    invite: RequestCtx,
    ack: RequestCtx,
    bye: RequestCtx,
    ringing: Message,
    ok_invite: Message,
    ok_bye: Message,
}

fn call() -> Call {
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
        invite: request(invite),
        ack: request(ack),
        bye: request(bye),
        ringing: parse(response(
            "180 Ringing",
            "1 INVITE",
            "Content-Length: 0\r\n\r\n",
        )),
        ok_invite: parse(response(
            "200 OK",
            "1 INVITE",
            &format!(
                "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
                sdp.len()
            ),
        )),
        ok_bye: parse(response("200 OK", "2 BYE", "Content-Length: 0\r\n\r\n")),
    }
}

/// The route hook's actions, failing loudly if the routing did not do
/// what a call needs (so that a broken guest is not timed as a fast one).
fn route(pool: &Pool, req: RequestCtx, vars: &mut TxVars) -> (RequestCtx, Vec<Action>) {
    let (req, result) = pool.route(req, vars);
    let ((), actions) = result.expect("route hook runs");
    (req, actions)
}

fn check(pool: &Pool, call: &Call) {
    let mut vars = TxVars::default();
    let (_, actions) = route(pool, call.invite.clone(), &mut vars);
    assert!(
        matches!(actions.as_slice(), [Action::Relay { .. }]),
        "INVITE: {actions:?}"
    );
    let (_, actions) = route(pool, call.ack.clone(), &mut TxVars::default());
    assert!(
        matches!(actions.as_slice(), [Action::Forward { .. }]),
        "ACK: {actions:?}"
    );
    let (_, actions) = route(pool, call.bye.clone(), &mut TxVars::default());
    assert!(
        matches!(actions.as_slice(), [Action::Relay { .. }]),
        "BYE: {actions:?}"
    );
    let (_, _, kept) = pool.on_reply(
        call.invite.clone(),
        call.ok_invite.clone(),
        callee(),
        &mut vars,
    );
    assert!(kept.expect("on-reply runs").0, "on-reply drops the 200");
}

fn main() {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "invite".into());
    let n: usize = args.next().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let cache = tempfile::tempdir().expect("cache dir");
    let pool = pool(cache.path());
    let call = call();
    check(&pool, &call);
    for _ in 0..n {
        match which.as_str() {
            "invite" => drop(black_box(
                pool.route(call.invite.clone(), &mut TxVars::default()),
            )),
            "bye" => drop(black_box(
                pool.route(call.bye.clone(), &mut TxVars::default()),
            )),
            "reply" => drop(black_box(pool.on_reply(
                call.invite.clone(),
                call.ok_invite.clone(),
                callee(),
                &mut TxVars::default(),
            ))),
            "call" => {
                let mut vars = TxVars::default();
                let (invite, r) = pool.route(call.invite.clone(), &mut vars);
                black_box(&r);
                let (invite, _, r) =
                    pool.on_reply(invite, call.ringing.clone(), callee(), &mut vars);
                black_box(&r);
                let (_, _, r) = pool.on_reply(invite, call.ok_invite.clone(), callee(), &mut vars);
                black_box(&r);
                let (_, r) = pool.route(call.ack.clone(), &mut TxVars::default());
                black_box(&r);
                let mut bye_vars = TxVars::default();
                let (bye, r) = pool.route(call.bye.clone(), &mut bye_vars);
                black_box(&r);
                drop(black_box(pool.on_reply(
                    bye,
                    call.ok_bye.clone(),
                    callee(),
                    &mut bye_vars,
                )));
            }
            other => panic!("unknown hook {other}: invite, bye, reply or call"),
        }
    }
}
