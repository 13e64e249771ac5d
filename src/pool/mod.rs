//! The Python threads: the workers that run requests, the monitor that enforces the request
//! timeout, and the background thread that runs cron and timer jobs. Every thread that holds
//! the GIL is started here, and the GIL is taken nowhere else after start-up.
//!
//! The threads take their work from the [`Scheduler`] (`handoff`), which the core threads fill,
//! and run it through a [`Runner`], which `wsgi` implements: this module knows the GIL and the
//! threads, not WSGI.

mod background;
mod monitor;
mod worker;

use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use pyo3::Python;

use crate::cron::{JOB_LIMIT, Registry};
use crate::handoff::Runner;
use crate::handoff::scheduler::Scheduler;
use crate::handoff::slot::Slot;
use crate::stats::Stats;

/// The process's Python threads.
#[derive(Clone)]
pub struct Pool {
    sched: Arc<Scheduler>,
    stats: Arc<Stats>,
}

impl Pool {
    /// A pool taking its work from `sched`.
    pub fn new(sched: Arc<Scheduler>, stats: Arc<Stats>) -> Pool {
        Pool { sched, stats }
    }

    /// Starts `n` worker threads running requests through `runner`. Call from a thread that is
    /// not pinned to a core, so the workers may run on any CPU.
    pub fn start_workers<R: Runner>(&self, n: usize, runner: &Arc<R>) -> std::io::Result<()> {
        for id in 1..=n {
            let sched = self.sched.clone();
            let runner = runner.clone();
            let slot = self.sched.add_slot(format!("worker {id}"), self.sched.request_timeout);
            std::thread::Builder::new()
                .name(format!("wsgo-py-{id}"))
                .spawn(move || worker::run(&sched, &*runner, &slot))?;
        }
        Ok(())
    }

    /// Starts the monitor thread (queue timeouts, running timeouts, stuck workers). `quit` is
    /// called once when the process can no longer serve (every worker stuck).
    pub fn start_monitor<R: Runner>(
        &self,
        runner: &Arc<R>,
        quit: Box<dyn Fn(&str) + Send>,
    ) -> std::io::Result<()> {
        let (sched, runner, stats) = (self.sched.clone(), runner.clone(), self.stats.clone());
        std::thread::Builder::new().name("wsgo-monitor".into()).spawn(move || {
            // It writes its warnings holding the GIL: a stderr nobody reads must not hold it.
            crate::log::defer_this_thread();
            monitor::run(&sched, &*runner, &stats, quit)
        })?;
        Ok(())
    }

    /// Starts the background-job thread, if this process runs background jobs.
    pub fn start_background<R: Runner>(
        &self,
        runner: &Arc<R>,
        jobs: &Arc<Registry<R::Task>>,
    ) -> std::io::Result<()> {
        if !jobs.enabled() {
            return Ok(());
        }
        let slot = self.sched.add_slot("background".into(), Some(JOB_LIMIT));
        let (runner, jobs) = (runner.clone(), jobs.clone());
        std::thread::Builder::new()
            .name("wsgo-cron".into())
            .spawn(move || background::run(&*runner, &jobs, &slot))?;
        Ok(())
    }

    /// Every Python thread's slot.
    pub fn slots(&self) -> Vec<Arc<Slot>> {
        self.sched.slots()
    }

    /// SIGUSR1: each Python thread, what it runs, and its Python stack.
    pub fn stacks<R: Runner>(&self, runner: &R) -> String {
        let mut out = String::new();
        Python::attach(|py| {
            for slot in self.slots() {
                let ident = slot.ident.load(SeqCst);
                // The thread's CPU time in all: growing between two dumps, a request computes.
                let cpu = slot.cpu().as_secs_f64();
                match slot.running_for() {
                    Some(ran) => out.push_str(&format!(
                        "--- {} (thread {ident:#x}): {} for {:.3} s, thread CPU {cpu:.3} s{}\n",
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
                    None => out.push_str(&format!(
                        "--- {} (thread {ident:#x}): idle, thread CPU {cpu:.3} s\n",
                        slot.name
                    )),
                }
                let stack = runner.stack(py, ident);
                out.push_str(if stack.is_empty() { "    <no Python frame>\n" } else { &stack });
            }
        });
        out
    }

    /// Python's live threads and allocated blocks (SIGUSR2).
    pub fn python_counts<R: Runner>(&self, runner: &R) -> (u64, u64) {
        Python::attach(|py| runner.counts(py))
    }
}

/// How often the monitor looks.
pub const TICK: Duration = monitor::TICK;
