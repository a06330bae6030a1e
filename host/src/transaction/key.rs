//! Matching keys: which transaction a message belongs to (RFC 3261
//! §17.1.3 for responses, §17.2.3 for requests, §9.2 for CANCEL).
//!
//! - Client side: the branch of the top Via plus the CSeq method. Our own
//!   branches always carry the magic cookie, so there is no fallback.
//! - Server side, RFC 3261 branch (magic cookie "z9hG4bK" followed by at
//!   least one character): branch + sent-by of the top Via + method, where
//!   an ACK looks for the INVITE transaction.
//! - Server side, any other branch (RFC 2543 peers, RFC 4475 badbranch whose
//!   branch is the bare cookie): Request-URI, From tag, Call-ID, CSeq number
//!   and top Via form a hashed [`LegacyKey`]; the To tag and CSeq method are
//!   compared on the candidates (an ACK's To tag against the tag of the
//!   response the transaction sent).
//!
//! Branches are compared case-insensitively (RFC 3261 §7.3.1: parameter
//! values are, unless said otherwise); hosts too. The Request-URI and the
//! top Via of the legacy key are compared as text after parsing (Via) or as
//! written (URI), stricter than §19.1.4: a mismatch only makes a
//! retransmission from an RFC 2543 peer look new.

use crate::sip::{Message, Method, Via};

use super::TxError;

/// RFC 3261 §8.1.1.7.
pub const MAGIC_COOKIE: &str = "z9hG4bK";

/// Whether a branch is unique per RFC 3261: the cookie and something more.
pub fn is_rfc3261_branch(branch: &str) -> bool {
    branch.len() > MAGIC_COOKIE.len() && branch.starts_with(MAGIC_COOKIE)
}

/// Client transactions: top Via branch + CSeq method (§17.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct ClientKey {
    branch: String,
    method: Method,
}

impl ClientKey {
    /// The key of a request we send: it must carry an RFC 3261 branch.
    pub(super) fn of_request(msg: &Message) -> Result<ClientKey, TxError> {
        let method = msg.method().ok_or(TxError::NotARequest)?;
        let via = msg.top_via().map_err(|_| TxError::BadHeader("Via"))?;
        let branch = via.branch().ok_or(TxError::NoRfc3261Branch)?;
        if !is_rfc3261_branch(branch) {
            return Err(TxError::NoRfc3261Branch);
        }
        let cseq = msg.cseq().map_err(|_| TxError::BadHeader("CSeq"))?;
        if cseq.method != *method {
            return Err(TxError::BadHeader("CSeq"));
        }
        Ok(ClientKey {
            branch: branch.to_ascii_lowercase(),
            method: method.clone(),
        })
    }

    /// The key a response looks for; `None` when it has no usable Via or
    /// CSeq.
    pub(super) fn of_response(msg: &Message) -> Option<ClientKey> {
        let via = msg.top_via().ok()?;
        let branch = via.branch()?.to_ascii_lowercase();
        let method = msg.cseq().ok()?.method.clone();
        Some(ClientKey { branch, method })
    }
}

/// Server transactions created by requests with an RFC 3261 branch.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct ServerKey {
    branch: String,
    sent_by: String,
    method: Method,
}

impl ServerKey {
    /// The same key with another method (CANCEL looking for its INVITE).
    pub(super) fn with_method(&self, method: Method) -> ServerKey {
        ServerKey {
            method,
            ..self.clone()
        }
    }
}

/// Server transactions created by requests without an RFC 3261 branch:
/// the fields of §17.2.3 that an INVITE, its ACK and its CANCEL share.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct LegacyKey {
    ruri: String,
    call_id: String,
    from_tag: Option<String>,
    seq: u32,
    top_via: String,
}

/// What a request is matched by.
#[derive(Debug, Clone)]
pub(super) enum RequestKey {
    Rfc3261(ServerKey),
    Rfc2543 {
        key: LegacyKey,
        /// To tag of the request.
        to_tag: Option<String>,
        /// CSeq method of the request.
        cseq_method: Method,
    },
}

