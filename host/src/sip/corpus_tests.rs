//! Every RFC 4475 / RFC 5118 torture message in `tests/corpus`, with the
//! verdict `tests/corpus/README.md` gives it. A file without a verdict here
//! fails the test.
//!
//! Choices where the README leaves room:
//! - baddate, regbadct: valid (Date and Contact are not parsed by
//!   `validate`; a proxy forwards them unchanged).
//! - badaspec, baddn: invalid (To/From are parsed and are garbage).
//! - ipv6-bug-abnf-3-colons: invalid (":::" is not an IPv6 address).
//! - test.dat (no RFC section): invalid (its request line has no version).
//! - RFC 5118 files are stored with bare LF line ends while their
//!   Content-Lengths count CRLFs: they are judged in CRLF form, and the LF
//!   form must get the same verdict or "Content-Length exceeds body".
//! - ipv6-in-sdp declares more body than it carries (see
//!   `ValidButShortBody`).
//! - novelsc: parses and validates; `sanity_check` answers 416 since wisp
//!   routes only sip/sips/tel Request-URIs (RFC 4475 §3.3.2 allows this).

use std::path::Path;

use bytes::Bytes;

use super::{parse, sanity_check, validate, HeaderName};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Verdict {
    /// parse, validate and (for requests) sanity_check all pass.
    Valid,
    /// parse or validate fails.
    Invalid,
    /// parse fails (a subset of Invalid, asserted more precisely).
    ParseError,
    /// parse passes, validate fails.
    ValidateError,
    /// parse passes and sanity_check answers this code.
    Sanity(u16),
    /// parse and validate pass, sanity_check answers this code.
    ValidSanity(u16),
    /// ipv6-in-sdp: the RFC's text declares Content-Length 268 but carries a
    /// 251-byte body (with CRLFs), so parse must refuse it (RFC 3261 §18.3,
    /// as for clerr); with the length corrected it must be valid.
    ValidButShortBody,
    /// zeromf: valid with Max-Forwards 0 (the proxy answers 483).
    ZeroMaxForwards,
}

use Verdict::*;

const VERDICTS: &[(&str, Verdict)] = &[
    // RFC 4475 §3.1.1: valid.
    ("wsinv.dat", Valid),
    ("intmeth.dat", Valid),
    ("esc01.dat", Valid),
    ("escnull.dat", Valid),
    ("esc02.dat", Valid),
    ("lwsdisp.dat", Valid),
    ("longreq.dat", Valid),
    ("dblreq.dat", Valid),
    ("semiuri.dat", Valid),
    ("transports.dat", Valid),
    ("mpart01.dat", Valid),
    ("unreason.dat", Valid),
    ("noreason.dat", Valid),
    // §3.1.2: invalid.
    ("badinv01.dat", ValidateError),
    ("clerr.dat", ParseError),
    ("ncl.dat", ParseError),
    ("scalar02.dat", ValidateError),
    ("scalarlg.dat", ValidateError),
    ("quotbal.dat", ValidateError),
    ("ltgtruri.dat", ParseError),
    ("lwsruri.dat", ParseError),
    ("lwsstart.dat", ParseError),
    ("trws.dat", ParseError),
    ("escruri.dat", ParseError),
    ("baddate.dat", Valid),
    ("regbadct.dat", Valid),
    ("badaspec.dat", ValidateError),
    ("baddn.dat", ValidateError),
    ("badvers.dat", ParseError),
    ("mismatch01.dat", ValidateError),
    ("mismatch02.dat", ValidateError),
    ("bigcode.dat", ParseError),
    ("test.dat", Invalid),
    // §3.2 transaction layer.
    ("badbranch.dat", Valid),
    // §3.3 application layer.
    ("insuf.dat", Sanity(400)),
    ("unkscm.dat", ValidSanity(416)),
    ("novelsc.dat", ValidSanity(416)),
    ("unksm2.dat", Valid),
    ("bext01.dat", ValidSanity(420)),
    ("invut.dat", Valid),
    ("regaut01.dat", Valid),
    ("multi01.dat", ValidateError),
    ("mcl01.dat", ParseError),
    ("bcast.dat", Valid),
    ("zeromf.dat", ZeroMaxForwards),
    ("cparam01.dat", Valid),
    ("cparam02.dat", Valid),
    ("regescrt.dat", Valid),
    ("sdp01.dat", Valid),
    // §3.4 backward compatibility.
    ("inv2543.dat", Valid),
    // RFC 5118.
    ("ipv6-good", Valid),
    ("port-ambiguous", Valid),
    ("port-unambiguous", Valid),
    ("via-received-param-with-delim", Valid),
    ("ipv6-in-sdp", ValidButShortBody),
    ("mult-ip-in-header", Valid),
    ("mult-ip-in-sdp", Valid),
    ("ipv4-mapped-ipv6", Valid),
    ("ipv6-correct-abnf-2-colons", Valid),
    ("ipv6-bad", ParseError),
    ("via-received-param-no-delim", ValidateError),
    ("ipv6-bug-abnf-3-colons", ParseError),
];

