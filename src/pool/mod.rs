//! The Python threads and the hand-off to them: the inbox, the scheduler, the workers.
//!
//! Core threads push plain-data [`Job`]s into a lock-free queue and wake a worker only when no
//! worker is already looking for work ("searching"). A worker holding the GIL drains every queued
//! job before it detaches, so under load one wake serves a batch of requests instead of one each.
//! This is the only place, apart from start-up, that takes the GIL.

pub mod exchange;
pub mod mailbox;
pub mod monitor;
pub mod priority;
pub mod scheduler;
pub mod slot;
mod worker;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::http::RequestHead;
use exchange::Exchange;
pub use scheduler::Scheduler;

/// Most requests waiting for a worker; beyond this a request is refused with a 503 at once.
pub const QUEUE_CAPACITY: usize = 1024;

/// One WSGI request, as handed from a core thread to the Python threads.
pub struct Job {
    pub head: RequestHead,
    /// The body received before queueing (decoded; the first MiB for POST/PUT/PATCH).
    pub body: Bytes,
    /// `body` is the whole body.
    pub body_complete: bool,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// The request came through a trusted proxy that says the client used https.
    pub https: bool,
    pub exchange: Arc<Exchange>,
    pub queued_at: Instant,
    /// What the priority rules look at.
    pub traits: priority::Traits,
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

/// Answers a job that will not run (queue timeout, queue full) with a 504.
pub fn refuse(job: Job) {
    let (head, body) = crate::wsgi::call::error_head(504);
    job.exchange.send(exchange::ToConn::Full(head, body));
}

/// The process's pool of Python worker threads.
#[derive(Clone)]
pub struct Pool {
    sched: Arc<Scheduler>,
}

impl Pool {
    pub fn new(request_timeout: Option<Duration>) -> Pool {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Pool { sched: Arc::new(Scheduler::new(QUEUE_CAPACITY, request_timeout, cpus)) }
    }

    /// Queues a job; refuses it (gives it back) when the queue is full.
    pub fn submit(&self, job: Job) -> Result<(), Box<Job>> {
        self.sched.submit(job)
    }

    /// Drops the queued jobs of clients that left; returns whether there were any.
    pub fn purge_gone(&self) -> bool {
        self.sched.purge_gone()
    }

    /// Starts `n` worker threads running `app`. Call from a thread that is not pinned to a core,
    /// so the workers may run on any CPU.
    pub fn start_workers(&self, n: usize, app: Arc<crate::wsgi::App>) -> std::io::Result<()> {
        for id in 1..=n {
            let sched = self.sched.clone();
            let app = app.clone();
            let slot = self.sched.add_slot(format!("worker {id}"), self.sched.request_timeout);
            std::thread::Builder::new()
                .name(format!("wsgo-py-{id}"))
                .spawn(move || worker::run(sched, app, slot))?;
        }
        Ok(())
    }

    /// Starts the monitor thread (queue timeouts, running timeouts, stuck workers). `quit` is
    /// called once when the process can no longer serve (every worker stuck).
    pub fn start_monitor(&self, quit: Box<dyn Fn(&str) + Send>) -> std::io::Result<()> {
        let sched = self.sched.clone();
        std::thread::Builder::new().name("wsgo-monitor".into()).spawn(move || monitor::run(sched, quit))?;
        Ok(())
    }

    /// A slot for a Python thread that is not a worker (the cron thread), watched by the monitor.
    pub fn add_slot(&self, name: String, limit: Option<Duration>) -> Arc<slot::Slot> {
        self.sched.add_slot(name, limit)
    }

    /// Every Python thread's slot.
    pub fn slots(&self) -> Vec<Arc<slot::Slot>> {
        self.sched.slots()
    }

    /// Requests running per ranked client.
    pub fn running_by_client(&self) -> Vec<(priority::ClientKey, u32)> {
        self.sched.running_by_client()
    }

    /// Jobs queued and not yet picked.
    pub fn queued(&self) -> usize {
        self.sched.queued()
    }

    /// Jobs being run by a worker right now.
    pub fn running(&self) -> usize {
        self.sched.running()
    }
}
