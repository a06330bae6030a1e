//! Parsing one message (RFC 3261 §7) and framing messages on a stream
//! (RFC 3261 §18.3).

use bytes::Bytes;

use super::error::ParseError;
use super::header_name::HeaderName;
use super::message::{Header, Message, StartLine, Text};
use super::method::Method;
use super::syntax::{bytes_equal, is_token, is_token_char, is_ws, trim_ws, HIGHS};
use super::uri::Uri;

/// Largest header section `frame` waits for.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Largest body `frame` accepts on a stream (a guard against a peer that
/// announces gigabytes); larger Content-Length values are an error.
pub const MAX_STREAM_BODY: usize = 16 * 1024 * 1024;

/// Number of leading CRLFs (or bare LFs) — keep-alives and the empty lines
/// RFC 3261 §7.5 tells us to ignore before a start line.
fn leading_newlines(data: &[u8]) -> usize {
    let mut i = 0;
    loop {
        if data[i..].starts_with(b"\r\n") {
            i += 2;
        } else if data[i..].starts_with(b"\n") {
            i += 1;
        } else {
            return i;
        }
    }
}

/// Finds the end of the header section in `data` (which starts at the start
/// line): returns (end of the last header line, start of the body). Lines
/// end with CRLF or a bare LF (RFC 5118's messages use LF). `None` when no
/// empty line was found.
fn find_head_end(data: &[u8]) -> Option<(usize, usize)> {
    let mut pos = 0;
    while let Some(nl) = data[pos..].iter().position(|&c| c == b'\n') {
        let nl = pos + nl;
        let line = &data[pos..nl];
        if line.is_empty() || line == b"\r" {
            return Some((pos, nl + 1));
        }
        pos = nl + 1;
    }
    None
}

fn is_sip_version(s: &str) -> bool {
    s.eq_ignore_ascii_case("SIP/2.0")
}

/// Request-Line = Method SP Request-URI SP SIP-Version (single spaces,
/// RFC 4475 lwsstart/trws/lwsruri); Status-Line = SIP-Version SP
/// Status-Code SP Reason-Phrase.
fn parse_start_line(line: &str, data: &Bytes) -> Result<StartLine, ParseError> {
    if line
        .get(..4)
        .is_some_and(|v| v.eq_ignore_ascii_case("SIP/"))
    {
        let (version, rest) = line
            .split_once(' ')
            .ok_or_else(|| ParseError::new("Bad status line"))?;
        if !is_sip_version(version) {
            return Err(ParseError::new("Unsupported SIP version"));
        }
        let (code, reason) = match rest.split_once(' ') {
            Some((c, r)) => (c, r),
            None => (rest, ""),
        };
        if code.len() != 3 || !code.bytes().all(|c| c.is_ascii_digit()) {
            return Err(ParseError::new("Bad status code"));
        }
        let code: u16 = code
            .parse()
            .map_err(|_| ParseError::new("Bad status code"))?;
        if super::syntax::has_control(reason) {
            return Err(ParseError::new("Bad reason phrase"));
        }
        return Ok(StartLine::Response {
            code,
            reason: Text::slice(data, reason),
        });
    }
    let (method, rest) = line
        .split_once(' ')
        .ok_or_else(|| ParseError::new("Bad request line"))?;
    if !is_token(method) {
        return Err(ParseError::new("Bad method"));
    }
    let (uri, version) = rest
        .rsplit_once(' ')
        .ok_or_else(|| ParseError::new("Bad request line"))?;
    if !is_sip_version(version) {
        return Err(ParseError::new("Unsupported SIP version"));
    }
    if uri.is_empty() || uri.bytes().any(is_ws) {
        return Err(ParseError::new("Bad Request-URI: whitespace"));
    }
    Uri::parse_request_uri(uri)?;
    Ok(StartLine::Request {
        method: Method::parse(method),
        uri: Text::slice(data, uri),
    })
}

/// Where the line starting at `pos` ends: its LF, or the end of `data`.
#[cfg(test)]
fn line_end(data: &[u8], pos: usize) -> usize {
    scan_line(data, pos).end
}

/// What [`scan_line`] found on one line.
struct LineScan {
    /// The line's LF, or the end of the data.
    end: usize,
    /// Where the first CR of the line is, if any.
    first_cr: Option<usize>,
    /// Whether a byte of the line is not ASCII (UTF-8 must then be checked).
    non_ascii: bool,
}

