//! A guest that loops, traps, hogs memory or sleeps in WASI (host code the
//! epoch deadline cannot stop, so waiting is refused) gets its request answered 500,
//! logged with the tenant and the reason; the instance is replaced and the
//! next request is served normally.

use std::time::Duration;

use wisp_tests::{build_guest, request, udp_exchange, Wisp};

const GUEST: &str = r#"
use wisp_sdk::prelude::*;

struct Misbehaving;

impl Router for Misbehaving {
    fn route(req: &Request) -> Flow {
        match req.uri_user().as_deref() {
            Some("loop") => loop {
                std::hint::black_box(0);
            },
            Some("trap") => panic!("asked to trap"),
            Some("sleep") => {
                std::thread::sleep(std::time::Duration::from_secs(30));
                req.reply(200, "Slept")
            }
            Some("hog") => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            _ => req.reply(200, "Fine"),
        }
    }
}

wisp_sdk::export_router!(Misbehaving);
"#;

#[test]
fn failing_hooks_answer_500_and_the_next_request_is_served() {
    let wasm = build_guest("misbehaving", GUEST).expect("guest builds");
    let tenant = format!(
        "[[tenant]]\nname = \"rowdy\"\ncomponent = \"{}\"\nlimits = {{ hook_deadline_ms = 20, memory_mib = 16 }}\n",
        wasm.display()
    );
    let mut wisp = Wisp::start(&tenant).expect("wisp starts");
    let port = wisp.port;
    let uri = |user: &str| format!("sip:{user}@127.0.0.1:{port}");
    for round in 0..3 {
        for (user, logged) in [
            ("loop", "deadline"),
            ("trap", "trapped"),
            // Under load the hog may reach its deadline before its memory cap.
            ("hog", "route hook failed"),
            ("sleep", "may not block"),
        ] {
            let reply = udp_exchange(
                wisp.addr(),
                request("OPTIONS", &uri(user), "").as_bytes(),
                Duration::from_secs(5),
            )
            .expect("udp")
            .unwrap_or_default();
            assert!(
                reply.starts_with("SIP/2.0 500 "),
                "round {round}, {user}: {reply}"
            );
            wisp.wait_for_log(logged, 1, Duration::from_secs(5))
                .expect("failure logged");
            let fine = udp_exchange(
                wisp.addr(),
                request("OPTIONS", &uri("alice"), "").as_bytes(),
                Duration::from_secs(5),
            )
            .expect("udp")
            .unwrap_or_default();
            assert!(
                fine.starts_with("SIP/2.0 200 Fine"),
                "round {round}, after {user}: {fine}"
            );
        }
    }
    let lines = wisp.log_lines_with("route hook failed");
    // Every failure line names the tenant (checked on the ones left unread).
    assert!(lines.iter().all(|l| l.contains("rowdy")), "{lines:?}");
}
