//! What a case expected against what the hook did: one line per field
//! that differs, naming the field and both values.

use std::collections::BTreeMap;

use super::format::{Expect, ForwardExpect, HeaderExpect, RelayExpect, TargetExpect, VarExpect};
use super::run::{Branch, Decision, Outcome};
use wisp::proxy::{Accounted, Armed};
use wisp::sip::{HeaderName, Message};

/// One field that differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub field: String,
    pub expected: String,
    pub got: String,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: expected {}, got {}",
            self.field, self.expected, self.got
        )
    }
}

fn quoted(s: &str) -> String {
    format!("{s:?}")
}

/// The decision in a few words, for a mismatch of kind.
pub fn describe(decision: &Decision) -> String {
    match decision {
        Decision::Reply {
            code, reason, why, ..
        } => match why {
            Some(why) => format!("reply {code} {} ({why})", quoted(reason)),
            None => format!("reply {code} {}", quoted(reason)),
        },
        Decision::Relay { branches, .. } => format!(
            "relay to [{}]",
            branches
                .iter()
                .map(|b| quoted(&b.uri))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Decision::Forward(Some(dest)) => format!("forward to {}", quoted(dest)),
        Decision::Forward(None) => "forward".into(),
        other => other.kind().into(),
    }
}

/// Every difference between `expect` and `got`; empty when the case passes.
pub fn compare(expect: &Expect, got: &Outcome) -> Vec<Mismatch> {
    let mut out = Vec::new();
    let mut miss = |field: &str, expected: String, got: String| {
        out.push(Mismatch {
            field: field.to_owned(),
            expected,
            got,
        })
    };
    decision(expect, &got.decision, &mut miss);
    if let Some(uri) = &expect.uri {
        let now = got.request.uri().unwrap_or_default();
        if now != uri {
            miss("uri", quoted(uri), quoted(now));
        }
    }
    for (name, want) in &expect.headers {
        let lines = header_values(&got.request, name);
        // Wisp's own Record-Route is added as the request leaves.
        let lines =
            if name.eq_ignore_ascii_case("Record-Route") && got.record_route && lines.is_none() {
                Some("(wisp's, added when sent)".to_owned())
            } else {
                lines
            };
        header(&format!("header {name}"), want, lines, &mut miss);
    }
    for (name, want) in &expect.response_headers {
        let lines = got.response.as_ref().and_then(|r| header_values(r, name));
        header(&format!("response header {name}"), want, lines, &mut miss);
    }
    vars(&expect.vars, &got.vars, &mut miss);
    if let Some(want) = &expect.hooks {
        let got = match got.armed {
            Some(armed) => armed_names(armed),
            None => vec!["every hook (none armed)"],
        };
        names("hooks", want, got, &mut miss);
    }
    if let Some(want) = &expect.accounted {
        names("accounted", want, accounted_names(got.accounted), &mut miss);
    }
    for want in &expect.log {
        if !got.log.iter().any(|line| line.contains(want.as_str())) {
            let lines = if got.log.is_empty() {
                "no log line".to_owned()
            } else {
                got.log
                    .iter()
                    .map(|l| quoted(l))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            miss("log", format!("a line containing {}", quoted(want)), lines);
        }
    }
    out
}

fn decision(expect: &Expect, got: &Decision, miss: &mut impl FnMut(&str, String, String)) {
    let wanted = expect.decisions();
    let Some(kind) = wanted.first() else {
        // Only reply headers can be checked without naming the decision.
        if let Decision::Reply { headers, .. } = got {
            reply_headers(&expect.reply_headers, headers, miss);
        }
        return;
    };
    // `drop = false`, `keep = false`...: the case says what the hook must
    // not do.
    let negated = matches!(
        (*kind, expect),
        (
            "drop",
            Expect {
                drop: Some(false),
                ..
            }
        ) | (
            "keep",
            Expect {
                keep: Some(false),
                ..
            }
        ) | (
            "upstream",
            Expect {
                upstream: Some(false),
                ..
            }
        )
    ) || matches!(&expect.relay, Some(RelayExpect::Any(false)))
        || matches!(&expect.forward, Some(ForwardExpect::Any(false)));
    if negated {
        if got.kind() == *kind {
            miss("decision", format!("anything but {kind}"), describe(got));
        }
        return;
    }
    if got.kind() != *kind {
        let expected = match (kind, expect.reply) {
            (&"reply", Some(code)) => format!("reply {code}"),
            _ => (*kind).to_owned(),
        };
        miss("decision", expected, describe(got));
        return;
    }
    match got {
        Decision::Reply {
            code,
            reason,
            headers,
            why,
        } => {
            if let Some(want) = expect.reply {
                if want != *code {
                    let got = match why {
                        Some(why) => format!("{code} {} ({why})", quoted(reason)),
                        None => format!("{code} {}", quoted(reason)),
                    };
                    miss("reply", want.to_string(), got);
                }
            }
            if let Some(want) = &expect.reason {
                if want != reason {
                    miss("reason", quoted(want), quoted(reason));
                }
            }
            reply_headers(&expect.reply_headers, headers, miss);
        }
        Decision::Relay {
            branches,
            invite_timeout,
            final_timeout,
        } => {
            if let Some(RelayExpect::Targets(want)) = &expect.relay {
                targets(want, branches, miss);
            }
            if let (Some(want), Some(first)) = (&expect.next_hop, branches.first()) {
                if *want != first.next_hop {
                    miss("next-hop", quoted(want), quoted(&first.next_hop));
                }
            }
            if let Some(want) = expect.invite_timeout {
                if want != *invite_timeout {
                    miss(
                        "invite-timeout",
                        want.to_string(),
                        invite_timeout.to_string(),
                    );
                }
            }
            if let Some(want) = expect.final_timeout {
                if want != *final_timeout {
                    miss("final-timeout", want.to_string(), final_timeout.to_string());
                }
            }
        }
        Decision::Forward(dest) => {
            if let Some(ForwardExpect::To(want)) = &expect.forward {
                if Some(want) != dest.as_ref() {
                    miss(
                        "forward",
                        quoted(want),
                        dest.as_deref()
                            .map_or("no destination (the request's next hop)".into(), quoted),
                    );
                }
            }
        }
        _ => {}
    }
}

fn targets(want: &[TargetExpect], got: &[Branch], miss: &mut impl FnMut(&str, String, String)) {
    let uris = |list: Vec<&str>| {
        format!(
            "[{}]",
            list.iter()
                .map(|u| quoted(u))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let want_uris: Vec<&str> = want.iter().map(TargetExpect::uri).collect();
    let got_uris: Vec<&str> = got.iter().map(|b| b.uri.as_str()).collect();
    if want_uris != got_uris {
        miss("relay", uris(want_uris), uris(got_uris));
        return;
    }
    for (i, (w, g)) in want.iter().zip(got).enumerate() {
        let TargetExpect::Full(table) = w else {
            continue;
        };
        if let Some(hop) = &table.next_hop {
            if *hop != g.next_hop {
                miss(
                    &format!("relay branch {} next-hop", i + 1),
                    quoted(hop),
                    quoted(&g.next_hop),
                );
            }
        }
        if let Some(route) = &table.route {
            if *route != g.route {
                miss(
                    &format!("relay branch {} route", i + 1),
                    format!("{route:?}"),
                    format!("{:?}", g.route),
                );
            }
        }
    }
}

/// Every value of a header (all its lines, comma-separated values kept
/// as written), joined by ", "; none when absent.
fn header_values(msg: &Message, name: &str) -> Option<String> {
    let name = HeaderName::parse(name);
    let lines: Vec<&str> = msg.header_lines(&name).collect();
    (!lines.is_empty()).then(|| lines.join(", "))
}

fn reply_headers(
    want: &BTreeMap<String, HeaderExpect>,
    got: &[(String, String)],
    miss: &mut impl FnMut(&str, String, String),
) {
    for (name, expect) in want {
        let wanted = HeaderName::parse(name);
        let values: Vec<&str> = got
            .iter()
            .filter(|(n, _)| HeaderName::parse(n) == wanted)
            .map(|(_, v)| v.as_str())
            .collect();
        let value = (!values.is_empty()).then(|| values.join(", "));
        header(&format!("reply header {name}"), expect, value, miss);
    }
}

fn header(
    field: &str,
    want: &HeaderExpect,
    got: Option<String>,
    miss: &mut impl FnMut(&str, String, String),
) {
    let shown = |v: &Option<String>| v.as_deref().map_or("absent".to_owned(), quoted);
    match want {
        HeaderExpect::Present(true) if got.is_none() => {
            miss(field, "present".into(), "absent".into())
        }
        HeaderExpect::Present(false) if got.is_some() => miss(field, "absent".into(), shown(&got)),
        HeaderExpect::Present(_) => {}
        HeaderExpect::Value(value) => {
            if got.as_deref() != Some(value.as_str()) {
                miss(field, quoted(value), shown(&got));
            }
        }
        HeaderExpect::Number(n) => {
            if got.as_deref().map(str::trim) != Some(n.to_string().as_str()) {
                miss(field, quoted(&n.to_string()), shown(&got));
            }
        }
        HeaderExpect::Contains { contains } => {
            if !got
                .as_deref()
                .is_some_and(|v| v.contains(contains.as_str()))
            {
                miss(
                    field,
                    format!("a value containing {}", quoted(contains)),
                    shown(&got),
                );
            }
        }
    }
}

/// The armed hooks by their WIT names.
fn armed_names(armed: Armed) -> Vec<&'static str> {
    [
        (armed.on_reply, "on-reply"),
        (armed.on_failure, "on-failure"),
        (armed.on_branch, "on-branch"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect()
}

/// The accounted events by their WIT names.
fn accounted_names(accounted: Accounted) -> Vec<&'static str> {
    [
        (accounted.answered, "answered"),
        (accounted.failed, "failed"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect()
}

/// A set of names, compared in any order.
fn names(
    field: &str,
    want: &[String],
    got: Vec<&str>,
    miss: &mut impl FnMut(&str, String, String),
) {
    let mut wanted: Vec<&str> = want.iter().map(String::as_str).collect();
    wanted.sort_unstable();
    wanted.dedup();
    let mut sorted = got.clone();
    sorted.sort_unstable();
    if wanted != sorted {
        let list = |names: &[&str]| format!("[{}]", names.join(", "));
        miss(field, list(&wanted), list(&got));
    }
}

fn vars(
    want: &BTreeMap<String, VarExpect>,
    got: &BTreeMap<String, String>,
    miss: &mut impl FnMut(&str, String, String),
) {
    for (name, expect) in want {
        let value = got.get(name);
        let shown = value.map_or("unset".to_owned(), |v| quoted(v));
        let field = format!("var {name}");
        match expect {
            VarExpect::Set(true) if value.is_none() => miss(&field, "set".into(), shown),
            VarExpect::Set(false) if value.is_some() => miss(&field, "unset".into(), shown),
            VarExpect::Set(_) => {}
            VarExpect::Value(v) => {
                if value != Some(v) {
                    miss(&field, quoted(v), shown);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(decision: Decision) -> Outcome {
        Outcome {
            decision,
            request: wisp::sip::parse(
                "INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:bob@example.com>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nMax-Forwards: 69\r\nContent-Length: 0\r\n\r\n"
                    .into(),
            )
            .expect("parses"),
            record_route: true,
            response: None,
            vars: BTreeMap::from([("failover".into(), "sip:x".into())]),
            armed: Some(Armed {
                on_failure: true,
                ..Armed::default()
            }),
            accounted: Accounted {
                answered: true,
                failed: false,
            },
            log: vec!["info: relayed".into()],
        }
    }

    fn expect(text: &str) -> Expect {
        toml::from_str(text).expect("expect parses")
    }

    #[test]
    fn armed_hooks_and_accounting_are_compared_as_sets() {
        let got = outcome(Decision::Nothing);
        let same = expect("hooks = [\"on-failure\"]\naccounted = [\"answered\"]\n");
        assert!(compare(&same, &got).is_empty());
        let other = expect("hooks = [\"on-reply\", \"on-failure\"]\naccounted = []\n");
        let lines: Vec<String> = compare(&other, &got)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].contains("hooks") && lines[0].contains("[on-failure, on-reply]"),
            "{lines:?}"
        );
        assert!(
            lines[1].contains("accounted") && lines[1].contains("[answered]"),
            "{lines:?}"
        );
        let never = Outcome {
            armed: None,
            ..outcome(Decision::Nothing)
        };
        let lines: Vec<String> = compare(&same, &never)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(lines[0].contains("every hook (none armed)"), "{lines:?}");
    }

    #[test]
    fn differences_name_the_field_and_both_values() {
        let got = outcome(Decision::Reply {
            code: 404,
            reason: "Not Found".into(),
            headers: vec![],
            why: None,
        });
        let diff = compare(&expect("reply = 200\nreason = \"OK\"\n"), &got);
        let lines: Vec<String> = diff.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            vec![
                "reply: expected 200, got 404 \"Not Found\"".to_owned(),
                "reason: expected \"OK\", got \"Not Found\"".to_owned()
            ]
        );
        let diff = compare(&expect("relay = true\n"), &got);
        assert_eq!(diff[0].field, "decision");
        assert_eq!(diff[0].got, "reply 404 \"Not Found\"");
    }

    #[test]
    fn headers_vars_and_log_are_checked_as_written() {
        let got = outcome(Decision::Relay {
            branches: vec![Branch {
                uri: "sip:bob@192.0.2.20".into(),
                next_hop: "sip:bob@192.0.2.20".into(),
                route: vec![],
            }],
            invite_timeout: 120_000,
            final_timeout: 30_000,
        });
        let ok = expect(
            "relay = [\"sip:bob@192.0.2.20\"]\nheaders = { Max-Forwards = 69, Record-Route = true, Route = false }\nvars = { failover = \"sip:x\", other = false }\nlog = [\"relayed\"]\ninvite-timeout = 120000\n",
        );
        assert_eq!(compare(&ok, &got), vec![]);
        let bad = expect(
            "relay = [\"sip:carol@192.0.2.30\"]\nheaders = { Max-Forwards = \"70\", Route = true }\nvars = { failover = true, gone = true }\nlog = [\"nothing like it\"]\n",
        );
        let fields: Vec<String> = compare(&bad, &got).into_iter().map(|m| m.field).collect();
        assert_eq!(
            fields,
            vec![
                "relay",
                "header Max-Forwards",
                "header Route",
                "var gone",
                "log"
            ]
        );
    }
}
