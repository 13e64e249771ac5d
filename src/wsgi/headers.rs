//! Validation of what the application passes to `start_response` (pure, no Python).
//!
//! A bad status or header is the application's bug: it becomes a Python exception in the app and
//! a 500, never a malformed response or a crash.

use crate::http::request::parse_content_length;
use crate::http::response::ResponseHead;

/// What is wrong with what the app passed to `start_response` (raised into the app as a
/// `ValueError`; the client gets a 500).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    /// Not three digits and an optional reason.
    #[error("invalid status {0:?}: expected e.g. '200 OK'")]
    Status(String),
    /// A status code the app may not send (1xx belongs to the server).
    #[error("invalid status {0:?}: the code must be between 200 and 999")]
    Code(String),
    /// CR, LF or another control byte in the reason phrase.
    #[error("invalid status {0:?}: control character in the reason phrase")]
    Reason(String),
    /// A header name that is not a token.
    #[error("invalid header name {0:?}")]
    Name(String),
    /// CR, LF, NUL or another control byte in a value (header injection).
    #[error("invalid value for header {0:?}: control characters (CR, LF, NUL...) are not allowed")]
    Value(String),
    /// A Content-Length that is not a number.
    #[error("invalid Content-Length {0:?}")]
    ContentLength(String),
    /// Two different Content-Lengths.
    #[error("conflicting Content-Length headers")]
    ConflictingLength,
}

impl crate::log::Blame for ResponseError {
    fn cause(&self) -> crate::log::Cause {
        crate::log::Cause::App
    }
}

/// Parses a WSGI status: three digits, optionally a space and a reason phrase.
pub fn parse_status(status: &str) -> Result<(u16, Vec<u8>), ResponseError> {
    let bytes = status.as_bytes();
    let bad = || ResponseError::Status(status.to_string());
    if bytes.len() < 3 || !bytes[..3].iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let code = bytes[..3].iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    if !(200..=999).contains(&code) {
        return Err(ResponseError::Code(status.to_string()));
    }
    let reason = match &bytes[3..] {
        [] => Vec::new(),
        [b' ', rest @ ..] => {
            if rest.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
                return Err(ResponseError::Reason(status.to_string()));
            }
            // The standard phrase is what an empty reason sends: skip the copy per response.
            if rest == crate::http::response::reason_phrase(code).as_bytes() {
                Vec::new()
            } else {
                latin1_or_utf8(&status[4..])
            }
        }
        _ => return Err(bad()),
    };
    Ok((code, reason))
}

/// Header values go out as latin-1 when they fit (PEP 3333), else as UTF-8 (as the original did).
pub fn latin1_or_utf8(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    push_latin1_or_utf8(&mut out, s);
    out
}

/// [`latin1_or_utf8`], appended to `out`.
pub fn push_latin1_or_utf8(out: &mut Vec<u8>, s: &str) {
    if s.is_ascii() || !s.chars().all(|c| (c as u32) < 0x100) {
        out.extend_from_slice(s.as_bytes());
    } else {
        out.extend(s.chars().map(|c| c as u8));
    }
}

/// The header names the server acts on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Special {
    ContentLength,
    Connection,
    HopByHop,
    Date,
    Sendfile,
    AccelRedirect,
    VaryCookies,
    Block,
    Park,
    ParkTimeout,
    /// Any other `X-WSGo-*`: internal, never sent.
    Internal,
}

/// Which special header `name` is (compared only against names of its length).
fn special(name: &str) -> Option<Special> {
    let is = |n: &str| name.eq_ignore_ascii_case(n);
    match name.len() {
        4 if is("date") => Some(Special::Date),
        10 if is("connection") => Some(Special::Connection),
        10 if is("keep-alive") => Some(Special::HopByHop),
        10 if is("x-sendfile") => Some(Special::Sendfile),
        14 if is("content-length") => Some(Special::ContentLength),
        16 if is("x-accel-redirect") => Some(Special::AccelRedirect),
        17 if is("transfer-encoding") => Some(Special::HopByHop),
        19 if is("x-wsgo-vary-cookies") => Some(Special::VaryCookies),
        12 if is("x-wsgo-block") => Some(Special::Block),
        11 if is("x-wsgo-park") => Some(Special::Park),
        19 if is("x-wsgo-park-timeout") => Some(Special::ParkTimeout),
        n if n >= 7 && name[..7].eq_ignore_ascii_case("x-wsgo-") => Some(Special::Internal),
        _ => None,
    }
}

