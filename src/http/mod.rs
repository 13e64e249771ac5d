//! HTTP/1.1, pure: parsing, body framing, response encoding. No I/O here.

pub mod answer;
pub mod body;
pub mod chunked;
pub mod date;
pub mod error;
pub mod path;
pub mod request;
pub mod response;

pub use error::HttpError;
pub use request::{BodyKind, RequestHead, Span, Target, parse_head};
