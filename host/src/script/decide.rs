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
        let decided = match action {
            wit::FailureAction::Upstream => return,
            wit::FailureAction::Reply(reply) => self.reply_action(reply),
            wit::FailureAction::Relay(relay) => self.relay_action(req_rep, relay),
        };
        self.carry_out("on-failure", decided);
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
