//! SIGUSR1 and SIGUSR2 (SPEC §19): what the process is doing, printed on demand. Both run on the
//! main thread, which only waits for signals, so they are safe to send under load: the core
//! threads never wait for them, and the Python stacks are read with the GIL taken like any
//! worker takes it.

use std::sync::atomic::Ordering::SeqCst;

use pyo3::prelude::*;

use super::Shared;
use crate::pool::Pool;
use crate::stats::{STATS, get};
use crate::wsgi::timeout::thread_stack;

/// SIGUSR1: the Python stack of every worker and background thread, with the request it runs.
pub fn dump_stacks(pool: &Pool) {
    let mut out = String::from("wsgo: SIGUSR1: Python threads\n");
    Python::attach(|py| {
        for slot in pool.slots() {
            let ident = slot.ident.load(SeqCst);
            match slot.running_for() {
                Some(ran) => out.push_str(&format!(
                    "--- {} (thread {ident:#x}): {} for {:.3} s{}\n",
                    slot.name,
                    slot.what(),
                    ran.as_secs_f64(),
                    if slot.stuck() {
                        " [stuck]"
                    } else if slot.interrupted() {
                        " [timeout raised]"
                    } else {
                        ""
                    }
                )),
                None => out.push_str(&format!("--- {} (thread {ident:#x}): idle\n", slot.name)),
            }
            let stack = thread_stack(py, ident);
            out.push_str(if stack.is_empty() { "    <no Python frame>\n" } else { &stack });
        }
    });
    eprint!("{out}");
}

/// Resident memory in bytes, from /proc/self/statm.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(0) as u64
}

/// SIGUSR2: counters, the queue, parked and blocked requests, the cache and memory, to stdout.
pub fn print_stats(shared: &Shared, pool: &Pool) {
    let p = shared.config.process.max(1);
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&format!("{p}: {s}\n"));
    };
    line(format!("Active requests: {}", pool.running()));
    line("Active requests by IP:".into());
    for (client, n) in pool.running_by_client() {
        line(format!("  {client}: {n}"));
    }
    line(format!("Queued requests: {}", pool.queued()));
    line(format!("Request count: {}", get(&STATS.requests)));
    line(format!("Request errors: {}", get(&STATS.errors)));
    line(format!("Request timeouts: {}", get(&STATS.queue_timeouts)));
    line(format!("Requests interrupted: {}", get(&STATS.interrupted)));
    line(format!("Request drops: {}", get(&STATS.drops)));
    line(format!("Requests abandoned by their clients while queued: {}", get(&STATS.abandoned)));
    line(format!("Static files served: {}", get(&STATS.static_files)));
    line(format!("Blocks established: {}", get(&STATS.blocks_established)));
    line(format!("Blocked requests: {}", get(&STATS.blocked_requests)));
    line(format!("Blocked clients now: {}", shared.blocks.len()));
    line(format!("Parked requests: {}", shared.parking.len()));
    line(format!("Background jobs: {}", crate::cron::cron().len()));
    line(format!("Open connections: {}", shared.open.load(SeqCst)));
    let (hits, misses) = (get(&STATS.cache_hits), get(&STATS.cache_misses));
    let rate = if hits + misses > 0 { 100.0 * hits as f64 / (hits + misses) as f64 } else { 0.0 };
    match &shared.cache {
        Some(c) => line(format!(
            "Cache: {} entries, {} of {} bytes, {hits} hits, {misses} misses ({rate:.1}% hits)",
            c.len(),
            c.size(),
            shared.config.cache_size
        )),
        None => line("Cache: off".into()),
    }
    line(format!("Resident memory (in bytes): {}", rss_bytes()));
    Python::attach(|py| {
        let threads = py
            .import("threading")
            .and_then(|t| t.call_method0("active_count"))
            .and_then(|n| n.extract::<u64>());
        let blocks = py
            .import("sys")
            .and_then(|s| s.call_method0("getallocatedblocks"))
            .and_then(|n| n.extract::<u64>());
        line(format!("Python live Thread count: {}", threads.unwrap_or(0)));
        line(format!("Python allocated blocks: {}", blocks.unwrap_or(0)));
    });
    print!("{out}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
}
