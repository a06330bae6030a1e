//! A routing component written in TypeScript with sdk-js and built inside
//! the test, as a user would: decisions that stop the hook wherever they
//! are made (a sub-route's reply stops its caller), refused checks answered
//! with the reply they carry, host errors as WispError with their kind,
//! exceptions answered 500 and logged, the fields of a request, the
//! transaction's variables, tenant params and the log.

use std::time::Duration;

use wisp_tests::{build_js_guest, request, udp_exchange, Wisp};

const GUEST: &str = r#"
import {
  Request, WispError, config, exit, isMyself, kv, log, parseUri, registrar, vars,
} from "@wisp/sdk";

/** A sub-route that decides: its caller must not go on (Kamailio's `exit`). */
function decide(req: Request): void {
  if (req.isMethod("OPTIONS")) req.reply(202, "decided in a sub-route");
}

export function route(req: Request): void {
  const user = req.uriUser();
  switch (user) {
    case "crlf":
      try {
        req.fields.append("X-Bad", "a\r\nb");
      } catch (err) {
        if (err instanceof WispError) req.reply(400, `refused ${err.kind}`, [["X-Detail", "crlf"]]);
        throw err;
      }
      req.reply(200, "CRLF accepted");
    case "throw":
      throw new TypeError("boom");
    case "params":
      req.reply(200, `greeting ${config.param("GREETING") ?? "unset"} ${config.enabled("FLAG")} ${config.param("NOPE") ?? "unset"}`);
    case "escape":
      req.setUri("not a uri at all");
      req.reply(200, "set-uri accepted");
    case "source": {
      const { method, source, uriIsMyself, inDialog } = req.info;
      const me = uriIsMyself && isMyself(req.uri()) ? "me" : "not-me";
      req.reply(200, `${method} ${req.method} from ${source.transport} ${source.ip} ${me} ${inDialog}`);
    }
    case "exit":
      decide(req);
      req.reply(500, "the caller went on");
    case "drop":
      exit();
    case "maxfwd":
      req.maxForwards();
      req.reply(200, "hops left");
    case "lookup":
      registrar.lookup(req);
      req.relay();
    case "fields": {
      const f = req.fields;
      const seen = `${f.has("call-id")} ${f.getAll("X-Multi").join("|")} ${f.names().includes("CSeq")} ${f.text() === ""}`;
      req.reply(200, `${seen} ${f.remove("X-Multi")} ${f.has("X-Multi")}`);
    }
    case "vars": {
      vars.set("flag");
      const flag = `${vars.has("flag")} ${vars.get("flag")} ${vars.remove("flag")} ${vars.has("flag")}`;
      const counted = `${kv.incr("hits", 2)} ${kv.incr("hits")}`;
      const located = `${registrar.unregister("nobody")} ${registrar.registered("nobody")}`;
      req.reply(200, `${flag} ${counted} ${located} ${parseUri("sip:bob@example.com:5070")?.port}`);
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
    let send = |user: &str, method: &str, headers: &str, timeout: Duration| {
        let uri = format!("sip:{user}@127.0.0.1:{port}");
        udp_exchange(addr, request(method, &uri, headers).as_bytes(), timeout).expect("udp")
    };
    let ask = |user: &str, method: &str| send(user, method, "", WAIT);

    let reply = ask("crlf", "OPTIONS");
    assert_eq!(status(&reply), "SIP/2.0 400 refused invalid");
    assert!(reply.unwrap_or_default().contains("X-Detail: crlf"));

    let reply = ask("params", "OPTIONS");
    assert_eq!(status(&reply), "SIP/2.0 200 greeting hello true unset");

    let reply = ask("source", "OPTIONS");
    assert_eq!(
        status(&reply),
        "SIP/2.0 200 OPTIONS OPTIONS from udp 127.0.0.1 me false"
    );

    // A decision in a sub-route stops its caller too.
    let reply = ask("exit", "OPTIONS");
    assert_eq!(status(&reply), "SIP/2.0 202 decided in a sub-route");

    // A refused check that escapes the hook is answered with its reply.
    let reply = send("maxfwd", "OPTIONS", "Max-Forwards: 0\r\n", WAIT);
    assert_eq!(status(&reply), "SIP/2.0 483 Too Many Hops");
    let reply = send("maxfwd", "OPTIONS", "Max-Forwards: 5\r\n", WAIT);
    assert_eq!(status(&reply), "SIP/2.0 200 hops left");
    let reply = ask("lookup", "INVITE");
    assert_eq!(status(&reply), "SIP/2.0 404 Not Found");

    let reply = send("fields", "OPTIONS", "X-Multi: a\r\nX-Multi: b\r\n", WAIT);
    assert_eq!(status(&reply), "SIP/2.0 200 true a|b true true 2 false");

    let reply = ask("vars", "OPTIONS");
    assert_eq!(
        status(&reply),
        "SIP/2.0 200 true 1 true false 2 3 0 false 5070"
    );

    // A bug in the script: the exception is logged and the request
    // answered 500; the next request is served as usual.
    let reply = ask("throw", "OPTIONS");
    assert_eq!(status(&reply), "SIP/2.0 500 Server Internal Error");
    wisp.wait_for_log("route threw: TypeError: boom", 1, WAIT)
        .expect("the exception is logged with the tenant");
    let reply = ask("params", "OPTIONS");
    assert_eq!(status(&reply), "SIP/2.0 200 greeting hello true unset");

    // A host refusal the script does not catch: logged and answered 500.
    let reply = ask("escape", "OPTIONS");
    assert_eq!(status(&reply), "SIP/2.0 500 Server Internal Error");
    wisp.wait_for_log("route failed: invalid argument", 1, WAIT)
        .expect("the escaped WispError is logged");

    // exit() without a decision drops the request: no answer.
    let reply = send("drop", "OPTIONS", "", Duration::from_millis(700));
    assert_eq!(status(&reply), "(no reply)");

    let reply = ask("nobody", "INVITE");
    assert_eq!(status(&reply), "SIP/2.0 404 Nobody");
    wisp.wait_for_log("no route for nobody", 1, WAIT)
        .expect("log.info reaches wisp's log");
}