/// What actually happened to a file, as a one-line summary; `Ok` when it
/// matches the verdict.
fn check(data: Bytes, verdict: Verdict) -> (bool, String) {
    if verdict == ValidButShortBody {
        let (ok, summary) = check(data.clone(), ParseError);
        let short = summary.contains("Content-Length exceeds body");
        let (fixed_ok, fixed) = check(fix_length(&data), Valid);
        return (
            ok && short && fixed_ok,
            format!("{summary}; length corrected: {fixed}"),
        );
    }
    let parsed = parse(data);
    let msg = match parsed {
        Err(e) => {
            let ok = matches!(verdict, Invalid | ParseError);
            return (ok, format!("parse error: {e}"));
        }
        Ok(m) => m,
    };
    // Every parsed message must also survive serialization and re-parse.
    let again = parse(msg.to_bytes());
    if again.is_err() {
        return (false, format!("re-parse failed: {:?}", again.err()));
    }
    let validated = validate(&msg);
    let sanity = sanity_check(&msg);
    let summary = format!(
        "parsed; validate: {}; sanity: {}",
        validated
            .as_ref()
            .map_or_else(|e| e.to_string(), |_| "ok".into()),
        sanity
            .as_ref()
            .map_or_else(|r| format!("{} {}", r.code, r.reason), |_| "ok".into()),
    );
    let ok = match verdict {
        Valid => validated.is_ok() && sanity.is_ok(),
        Invalid | ValidateError => validated.is_err(),
        ParseError | ValidButShortBody => false,
        Sanity(code) => sanity.as_ref().err().map(|r| r.code) == Some(code),
        ValidSanity(code) => {
            validated.is_ok() && sanity.as_ref().err().map(|r| r.code) == Some(code)
        }
        ZeroMaxForwards => {
            validated.is_ok() && sanity.is_ok() && matches!(msg.max_forwards(), Some(Ok(0)))
        }
    };
    (ok, summary)
}

fn to_crlf_if_bare(data: Vec<u8>) -> Vec<u8> {
    if data.contains(&b'\r') {
        data
    } else {
        to_crlf(&data)
    }
}

/// The message with its Content-Length set to the bytes after the headers.
fn fix_length(data: &[u8]) -> Bytes {
    let text = String::from_utf8_lossy(data);
    let Some(end) = text.find("\r\n\r\n") else {
        return Bytes::copy_from_slice(data);
    };
    let (head, body) = (&text[..end], &text[end + 4..]);
    let head: Vec<String> = head
        .split("\r\n")
        .map(|l| {
            if l.to_ascii_lowercase().starts_with("content-length:") {
                format!("Content-Length: {}", body.len())
            } else {
                l.to_string()
            }
        })
        .collect();
    Bytes::from(format!("{}\r\n\r\n{body}", head.join("\r\n")))
}

/// Bare LFs turned into CRLFs.
fn to_crlf(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 16);
    for &c in data {
        if c == b'\n' {
            out.push(b'\r');
        }
        out.push(c);
    }
    out
}

