//! Building replies to requests (RFC 3261 §8.2.6).

use super::header_name::HeaderName;
use super::message::Message;

/// A reply to `req`: copies every Via line (same order), From, To (with
/// `;tag=to_tag` added when given and To has none), Call-ID and CSeq, and
/// sets Content-Length 0. Works on requests that failed `validate`: what is
/// missing is simply not copied, what is malformed is copied as is.
pub fn response_to(req: &Message, code: u16, reason: &str, to_tag: Option<&str>) -> Message {
    let standard = reason_phrase(code);
    let mut resp = if reason == standard {
        Message::new_response_fixed(code, standard)
    } else {
        Message::new_response(code, reason)
    };
    // Values come from a message, so they are single trimmed lines and are
    // shared, not checked and copied again.
    resp.copy_lines(req, &HeaderName::Via, true);
    resp.copy_lines(req, &HeaderName::From, false);
    if let Some(v) = req.header(&HeaderName::To) {
        let has_tag = match req.to() {
            Ok(to) => to.tag().is_some(),
            Err(_) => v.to_ascii_lowercase().contains(";tag="),
        };
        let tag = to_tag.filter(|t| !has_tag && super::syntax::is_token(t));
        match tag {
            Some(t) => {
                let mut value = String::with_capacity(v.len() + 5 + t.len());
                value.push_str(v);
                value.push_str(";tag=");
                value.push_str(t);
                // The request's To (one line, trimmed) and a token.
                resp.append_written(HeaderName::To, value);
            }
            None => resp.copy_lines(req, &HeaderName::To, false),
        }
    }
    resp.copy_lines(req, &HeaderName::CallId, false);
    resp.copy_lines(req, &HeaderName::CSeq, false);
    resp.append_fixed(HeaderName::ContentLength, "0");
    resp
}

/// The standard reason phrase of a status code (RFC 3261 §21 and the
/// codes registered since: IANA's SIP Response Codes registry); "Unknown"
/// for a code without one.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        199 => "Early Dialog Terminated",
        200 => "OK",
        202 => "Accepted",
        204 => "No Notification",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Moved Temporarily",
        305 => "Use Proxy",
        380 => "Alternative Service",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        410 => "Gone",
        412 => "Conditional Request Failed",
        413 => "Request Entity Too Large",
        414 => "Request-URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        417 => "Unknown Resource-Priority",
        420 => "Bad Extension",
        421 => "Extension Required",
        422 => "Session Interval Too Small",
        423 => "Interval Too Brief",
        424 => "Bad Location Information",
        425 => "Bad Alert Message",
        428 => "Use Identity Header",
        429 => "Provide Referrer Identity",
        430 => "Flow Failed",
        433 => "Anonymity Disallowed",
        436 => "Bad Identity Info",
        437 => "Unsupported Credential",
        438 => "Invalid Identity Header",
        439 => "First Hop Lacks Outbound Support",
        440 => "Max-Breadth Exceeded",
        469 => "Bad Info Package",
        470 => "Consent Needed",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        485 => "Ambiguous",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        489 => "Bad Event",
        491 => "Request Pending",
        493 => "Undecipherable",
        494 => "Security Agreement Required",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        555 => "Push Notification Service Not Supported",
        580 => "Precondition Failure",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        607 => "Unwanted",
        608 => "Rejected",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse::parse;
    use super::*;
    use bytes::Bytes;

    #[test]
    fn builds_reply() {
        let req = parse(Bytes::from_static(
            b"INVITE sip:a@b SIP/2.0\r\nv: SIP/2.0/UDP h1;branch=z9hG4bK1, SIP/2.0/UDP h2\r\n\
              Via: SIP/2.0/TCP h3\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\ni: x@y\r\n\
              CSeq: 1 INVITE\r\nContact: <sip:x@y>\r\nl: 3\r\n\r\nabc",
        ))
        .unwrap();
        let r = response_to(&req, 486, "Busy Here", Some("t1"));
        let text = String::from_utf8(r.to_bytes().to_vec()).unwrap();
        assert_eq!(
            text,
            "SIP/2.0 486 Busy Here\r\nVia: SIP/2.0/UDP h1;branch=z9hG4bK1, SIP/2.0/UDP h2\r\n\
             Via: SIP/2.0/TCP h3\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=t1\r\n\
             Call-ID: x@y\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        );
        let r2 = parse(r.to_bytes()).unwrap();
        assert_eq!(r2.to().unwrap().tag(), Some("t1"));
        // A To that already has a tag keeps it.
        let r3 = response_to(&r2, 200, "OK", Some("t2"));
        assert_eq!(r3.to().unwrap().tag(), Some("t1"));
        // A request missing everything still gets a reply.
        let bad = parse(Bytes::from_static(b"FOO sip:a@b SIP/2.0\r\n\r\n")).unwrap();
        let r = response_to(&bad, 400, "Bad\r\nRequest", None);
        assert_eq!(r.reason(), Some("Bad  Request"));
        assert_eq!(r.headers().len(), 1);
        // A reason of one's own is kept as given, the standard one shared.
        let r = response_to(&req, 486, "Gone Fishing", None);
        assert!(r.to_bytes().starts_with(b"SIP/2.0 486 Gone Fishing\r\n"));
        assert_eq!(
            response_to(&req, 486, "Busy Here", None).reason(),
            Some("Busy Here")
        );
        assert_eq!(response_to(&req, 200, "", None).reason(), Some(""));
    }

    #[test]
    fn standard_reason_phrases() {
        assert_eq!(reason_phrase(200), "OK");
        assert_eq!(reason_phrase(404), "Not Found");
        assert_eq!(reason_phrase(483), "Too Many Hops");
        assert_eq!(reason_phrase(699), "Unknown");
    }
}
