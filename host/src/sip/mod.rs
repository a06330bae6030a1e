//! The SIP message core: parsing (RFC 3261 §7, §25), stream framing
//! (§18.3), typed header views, checks before routing and reply building.
//!
//! Messages are parsed over `bytes::Bytes`: headers are indexed once at
//! parse time and typed views (Via, From/To, CSeq, URIs) are parsed when
//! asked for. Nothing here panics on any input. Tested against the RFC 4475
//! and RFC 5118 torture messages (`corpus_tests.rs`) and fuzzed
//! (`host/fuzz`).

mod cseq;
mod error;
mod header_name;
mod message;
mod method;
mod name_addr;
mod parse;
mod response;
mod syntax;
mod uri;
mod validate;
mod values;
mod via;
pub mod write;

#[cfg(test)]
mod corpus_tests;

pub use cseq::CSeq;
pub use error::ParseError;
pub use header_name::HeaderName;
pub use message::{Header, Message, StartLine, Text};
pub use method::Method;
pub use name_addr::NameAddr;
pub use parse::{frame, frame_within, parse, MAX_HEADER_BYTES, MAX_STREAM_BODY};
pub use response::{reason_phrase, response_to};
pub use syntax::{has_control, is_token, mentions};
pub use uri::{Host, Scheme, Uri};
pub use validate::{sanity_check, validate, Rejection};
pub use values::split_list;
pub use via::Via;
