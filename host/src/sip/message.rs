//! The message model: start line, header lines indexed once at parse time
//! (name + value slice of the received text), body as a `Bytes` slice of the
//! received datagram or frame. Typed views (top Via, CSeq, From, To) are
//! parsed on first access and kept until their header changes.

use std::fmt;
use std::sync::{Arc, OnceLock};

use bytes::{BufMut, Bytes, BytesMut};

use super::cseq::CSeq;
use super::error::ParseError;
use super::header_name::HeaderName;
use super::method::Method;
use super::name_addr::NameAddr;
use super::syntax::{is_token, parse_u32, trim_ws};
use super::uri::Uri;
use super::values::{next_element, split_first};
use super::via::Via;

/// Immutable text shared with the message it was parsed from: a slice of
/// the received datagram or frame (no copy of the header section), a copy
/// of a value the proxy set, or a name known at compile time.
#[derive(Clone)]
pub struct Text {
    buf: Buf,
}

#[derive(Clone)]
enum Buf {
    /// UTF-8 bytes: a slice of a received message, made by [`Text::slice`]
    /// from a `&str` over these very bytes, or a `String` the proxy wrote,
    /// taken over by [`Text::written`] without a copy.
    Received(Bytes),
    Shared(Arc<str>),
    /// Text known at compile time (the names of headers the proxy adds),
    /// which needs no allocation.
    Static(&'static str),
}

impl Text {
    /// `part`, a `&str` over the bytes of `data`, as a shared slice of it.
    pub(super) fn slice(data: &Bytes, part: &str) -> Text {
        Text {
            buf: Buf::Received(data.slice_ref(part.as_bytes())),
        }
    }

    /// Text the proxy wrote, kept without copying it: for a message that
    /// lives briefly (a reply, serialized and dropped). A request keeps its
    /// texts as long as its transaction (32 s after the answer): there
    /// [`Text::owned`] copies to the exact length, where this would keep
    /// the `String`'s spare room and, once cloned, the header `Bytes`
    /// allocates for a `Vec` with spare room.
    pub(super) fn written(s: String) -> Text {
        Text {
            buf: Buf::Received(Bytes::from(s.into_bytes())),
        }
    }

    pub(super) fn owned(s: &str) -> Text {
        Text {
            buf: Buf::Shared(Arc::from(s)),
        }
    }

    pub(super) fn fixed(s: &'static str) -> Text {
        Text {
            buf: Buf::Static(s),
        }
    }

    pub fn as_str(&self) -> &str {
        match &self.buf {
            // SAFETY: `Received` bytes are only made by `Text::slice`, from
            // a `&str` (so valid UTF-8) over the same immutable bytes, and by
            // `Text::written`, from a `String`.
            Buf::Received(b) => unsafe { std::str::from_utf8_unchecked(b) },
            Buf::Shared(s) => s,
            Buf::Static(s) => s,
        }
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Text) -> bool {
        self.as_str() == other.as_str()
    }
}

/// One header line: its name (mapped and as written) and its value
/// (unfolded and trimmed).
#[derive(Debug, Clone)]
pub struct Header {
    name: HeaderName,
    raw_name: Text,
    value: Text,
}

impl Header {
    pub(super) fn new(name: HeaderName, raw_name: Text, value: Text) -> Header {
        Header {
            name,
            raw_name,
            value,
        }
    }

    pub fn name(&self) -> &HeaderName {
        &self.name
    }

    /// The name as written on the wire ("v", "VIA", "Call-ID", ...).
    pub fn raw_name(&self) -> &str {
        self.raw_name.as_str()
    }

    pub fn value(&self) -> &str {
        self.value.as_str()
    }

    /// Whether [`Message::values`] gives anything from this line: a line of
    /// a list header holds a non-empty element exactly when it holds a
    /// byte other than SP, HTAB and ","; a line of any other header always
    /// gives its value.
    pub(super) fn holds_value(&self) -> bool {
        !self.name.is_list()
            || self
                .value()
                .bytes()
                .any(|c| !matches!(c, b' ' | b'\t' | b','))
    }
}

/// The first line of a message.
#[derive(Debug, Clone)]
pub enum StartLine {
    Request { method: Method, uri: Text },
    Response { code: u16, reason: Text },
}

/// The typed views of the headers a proxy reads many times per message
/// (validation, transaction keys, reply targets, hooks): each is parsed
/// once, on first access, instead of at every access.
#[derive(Debug, Clone, Default)]
struct Views {
    top_via: OnceLock<Result<Via, ParseError>>,
    cseq: OnceLock<Result<CSeq, ParseError>>,
    from: OnceLock<Result<NameAddr, ParseError>>,
    to: OnceLock<Result<NameAddr, ParseError>>,
}

impl Views {
    /// Forgets what was parsed from a header that is about to change.
    fn forget(&mut self, name: &HeaderName) {
        match name {
            HeaderName::Via => self.top_via = OnceLock::new(),
            HeaderName::CSeq => self.cseq = OnceLock::new(),
            HeaderName::From => self.from = OnceLock::new(),
            HeaderName::To => self.to = OnceLock::new(),
            _ => {}
        }
    }
}

/// A SIP request or response.
#[derive(Debug, Clone)]
pub struct Message {
    start: StartLine,
    headers: Vec<Header>,
    /// The known names the headers hold, a bit each ([`HeaderName::bit`]):
    /// a lookup of a known name the message does not hold (Route,
    /// Proxy-Require, Require... in most requests) returns without a scan.
    /// A bit may stay set after its last line went; it is never clear while
    /// one is held, since a line of a known name always has that name's
    /// variant (`HeaderName::parse` and [`Message::make_header`] see to it).
    names: u64,
    body: Bytes,
    /// Boxed: inline, the parsed views would make every move of a message
    /// (channels, transactions, hook contexts) copy some 700 bytes; and
    /// allocated on first use, so that a message that sheds them (see
    /// [`Message::shed_views`]) holds nothing for them.
    views: OnceLock<Box<Views>>,
}

/// What [`Message::values`] gives: one state machine instead of a chain
/// of adapters (flat_map over a filter over chained options).
struct Values<'a> {
    headers: std::slice::Iter<'a, Header>,
    name: &'a HeaderName,
    list: bool,
    /// What is left of the list line being split.
    rest: Option<&'a str>,
}

