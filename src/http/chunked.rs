//! The chunked transfer coding of request bodies (RFC 9112 §7.1), as a resumable state machine.
//!
//! Input arrives in arbitrary pieces; [`ChunkedDecoder::decode`] consumes what it can from the
//! front of the buffer and hands chunk data out as zero-copy slices of it. Strict: sizes are hex
//! digits only (at most 16), lines end in CRLF, extensions and trailers are bounded and discarded.

use bytes::{Buf, Bytes, BytesMut};

use super::error::HttpError;

/// Longest chunk-size line (size, extensions) we accept.
const MAX_SIZE_LINE: usize = 4096;
/// Largest trailer section we accept.
const MAX_TRAILERS: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the chunk-size line; `line` bytes of it seen so far.
    Size {
        line: usize,
    },
    /// Reading chunk data; this many bytes left.
    Data {
        left: u64,
    },
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// Reading trailer fields; this many bytes seen so far.
    Trailers {
        seen: usize,
    },
    Done,
}

/// What one call to [`ChunkedDecoder::decode`] produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Body bytes.
    Data(Bytes),
    /// The buffer holds no complete element: read more and call again.
    NeedMore,
    /// The body is complete; its terminating CRLF has been consumed.
    Done,
}

/// Decoder state for one chunked body.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    /// A decoder at the start of a body.
    pub fn new() -> Self {
        ChunkedDecoder { state: State::Size { line: 0 } }
    }

    /// Whether the terminating chunk and trailers are consumed.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes from the front of `src`, returning at most `max` bytes of body data.
    pub fn decode(&mut self, src: &mut BytesMut, max: usize) -> Result<Decoded, HttpError> {
        loop {
            match self.state {
                State::Done => return Ok(Decoded::Done),
                State::Size { line } => {
                    let Some(nl) = find_lf(src, line) else {
                        if src.len() > MAX_SIZE_LINE {
                            return Err(HttpError::BadRequest("chunk size line too long"));
                        }
                        self.state = State::Size { line: src.len() };
                        return Ok(Decoded::NeedMore);
                    };
                    if nl == 0 || src[nl - 1] != b'\r' || nl > MAX_SIZE_LINE {
                        return Err(HttpError::BadRequest("malformed chunk size line"));
                    }
                    let size = parse_size_line(&src[..nl - 1])?;
                    src.advance(nl + 1);
                    self.state =
                        if size == 0 { State::Trailers { seen: 0 } } else { State::Data { left: size } };
                }
                State::Data { left } => {
                    if src.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let n = (left.min(src.len() as u64) as usize).min(max.max(1));
                    let data = src.split_to(n).freeze();
                    let left = left - n as u64;
                    self.state = if left == 0 { State::DataEnd } else { State::Data { left } };
                    return Ok(Decoded::Data(data));
                }
                State::DataEnd => {
                    if src.len() < 2 {
                        if src.first().is_some_and(|&b| b != b'\r') {
                            return Err(HttpError::BadRequest("chunk data not followed by CRLF"));
                        }
                        return Ok(Decoded::NeedMore);
                    }
                    if &src[..2] != b"\r\n" {
                        return Err(HttpError::BadRequest("chunk data not followed by CRLF"));
                    }
                    src.advance(2);
                    self.state = State::Size { line: 0 };
                }
                State::Trailers { seen } => {
                    let Some(nl) = find_lf(src, 0) else {
                        if seen + src.len() > MAX_TRAILERS {
                            return Err(HttpError::HeadersTooLarge);
                        }
                        return Ok(Decoded::NeedMore);
                    };
                    if nl == 0 || src[nl - 1] != b'\r' {
                        return Err(HttpError::BadRequest("bare LF in chunked trailer"));
                    }
                    let line = &src[..nl - 1];
                    if line.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
                        return Err(HttpError::BadRequest("control character in trailer"));
                    }
                    let empty = line.is_empty();
                    if !empty && (!line.contains(&b':') || line[0] == b' ' || line[0] == b'\t') {
                        return Err(HttpError::BadRequest("malformed trailer field"));
                    }
                    let seen = seen + nl + 1;
                    if seen > MAX_TRAILERS {
                        return Err(HttpError::HeadersTooLarge);
                    }
                    src.advance(nl + 1);
                    self.state = if empty { State::Done } else { State::Trailers { seen } };
                }
            }
        }
    }
}

fn find_lf(src: &[u8], from: usize) -> Option<usize> {
    src.get(from..)?.iter().position(|&b| b == b'\n').map(|p| p + from)
}

