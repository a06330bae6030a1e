//! A routing component written in TypeScript with sdk-js and built inside
//! the test, as a user would: host errors arrive as WispError with their
//! kind, an exception that escapes the hook answers 500 and the instance
//! is replaced, tenant params and the log reach the script and the operator.

use std::time::Duration;

use wisp_tests::{build_js_guest, request, udp_exchange, Wisp};

const GUEST: &str = r#"
import { Request, WispError, config, isMyself, log } from "@wisp/sdk";

export function route(req: Request): void {
  const user = req.uriUser();
  switch (user) {
    case "crlf":
      try {
        req.appendHeader("X-Bad", "a\r\nb");
      } catch (err) {
        if (err instanceof WispError) {
          return req.reply(400, `refused ${err.kind}`, [["X-Detail", "crlf"]]);
        }
        throw err;
      }
      return req.reply(200, "CRLF accepted");
    case "throw":
      throw new TypeError("boom");
    case "params":
      return req.reply(200, `greeting ${config.param("GREETING") ?? "unset"} ${config.enabled("FLAG")} ${config.param("NOPE") ?? "unset"}`);
    case "escape":
      req.setUri("not a uri at all");
      return req.reply(200, "set-uri accepted");
    case "source": {
      const s = req.source();
      const me = isMyself(req.uri()) ? "me" : "not-me";
      return req.reply(200, `${req.method()} from ${s.transport} ${s.ip} ${me}`);
    }
  }
  log.info(`no route for ${user}`);
  req.reply(404, "Nobody");
}
"#;

const WAIT: Duration = Duration::from_secs(5);

fn status(reply: &Option<String>) -> String {
    reply
        .as_deref()
        .and_then(|r| r.lines().next())
        .unwrap_or("(no reply)")
        .to_owned()
}

#[test]
fn typescript_guest_uses_the_sdk() {
    let wasm = build_js_guest("sdk-probe", GUEST).expect("guest builds");
    let tenant = format!(
        "[[tenant]]\nname = \"probe\"\ncomponent = \"{}\"\nparams = {{ GREETING = \"hello\", FLAG = \"yes\" }}\n",
        wasm.display()
    );
    let mut wisp = Wisp::start(&tenant).expect("wisp starts");
    let (addr, port) = (wisp.addr(), wisp.port);
    let ask = |user: &str, method: &str| {
        let uri = format!("sip:{user}@127.0.0.1:{port}");
        udp_exchange(addr, request(method, &uri, "").as_bytes(), WAIT).expect("udp")
    };

    let reply = ask("crlf", "OPTIONS");
    assert_eq!(status(&reply), "SIP/2.0 400 refused invalid");
    assert!(reply.unwrap_or_default().contains("X-Detail: crlf"));

    let reply = ask("params", "OPTIONS");
    assert_eq!(status(&reply), "SIP/2.0 200 greeting hello true unset");

    let reply = ask("source", "OPTIONS");
    assert_eq!(status(&reply), "SIP/2.0 200 OPTIONS from udp 127.0.0.1 me");

    // A bug in the script: the hook traps, the request gets a 500, and the
    // next request is served by a fresh instance.
    let reply = ask("throw", "OPTIONS");
    assert_eq!(status(&reply), "SIP/2.0 500 Server Internal Error");
    wisp.wait_for_log("route threw: TypeError: boom", 1, WAIT)
        .expect("the exception is logged with the tenant");
    let reply = ask("params", "OPTIONS");
    assert_eq!(status(&reply), "SIP/2.0 200 greeting hello true unset");

    // A host refusal the script does not catch: logged, request dropped,
    // as the Rust SDK does with an Err.
    let reply = udp_exchange(
        wisp.addr(),
        request(
            "OPTIONS",
            &format!("sip:escape@127.0.0.1:{}", wisp.port),
            "",
        )
        .as_bytes(),
        Duration::from_millis(700),
    )
    .expect("udp");
    assert_eq!(status(&reply), "(no reply)");
    wisp.wait_for_log("route failed: invalid argument", 1, WAIT)
        .expect("the escaped WispError is logged");

    let reply = ask("nobody", "INVITE");
    assert_eq!(status(&reply), "SIP/2.0 404 Nobody");
    wisp.wait_for_log("no route for nobody", 1, WAIT)
        .expect("log.info reaches wisp's log");
}