impl<'a> Iterator for Values<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        loop {
            if let Some(item) = next_element(&mut self.rest) {
                return Some(item);
            }
            let name = self.name;
            let h = self.headers.find(|h| h.name == *name)?;
            if !self.list {
                return Some(trim_ws(h.value()));
            }
            self.rest = Some(h.value());
        }
    }
}

/// A view, parsed by `parse` on first access and kept, errors included.
fn view<T>(
    cell: &OnceLock<Result<T, ParseError>>,
    parse: impl FnOnce() -> Result<T, ParseError>,
) -> Result<&T, ParseError> {
    cell.get_or_init(parse).as_ref().map_err(Clone::clone)
}

/// Refuses values that would break the message framing.
fn check_value(value: &str) -> Result<(), ParseError> {
    if value.bytes().any(|c| matches!(c, b'\r' | b'\n' | 0)) {
        return Err(ParseError::new("Header value contains CR, LF or NUL"));
    }
    Ok(())
}

fn check_name(name: &HeaderName) -> Result<(), ParseError> {
    if !is_token(name.as_str()) {
        return Err(ParseError::new("Bad header name"));
    }
    Ok(())
}

impl Message {
    pub(super) fn from_parts(start: StartLine, headers: Vec<Header>, body: Bytes) -> Message {
        Message {
            start,
            names: headers.iter().fold(0, |names, h| names | h.name.bit()),
            headers,
            body,
            views: OnceLock::new(),
        }
    }

    /// A new request with no headers and an empty body.
    pub fn new_request(method: Method, uri: &str) -> Result<Message, ParseError> {
        if !is_token(method.as_str()) {
            return Err(ParseError::new("Bad method"));
        }
        Uri::parse_request_uri(uri)?;
        Ok(Message::from_parts(
            StartLine::Request {
                method,
                uri: Text::owned(uri),
            },
            Vec::new(),
            Bytes::new(),
        ))
    }

    /// A new response with no headers and an empty body. Control characters
    /// in `reason` are replaced by spaces.
    pub fn new_response(code: u16, reason: &str) -> Message {
        let reason = if !reason.chars().any(char::is_control) {
            Text::owned(reason)
        } else {
            let reason: String = reason
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            Text::written(reason)
        };
        Message::new_response_with(code, reason)
    }

    /// [`Message::new_response`] with a reason known at compile time (the
    /// standard phrase of the code, in most replies), without a copy.
    pub(super) fn new_response_fixed(code: u16, reason: &'static str) -> Message {
        debug_assert!(!reason.chars().any(char::is_control));
        Message::new_response_with(code, Text::fixed(reason))
    }

    fn new_response_with(code: u16, reason: Text) -> Message {
        Message::from_parts(
            StartLine::Response { code, reason },
            // Grown as lines are added: room for ten lines made up front
            // took fewer instructions per reply but measured ~5 MiB more
            // PSS at 1000 calls/s.
            Vec::new(),
            Bytes::new(),
        )
    }

    pub fn start_line(&self) -> &StartLine {
        &self.start
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    /// The request method; `None` for responses.
    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// The Request-URI as written; `None` for responses.
    pub fn uri(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(uri.as_str()),
            StartLine::Response { .. } => None,
        }
    }

    /// Replaces the Request-URI (checked as `parse` checks it). Err for
    /// responses or an invalid URI.
    pub fn set_uri(&mut self, new: &str) -> Result<(), ParseError> {
        Uri::parse_request_uri(new)?;
        match &mut self.start {
            StartLine::Request { uri, .. } => {
                *uri = Text::owned(new);
                Ok(())
            }
            StartLine::Response { .. } => Err(ParseError::new("Not a request")),
        }
    }

    pub fn status(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { code, .. } => Some(*code),
            StartLine::Request { .. } => None,
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match &self.start {
            StartLine::Response { reason, .. } => Some(reason.as_str()),
            StartLine::Request { .. } => None,
        }
    }

