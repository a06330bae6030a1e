//! What a proxy checks before routing: `validate` (syntax of the headers a
//! proxy relies on, RFC 3261 §16.3 step 1) and `sanity_check` (application
//! answers like Kamailio's sanity module: 400, 416, 420).

use super::error::ParseError;
use super::header_name::HeaderName;
use super::message::Message;
use super::method::Method;
use super::uri::Uri;
use super::via::Via;

/// How many lines of a single-value header there are, and the first.
#[derive(Default, Clone, Copy)]
struct Lines<'a> {
    count: usize,
    first: Option<&'a str>,
}

impl<'a> Lines<'a> {
    fn add(&mut self, value: &'a str) {
        self.count += 1;
        self.first.get_or_insert(value);
    }

    /// Exactly one line (RFC 4475 multi01).
    fn single(self, name: &HeaderName) -> Result<&'a str, ParseError> {
        match (self.first, self.count) {
            (None, _) => Err(ParseError::missing(name.as_str())),
            (Some(v), 1) => Ok(v),
            (Some(_), _) => Err(ParseError::owned(format!(
                "Multiple {} headers",
                name.as_str()
            ))),
        }
    }
}

/// Checks the headers a proxy routes on:
/// - exactly one Call-ID, CSeq, From and To, and at most one Max-Forwards;
/// - at least one Via, and every Via value of a request parses (sent-by
///   with host and port, received an IP address); of a response, the top
///   one (ours), whose branch names its transaction: the others go back
///   upstream as they came, and are parsed where read (a stateless relay
///   reads the next one);
/// - From and To parse as name-addr or addr-spec with a valid URI, in a
///   request. A response's are relayed as they came and parsed only when
///   read (a proxy need not parse them, RFC 4475 §3.1.2): that spares two
///   URI parses per response, ~3,000 instructions each;
/// - CSeq parses (number below 2^31) and, in a request, names the request's
///   method (RFC 3261 §8.1.1.5; ACK and CANCEL carry their own method);
/// - Max-Forwards is a number;
/// - a response's code is 100..=699.
///
/// Headers a proxy need not understand (Contact, Date, Expires,
/// Content-Type, ...) are left alone, so RFC 4475 baddate and regbadct pass
/// while badaspec and baddn (bad To/From) fail.
pub fn validate(msg: &Message) -> Result<(), ParseError> {
    if let Some(code) = msg.status() {
        if !(100..=699).contains(&code) {
            return Err(ParseError::new("Bad status code"));
        }
    }
    // One pass over the header lines; the checks below keep their order.
    let (mut call_id, mut cseq, mut from, mut to, mut max_forwards) = Default::default();
    for h in msg.headers() {
        let lines: &mut Lines = match h.name() {
            HeaderName::CallId => &mut call_id,
            HeaderName::CSeq => &mut cseq,
            HeaderName::From => &mut from,
            HeaderName::To => &mut to,
            HeaderName::MaxForwards => &mut max_forwards,
            _ => continue,
        };
        lines.add(h.value());
    }
    let call_id = call_id.single(&HeaderName::CallId)?;
    // Call-ID = word [ "@" word ]: no whitespace inside.
    if call_id.is_empty() || call_id.bytes().any(|c| c == b' ' || c == b'\t') {
        return Err(ParseError::bad_header("Call-ID", "invalid"));
    }
    // Once there is exactly one line, the message's views parse that line:
    // what is checked here is parsed once for the rest of the message's life.
    cseq.single(&HeaderName::CSeq)?;
    let cseq = msg.cseq()?;
    from.single(&HeaderName::From)?;
    to.single(&HeaderName::To)?;
    if msg.is_request() {
        msg.from()?;
        msg.to()?;
    }
    if max_forwards.count > 1 {
        return Err(ParseError::new("Multiple Max-Forwards headers"));
    }
    if let Some(mf) = msg.max_forwards() {
        mf?;
    }
    msg.top_via()?;
    if msg.is_request() {
        for v in msg.values(&HeaderName::Via).skip(1) {
            Via::check(v)?;
        }
    }
    if let Some(method) = msg.method() {
        if cseq.method != *method {
            return Err(ParseError::new("CSeq method does not match request method"));
        }
    }
    Ok(())
}

