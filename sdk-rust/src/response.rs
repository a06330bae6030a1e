//! A response a relayed branch received, as the reply and failure hooks see it.

use std::cell::OnceCell;

use crate::bindings::wisp::proxy::sip;
use crate::{Endpoint, Fields, Message};

/// A response of one branch of the transaction. Reading is lazy on the
/// host side; edits change the response that goes upstream. Headers and
/// body: see [`Message`].
pub struct Response<'a> {
    raw: &'a sip::Response,
    fields: OnceCell<Fields>,
}

impl<'a> Response<'a> {
    pub(crate) fn new(raw: &'a sip::Response) -> Self {
        Response {
            raw,
            fields: OnceCell::new(),
        }
    }

    /// The raw resource, for calls the wrapper does not cover.
    pub fn raw(&self) -> &sip::Response {
        self.raw
    }

    /// The status code (`$rs`), e.g. 486.
    pub fn status(&self) -> u16 {
        self.raw.status()
    }

    /// The reason phrase (`$rr`).
    pub fn reason(&self) -> String {
        self.raw.reason()
    }

    /// The address it came from (`$si`, `$sp` in an `onreply_route`).
    pub fn source(&self) -> Endpoint {
        self.raw.source()
    }
}

impl Message for Response<'_> {
    fn fields(&self) -> &Fields {
        self.fields.get_or_init(|| Fields::new(self.raw.fields()))
    }
}
