//! The branch parameter of every request wisp sends (RFC 3261 §16.6 step
//! 8): unique, unforgeable, and carrying the loop-detection hash of §16.3
//! step 4.
//!
//! A branch reads `z9hG4bKwsp` ID `.` LOOP `.` MAC:
//! - ID names the transaction: the shard and a counter for a relayed
//!   request, a keyed hash of the request for a stateless forward (so that
//!   its retransmissions, CANCEL and ACK get the same branch);
//! - LOOP hashes what routes the request as it was received (Request-URI,
//!   tags, Call-ID, CSeq number, top Route, Proxy-Require,
//!   Proxy-Authorization): a request that comes back with one of our Vias
//!   whose LOOP equals its own has looped; with another LOOP it spirals
//!   (its Request-URI was changed), which is allowed;
//! - MAC is keyed with the process secret over ID, LOOP and the Via below
//!   ours (where the response to it goes). A branch cannot be guessed from
//!   another one, and a response is relayed by Via only when its Via was
//!   put there by us above the very Via it is going to: a stray response
//!   cannot make wisp send to an address of the attacker's choosing.

use std::borrow::Cow;
use std::hash::{Hash, Hasher};

use hex::FromHex;

use crate::transaction::hash::process_hasher;

use crate::sip::{write, HeaderName, Message, Via};

use super::secret;

/// What starts every branch of ours: the RFC 3261 magic cookie and a mark.
pub const PREFIX: &str = "z9hG4bKwsp";
/// Bytes of MAC in a branch: 64 bits, beyond guessing while a
/// transaction lives.
const MAC_BYTES: usize = 8;

/// The loop hash of a request as received (RFC 3261 §16.6 step 8).
pub fn loop_hash(msg: &Message) -> u32 {
    let mut h = process_hasher();
    msg.uri().hash(&mut h);
    // The tags compare case-insensitively: hashed lowercased, byte by
    // byte, without a lowercased copy.
    for to in [true, false] {
        let header = if to { msg.to() } else { msg.from() };
        match header.ok().and_then(|n| n.tag()) {
            Some(tag) => {
                h.write_u8(1);
                for b in tag.bytes() {
                    h.write_u8(b.to_ascii_lowercase());
                }
                h.write_u8(0xff);
            }
            None => h.write_u8(0),
        }
    }
    msg.call_id().hash(&mut h);
    msg.cseq().ok().map(|c| c.seq).hash(&mut h);
    msg.values(&HeaderName::Route).next().hash(&mut h);
    for name in [HeaderName::ProxyRequire, HeaderName::ProxyAuthorization] {
        for line in msg.header_lines(&name) {
            line.hash(&mut h);
        }
    }
    let full = h.finish();
    (full ^ (full >> 32)) as u32
}

/// Our branch for a request named `id` (no dots), whose loop hash is
/// `loop_hash`, sent with our Via above `below` (the request's top Via as
/// it arrived, received and rport stamped).
pub fn make(id: &str, loop_hash: u32, below: Option<&Via>) -> String {
    let mut loop_hex = [0u8; 8];
    hex::encode_to_slice(loop_hash.to_be_bytes(), &mut loop_hex).unwrap_or_default();
    let anchor = anchor(below);
    let mac = secret::mac(&[id.as_bytes(), &loop_hex, anchor.as_bytes()]);
    let mut mac_hex = [0u8; 2 * MAC_BYTES];
    hex::encode_to_slice(&mac[..MAC_BYTES], &mut mac_hex).unwrap_or_default();
    let mut branch = String::with_capacity(PREFIX.len() + id.len() + 2 + 8 + 2 * MAC_BYTES);
    for part in [
        PREFIX.as_bytes(),
        id.as_bytes(),
        b".",
        &loop_hex,
        b".",
        &mac_hex,
    ] {
        // Hex digits, the prefix and an id of ours: ASCII.
        branch.push_str(std::str::from_utf8(part).unwrap_or_default());
    }
    branch
}

/// Whether `branch` (one of ours) names a relayed request's client
/// transaction, rather than a stateless forward: its id is `SHARD-SEQ`.
pub fn is_relayed(branch: &str) -> bool {
    shard_of(branch).is_some()
}

/// The shard a branch of a relayed request names (`SHARD-SEQ`), read
/// without checking the MAC: the shard checks it when it matches the
/// response (a forged number only reaches a shard where nothing matches).
pub fn shard_of(branch: &str) -> Option<usize> {
    let prefix = branch.get(..PREFIX.len())?;
    if !prefix.eq_ignore_ascii_case(PREFIX) {
        return None;
    }
    let id = branch[PREFIX.len()..].split('.').next()?;
    let (shard, _) = id.split_once('-')?;
    if shard.is_empty() || !shard.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    shard.parse().ok()
}

