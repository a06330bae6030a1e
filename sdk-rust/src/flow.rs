//! What a hook returns: go on, or stop with a decision or a failure.

use std::fmt;

use crate::bindings::wisp::proxy::sip::{self, Action, Header, Relay, Reply};

/// The result of a host call that can fail.
pub type Result<T, E = Error> = core::result::Result<T, E>;

/// What a route or sub-route returns: `Ok(())` goes on (Kamailio's
/// `return`, or the end of a route), `Err(exit)` stops every caller up to
/// the hook (Kamailio's `exit`), which then does what `exit` holds.
pub type Flow = core::result::Result<(), Exit>;

/// Why a hook stops early: it decided, or something failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// The request is answered, relayed, forwarded or dropped.
    Decided(Action),
    /// A host call failed: logged, then answered 500 in `route`, the best
    /// response sent upstream in `on_failure`.
    Failed(Error),
}

/// Why a host call did not do what it was asked (the WIT's `sip.error`,
/// with a readable `Display`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// An argument was not acceptable: a malformed URI, a header name that
    /// is not a token, CR or LF in a value. The text says which.
    Invalid(String),
    /// Not allowed here: a header the host owns, a call the current hook
    /// may not make, or one past a limit of the tenant (named in the text).
    NotAllowed(String),
    /// A service could not answer: its storage failed or is busy.
    Unavailable(String),
    /// The request is refused, and this is the reply it calls for; `?`
    /// in a hook answers it.
    Refused(Reply),
}

impl From<sip::Error> for Error {
    fn from(err: sip::Error) -> Self {
        match err {
            sip::Error::Invalid(m) => Error::Invalid(m),
            sip::Error::NotAllowed(m) => Error::NotAllowed(m),
            sip::Error::Unavailable(m) => Error::Unavailable(m),
            sip::Error::Refused(reply) => Error::Refused(reply),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Invalid(m) => write!(f, "invalid argument: {m}"),
            Error::NotAllowed(m) => write!(f, "not allowed: {m}"),
            Error::Unavailable(m) => write!(f, "unavailable: {m}"),
            Error::Refused(reply) => write!(f, "refused: {reply}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<sip::Error> for Exit {
    fn from(err: sip::Error) -> Self {
        Error::from(err).into()
    }
}

impl From<Error> for Exit {
    /// A refusal is answered with the reply it carries (Kamailio's
    /// `if (!check()) { sl_send_reply(...); exit; }`); anything else is a
    /// failure.
    fn from(err: Error) -> Self {
        match err {
            Error::Refused(reply) => Exit::Decided(Action::Reply(reply)),
            other => Exit::Failed(other),
        }
    }
}

impl From<Reply> for Exit {
    fn from(reply: Reply) -> Self {
        Exit::Decided(Action::Reply(reply))
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reason {
            Some(reason) => write!(f, "{} {reason}", self.code),
            None => write!(f, "{}", self.code),
        }
    }
}

impl Reply {
    /// A reply with this code and reason phrase and no extra headers.
    pub fn new(code: u16, reason: &str) -> Self {
        Reply {
            code,
            reason: Some(reason.to_owned()),
            headers: Vec::new(),
        }
    }

    /// The same reply with one more header.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push(Header {
            name: name.to_owned(),
            value: value.to_owned(),
        });
        self
    }
}

impl Default for Relay {
    /// To the destination `lookup` or `loose_route` set, else the first
    /// Route, else the Request-URI, with the tenant's timeouts.
    fn default() -> Self {
        Relay {
            destination: None,
            invite_timeout_ms: None,
            final_timeout_ms: None,
        }
    }
}
