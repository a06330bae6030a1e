//! Checks a proxy applies to what it forwards or sends: Max-Forwards
//! (RFC 3261 §16.3 step 3, §16.6 step 3) and the text a guest puts on the wire.

use crate::proxy::RequestCtx;
use crate::sip::{HeaderName, Message, Rejection};

/// Max-Forwards a request gets when it arrives without one (RFC 3261 §8.1.1.6).
pub const DEFAULT_MAX_FORWARDS: u32 = 70;

/// Kamailio's `mf_process_maxfwd_header(limit)`: a request without the
/// header gets `limit`; one with no hops left is refused with 483; any
/// other is decremented, once per request however often this is called.
/// A forward without this check applies it with [`DEFAULT_MAX_FORWARDS`].
pub fn max_forwards(req: &mut RequestCtx, limit: u32) -> Result<(), Rejection> {
    if req.max_forwards_done {
        return Ok(());
    }
    let remaining = match req.msg.max_forwards() {
        None => {
            req.msg.set_max_forwards(limit);
            req.max_forwards_done = true;
            return Ok(());
        }
        Some(Ok(n)) => n,
        Some(Err(_)) => return Err(reject(400, "Bad Max-Forwards")),
    };
    if remaining == 0 {
        return Err(reject(483, "Too Many Hops"));
    }
    req.msg.set_max_forwards(remaining - 1);
    req.max_forwards_done = true;
    Ok(())
}

/// Lowers a Max-Forwards above `cap` to it (RFC 3261 §16.6 step 3 lets a
/// proxy), so that however many hops a request asks for, a loop ends
/// after `cap`. Err for a value that is no number.
pub fn cap_max_forwards(msg: &mut Message, cap: u32) -> Result<(), String> {
    match msg.max_forwards() {
        Some(Ok(n)) if n > cap => {
            msg.set_max_forwards(cap);
            Ok(())
        }
        Some(Err(_)) => Err("Bad Max-Forwards".into()),
        _ => Ok(()),
    }
}

/// The Max-Breadth of a request (RFC 5393): its own, at most `cap`, or
/// `cap` when it has none (or one that is no number).
pub fn max_breadth(msg: &Message, cap: u32) -> u32 {
    msg.header(&HeaderName::MaxBreadth)
        .and_then(|v| v.trim().parse::<u32>().ok())
        .map_or(cap, |v| v.min(cap))
}

/// Shares `breadth` between `branches` parallel branches (RFC 5393
/// §5.3.3): each gets a part, the parts adding up to at most `breadth`;
/// past `breadth` branches, the rest get none (None: 440).
pub fn share_breadth(breadth: u32, branches: usize) -> Vec<Option<u32>> {
    let allowed = branches.min(breadth as usize);
    (0..branches)
        .map(|i| {
            (i < allowed).then(|| {
                let allowed = allowed as u32;
                breadth / allowed + u32::from((i as u32) < breadth % allowed)
            })
        })
        .collect()
}

/// Whether the request carries exactly this Max-Breadth (once), so that
/// writing it again can be spared.
pub fn has_max_breadth(msg: &Message, breadth: u32) -> bool {
    let mut values = msg.values(&HeaderName::MaxBreadth);
    matches!(
        (values.next().map(|v| v.trim().parse::<u32>()), values.next()),
        (Some(Ok(v)), None) if v == breadth
    )
}

/// Writes the Max-Breadth a forwarded request carries.
pub fn set_max_breadth(msg: &mut Message, breadth: u32) -> Result<(), String> {
    msg.remove_headers(&HeaderName::MaxBreadth);
    msg.append_header(HeaderName::MaxBreadth, &breadth.to_string())
        .map_err(|e| e.to_string())
}

fn reject(code: u16, reason: &str) -> Rejection {
    Rejection {
        code,
        reason: reason.into(),
        headers: Vec::new(),
    }
}

/// A reason phrase must stay on its line (RFC 3261 §25.1 Reason-Phrase).
pub fn reason_phrase(reason: &str) -> Result<(), String> {
    if crate::sip::has_control(reason) {
        return Err("reason phrase must not contain control characters".into());
    }
    Ok(())
}

/// A header a guest adds must be one header: a token name, and a value
/// without line breaks that would smuggle in more headers.
pub fn header_field(name: &str, value: &str) -> Result<(), String> {
    if !crate::sip::is_token(name) {
        return Err(format!("\"{name}\" is not a valid header name"));
    }
    if crate::sip::has_control(value) {
        return Err(format!("the value of {name} contains control characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::RequestCtx;
    use crate::sip;

    fn request(max_forwards: Option<&str>) -> RequestCtx {
        let mut text = String::from(
            "OPTIONS sip:a@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
             From: <sip:b@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n",
        );
        if let Some(mf) = max_forwards {
            text.push_str(&format!("Max-Forwards: {mf}\r\n"));
        }
        text.push_str("Content-Length: 0\r\n\r\n");
        let msg = sip::parse(bytes::Bytes::from(text)).expect("valid request");
        RequestCtx::new(
            msg,
            crate::proxy::Source {
                transport: crate::transport::Transport::Udp,
                remote: "192.0.2.1:5060".parse().expect("addr"),
                listener: 0,
                trusted: false,
            },
        )
    }

    #[test]
    fn decrements_once() {
        let mut req = request(Some("5"));
        assert!(max_forwards(&mut req, 10).is_ok());
        assert!(max_forwards(&mut req, 10).is_ok());
        assert_eq!(req.msg.max_forwards().and_then(Result::ok), Some(4));
    }

    #[test]
    fn limit_applies_only_when_absent() {
        let mut req = request(Some("70"));
        assert!(max_forwards(&mut req, 10).is_ok());
        assert_eq!(req.msg.max_forwards().and_then(Result::ok), Some(69));
    }

    #[test]
    fn adds_when_absent_and_refuses_zero() {
        let mut req = request(None);
        assert!(max_forwards(&mut req, 10).is_ok());
        assert_eq!(req.msg.max_forwards().and_then(Result::ok), Some(10));
        let mut req = request(Some("0"));
        assert_eq!(max_forwards(&mut req, 10).map_err(|r| r.code), Err(483));
    }

    #[test]
    fn header_fields_cannot_smuggle_lines() {
        assert!(header_field("X-Ok", "fine value").is_ok());
        assert!(header_field("X-Bad", "a\r\nVia: evil").is_err());
        assert!(header_field("Bad Name", "x").is_err());
        assert!(reason_phrase("Not Found").is_ok());
        assert!(reason_phrase("Bad\r\nX: y").is_err());
    }
}