/// Scans the line starting at `pos` once, eight bytes at a time: where it
/// ends, where its first CR is and whether it is all ASCII. (One pass where
/// a search for the LF, one for a CR and a UTF-8 check took three.)
fn scan_line(data: &[u8], pos: usize) -> LineScan {
    let mut first_cr = None;
    let mut non_ascii = false;
    let mut i = pos;
    while let Some(chunk) = data.get(i..i + 8) {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(chunk);
        let word = u64::from_le_bytes(bytes);
        let lf = bytes_equal(word, b'\n');
        let cr = bytes_equal(word, b'\r');
        let high = word & HIGHS;
        if lf | cr | high == 0 {
            i += 8;
            continue;
        }
        // The lowest hit of each mask is exact (false hits only come above
        // a true one), so the bytes before the first LF are told apart
        // without a byte loop.
        let (before, end) = if lf == 0 {
            (u64::MAX, None)
        } else {
            let at = lf.trailing_zeros() / 8;
            ((1u64 << (at * 8)).wrapping_sub(1), Some(i + at as usize))
        };
        if cr & before != 0 {
            first_cr.get_or_insert(i + ((cr & before).trailing_zeros() / 8) as usize);
        }
        if high & before != 0 {
            non_ascii = true;
        }
        if let Some(end) = end {
            return LineScan {
                end,
                first_cr,
                non_ascii,
            };
        }
        i += 8;
    }
    for (j, &c) in data.get(i..).unwrap_or_default().iter().enumerate() {
        match c {
            b'\n' => {
                return LineScan {
                    end: i + j,
                    first_cr,
                    non_ascii,
                }
            }
            b'\r' => {
                first_cr.get_or_insert(i + j);
            }
            c if c >= 0x80 => non_ascii = true,
            _ => {}
        }
    }
    LineScan {
        end: data.len(),
        first_cr,
        non_ascii,
    }
}

/// A header line being collected; continuation lines are joined to it.
struct Pending<'a> {
    name: HeaderName,
    raw_name: Text,
    value: &'a str,
    /// The unfolded value once a continuation line was seen.
    folded: Option<String>,
}

impl Pending<'_> {
    fn finish(self, data: &Bytes) -> Header {
        let value = match self.folded {
            Some(v) => Text::owned(trim_ws(&v)),
            None => Text::slice(data, self.value),
        };
        Header::new(self.name, self.raw_name, value)
    }
}

/// One header line (not a continuation): `name *(SP/HTAB) ":" SWS value`
/// (HCOLON, RFC 3261 §25.1), in one scan of the name.
fn header_line<'a>(line: &'a str, data: &Bytes) -> Result<Pending<'a>, ParseError> {
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() && is_token_char(b[i]) {
        i += 1;
    }
    let name_end = i;
    while i < b.len() && is_ws(b[i]) {
        i += 1;
    }
    if name_end == 0 || b.get(i) != Some(&b':') {
        return Err(if b.contains(&b':') {
            ParseError::new("Bad header name")
        } else {
            ParseError::new("Header line without colon")
        });
    }
    let raw = &line[..name_end];
    let name = HeaderName::parse(raw);
    // A name spelt as its canonical form (the usual case) needs no share
    // of the message.
    let raw_name = match name.known_str() {
        Some(known) if known == raw => Text::fixed(known),
        _ => Text::slice(data, raw),
    };
    Ok(Pending {
        name,
        raw_name,
        value: trim_ws(&line[i + 1..]),
        folded: None,
    })
}

