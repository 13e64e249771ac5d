//! Errors of the HTTP layer, each knowing the status code it is answered with.
//!
//! Every parse error closes the connection (RFC 9112 §9.3: after a framing error the rest of the
//! stream can no longer be trusted), so no error here carries a keep-alive verdict of its own.

use std::fmt;

/// A request the server refuses before any application code runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpError {
    /// Malformed syntax or framing: 400.
    BadRequest(&'static str),
    /// The request target is longer than the limit: 414.
    UriTooLong,
    /// The header block is larger than the limit, or has too many fields: 431.
    HeadersTooLarge,
    /// A chunk size that cannot be represented: 413.
    PayloadTooLarge,
    /// A transfer coding we do not implement (RFC 9112 §6.1): 501.
    NotImplemented(&'static str),
    /// Not HTTP/1.0 or HTTP/1.1: 505.
    VersionNotSupported,
    /// An `Expect` other than `100-continue` (RFC 9110 §10.1.1): 417.
    ExpectationFailed,
}

impl HttpError {
    /// The status code the client receives.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::BadRequest(_) => 400,
            HttpError::UriTooLong => 414,
            HttpError::HeadersTooLarge => 431,
            HttpError::PayloadTooLarge => 413,
            HttpError::NotImplemented(_) => 501,
            HttpError::VersionNotSupported => 505,
            HttpError::ExpectationFailed => 417,
        }
    }

    /// A short description for the response body and the error log.
    pub fn detail(&self) -> &'static str {
        match self {
            HttpError::BadRequest(why) | HttpError::NotImplemented(why) => why,
            HttpError::UriTooLong => "request target too long",
            HttpError::HeadersTooLarge => "request header fields too large",
            HttpError::PayloadTooLarge => "chunk size too large",
            HttpError::VersionNotSupported => "unsupported protocol version",
            HttpError::ExpectationFailed => "unsupported expectation",
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status(), self.detail())
    }
}

impl std::error::Error for HttpError {}
