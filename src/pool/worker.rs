//! A Python worker thread: attached to the interpreter for life, detached only to wait.
//!
//! Attaching once matters: the outermost attach creates and destroys a thread state each time
//! (14 µs round trip measured here against 4.6 µs with a persistent one).

use std::sync::Arc;
use std::time::Instant;

use pyo3::prelude::*;

use super::exchange::ToConn;
use super::scheduler::Scheduler;
use crate::wsgi::App;
use crate::wsgi::call::{error_head, run as run_job};

pub(super) fn run(sched: Arc<Scheduler>, app: Arc<App>) {
    crate::server::batch_scheduling();
    let me = Scheduler::sleeper();
    Python::attach(|py| {
        let mut token = false;
        let mut step_back = false;
        loop {
            let job = if step_back { None } else { sched.next_job(&mut token) };
            let Some(job) = job else {
                let (woken, at) =
                    py.detach(|| (sched.park(&me, std::mem::take(&mut step_back)), Instant::now()));
                token = woken;
                if token {
                    // The GIL was taken back when detach returned: how long did that take?
                    sched.note_gil_wait(at.elapsed());
                }
                continue;
            };
            if job.exchange.is_gone() {
                sched.done();
                continue;
            }
            if sched.request_timeout.is_some_and(|t| job.queued_at.elapsed() > t) {
                let (head, body) = error_head(504);
                job.exchange.send(ToConn::Full(head, body));
                sched.done();
                continue;
            }
            run_job(py, &app, job);
            sched.done();
            step_back = sched.should_yield();
        }
    });
}
