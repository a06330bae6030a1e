//! The CSeq header value (RFC 3261 §20.16, §8.1.1.5).

use std::fmt;

use super::error::ParseError;
use super::method::Method;
use super::syntax::{is_token, parse_u32};

/// `CSeq: seq METHOD`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

impl CSeq {
    /// Parses "number LWS method"; the number must be below 2^31
    /// (RFC 3261 §8.1.1.5; RFC 4475 scalar02/scalarlg).
    pub fn parse(value: &str) -> Result<CSeq, ParseError> {
        let mut parts = value.split([' ', '\t']).filter(|p| !p.is_empty());
        let (Some(seq), Some(method), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(ParseError::bad_header("CSeq", "expected number and method"));
        };
        let seq = parse_u32(seq)
            .filter(|&n| n < 1 << 31)
            .ok_or_else(|| ParseError::bad_header("CSeq", "bad sequence number"))?;
        if !is_token(method) {
            return Err(ParseError::bad_header("CSeq", "bad method"));
        }
        Ok(CSeq {
            seq,
            method: Method::parse(method),
        })
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let c = CSeq::parse("0009 INVITE").unwrap();
        assert_eq!((c.seq, c.method.clone()), (9, Method::Invite));
        assert_eq!(c.to_string(), "9 INVITE");
        assert!(CSeq::parse("36893488147419103232 REGISTER").is_err());
        assert!(CSeq::parse("2147483648 INVITE").is_err());
        assert!(CSeq::parse("2147483647 INVITE").is_ok());
        assert!(CSeq::parse("1").is_err());
        assert!(CSeq::parse("1 INVITE x").is_err());
        assert!(CSeq::parse("-1 INVITE").is_err());
        assert!(CSeq::parse("1 IN<VITE").is_err());
    }
}
