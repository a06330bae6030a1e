//! The `fields` resource of the WIT: the headers and body of the request
//! or response a hook works on, with one implementation for both, and one
//! rule for the headers the host owns.
//!
//! A `fields` handle takes no slot in the store's resource table: its rep
//! names the message it belongs to (that message's table rep, and whether
//! it is the request or the response) and the hook call it was taken in.
//! Handles are made on every header access of a route, so this keeps them
//! free; and a handle kept past its hook call traps when used, instead of
//! reading whichever message sits at that table slot now.

use wasmtime::component::Resource;
use wasmtime::Result;

use super::call::{HostState, ResponseCtx};
use super::wisp::proxy::sip as wit;
use crate::proxy::{checks, RequestCtx};
use crate::sip::{HeaderName, Message};

/// The type of a `fields` handle. Never made: the handle's rep is all
/// there is (see the module's doc).
pub struct Fields {
    _never: (),
}

/// Bits of a rep that hold the parent message's table rep.
const PARENT_BITS: u32 = 12;
/// The bit set for a response's fields.
const RESPONSE_BIT: u32 = 1 << PARENT_BITS;
/// Where the hook call's generation starts.
const GENERATION_SHIFT: u32 = PARENT_BITS + 1;
/// The generation bits a rep keeps: a handle is told stale until the
/// counter comes round again, 2^19 hook calls of the same instance later.
pub(super) const GENERATION_MASK: u32 = u32::MAX >> GENERATION_SHIFT;

/// The message a `fields` handle belongs to: a table rep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Parent {
    Request(u32),
    Response(u32),
}

/// The rep of a handle on `parent` for the hook call `generation`; none
/// when the parent's table rep does not fit (a store holding thousands of
/// resources: a guest leaking WASI handles).
pub(super) fn encode(parent: Parent, generation: u32) -> Option<u32> {
    let (rep, kind) = match parent {
        Parent::Request(rep) => (rep, 0),
        Parent::Response(rep) => (rep, RESPONSE_BIT),
    };
    (rep < (1 << PARENT_BITS))
        .then_some(((generation & GENERATION_MASK) << GENERATION_SHIFT) | kind | rep)
}

/// The parent and generation a rep names.
pub(super) fn decode(rep: u32) -> (Parent, u32) {
    let parent_rep = rep & (RESPONSE_BIT - 1);
    let parent = if rep & RESPONSE_BIT == 0 {
        Parent::Request(parent_rep)
    } else {
        Parent::Response(parent_rep)
    };
    (parent, rep >> GENERATION_SHIFT)
}

/// Headers only the host writes: those that tie a message to its
/// transaction and dialog (Via, From and To with their tags, Call-ID,
/// CSeq), Content-Length (the body's), and Record-Route (`record-route`
/// writes it with this proxy's address and integrity tag). The same on
/// requests, responses and replies.
pub(super) fn host_owned(name: &HeaderName) -> bool {
    matches!(
        name,
        HeaderName::Via
            | HeaderName::From
            | HeaderName::To
            | HeaderName::CallId
            | HeaderName::CSeq
            | HeaderName::ContentLength
            | HeaderName::RecordRoute
    )
}

/// Checks a header a guest writes: a token name, a one-line value, and a
/// header the host does not own.
pub(super) fn check_header(name: &str, value: &str) -> Result<HeaderName, wit::Error> {
    checks::header_field(name, value).map_err(wit::Error::Invalid)?;
    let parsed = HeaderName::parse(name);
    if host_owned(&parsed) {
        return Err(not_owned(&parsed));
    }
    Ok(parsed)
}

fn not_owned(name: &HeaderName) -> wit::Error {
    wit::Error::NotAllowed(format!("{} is written by the host only", name.as_str()))
}

impl HostState {
    /// A handle on the fields of the message at `parent`.
    pub(super) fn fields_handle(&self, parent: Parent) -> Result<Resource<Fields>> {
        let rep = encode(parent, self.generation).ok_or_else(|| {
            wasmtime::Error::msg("too many resources held: cannot hand out a fields handle")
        })?;
        Ok(Resource::new_own(rep))
    }

    /// The message a handle names, if it was taken in this hook call.
    fn fields_msg(&self, handle: &Resource<Fields>) -> Result<&Message> {
        match self.fields_parent(handle)? {
            Parent::Request(rep) => Ok(&self
                .table
                .get(&Resource::<RequestCtx>::new_borrow(rep))?
                .msg),
            Parent::Response(rep) => Ok(&self
                .table
                .get(&Resource::<ResponseCtx>::new_borrow(rep))?
                .msg),
        }
    }

    fn fields_msg_mut(&mut self, handle: &Resource<Fields>) -> Result<&mut Message> {
        match self.fields_parent(handle)? {
            Parent::Request(rep) => Ok(&mut self
                .table
                .get_mut(&Resource::<RequestCtx>::new_borrow(rep))?
                .msg),
            Parent::Response(rep) => Ok(&mut self
                .table
                .get_mut(&Resource::<ResponseCtx>::new_borrow(rep))?
                .msg),
        }
    }

    fn fields_parent(&self, handle: &Resource<Fields>) -> Result<Parent> {
        let (parent, generation) = decode(handle.rep());
        if generation != self.generation & GENERATION_MASK {
            return Err(wasmtime::Error::msg(
                "a fields handle was used after the hook call it was taken in",
            ));
        }
        Ok(parent)
    }

