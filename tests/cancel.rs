//! The caller hangs up while the callee rings, through the default routing:
//! wisp answers the CANCEL 200, cancels the branch, and the callee's 487
//! reaches the caller, who ACKs it. UDP and TCP, Rust and TypeScript.

use std::time::Duration;

use wisp_tests::{assert_all_successful, free_port, scenario, Routing, Sipp, Transport, Wisp};

const CALLS: u32 = 100;

fn cancel_while_ringing(routing: Routing, transport: Transport) {
    let tenant = routing.tenant_toml().expect("routing component");
    let wisp = Wisp::start(&tenant).expect("wisp starts");
    let uas_port = free_port();
    let uas = Sipp::uas(scenario("uas-ring-cancel.xml"), transport, uas_port, CALLS)
        .spawn()
        .expect("uas starts");
    std::thread::sleep(Duration::from_millis(500));
    let callee = format!("127.0.0.1:{uas_port}").parse().expect("addr");
    let mut uac = Sipp::uac(
        scenario("uac-cancel.xml"),
        transport,
        callee,
        wisp.addr(),
        CALLS,
    );
    uac.rate = 50;
    uac.timeout = Duration::from_secs(60);
    let outcome = uac.run().expect("uac runs");
    let what = format!("{routing:?} {transport:?} cancel");
    assert_all_successful(&format!("{what}, uac"), &outcome, CALLS);
    // The callee got a CANCEL on its branch for every call, and the ACK of its 487.
    let uas = uas.wait().expect("uas ends");
    assert_all_successful(&format!("{what}, uas"), &uas, CALLS);
}

#[test]
fn cancel_while_ringing_udp() {
    cancel_while_ringing(Routing::Rust, Transport::Udp);
}

#[test]
fn cancel_while_ringing_tcp() {
    cancel_while_ringing(Routing::Rust, Transport::Tcp);
}

#[test]
fn cancel_while_ringing_udp_js() {
    cancel_while_ringing(Routing::Js, Transport::Udp);
}
