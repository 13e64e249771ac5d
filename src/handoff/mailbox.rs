//! One core thread's doorbell for replies from the Python threads.
//!
//! A connection task waits for its worker's messages; waking a task on another thread goes
//! through monoio's cross-thread path (two global mutexes, a channel, and an eventfd write when
//! the runtime sleeps). Measured on one CPU, a worker draining a batch of requests wrote the
//! eventfd once per response (~0.94 writes per request), because the core thread cannot run, and
//! so mark itself awake, until the worker yields the CPU. Here workers leave the task's waker in
//! the core's mailbox and only the first one after the core last emptied it rings: one
//! cross-thread wake per batch; the core then wakes the tasks locally.

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering::AcqRel, Ordering::SeqCst};
use std::sync::{Mutex, MutexGuard};
use std::task::{Poll, Waker};

use crossbeam_queue::SegQueue;

/// The mailbox of one core thread.
pub struct Mailbox {
    wakers: SegQueue<Waker>,
    /// A wake of the drain task is on its way (or the task is draining).
    rung: AtomicBool,
    drainer: Mutex<Option<Waker>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Default for Mailbox {
    fn default() -> Mailbox {
        // Rung until the drain task first runs: nobody to wake before that, and it drains first.
        Mailbox { wakers: SegQueue::new(), rung: AtomicBool::new(true), drainer: Mutex::new(None) }
    }
}

impl Mailbox {
    pub fn new() -> Mailbox {
        Mailbox::default()
    }

    /// Leaves a task's waker for the core thread; wakes the core's drain task if nobody has.
    pub fn post(&self, waker: Waker) {
        self.wakers.push(waker);
        if !self.rung.swap(true, AcqRel) {
            let drainer = lock(&self.drainer).clone();
            if let Some(d) = drainer {
                d.wake();
            }
        }
    }

    /// The drain task: runs on the core thread for the life of its runtime.
    pub async fn drain(&self) {
        poll_fn(|cx| {
            {
                let mut d = lock(&self.drainer);
                if !d.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *d = Some(cx.waker().clone());
                }
            }
            // Reset before emptying: a waker posted after this rings again.
            self.rung.store(false, SeqCst);
            while let Some(w) = self.wakers.pop() {
                w.wake();
            }
            Poll::<()>::Pending
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::task::{Context, Wake};

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, SeqCst);
        }
    }

    #[test]
    fn one_ring_per_batch_and_every_task_woken() {
        let mb = Mailbox::new();
        let drainer = Arc::new(Count(AtomicUsize::new(0)));
        let dw = Waker::from(drainer.clone());
        let mut cx = Context::from_waker(&dw);
        let mut fut = Box::pin(mb.drain());
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        let tasks: Vec<Arc<Count>> = (0..5).map(|_| Arc::new(Count(AtomicUsize::new(0)))).collect();
        for t in &tasks {
            mb.post(Waker::from(t.clone()));
        }
        assert_eq!(drainer.0.load(SeqCst), 1, "one wake for five posts");
        assert!(tasks.iter().all(|t| t.0.load(SeqCst) == 0));
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        assert!(tasks.iter().all(|t| t.0.load(SeqCst) == 1));
        mb.post(Waker::from(tasks[0].clone()));
        assert_eq!(drainer.0.load(SeqCst), 2, "rings again after a drain");
    }

    #[test]
    fn no_wake_is_lost_across_threads() {
        let mb = Arc::new(Mailbox::new());
        let drainer = Arc::new(Count(AtomicUsize::new(0)));
        let dw = Waker::from(drainer.clone());
        let mut cx = Context::from_waker(&dw);
        let mut fut = Box::pin(mb.drain());
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        let task = Arc::new(Count(AtomicUsize::new(0)));
        let posters: Vec<_> = (0..4)
            .map(|_| {
                let (mb, task) = (mb.clone(), task.clone());
                std::thread::spawn(move || {
                    for _ in 0..5000 {
                        mb.post(Waker::from(task.clone()));
                    }
                })
            })
            .collect();
        let mut polls = 0;
        while posters.iter().any(|p| !p.is_finished()) {
            if drainer.0.swap(0, SeqCst) > 0 {
                assert!(fut.as_mut().poll(&mut cx).is_pending());
                polls += 1;
            }
        }
        for p in posters {
            p.join().unwrap();
        }
        // No waker is left without a ring: if any is queued, the drainer has been woken.
        if !mb.wakers.is_empty() {
            assert!(drainer.0.load(SeqCst) > 0, "wakers queued and the drainer not rung");
        }
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        assert_eq!(task.0.load(SeqCst), 20_000);
        let _ = polls;
    }
}
