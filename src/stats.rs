//! The counters of the SIGUSR2 report and of `--metrics`: one value per process, in the process
//! state (`state::State::stats`) and handed to whoever counts. Relaxed atomics: each is bumped
//! where the event happens and only read for the reports. The responses by status class are
//! counted per core thread ([`CoreCounts`], each on its own cache line), since every response
//! bumps one: a counter shared by the cores would bounce between their caches.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

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
    /// Connections taken from another process's socket, where they had waited too long.
    pub rescued: AtomicU64,
    /// Each core thread's counts.
    cores: Mutex<Vec<Arc<CoreCounts>>>,
}

impl Stats {
    /// New counts for a core thread, included in [`Stats::by_class`].
    pub fn core_counts(&self) -> Arc<CoreCounts> {
        let counts = Arc::new(CoreCounts::default());
        self.cores.lock().unwrap_or_else(|e| e.into_inner()).push(counts.clone());
        counts
    }

    /// Responses by status class over all core threads: no status sent, 1xx, ..., 5xx.
    pub fn by_class(&self) -> [u64; 6] {
        let mut sum = [0; 6];
        for c in self.cores.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            for (s, v) in sum.iter_mut().zip(c.by_class()) {
                *s += v;
            }
        }
        sum
    }
}

/// One core thread's responses by status class. Written by that thread only.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct CoreCounts {
    classes: [AtomicU64; 6],
}

impl CoreCounts {
    /// Counts a response with `status` (0: none was sent; anything outside 100..=599 counts so).
    pub fn count(&self, status: u16) {
        let class = usize::from(status / 100);
        let c = &self.classes[if (1..=5).contains(&class) { class } else { 0 }];
        // One writer: a plain load and store, no locked instruction.
        c.store(c.load(Relaxed) + 1, Relaxed);
    }

    /// The counts: no status, 1xx, 2xx, 3xx, 4xx, 5xx.
    pub fn by_class(&self) -> [u64; 6] {
        self.classes.each_ref().map(|c| c.load(Relaxed))
    }
}

/// Adds one.
pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Relaxed);
}

/// The current value.
pub fn get(counter: &AtomicU64) -> u64 {
    counter.load(Relaxed)
}
