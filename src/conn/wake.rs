//! The core thread's wake-up of a worker: once for the jobs of a batch, not at each job.

use std::cell::{Cell, RefCell};
use std::task::{Poll, Waker};

/// Wakes a worker once for all the jobs a core thread queues in one batch of ready connections,
/// rather than at each job. [`BatchWake::run`] is a task of the core's runtime: woken by the
/// first job of a batch, it runs after the connection tasks that were ready before it (the
/// runtime's queue is first in, first out), just before the core thread waits for I/O again.
///
/// Why: at each job, a core thread that had run past its share of the CPU was switched out on
/// its way back from the wake-up (on Linux 6.18 even for a worker asleep under SCHED_BATCH);
/// the worker ran the one job queued so far and slept again. With ~1,000 busy connections that
/// became the steady state: a switch to the worker and back for every request (one core, hello,
/// wrk -c1024: 9.1-10.3 µs of CPU per request against 6.5 at 64 connections, 0.5-1.0 context
/// switches per request against 0.06; with this, 7.1-7.3 µs and 0.01). A batch of requests that
/// arrive one at a time is one job: the task runs right after it.
#[derive(Default)]
pub struct BatchWake {
    due: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl BatchWake {
    /// A job was queued: a worker is to be woken at the end of the batch.
    pub fn note(&self) {
        if !self.due.replace(true)
            && let Some(w) = self.waker.borrow_mut().take()
        {
            w.wake();
        }
    }

    /// The core thread's task: `wake` (a worker for what the batch queued) once per batch that
    /// queued something. Never returns.
    pub async fn run(&self, wake: impl Fn()) {
        loop {
            std::future::poll_fn(|cx| {
                if self.due.replace(false) {
                    return Poll::Ready(());
                }
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            })
            .await;
            wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    /// Lets the tasks that are ready run. (A task that wakes itself goes to the front of the
    /// runtime's queue, so a timer it is.)
    async fn let_others_run() {
        monoio::time::sleep(std::time::Duration::from_millis(1)).await;
    }

    #[test]
    fn one_wake_per_batch_after_the_batch() {
        let mut rt =
            monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().expect("runtime");
        rt.block_on(async {
            let (bw, wakes) = (Rc::new(BatchWake::default()), Rc::new(Cell::new(0)));
            let (b, w) = (bw.clone(), wakes.clone());
            monoio::spawn(async move { b.run(|| w.set(w.get() + 1)).await });
            let_others_run().await;
            assert_eq!(wakes.get(), 0, "nothing queued, nobody woken");
            // A batch: 100 jobs queued by tasks that run one after the other.
            let queued = Rc::new(Cell::new(0));
            for _ in 0..100 {
                let (b, w, q) = (bw.clone(), wakes.clone(), queued.clone());
                monoio::spawn(async move {
                    b.note();
                    assert_eq!(w.get(), 0, "no wake-up while the batch is queued");
                    q.set(q.get() + 1);
                });
            }
            let_others_run().await;
            assert_eq!((queued.get(), wakes.get()), (100, 1), "one wake-up, after the whole batch");
            // The next batch wakes again; a batch that queues nothing does not.
            bw.note();
            let_others_run().await;
            assert_eq!(wakes.get(), 2);
            let_others_run().await;
            assert_eq!(wakes.get(), 2);
        });
    }
}
