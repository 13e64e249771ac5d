//! Static files: `--static-map PREFIX=DIR` answered on the core threads, without Python
//! (README.md, "Static files").
//!
//! `resolve` decides which relative path a request names, `files` opens it safely off the core
//! thread and remembers it, `negotiate` and `reply` decide the response (gzip sibling, 304, 206,
//! 416) as pure functions. The connection side (`conn/files.rs`) writes it.

pub mod files;
pub mod mime;
pub mod negotiate;
pub mod reply;
pub mod resolve;

pub use files::{FileCache, Roots, StaticFile};
