//! A routing component written with wisp-sdk and built inside the test, as
//! a user would: it refuses one caller with 403 and stamps a header on the
//! requests of everyone else. Both are checked on the wire by SIPp.

use std::time::Duration;

use wisp_tests::{build_guest, free_port, scenario, Sipp, Transport, Wisp};

const GUEST: &str = r#"
use wisp_sdk::prelude::*;

struct Gatekeeper;

impl Router for Gatekeeper {
    fn route(req: &Request) -> Flow {
        req.max_forwards(Some(10))?; // 483 by itself
        let blocked = config::param("BLOCKED").unwrap_or_default();
        let from = req.header("From").unwrap_or_default();
        if !req.in_dialog() && from.contains(&format!("sip:{blocked}@")) {
            if *req.method() == Method::Ack {
                return req.exit(); // the ACK of our own 403 ends here
            }
            log::info(&format!("refusing {blocked}"));
            return req.reply(403, "Forbidden");
        }
        if req.in_dialog() {
            req.loose_route();
        } else if *req.method() == Method::Invite {
            req.record_route()?;
        }
        req.append_header("X-Wisp-Stamp", "stamped-by-test")?;
        req.forward()
    }
}

wisp_sdk::export_router!(Gatekeeper);
"#;

/// uas.xml, but the INVITE must carry the stamp or the call fails.
fn uas_expecting_stamp() -> String {
    let uas = std::fs::read_to_string(scenario("uas.xml")).expect("uas.xml");
    let check = r#"<recv request="INVITE" crlf="true">
    <action>
      <ereg regexp="stamped-by-test" search_in="hdr" header="X-Wisp-Stamp:" check_it="true" assign_to="stamp"/>
    </action>
  </recv>"#;
    let uas = uas.replacen(r#"<recv request="INVITE" crlf="true"/>"#, check, 1);
    let uas = uas.replacen(
        "SIP/2.0 180 Ringing\n",
        "SIP/2.0 180 Ringing\n      X-Seen: [$stamp]\n",
        1,
    );
    let path = std::env::temp_dir().join(format!("wisp-uas-stamp-{}.xml", std::process::id()));
    std::fs::write(&path, uas).expect("write scenario");
    path.display().to_string()
}

#[test]
fn custom_guest_refuses_and_stamps() {
    let wasm = build_guest("gatekeeper", GUEST).expect("guest builds");
    let tenant = format!(
        "[[tenant]]\nname = \"gate\"\ncomponent = \"{}\"\nparams = {{ BLOCKED = \"mallory\" }}\n",
        wasm.display()
    );
    let mut wisp = Wisp::start(&tenant).expect("wisp starts");

    let uas_port = free_port();
    let uas = Sipp::uas(uas_expecting_stamp(), Transport::Udp, uas_port, 50)
        .spawn()
        .expect("uas starts");
    std::thread::sleep(Duration::from_millis(500));
    let callee = format!("127.0.0.1:{uas_port}").parse().expect("addr");

    let stamped = Sipp::uac(scenario("uac.xml"), Transport::Udp, callee, wisp.addr(), 50)
        .run()
        .expect("uac runs");
    assert_eq!(
        stamped.exit_code, 0,
        "stamped calls failed:\n{}",
        stamped.output
    );
    assert_eq!((stamped.successful, stamped.failed), (50, 0));

    let mut blocked = Sipp::uac(
        scenario("uac-rejected.xml"),
        Transport::Udp,
        callee,
        wisp.addr(),
        20,
    );
    blocked.caller = "mallory".into();
    let blocked = blocked.run().expect("uac runs");
    assert_eq!(
        blocked.exit_code, 0,
        "blocked calls were not refused:\n{}",
        blocked.output
    );
    assert_eq!((blocked.successful, blocked.failed), (20, 0));

    let uas = uas.wait().expect("uas ends");
    // The uas saw only the 50 stamped calls, none of mallory's.
    assert_eq!(uas.successful, 50, "uas output:\n{}", uas.output);
    wisp.wait_for_log("refusing mallory", 1, Duration::from_secs(5))
        .expect("the guest's log reaches wisp's log, tagged with the tenant");
}
