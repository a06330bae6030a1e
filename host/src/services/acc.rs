//! Accounting records (Kamailio's acc module with its log backend): one
//! structured log event per record under the target `wisp::acc`.

use crate::sip::{HeaderName, Message, Uri};

/// What a record stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A call answered: 2xx to an INVITE.
    Start,
    /// A call ended: 2xx to a BYE.
    Stop,
    /// A failed transaction: a final answer above 299.
    Failed,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Start => "start",
            Event::Stop => "stop",
            Event::Failed => "failed",
        }
    }
}

/// The fields of one record, as the default config's `log_extra` names
/// them (src_user=$fU, src_domain=$fd, dst_ouser=$tU, dst_user=$rU,
/// dst_domain=$rd) plus the transaction's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub event: Event,
    pub method: String,
    pub code: u16,
    pub reason: String,
    pub call_id: String,
    pub from_tag: String,
    pub to_tag: String,
    pub src_user: String,
    pub src_domain: String,
    pub dst_ouser: String,
    pub dst_user: String,
    pub dst_domain: String,
}

fn user_host(uri: Option<Uri>) -> (String, String) {
    uri.map(|u| (u.user.unwrap_or_default(), u.host.to_string()))
        .unwrap_or_default()
}

/// Whether records are written at all (the `wisp::acc` target at info).
/// Making one parses From, To and the Request-URI, some 20,000 instructions
/// per record: a proxy logging at warn would pay that twice per call for
/// nothing.
pub fn wanted() -> bool {
    tracing::enabled!(target: "wisp::acc", tracing::Level::INFO)
}

impl Record {
    /// A record of `req` (the request as relayed) ending with `code`. The
    /// To tag comes from the answer when the request had none.
    pub fn new(
        event: Event,
        req: &Message,
        code: u16,
        reason: &str,
        to_tag: Option<&str>,
    ) -> Record {
        let from = req.from().ok();
        let to = req.to().ok();
        let (src_user, src_domain) = user_host(from.as_ref().map(|f| f.uri.clone()));
        let (dst_ouser, _) = user_host(to.as_ref().map(|t| t.uri.clone()));
        let (dst_user, dst_domain) = user_host(req.uri().and_then(|u| Uri::parse(u).ok()));
        Record {
            event,
            method: req
                .method()
                .map(|m| m.as_str().to_owned())
                .unwrap_or_default(),
            code,
            reason: reason.to_owned(),
            call_id: req
                .header(&HeaderName::CallId)
                .unwrap_or_default()
                .to_owned(),
            from_tag: from
                .as_ref()
                .and_then(|f| f.tag())
                .unwrap_or_default()
                .to_owned(),
            to_tag: to
                .as_ref()
                .and_then(|t| t.tag())
                .or(to_tag)
                .unwrap_or_default()
                .to_owned(),
            src_user,
            src_domain,
            dst_ouser,
            dst_user,
            dst_domain,
        }
    }

    /// Writes the record to the log, target `wisp::acc`.
    pub fn log(&self, tenant: &str) {
        tracing::info!(
            target: "wisp::acc",
            tenant,
            event = self.event.as_str(),
            method = %self.method,
            code = self.code,
            reason = %self.reason,
            call_id = %self.call_id,
            from_tag = %self.from_tag,
            to_tag = %self.to_tag,
            src_user = %self.src_user,
            src_domain = %self.src_domain,
            dst_ouser = %self.dst_ouser,
            dst_user = %self.dst_user,
            dst_domain = %self.dst_domain,
            "acc"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_follow_log_extra() {
        let text = "INVITE sip:+4930123@gw.example.net SIP/2.0\r\n\
             Via: SIP/2.0/UDP 192.0.2.4;branch=z9hG4bKacc\r\n\
             From: <sip:alice@example.com>;tag=f1\r\n\
             To: <sip:bob@example.com>\r\n\
             Call-ID: acc-1\r\n\
             CSeq: 1 INVITE\r\n\
             Content-Length: 0\r\n\r\n";
        let req = crate::sip::parse(bytes::Bytes::from(text)).expect("valid");
        let r = Record::new(Event::Start, &req, 200, "OK", Some("t9"));
        assert_eq!(r.method, "INVITE");
        assert_eq!(
            (r.src_user.as_str(), r.src_domain.as_str()),
            ("alice", "example.com")
        );
        assert_eq!(r.dst_ouser, "bob");
        assert_eq!(
            (r.dst_user.as_str(), r.dst_domain.as_str()),
            ("+4930123", "gw.example.net")
        );
        assert_eq!((r.from_tag.as_str(), r.to_tag.as_str()), ("f1", "t9"));
        assert_eq!(r.call_id, "acc-1");
    }
}
