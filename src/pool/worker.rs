//! A Python worker thread: attached to the interpreter for life, detached only to wait.
//!
//! Attaching once matters: the outermost attach creates and destroys a thread state each time
//! (14 µs round trip measured here against 4.6 µs with a persistent one).

use std::sync::Arc;

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
        loop {
            let Some(job) = sched.next_job(&mut token) else {
                token = py.detach(|| sched.park(&me));
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
        }
    });
}
