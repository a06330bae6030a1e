//! Stateless forwarding (Kamailio's `forward()`, RFC 3261 §16.6) and
//! relaying responses by Via (§16.7 step 9, §18.2.2), names included.
//!
//! Nothing is remembered between messages: retransmissions are forwarded
//! again, and the branch of a forwarded request is derived from the
//! request itself so that the same request always gets the same branch.

use std::time::Instant;

use crate::sip::{HeaderName, Message, Via};
use crate::transaction::TxId;
use crate::transport::Target;

use super::branch;
use super::checks::{self, DEFAULT_MAX_FORWARDS};
use super::core::Core;
use super::effects::Parked;
use super::replies::{is_unroutable, response_destination};
use super::request::RequestCtx;
use super::routing::next_hop;

impl<P> Core<P> {
    /// Forwards a copy of the request to its next hop (Kamailio's
    /// `forward()`). True when the request was answered instead (it could
    /// not go). The request itself is left as the guest saw it.
    pub(super) fn forward(
        &mut self,
        now: Instant,
        tx: Option<TxId>,
        req: &mut RequestCtx,
        destination: Option<String>,
    ) -> bool {
        let destination = destination.or_else(|| req.dst_uri.clone());
        if let Err(rejection) = checks::max_forwards(req, DEFAULT_MAX_FORWARDS) {
            self.fx.reply(req, rejection.code, &rejection.reason, &[]);
            return false;
        }
        let branch = branch_for(req);
        let mut msg = req.msg.clone();
        let hop = next_hop(&mut msg, destination.as_deref());
        let sent = hop.and_then(|hop| match hop.literal_target() {
            Some(target) => {
                let msg = self.fx.prepare(
                    msg,
                    req.record_route,
                    &req.source,
                    target,
                    hop.flow,
                    &branch,
                )?;
                self.fx.send(target, msg.to_bytes());
                Ok(())
            }
            None => {
                let parked = Parked::Forward {
                    req: Box::new(req.clone()),
                    msg,
                    branch,
                };
                self.fx
                    .lookup(hop, false, parked)
                    .map(|_| ())
                    .ok_or_else(|| "too many lookups waiting".to_owned())
            }
        });
        match sent {
            Ok(()) => false,
            Err(err) => {
                tracing::info!(remote = %req.source.remote, %err, "cannot forward");
                self.fx.answer(now, tx, req, 500, "Cannot Forward", &[]);
                true
            }
        }
    }

    /// A forward's next hop was looked up: it goes to the first target,
    /// or is answered with 503 (statelessly: its transaction was let go).
    pub(super) fn forward_resolved(
        &mut self,
        req: &RequestCtx,
        msg: Message,
        branch: &str,
        result: Result<Vec<Target>, String>,
    ) {
        let sent = result.and_then(|targets| {
            let target = targets
                .first()
                .copied()
                .ok_or_else(|| "no target".to_owned())?;
            let msg = self
                .fx
                .prepare(msg, req.record_route, &req.source, target, false, branch)?;
            self.fx.send(target, msg.to_bytes());
            Ok(())
        });
        if let Err(err) = sent {
            tracing::info!(remote = %req.source.remote, %err, "cannot forward");
            self.fx.reply(req, 503, "Service Unavailable", &[]);
        }
    }

    /// Relays a response up the Via chain: ours must be on top; it is
    /// removed and the response goes where the next Via says.
    ///
    /// Only a Via we can prove we added counts as ours: its branch's MAC
    /// binds it to the Via below it, where the response goes. A response
    /// made up by anyone else is dropped, whatever its Vias say.
    pub(super) fn relay_response(&mut self, mut msg: Message) {
        let (top, next) = {
            let mut values = msg.values(&HeaderName::Via).map(Via::parse);
            (values.next(), values.next().and_then(Result::ok))
        };
        let Some(Ok(top)) = top else {
            tracing::debug!("dropping a response without a Via");
            return;
        };
        let ours = Some(&top).is_some_and(|via| {
            self.fx
                .locality
                .is_myself_host(&via.host, via.port.unwrap_or(5060))
                && via
                    .branch()
                    .and_then(|b| branch::verify(b, next.as_ref()))
                    .is_some()
        });
        if !ours {
            tracing::debug!("dropping a response whose top Via we cannot prove ours");
            return;
        }
        // A relayed request's responses go through its transactions; with
        // none left, only a 2xx to an INVITE still goes up by Via (its
        // retransmissions, §16.7 step 4 and RFC 6026). Anything else
        // naming such a branch is made up (another method's CSeq, a
        // response long after the transaction).
        let relayed = top.branch().is_some_and(branch::is_relayed);
        let invite_2xx = msg.status().is_some_and(|s| (200..300).contains(&s))
            && msg
                .cseq()
                .is_ok_and(|c| c.method == crate::sip::Method::Invite);
        if relayed && !invite_2xx {
            tracing::debug!("dropping a stray response to a relayed request");
            return;
        }
        msg.remove_first_value(&HeaderName::Via);
        let Some(next) = next.as_ref() else {
            tracing::debug!("dropping a response with no Via left (it was for us)");
            return;
        };
        let destination = match response_destination(next) {
            Ok(destination) => destination,
            Err(err) => {
                tracing::debug!(%err, "cannot relay a response");
                return;
            }
        };
        match destination.literal_target() {
            Some(target) => self.send_response(msg, target),
            None => {
                if self
                    .fx
                    .lookup(destination, true, Parked::Response { msg })
                    .is_none()
                {
                    tracing::info!("too many lookups waiting; response dropped");
                }
            }
        }
    }

    /// The Via of a response to relay was looked up.
    pub(super) fn response_resolved(&mut self, msg: Message, result: Result<Vec<Target>, String>) {
        match result.map(|targets| targets.first().copied()) {
            Ok(Some(target)) => self.send_response(msg, target),
            Ok(None) => tracing::info!("response dropped: its Via has no address"),
            Err(err) => tracing::info!(%err, "response dropped: its Via is not resolved"),
        }
    }

    fn send_response(&mut self, msg: Message, target: Target) {
        if is_unroutable(target.addr.ip()) {
            tracing::info!(addr = %target.addr, "not relaying a response to a broadcast or unspecified address");
            return;
        }
        self.fx.send(target, msg.to_bytes());
    }
}

/// The branch of a stateless forward: the same for the same request (its
/// retransmissions, and a CANCEL or non-2xx ACK of an INVITE) and
/// different for others (RFC 3261 §16.11).
pub(super) fn branch_for(req: &RequestCtx) -> String {
    branch::make(
        &branch::stateless_id(&req.msg),
        req.loop_hash,
        req.msg.top_via().ok(),
    )
}
