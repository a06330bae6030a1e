//! Messages as a case writes them: SIP text with forgiving line ends and
//! the boilerplate headers filled in, and addresses as `transport:ip:port`.

use std::net::{IpAddr, SocketAddr};

use wisp::sip::{self, Message};
use wisp::transport::Transport;

/// A source or listener address with its transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Address {
    pub transport: Transport,
    pub addr: SocketAddr,
}

/// Parses `udp:192.0.2.7:5060`, `tcp:[2001:db8::1]:5060` or
/// `192.0.2.7:5060` (UDP).
pub fn address(text: &str) -> Result<Address, String> {
    let text = text.trim();
    let (transport, rest) = match text.split_once(':') {
        Some((t, rest)) if t.chars().all(|c| c.is_ascii_alphabetic()) => {
            let transport = match t.to_ascii_lowercase().as_str() {
                "udp" => Transport::Udp,
                "tcp" => Transport::Tcp,
                "tls" => Transport::Tls,
                "ws" => Transport::Ws,
                "wss" => Transport::Wss,
                "quic" => Transport::Quic,
                _ => {
                    return Err(format!(
                        "\"{text}\": unknown transport \"{t}\" (udp, tcp, tls, ws, wss, quic)"
                    ))
                }
            };
            (transport, rest)
        }
        _ => (Transport::Udp, text),
    };
    let addr = rest.parse::<SocketAddr>().map_err(|_| {
        format!("\"{text}\" is not transport:ip:port (like udp:192.0.2.7:5060 or tcp:[2001:db8::1]:5060)")
    })?;
    Ok(Address { transport, addr })
}

/// `ip:port` with IPv6 in brackets.
pub fn host_port(addr: SocketAddr) -> String {
    match addr.ip() {
        IpAddr::V4(ip) => format!("{ip}:{}", addr.port()),
        IpAddr::V6(ip) => format!("[{ip}]:{}", addr.port()),
    }
}

/// What filling in a request needs to know.
pub struct Fill<'a> {
    pub source: Address,
    /// Makes Call-ID, branch and tags unique per case.
    pub tag: &'a str,
    /// The CSeq number when the request has none (increasing through a
    /// file, so that REGISTERs of one AOR are in order).
    pub cseq: u32,
}

/// Splits text into header lines and body: line ends may be LF or CRLF;
/// leading blank lines and trailing blank lines of a bodiless message go.
fn split(text: &str) -> (Vec<String>, String) {
    let text = text.trim_start_matches(['\r', '\n']);
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let mut head = Vec::new();
    for line in lines.by_ref() {
        if line.trim().is_empty() {
            break;
        }
        head.push(line.to_owned());
    }
    let rest: Vec<&str> = lines.collect();
    let mut body = rest.join("\r\n");
    // A body written in TOML ends with the line end before the closing
    // quotes; a blank line or two after the headers is no body.
    if body.trim().is_empty() {
        body.clear();
    } else if !body.ends_with("\r\n") {
        body.push_str("\r\n");
    }
    (head, body)
}

fn has(head: &[String], names: &[&str]) -> bool {
    head.iter().skip(1).any(|line| named(line, names))
}

/// Builds the request a case gives as text: CRLF line ends, missing Via,
/// From, To, Call-ID and CSeq filled in when `fill` is given (from the
/// source and the Request-URI), Content-Length set to the body's length.
pub fn request(text: &str, fill: Option<&Fill>) -> Result<Message, String> {
    let (mut head, body) = split(text);
    let Some(first) = head.first().cloned() else {
        return Err("the message is empty".into());
    };
    let mut parts = first.split_whitespace();
    let (Some(method), Some(uri)) = (parts.next(), parts.next()) else {
        return Err(format!(
            "\"{first}\" is not a request line (METHOD URI SIP/2.0)"
        ));
    };
    if method.starts_with("SIP/") {
        return Err(format!(
            "\"{first}\" is a response; a request is expected here"
        ));
    }
    if let Some(fill) = fill {
        let mut add = Vec::new();
        if !has(&head, &["Via", "v"]) {
            add.push(format!(
                "Via: SIP/2.0/{} {};branch=z9hG4bK-{};rport",
                fill.source.transport.via_name(),
                host_port(fill.source.addr),
                fill.tag
            ));
        }
        if !has(&head, &["From", "f"]) {
            let host = match fill.source.addr.ip() {
                IpAddr::V4(ip) => ip.to_string(),
                IpAddr::V6(ip) => format!("[{ip}]"),
            };
            add.push(format!("From: <sip:tester@{host}>;tag=f-{}", fill.tag));
        }
        if !has(&head, &["To", "t"]) {
            add.push(format!("To: <{uri}>"));
        }
        if !has(&head, &["Call-ID", "i"]) {
            add.push(format!("Call-ID: {}@wisp.test", fill.tag));
        }
        if !has(&head, &["CSeq"]) {
            add.push(format!("CSeq: {} {method}", fill.cseq));
        }
        head.splice(1..1, add);
    }
    sip::parse(finish(head, body).into()).map_err(|e| format!("cannot parse the request: {e}"))
}

