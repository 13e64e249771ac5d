//! Process-wide counters for the SIGUSR2 report (SPEC §19). Relaxed atomics: each is bumped where
//! the event happens and only read for the report.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Default)]
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
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    pub blocks_established: AtomicU64,
    pub blocked_requests: AtomicU64,
    pub static_files: AtomicU64,
}

pub static STATS: Stats = Stats {
    requests: AtomicU64::new(0),
    errors: AtomicU64::new(0),
    queue_timeouts: AtomicU64::new(0),
    drops: AtomicU64::new(0),
    interrupted: AtomicU64::new(0),
    abandoned: AtomicU64::new(0),
    cache_hits: AtomicU64::new(0),
    cache_misses: AtomicU64::new(0),
    blocks_established: AtomicU64::new(0),
    blocked_requests: AtomicU64::new(0),
    static_files: AtomicU64::new(0),
};

/// Adds one.
pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Relaxed);
}

pub fn get(counter: &AtomicU64) -> u64 {
    counter.load(Relaxed)
}
