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

/// SIGUSR2: counters, the queue, parked and blocked requests, the cache and memory, to stderr;
/// returns the report (for the supervisor's totals).
pub(crate) fn print_stats<R: Runner>(
    state: &State,
    queue: &Scheduler,
    pool: &Pool,
    runner: &R,
    jobs: &Registry<R::Task>,
) -> String {
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
    line(format!("Connections rescued from other processes: {}", get(&stats.rescued)));
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
    line(format!("Messages to the other processes lost: {}", state.share.lost()));
    crate::log::report_stderr(&out);
    out
}

/// The supervisor's SIGUSR2 totals: the `N: name: number` lines of the processes' reports added
/// up by name, in the order first seen; an indented line (a client's running requests) is added
/// up under the heading above it. Lines without a whole number (the cache's summary) are left
/// out.
pub(super) fn totals(reports: &[String]) -> String {
    // (name, sum or None for a heading, the indented lines under it)
    type Entry = (String, Option<u64>, Vec<(String, u64)>);
    let mut entries: Vec<Entry> = Vec::new();
    for report in reports {
        let mut heading: Option<usize> = None;
        for line in report.lines() {
            let Some((_, rest)) = line.split_once(": ") else { continue };
            if let Some(name) = rest.strip_suffix(':') {
                let at = entries.iter().position(|e| e.0 == name && e.1.is_none()).unwrap_or_else(|| {
                    entries.push((name.to_string(), None, Vec::new()));
                    entries.len() - 1
                });
                heading = Some(at);
                continue;
            }
            let Some((name, value)) = rest.rsplit_once(": ") else { continue };
            let Ok(n) = value.trim().parse::<u64>() else { continue };
            if name.starts_with(' ') {
                if let Some(h) = heading {
                    let subs = &mut entries[h].2;
                    match subs.iter_mut().find(|(s, _)| s == name) {
                        Some(sub) => sub.1 += n,
                        None => subs.push((name.to_string(), n)),
                    }
                }
                continue;
            }
            heading = None;
            match entries.iter_mut().find(|e| e.0 == name && e.1.is_some()) {
                Some(e) => e.1 = e.1.map(|sum| sum + n),
                None => entries.push((name.to_string(), Some(n), Vec::new())),
            }
        }
    }
    let mut out = format!("total of {} processes:\n", reports.len());
    for (name, sum, subs) in entries {
        match sum {
            Some(n) => out.push_str(&format!("total: {name}: {n}\n")),
            None => out.push_str(&format!("total: {name}:\n")),
        }
        for (sub, n) in subs {
            out.push_str(&format!("total: {sub}: {n}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn totals_add_up_every_number_by_name() {
        let one = "1: Active requests: 2\n1: Active requests by IP:\n1:   8.8.8.8: 2\n1: Request count: 10\n\
                   1: Cache: 3 entries, 10 of 20 bytes\n1: Resident memory (in bytes): 1000\n";
        let two = "2: Active requests: 1\n2: Active requests by IP:\n2:   8.8.8.8: 1\n2:   1.1.1.1: 1\n\
                   2: Request count: 5\n2: Cache: off\n2: Resident memory (in bytes): 500\n";
        assert_eq!(
            super::totals(&[one.into(), two.into()]),
            "total of 2 processes:\ntotal: Active requests: 3\ntotal: Active requests by IP:\n\
             total:   8.8.8.8: 3\ntotal:   1.1.1.1: 1\ntotal: Request count: 15\n\
             total: Resident memory (in bytes): 1500\n"
        );
    }
}