/// An application-layer refusal: the reply to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: u16,
    pub reason: String,
    /// Extra headers for the reply (e.g. Unsupported for a 420).
    pub headers: Vec<(HeaderName, String)>,
}

impl Rejection {
    fn new(code: u16, reason: &str) -> Rejection {
        Rejection {
            code,
            reason: reason.to_string(),
            headers: Vec::new(),
        }
    }
}

/// Application-layer checks on a request (responses always pass), in the
/// spirit of Kamailio's sanity_check:
/// - a required header (Via, From, To, Call-ID, CSeq) missing: 400;
/// - Max-Forwards present but not a number: 400;
/// - a Request-URI scheme other than sip, sips or tel: 416 (RFC 3261
///   §8.2.2.1; this includes RFC 4475 novelsc's soap.beep, which §3.3.2
///   allows an element to refuse);
/// - a Proxy-Require with any option tag: 420 Bad Extension with an
///   Unsupported header listing them (we support none; RFC 3261 §16.3 step
///   5). ACK and CANCEL are exempt, as for Require (RFC 3261 §8.2.2.3).
///
/// It does not repeat `validate`; a proxy runs both.
/// Whether a Request-URI is sip, sips or tel. A request's URI was parsed
/// as a URI when the message was made (parse, `new_request`, `set_uri`), so
/// its scheme is what precedes the first ':'; reading it spares a second
/// parse (~1,700 instructions) in every route hook that checks sanity.
fn has_routable_scheme(uri: &str) -> bool {
    debug_assert!(Uri::parse(uri).is_ok(), "unchecked Request-URI {uri:?}");
    uri.split_once(':').is_some_and(|(scheme, _)| {
        ["sip", "sips", "tel"]
            .iter()
            .any(|s| scheme.eq_ignore_ascii_case(s))
    })
}