fn sent_by(via: &Via) -> String {
    let mut sent_by = String::with_capacity(48);
    via.host.push_to(&mut sent_by);
    sent_by.make_ascii_lowercase();
    if let Some(p) = via.port {
        sent_by.push(':');
        crate::sip::write::push_decimal(&mut sent_by, u64::from(p));
    }
    sent_by
}

impl RequestKey {
    /// The key of a received request. Err when the headers matching needs
    /// are missing or malformed.
    pub(super) fn of(msg: &Message) -> Result<RequestKey, TxError> {
        let method = msg.method().ok_or(TxError::NotARequest)?;
        let via = msg.top_via().map_err(|_| TxError::BadHeader("Via"))?;
        if let Some(branch) = via.branch().filter(|b| is_rfc3261_branch(b)) {
            let method = match method {
                Method::Ack => Method::Invite,
                m => m.clone(),
            };
            return Ok(RequestKey::Rfc3261(ServerKey {
                branch: branch.to_ascii_lowercase(),
                sent_by: sent_by(via),
                method,
            }));
        }
        let cseq = msg.cseq().map_err(|_| TxError::BadHeader("CSeq"))?;
        let call_id = msg.call_id().ok_or(TxError::BadHeader("Call-ID"))?;
        let from = msg.from().map_err(|_| TxError::BadHeader("From"))?;
        let to = msg.to().map_err(|_| TxError::BadHeader("To"))?;
        Ok(RequestKey::Rfc2543 {
            key: LegacyKey {
                ruri: msg.uri().unwrap_or_default().to_string(),
                call_id: call_id.to_string(),
                from_tag: from.tag().map(str::to_string),
                seq: cseq.seq,
                top_via: via.to_string(),
            },
            to_tag: to.tag().map(str::to_string),
            cseq_method: cseq.method.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn msg(text: &str) -> Message {
        crate::sip::parse(Bytes::from(text.replace('\n', "\r\n"))).unwrap()
    }

    #[test]
    fn cookie() {
        assert!(is_rfc3261_branch("z9hG4bK1"));
        assert!(!is_rfc3261_branch("z9hG4bK"));
        assert!(!is_rfc3261_branch("Z9HG4BK1"));
        assert!(!is_rfc3261_branch("abc"));
    }

    #[test]
    fn server_keys() {
        let a = msg(
            "INVITE sip:b@h SIP/2.0\nVia: SIP/2.0/UDP Host.Example:5060;branch=z9hG4bKAb\n\
             From: <sip:a@h>;tag=1\nTo: <sip:b@h>\nCall-ID: c\nCSeq: 1 INVITE\n\n",
        );
        let ack = msg(
            "ACK sip:b@h SIP/2.0\nVia: SIP/2.0/UDP host.example:5060;branch=z9hG4bKaB\n\
             From: <sip:a@h>;tag=1\nTo: <sip:b@h>;tag=2\nCall-ID: c\nCSeq: 1 ACK\n\n",
        );
        let (RequestKey::Rfc3261(ka), RequestKey::Rfc3261(kb)) =
            (RequestKey::of(&a).unwrap(), RequestKey::of(&ack).unwrap())
        else {
            panic!("expected RFC 3261 keys");
        };
        assert_eq!(ka, kb);
        let other_port = msg(
            "ACK sip:b@h SIP/2.0\nVia: SIP/2.0/UDP host.example;branch=z9hG4bKab\n\
             From: <sip:a@h>;tag=1\nTo: <sip:b@h>;tag=2\nCall-ID: c\nCSeq: 1 ACK\n\n",
        );
        let RequestKey::Rfc3261(kc) = RequestKey::of(&other_port).unwrap() else {
            panic!()
        };
        assert_ne!(ka, kc);
        let no_via = msg("OPTIONS sip:b@h SIP/2.0\nCSeq: 1 OPTIONS\n\n");
        assert_eq!(
            RequestKey::of(&no_via).unwrap_err(),
            TxError::BadHeader("Via")
        );
    }
}
