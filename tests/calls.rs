//! Calls through wisp with the default routing, once with the bundled Rust
//! component and once with its TypeScript port (guests/default-js):
//! SIPp uac → wisp → SIPp uas, INVITE/180/200/ACK/BYE/200, record-routed.

use std::time::Duration;

use wisp_tests::{free_port, scenario, Routing, Sipp, Transport, Wisp};

const CALLS: u32 = 500;

fn calls_through_default_routing(routing: Routing, transport: Transport) {
    let tenant = routing.tenant_toml().expect("routing component");
    let wisp = Wisp::start(&tenant).expect("wisp starts");
    let uas_port = free_port();
    let uas = Sipp::uas(scenario("uas.xml"), transport, uas_port, CALLS)
        .spawn()
        .expect("uas starts");
    // Give the uas a moment to bind before calls arrive.
    std::thread::sleep(Duration::from_millis(500));
    let callee = format!("127.0.0.1:{uas_port}").parse().expect("addr");
    let outcome = Sipp::uac(scenario("uac.xml"), transport, callee, wisp.addr(), CALLS)
        .run()
        .expect("uac runs");
    let uas = uas.wait().expect("uas ends");
    eprintln!(
        "{routing:?} {transport:?}: uac {} successful, {} failed (exit {}); uas {} successful, {} failed",
        outcome.successful, outcome.failed, outcome.exit_code, uas.successful, uas.failed
    );
    assert_eq!(outcome.exit_code, 0, "uac failed:\n{}", outcome.output);
    assert_eq!(outcome.successful, u64::from(CALLS));
    assert_eq!(outcome.failed, 0);
}

#[test]
fn udp_calls() {
    calls_through_default_routing(Routing::Rust, Transport::Udp);
}

#[test]
fn tcp_calls() {
    calls_through_default_routing(Routing::Rust, Transport::Tcp);
}

#[test]
fn udp_calls_js() {
    calls_through_default_routing(Routing::Js, Transport::Udp);
}

#[test]
fn tcp_calls_js() {
    calls_through_default_routing(Routing::Js, Transport::Tcp);
}
