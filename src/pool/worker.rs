//! A Python worker thread: attached to the interpreter for life, detached only to wait.
//!
//! Attaching once matters: the outermost attach creates and destroys a thread state each time
//! (14 µs round trip measured here against 4.6 µs with a persistent one).

use std::sync::Arc;
use std::time::Instant;

use pyo3::prelude::*;

use crate::handoff::exchange::ToConn;
use crate::handoff::scheduler::Scheduler;
use crate::handoff::slot::{Slot, What};
use crate::handoff::{Job, Runner};

/// `GET /path?q` for messages about a job.
fn describe(job: &Job) -> What {
    What::Request(job.head.buf.clone(), job.head.method, job.head.raw_target)
}

pub(super) fn run<R: Runner>(sched: &Arc<Scheduler>, runner: &R, slot: &Slot) {
    // CPython identifies threads by this value.
    slot.ident.store(crate::sys::process::thread_id(), std::sync::atomic::Ordering::SeqCst);
    // Whose the busy CPU is, and which requests compute long (`handoff::limit`).
    slot.take_cpu_clock();
    let me = Scheduler::sleeper();
    // It sleeps under SCHED_BATCH, and runs the app so while no other job runs (`sys::policy`).
    crate::sys::policy::start_worker();
    Python::attach(|py| {
        let mut token = false;
        let mut step_back = false;
        let mut refused = Vec::new();
        let mut seq = 0u64;
        loop {
            let picked = if step_back { None } else { sched.next_job(&mut token, &mut refused) };
            for job in refused.drain(..) {
                job.exchange.send(ToConn::Refused);
            }
            let Some((job, _score)) = picked else {
                // Idle: the scheduler parks it.
                let (woken, at) =
                    py.detach(|| (sched.park(&me, std::mem::take(&mut step_back)), Instant::now()));
                token = woken;
                if token {
                    // The GIL was taken back when detach returned: how long did that take?
                    sched.note_gil_wait(at.elapsed());
                }
                continue;
            };
            let traits = job.traits;
            if job.exchange.is_gone() {
                sched.done(&traits);
                continue;
            }
            seq += 1;
            slot.begin(seq, describe(&job));
            // Its waits for the client end where the request's time does.
            job.exchange.start(slot.limit.and_then(|l| Instant::now().checked_add(l)));
            crate::sys::policy::before_job(sched.running() == 1);
            runner.run(py, job);
            if slot.end() {
                runner.after_interrupted(py, slot.ident.load(std::sync::atomic::Ordering::SeqCst));
                crate::log::warning!("{} finished its interrupted job", slot.name);
            }
            if sched.limits() {
                // Looked at while this job still counts as in progress (`handoff::limit`).
                sched.regulate(Instant::now());
            }
            sched.done(&traits);
            // Response bodies shared with the core threads come back here to be released.
            runner.after_job(py);
            step_back = sched.should_yield();
        }
    });
}
