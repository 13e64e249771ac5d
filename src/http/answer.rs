//! What the server answers by itself, before any stage of the connection: `OPTIONS *`, `CONNECT`
//! and targets that are not canonical (a 301 to the clean path); and the answer to a malformed
//! request ([`error_answer`]). Pure: no I/O. Every other request goes through the stages
//! (`conn::dispatch`).

use std::borrow::Cow;

use super::response::reason_phrase;
use super::{HttpError, RequestHead, Target};

/// A response the server makes by itself, before any application code runs.
#[derive(Debug, PartialEq, Eq)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// `Name: value\r\n` lines besides the ones every response gets (framing, Date,
    /// Connection, and Content-Type with a body). Never holds an unencoded request byte.
    pub lines: Vec<u8>,
    /// The body (`Content-Type: text/plain` when not empty).
    pub body: Cow<'static, [u8]>,
}

/// Where a request goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// Answered by the server itself.
    Answer(Answer),
    /// The stages: block, static files, the cache, the application.
    Stages,
}

/// Whether the server answers `head` by itself.
pub fn route(head: &RequestHead) -> Route {
    let answer = |status, lines: Vec<u8>, body: &'static [u8]| {
        Route::Answer(Answer { status, lines, body: Cow::Borrowed(body) })
    };
    match &head.target {
        // `OPTIONS *`: 200 with an empty body, no app call.
        Target::Asterisk => answer(200, Vec::new(), b""),
        // `CONNECT`: we are not a proxy.
        Target::Authority => answer(404, Vec::new(), b"404 page not found\n"),
        // The location is percent-encoded by the parser (`http::path::encode_location`).
        Target::Redirect(location) => {
            let mut lines = Vec::with_capacity(location.len() + 12);
            lines.extend_from_slice(b"Location: ");
            lines.extend_from_slice(location);
            lines.extend_from_slice(b"\r\n");
            answer(301, lines, b"")
        }
        // Benchmark builds only: a fixed reply from the core thread, the ceiling for the WSGI path.
        #[cfg(feature = "rust-hello")]
        Target::Path { .. } if head.path() == Some(b"/__rust_hello") => {
            answer(200, Vec::new(), b"Hello, World!")
        }
        Target::Path { .. } => Route::Stages,
    }
}

/// The answer to a malformed request (the connection is closed after it): the status and a
/// body naming the rule it broke, from a fixed text (nothing of the request is echoed).
pub fn error_answer(e: HttpError) -> Answer {
    let status = e.status();
    let body = format!("{status} {}: {}\n", reason_phrase(status), e.detail());
    Answer { status, lines: Vec::new(), body: Cow::Owned(body.into_bytes()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> RequestHead {
        let (h, len) = crate::http::parse_head(raw.as_bytes()).unwrap().unwrap();
        h.attach(bytes::Bytes::copy_from_slice(&raw.as_bytes()[..len]))
    }

    #[test]
    fn routes() {
        let answer = |status, lines: &[u8], body: &'static [u8]| {
            Route::Answer(Answer { status, lines: lines.to_vec(), body: Cow::Borrowed(body) })
        };
        let table: &[(&str, Route)] = &[
            ("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", answer(200, b"", b"")),
            ("CONNECT a:1 HTTP/1.1\r\nHost: a\r\n\r\n", answer(404, b"", b"404 page not found\n")),
            ("GET //x?y HTTP/1.1\r\nHost: a\r\n\r\n", answer(301, b"Location: /x?y\r\n", b"")),
            ("GET //%0d%0a HTTP/1.1\r\nHost: a\r\n\r\n", answer(301, b"Location: /%0D%0A\r\n", b"")),
            ("GET /x HTTP/1.1\r\nHost: a\r\n\r\n", Route::Stages),
            ("OPTIONS /x HTTP/1.1\r\nHost: a\r\n\r\n", Route::Stages),
        ];
        for (raw, want) in table {
            assert_eq!(route(&head(raw)), *want, "{raw:?}");
        }
    }

    #[test]
    fn errors_name_the_rule_not_the_request() {
        let a = error_answer(HttpError::BadRequest("invalid Host"));
        assert_eq!((a.status, &a.body[..]), (400, &b"400 Bad Request: invalid Host\n"[..]));
        assert_eq!(error_answer(HttpError::UriTooLong).status, 414);
    }
}
