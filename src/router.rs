//! Which stage answers a request. Pure: returns a route, does no I/O.
//!
//! Stages come in the order block -> static -> cache -> WSGI (SPEC §3); the first three arrive
//! with their features. What the HTTP layer answers by itself (`OPTIONS *`, `CONNECT`, redirects
//! to the canonical path) is decided here too.

use crate::http::{RequestHead, Target};

/// Where a request goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// `OPTIONS *`: 200 with an empty body, no app call.
    ServerOptions,
    /// `CONNECT`: we are not a proxy.
    NotFound,
    /// A non-canonical path: 301 to this location.
    Redirect(&'a [u8]),
    /// The application.
    Wsgi,
    /// Benchmark builds only: a fixed reply from the core thread, the ceiling for the WSGI path.
    #[cfg(feature = "rust-hello")]
    RustHello,
}

pub fn route(head: &RequestHead) -> Route<'_> {
    match &head.target {
        Target::Asterisk => Route::ServerOptions,
        Target::Authority => Route::NotFound,
        Target::Redirect(location) => Route::Redirect(location),
        #[cfg(feature = "rust-hello")]
        Target::Path { .. } if head.path() == Some(b"/__rust_hello") => Route::RustHello,
        Target::Path { .. } => Route::Wsgi,
    }
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
        let table: &[(&str, Route<'_>)] = &[
            ("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", Route::ServerOptions),
            ("CONNECT a:1 HTTP/1.1\r\nHost: a\r\n\r\n", Route::NotFound),
            ("GET //x?y HTTP/1.1\r\nHost: a\r\n\r\n", Route::Redirect(b"/x?y")),
            ("GET /x HTTP/1.1\r\nHost: a\r\n\r\n", Route::Wsgi),
            ("OPTIONS /x HTTP/1.1\r\nHost: a\r\n\r\n", Route::Wsgi),
        ];
        for (raw, want) in table {
            assert_eq!(route(&head(raw)), *want, "{raw:?}");
        }
    }
}
