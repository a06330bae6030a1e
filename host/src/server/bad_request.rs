//! Answering requests too broken to parse: a 400 built from the raw
//! header lines a reply needs (RFC 3261 §8.2.6.2), so that the sender
//! learns what was wrong instead of retransmitting into silence.

use bytes::{BufMut, Bytes, BytesMut};

/// The headers a response copies from its request, long and compact names.
const COPIED: &[&str] = &["via", "v", "from", "f", "to", "t", "call-id", "i", "cseq"];

/// A 400 reply to `data`, or None when it cannot be answered: it is a
/// response or an ACK, or lacks the headers a reply must carry.
pub fn reply_400(data: &[u8], reason: &str) -> Option<Bytes> {
    let start = data.iter().position(|b| *b != b'\r' && *b != b'\n')?;
    let data = &data[start..];
    if data.starts_with(b"SIP/") || data.starts_with(b"ACK ") {
        return None;
    }
    let head_end = find(data, b"\r\n\r\n").unwrap_or(data.len());
    let mut lines = data[..head_end].split(|b| *b == b'\n').skip(1);
    let mut out = BytesMut::with_capacity(512);
    out.put_slice(b"SIP/2.0 400 ");
    out.put_slice(sanitize(reason).as_bytes());
    out.put_slice(b"\r\n");
    let mut found = [false; 4]; // via, from, to, call-id+cseq
    for line in lines.by_ref() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = String::from_utf8_lossy(&line[..colon])
            .trim()
            .to_ascii_lowercase();
        if !COPIED.contains(&name.as_str()) {
            continue;
        }
        match name.as_str() {
            "via" | "v" => found[0] = true,
            "from" | "f" => found[1] = true,
            "to" | "t" => found[2] = true,
            _ => found[3] = true,
        }
        out.put_slice(line);
        out.put_slice(b"\r\n");
    }
    if found.iter().any(|f| !f) {
        return None;
    }
    out.put_slice(b"Content-Length: 0\r\n\r\n");
    Some(out.freeze())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A reason phrase cannot carry line breaks or control characters.
fn sanitize(reason: &str) -> String {
    reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_the_headers_a_reply_needs() {
        let req = b"INVITE sip:a b@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
                    f: <sip:x@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\ni: abc\r\nCSeq: 1 INVITE\r\n\
                    Subject: not copied\r\n\r\n";
        let reply = reply_400(req, "Bad Request-URI").expect("a reply");
        let text = String::from_utf8_lossy(&reply);
        assert!(
            text.starts_with("SIP/2.0 400 Bad Request-URI\r\n"),
            "{text}"
        );
        assert!(text.contains("f: <sip:x@example.com>;tag=1\r\n"));
        assert!(text.contains("i: abc\r\n"));
        assert!(!text.contains("Subject"));
        assert!(text.ends_with("Content-Length: 0\r\n\r\n"));
    }

    #[test]
    fn never_answers_responses_acks_or_headless_junk() {
        assert!(reply_400(b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n", "x").is_none());
        assert!(reply_400(
            b"ACK sip:a SIP/2.0\r\nVia: x\r\nFrom: a\r\nTo: b\r\ni: c\r\nCSeq: 1 ACK\r\n\r\n",
            "x"
        )
        .is_none());
        assert!(reply_400(b"\x00\xff garbage", "x").is_none());
        assert!(reply_400(b"", "x").is_none());
    }
}
