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
        sched.regulate(std::time::Instant::now());
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
        let workers: Vec<_> = slots.iter().filter(|s| s.is_worker()).collect();
        if !workers.is_empty() && workers.iter().all(|s| s.stuck()) {
            quitting = true;
            crate::log::error!("All worker threads are stuck, quitting!");
            quit("all workers stuck");
        }
        let background_stuck = slots.iter().any(|s| {
            !s.is_worker()
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
        let ident = slot.ident.load(SeqCst);
        // Formatting the stack runs Python, which may hand the GIL to the worker meanwhile: it
        // is taken before the check, so that nothing between the check and the raise lets the
        // worker finish its job (the exception would then hit its next request).
        let stack = runner.stack(py, ident);
        // Under the GIL the worker cannot move to another job: it changes jobs holding it.
        if slot.job.load(SeqCst) != seq || slot.fired.load(SeqCst) {
            return;
        }
        let ran = slot.running_for().unwrap_or_default().as_secs_f64();
        crate::log::warning!(
            "Task timed out! {} has run {} for {ran:.1} s; raising wsgo.RequestTimeoutException\n{stack}",
            slot.name,
            slot.what(),
        );
        if runner.interrupt(py, ident) {
            slot.fired.store(true, SeqCst);
            bump(&stats.interrupted);
        } else {
            crate::log::error!("Failed to issue RequestTimeoutException to stuck worker!");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handoff::Job;
    use crate::handoff::slot::What;
    use std::sync::atomic::AtomicUsize;
    use std::time::Instant;

    /// A worker that finishes its job (and starts the next) while the monitor formats its stack.
    struct FinishesMeanwhile<'a> {
        slot: &'a Slot,
        interrupts: AtomicUsize,
    }

    impl Runner for FinishesMeanwhile<'static> {
        type Task = ();
        fn run(&self, _: Python<'_>, _: Box<Job>) {}
        fn run_task(&self, _: Python<'_>, _: &(), _: &str) {}
        fn after_job(&self, _: Python<'_>) {}
        fn interrupt(&self, _: Python<'_>, _: u64) -> bool {
            self.interrupts.fetch_add(1, SeqCst);
            true
        }
        fn after_interrupted(&self, _: Python<'_>, _: u64) {}
        fn stack(&self, _: Python<'_>, _: u64) -> String {
            self.slot.end();
            self.slot.begin(8, What::Text("GET /next".into()));
            String::new()
        }
        fn counts(&self, _: Python<'_>) -> (u64, u64) {
            (0, 0)
        }
    }

    #[test]
    fn a_job_that_ends_while_its_stack_is_taken_is_not_interrupted_nor_the_next() {
        crate::wsgi::interp::init_for_tests();
        let slot: &'static Slot =
            Box::leak(Box::new(Slot::new("worker 1".into(), Some(Duration::from_millis(1)), Instant::now())));
        slot.begin(7, What::Text("POST /slow".into()));
        let runner = FinishesMeanwhile { slot, interrupts: AtomicUsize::new(0) };
        interrupt(&runner, slot, 7, &Stats::default());
        assert_eq!(runner.interrupts.load(SeqCst), 0, "raised into the thread after job 7 ended");
        assert!(!slot.end(), "job 8 is not marked interrupted");
    }
}
