//! The one error type of the SIP core.

use std::borrow::Cow;

/// Why a message, header or URI was refused.
///
/// `Display` is a short, one-line, ASCII reason that can be used as the
/// reason phrase of a 400 reply ("Bad Via header: missing sent-by").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct ParseError {
    reason: Cow<'static, str>,
}

impl ParseError {
    /// An error with a fixed reason.
    pub fn new(reason: &'static str) -> ParseError {
        ParseError {
            reason: Cow::Borrowed(reason),
        }
    }

    /// An error with a computed reason; anything that is not printable ASCII
    /// is replaced so the reason stays usable as a SIP reason phrase.
    pub fn owned(reason: String) -> ParseError {
        let clean: String = reason
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() || c == ' ' {
                    c
                } else {
                    '?'
                }
            })
            .take(120)
            .collect();
        ParseError {
            reason: Cow::Owned(clean),
        }
    }

    /// The reason text (same as `Display`).
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// "Bad <what> header: <why>".
    pub(super) fn bad_header(what: &str, why: &str) -> ParseError {
        ParseError::owned(format!("Bad {what} header: {why}"))
    }

    /// "Missing <what> header".
    pub(super) fn missing(what: &str) -> ParseError {
        ParseError::owned(format!("Missing {what} header"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_one_line_ascii() {
        let e = ParseError::owned("bad\r\nthing \u{e9}".to_string());
        assert_eq!(e.to_string(), "bad??thing ?");
        assert_eq!(
            ParseError::missing("CSeq").to_string(),
            "Missing CSeq header"
        );
    }
}
