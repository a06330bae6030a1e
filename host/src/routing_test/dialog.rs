//! `{record-route}` in a case's message: the Record-Route entry wisp puts
//! on a dialog, so that an in-dialog request can carry the Route a real
//! dialog would (and `loose-route` answers `verified`).
//!
//! The entry carries an integrity tag, a MAC over the Call-ID keyed with
//! this process's secret: no one outside the proxy core can make it, and
//! nor can the harness. So the harness has the core make it: an INVITE of
//! the dialog goes through a proxy core whose routing record-routes and
//! relays it, and the entry is read off the INVITE the core sends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use wisp::proxy::{
    Action, Admission, Core, HookFailed, Hooks, Locality, RequestCtx, Routed, Source, TxVars,
};
use wisp::sip::{self, HeaderName, Message};
use wisp::transaction::{Timers, Transactions};
use wisp::transport::Transport;

/// What a case writes where the entry goes.
pub const PLACEHOLDER: &str = "{record-route}";

/// A routing that record-routes and relays everything to one address.
struct RecordRoutes;

/// Where the minted INVITE is relayed: any literal address will do
/// (nothing is sent; the core's output is read).
const NEXT_HOP: &str = "192.0.2.254:5060";

impl Hooks for RecordRoutes {
    type Pinned = ();

    fn route(&mut self, mut req: RequestCtx, _vars: &mut TxVars) -> (RequestCtx, Routed<()>) {
        req.record_route = true;
        let actions = vec![Action::Relay {
            destination: Some(NEXT_HOP.to_owned()),
        }];
        (
            req,
            Routed::Actions {
                pinned: (),
                actions,
            },
        )
    }

    fn on_branch(
        &mut self,
        _: &(),
        req: RequestCtx,
        _: u32,
        _: &mut TxVars,
    ) -> (RequestCtx, Result<(), HookFailed>) {
        (req, Ok(()))
    }

    fn on_reply(
        &mut self,
        _: &(),
        req: RequestCtx,
        res: Message,
        _: SocketAddr,
        _: &mut TxVars,
    ) -> (RequestCtx, Message, Result<bool, HookFailed>) {
        (req, res, Ok(true))
    }

    fn on_failure(
        &mut self,
        _: &(),
        req: RequestCtx,
        best: Message,
        _: &mut TxVars,
    ) -> (RequestCtx, Message, Result<Vec<Action>, HookFailed>) {
        (req, best, Ok(Vec::new()))
    }

    fn replied(&mut self, _: &(), _: u16) {}

    fn account(&mut self, _: &(), _: &Message, _: u16, _: &str, _: Option<&Message>) {}
}

/// The Record-Route value wisp, listening on `locality`, adds to the
/// dialog `call_id` for a UDP caller at `caller`.
pub fn record_route(
    locality: &Arc<Locality>,
    call_id: &str,
    caller: SocketAddr,
) -> Result<String, String> {
    let text = format!(
        "INVITE sip:callee@{NEXT_HOP} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {caller};branch=z9hG4bK-rr-mint\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:caller@192.0.2.100>;tag=rr-mint\r\n\
         To: <sip:callee@{NEXT_HOP}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 INVITE\r\n\
         Content-Length: 0\r\n\r\n"
    );
    let msg = sip::parse(text.into()).map_err(|e| format!("{PLACEHOLDER}: {e}"))?;
    let mut core: Core<()> = Core::new(
        Transactions::new(Timers::default()),
        locality.clone(),
        0,
        Arc::new(Admission::default()),
    );
    let source = Source {
        transport: Transport::Udp,
        remote: caller,
        listener: 0,
        trusted: true,
    };
    core.handle(Instant::now(), msg, source, &mut RecordRoutes);
    while let Some(out) = core.poll_transmit() {
        let Ok(sent) = sip::parse(out.data) else {
            continue;
        };
        if !sent.is_request() {
            continue;
        }
        let rr = sent
            .values(&HeaderName::RecordRoute)
            .next()
            .map(str::to_owned);
        if let Some(rr) = rr {
            return Ok(rr);
        }
    }
    Err(format!(
        "{PLACEHOLDER}: the proxy core added no Record-Route (does the file listen on UDP?)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wisp::transport::Listener;

    #[test]
    fn the_entry_names_the_listener_and_is_verified_by_loose_route() {
        let locality = Arc::new(Locality::new(
            vec![Listener {
                transport: Transport::Udp,
                local: "192.0.2.1:5060".parse().expect("addr"),
                advertise: None,
            }],
            vec![],
        ));
        let caller = "192.0.2.100:5060".parse().expect("addr");
        let rr = record_route(&locality, "dialog-1@wisp.test", caller).expect("minted");
        assert!(rr.starts_with("<sip:192.0.2.1:5060;lr;ri="), "{rr}");
        let bye = |call_id: &str| {
            sip::parse(
                format!(
                    "BYE sip:callee@192.0.2.254:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.100:5060;branch=z9hG4bK-b\r\n\
                     Route: {rr}\r\nFrom: <sip:caller@192.0.2.100>;tag=a\r\nTo: <sip:callee@192.0.2.254>;tag=b\r\n\
                     Call-ID: {call_id}\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
                )
                .into(),
            )
            .expect("parses")
        };
        let mut same = bye("dialog-1@wisp.test");
        let mut other = bye("dialog-2@wisp.test");
        assert!(wisp::proxy::loose_route(&mut same, &locality).verified);
        let forged = wisp::proxy::loose_route(&mut other, &locality);
        assert!(
            forged.had_route && !forged.verified,
            "another dialog's entry"
        );
    }
}
