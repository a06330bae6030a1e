//! What a hook returns, read into the proxy core's [`Action`]s.
//!
//! A decision the host cannot carry out (a destination that does not
//! parse, a status code outside 100–699, a header the host owns, one past
//! a per-hook cap) is the tenant's mistake: it is logged as the tenant's
//! error and the request is answered 500, as a trap would be, without
//! counting against the version's health (the instance is sound).

use std::time::Duration;

use super::call::HostState;
use super::fields::check_header;
use super::host_api::{invalid, past_cap};
use super::wisp::proxy::log::Level;
use super::wisp::proxy::sip as wit;
use crate::proxy::{checks, Action, Destination, RequestCtx};
use crate::sip;

/// Final-response timers when neither the decision nor the tenant params
/// say (Kamailio's `fr_inv_timer` and `fr_timer` defaults).
const DEFAULT_FR_INVITE_MS: u32 = 120_000;
const DEFAULT_FR_MS: u32 = 30_000;

impl HostState {
    /// Reads the route hook's `action` for the request at `req_rep`.
    pub(super) fn decide_route(&mut self, req_rep: u32, action: wit::Action) {
        if let Some(answer) = self.answer.take() {
            if !matches!(action, wit::Action::Drop) {
                self.answered_twice("route");
            }
            if !self.is_ack(req_rep) {
                self.actions.push(answer);
            }
            return;
        }
        let decided = match action {
            wit::Action::Reply(reply) => {
                if self.is_ack(req_rep) {
                    // An ACK is never answered: the reply is dropped.
                    return;
                }
                self.reply_action(reply)
            }
            wit::Action::Relay(relay) => self.relay_action(req_rep, relay),
            wit::Action::Forward(destination) => self.forward_action(destination),
            wit::Action::Drop => return,
        };
        self.carry_out("route", decided);
    }

    /// Reads the failure hook's `failure-action`: upstream is no action.
    pub(super) fn decide_failure(&mut self, req_rep: u32, action: wit::FailureAction) {
        if let Some(answer) = self.answer.take() {
            if !matches!(action, wit::FailureAction::Upstream) {
                self.answered_twice("on-failure");
            }
            self.actions.push(answer);
            return;
        }
        let decided = match action {
            wit::FailureAction::Upstream => return,
            wit::FailureAction::Reply(reply) => self.reply_action(reply),
            wit::FailureAction::Relay(relay) => self.relay_action(req_rep, relay),
        };
        self.carry_out("on-failure", decided);
    }

    /// A hook decided after a service answered its request: the answer
    /// stands (it may have saved bindings, as its reply says), and the
    /// decision is the tenant's mistake.
    fn answered_twice(&mut self, hook: &str) {
        self.log(
            Level::Warn,
            &format!(
                "{hook} decided after a service answered the request \
                 (save-and-reply, authorize-or-challenge): the answer stands; return drop"
            ),
        );
    }

    /// Queues a decision, or the 500 of a decision that cannot be.
    fn carry_out(&mut self, hook: &str, decided: Result<Action, wit::Error>) {
        match decided {
            Ok(action) => self.actions.push(action),
            Err(err) => {
                let why = match err {
                    wit::Error::Invalid(why)
                    | wit::Error::NotAllowed(why)
                    | wit::Error::Unavailable(why) => why,
                    wit::Error::Refused(reply) => format!("refused with {}", reply.code),
                };
                self.log(
                    Level::Error,
                    &format!("{hook} returned a decision the host cannot carry out: {why}; answering 500"),
                );
                self.actions.push(Action::Reply {
                    code: 500,
                    reason: sip::reason_phrase(500).to_owned(),
                    headers: Vec::new(),
                });
            }
        }
    }

    fn request_at(&mut self, rep: u32) -> Option<&mut RequestCtx> {
        self.table
            .get_mut(&wasmtime::component::Resource::<RequestCtx>::new_borrow(
                rep,
            ))
            .ok()
    }

    fn is_ack(&mut self, rep: u32) -> bool {
        self.request_at(rep)
            .is_some_and(|req| req.msg.method() == Some(&sip::Method::Ack))
    }

