//! How much of a request body is left, and taking it from a buffer (pure, no I/O).

use bytes::{Buf, Bytes, BytesMut};

use super::chunked::{ChunkedDecoder, Decoded};
use super::error::HttpError;
use super::request::BodyKind;

/// The unread part of one request body.
#[derive(Debug, Clone)]
pub enum BodyState {
    /// This many bytes are still to come.
    Length(u64),
    /// A chunked body, decoded as it arrives.
    Chunked(ChunkedDecoder),
    /// The body is complete.
    Done,
}

/// One step of taking body bytes from the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Body bytes.
    Data(Bytes),
    /// Read more from the socket.
    NeedMore,
    /// The body is complete.
    Done,
}

impl BodyState {
    /// The state of a body framed as `kind`, before any of it is read.
    pub fn new(kind: BodyKind) -> BodyState {
        match kind {
            BodyKind::Empty | BodyKind::Length(0) => BodyState::Done,
            BodyKind::Length(n) => BodyState::Length(n),
            BodyKind::Chunked => BodyState::Chunked(ChunkedDecoder::new()),
        }
    }

    /// Whether the whole body has been taken.
    pub fn is_done(&self) -> bool {
        matches!(self, BodyState::Done)
    }

    /// The body bytes still to come when the length is known.
    pub fn remaining(&self) -> Option<u64> {
        match self {
            BodyState::Done => Some(0),
            BodyState::Length(n) => Some(*n),
            BodyState::Chunked(_) => None,
        }
    }

    /// Takes up to `max` body bytes from the front of `buf`.
    pub fn take(&mut self, buf: &mut BytesMut, max: usize) -> Result<Step, HttpError> {
        match self {
            BodyState::Done => Ok(Step::Done),
            BodyState::Length(left) => {
                if buf.is_empty() {
                    return Ok(Step::NeedMore);
                }
                let n = (*left).min(buf.len() as u64).min(max.max(1) as u64) as usize;
                let data = buf.split_to(n).freeze();
                *left -= n as u64;
                if *left == 0 {
                    *self = BodyState::Done;
                }
                Ok(Step::Data(data))
            }
            BodyState::Chunked(dec) => match dec.decode(buf, max)? {
                Decoded::Data(d) => Ok(Step::Data(d)),
                Decoded::NeedMore => Ok(Step::NeedMore),
                Decoded::Done => {
                    *self = BodyState::Done;
                    Ok(Step::Done)
                }
            },
        }
    }

    /// Whether `buf` holds the rest of the body (without consuming anything).
    pub fn ends_within(&self, buf: &[u8]) -> bool {
        match self {
            BodyState::Done => true,
            BodyState::Length(left) => buf.len() as u64 >= *left,
            // Rare (a chunked body the app has not read to its end): a trial run on a copy.
            BodyState::Chunked(_) => self.clone().discard_buffered(&mut BytesMut::from(buf)),
        }
    }

    /// Drops whatever of the body `buf` already holds; true when the body is then complete, so the
    /// connection can be reused without reading anything more.
    pub fn discard_buffered(&mut self, buf: &mut BytesMut) -> bool {
        loop {
            match self {
                BodyState::Length(left) if (buf.len() as u64) >= *left => {
                    buf.advance(*left as usize);
                    *self = BodyState::Done;
                }
                _ => {}
            }
            match self.take(buf, usize::MAX) {
                Ok(Step::Done) => return true,
                Ok(Step::Data(_)) => continue,
                Ok(Step::NeedMore) | Err(_) => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_bodies_stop_at_their_end() {
        let mut buf = BytesMut::from(&b"helloGET"[..]);
        let mut st = BodyState::new(BodyKind::Length(5));
        assert_eq!(st.take(&mut buf, 3).unwrap(), Step::Data(Bytes::from_static(b"hel")));
        assert_eq!(st.take(&mut buf, 100).unwrap(), Step::Data(Bytes::from_static(b"lo")));
        assert_eq!(st.take(&mut buf, 100).unwrap(), Step::Done);
        assert_eq!(&buf[..], b"GET");
        let mut st = BodyState::new(BodyKind::Length(5));
        let mut empty = BytesMut::new();
        assert_eq!(st.take(&mut empty, 100).unwrap(), Step::NeedMore);
    }

    #[test]
    fn discards_only_what_is_buffered() {
        let table: &[(BodyKind, &[u8], bool, &[u8])] = &[
            (BodyKind::Length(3), b"abcNEXT", true, b"NEXT"),
            (BodyKind::Length(9), b"abc", false, b""),
            (BodyKind::Chunked, b"3\r\nabc\r\n0\r\n\r\nNEXT", true, b"NEXT"),
            (BodyKind::Chunked, b"3\r\nab", false, b""),
            (BodyKind::Empty, b"NEXT", true, b"NEXT"),
        ];
        for (kind, input, done, rest) in table {
            let mut buf = BytesMut::from(*input);
            let mut st = BodyState::new(*kind);
            assert_eq!(st.ends_within(&buf), *done, "{kind:?} {input:?}");
            assert_eq!(&buf[..], *input, "a trial consumes nothing");
            assert_eq!(st.discard_buffered(&mut buf), *done, "{kind:?} {input:?}");
            assert_eq!(&buf[..], *rest, "{kind:?} {input:?}");
        }
    }
}