    pub fn headers(&self) -> &[Header] {
        &self.headers
    }

    /// The header lines a line named `name` may be among: none when the
    /// message holds no such known name; all of them for another name.
    fn lines_with(&self, name: &HeaderName) -> &[Header] {
        let bit = name.bit();
        if bit != 0 && self.names & bit == 0 {
            &[]
        } else {
            &self.headers
        }
    }

    /// The value of the first header line of that name.
    pub fn header(&self, name: &HeaderName) -> Option<&str> {
        self.lines_with(name)
            .iter()
            .find(|h| h.name == *name)
            .map(Header::value)
    }

    /// Each header line's value, in order.
    pub fn header_lines<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a str> + 'a {
        self.lines_with(name)
            .iter()
            .filter(move |h| h.name == *name)
            .map(Header::value)
    }

    /// Every value of that header: list headers (`name.is_list()`) are split
    /// on commas outside quotes and `<>`, and empty elements skipped; other
    /// headers give one (trimmed) value per line.
    pub fn values<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a str> + 'a {
        Values {
            headers: self.lines_with(name).iter(),
            name,
            list: name.is_list(),
            rest: None,
        }
    }

    fn make_header(name: HeaderName, value: &str) -> Result<Header, ParseError> {
        check_value(value)?;
        // A known name spelled as `Other` gets its variant: what `names`
        // holds must say which known names the lines have.
        let name = match name {
            HeaderName::Other(other) => {
                HeaderName::known(&other).unwrap_or(HeaderName::Other(other))
            }
            known => known,
        };
        let raw = match name.known_str() {
            Some(known) => Text::fixed(known),
            None => {
                check_name(&name)?;
                Text::owned(name.as_str())
            }
        };
        Ok(Header::new(name, raw, Text::owned(trim_ws(value))))
    }

    /// Adds a header line after all the others.
    pub fn append_header(&mut self, name: HeaderName, value: &str) -> Result<(), ParseError> {
        let h = Self::make_header(name, value)?;
        self.forget_view(&h.name);
        self.names |= h.name.bit();
        self.headers.push(h);
        Ok(())
    }

    /// Adds a header line of a known name and a value fixed at compile
    /// time, without a copy (a reply's `Content-Length: 0`).
    pub(super) fn append_fixed(&mut self, name: HeaderName, value: &'static str) {
        self.append_trusted(name, Text::fixed(value));
    }

    /// Adds a header line of a known name and a value the caller made of
    /// checked parts (no CR, LF or NUL, trimmed), kept without a copy: a
    /// reply's To with the tag it adds.
    pub(super) fn append_written(&mut self, name: HeaderName, value: String) {
        self.append_trusted(name, Text::written(value));
    }

    fn append_trusted(&mut self, name: HeaderName, value: Text) {
        debug_assert!(!value.as_str().contains(['\r', '\n']));
        debug_assert_eq!(trim_ws(value.as_str()), value.as_str());
        let Some(known) = name.known_str() else {
            let _ = self.append_header(name, value.as_str());
            return;
        };
        self.forget_view(&name);
        self.names |= name.bit();
        self.headers
            .push(Header::new(name, Text::fixed(known), value));
    }

    /// Appends the lines of a header of `from` (all of them, or the first),
    /// as `append_header` would, but sharing their text instead of copying
    /// it (replies copy Via, From, Call-ID and CSeq from their request).
    pub(super) fn copy_lines(&mut self, from: &Message, name: &HeaderName, all: bool) {
        let Some(known) = name.known_str() else {
            for v in from
                .header_lines(name)
                .take(if all { usize::MAX } else { 1 })
            {
                let _ = self.append_header(name.clone(), v);
            }
            return;
        };
        self.forget_view(name);
        self.names |= name.bit();
        let lines = from.lines_with(name).iter().filter(|h| h.name == *name);
        for h in lines.take(if all { usize::MAX } else { 1 }) {
            // No CR, LF or NUL check: a value in a message is one line
            // already (parse splits lines and refuses a bare CR; the others
            // were checked when set), and a NUL received is relayed as it
            // came anyway. A value is trimmed when made, so it is shared.
            debug_assert!(!h.value().contains(['\r', '\n']));
            debug_assert_eq!(trim_ws(h.value()), h.value());
            self.headers.push(Header::new(
                name.clone(),
                Text::fixed(known),
                h.value.clone(),
            ));
        }
    }

    /// Adds a header line before the first one of the same name, or at the
    /// top of the headers when there is none (Via, Record-Route).
    pub fn prepend_header(&mut self, name: HeaderName, value: &str) -> Result<(), ParseError> {
        let h = Self::make_header(name, value)?;
        self.forget_view(&h.name);
        let at = self
            .lines_with(&h.name)
            .iter()
            .position(|x| x.name == h.name)
            .unwrap_or(0);
        self.names |= h.name.bit();
        self.headers.insert(at, h);
        Ok(())
    }

    /// Removes every line of that header; returns how many.
    pub fn remove_headers(&mut self, name: &HeaderName) -> usize {
        self.forget_view(name);
        if self.lines_with(name).is_empty() {
            return 0;
        }
        let before = self.headers.len();
        self.headers.retain(|h| h.name != *name);
        self.names &= !name.bit();
        before - self.headers.len()
    }

    /// Removes the first value of a header; false when there was none. For
    /// list headers only the first element goes when a line holds several
    /// ("a, b" becomes "b"); lines left without any value are removed.
    /// (Its callers read the value before, through the views.)
    pub fn remove_first_value(&mut self, name: &HeaderName) -> bool {
        self.forget_view(name);
        loop {
            let Some(i) = self.lines_with(name).iter().position(|h| h.name == *name) else {
                return false;
            };
            if !name.is_list() {
                self.headers.remove(i);
                return true;
            }
            match split_first(self.headers[i].value()) {
                None => {
                    self.headers.remove(i);
                }
                Some((_, None)) => {
                    self.headers.remove(i);
                    return true;
                }
                Some((_, Some(rest))) => {
                    self.headers[i].value = Text::owned(rest);
                    return true;
                }
            }
        }
    }

    /// Replaces the first value of a header (only the first element of a
    /// list line), e.g. the top Via after adding received/rport. Err when the
    /// header is absent or the value contains CR, LF or NUL.
    pub fn replace_first_value(
        &mut self,
        name: &HeaderName,
        value: &str,
    ) -> Result<(), ParseError> {
        check_value(value)?;
        self.replace_first_checked(name, trim_ws(value).to_string())
    }

    /// [`Message::replace_first_value`] of a value known to hold no CR, LF
    /// or NUL and no whitespace around it.
    fn replace_first_checked(
        &mut self,
        name: &HeaderName,
        mut value: String,
    ) -> Result<(), ParseError> {
        self.forget_view(name);
        // Skip lines that hold no value at all (e.g. an empty "Route:").
        let list = name.is_list();
        let mut found = None;
        for (i, h) in self.lines_with(name).iter().enumerate() {
            if h.name != *name {
                continue;
            }
            if !list {
                found = Some((i, None));
                break;
            }
            if let Some((_, rest)) = split_first(h.value()) {
                found = Some((i, rest));
                break;
            }
        }
        let (i, rest) = found.ok_or_else(|| ParseError::missing(name.as_str()))?;
        if let Some(rest) = rest {
            value.reserve(2 + rest.len());
            value.push_str(", ");
            value.push_str(rest);
        }
        // Copied to its length: a request keeps it (see `Text::written`).
        self.headers[i].value = Text::owned(&value);
        Ok(())
    }

    fn views(&self) -> &Views {
        self.views.get_or_init(Box::default)
    }

    fn forget_view(&mut self, name: &HeaderName) {
        if let Some(views) = self.views.get_mut() {
            views.forget(name);
        }
    }

    /// Drops the parsed views; they are parsed again if asked for. For a
    /// message kept for a transaction's lifetime (tens of seconds), whose
    /// views are seldom read again: the views weigh more than the text.
    pub fn shed_views(&mut self) {
        self.views = OnceLock::new();
    }

    /// The first Via value, parsed.
    pub fn top_via(&self) -> Result<&Via, ParseError> {
        view(&self.views().top_via, || {
            let v = self
                .values(&HeaderName::Via)
                .next()
                .ok_or_else(|| ParseError::missing("Via"))?;
            Via::parse_element(v)
        })
    }

    /// Replaces the first Via value with `via` (e.g. with received/rport
    /// added), which is kept as the parsed top Via.
    pub fn set_top_via(&mut self, via: Via) -> Result<(), ParseError> {
        let mut text = String::new();
        via.write_to(&mut text);
        // Checked: `Via::set_param` takes any text.
        check_value(&text)?;
        self.replace_first_checked(&HeaderName::Via, text)?;
        let mut views = self.views.take().unwrap_or_default();
        views.top_via = OnceLock::from(Ok(via));
        self.views = OnceLock::from(views);
        Ok(())
    }

    pub fn call_id(&self) -> Option<&str> {
        self.header(&HeaderName::CallId)
    }

    pub fn cseq(&self) -> Result<&CSeq, ParseError> {
        view(&self.views().cseq, || {
            CSeq::parse(
                self.header(&HeaderName::CSeq)
                    .ok_or_else(|| ParseError::missing("CSeq"))?,
            )
        })
    }

    pub fn from(&self) -> Result<&NameAddr, ParseError> {
        view(&self.views().from, || self.name_addr(HeaderName::From))
    }

    pub fn to(&self) -> Result<&NameAddr, ParseError> {
        view(&self.views().to, || self.name_addr(HeaderName::To))
    }

    /// From or To, parsed.
    fn name_addr(&self, name: HeaderName) -> Result<NameAddr, ParseError> {
        let v = self
            .header(&name)
            .ok_or_else(|| ParseError::missing(name.as_str()))?;
        NameAddr::parse(v).map_err(|e| ParseError::bad_header(name.as_str(), e.reason()))
    }

    /// Sets Max-Forwards to `hops`: the line there is gets the new value in
    /// its place (as Kamailio's maxfwd module rewrites it), any further
    /// line goes, and a message without one gets it as its last line. A
    /// value below 100 is static text: no allocation.
    pub fn set_max_forwards(&mut self, hops: u32) {
        let value = match super::write::small_decimal(hops) {
            Some(text) => Text::fixed(text),
            None => Text::owned(&hops.to_string()),
        };
        let name = HeaderName::MaxForwards;
        let mut lines = self.lines_with(&name).iter().enumerate();
        let Some((first, _)) = lines.find(|(_, h)| h.name == name) else {
            self.append_trusted(name, value);
            return;
        };
        if lines.any(|(_, h)| h.name == name) {
            let mut at = 0;
            self.headers.retain(|h| {
                at += 1;
                at - 1 <= first || h.name != name
            });
        }
        self.headers[first].value = value;
    }

    /// Max-Forwards: `None` when absent, Err when not a number (1*DIGIT
    /// that fits a u32; the RFC's 0..=255 is not enforced).
    pub fn max_forwards(&self) -> Option<Result<u32, ParseError>> {
        self.header(&HeaderName::MaxForwards).map(|v| {
            parse_u32(v).ok_or_else(|| ParseError::bad_header("Max-Forwards", "not a number"))
        })
    }

    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Replaces the body; `to_bytes` writes the matching Content-Length.
    pub fn set_body(&mut self, body: Bytes) {
        self.body = body;
    }

    /// About how many bytes [`Message::to_bytes`] makes (exact but for
    /// Content-Length, which it rewrites), without making them.
    pub fn wire_len(&self) -> usize {
        self.start_len() + self.headers_len() + 2 + self.body.len()
    }

    /// The start line's length on the wire, CRLF included.
    fn start_len(&self) -> usize {
        match &self.start {
            // METHOD SP URI SP "SIP/2.0" CRLF
            StartLine::Request { method, uri } => method.as_str().len() + uri.as_str().len() + 11,
            // "SIP/2.0" SP code SP reason CRLF; a code set by hand is
            // written with three digits at least, five at most.
            StartLine::Response { code, reason } => {
                let digits = code.max(&100).ilog10() as usize + 1;
                reason.as_str().len() + digits + 11
            }
        }
    }

    /// The header lines' length on the wire, as they stand.
    fn headers_len(&self) -> usize {
        self.headers
            .iter()
            .map(|h| h.raw_name().len() + h.value().len() + 4)
            .sum()
    }

    /// Serializes the message: start line, header lines with their names as
    /// written, Content-Length set to the body length (in place of the first
    /// Content-Length line, others dropped; appended when there was none),
    /// an empty line and the body.
    pub fn to_bytes(&self) -> Bytes {
        // Sized to fit, not more: a final response is kept as these bytes
        // for Timer J (32 s), and slack would be kept with it. Content-Length
        // may grow by up to 19 digits, or be appended (38 bytes at most).
        let mut out = BytesMut::with_capacity(self.wire_len() + CONTENT_LENGTH_SLACK);
        match &self.start {
            StartLine::Request { method, uri } => {
                out.put_slice(method.as_str().as_bytes());
                out.put_u8(b' ');
                out.put_slice(uri.as_str().as_bytes());
                out.put_slice(b" SIP/2.0\r\n");
            }
            StartLine::Response { code, reason } => {
                out.put_slice(b"SIP/2.0 ");
                // A parsed code has three digits; one set by hand may not.
                if *code < 100 {
                    out.put_slice(format!("{code:03}").as_bytes());
                } else {
                    put_decimal(&mut out, usize::from(*code));
                }
                out.put_u8(b' ');
                out.put_slice(reason.as_str().as_bytes());
                out.put_slice(b"\r\n");
            }
        }
        let mut digits = [0u8; 20];
        let length = super::write::decimal(self.body.len() as u64, &mut digits);
        let mut wrote_length = false;
        for h in &self.headers {
            let value = if h.name == HeaderName::ContentLength {
                if wrote_length {
                    continue;
                }
                wrote_length = true;
                length
            } else {
                h.value()
            };
            out.put_slice(h.raw_name().as_bytes());
            out.put_slice(b": ");
            out.put_slice(value.as_bytes());
            out.put_slice(b"\r\n");
        }
        if !wrote_length {
            out.put_slice(b"Content-Length: ");
            out.put_slice(length.as_bytes());
            out.put_slice(b"\r\n");
        }
        out.put_slice(b"\r\n");
        out.put_slice(&self.body);
        out.freeze()
    }
}

