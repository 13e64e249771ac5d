//! SIGUSR1 and SIGUSR2: what the process is doing, printed on demand. Both run on the main
//! thread, which only waits for signals, so they are safe to send under load: the core threads
//! never wait for them, and the Python parts are read by the pool with the GIL taken like any
//! worker takes it.

use std::sync::atomic::Ordering::SeqCst;

use crate::cron::Registry;
use crate::handoff::Runner;
use crate::handoff::scheduler::Scheduler;
use crate::pool::Pool;
use crate::state::State;
use crate::stats::get;

/// SIGUSR1: the Python stack of every worker and background thread, with the request it runs,
/// to stderr.
pub(crate) fn dump_stacks<R: Runner>(pool: &Pool, runner: &R) {
    crate::log::report_stderr(&format!("wsgo: SIGUSR1: Python threads\n{}", pool.stacks(runner)));
}

/// SIGUSR2: counters, the queue, parked and blocked requests, the cache and memory, to stderr.
pub(crate) fn print_stats<R: Runner>(
    state: &State,
    queue: &Scheduler,
    pool: &Pool,
    runner: &R,
    jobs: &Registry<R::Task>,
) {
    let p = state.config.process.max(1);
    let stats = &state.stats;
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&format!("{p}: {s}\n"));
    };
    line(format!("Active requests: {}", queue.running()));
    line("Active requests by IP:".into());
    for (client, n) in queue.running_by_client() {
        line(format!("  {client}: {n}"));
    }
    line(format!("Queued requests: {}", queue.queued()));
    line(format!("Request count: {}", get(&stats.requests)));
    line(format!("Request errors: {}", get(&stats.errors)));
    line(format!("Request timeouts: {}", get(&stats.queue_timeouts)));
    line(format!("Requests interrupted: {}", get(&stats.interrupted)));
    line(format!("Request drops: {}", get(&stats.drops)));
    line(format!("Requests abandoned by their clients while queued: {}", get(&stats.abandoned)));
    line(format!("Static files served: {}", get(&stats.static_files)));
    let (established, refused) = state.blocks.counts();
    line(format!("Blocks established: {established}"));
    line(format!("Blocked requests: {refused}"));
    line(format!("Blocked clients now: {}", state.blocks.len()));
    line(format!("Parked requests: {}", state.parking.len()));
    line(format!("Background jobs: {}", jobs.len()));
    line(format!("Open connections: {}", state.open.load(SeqCst)));
    let (hits, misses) = (get(&stats.cache_hits), get(&stats.cache_misses));
    let rate = if hits + misses > 0 { 100.0 * hits as f64 / (hits + misses) as f64 } else { 0.0 };
    match &state.cache {
        Some(c) => line(format!(
            "Cache: {} entries, {} of {} bytes, {hits} hits, {misses} misses ({rate:.1}% hits)",
            c.len(),
            c.size(),
            state.config.cache_size
        )),
        None => line("Cache: off".into()),
    }
    line(format!("Resident memory (in bytes): {}", crate::sys::process::rss_bytes()));
    let (threads, blocks) = pool.python_counts(runner);
    line(format!("Python live Thread count: {threads}"));
    line(format!("Python allocated blocks: {blocks}"));
    crate::log::report_stderr(&out);
}
