//! The monitor thread: answers jobs that waited too long in the queue, interrupts requests that
//! run too long, and gives up on a process whose workers are all stuck (SPEC §13.3, §14 with
//! DESIGN decision 10).
//!
//! Ticks every 100 ms. A queued job past `--request-timeout` gets its 504 here even when no
//! worker comes free. A running job past its limit gets `wsgo.RequestTimeoutException` raised
//! asynchronously in its thread (checked under the GIL: only if the thread is still on that job).
//! Such a thread counts as stuck until the job returns; when every worker is stuck, the process
//! stops (the supervisor, or systemd, starts a new one).

use std::sync::Arc;
use std::time::Duration;

use super::refuse;
use super::scheduler::Scheduler;
use crate::wsgi::timeout::interrupt;

/// How often the monitor looks.
pub const TICK: Duration = Duration::from_millis(100);
/// A background job still running this long after its limit stops the process.
pub const BACKGROUND_GRACE: Duration = Duration::from_secs(10);

pub(super) fn run(sched: Arc<Scheduler>, quit: Box<dyn Fn(&str) + Send>) {
    let mut quitting = false;
    loop {
        std::thread::sleep(TICK);
        for job in sched.expired() {
            refuse(job);
        }
        sched.kick();
        let slots = sched.slots();
        for slot in &slots {
            if let Some(seq) = slot.overdue() {
                interrupt(slot, seq);
            }
        }
        if quitting {
            continue;
        }
        let workers: Vec<_> = slots.iter().filter(|s| s.name.starts_with("worker")).collect();
        if !workers.is_empty() && workers.iter().all(|s| s.stuck()) {
            quitting = true;
            quit("All worker threads are stuck, quitting!");
        }
        let background_stuck = slots.iter().any(|s| {
            !s.name.starts_with("worker")
                && s.limit.zip(s.running_for()).is_some_and(|(limit, ran)| ran > limit + BACKGROUND_GRACE)
        });
        if background_stuck {
            quitting = true;
            quit("Background worker permanently stuck, quitting!");
        }
    }
}
