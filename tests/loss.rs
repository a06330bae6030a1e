//! Calls through the default routing with 10% of the packets lost at both
//! ends: the caller is SIPp with `-lost 10` (both directions), the callee a
//! UAS that drops 10% of what it receives and of what it sends
//! ([`LossyUas`]; SIPp as a UAS stops re-answering retransmissions once its
//! scenario moved on, see docs/transactions.md). wisp's server and client
//! transactions absorb and re-send, and every call completes.

use std::time::Duration;

use wisp_tests::{assert_all_successful, scenario, LossyUas, Routing, Sipp, Transport, Wisp};

const CALLS: u32 = 200;
const LOSS_PERCENT: u32 = 10;

fn check_calls_survive_packet_loss(routing: Routing) {
    let tenant = routing.tenant_toml().expect("routing component");
    let wisp = Wisp::start(&tenant).expect("wisp starts");
    let uas = LossyUas::start(LOSS_PERCENT, 0x5eed_1055).expect("lossy uas starts");
    let mut uac = Sipp::uac(
        scenario("uac.xml"),
        Transport::Udp,
        uas.addr(),
        wisp.addr(),
        CALLS,
    );
    uac.rate = 20;
    uac.timeout = Duration::from_secs(120);
    uac.extra = vec!["-lost".into(), LOSS_PERCENT.to_string()];
    let outcome = uac.run().expect("uac runs");
    let report = uas.finish();
    eprintln!("{routing:?}: callee saw {report:?}");
    assert_all_successful(
        &format!("{routing:?} -lost {LOSS_PERCENT} at the uac, {LOSS_PERCENT}% at the uas"),
        &outcome,
        CALLS,
    );
    // The loss was real on the callee's side, and every call reached it and
    // was ended there (the same call counted once despite retransmissions).
    assert!(
        report.dropped_in > 0 && report.dropped_out > 0,
        "{report:?}"
    );
    assert_eq!(report.answered, CALLS as usize, "{report:?}");
    assert_eq!(report.ended, CALLS as usize, "{report:?}");
}

#[test]
fn calls_survive_packet_loss() {
    check_calls_survive_packet_loss(Routing::Rust);
}

#[test]
fn calls_survive_packet_loss_js() {
    check_calls_survive_packet_loss(Routing::Js);
}