    fn reply_action(&mut self, reply: wit::Reply) -> Result<Action, wit::Error> {
        if !(100..=699).contains(&reply.code) {
            return Err(invalid(format!(
                "{} is not a SIP status code (100-699)",
                reply.code
            )));
        }
        if let Some(reason) = &reply.reason {
            checks::reason_phrase(reason).map_err(invalid)?;
        }
        let mut headers = Vec::with_capacity(reply.headers.len());
        for h in &reply.headers {
            headers.push((check_header(&h.name, &h.value)?, h.value.clone()));
        }
        if self.issued.contains(&reply) {
            // A service's reply: the host's text, one reply of the hook.
            let cap = self.guest.limits.replies_per_hook;
            if self.effects.replies >= cap {
                return Err(past_cap("replies", cap, "replies_per_hook"));
            }
            self.effects.replies += 1;
        } else {
            self.spend_reply(
                reply.reason.as_deref().unwrap_or_default(),
                reply
                    .headers
                    .iter()
                    .map(|h| (h.name.as_str(), h.value.as_str())),
            )?;
        }
        let reason = reply
            .reason
            .unwrap_or_else(|| sip::reason_phrase(reply.code).to_owned());
        Ok(Action::Reply {
            code: reply.code,
            reason,
            headers,
        })
    }

    fn relay_action(&mut self, req_rep: u32, relay: wit::Relay) -> Result<Action, wit::Error> {
        check_destination(relay.destination.as_deref())?;
        self.spend_branch(relay.destination.as_ref().map_or(0, String::len))?;
        let invite = relay
            .invite_timeout_ms
            .or_else(|| self.param_u32("FR_INV_TIMER_MS"))
            .unwrap_or(DEFAULT_FR_INVITE_MS);
        let other = relay
            .final_timeout_ms
            .or_else(|| self.param_u32("FR_TIMER_MS"))
            .unwrap_or(DEFAULT_FR_MS);
        // A timer of 0 would end every branch at once.
        let ms = |v: u32| Duration::from_millis(u64::from(v.max(1)));
        if let Some(req) = self.request_at(req_rep) {
            req.fr_timers = Some((ms(invite), ms(other)));
        }
        Ok(Action::Relay {
            destination: relay.destination,
        })
    }

    fn forward_action(&mut self, destination: Option<String>) -> Result<Action, wit::Error> {
        check_destination(destination.as_deref())?;
        let cap = self.guest.limits.forwards_per_hook;
        if self.effects.forwards >= cap {
            return Err(past_cap("forwards", cap, "forwards_per_hook"));
        }
        self.spend_text(0, destination.as_ref().map_or(0, String::len))?;
        self.effects.forwards += 1;
        Ok(Action::Forward { destination })
    }
}

