//! Interop with Kamailio (Debian package `kamailio`) as the neighbouring
//! proxy, both record-routing and stateful, on UDP and TCP:
//! SIPp → wisp → Kamailio → SIPp, and SIPp → Kamailio → wisp → SIPp.
//! ACK and BYE follow the Record-Route set through both proxies.

use std::time::Duration;

use wisp_tests::{
    assert_all_successful, free_port, scenario, Kamailio, Routing, Sipp, Transport, Wisp,
};

const CALLS: u32 = 100;

/// Which proxy the caller talks to first.
#[derive(Debug, Clone, Copy)]
enum Order {
    WispFirst,
    KamailioFirst,
}

fn calls_through_kamailio(order: Order, transport: Transport) {
    let tenant = Routing::Rust.tenant_toml().expect("routing component");
    let wisp = Wisp::start(&tenant).expect("wisp starts");
    let uas_port = free_port();
    let uas_addr = format!("127.0.0.1:{uas_port}").parse().expect("addr");
    // Kamailio sends initial requests to the next element of the chain;
    // wisp sends them to the Request-URI.
    let (kamailio, callee, first_hop) = match order {
        Order::WispFirst => {
            let kamailio = Kamailio::start(uas_addr).expect("kamailio starts");
            let callee = kamailio.addr();
            (kamailio, callee, wisp.addr())
        }
        Order::KamailioFirst => {
            let kamailio = Kamailio::start(wisp.addr()).expect("kamailio starts");
            let first = kamailio.addr();
            (kamailio, uas_addr, first)
        }
    };
    let uas = Sipp::uas(scenario("uas.xml"), transport, uas_port, CALLS)
        .spawn()
        .expect("uas starts");
    std::thread::sleep(Duration::from_millis(500));
    let mut uac = Sipp::uac(scenario("uac.xml"), transport, callee, first_hop, CALLS);
    uac.rate = 50;
    uac.timeout = Duration::from_secs(90);
    let outcome = uac.run().expect("uac runs");
    let what = format!("{order:?} {transport:?}");
    assert_all_successful(&format!("{what}, uac"), &outcome, CALLS);
    let uas = uas.wait().expect("uas ends");
    assert_all_successful(&format!("{what}, uas"), &uas, CALLS);
    drop(kamailio);
}

#[test]
fn wisp_then_kamailio_udp() {
    calls_through_kamailio(Order::WispFirst, Transport::Udp);
}

#[test]
fn kamailio_then_wisp_udp() {
    calls_through_kamailio(Order::KamailioFirst, Transport::Udp);
}

#[test]
fn wisp_then_kamailio_tcp() {
    calls_through_kamailio(Order::WispFirst, Transport::Tcp);
}

#[test]
fn kamailio_then_wisp_tcp() {
    calls_through_kamailio(Order::KamailioFirst, Transport::Tcp);
}
