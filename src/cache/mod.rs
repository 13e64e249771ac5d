//! The response cache (`--max-age`, `--cache-size`): pure rules for what is stored and how it is
//! found (`policy`, `key`), and the store the core threads share (`store`). Hits are answered on
//! the core thread that owns the connection, without Python (README.md, "Response cache"; RFC 9111).

pub mod key;
pub mod policy;
pub mod store;

pub use store::{Entry, Store};