#[test]
fn corpus_verdicts() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut files = Vec::new();
    for dir in ["rfc4475", "rfc5118"] {
        let entries = std::fs::read_dir(root.join(dir)).expect("corpus directory");
        for e in entries {
            let path = e.expect("dir entry").path();
            if path.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut failures = Vec::new();
    let (mut valid, mut invalid) = (0, 0);
    for path in &files {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("?");
        let Some(&(_, verdict)) = VERDICTS.iter().find(|(f, _)| *f == name) else {
            failures.push(format!("{name}: no verdict in the table"));
            continue;
        };
        let raw = std::fs::read(path).expect("read corpus file");
        let (ok, summary) = if raw.contains(&b'\r') {
            check(Bytes::from(raw), verdict)
        } else {
            // The RFC 5118 messages come from the RFC's text, whose line
            // ends are bare LFs; their Content-Lengths count CRLFs, as on the
            // wire. Judge the CRLF form, and check that the LF form as stored
            // gets the same verdict or, where the LFs made the body shorter
            // than declared, the RFC 3261 §18.3 error for that.
            let crlf = to_crlf(&raw);
            let (ok, summary) = check(Bytes::from(crlf), verdict);
            let (lf_ok, lf_summary) = check(Bytes::from(raw), verdict);
            let short_body = lf_summary.contains("Content-Length exceeds body");
            (
                ok && (lf_ok || short_body),
                format!("{summary} (as stored with LF: {lf_summary})"),
            )
        };
        let kind = match verdict {
            Valid | ZeroMaxForwards | ValidSanity(_) | ValidButShortBody => {
                valid += 1;
                "valid"
            }
            Sanity(_) => {
                valid += 1;
                "valid syntax"
            }
            _ => {
                invalid += 1;
                "invalid"
            }
        };
        let status = if ok { "ok" } else { "FAIL" };
        println!("{name}: {kind} {verdict:?} ({status}) — {summary}");
        if !ok {
            failures.push(format!("{name}: expected {verdict:?}, got {summary}"));
        }
    }
    println!(
        "{} files: {valid} valid, {invalid} invalid, {} failing",
        files.len(),
        failures.len()
    );
    assert!(files.len() >= VERDICTS.len(), "corpus files missing");
    assert!(
        failures.is_empty(),
        "corpus failures:\n{}",
        failures.join("\n")
    );
}

#[test]
fn corpus_details() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let read = |p: &str| {
        parse(Bytes::from(to_crlf_if_bare(
            std::fs::read(root.join(p)).expect("read"),
        )))
    };
    // dblreq: only the first request counts.
    let m = read("rfc4475/dblreq.dat").expect("dblreq");
    assert_eq!(m.method().map(|m| m.as_str()), Some("REGISTER"));
    assert!(m.body().is_empty());
    // bext01: the 420 lists the Proxy-Require options.
    let m = read("rfc4475/bext01.dat").expect("bext01");
    let r = sanity_check(&m).expect_err("420");
    assert_eq!(
        r.headers[0].1,
        "noProxiesSupportThis, norDoAnyProxiesSupportThis"
    );
    // wsinv: folding, compact forms, odd whitespace.
    let m = read("rfc4475/wsinv.dat").expect("wsinv");
    assert_eq!(m.values(&HeaderName::Via).count(), 3);
    assert_eq!(m.cseq().expect("cseq").seq, 9);
    assert_eq!(m.max_forwards(), Some(Ok(68)));
    assert_eq!(m.to().expect("to").tag(), Some("1918181833n"));
    assert_eq!(m.from().expect("from").tag(), Some("98asjd8"));
    assert_eq!(m.body().len(), 150);
    // bcast: the broadcast Via parses (not sending there is the proxy's job).
    let m = read("rfc4475/bcast.dat").expect("bcast");
    assert_eq!(m.values(&HeaderName::Via).count(), 2);
    // RFC 5118 port forms.
    let m = read("rfc5118/port-unambiguous").expect("port");
    let uri = super::Uri::parse(m.uri().unwrap_or_default()).expect("uri");
    assert_eq!(uri.port, Some(5070));
    let m = read("rfc5118/port-ambiguous").expect("port");
    let uri = super::Uri::parse(m.uri().unwrap_or_default()).expect("uri");
    assert_eq!(uri.port, None);
}