/// The id of a stateless forward: the same for the same request (its
/// retransmissions, and a CANCEL or non-2xx ACK of an INVITE) and
/// different for others, keyed so that it tells nothing.
pub fn stateless_id(msg: &Message) -> String {
    let mut h = process_hasher();
    msg.uri().hash(&mut h);
    match msg
        .top_via()
        .ok()
        .and_then(|v| v.branch().map(str::to_owned))
    {
        Some(branch) if branch.starts_with("z9hG4bK") => branch.hash(&mut h),
        // RFC 2543 peers: the transaction is named by these (§17.2.3).
        _ => {
            msg.call_id().hash(&mut h);
            msg.cseq().ok().map(|c| c.seq).hash(&mut h);
            msg.from()
                .ok()
                .and_then(|f| f.tag().map(str::to_owned))
                .hash(&mut h);
            msg.header(&HeaderName::Via).hash(&mut h);
        }
    }
    let mac = secret::mac(&[b"stateless", &h.finish().to_be_bytes()]);
    write::hex(&mac[..8])
}

/// The loop hash of `branch` when it is ours, put above `below`; None for
/// a branch we did not make (another element's, forged, or from before a
/// restart).
pub fn verify(branch: &str, below: Option<&Via>) -> Option<u32> {
    let rest = branch
        .get(..PREFIX.len())
        .filter(|p| p.eq_ignore_ascii_case(PREFIX))?;
    let rest = &branch[rest.len()..];
    let (rest, mac) = rest.rsplit_once('.')?;
    let (id, loop_hex) = rest.rsplit_once('.')?;
    if loop_hex.len() != 8 || mac.len() != 2 * MAC_BYTES {
        return None;
    }
    let tag = <[u8; MAC_BYTES]>::from_hex(mac).ok()?;
    // Branches compare case-insensitively (RFC 3261 §7.3.1); ours are
    // written in lower case, and nearly always come back so.
    let (id, loop_hex) = (lower(id), lower(loop_hex));
    let anchor = anchor(below);
    secret::verify(
        &[id.as_bytes(), loop_hex.as_bytes(), anchor.as_bytes()],
        &tag,
    )
    .then(|| u32::from_str_radix(&loop_hex, 16).ok())
    .flatten()
}

/// Whether the request was forwarded by us before with the same loop
/// hash: one of its Vias (any, a loop may take several hops) is ours and
/// records `loop_hash` (RFC 3261 §16.3 step 4).
pub fn has_looped(msg: &Message, loop_hash: u32) -> bool {
    // Most requests carry no Via of ours: found without allocating, nor
    // splitting the lines into values (the prefix holds no comma).
    if !msg
        .header_lines(&HeaderName::Via)
        .any(|line| crate::sip::mentions(line, PREFIX))
    {
        return false;
    }
    let parsed: Vec<Option<Via>> = msg
        .values(&HeaderName::Via)
        .map(|v| Via::parse(v).ok())
        .collect();
    parsed.iter().enumerate().any(|(i, via)| {
        via.as_ref()
            .and_then(|via| via.branch())
            .filter(|b| b.len() > PREFIX.len())
            .and_then(|b| verify(b, parsed.get(i + 1).and_then(Option::as_ref)))
            == Some(loop_hash)
    })
}

/// `text` in lower case, copied only when it is not already.
fn lower(text: &str) -> Cow<'_, str> {
    if text.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(text.to_ascii_lowercase())
    } else {
        Cow::Borrowed(text)
    }
}

