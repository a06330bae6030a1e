//! Arbitrary bytes through everything the SIP core does with network data.
//! Any panic is a bug.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use wisp::sip::{
    frame, parse, response_to, sanity_check, validate, HeaderName, NameAddr, Uri, Via,
};

fuzz_target!(|data: &[u8]| {
    let _ = frame(data);
    let Ok(msg) = parse(Bytes::copy_from_slice(data)) else {
        return;
    };
    let _ = validate(&msg);
    let _ = sanity_check(&msg);
    let _ = msg.top_via();
    let _ = msg.cseq();
    let _ = msg.from();
    let _ = msg.to();
    let _ = msg.max_forwards();
    if let Some(uri) = msg.uri() {
        let _ = Uri::parse(uri);
    }
    for h in msg.headers() {
        let v = h.value();
        let _ = Uri::parse(v);
        let _ = Via::parse(v);
        let _ = NameAddr::parse(v);
    }
    for v in msg.values(&HeaderName::Contact).chain(msg.values(&HeaderName::Route)) {
        let _ = NameAddr::parse(v);
    }
    // Serializing must give a message that parses again, the same way.
    let bytes = msg.to_bytes();
    let again = parse(bytes.clone()).expect("re-parse of to_bytes output");
    // parse refuses several Content-Length lines; to_bytes adds one if absent.
    let added = usize::from(msg.header(&HeaderName::ContentLength).is_none());
    assert_eq!(again.headers().len(), msg.headers().len() + added);
    assert_eq!(again.body(), msg.body());
    assert_eq!(frame(&bytes).expect("frame of to_bytes output"), Some(bytes.len()));
    let _ = response_to(&msg, 400, "Bad Request", Some("tag1"));
    // Editing with values taken from the message must not panic either.
    let mut m = msg.clone();
    let _ = m.remove_first_value(&HeaderName::Via);
    if let Some(v) = msg.header(&HeaderName::Via) {
        let _ = m.replace_first_value(&HeaderName::Via, v);
        let _ = m.prepend_header(HeaderName::Via, v);
    }
    let _ = m.to_bytes();
});
