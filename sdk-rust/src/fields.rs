//! Headers and body, one API for requests and responses.

use crate::bindings::wisp::proxy::sip;
use crate::{Error, Result};

/// The headers and body of one message (the `sip.fields` resource). A
/// [`Request`](crate::Request) or [`Response`](crate::Response) takes it
/// from the host once, at the first header call, and keeps it for the
/// hook; its methods are those of [`Message`].
pub struct Fields(sip::Fields);

impl Fields {
    pub(crate) fn new(raw: sip::Fields) -> Self {
        Fields(raw)
    }

    /// The raw resource, for calls the wrapper does not cover.
    pub fn raw(&self) -> &sip::Fields {
        &self.0
    }
}

/// Reading and editing the headers and body of a message, request or
/// response alike. Names are matched case-insensitively and compact forms
/// match their long forms ("f" finds "From"). The headers the host owns
/// (Via, Call-ID, CSeq, Content-Length, the From and To tags...) cannot be
/// edited: those calls give [`Error::NotAllowed`](crate::Error::NotAllowed).
pub trait Message {
    /// The message's [`Fields`], taken once and kept.
    fn fields(&self) -> &Fields;

    /// The first value of a header (`$hdr(Name)`): the first line's value,
    /// or the first element of a comma-separated list.
    fn header(&self, name: &str) -> Option<String> {
        self.fields().0.get(name)
    }

    /// Every value of a header in order, comma-separated lists split.
    fn header_values(&self, name: &str) -> Vec<String> {
        self.fields().0.get_all(name)
    }

    /// Whether the message has a header of that name (`is_present_hf`).
    fn has_header(&self, name: &str) -> bool {
        self.fields().0.has(name)
    }

    /// The names of all headers in order, as they are on the wire.
    fn header_names(&self) -> Vec<String> {
        self.fields().0.names()
    }

    /// Adds a header after the others (`append_hf("Name: value\r\n")`).
    fn append_header(&self, name: &str, value: &str) -> Result<()> {
        self.fields().0.append(name, value).map_err(Error::from)
    }

    /// Replaces every header of that name with one holding `value`.
    fn set_header(&self, name: &str, value: &str) -> Result<()> {
        self.fields().0.set(name, value).map_err(Error::from)
    }

    /// Removes every header of that name (`remove_hf`); how many there were.
    fn remove_header(&self, name: &str) -> Result<u32> {
        self.fields().0.remove(name).map_err(Error::from)
    }

    /// The body (`$rb`).
    fn body(&self) -> Vec<u8> {
        self.fields().0.body()
    }

    /// Replaces the body; with a content type, Content-Type too (None
    /// keeps the one there; an empty body removes it). Content-Length is
    /// the host's.
    fn set_body(&self, content_type: Option<&str>, body: &[u8]) -> Result<()> {
        self.fields()
            .0
            .set_body(content_type, body)
            .map_err(Error::from)
    }
}

impl Message for Fields {
    fn fields(&self) -> &Fields {
        self
    }
}