/// `chunk-size [ chunk-ext ]` without the CRLF.
fn parse_size_line(line: &[u8]) -> Result<u64, HttpError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(HttpError::BadRequest("missing chunk size"));
    }
    if digits > 16 {
        return Err(HttpError::PayloadTooLarge);
    }
    let mut size: u64 = 0;
    for &b in &line[..digits] {
        let d = (b as char).to_digit(16).unwrap_or(0);
        size = size.checked_mul(16).ok_or(HttpError::PayloadTooLarge)? | u64::from(d);
    }
    if size > i64::MAX as u64 {
        return Err(HttpError::PayloadTooLarge);
    }
    let rest = &line[digits..];
    // chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] ); we only check it holds no
    // control characters, then discard it.
    if !rest.is_empty() {
        let ext = rest.trim_ascii_start();
        if !ext.starts_with(b";") || rest.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(HttpError::BadRequest("malformed chunk extension"));
        }
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `step` bytes; returns the body or the error status.
    fn decode_all(input: &[u8], step: usize) -> Result<(Vec<u8>, usize), u16> {
        let mut dec = ChunkedDecoder::new();
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut fed = 0;
        loop {
            match dec.decode(&mut buf, 7).map_err(|e| e.status())? {
                Decoded::Data(d) => body.extend_from_slice(&d),
                Decoded::Done => return Ok((body, fed - buf.len())),
                Decoded::NeedMore => {
                    if fed == input.len() {
                        return Err(0);
                    }
                    let end = (fed + step).min(input.len());
                    buf.extend_from_slice(&input[fed..end]);
                    fed = end;
                }
            }
        }
    }

    #[test]
    fn decodes_valid_bodies_in_any_split() {
        let table: &[(&[u8], &[u8])] = &[
            (b"5\r\nhello\r\n0\r\n\r\n", b"hello"),
            (b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", b"hello world"),
            (b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
            (b"a;name=val\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
            (b"3 ; ext\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n", b"abc"),
            (b"0\r\n\r\n", b""),
            (b"000003\r\nabc\r\n0\r\n\r\n", b"abc"),
        ];
        for (input, want) in table {
            for step in [1, 2, 3, 5, 64] {
                let (body, used) = decode_all(input, step).unwrap_or_else(|e| panic!("{input:?}: {e}"));
                assert_eq!(body, *want, "{input:?} step {step}");
                assert_eq!(used, input.len());
            }
        }
    }

    #[test]
    fn stops_at_the_end_of_the_body() {
        let mut dec = ChunkedDecoder::new();
        let mut buf = BytesMut::from(&b"1\r\na\r\n0\r\n\r\nGET / HTTP/1.1\r\n"[..]);
        assert_eq!(dec.decode(&mut buf, 100).unwrap(), Decoded::Data(Bytes::from_static(b"a")));
        assert_eq!(dec.decode(&mut buf, 100).unwrap(), Decoded::Done);
        assert_eq!(&buf[..], b"GET / HTTP/1.1\r\n");
    }

    #[test]
    fn refuses_malformed_bodies() {
        let table: &[(&[u8], u16)] = &[
            (b"\r\nabc\r\n0\r\n\r\n", 400),
            (b"-5\r\nhello\r\n0\r\n\r\n", 400),
            (b"0x5\r\nhello\r\n0\r\n\r\n", 400),
            (b"+5\r\nhello\r\n0\r\n\r\n", 400),
            (b"5\nhello\r\n0\r\n\r\n", 400),
            (b"5\r\nhelloX\r\n0\r\n\r\n", 400),
            (b"5\r\nhello\n0\r\n\r\n", 400),
            (b"11111111111111111\r\n", 413),
            (b"ffffffffffffffff\r\n", 413),
            (b"5;a\x00b\r\nhello\r\n0\r\n\r\n", 400),
            (b"5 x\r\nhello\r\n0\r\n\r\n", 400),
            (b"0\r\nX: a\nb\r\n\r\n", 400),
            (b"0\r\n folded\r\n\r\n", 400),
            (b"0\r\nnocolon\r\n\r\n", 400),
        ];
        for (input, status) in table {
            for step in [1, 64] {
                assert_eq!(decode_all(input, step), Err(*status), "{input:?} step {step}");
            }
        }
    }

    #[test]
    fn bounds_size_lines_and_trailers() {
        let mut long_ext = b"1;".to_vec();
        long_ext.extend(std::iter::repeat_n(b'a', MAX_SIZE_LINE + 10));
        assert_eq!(decode_all(&long_ext, 100), Err(400));
        let mut trailers = b"0\r\n".to_vec();
        for _ in 0..(MAX_TRAILERS / 10 + 10) {
            trailers.extend_from_slice(b"X-T: 1234\r\n");
        }
        assert_eq!(decode_all(&trailers, 4096), Err(431));
    }
}