pub fn sanity_check(msg: &Message) -> Result<(), Rejection> {
    let Some(method) = msg.method() else {
        return Ok(());
    };
    // The headers every request holds, in one pass over the lines (a route
    // calls this on every request; a lookup per name was five passes).
    const REQUIRED: [HeaderName; 5] = [
        HeaderName::Via,
        HeaderName::From,
        HeaderName::To,
        HeaderName::CallId,
        HeaderName::CSeq,
    ];
    let mut held = [false; REQUIRED.len()];
    for h in msg.headers() {
        // A match, not a search of REQUIRED: the index in REQUIRED.
        let i = match h.name() {
            HeaderName::Via => 0,
            HeaderName::From => 1,
            HeaderName::To => 2,
            HeaderName::CallId => 3,
            HeaderName::CSeq => 4,
            _ => continue,
        };
        held[i] = held[i] || h.holds_value();
    }
    if let Some(missing) = REQUIRED.iter().zip(held).find(|(_, held)| !held) {
        return Err(Rejection::new(
            400,
            &format!("Missing {} header", missing.0.as_str()),
        ));
    }
    if let Some(Err(_)) = msg.max_forwards() {
        return Err(Rejection::new(400, "Bad Max-Forwards header"));
    }
    if !msg.uri().is_some_and(has_routable_scheme) {
        return Err(Rejection::new(416, "Unsupported URI Scheme"));
    }
    if !matches!(method, Method::Ack | Method::Cancel) {
        let options: Vec<&str> = msg.values(&HeaderName::ProxyRequire).collect();
        if !options.is_empty() {
            let mut r = Rejection::new(420, "Bad Extension");
            r.headers
                .push((HeaderName::Unsupported, options.join(", ")));
            return Err(r);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::parse::parse;
    use super::*;
    use bytes::Bytes;

    fn msg(extra: &str, method: &str, uri: &str) -> Message {
        let s = format!(
            "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
             From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x@y\r\n\
             CSeq: 1 {method}\r\nMax-Forwards: 70\r\n{extra}\r\n"
        );
        parse(Bytes::from(s)).unwrap()
    }

    #[test]
    fn validates() {
        assert!(validate(&msg("", "INVITE", "sip:a@b")).is_ok());
        assert!(validate(&msg("To: <sip:e@f>\r\n", "INVITE", "sip:a@b")).is_err());
        assert!(validate(&msg("Max-Forwards: 1\r\n", "INVITE", "sip:a@b")).is_err());
        assert!(validate(&msg("Via: SIP/2.0/UDP\r\n", "INVITE", "sip:a@b")).is_err());
        let e = validate(&msg("CSeq: 2 BYE\r\n", "INVITE", "sip:a@b")).unwrap_err();
        assert_eq!(e.to_string(), "Multiple CSeq headers");
        let r = parse(Bytes::from_static(
            b"SIP/2.0 099 x\r\nVia: SIP/2.0/UDP h\r\n\r\n",
        ))
        .unwrap();
        assert!(validate(&r).is_err());
    }

    /// A response's From and To are counted, not parsed, and its Vias
    /// below the top one not checked: it is relayed as it came, and a bad
    /// one reads as an error only where it is read.
    #[test]
    fn a_response_is_relayed_with_the_from_and_to_it_came_with() {
        let response = |to: &str| {
            parse(Bytes::from(format!(
                "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
                 From: <sip:a@b>;tag=1\r\n{to}Call-ID: x@y\r\nCSeq: 1 INVITE\r\n\r\n"
            )))
            .unwrap()
        };
        let bad = response("To: <sip:c@d;tag=2\r\n");
        assert!(validate(&bad).is_ok());
        assert!(bad.to().is_err());
        assert!(validate(&response("To: <sip:c@d>;tag=2\r\n")).is_ok());
        assert!(validate(&response("")).is_err());
        // Nor are the Vias below the top one (ours).
        let below = parse(Bytes::from_static(
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nVia: SIP/2.0/UDP\r\n\
              From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x@y\r\nCSeq: 1 INVITE\r\n\r\n",
        ))
        .unwrap();
        assert!(validate(&below).is_ok());
        assert!(validate(&response("To: <sip:c@d>\r\nTo: <sip:e@f>\r\n")).is_err());
        // A request's are parsed.
        let request = parse(Bytes::from_static(
            b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
              From: <sip:a@b>;tag=1\r\nTo: <sip:c@d\r\nCall-ID: x@y\r\nCSeq: 1 INVITE\r\n\r\n",
        ))
        .unwrap();
        assert!(validate(&request).is_err());
    }

    #[test]
    fn sanity() {
        assert!(sanity_check(&msg("", "OPTIONS", "sip:a@b")).is_ok());
        assert!(sanity_check(&msg("", "OPTIONS", "tel:+123")).is_ok());
        assert_eq!(
            sanity_check(&msg("", "OPTIONS", "http://x"))
                .unwrap_err()
                .code,
            416
        );
        let r =
            sanity_check(&msg("Proxy-Require: foo, bar\r\n", "OPTIONS", "sip:a@b")).unwrap_err();
        assert_eq!(r.code, 420);
        assert_eq!(
            r.headers,
            vec![(HeaderName::Unsupported, "foo, bar".to_string())]
        );
        assert!(sanity_check(&msg("Proxy-Require: foo\r\n", "CANCEL", "sip:a@b")).is_ok());
        let m = parse(Bytes::from_static(
            b"OPTIONS sip:a@b SIP/2.0\r\nMax-Forwards: x\r\n\r\n",
        ))
        .unwrap();
        assert_eq!(sanity_check(&m).unwrap_err().code, 400);
        // The first header missing, in the order Via, From, To, Call-ID,
        // CSeq; a Via line without an element holds none.
        for (text, missing) in [
            ("Via: , \r\nFrom: <sip:a@b>;tag=1\r\n", "Via"),
            ("Via: SIP/2.0/UDP h;branch=z9hG4bK1\r\nTo: <sip:a@b>\r\nCSeq: 1 OPTIONS\r\n", "From"),
            ("v: SIP/2.0/UDP h;branch=z9hG4bK1\r\nf: <sip:a@b>;tag=1\r\nt: <sip:c@d>\r\nCSeq: 1 OPTIONS\r\n", "Call-ID"),
        ] {
            let m = parse(Bytes::from(format!("OPTIONS sip:a@b SIP/2.0\r\n{text}\r\n"))).unwrap();
            let r = sanity_check(&m).unwrap_err();
            assert_eq!((r.code, r.reason.as_str()), (400, format!("Missing {missing} header").as_str()));
        }
    }
}
