//! The monitor thread: answers jobs that waited too long in the queue, interrupts requests that
//! run too long, and gives up on a process whose workers are all stuck (ARCHITECTURE.md,
//! "Timeouts").
//!
//! Ticks every 100 ms. A queued job past `--request-timeout` gets its 504 here even when no
//! worker comes free. A running job past its limit gets `wsgo.RequestTimeoutException` raised
//! asynchronously in its thread (checked under the GIL: only if the thread is still on that job).
//! Such a thread counts as stuck until the job returns; when every worker is stuck, the process
//! stops (the supervisor, or systemd, starts a new one).

use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use pyo3::Python;

use crate::handoff::Runner;
use crate::handoff::exchange::ToConn;
use crate::handoff::scheduler::Scheduler;
use crate::handoff::slot::Slot;
use crate::stats::{Stats, bump};

/// How often the monitor looks.
pub(crate) const TICK: Duration = Duration::from_millis(100);
/// A background job still running this long after its limit stops the process.
pub(crate) const BACKGROUND_GRACE: Duration = Duration::from_secs(10);

pub(super) fn run<R: Runner>(sched: &Scheduler, runner: &R, stats: &Stats, quit: Box<dyn Fn(&str) + Send>) {
    let mut quitting = false;
    loop {
        std::thread::sleep(TICK);
        for job in sched.expired() {
            job.exchange.send(ToConn::Refused);
        }
        sched.kick();
        let slots = sched.slots();
        for slot in &slots {
            if let Some(seq) = slot.overdue() {
                interrupt(runner, slot, seq, stats);
            }
        }
        if quitting {
            continue;
        }
        let workers: Vec<_> = slots.iter().filter(|s| s.name.starts_with("worker")).collect();
        if !workers.is_empty() && workers.iter().all(|s| s.stuck()) {
            quitting = true;
            crate::log::error!("All worker threads are stuck, quitting!");
            quit("all workers stuck");
        }
        let background_stuck = slots.iter().any(|s| {
            !s.name.starts_with("worker")
                && s.limit.zip(s.running_for()).is_some_and(|(limit, ran)| ran > limit + BACKGROUND_GRACE)
        });
        if background_stuck {
            quitting = true;
            crate::log::error!("Background worker permanently stuck, quitting!");
            quit("background worker stuck");
        }
    }
}

/// Raises the timeout exception in the thread of `slot` if it is still on job `seq`.
fn interrupt<R: Runner>(runner: &R, slot: &Slot, seq: u64, stats: &Stats) {
    Python::attach(|py| {
        // Under the GIL the worker cannot move to another job: it changes jobs holding it.
        if slot.job.load(SeqCst) != seq || slot.fired.load(SeqCst) {
            return;
        }
        let ident = slot.ident.load(SeqCst);
        let ran = slot.running_for().unwrap_or_default().as_secs_f64();
        crate::log::warning!(
            "Task timed out! {} has run {} for {ran:.1} s; raising wsgo.RequestTimeoutException\n{}",
            slot.name,
            slot.what(),
            runner.stack(py, ident)
        );
        if runner.interrupt(py, ident) {
            slot.fired.store(true, SeqCst);
            bump(&stats.interrupted);
        } else {
            crate::log::error!("Failed to issue RequestTimeoutException to stuck worker!");
        }
    });
}