/// Collects validated headers into a [`ResponseHead`].
#[derive(Debug, Default)]
pub struct HeadBuilder {
    head: ResponseHead,
    /// X-Sendfile wins over X-Accel-Redirect whatever their order.
    accel_redirect: Option<Vec<u8>>,
}

impl HeadBuilder {
    /// A head with this status and reason, no fields yet.
    pub fn new(status: u16, reason: Vec<u8>) -> HeadBuilder {
        HeadBuilder { head: ResponseHead { status, reason, ..ResponseHead::default() }, accel_redirect: None }
    }

    /// Adds one header; hop-by-hop fields are the server's and are absorbed here.
    pub fn add(&mut self, name: &str, value: &str) -> Result<(), ResponseError> {
        if !crate::http::is_token(name.as_bytes()) {
            return Err(ResponseError::Name(name.to_string()));
        }
        // Control characters are ASCII, so a byte scan covers UTF-8 text too.
        if value.bytes().any(|b| (b < b' ' && b != b'\t') || b == 0x7f) {
            return Err(ResponseError::Value(name.to_string()));
        }
        let value = value.trim_matches(|c| c == ' ' || c == '\t');
        match special(name) {
            None => {}
            Some(Special::ContentLength) => {
                let n = parse_content_length(value.as_bytes())
                    .map_err(|_| ResponseError::ContentLength(value.to_string()))?;
                if self.head.content_length.is_some_and(|m| m != n) {
                    return Err(ResponseError::ConflictingLength);
                }
                self.head.content_length = Some(n);
                return Ok(());
            }
            Some(Special::Connection) => {
                self.head.close |= value.split(',').any(|t| t.trim().eq_ignore_ascii_case("close"));
                return Ok(());
            }
            // Framing is the server's job (RFC 9112 §6.1); hop-by-hop fields are not forwarded.
            Some(Special::HopByHop) => return Ok(()),
            Some(Special::Date) => self.head.has_date = true,
            // Instructions to the server, not sent to the client.
            Some(Special::Sendfile) => {
                if !value.is_empty() {
                    self.head.sendfile = Some(latin1_or_utf8(value));
                }
                return Ok(());
            }
            Some(Special::AccelRedirect) => {
                if !value.is_empty() {
                    self.accel_redirect = Some(latin1_or_utf8(value));
                }
                return Ok(());
            }
            Some(Special::VaryCookies) => {
                self.head.vary_cookies = Some(latin1_or_utf8(value));
                return Ok(());
            }
            Some(Special::Block) => {
                self.head.block = crate::block::parse_seconds(value.as_bytes());
                return Ok(());
            }
            Some(Special::Park) => {
                if !value.is_empty() {
                    self.head.park = Some(value.to_string());
                }
                return Ok(());
            }
            Some(Special::ParkTimeout) => {
                self.head.park_timeout = Some(value.to_string());
                return Ok(());
            }
            Some(Special::Internal) => return Ok(()),
        }
        let lines = &mut self.head.lines;
        lines.reserve(name.len() + value.len() + 4);
        lines.extend_from_slice(name.as_bytes());
        lines.extend_from_slice(b": ");
        push_latin1_or_utf8(lines, value);
        lines.extend_from_slice(b"\r\n");
        Ok(())
    }