/// Parses one complete message: a datagram, or a frame cut by [`frame`].
///
/// Leading CRLFs are skipped. Folded header lines (CRLF followed by SP or
/// HTAB, RFC 3261 §7.3.1) are joined with one space. Header names must be
/// tokens and the header section UTF-8. When a Content-Length is present
/// the body is exactly that long and any bytes after it are ignored
/// (RFC 4475 dblreq); when absent the rest of the data is the body. A
/// message whose headers run to the end of the data without an empty line
/// is accepted with an empty body. Headers other than Content-Length are
/// only indexed here; [`validate`](super::validate) checks them.
///
/// One pass over the header section, line by line; the message's texts are
/// slices of `data`, not copies.
pub fn parse(data: Bytes) -> Result<Message, ParseError> {
    let all: &[u8] = &data;
    let end = all.len();
    let mut pos = leading_newlines(all);
    if pos == end {
        return Err(ParseError::new("Empty message"));
    }
    let mut start_line = None;
    let mut headers = Vec::with_capacity(16);
    let mut pending: Option<Pending> = None;
    let mut body_start = end;
    while pos < end {
        let scan = scan_line(all, pos);
        let nl = scan.end;
        let raw_line = &all[pos..nl];
        let line = raw_line.strip_suffix(b"\r").unwrap_or(raw_line);
        if line.is_empty() && nl < end {
            // The empty line that ends the header section.
            body_start = nl + 1;
            break;
        }
        let line_start = pos;
        pos = nl + 1;
        // A CR anywhere but just before the LF.
        if scan.first_cr.is_some_and(|cr| cr < line_start + line.len()) {
            return Err(ParseError::new("Bare CR in header section"));
        }
        let line = if scan.non_ascii {
            std::str::from_utf8(line).map_err(|_| ParseError::new("Header section is not UTF-8"))?
        } else {
            // SAFETY: every byte of the line is ASCII (< 0x80), so valid UTF-8.
            unsafe { std::str::from_utf8_unchecked(line) }
        };
        if start_line.is_none() {
            start_line = Some(parse_start_line(line, &data)?);
            continue;
        }
        if line.starts_with([' ', '\t']) {
            // Continuation of the previous header line.
            let p = pending
                .as_mut()
                .ok_or_else(|| ParseError::new("Folded line after start line"))?;
            let folded = p.folded.get_or_insert_with(|| p.value.to_string());
            let more = trim_ws(line);
            if !more.is_empty() {
                folded.truncate(folded.trim_end_matches([' ', '\t']).len());
                folded.push(' ');
                folded.push_str(more);
            }
            continue;
        }
        if let Some(p) = pending.take() {
            headers.push(p.finish(&data));
        }
        pending = Some(header_line(line, &data)?);
    }
    if let Some(p) = pending.take() {
        headers.push(p.finish(&data));
    }
    let start_line = start_line.ok_or_else(|| ParseError::new("Empty message"))?;

    let body_data = data.slice(body_start..);
    let mut lengths = headers
        .iter()
        .filter(|h: &&Header| *h.name() == HeaderName::ContentLength);
    let body = match (lengths.next(), lengths.next()) {
        (None, _) => body_data,
        (Some(_), Some(_)) => return Err(ParseError::new("Multiple Content-Length headers")),
        (Some(h), None) => {
            let len = parse_length(h.value())?;
            if len > body_data.len() {
                return Err(ParseError::new("Content-Length exceeds body"));
            }
            body_data.slice(..len)
        }
    };
    Ok(Message::from_parts(start_line, headers, body))
}

fn parse_length(v: &str) -> Result<usize, ParseError> {
    let v = trim_ws(v);
    if v.is_empty() || !v.bytes().all(|c| c.is_ascii_digit()) {
        return Err(ParseError::new("Bad Content-Length"));
    }
    v.parse().map_err(|_| ParseError::new("Bad Content-Length"))
}

/// Stream framing (RFC 3261 §18.3): how many bytes at the start of `buf`
/// make up the first message, counting the CRLFs skipped before it.
/// `Ok(None)` when more bytes are needed; Err when the header section
/// exceeds [`MAX_HEADER_BYTES`] or Content-Length — mandatory on streams —
/// is missing, repeated or not a number.
pub fn frame(buf: &[u8]) -> Result<Option<usize>, ParseError> {
    frame_within(buf, MAX_HEADER_BYTES, MAX_STREAM_BODY)
}