/// Builds a response given as text: line ends and Content-Length as for
/// a request; a response lacking Via, From, To, Call-ID or CSeq takes
/// them from the request it answers.
pub fn response(text: &str, req: &Message) -> Result<Message, String> {
    let (mut head, body) = split(text);
    let Some(first) = head.first() else {
        return Err("the response is empty".into());
    };
    if !first.starts_with("SIP/2.0 ") {
        return Err(format!(
            "\"{first}\" is not a status line (SIP/2.0 CODE REASON)"
        ));
    }
    let mut add = Vec::new();
    for (long, short) in [
        ("Via", "v"),
        ("From", "f"),
        ("To", "t"),
        ("Call-ID", "i"),
        ("CSeq", ""),
    ] {
        if has(&head, &[long, short]) {
            continue;
        }
        for header in req.headers() {
            if header.raw_name().eq_ignore_ascii_case(long)
                || (!short.is_empty() && header.raw_name().eq_ignore_ascii_case(short))
            {
                add.push(format!("{long}: {}", header.value()));
            }
        }
    }
    head.splice(1..1, add);
    sip::parse(finish(head, body).into()).map_err(|e| format!("cannot parse the response: {e}"))
}

/// Whether a header line is named one of `names`.
fn named(line: &str, names: &[&str]) -> bool {
    line.split_once(':')
        .is_some_and(|(name, _)| names.iter().any(|n| name.trim().eq_ignore_ascii_case(n)))
}

/// Joins head and body, with Content-Length the body's length.
fn finish(head: Vec<String>, body: String) -> String {
    let mut text = String::new();
    for (i, line) in head.iter().enumerate() {
        if i > 0 && named(line, &["Content-Length", "l"]) {
            continue;
        }
        text.push_str(line);
        text.push_str("\r\n");
    }
    text.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    text.push_str(&body);
    text
}

/// A message read from a capture, as it came.
pub fn captured(bytes: &[u8]) -> Result<Message, String> {
    sip::parse(bytes.to_vec().into()).map_err(|e| format!("cannot parse the captured message: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wisp::sip::HeaderName;

    #[test]
    fn addresses_read_with_or_without_transport() {
        let a = address("tcp:[2001:db8::1]:5070").expect("v6");
        assert_eq!(a.transport, Transport::Tcp);
        assert_eq!(a.addr, "[2001:db8::1]:5070".parse().expect("addr"));
        assert_eq!(
            address("192.0.2.7:5060").expect("v4").transport,
            Transport::Udp
        );
        assert!(address("sctp:192.0.2.7:5060").unwrap_err().contains("sctp"));
        assert!(address("192.0.2.7").is_err());
    }

    #[test]
    fn lf_text_is_filled_in_and_measured() {
        let fill = Fill {
            source: address("udp:198.51.100.7:5062").expect("addr"),
            tag: "c1",
            cseq: 3,
        };
        let msg = request(
            "INVITE sip:bob@example.com SIP/2.0\nMax-Forwards: 70\nContent-Length: 999\n\nv=0\no=- 1 1 IN IP4 198.51.100.7\n",
            Some(&fill),
        )
        .expect("parses");
        assert_eq!(
            msg.header(&HeaderName::Via),
            Some("SIP/2.0/UDP 198.51.100.7:5062;branch=z9hG4bK-c1;rport")
        );
        assert_eq!(msg.header(&HeaderName::CSeq), Some("3 INVITE"));
        assert_eq!(msg.header(&HeaderName::To), Some("<sip:bob@example.com>"));
        assert_eq!(
            msg.body().len(),
            "v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\n".len()
        );
        let err = request("SIP/2.0 200 OK\n", None).expect_err("a response");
        assert!(err.contains("is a response"), "{err}");
    }
}
