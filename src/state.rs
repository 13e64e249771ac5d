//! The process-wide state: one value that `server` builds at start and hands down to every core
//! thread (an `Arc`); the services it holds are shared by all of them. No module keeps state of
//! its own in a static, apart from the logger's level and the signal handler's pipe (`sys`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize};

use monoio::blocking::DefaultThreadPool;

use crate::block::Blocks;
use crate::cache::Store;
use crate::config::Config;
use crate::park::Parking;
use crate::static_files::Roots;
use crate::stats::Stats;

/// State shared by every thread of the process.
pub struct State {
    /// The validated command line.
    pub config: Config,
    /// Shutting down: accept nothing more, keep no connection alive.
    pub draining: AtomicBool,
    /// Connections open in the whole process.
    pub open: AtomicUsize,
    /// The listening sockets are not this process's own but the supervisor's or systemd's
    /// (their owner decides when new connections stop); otherwise each core thread stops them
    /// on its own socket at shutdown.
    pub shared_sockets: bool,
    /// The connection limit was reached (logged once per episode).
    pub at_limit: AtomicBool,
    /// Core threads that have not yet closed their listener (at shutdown they first serve what
    /// is queued on it; the process must not exit before).
    pub listening: AtomicUsize,
    /// The `--static-map` folders, open.
    pub roots: Arc<Roots>,
    /// Clients blocked by `X-WSGo-Block`.
    pub blocks: Arc<Blocks>,
    /// Requests parked by `X-WSGo-Park`.
    pub parking: Arc<Parking>,
    /// The other processes of the supervisor (parking notifications, blocks, client counts).
    pub share: Arc<crate::share::Outbox>,
    /// The response cache (`None` when `--max-age` or `--cache-size` is 0).
    pub cache: Option<Store>,
    /// Threads for the blocking file-system calls of the core threads (opening files, reading
    /// files too big to keep in memory).
    pub blocking: DefaultThreadPool,
    /// The SIGUSR2 and `--metrics` counters.
    pub stats: Arc<Stats>,
    /// Where the access log goes.
    pub access: Arc<crate::log::Sink>,
    /// `--incoming-cpu`: this process's sockets and whether they steer.
    pub steering: Arc<crate::sys::net::Steering>,
}
