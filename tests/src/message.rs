//! SIP messages as text, for tests that talk raw SIP: a request to send, a
//! response made from a request received, headers read back.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// A request without a body, `\r\n` line ends. Written out by `Display`:
///
/// ```
/// # use wisp_tests::Request;
/// let options = Request::new("OPTIONS", "sip:a@127.0.0.1:5060")
///     .to("sip:b@example.com")
///     .headers("Max-Forwards: 70\r\n")
///     .to_string();
/// assert!(options.contains("To: <sip:b@example.com>\r\n"));
/// ```
#[derive(Debug, Clone)]
pub struct Request {
    pub(crate) method: String,
    pub(crate) uri: String,
    /// The port of the Via's sent-by (on 127.0.0.1; `rport` is asked for).
    pub(crate) via_port: u16,
    pub(crate) branch: String,
    pub(crate) from: String,
    pub(crate) from_tag: String,
    pub(crate) to: String,
    pub(crate) call_id: String,
    pub(crate) cseq: u32,
    pub(crate) headers: String,
}

impl Request {
    /// `method` to `uri`, which is its To too, from sip:tester@127.0.0.1,
    /// CSeq 1, with a branch, a From tag and a Call-ID of its own.
    pub fn new(method: &str, uri: &str) -> Request {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        Request {
            method: method.to_owned(),
            uri: uri.to_owned(),
            via_port: 9,
            branch: format!("z9hG4bKtest{id}{nanos}"),
            from: "sip:tester@127.0.0.1".to_owned(),
            from_tag: format!("t{id}"),
            to: uri.to_owned(),
            call_id: format!("{nanos}-{id}@test"),
            cseq: 1,
            headers: String::new(),
        }
    }

    /// The URI of the From header.
    pub fn from(mut self, uri: &str) -> Request {
        self.from = uri.to_owned();
        self
    }

    /// The URI of the To header, when it is not the Request-URI.
    pub fn to(mut self, uri: &str) -> Request {
        self.to = uri.to_owned();
        self
    }

    /// More header lines, each ending in `\r\n`, after CSeq.
    pub fn headers(mut self, lines: &str) -> Request {
        self.headers.push_str(lines);
        self
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Request {
            method,
            uri,
            via_port,
            branch,
            from,
            from_tag,
            to,
            call_id,
            cseq,
            headers,
        } = self;
        write!(
            f,
            "{method} {uri} SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:{via_port};branch={branch};rport\r\n\
             From: <{from}>;tag={from_tag}\r\n\
             To: <{to}>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} {method}\r\n\
             {headers}\
             Content-Length: 0\r\n\r\n"
        )
    }
}

/// A minimal request, `\r\n` line ends, for tests that talk raw SIP:
/// [`Request::new`] with `extra_headers`.
pub fn request(method: &str, uri: &str, extra_headers: &str) -> String {
    Request::new(method, uri).headers(extra_headers).to_string()
}

/// The response `status` (e.g. "486 Busy Here") a callee sends to
/// `request`: its Via, From, Call-ID and CSeq, its To with `to_tag`, then
/// the `extra` header lines (each ending in `\r\n`), no body.
pub fn response_to(request: &str, status: &str, to_tag: &str, extra: &str) -> String {
    let mut response = format!("SIP/2.0 {status}\r\n");
    for line in request.lines() {
        let name = line.split(':').next().unwrap_or_default();
        if ["Via", "From", "Call-ID", "CSeq"].contains(&name) {
            response.push_str(&format!("{line}\r\n"));
        } else if name == "To" {
            response.push_str(&format!("{line};tag={to_tag}\r\n"));
        }
    }
    response.push_str(extra);
    response.push_str("Content-Length: 0\r\n\r\n");
    response
}

/// The value of the first header `name` (case-insensitive, long form) of a
/// message in text form.
pub fn header_of<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    headers_of(message, name).first().copied()
}

/// Every value of the header `name` (case-insensitive, long form) in a
/// message in text form, one a line, in order.
pub fn headers_of<'a>(message: &'a str, name: &str) -> Vec<&'a str> {
    message
        .lines()
        .skip(1)
        .filter_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{header_of, headers_of, request, response_to};

    #[test]
    fn a_response_answers_its_request() {
        let invite = request("INVITE", "sip:jack@127.0.0.1", "Max-Forwards: 70\r\n");
        let busy = response_to(&invite, "486 Busy Here", "jack", "Retry-After: 5\r\n");
        assert!(busy.starts_with("SIP/2.0 486 Busy Here\r\n"), "{busy}");
        for name in ["Via", "From", "Call-ID", "CSeq"] {
            assert_eq!(header_of(&busy, name), header_of(&invite, name), "{name}");
        }
        assert_eq!(
            header_of(&busy, "To"),
            Some("<sip:jack@127.0.0.1>;tag=jack")
        );
        assert_eq!(header_of(&busy, "Max-Forwards"), None);
        assert!(busy.ends_with("Retry-After: 5\r\nContent-Length: 0\r\n\r\n"));
        assert_eq!(headers_of(&busy, "via").len(), 1);
    }
}