/// [`frame`] with smaller bounds: a header section past `max_header`
/// bytes, or a Content-Length past `max_body`, is an error as soon as it
/// is seen, before the rest is waited for.
pub fn frame_within(
    buf: &[u8],
    max_header: usize,
    max_body: usize,
) -> Result<Option<usize>, ParseError> {
    let max_header = max_header.min(MAX_HEADER_BYTES);
    let max_body = max_body.min(MAX_STREAM_BODY);
    let skip = leading_newlines(buf);
    let rest = &buf[skip..];
    let Some((head_end, body_start)) = find_head_end(rest) else {
        if rest.len() > max_header {
            return Err(ParseError::new("Header section too large"));
        }
        return Ok(None);
    };
    if head_end > max_header {
        return Err(ParseError::new("Header section too large"));
    }
    // Find Content-Length (or "l") among the header lines, with its
    // continuation lines.
    let mut length: Option<Vec<u8>> = None;
    let mut in_length = false;
    for raw in rest[..head_end].split(|&c| c == b'\n').skip(1) {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.first().is_some_and(|&c| is_ws(c)) {
            if in_length {
                if let Some(v) = length.as_mut() {
                    v.extend_from_slice(line);
                }
            }
            continue;
        }
        in_length = false;
        let Some(colon) = line.iter().position(|&c| c == b':') else {
            continue;
        };
        let name = line[..colon].trim_ascii_end();
        if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l") {
            if length.is_some() {
                return Err(ParseError::new("Multiple Content-Length headers"));
            }
            length = Some(line[colon + 1..].to_vec());
            in_length = true;
        }
    }
    let length = length.ok_or_else(|| ParseError::new("Missing Content-Length header"))?;
    let length = std::str::from_utf8(&length)
        .map_err(|_| ParseError::new("Bad Content-Length"))
        .and_then(parse_length)?;
    if length > max_body {
        return Err(ParseError::new("Body too large"));
    }
    let total = skip + body_start + length;
    Ok((buf.len() >= total).then_some(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(s: &str) -> Result<Message, ParseError> {
        parse(Bytes::copy_from_slice(s.as_bytes()))
    }

    const REQ: &str = "\r\n\r\nINVITE sip:bob@example.com SIP/2.0\r\n\
        Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK1\r\n\
        v: SIP/2.0/UDP b.example.com;branch=z9hG4bK2, SIP/2.0/TCP c.example.com\r\n\
        Subject: one\r\n  two\r\n\tthree\r\n\
        l: 4\r\n\r\nbodyEXTRA";

    #[test]
    fn parses_request() {
        let m = msg(REQ).unwrap();
        assert!(m.is_request());
        assert_eq!(m.method(), Some(&Method::Invite));
        assert_eq!(m.uri(), Some("sip:bob@example.com"));
        assert_eq!(m.header(&HeaderName::Subject), Some("one two three"));
        assert_eq!(m.headers()[1].raw_name(), "v");
        assert_eq!(m.values(&HeaderName::Via).count(), 3);
        assert_eq!(m.header_lines(&HeaderName::Via).count(), 2);
        assert_eq!(&m.body()[..], b"body");
    }

    #[test]
    fn parses_response() {
        let m = msg("SIP/2.0 180 Ringing\r\nContent-Length: 0\r\n\r\n").unwrap();
        assert_eq!((m.status(), m.reason()), (Some(180), Some("Ringing")));
        let m = msg("SIP/2.0 100 \r\n\r\n").unwrap();
        assert_eq!(m.reason(), Some(""));
        assert!(msg("SIP/2.0 4294967301 x\r\n\r\n").is_err());
        assert!(msg("SIP/3.0 200 OK\r\n\r\n").is_err());
    }

    #[test]
    fn rejects() {
        for s in [
            "",
            "\r\n",
            "INVITE  sip:a@b SIP/2.0\r\n\r\n",
            "INVITE sip:a@b SIP/2.0 \r\n\r\n",
            "INVITE sip:a@b; lr SIP/2.0\r\n\r\n",
            "INVITE <sip:a@b> SIP/2.0\r\n\r\n",
            "INVITE sip:a@b?Route=x SIP/2.0\r\n\r\n",
            "INVITE sip:a@b SIP/7.0\r\n\r\n",
            "INV(TE sip:a@b SIP/2.0\r\n\r\n",
            "INVITE sip:a@b SIP/2.0\r\nBad Name: x\r\n\r\n",
            "INVITE sip:a@b SIP/2.0\r\nNoColon\r\n\r\n",
            "INVITE sip:a@b SIP/2.0\r\n folded\r\n\r\n",
            "INVITE sip:a@b SIP/2.0\r\nX: a\rb\r\n\r\n",
            "INVITE sip:a@b SIP/2.0\r\nl: 5\r\n\r\nabc",
            "INVITE sip:a@b SIP/2.0\r\nl: -1\r\n\r\n",
            "INVITE sip:a@b SIP/2.0\r\nl: 1\r\nContent-Length: 1\r\n\r\na",
            "INVITE sip:a@b SIP/2.0\r\nl: 99999999999999999999999\r\n\r\n",
        ] {
            assert!(msg(s).is_err(), "{s:?}");
        }
        assert!(parse(Bytes::from_static(
            b"INVITE sip:a@b SIP/2.0\r\nX: \xff\r\n\r\n"
        ))
        .is_err());
        // Found by fuzzing: a multi-byte character across byte 4.
        assert!(msg("SIP\u{442}\u{43e} x\r\n\r\n").is_err());
    }

    #[test]
    fn line_ends() {
        assert_eq!(line_end(b"ab\ncd\n", 0), 2);
        assert_eq!(line_end(b"ab\ncd\n", 3), 5);
        assert_eq!(line_end(b"ab\ncd", 3), 5);
        assert_eq!(line_end(b"ab\n", 3), 3);
        assert_eq!(line_end(b"\n", 0), 0);
    }

    #[test]
    fn frames() {
        let full = REQ.as_bytes();
        let n = full.len() - "EXTRA".len();
        assert_eq!(frame(full).unwrap(), Some(n));
        assert_eq!(frame(&full[..n - 1]).unwrap(), None);
        assert_eq!(frame(&full[..20]).unwrap(), None);
        assert_eq!(frame(b"\r\n\r\n").unwrap(), None);
        assert!(frame(b"OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n\r\n").is_err());
        assert!(frame(b"OPTIONS sip:a@b SIP/2.0\r\nl: x\r\n\r\n").is_err());
        let big = vec![b'a'; MAX_HEADER_BYTES + 1];
        assert!(frame(&big).is_err());
        let folded = b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length:\r\n 2\r\n\r\nhi";
        assert_eq!(frame(folded).unwrap(), Some(folded.len()));
    }
}
