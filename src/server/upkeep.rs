//! A server process's upkeep thread, started only when a flag needs it: `--max-requests` and
//! `--max-rss` (checked every [`CHECK_EVERY`]), `--metrics` (a sample every second, pushed to the
//! supervisor or served here when there is none), `--incoming-cpu` and `--cpu-share` with more
//! than one process (how busy this process's CPUs were, every [`BUSY_EVERY`], for the
//! supervisor's guard: `super::steering`).
//!
//! A process past a limit asks the supervisor to replace it, the SIGHUP way, and goes on
//! serving until the new process serves; it asks again every [`ASK_AGAIN`] while it is still
//! running (a replacement that failed to come up). Without a supervisor there is no one to start
//! the next process: it drains and exits 0, for a process manager to start it again.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::control::{Channel, Message};
use super::steering::{BUSY_EVERY, Busy};
use crate::handoff::scheduler::Scheduler;
use crate::state::State;
use crate::stats::get;

const CHECK_EVERY: Duration = Duration::from_millis(100);
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
const ASK_AGAIN: Duration = Duration::from_secs(10);

/// The limits of this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// App requests after which it is replaced (jitter included); `None`: no limit.
    pub requests: Option<u64>,
    /// Resident bytes past which it is replaced; `None`: no limit.
    pub rss: Option<u64>,
}

impl Limits {
    /// From the flags, with this process's draw of the jitter (`draw` is any random number).
    pub fn new(max_requests: u64, jitter: u64, max_rss: u64, draw: u64) -> Limits {
        let extra = if jitter == 0 { 0 } else { draw % (jitter + 1) };
        Limits {
            requests: (max_requests > 0).then(|| max_requests.saturating_add(extra)),
            rss: (max_rss > 0).then_some(max_rss),
        }
    }

    /// Why a process with these counts is past a limit, if it is.
    pub fn passed(&self, requests: u64, rss: u64) -> Option<String> {
        if let Some(limit) = self.requests
            && requests >= limit
        {
            return Some(format!("served {requests} requests (--max-requests, {limit} for this process)"));
        }
        if let Some(limit) = self.rss
            && rss > limit
        {
            return Some(format!("resident memory {} MiB is past --max-rss {} MiB", rss >> 20, limit >> 20));
        }
        None
    }
}

/// A random number for the jitter: the standard library's hasher keys are random per process.
pub fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish()
}

/// Starts the thread if any flag needs it.
pub fn start(state: Arc<State>, queue: Arc<Scheduler>, control: Option<Arc<Channel>>) -> std::io::Result<()> {
    let c = &state.config;
    let limits = Limits::new(c.max_requests, c.max_requests_jitter, c.max_rss, random());
    let metrics = c.metrics;
    // The supervisor's guard compares the processes' figures: their own CPUs' (`--cpu-share`;
    // without it every process has the same CPUs).
    let mut busy = (c.incoming_cpu && c.cpu_share && c.processes > 1 && control.is_some())
        .then(|| Busy::new(crate::sys::process::allowed_cpus()));
    if limits.requests.is_none() && limits.rss.is_none() && metrics.is_none() && busy.is_none() {
        return Ok(());
    }
    let started = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    if let (Some(addr), None) = (metrics, &control) {
        // No supervisor: this process serves its own page.
        let (state, queue) = (state.clone(), queue.clone());
        let page = Arc::new(move || {
            super::metrics::render([super::metrics::sample(&state, &queue, started).as_str()])
        });
        super::metrics::serve(addr, page)?;
    }
    std::thread::Builder::new().name("wsgo-upkeep".into()).spawn(move || {
        crate::log::defer_this_thread();
        let mut asked: Option<Instant> = None;
        let mut sampled: Option<Instant> = None;
        let mut looked: Option<Instant> = None;
        loop {
            std::thread::sleep(CHECK_EVERY);
            if let Some(why) = limits.passed(get(&state.stats.requests), crate::sys::process::rss_bytes())
                && asked.is_none_or(|t| t.elapsed() >= ASK_AGAIN)
            {
                asked = Some(Instant::now());
                match &control {
                    Some(ch) => {
                        ch.send(&Message::Replace(why));
                    }
                    None => {
                        crate::log::info!("{why}; draining (no supervisor starts the next process)");
                        crate::sys::signals::raise_in_process(crate::sys::signals::SIGTERM);
                    }
                }
            }
            if let (Some(_), Some(ch)) = (metrics, &control)
                && sampled.is_none_or(|t| t.elapsed() >= SAMPLE_EVERY)
            {
                sampled = Some(Instant::now());
                ch.send(&Message::Metrics(super::metrics::sample(&state, &queue, started)));
            }
            if let (Some(meter), Some(ch)) = (busy.as_mut(), &control)
                && looked.is_none_or(|t| t.elapsed() >= BUSY_EVERY)
            {
                looked = Some(Instant::now());
                let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
                if let Some(permille) = meter.look(&stat) {
                    ch.send(&Message::Busy(permille));
                }
            }
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        assert_eq!(Limits::new(0, 0, 0, 7), Limits { requests: None, rss: None });
        assert_eq!(Limits::new(50, 0, 0, 7).requests, Some(50));
        assert_eq!(Limits::new(50, 10, 0, 7).requests, Some(57));
        assert_eq!(Limits::new(50, 10, 0, 21).requests, Some(60));
        assert_eq!(Limits::new(u64::MAX, 10, 0, 3).requests, Some(u64::MAX));
        let l = Limits::new(50, 0, 100 << 20, 0);
        assert_eq!(l.passed(49, 100 << 20), None);
        assert!(l.passed(50, 0).is_some_and(|w| w.contains("served 50 requests")));
        assert!(l.passed(0, (100 << 20) + 1).is_some_and(|w| w.contains("past --max-rss 100 MiB")));
    }
}
