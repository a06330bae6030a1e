//! Cutting a byte stream into SIP messages (RFC 3261 §18.3), within the
//! limits of `[connections]`.
//!
//! Empty lines between messages are dropped as they arrive, so a peer
//! sending nothing but line ends costs no memory; a double CRLF alone is a
//! keepalive ping (RFC 5626 §3.5.1), answered with a CRLF pong.

use bytes::{Buf, Bytes, BytesMut};

use crate::sip;

/// What came out of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Message(Bytes),
    /// A CRLFCRLF keepalive: answer "\r\n".
    Ping,
}

/// The stream cannot be cut into messages any more (too large, no
/// Content-Length): the connection must close.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unframeable(pub String);

pub struct Framer {
    buf: BytesMut,
    max_header: usize,
    max_body: usize,
    /// How much of a CRLFCRLF ping the line ends dropped just before what
    /// is in `buf` make up (a ping split across reads is still a ping).
    ping_seen: usize,
}

const PING: &[u8; 4] = b"\r\n\r\n";

impl Framer {
    pub fn new(max_header: usize, max_body: usize) -> Framer {
        Framer {
            buf: BytesMut::with_capacity(4096),
            max_header,
            max_body,
            ping_seen: 0,
        }
    }

    /// Where the next read goes.
    pub fn buffer(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Whether part of a message is waiting for the rest.
    pub fn in_message(&self) -> bool {
        !self.buf.is_empty()
    }

    /// The next frame out of what was read, None when more is needed.
    pub fn next(&mut self) -> Result<Option<Frame>, Unframeable> {
        // Line ends before a message: dropped now, remembered only as far
        // as a ping needs.
        while let Some(&b) = self.buf.first() {
            if b != b'\r' && b != b'\n' {
                break;
            }
            self.buf.advance(1);
            self.ping_seen = if b == PING[self.ping_seen] {
                self.ping_seen + 1
            } else {
                usize::from(b == b'\r')
            };
            if self.ping_seen == PING.len() {
                self.ping_seen = 0;
                return Ok(Some(Frame::Ping));
            }
        }
        if self.buf.is_empty() {
            return Ok(None);
        }
        match sip::frame_within(&self.buf, self.max_header, self.max_body) {
            Ok(Some(len)) => {
                self.ping_seen = 0;
                Ok(Some(Frame::Message(self.buf.split_to(len).freeze())))
            }
            Ok(None) => Ok(None),
            Err(err) => Err(Unframeable(err.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: &[u8] = b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 2\r\n\r\nhi";

    fn feed(framer: &mut Framer, data: &[u8]) -> Result<Vec<Frame>, Unframeable> {
        framer.buffer().extend_from_slice(data);
        let mut frames = Vec::new();
        while let Some(frame) = framer.next()? {
            frames.push(frame);
        }
        Ok(frames)
    }

    #[test]
    fn messages_and_pings_come_out_in_order_across_reads() {
        let mut f = Framer::new(1024, 1024);
        let mut stream = b"\r\n\r\n".to_vec();
        stream.extend_from_slice(OPTIONS);
        stream.extend_from_slice(b"\r\n");
        stream.extend_from_slice(OPTIONS);
        stream.extend_from_slice(b"\r\n\r\n");
        let mut frames = Vec::new();
        // One byte at a time: every split point.
        for b in &stream {
            frames.extend(feed(&mut f, std::slice::from_ref(b)).expect("frames"));
        }
        let message = Frame::Message(Bytes::from_static(OPTIONS));
        assert_eq!(
            frames,
            vec![Frame::Ping, message.clone(), message, Frame::Ping]
        );
        assert!(!f.in_message());
    }

    #[test]
    fn endless_line_ends_cost_no_memory() {
        let mut f = Framer::new(1024, 1024);
        for _ in 0..10_000 {
            feed(&mut f, b"\n\n\n\n\n\n\n\n").expect("line ends are fine");
        }
        assert!(f.buf.is_empty() && f.ping_seen == 0);
    }

    #[test]
    fn too_large_is_refused_before_the_rest_arrives() {
        let mut f = Framer::new(64, 1024);
        let err = feed(&mut f, &[b'X'; 65]).unwrap_err();
        assert!(err.0.contains("Header"), "{err}");
        let mut f = Framer::new(1024, 10);
        let err = feed(&mut f, b"MESSAGE sip:a@b SIP/2.0\r\nl: 11\r\n\r\n").unwrap_err();
        assert!(err.0.contains("Body"), "{err}");
        let mut f = Framer::new(1024, 10);
        assert!(feed(&mut f, b"MESSAGE sip:a@b SIP/2.0\r\nl: 10\r\n\r\n")
            .expect("within")
            .is_empty());
        assert!(f.in_message());
    }
}
