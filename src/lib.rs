//! wsgo: a Python WSGI application server.
//!
//! One monoio runtime per core answers HTTP; Python threads run the application. The modules are
//! layered (each uses only its own layer and the ones below; `scripts/check_layers.py` enforces
//! it), bottom to top:
//!
//! 1. base: [`sys`], [`log`], [`stats`], [`http`], [`config`], [`cli`], [`client`]
//! 2. services: [`handoff`], [`state`], [`park`], [`block`], [`cache`], [`static_files`], [`cron`]
//! 3. sides: [`conn`] (network, no Python) and [`wsgi`] (Python, no sockets)
//! 4. threads: [`pool`]
//! 5. wiring: [`server`]
//!
//! ARCHITECTURE.md follows a request through them.

#![warn(missing_docs, unreachable_pub)]
#![warn(clippy::undocumented_unsafe_blocks, clippy::unwrap_used)]

pub mod block;
pub mod cache;
pub mod cli;
pub mod client;
pub mod config;
pub mod conn;
pub mod cron;
pub mod handoff;
pub mod http;
pub mod interpreter;
pub mod log;
pub mod park;
pub mod pool;
pub mod server;
pub mod share;
pub mod state;
pub mod static_files;
pub mod stats;
pub mod sys;
pub mod wsgi;
