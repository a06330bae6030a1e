//! Final-response timers set by the routing (`FR_TIMER_MS`,
//! `FR_INV_TIMER_MS`, i.e. `tm.set-timers`): a callee that never answers
//! gets the caller a 408, and one that rings forever is cancelled and the
//! caller gets a 408. The SIPp caller gives up after 20 s, well short of
//! the defaults (30 s `fr_timer`, 120 s `fr_inv_timer`) and of Timer B
//! (32 s), so the 408 can only come from the timers the routing set.

use std::time::Duration;

use wisp_tests::{
    assert_all_successful, free_port, header_of, scenario, Routing, SilentPeer, Sipp, Transport,
    Wisp,
};

const CALLS: u32 = 5;

fn tenant(routing: Routing) -> String {
    routing
        .tenant_with_params(&[("FR_TIMER_MS", "2000"), ("FR_INV_TIMER_MS", "3000")])
        .expect("routing component")
}

fn caller(callee: std::net::SocketAddr, wisp: &Wisp) -> Sipp {
    let mut uac = Sipp::uac(
        scenario("uac-timeout.xml"),
        Transport::Udp,
        callee,
        wisp.addr(),
        CALLS,
    );
    uac.rate = 5;
    uac.timeout = Duration::from_secs(20);
    uac
}

fn silent_callee_times_out(routing: Routing) {
    let wisp = Wisp::start(&tenant(routing)).expect("wisp starts");
    let peer = SilentPeer::start().expect("silent peer");
    let outcome = caller(peer.addr(), &wisp).run().expect("uac runs");
    assert_all_successful(&format!("{routing:?} silent callee, uac"), &outcome, CALLS);
    // The INVITEs did reach the callee, one transaction (branch) per call.
    let invites: Vec<String> = peer
        .received()
        .into_iter()
        .filter(|m| m.starts_with("INVITE "))
        .collect();
    let mut calls: Vec<&str> = invites
        .iter()
        .filter_map(|m| header_of(m, "Call-ID"))
        .collect();
    calls.sort_unstable();
    calls.dedup();
    eprintln!(
        "silent callee: {} INVITEs for {} calls",
        invites.len(),
        calls.len()
    );
    assert_eq!(calls.len(), CALLS as usize);
}

fn ringing_callee_is_cancelled(routing: Routing) {
    let wisp = Wisp::start(&tenant(routing)).expect("wisp starts");
    let uas_port = free_port();
    let uas = Sipp::uas(
        scenario("uas-ring-cancel.xml"),
        Transport::Udp,
        uas_port,
        CALLS,
    )
    .spawn()
    .expect("uas starts");
    std::thread::sleep(Duration::from_millis(500));
    let callee = format!("127.0.0.1:{uas_port}").parse().expect("addr");
    let outcome = caller(callee, &wisp).run().expect("uac runs");
    assert_all_successful(&format!("{routing:?} ringing callee, uac"), &outcome, CALLS);
    // The callee got a CANCEL when the timer ran out.
    let uas = uas.wait().expect("uas ends");
    assert_all_successful(&format!("{routing:?} ringing callee, uas"), &uas, CALLS);
}

#[test]
fn silent_callee_gets_408() {
    silent_callee_times_out(Routing::Rust);
}

#[test]
fn silent_callee_gets_408_js() {
    silent_callee_times_out(Routing::Js);
}

#[test]
fn ringing_callee_is_cancelled_with_408() {
    ringing_callee_is_cancelled(Routing::Rust);
}