/// What the MAC binds of the Via below ours: everything that says where a
/// response goes, and the branch that names the previous hop's transaction.
/// Written without `fmt` (three per call); each parameter value is
/// length-prefixed so that no Via's anchor can pass for another's.
fn anchor(below: Option<&Via>) -> String {
    let Some(via) = below else {
        return String::new();
    };
    // One allocation: the transport and host case-folded in place.
    let mut anchor = String::with_capacity(128);
    anchor.push_str(&via.transport);
    anchor.make_ascii_uppercase();
    anchor.push('|');
    let host = anchor.len();
    via.host.push_to(&mut anchor);
    anchor[host..].make_ascii_lowercase();
    anchor.push('|');
    write::push_decimal(&mut anchor, u64::from(via.port.unwrap_or(0)));
    // The three parameters in one pass over them; the first of each name
    // counts, as `Via::param` finds it.
    const NAMES: [&str; 3] = ["received", "rport", "branch"];
    let mut found: [Option<Option<&str>>; 3] = [None; 3];
    for (name, value) in via.params() {
        if let Some(i) = (0..3).find(|&i| found[i].is_none() && name.eq_ignore_ascii_case(NAMES[i]))
        {
            found[i] = Some(value);
        }
    }
    for param in found {
        anchor.push('|');
        match param {
            None => anchor.push('-'),
            Some(value) => {
                let value = value.unwrap_or("");
                write::push_decimal(&mut anchor, value.len() as u64);
                anchor.push(':');
                anchor.push_str(value);
            }
        }
    }
    anchor
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip;

    fn via(text: &str) -> Via {
        Via::parse(text).expect("via")
    }

    fn request(uri: &str, vias: &[&str]) -> Message {
        let mut text = format!("INVITE {uri} SIP/2.0\r\n");
        for v in vias {
            text.push_str(&format!("Via: {v}\r\n"));
        }
        text.push_str(
            "From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>\r\n\
             Call-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
        );
        sip::parse(bytes::Bytes::from(text)).expect("parse")
    }

    #[test]
    fn a_branch_is_ours_only_above_the_via_it_was_made_for() {
        let below = via("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKa;rport=5060;received=192.0.2.1");
        let b = make("3-17", 0xdead_beef, Some(&below));
        assert!(b.starts_with(PREFIX), "{b}");
        assert_eq!(verify(&b, Some(&below)), Some(0xdead_beef));
        assert_eq!(
            verify(&b.to_ascii_uppercase(), Some(&below)),
            Some(0xdead_beef)
        );
        // The same branch above another Via: a stray response rewritten
        // to send us elsewhere.
        let elsewhere = via("SIP/2.0/TCP 10.0.0.5:6379;branch=z9hG4bKa");
        assert_eq!(verify(&b, Some(&elsewhere)), None);
        assert_eq!(verify(&b, None), None);
        // Another counter with the same MAC, a guessed MAC, another's branch.
        assert_eq!(verify(&b.replacen("3-17", "3-18", 1), Some(&below)), None);
        let mut guessed = b.clone();
        guessed.pop();
        guessed.push('0');
        let mut other = guessed.clone();
        other.pop();
        other.push('1');
        assert!(verify(&guessed, Some(&below)).is_none() || verify(&other, Some(&below)).is_none());
        assert_eq!(verify("z9hG4bKwsp", Some(&below)), None);
        assert_eq!(verify("z9hG4bK776asdhds", Some(&below)), None);
    }

    #[test]
    fn the_shard_comes_from_our_relayed_branches_only() {
        assert_eq!(
            shard_of("z9hG4bKwsp17-3.0a0b0c0d.0011223344556677"),
            Some(17)
        );
        assert_eq!(shard_of("Z9HG4BKWSP0-1.0a0b0c0d.00"), Some(0));
        // A stateless forward's id is a hash: no shard.
        assert_eq!(shard_of("z9hG4bKwspa1b2c3d4e5f6.0a0b0c0d.00"), None);
        assert_eq!(shard_of("z9hG4bK-other-1"), None);
        assert_eq!(shard_of("z9hG4bKwsp-1.x.y"), None);
        assert_eq!(shard_of("z9hG4bKwsp+1-2.x.y"), None);
        assert_eq!(shard_of("z9hG4"), None);
        let made = make("5-9", 1, None);
        assert_eq!(shard_of(&made), Some(5));
        assert!(is_relayed(&made));
        assert!(!is_relayed(&make("a1b2", 1, None)));
    }

    #[test]
    fn a_request_back_with_our_via_and_its_hash_has_looped_and_a_spiral_has_not() {
        let first = request(
            "sip:bob@example.com",
            &["SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKa"],
        );
        let hash = loop_hash(&first);
        let below = first.top_via().expect("via");
        let ours = format!(
            "SIP/2.0/UDP 192.0.2.9;branch={}",
            make("0-1", hash, Some(below))
        );
        let back = request(
            "sip:bob@example.com",
            &[
                "SIP/2.0/UDP 192.0.2.7;branch=z9hG4bKz",
                &ours,
                "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKa",
            ],
        );
        assert_eq!(loop_hash(&back), hash);
        assert!(has_looped(&back, loop_hash(&back)));
        // A spiral: the Request-URI was changed on the way.
        let spiral = request(
            "sip:bob@192.0.2.50",
            &[
                "SIP/2.0/UDP 192.0.2.7;branch=z9hG4bKz",
                &ours,
                "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKa",
            ],
        );
        assert!(!has_looped(&spiral, loop_hash(&spiral)));
        // Our Via moved above another Via does not count.
        let moved = request(
            "sip:bob@example.com",
            &[&ours, "SIP/2.0/UDP 192.0.2.66;branch=z9hG4bKq"],
        );
        assert!(!has_looped(&moved, loop_hash(&moved)));
    }
}
