//! HTTP/1.1, pure: parsing, body framing, response encoding. No I/O here.

pub mod answer;
pub mod body;
pub mod chunked;
pub mod date;
pub mod error;
pub mod path;
pub mod proxy;
pub mod request;
pub mod response;

pub use error::HttpError;
pub use request::{BodyKind, RequestHead, Span, Target, parse_head};

/// RFC 9110 §5.6.2 token characters (field names, methods, cookie names, media types).
pub const TCHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        i += 1;
    }
    t
};

/// Whether `b` is a token: one or more token characters.
pub fn is_token(b: &[u8]) -> bool {
    !b.is_empty() && b.iter().all(|&c| TCHAR[c as usize])
}
