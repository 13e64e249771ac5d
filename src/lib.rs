//! wsgo: a Python WSGI application server.
//!
//! One monoio runtime per core answers HTTP; Python threads run the application. See
//! `../shared/DESIGN.md` for the shape and README.md for the user's view.

#[doc(hidden)]
pub mod bench_inputs;
pub mod block;
pub mod cache;
pub mod cli;
pub mod client;
pub mod config;
pub mod conn;
pub mod cron;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod log;
pub mod park;
pub mod pool;
pub mod router;
pub mod server;
pub mod static_files;
pub mod stats;
pub mod sys;
pub mod wsgi;
