//! Forking with the default routing, Rust and TypeScript: serial forking
//! through the failure hook (`FAILOVER`: the first callee is busy, the
//! next one answers) and parallel forking (`PARALLEL`: two callees ring,
//! one answers, the other is cancelled). The caller sees one 200 either way.

use std::time::Duration;

use wisp_tests::{assert_all_successful, free_port, scenario, Routing, Sipp, Transport, Wisp};

const CALLS: u32 = 50;

fn serial_forking(routing: Routing) {
    let (busy_port, answer_port) = (free_port(), free_port());
    let failover = format!("sip:service@127.0.0.1:{answer_port}");
    let tenant = routing
        .tenant_with_params(&[("FAILOVER", &failover)])
        .expect("routing component");
    let wisp = Wisp::start(&tenant).expect("wisp starts");
    let busy = Sipp::uas(scenario("uas-486.xml"), Transport::Udp, busy_port, CALLS)
        .spawn()
        .expect("busy uas starts");
    let answer = Sipp::uas(scenario("uas.xml"), Transport::Udp, answer_port, CALLS)
        .spawn()
        .expect("answering uas starts");
    std::thread::sleep(Duration::from_millis(500));
    let callee = format!("127.0.0.1:{busy_port}").parse().expect("addr");
    let mut uac = Sipp::uac(
        scenario("uac.xml"),
        Transport::Udp,
        callee,
        wisp.addr(),
        CALLS,
    );
    uac.rate = 20;
    uac.timeout = Duration::from_secs(60);
    let outcome = uac.run().expect("uac runs");
    assert_all_successful(&format!("{routing:?} serial forking, uac"), &outcome, CALLS);
    // Every call reached both callees: busy first, then the next URI.
    let busy = busy.wait().expect("busy uas ends");
    assert_all_successful(
        &format!("{routing:?} serial forking, busy uas"),
        &busy,
        CALLS,
    );
    let answer = answer.wait().expect("answering uas ends");
    assert_all_successful(
        &format!("{routing:?} serial forking, answering uas"),
        &answer,
        CALLS,
    );
}

fn parallel_forking(routing: Routing) {
    let (answer_port, ringing_port) = (free_port(), free_port());
    let parallel = format!("sip:service@127.0.0.1:{ringing_port}");
    let tenant = routing
        .tenant_with_params(&[("PARALLEL", &parallel)])
        .expect("routing component");
    let wisp = Wisp::start(&tenant).expect("wisp starts");
    let answer = Sipp::uas(scenario("uas.xml"), Transport::Udp, answer_port, CALLS)
        .spawn()
        .expect("answering uas starts");
    // Rings, then must get a CANCEL: answers it 200 and the INVITE 487.
    let ringing = Sipp::uas(
        scenario("uas-ring-cancel.xml"),
        Transport::Udp,
        ringing_port,
        CALLS,
    )
    .spawn()
    .expect("ringing uas starts");
    std::thread::sleep(Duration::from_millis(500));
    let callee = format!("127.0.0.1:{answer_port}").parse().expect("addr");
    let mut uac = Sipp::uac(
        scenario("uac-fork.xml"),
        Transport::Udp,
        callee,
        wisp.addr(),
        CALLS,
    );
    uac.rate = 20;
    uac.timeout = Duration::from_secs(60);
    let outcome = uac.run().expect("uac runs");
    assert_all_successful(
        &format!("{routing:?} parallel forking, uac"),
        &outcome,
        CALLS,
    );
    let answer = answer.wait().expect("answering uas ends");
    assert_all_successful(
        &format!("{routing:?} parallel forking, answering uas"),
        &answer,
        CALLS,
    );
    let ringing = ringing.wait().expect("ringing uas ends");
    assert_all_successful(
        &format!("{routing:?} parallel forking, cancelled uas"),
        &ringing,
        CALLS,
    );
}

#[test]
fn serial_forking_on_failure() {
    serial_forking(Routing::Rust);
}

#[test]
fn serial_forking_on_failure_js() {
    serial_forking(Routing::Js);
}

#[test]
fn parallel_forking_cancels_the_other_branch() {
    parallel_forking(Routing::Rust);
}

#[test]
fn parallel_forking_cancels_the_other_branch_js() {
    parallel_forking(Routing::Js);
}