    /// The head, X-Sendfile chosen over X-Accel-Redirect.
    pub fn finish(mut self) -> ResponseHead {
        if self.head.sendfile.is_none() {
            self.head.sendfile = self.accel_redirect;
        }
        self.head
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        type Want = Result<(u16, &'static [u8]), ()>;
        let table: &[(&str, Want)] = &[
            ("200 OK", Ok((200, b""))),
            ("404 Not Found", Ok((404, b""))),
            ("200 Ok", Ok((200, b"Ok"))),
            ("200 Custom Reason", Ok((200, b"Custom Reason"))),
            ("404", Ok((404, b""))),
            ("299 Weird", Ok((299, b"Weird"))),
            ("200 Caf\u{e9}", Ok((200, b"Caf\xe9"))),
            ("050 Low", Err(())),
            ("103 Early", Err(())),
            ("000 Zero", Err(())),
            ("abc X", Err(())),
            ("20 OK", Err(())),
            ("200OK", Err(())),
            ("200 a\r\nX: y", Err(())),
            ("", Err(())),
        ];
        for (s, want) in table {
            let got = parse_status(s);
            match want {
                Ok((code, reason)) => assert_eq!(got, Ok((*code, reason.to_vec())), "{s:?}"),
                Err(()) => assert!(got.is_err(), "{s:?} accepted: {got:?}"),
            }
        }
    }

    #[test]
    fn headers() {
        let mut b = HeadBuilder::new(200, Vec::new());
        b.add("Content-Type", "text/plain").unwrap();
        b.add("x-lower", "a").unwrap();
        b.add("Set-Cookie", "a=1").unwrap();
        b.add("Set-Cookie", "b=2").unwrap();
        b.add("Content-Length", "12").unwrap();
        b.add("Transfer-Encoding", "chunked").unwrap();
        b.add("Connection", "keep-alive, close").unwrap();
        b.add("X-Uni", "caf\u{e9} \u{263a}").unwrap();
        for (name, value) in [
            ("Bad Name", "x"),
            ("", "x"),
            ("X-Inj", "a\r\nInjected: yes"),
            ("X-Nul", "a\0"),
            ("Content-Length", "abc"),
            ("Content-Length", "13"),
        ] {
            assert!(b.add(name, value).is_err(), "{name:?}: {value:?}");
        }
        let head = b.finish();
        assert_eq!(
            String::from_utf8(head.lines).unwrap(),
            "Content-Type: text/plain\r\nx-lower: a\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nX-Uni: caf\u{e9} \u{263a}\r\n"
        );
        assert_eq!(head.content_length, Some(12));
        assert!(head.close);
        assert!(!head.has_date);
    }

    #[test]
    fn server_instructions_are_taken_out() {
        let mut b = HeadBuilder::new(404, Vec::new());
        b.add("X-Accel-Redirect", "/accel").unwrap();
        b.add("X-Sendfile", "probe.py").unwrap();
        b.add("X-WSGo-Vary-Cookies", "a, b").unwrap();
        b.add("X-Extra", "kept").unwrap();
        b.add("x-wsgo-block", " 30 ").unwrap();
        b.add("X-WSGo-Park", "a, b").unwrap();
        b.add("X-WSGo-Park-Timeout", "5 retry").unwrap();
        b.add("X-WSGo-Future", "x").unwrap();
        let head = b.finish();
        assert_eq!(head.block, Some(30));
        assert_eq!(head.park.as_deref(), Some("a, b"));
        assert_eq!(head.park_timeout.as_deref(), Some("5 retry"));
        assert_eq!(head.sendfile.as_deref(), Some(&b"probe.py"[..]));
        assert_eq!(head.vary_cookies.as_deref(), Some(&b"a, b"[..]));
        assert_eq!(head.lines, b"X-Extra: kept\r\n");
        let mut b = HeadBuilder::new(200, Vec::new());
        b.add("X-Accel-Redirect", "/accel").unwrap();
        b.add("X-Sendfile", "").unwrap();
        assert_eq!(b.finish().sendfile.as_deref(), Some(&b"/accel"[..]));
    }
}
