//! The plain-data contract between the core threads and the Python threads: the [`Job`] a core
//! thread queues, the [`Exchange`](exchange::Exchange) its response and body travel through, the
//! per-core [`Mailbox`](exchange::Mailbox) that wakes the connection, the queue that orders jobs
//! ([`Scheduler`](scheduler::Scheduler)), what each Python thread is doing
//! ([`Slot`](slot::Slot)), and the [`Runner`] trait through which the Python side runs a job.
//!
//! Nothing here calls Python or touches a socket: a core thread and a worker only share these
//! values.

pub mod exchange;
pub mod limit;
pub mod priority;
pub mod scheduler;
pub mod slot;
pub mod waiting;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use pyo3::Python;

use crate::client::ClientKey;
use crate::http::RequestHead;
use exchange::Exchange;

/// Most requests waiting for a worker; beyond this a request is refused with a 503 at once.
pub const QUEUE_CAPACITY: usize = 1024;

/// One WSGI request, as handed from a core thread to the Python threads.
pub struct Job {
    /// The request head (its buffer shared, not copied).
    pub head: RequestHead,
    /// The body received before queueing (decoded; the first MiB for POST/PUT/PATCH).
    pub body: Bytes,
    /// `body` is the whole body.
    pub body_complete: bool,
    /// The client's end of the connection.
    pub peer: crate::client::Peer,
    /// The address the request came in on.
    pub local: SocketAddr,
    /// The request came through a trusted proxy that says the client used https.
    pub https: bool,
    /// Where the response goes and more body comes from.
    pub exchange: Arc<Exchange>,
    /// When the job was queued (the queue timeout counts from here).
    pub queued_at: Instant,
    /// What the priority rules look at.
    pub traits: Traits,
    /// A retry of a parked request: the `X-WSGo-Park-Arg` the app sees.
    pub park_arg: Option<Bytes>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let part = |s| String::from_utf8_lossy(self.head.bytes(s)).into_owned();
        f.debug_struct("Job")
            .field("method", &part(self.head.method))
            .field("target", &part(self.head.raw_target))
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

/// What the scheduler knows of a request, decided on the core thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Traits {
    /// The client, when it is ranked (a public address).
    pub client: Option<ClientKey>,
    /// Its User-Agent looks like a robot's.
    pub robot: bool,
    /// The target has a non-empty query string.
    pub query: bool,
}

impl Traits {
    /// A request from a loopback or private address: never ranked.
    pub fn local() -> Traits {
        Traits { client: None, robot: false, query: false }
    }
}

/// A parked request, as the worker hands it back to the connection.
#[derive(Debug)]
pub struct ParkRequest {
    /// The channels it waits on.
    pub channels: Vec<String>,
    /// How long it waits at most.
    pub timeout: std::time::Duration,
    /// What it does when the timeout passes.
    pub action: crate::park::Action,
    /// The response's `X-WSGo-Block`, if any.
    pub block: Option<i64>,
    /// The request, for a retry.
    pub head: crate::http::RequestHead,
    /// The body received before the request was queued.
    pub body: Bytes,
    /// `body` is the whole body.
    pub body_complete: bool,
    /// The app read beyond `body` (from the socket): a retry could not replay it.
    pub streamed: bool,
    /// What the priority rules look at, for a retry.
    pub traits: Traits,
}

/// How the Python side runs what the core threads hand over. `wsgi` implements it; the threads of
/// `pool` call it, each holding the GIL (the `py` token says so).
pub trait Runner: Send + Sync + 'static {
    /// A background job as registered by the application (`@wsgo.cron`, `@wsgo.timer`).
    type Task: Send + Sync + 'static;

    /// Runs one request and sends its response through the job's exchange.
    fn run(&self, py: Python<'_>, job: Box<Job>);

    /// Runs a background job; an exception is reported, not returned.
    fn run_task(&self, py: Python<'_>, task: &Self::Task, name: &str);

    /// After each job on a worker: releases what the core threads dropped meanwhile.
    fn after_job(&self, py: Python<'_>);

    /// Raises the request-timeout exception in the Python thread `ident`; false if it could not.
    fn interrupt(&self, py: Python<'_>, ident: u64) -> bool;

    /// After a job the exception was raised into: clears a leftover exception and releases the
    /// locks the thread may still hold.
    fn after_interrupted(&self, py: Python<'_>, ident: u64);

    /// The Python stack of the thread `ident`, formatted (empty when it runs no Python).
    fn stack(&self, py: Python<'_>, ident: u64) -> String;

    /// Python's live threads and allocated blocks, for SIGUSR2.
    fn counts(&self, py: Python<'_>) -> (u64, u64);
}

/// A queued `GET path` with these traits, for the scheduler's tests.
#[cfg(test)]
pub(crate) fn test_job(path: &str, traits: Traits) -> Box<Job> {
    let raw = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
    let (h, len) = crate::http::parse_head(raw.as_bytes()).expect("valid").expect("complete");
    Box::new(Job {
        head: h.attach(Bytes::copy_from_slice(&raw.as_bytes()[..len])),
        body: Bytes::new(),
        body_complete: true,
        peer: crate::client::Peer::Ip("127.0.0.1:1".parse().expect("addr")),
        local: "127.0.0.1:2".parse().expect("addr"),
        https: false,
        exchange: Arc::new(Exchange::new()),
        queued_at: Instant::now(),
        traits,
        park_arg: None,
    })
}