fn check_destination(destination: Option<&str>) -> Result<(), wit::Error> {
    if let Some(dest) = destination {
        Destination::parse(dest)
            .map_err(|err| invalid(format!("destination \"{dest}\": {err}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use wasmtime::component::Resource;

    use super::*;
    use crate::proxy::Source;
    use crate::script::wisp::proxy::sip::HostFields;
    use crate::script::wisp::proxy::sip::HostRequest;
    use crate::script::wisp::proxy::{auth, registrar};
    use crate::script::{Guest, Limits, LogCapture};
    use crate::sip::HeaderName;

    fn state(params: &[(&str, &str)], limits: Limits) -> (HostState, LogCapture) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let guest = Guest {
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            limits,
            log_capture: Some(log.clone()),
            ..Guest::for_tests("t")
        };
        (HostState::new(Arc::new(guest)), log)
    }

    fn request(state: &mut HostState, method: &str) -> u32 {
        let text = format!(
            "{method} sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
             From: <sip:alice@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\nCall-ID: c\r\n\
             CSeq: 1 {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        );
        lend(state, text)
    }

    /// Lends the request `text`, from 192.0.2.1 over UDP, to the hook call.
    fn lend(state: &mut HostState, text: impl Into<bytes::Bytes>) -> u32 {
        let msg = sip::parse(text.into()).expect("request parses");
        let ctx = RequestCtx::new(
            msg,
            Source {
                transport: crate::transport::Transport::Udp,
                remote: "192.0.2.1:5060".parse().expect("addr"),
                listener: 0,
                trusted: false,
            },
        );
        state.table.lend_request(ctx)
    }

    fn reply(code: u16, reason: Option<&str>, headers: &[(&str, &str)]) -> wit::Action {
        wit::Action::Reply(wit::Reply {
            code,
            reason: reason.map(str::to_owned),
            headers: headers
                .iter()
                .map(|(name, value)| wit::Header {
                    name: name.to_string(),
                    value: value.to_string(),
                })
                .collect(),
        })
    }

    fn relay(destination: Option<&str>, invite: Option<u32>) -> wit::Action {
        wit::Action::Relay(wit::Relay {
            destination: destination.map(str::to_owned),
            invite_timeout_ms: invite,
            final_timeout_ms: None,
        })
    }

    /// The 500 of a decision the host cannot carry out, logged as the
    /// tenant's error.
    fn assert_refused(state: &mut HostState, log: &Mutex<Vec<(String, String)>>, what: &str) {
        let actions = std::mem::take(&mut state.actions);
        assert!(
            matches!(actions.as_slice(), [Action::Reply { code: 500, .. }]),
            "{what}: {actions:?}"
        );
        let logged = log.lock().expect("log").pop().expect("logged");
        assert_eq!(logged.0, "error", "{what}");
        assert!(
            logged.1.starts_with("route returned a decision"),
            "{logged:?}"
        );
    }

    #[test]
    fn a_reply_gets_the_standard_reason_and_a_bad_one_a_500() {
        let (mut state, log) = state(&[], Limits::default());
        let req = request(&mut state, "INVITE");
        state.decide_route(req, reply(486, None, &[("Retry-After", "30")]));
        state.decide_route(req, reply(404, Some("Nobody Here"), &[]));
        assert_eq!(
            std::mem::take(&mut state.actions),
            [
                Action::Reply {
                    code: 486,
                    reason: "Busy Here".into(),
                    headers: vec![(HeaderName::parse("Retry-After"), "30".into())],
                },
                Action::Reply {
                    code: 404,
                    reason: "Nobody Here".into(),
                    headers: vec![],
                },
            ]
        );
        state.decide_route(req, reply(700, None, &[]));
        assert_refused(&mut state, &log, "code 700");
        state.decide_route(req, reply(99, None, &[]));
        assert_refused(&mut state, &log, "code 99");
        state.decide_route(req, reply(200, None, &[("Call-ID", "other")]));
        assert_refused(&mut state, &log, "a host-owned header");
        state.decide_route(req, reply(200, Some("O\r\nK"), &[]));
        assert_refused(&mut state, &log, "a reason on two lines");
    }

    #[test]
    fn an_ack_is_never_answered_and_drop_does_nothing() {
        let (mut state, log) = state(&[], Limits::default());
        let ack = request(&mut state, "ACK");
        state.decide_route(ack, reply(200, None, &[]));
        state.decide_route(ack, wit::Action::Drop);
        assert!(state.actions.is_empty());
        assert!(log.lock().expect("log").is_empty());
    }

    #[test]
    fn relay_timers_come_from_the_decision_then_the_params_then_the_defaults() {
        let (mut state, log) = state(&[("FR_TIMER_MS", "4000")], Limits::default());
        let req = request(&mut state, "INVITE");
        state.decide_route(req, relay(Some("sip:192.0.2.9:5080"), Some(9000)));
        assert_eq!(
            state.actions,
            [Action::Relay {
                destination: Some("sip:192.0.2.9:5080".into())
            }]
        );
        let timers = |state: &mut HostState| {
            state
                .table
                .get(&Resource::<RequestCtx>::new_borrow(req))
                .expect("request")
                .fr_timers
        };
        assert_eq!(
            timers(&mut state),
            Some((Duration::from_millis(9000), Duration::from_millis(4000)))
        );
        let (mut plain, _) = super::tests::state(&[], Limits::default());
        let req2 = request(&mut plain, "INVITE");
        plain.decide_route(req2, relay(None, None));
        let fr = plain
            .table
            .get(&Resource::<RequestCtx>::new_borrow(req2))
            .expect("request")
            .fr_timers;
        assert_eq!(
            fr,
            Some((Duration::from_secs(120), Duration::from_secs(30)))
        );
        state.actions.clear();
        state.decide_route(req, relay(Some("sip:"), None));
        assert_refused(&mut state, &log, "a destination that does not parse");
        state.decide_route(req, wit::Action::Forward(Some("not a host:xx".into())));
        assert_refused(&mut state, &log, "a forward nowhere");
    }

    #[test]
    fn past_a_cap_a_decision_is_answered_500_but_a_services_reply_is_the_hosts() {
        let limits = Limits {
            headers_per_hook: 1,
            forwards_per_hook: 0,
            ..Limits::default()
        };
        let (mut state, log) = state(&[], limits);
        let req = request(&mut state, "INVITE");
        state.decide_route(req, reply(400, None, &[("X-A", "1"), ("X-B", "2")]));
        assert_refused(&mut state, &log, "past headers_per_hook");
        state.decide_route(req, wit::Action::Forward(None));
        assert_refused(&mut state, &log, "past forwards_per_hook");
        // A registrar's 200 lists many contacts: the host's text.
        let contacts = [
            ("Contact", "<sip:a@192.0.2.1>"),
            ("Contact", "<sip:b@192.0.2.2>"),
        ];
        let wit::Action::Reply(ok) = reply(200, Some("OK"), &contacts) else {
            unreachable!()
        };
        state.issue(ok.clone());
        state.effects = Default::default();
        state.decide_route(req, wit::Action::Reply(ok));
        assert!(
            matches!(state.actions.as_slice(), [Action::Reply { code: 200, headers, .. }] if headers.len() == 2),
            "{:?}",
            state.actions
        );
    }

    /// A REGISTER of bob, as a UA sends it first: no credentials.
    fn register(state: &mut HostState) -> u32 {
        let text = "REGISTER sip:example.com SIP/2.0\r\n\
                    Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
                    From: <sip:bob@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\n\
                    Call-ID: r\r\nCSeq: 1 REGISTER\r\nMax-Forwards: 70\r\n\
                    Contact: <sip:bob@192.0.2.1:5060>\r\nExpires: 600\r\n\
                    Content-Length: 0\r\n\r\n";
        lend(state, text)
    }

    fn borrow(rep: u32) -> Resource<RequestCtx> {
        Resource::new_borrow(rep)
    }

    fn save_options() -> registrar::SaveOptions {
        registrar::SaveOptions {
            flags: registrar::SaveFlags::empty(),
            default_expires: None,
            min_expires: None,
            max_expires: None,
            max_contacts: None,
        }
    }

    /// The one action is the reply `code`, with a header `name` holding
    /// `needle`.
    fn assert_answered(state: &HostState, code: u16, name: &str, needle: &str) {
        let [Action::Reply {
            code: answered,
            headers,
            ..
        }] = state.actions.as_slice()
        else {
            panic!("{:?}", state.actions);
        };
        assert_eq!(*answered, code);
        assert!(
            headers
                .iter()
                .any(|(n, value)| n.as_str() == name && value.contains(needle)),
            "{headers:?}"
        );
    }

    #[test]
    fn a_services_answer_is_the_route_decision_and_is_given_once() {
        let (mut state, log) = state(&[], Limits::default());
        state.answerable = true;
        let req = register(&mut state);
        let challenged =
            auth::Host::authorize_or_challenge(&mut state, borrow(req), "example.com".into())
                .expect("no trap");
        assert_eq!(challenged, Ok(None), "no credentials: challenged");
        // Answered once: a second answer is refused, and nothing is saved.
        let again = registrar::Host::save_and_reply(&mut state, borrow(req), save_options())
            .expect("no trap");
        assert!(
            matches!(&again, Err(wit::Error::NotAllowed(why)) if why.contains("answered already")),
            "{again:?}"
        );
        assert_eq!(
            registrar::Host::registered(&mut state, "bob".into()).expect("no trap"),
            Ok(false)
        );
        state.decide_route(req, wit::Action::Drop);
        assert_answered(&state, 401, "WWW-Authenticate", "realm=\"example.com\"");
        assert!(log.lock().expect("log").is_empty());

        // The next hook call: saved and answered 200; a decision made after
        // it is logged, and the answer stands.
        state.actions.clear();
        state.answer = None;
        state.effects = Default::default();
        let saved = registrar::Host::save_and_reply(&mut state, borrow(req), save_options())
            .expect("no trap");
        assert_eq!(saved, Ok(200));
        state.decide_route(req, relay(None, None));
        assert_answered(&state, 200, "Contact", "sip:bob@192.0.2.1:5060");
        let logged = log.lock().expect("log").pop().expect("logged");
        assert_eq!(logged.0, "warn");
        assert!(logged.1.contains("the answer stands"), "{logged:?}");
        assert_eq!(
            registrar::Host::registered(&mut state, "bob".into()).expect("no trap"),
            Ok(true)
        );
    }

    #[test]
    fn only_route_and_on_failure_may_have_a_service_answer() {
        let (mut state, _) = state(&[], Limits::default());
        state.answerable = false;
        let req = register(&mut state);
        let refused = registrar::Host::save_and_reply(&mut state, borrow(req), save_options())
            .expect("no trap");
        assert!(
            matches!(&refused, Err(wit::Error::NotAllowed(why)) if why.contains("route and on-failure")),
            "{refused:?}"
        );
        let refused =
            auth::Host::authorize_or_challenge(&mut state, borrow(req), "example.com".into())
                .expect("no trap");
        assert!(
            matches!(refused, Err(wit::Error::NotAllowed(_))),
            "{refused:?}"
        );
        assert!(state.answer.is_none());
        assert_eq!(
            registrar::Host::registered(&mut state, "bob".into()).expect("no trap"),
            Ok(false),
            "nothing saved"
        );
    }

    #[test]
    fn fields_refuse_the_same_headers_on_requests_and_trap_after_their_call() {
        let (mut state, _) = state(&[], Limits::default());
        let rep = request(&mut state, "INVITE");
        state.generation = 7;
        let fields = |state: &mut HostState| {
            state
                .fields(Resource::new_borrow(rep))
                .expect("fields of the request")
        };
        let f = fields(&mut state);
        let again = Resource::<crate::script::fields::Fields>::new_borrow(f.rep());
        assert_eq!(
            state.get(again, "f".into()).expect("get"),
            Some("<sip:alice@example.com>;tag=1".into())
        );
        let f = fields(&mut state);
        assert!(matches!(
            state
                .append(f, "Via".into(), "SIP/2.0/UDP evil".into())
                .expect("call"),
            Err(wit::Error::NotAllowed(_))
        ));
        let f = fields(&mut state);
        assert!(matches!(
            state.remove(f, "CSeq".into()).expect("call"),
            Err(wit::Error::NotAllowed(_))
        ));
        let f = fields(&mut state);
        assert_eq!(state.remove(f, "Max-Forwards".into()).expect("call"), Ok(1));
        let f = fields(&mut state);
        assert_eq!(
            state.set(f, "P-Hint".into(), "x".into()).expect("call"),
            Ok(())
        );
        let f = fields(&mut state);
        assert_eq!(
            state
                .set_body(f, Some("text/plain".into()), b"hi".to_vec())
                .expect("call"),
            Ok(())
        );
        let f = fields(&mut state);
        assert_eq!(
            state.get(f, "Content-Type".into()).expect("get"),
            Some("text/plain".into())
        );
        let stale = fields(&mut state);
        state.generation += 1;
        let err = state
            .has(stale, "To".into())
            .expect_err("a stale handle traps");
        assert!(err.to_string().contains("after the hook call"), "{err}");
    }
}
