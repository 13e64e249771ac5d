//! The counters of the SIGUSR2 report: one value per process, in the process state
//! (`state::State::stats`) and handed to whoever counts. Relaxed atomics: each is bumped where the
//! event happens and only read for the report.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The process's counters.
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests handed to the scheduler (retries included).
    pub requests: AtomicU64,
    /// Requests the app failed (500 before the first byte, or aborted after it).
    pub errors: AtomicU64,
    /// Requests that waited past --request-timeout in the queue (504).
    pub queue_timeouts: AtomicU64,
    /// Requests refused because the queue was full.
    pub drops: AtomicU64,
    /// Running requests interrupted by the timeout.
    pub interrupted: AtomicU64,
    /// Queued requests dropped because their client left.
    pub abandoned: AtomicU64,
    /// Requests answered from the response cache.
    pub cache_hits: AtomicU64,
    /// GET and HEAD requests the cache could not answer.
    pub cache_misses: AtomicU64,
    /// Static files served.
    pub static_files: AtomicU64,
}

/// Adds one.
pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Relaxed);
}

/// The current value.
pub fn get(counter: &AtomicU64) -> u64 {
    counter.load(Relaxed)
}
