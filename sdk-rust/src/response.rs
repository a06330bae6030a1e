//! A response a relayed branch received, as the reply and failure hooks see it.

use crate::bindings::wisp::proxy::types;
use crate::Result;

/// A response of one branch of the transaction. Reading is lazy on the host
/// side; edits change the response that goes upstream.
pub struct Response<'a> {
    raw: &'a types::Response,
}

impl<'a> Response<'a> {
    pub(crate) fn new(raw: &'a types::Response) -> Self {
        Response { raw }
    }

    /// The raw resource, for calls the wrapper does not cover.
    pub fn raw(&self) -> &types::Response {
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

    /// Whether the status is one of `codes` (`t_check_status("486|408")`).
    pub fn is_status(&self, codes: &[u16]) -> bool {
        let status = self.raw.status();
        codes.contains(&status)
    }

    /// The first value of a header (`$hdr(Name)`); compact names work too.
    pub fn header(&self, name: &str) -> Option<String> {
        self.raw.header(name)
    }

    /// Every value of a header, comma-separated lists split.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.raw.header_values(name)
    }

    /// The names of all headers in order.
    pub fn header_names(&self) -> Vec<String> {
        self.raw.header_names()
    }

    /// Appends a header (`append_hf` in an `onreply_route`).
    pub fn append_header(&self, name: &str, value: &str) -> Result<()> {
        Ok(self.raw.append_header(name, value)?)
    }

    /// Removes every header of that name (`remove_hf`); returns how many.
    pub fn remove_header(&self, name: &str) -> u32 {
        self.raw.remove_header(name)
    }

    /// The body (`$rb`).
    pub fn body(&self) -> Vec<u8> {
        self.raw.body()
    }
}