    /// Takes one header of `name: value` from the hook's caps and writes it
    /// with `write`, after the checks every header a guest writes passes.
    fn write_header(
        &mut self,
        handle: &Resource<Fields>,
        name: &str,
        value: &str,
        replace: bool,
    ) -> Result<Result<(), wit::Error>> {
        self.fields_msg(handle)?;
        let parsed = match check_header(name, value) {
            Ok(parsed) => parsed,
            Err(err) => return Ok(Err(err)),
        };
        if let Err(err) = self.spend_text(1, name.len() + value.len()) {
            return Ok(Err(err));
        }
        let msg = self.fields_msg_mut(handle)?;
        if replace {
            msg.remove_headers(&parsed);
        }
        Ok(msg
            .append_header(parsed, value)
            .map_err(|e| wit::Error::Invalid(e.to_string())))
    }
}

impl wit::HostFields for HostState {
    fn get(&mut self, fields: Resource<Fields>, name: String) -> Result<Option<String>> {
        let msg = self.fields_msg(&fields)?;
        Ok(msg
            .values(&HeaderName::parse(&name))
            .next()
            .map(str::to_owned))
    }

    fn get_all(&mut self, fields: Resource<Fields>, name: String) -> Result<Vec<String>> {
        let msg = self.fields_msg(&fields)?;
        Ok(msg
            .values(&HeaderName::parse(&name))
            .map(str::to_owned)
            .collect())
    }

    fn has(&mut self, fields: Resource<Fields>, name: String) -> Result<bool> {
        let msg = self.fields_msg(&fields)?;
        Ok(msg.header(&HeaderName::parse(&name)).is_some())
    }

    fn names(&mut self, fields: Resource<Fields>) -> Result<Vec<String>> {
        let msg = self.fields_msg(&fields)?;
        Ok(msg
            .headers()
            .iter()
            .map(|h| h.raw_name().to_owned())
            .collect())
    }

    fn append(
        &mut self,
        fields: Resource<Fields>,
        name: String,
        value: String,
    ) -> Result<Result<(), wit::Error>> {
        self.write_header(&fields, &name, &value, false)
    }

    fn set(
        &mut self,
        fields: Resource<Fields>,
        name: String,
        value: String,
    ) -> Result<Result<(), wit::Error>> {
        self.write_header(&fields, &name, &value, true)
    }

    fn remove(
        &mut self,
        fields: Resource<Fields>,
        name: String,
    ) -> Result<Result<u32, wit::Error>> {
        self.fields_msg(&fields)?;
        let parsed = match check_header(&name, "") {
            Ok(parsed) => parsed,
            Err(err) => return Ok(Err(err)),
        };
        let removed = self.fields_msg_mut(&fields)?.remove_headers(&parsed);
        Ok(Ok(u32::try_from(removed).unwrap_or(u32::MAX)))
    }

    fn body(&mut self, fields: Resource<Fields>) -> Result<Vec<u8>> {
        Ok(self.fields_msg(&fields)?.body().to_vec())
    }

    fn set_body(
        &mut self,
        fields: Resource<Fields>,
        content_type: Option<String>,
        body: Vec<u8>,
    ) -> Result<Result<(), wit::Error>> {
        self.fields_msg(&fields)?;
        if let Some(ct) = &content_type {
            if let Err(err) = checks::header_field("Content-Type", ct) {
                return Ok(Err(wit::Error::Invalid(err)));
            }
        }
        let type_len = content_type.as_ref().map_or(0, String::len);
        let spent = self.spend_text(usize::from(content_type.is_some()), body.len() + type_len);
        if let Err(err) = spent {
            return Ok(Err(err));
        }
        let msg = self.fields_msg_mut(&fields)?;
        if body.is_empty() {
            msg.remove_headers(&HeaderName::ContentType);
        } else if let Some(ct) = content_type {
            msg.remove_headers(&HeaderName::ContentType);
            if let Err(err) = msg.append_header(HeaderName::ContentType, &ct) {
                return Ok(Err(wit::Error::Invalid(err.to_string())));
            }
        }
        msg.set_body(body.into());
        Ok(Ok(()))
    }

    fn drop(&mut self, _fields: Resource<Fields>) -> Result<()> {
        // Nothing was allocated for the handle.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rep_names_its_message_and_call() {
        for parent in [
            Parent::Request(0),
            Parent::Request(4095),
            Parent::Response(1),
        ] {
            for generation in [0, 1, GENERATION_MASK, GENERATION_MASK + 5, u32::MAX] {
                let rep = encode(parent, generation).expect("fits");
                assert_eq!(decode(rep), (parent, generation & GENERATION_MASK));
            }
        }
        assert_eq!(encode(Parent::Request(4096), 0), None);
        assert_ne!(
            encode(Parent::Request(1), 7),
            encode(Parent::Response(1), 7)
        );
        assert_ne!(encode(Parent::Request(1), 7), encode(Parent::Request(1), 8));
    }

    #[test]
    fn the_host_owns_the_same_headers_everywhere() {
        for name in [
            "Via",
            "v",
            "From",
            "f",
            "To",
            "t",
            "Call-ID",
            "i",
            "CSeq",
            "Content-Length",
            "l",
            "Record-Route",
        ] {
            assert!(
                matches!(check_header(name, "x"), Err(wit::Error::NotAllowed(_))),
                "{name}"
            );
        }
        for name in ["Route", "P-hint", "Contact", "Max-Forwards", "Content-Type"] {
            assert!(check_header(name, "x").is_ok(), "{name}");
        }
        assert!(matches!(
            check_header("Bad Name", "x"),
            Err(wit::Error::Invalid(_))
        ));
        assert!(matches!(
            check_header("X-A", "a\r\nVia: smuggled"),
            Err(wit::Error::Invalid(_))
        ));
    }
}