/// What [`Message::to_bytes`] may add to [`Message::wire_len`]: a
/// Content-Length line (`Content-Length: ` and 20 digits and CRLF).
const CONTENT_LENGTH_SLACK: usize = 38;

fn put_decimal(out: &mut BytesMut, n: usize) {
    let mut digits = [0u8; 20];
    out.put_slice(super::write::decimal(n as u64, &mut digits).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::super::parse::parse;
    use super::*;

    /// Whether a line of `name` holds a value, as `sanity_check` asks it.
    fn has_value(m: &Message, name: &HeaderName) -> bool {
        m.headers()
            .iter()
            .any(|h| h.name() == name && h.holds_value())
    }

    fn msg() -> Message {
        parse(Bytes::from_static(
            b"OPTIONS sip:a@b SIP/2.0\r\n\
              Via: SIP/2.0/UDP h1;branch=z9hG4bK1, SIP/2.0/UDP h2;branch=z9hG4bK2\r\n\
              v: SIP/2.0/TCP h3;branch=z9hG4bK3\r\n\
              Route: <sip:r1;lr>\r\nRoute: <sip:r2;lr>, <sip:r3;lr>\r\n\
              From: \"A, B\" <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x@y\r\n\
              CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nl: 2\r\n\r\nhi",
        ))
        .unwrap()
    }

    #[test]
    fn to_bytes_is_sized_by_wire_len() {
        let request = msg();
        let bytes = request.to_bytes();
        assert_eq!(bytes.len(), request.wire_len());
        // Content-Length rewritten longer, or appended: within the slack.
        let mut longer = msg();
        longer.set_body(Bytes::from(vec![b'x'; 12_345]));
        assert!(longer.to_bytes().len() <= longer.wire_len() + CONTENT_LENGTH_SLACK);
        for code in [7, 100, 404, 1000, 65535] {
            let response = crate::sip::response_to(&request, code, "Reason", Some("t"));
            let bytes = response.to_bytes();
            assert_eq!(bytes.len(), response.wire_len(), "{code}");
            assert!(bytes.starts_with(format!("SIP/2.0 {code:03} Reason\r\n").as_bytes()));
        }
    }

    #[test]
    fn max_forwards_is_set_in_its_place() {
        let names = |m: &Message| -> Vec<String> {
            m.headers()
                .iter()
                .map(|h| h.name().as_str().to_owned())
                .collect()
        };
        let mut m = msg();
        let before = names(&m);
        for hops in [69, 5, 0, 99, 100, 4_000_000_000] {
            m.set_max_forwards(hops);
            assert_eq!(m.max_forwards(), Some(Ok(hops)));
            assert_eq!(
                m.header(&HeaderName::MaxForwards),
                Some(hops.to_string().as_str())
            );
            assert_eq!(names(&m), before, "the line stays where it was");
        }
        // A message without one gets it last; one with several keeps one.
        let mut m = msg();
        m.remove_headers(&HeaderName::MaxForwards);
        m.set_max_forwards(10);
        assert_eq!(names(&m).last().map(String::as_str), Some("Max-Forwards"));
        m.append_header(HeaderName::Subject, "s").unwrap();
        m.append_header(HeaderName::MaxForwards, "3").unwrap();
        m.set_max_forwards(7);
        assert_eq!(
            m.header_lines(&HeaderName::MaxForwards).collect::<Vec<_>>(),
            ["7"]
        );
        assert_eq!(names(&m).last().map(String::as_str), Some("Subject"));
        let text = String::from_utf8(m.to_bytes().to_vec()).unwrap();
        assert!(
            text.contains("\r\nMax-Forwards: 7\r\nSubject: s\r\n"),
            "{text}"
        );
    }

    #[test]
    fn accessors() {
        let m = msg();
        assert_eq!(m.call_id(), Some("x@y"));
        assert_eq!(m.top_via().unwrap().branch(), Some("z9hG4bK1"));
        assert_eq!(m.from().unwrap().display.as_deref(), Some("A, B"));
        assert_eq!(m.values(&HeaderName::From).count(), 1);
        assert_eq!(
            m.values(&HeaderName::Route).collect::<Vec<_>>(),
            vec!["<sip:r1;lr>", "<sip:r2;lr>", "<sip:r3;lr>"]
        );
        assert_eq!(m.max_forwards(), Some(Ok(70)));
        for name in [
            HeaderName::Via,
            HeaderName::Route,
            HeaderName::From,
            HeaderName::Subject,
        ] {
            assert_eq!(has_value(&m, &name), m.values(&name).next().is_some());
        }
        let m = parse(Bytes::from_static(
            b"OPTIONS sip:a@b SIP/2.0\r\nRoute: , ,\r\nSubject:\r\nVia: ,\"\"\r\n\r\n",
        ))
        .unwrap();
        for name in [
            HeaderName::Via,
            HeaderName::Route,
            HeaderName::From,
            HeaderName::Subject,
        ] {
            assert_eq!(
                has_value(&m, &name),
                m.values(&name).next().is_some(),
                "{name}"
            );
        }
        assert_eq!(m.status(), None);
    }

    #[test]
    fn editing() {
        let mut m = msg();
        m.prepend_header(HeaderName::Via, "SIP/2.0/UDP proxy;branch=z9hG4bKp")
            .unwrap();
        assert_eq!(m.top_via().unwrap().host.to_string(), "proxy");
        assert_eq!(m.headers()[0].name(), &HeaderName::Via);
        assert_eq!(
            m.values(&HeaderName::Via).next(),
            Some("SIP/2.0/UDP proxy;branch=z9hG4bKp")
        );
        assert!(m.remove_first_value(&HeaderName::Via));
        assert_eq!(
            m.values(&HeaderName::Via).next(),
            Some("SIP/2.0/UDP h1;branch=z9hG4bK1")
        );
        assert!(m.remove_first_value(&HeaderName::Via));
        assert_eq!(
            m.header(&HeaderName::Via),
            Some("SIP/2.0/UDP h2;branch=z9hG4bK2")
        );
        let mut via = m.top_via().unwrap().clone();
        via.set_param("received", Some("192.0.2.1"));
        m.replace_first_value(&HeaderName::Via, &via.to_string())
            .unwrap();
        assert_eq!(m.top_via().unwrap().received(), Some("192.0.2.1"));
        assert_eq!(m.values(&HeaderName::Via).count(), 2);

        // Record-Route goes on top when there is none.
        m.prepend_header(HeaderName::RecordRoute, "<sip:p;lr>")
            .unwrap();
        assert_eq!(m.headers()[0].name(), &HeaderName::RecordRoute);
        m.append_header(HeaderName::parse("X-Test"), "1").unwrap();
        assert!(m.append_header(HeaderName::parse("X Bad"), "1").is_err());
        assert!(m.append_header(HeaderName::Subject, "a\r\nVia: x").is_err());
        assert!(m.append_header(HeaderName::Subject, "a\0").is_err());
        assert_eq!(m.remove_headers(&HeaderName::Route), 2);
        assert!(!m.remove_first_value(&HeaderName::Route));
        assert!(m
            .replace_first_value(&HeaderName::Route, "<sip:x>")
            .is_err());

        m.set_uri("sip:new@example.com").unwrap();
        assert_eq!(m.uri(), Some("sip:new@example.com"));
        assert!(m.set_uri("sip:bad uri").is_err());
        assert!(m.set_uri("sip:a@b?Route=x").is_err());

        m.set_body(Bytes::from_static(b"longer body"));
        let again = parse(m.to_bytes()).unwrap();
        assert_eq!(&again.body()[..], b"longer body");
        assert_eq!(again.header(&HeaderName::ContentLength), Some("11"));
        assert_eq!(
            again
                .headers()
                .iter()
                .find(|h| h.name() == &HeaderName::ContentLength)
                .unwrap()
                .raw_name(),
            "l"
        );
        assert_eq!(again.header(&HeaderName::parse("x-test")), Some("1"));
    }

    /// Lookups skip the scan for names the message does not hold: after
    /// every kind of edit they find what a scan of every line finds.
    #[test]
    fn lookups_find_what_a_scan_finds() {
        fn agree(m: &Message, step: &str) {
            let names = [
                HeaderName::Via,
                HeaderName::Route,
                HeaderName::RecordRoute,
                HeaderName::From,
                HeaderName::Subject,
                HeaderName::ProxyRequire,
                HeaderName::parse("X-A"),
                HeaderName::parse("x-b"),
                HeaderName::parse("X-None"),
                HeaderName::Other("route".into()),
            ];
            for name in &names {
                let scanned: Vec<&str> = m
                    .headers()
                    .iter()
                    .filter(|h| h.name() == name)
                    .map(Header::value)
                    .collect();
                let lines: Vec<&str> = m.header_lines(name).collect();
                assert_eq!(lines, scanned, "{name} after {step}");
                assert_eq!(
                    m.header(name),
                    scanned.first().copied(),
                    "{name} after {step}"
                );
                assert_eq!(
                    m.values(name).next().is_some(),
                    has_value(m, name),
                    "{name} after {step}"
                );
            }
        }
        let mut m = msg();
        agree(&m, "parse");
        m.append_header(HeaderName::parse("X-A"), "1").unwrap();
        m.append_header(HeaderName::parse("X-B"), "2").unwrap();
        agree(&m, "append");
        // A known name written as another is found by either spelling.
        m.append_header(HeaderName::Other("proxy-require".into()), "foo")
            .unwrap();
        agree(&m, "appending a known name spelled as another");
        assert_eq!(m.header(&HeaderName::ProxyRequire), Some("foo"));
        assert_eq!(
            m.header(&HeaderName::Other("Via".into())),
            m.header(&HeaderName::Via)
        );
        assert_eq!(
            m.remove_headers(&HeaderName::Other("PROXY-REQUIRE".into())),
            1
        );
        agree(&m, "removing it by the other spelling");
        assert_eq!(m.remove_headers(&HeaderName::parse("x-a")), 1);
        agree(&m, "removing one other name");
        assert_eq!(m.header(&HeaderName::parse("X-B")), Some("2"));
        assert_eq!(m.remove_headers(&HeaderName::Route), 2);
        agree(&m, "removing Route");
        assert_eq!(m.remove_headers(&HeaderName::Route), 0);
        m.prepend_header(HeaderName::Route, "<sip:again;lr>")
            .unwrap();
        agree(&m, "prepending Route again");
        assert_eq!(m.header(&HeaderName::Route), Some("<sip:again;lr>"));
        m.prepend_header(HeaderName::RecordRoute, "<sip:p;lr>")
            .unwrap();
        agree(&m, "prepending Record-Route");
        while m.remove_first_value(&HeaderName::Via) {}
        agree(&m, "removing every Via value");
        m.prepend_header(HeaderName::Via, "SIP/2.0/UDP p;branch=z9hG4bKp")
            .unwrap();
        agree(&m, "a new Via");
        m.replace_first_value(&HeaderName::Subject, "x")
            .unwrap_err();
        m.append_header(HeaderName::Subject, "s").unwrap();
        m.replace_first_value(&HeaderName::Subject, "t").unwrap();
        agree(&m, "replacing Subject");
        let mut reply = Message::new_response(200, "OK");
        agree(&reply, "a new response");
        reply.copy_lines(&m, &HeaderName::Via, true);
        reply.copy_lines(&m, &HeaderName::Route, false);
        reply.copy_lines(&m, &HeaderName::parse("X-B"), true);
        reply.copy_lines(&m, &HeaderName::ProxyRequire, true);
        agree(&reply, "copying lines");
        assert_eq!(reply.header(&HeaderName::parse("x-b")), Some("2"));
    }

    #[test]
    fn decimals() {
        for code in [0u16, 7, 42, 100, 180, 699, 999, 1000, 65535] {
            let r = Message::new_response(code, "X");
            let text = r.to_bytes();
            let want = format!("SIP/2.0 {code:03} X\r\n");
            assert!(text.starts_with(want.as_bytes()), "{code}");
        }
    }

    #[test]
    fn views_follow_edits() {
        let mut m = msg();
        assert_eq!(m.top_via().unwrap().branch(), Some("z9hG4bK1"));
        assert_eq!(m.cseq().unwrap().seq, 1);
        assert_eq!(m.from().unwrap().tag(), Some("1"));
        assert_eq!(m.to().unwrap().tag(), None);
        assert!(m.remove_first_value(&HeaderName::Via));
        assert_eq!(m.top_via().unwrap().branch(), Some("z9hG4bK2"));
        m.prepend_header(HeaderName::Via, "SIP/2.0/UDP p;branch=z9hG4bKp")
            .unwrap();
        assert_eq!(m.top_via().unwrap().branch(), Some("z9hG4bKp"));
        m.replace_first_value(&HeaderName::CSeq, "2 OPTIONS")
            .unwrap();
        assert_eq!(m.cseq().unwrap().seq, 2);
        m.replace_first_value(&HeaderName::To, "<sip:c@d>;tag=9")
            .unwrap();
        assert_eq!(m.to().unwrap().tag(), Some("9"));
        m.remove_headers(&HeaderName::From);
        assert!(m.from().is_err());
        m.append_header(HeaderName::From, "<sip:e@f>;tag=2")
            .unwrap();
        assert_eq!(m.from().unwrap().tag(), Some("2"));
        let mut via = m.top_via().unwrap().clone();
        via.set_param("received", Some("192.0.2.1"));
        m.set_top_via(via.clone()).unwrap();
        assert_eq!(m.top_via().unwrap(), &via);
        assert_eq!(
            m.header(&HeaderName::Via),
            Some("SIP/2.0/UDP p;branch=z9hG4bKp;received=192.0.2.1")
        );
        // What a setter caches is what parsing the new text gives.
        let again = parse(m.to_bytes()).unwrap();
        assert_eq!(again.top_via().unwrap(), &via);
        let (mut a, b) = (m.clone(), m);
        assert!(a.remove_first_value(&HeaderName::Via));
        assert_eq!(b.top_via().unwrap(), &via);
        assert_ne!(a.top_via().unwrap(), &via);
    }

    #[test]
    fn serializes_raw_names_and_adds_length() {
        let m = parse(Bytes::from_static(
            b"SIP/2.0 200 OK\r\nv: SIP/2.0/UDP h\r\nCALL-ID: a\r\n\r\nxyz",
        ))
        .unwrap();
        assert_eq!(
            &m.to_bytes()[..],
            b"SIP/2.0 200 OK\r\nv: SIP/2.0/UDP h\r\nCALL-ID: a\r\nContent-Length: 3\r\n\r\nxyz"
        );
        let mut r = Message::new_response(200, "OK");
        r.set_body(Bytes::new());
        assert_eq!(
            &r.to_bytes()[..],
            b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"
        );
        let req = Message::new_request(Method::Options, "sip:x").unwrap();
        assert_eq!(
            &req.to_bytes()[..],
            b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 0\r\n\r\n"
        );
        assert!(Message::new_request(Method::Other("A B".into()), "sip:x").is_err());
    }

    #[test]
    fn bare_lf_lines() {
        let m = parse(Bytes::from_static(
            b"OPTIONS sip:a@b SIP/2.0\nVia: SIP/2.0/UDP h\nSubject: a\n b\nl: 2\n\nok",
        ))
        .unwrap();
        assert_eq!(m.header(&HeaderName::Subject), Some("a b"));
        assert_eq!(&m.body()[..], b"ok");
    }
}
