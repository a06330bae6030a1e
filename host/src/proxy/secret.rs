//! The secret of this process, and MACs keyed with it: what wisp writes
//! into a message and must recognise later (flow tokens, branch
//! parameters, Record-Route integrity) carries a MAC that no peer can
//! make. Nothing keyed with it outlives a restart, as nothing it protects
//! does (flows, transactions) or it is checked leniently (Record-Route).

use std::sync::OnceLock;

use hex::FromHex;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// HMAC-SHA256 over `parts`, each one length-prefixed so that moving a
/// byte from one part to the next changes the MAC.
pub fn mac(parts: &[&[u8]]) -> [u8; 32] {
    keyed(parts).finalize().into_bytes().into()
}

/// Whether `tag` is the start of the MAC over `parts` (compared in
/// constant time). An empty tag is never valid.
pub fn verify(parts: &[&[u8]], tag: &[u8]) -> bool {
    !tag.is_empty() && keyed(parts).verify_truncated_left(tag).is_ok()
}

/// The integrity parameter (`ri`) of the Record-Route entries we add to
/// a dialog named `call_id`: proof, when the entry comes back in a Route,
/// that we record-routed this very dialog (64 bits, hex).
pub fn route_tag(call_id: &str) -> String {
    crate::sip::write::hex(&mac(&[b"record-route", call_id.as_bytes()])[..8])
}

/// Whether `tag` is the integrity parameter of our Record-Route for
/// the dialog `call_id`.
pub fn route_tag_valid(call_id: &str, tag: &str) -> bool {
    <[u8; 8]>::from_hex(tag).is_ok_and(|tag| verify(&[b"record-route", call_id.as_bytes()], &tag))
}

fn keyed(parts: &[&[u8]]) -> Hmac<Sha256> {
    // The key's inner and outer pads are hashed once per process: a copy
    // of that state saves two SHA-256 blocks per MAC (several per call).
    static KEYED: OnceLock<Hmac<Sha256>> = OnceLock::new();
    let mut mac = KEYED
        .get_or_init(|| {
            // A key of any length is accepted: this cannot fail.
            <Hmac<Sha256> as Mac>::new_from_slice(secret()).unwrap_or_else(|_| unreachable!())
        })
        .clone();
    for part in parts {
        mac.update(&(part.len() as u32).to_be_bytes());
        mac.update(part);
    }
    mac
}

/// The process's secret, made on first use.
fn secret() -> &'static [u8; 32] {
    static SECRET: OnceLock<[u8; 32]> = OnceLock::new();
    SECRET.get_or_init(crate::random::seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mac_verifies_its_parts_only() {
        let tag = mac(&[b"ab", b"c"]);
        assert!(verify(&[b"ab", b"c"], &tag[..10]));
        assert!(!verify(&[b"a", b"bc"], &tag[..10]));
        assert!(!verify(&[b"ab", b"c"], &[]));
        let mut bad = tag;
        bad[0] ^= 1;
        assert!(!verify(&[b"ab", b"c"], &bad[..10]));
    }
}
