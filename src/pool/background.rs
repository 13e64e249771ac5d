//! The background-job thread: waits (without the GIL) for the earliest due job, then runs every
//! due job in turn, one at a time, each watched by the monitor like a request (interrupted past
//! [`JOB_LIMIT`](crate::cron::JOB_LIMIT)).

use std::sync::atomic::Ordering::SeqCst;

use pyo3::Python;

use crate::cron::Registry;
use crate::handoff::Runner;
use crate::handoff::slot::{Slot, What};

pub(super) fn run<R: Runner>(runner: &R, jobs: &Registry<R::Task>, slot: &Slot) {
    slot.ident.store(crate::sys::process::thread_id(), SeqCst);
    slot.take_cpu_clock();
    let mut seq = 0u64;
    Python::attach(|py| {
        loop {
            py.detach(|| jobs.wait_until_due());
            // With the GIL, as registration takes it: the same lock order.
            for (task, name) in jobs.take_due() {
                seq += 1;
                slot.begin(seq, What::Text(format!("background job {name}")));
                runner.run_task(py, &task, &name);
                if slot.end() {
                    runner.after_interrupted(py, slot.ident.load(SeqCst));
                    crate::log::warning!("{} finished its interrupted job", slot.name);
                }
            }
        }
    });
}
