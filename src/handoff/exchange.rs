//! The channel between one connection task (core thread) and the Python worker running its
//! request: the response travels one way, the request body and flow control the other.
//!
//! Plain data only crosses here. The worker side blocks on a condition variable (with the GIL
//! released by its caller); the connection side is a future woken through its task's waker, which
//! monoio's `sync` feature lets a foreign thread wake.
//!
//! The [`Mailbox`]: one core thread's doorbell for replies from the Python threads.
//!
//! A connection task waits for its worker's messages; waking a task on another thread goes
//! through monoio's cross-thread path (two global mutexes, a channel, and an eventfd write when
//! the runtime sleeps). Measured on one CPU, a worker draining a batch of requests wrote the
//! eventfd once per response (~0.94 writes per request), because the core thread cannot run, and
//! so mark itself awake, until the worker yields the CPU. Here workers leave the task's waker in
//! the core's mailbox and only the first one after the core last emptied it rings: one
//! cross-thread wake per batch; the core then wakes the tasks locally. On the io_uring driver the
//! ring is the mailbox's own eventfd, which the drain task reads through the ring, rather than
//! monoio's cross-thread waker (see [`Mailbox`]).

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::sync::atomic::{AtomicBool, Ordering::AcqRel, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Poll, Waker};
use std::time::Instant;

use bytes::Bytes;
use crossbeam_queue::SegQueue;

use crate::http::response::ResponseHead;

/// Bytes a worker may have handed over but not yet seen written before it waits: bounds the
/// memory a fast generator and a slow client can pin.
pub const MAX_UNSENT: usize = 1 << 20;
/// What each queued body message counts for beyond its bytes, so that a generator of tiny (or
/// one-byte) items is held back too: at most `MAX_UNSENT / MESSAGE_COST` messages wait.
pub const MESSAGE_COST: usize = 256;
/// Largest body piece a worker asks the connection for at once.
pub const MAX_BODY_PIECE: usize = 1 << 20;

/// What the worker tells the connection.
#[derive(Debug)]
pub enum ToConn {
    /// The whole response at once (list bodies: one wake for the request).
    Full(ResponseHead, Bytes),
    /// The head of a streamed response; chunks follow.
    Head(ResponseHead),
    /// A piece of a streamed body, to be sent at once (prompt flushing).
    Chunk(Bytes),
    /// The streamed body is complete.
    End,
    /// The response cannot be completed (the application failed after the head was sent, or
    /// the client did not keep up before the request's deadline): close without completing it.
    Abort,
    /// The request will not run: it waited past `--request-timeout` in the queue, or the full
    /// queue refused it as its lowest-scored job. The connection answers 504.
    Refused,
    /// The application wants more of the request body: at least `min` bytes (fewer only at its
    /// end), at most `max`.
    ReadBody {
        /// At least this many bytes (fewer only at the end of the body).
        min: usize,
        /// At most this many.
        max: usize,
    },
    /// Serve the file the head's `X-Sendfile` names; the request head comes back for its
    /// conditional and range fields.
    Sendfile(ResponseHead, Box<crate::http::RequestHead>),
    /// The app parked the request (`X-WSGo-Park`); what a retry needs comes back.
    Park(Box<super::ParkRequest>),
}

/// The answer to a [`ToConn::ReadBody`].
#[derive(Debug, PartialEq, Eq)]
pub enum BodyPiece {
    /// More of the body.
    Data(Bytes),
    /// The body is complete.
    End,
    /// The body could not be read (client gone, timeout, bad framing).
    Failed,
}

#[derive(Default)]
struct ConnSide {
    msgs: VecDeque<ToConn>,
    waker: Option<Waker>,
}

#[derive(Default)]
struct WorkerSide {
    body: Option<BodyPiece>,
    /// Bytes (and [`MESSAGE_COST`] per message) handed over and not yet written.
    unsent: usize,
    /// The worker asked for body beyond what came with the job.
    streamed: bool,
    /// The request's deadline: a wait for the client ends there.
    deadline: Option<Instant>,
    /// The worker waits on the condition variable (a notification is a system call: skipped
    /// when nobody waits).
    waiting: bool,
}

/// One request's exchange.
#[derive(Default)]
pub struct Exchange {
    conn: Mutex<ConnSide>,
    worker: Mutex<WorkerSide>,
    worker_cv: Condvar,
    /// The connection is gone (closed, reset, timed out, or given up on): the worker stops at
    /// its next step, nothing more is read or written. Set under the worker lock, read without.
    gone: AtomicBool,
    /// The connection's core thread's mailbox; without one, the task is woken directly.
    mailbox: Option<Arc<Mailbox>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere while holding it; the data is plain state
    // that stays consistent, so keep going rather than take the process down.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Exchange {
    /// An exchange whose connection task is woken directly (tests).
    pub fn new() -> Exchange {
        Exchange::default()
    }

    /// An exchange whose connection task is woken through its core thread's mailbox.
    pub fn with_mailbox(mailbox: Arc<Mailbox>) -> Exchange {
        Exchange { mailbox: Some(mailbox), ..Exchange::default() }
    }

    // ----- worker side -----

    /// The worker starts the request: its waits for the client end at `deadline` (the request
    /// timeout), so that a client that does not read or send never holds the worker longer
    /// than the request may run.
    pub fn start(&self, deadline: Option<Instant>) {
        lock(&self.worker).deadline = deadline;
    }

    /// Hands a message to the connection and wakes its task.
    pub fn send(&self, msg: ToConn) {
        let waker = {
            let mut c = lock(&self.conn);
            c.msgs.push_back(msg);
            c.waker.take()
        };
        match (waker, &self.mailbox) {
            (Some(w), Some(mb)) => mb.post(w),
            (Some(w), None) => w.wake(),
            (None, _) => {}
        }
    }

    /// Waits (with the worker lock) until `done` holds, the connection is gone, or the
    /// deadline passes; at the deadline the connection is given up on. Returns the guard and
    /// whether `done` holds.
    fn wait<'a>(
        &'a self,
        mut w: MutexGuard<'a, WorkerSide>,
        done: impl Fn(&WorkerSide) -> bool,
    ) -> (MutexGuard<'a, WorkerSide>, bool) {
        loop {
            if done(&w) {
                return (w, true);
            }
            if self.gone.load(SeqCst) {
                return (w, false);
            }
            w.waiting = true;
            match w.deadline {
                None => w = self.worker_cv.wait(w).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        w.waiting = false;
                        drop(w);
                        self.give_up();
                        return (lock(&self.worker), false);
                    }
                    w = self.worker_cv.wait_timeout(w, d - now).unwrap_or_else(|e| e.into_inner()).0;
                }
            }
            w.waiting = false;
        }
    }

    /// The client did not keep up before the request's deadline: the connection is closed
    /// without completing the response, and the worker is free.
    fn give_up(&self) {
        if !self.gone.swap(true, SeqCst) {
            crate::log::debug!(
                "the client did not read or send in time (--request-timeout); closing its connection"
            );
            self.send(ToConn::Abort);
        }
        self.worker_cv.notify_all();
    }

    /// Sends a body chunk; blocks while too much is unsent. Returns false when the client is
    /// gone, or did not keep up before the deadline. Call with the GIL released.
    pub fn send_chunk(&self, data: Bytes) -> bool {
        {
            let mut w = lock(&self.worker);
            if self.gone.load(SeqCst) {
                return false;
            }
            w.unsent += data.len() + MESSAGE_COST;
        }
        self.send(ToConn::Chunk(data));
        let w = lock(&self.worker);
        self.wait(w, |w| w.unsent <= MAX_UNSENT).1
    }

    /// Whether the chunk about to be sent would have to wait for the client.
    pub fn would_block(&self, len: usize) -> bool {
        lock(&self.worker).unsent + len + MESSAGE_COST > MAX_UNSENT
    }

    /// Asks for at least `min` (fewer only at the end of the body) and at most `max` more body
    /// bytes, and waits for them. Call with the GIL released.
    pub fn read_body(&self, min: usize, max: usize) -> BodyPiece {
        {
            let mut w = lock(&self.worker);
            if self.gone.load(SeqCst) {
                return BodyPiece::Failed;
            }
            w.body = None;
            w.streamed = true;
        }
        let max = max.clamp(1, MAX_BODY_PIECE);
        self.send(ToConn::ReadBody { min: min.clamp(1, max), max });
        let w = lock(&self.worker);
        let (mut w, answered) = self.wait(w, |w| w.body.is_some());
        match w.body.take() {
            Some(piece) if answered => piece,
            _ => BodyPiece::Failed,
        }
    }

    /// Whether the connection is gone.
    pub fn is_gone(&self) -> bool {
        self.gone.load(SeqCst)
    }

    /// Whether the worker read body beyond what came with the job.
    pub fn body_streamed(&self) -> bool {
        lock(&self.worker).streamed
    }

    // ----- connection side -----

    /// The next message from the worker.
    pub async fn recv(&self) -> ToConn {
        poll_fn(|cx| {
            let mut c = lock(&self.conn);
            match c.msgs.pop_front() {
                Some(m) => Poll::Ready(m),
                None => {
                    if !c.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                        c.waker = Some(cx.waker().clone());
                    }
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// The request's deadline, once a worker has started it.
    pub fn deadline(&self) -> Option<Instant> {
        lock(&self.worker).deadline
    }

    /// Answers a [`ToConn::ReadBody`].
    pub fn deliver_body(&self, piece: BodyPiece) {
        lock(&self.worker).body = Some(piece);
        self.worker_cv.notify_all();
    }

    /// A body chunk of `n` bytes was written to the client.
    pub fn wrote(&self, n: usize) {
        let mut w = lock(&self.worker);
        let was_full = w.unsent > MAX_UNSENT;
        w.unsent = w.unsent.saturating_sub(n + MESSAGE_COST);
        if was_full && w.unsent <= MAX_UNSENT {
            drop(w);
            self.worker_cv.notify_all();
        }
    }

    /// The connection is closed; the worker stops at its next step.
    pub fn set_gone(&self) {
        let w = lock(&self.worker);
        self.gone.store(true, SeqCst);
        let waiting = w.waiting;
        drop(w);
        if waiting {
            self.worker_cv.notify_all();
        }
    }

    /// The client closed or reset its connection while the request waited or ran: a queued
    /// request is never run, a running one fails its next body read or write, and the
    /// connection task is told to stop.
    pub fn client_gone(&self) {
        if !self.gone.load(SeqCst) {
            self.set_gone();
            self.send(ToConn::Abort);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::{Context, Wake};

    struct Flag(std::sync::atomic::AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn messages_arrive_in_order_and_wake_the_task() {
        let ex = Exchange::new();
        let flag = Arc::new(Flag(false.into()));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        let mut fut = Box::pin(ex.recv());
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        ex.send(ToConn::End);
        assert!(flag.0.load(std::sync::atomic::Ordering::SeqCst));
        assert!(matches!(fut.as_mut().poll(&mut cx), Poll::Ready(ToConn::End)));
    }

    #[test]
    fn body_requests_are_answered_across_threads() {
        let ex = Arc::new(Exchange::new());
        let worker = {
            let ex = ex.clone();
            std::thread::spawn(move || (ex.read_body(1, 10), ex.read_body(1, 10)))
        };
        for answer in [BodyPiece::Data(Bytes::from_static(b"abc")), BodyPiece::End] {
            loop {
                let msg = lock(&ex.conn).msgs.pop_front();
                match msg {
                    Some(ToConn::ReadBody { min: 1, max: 10 }) => break,
                    Some(other) => panic!("unexpected {other:?}"),
                    None => std::thread::yield_now(),
                }
            }
            ex.deliver_body(answer);
        }
        let (a, b) = worker.join().unwrap();
        assert_eq!(a, BodyPiece::Data(Bytes::from_static(b"abc")));
        assert_eq!(b, BodyPiece::End);
    }

    #[test]
    fn a_slow_client_holds_the_producer_until_written_or_gone() {
        let ex = Arc::new(Exchange::new());
        assert!(ex.send_chunk(Bytes::from(vec![0; MAX_UNSENT - MESSAGE_COST])));
        let producer = {
            let ex = ex.clone();
            std::thread::spawn(move || ex.send_chunk(Bytes::from_static(b"more")))
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!producer.is_finished(), "must wait while over the limit");
        ex.wrote(MAX_UNSENT - MESSAGE_COST);
        assert!(producer.join().unwrap());
        ex.wrote(4);
        assert!(ex.send_chunk(Bytes::from(vec![0; MAX_UNSENT - MESSAGE_COST])));
        let producer = {
            let ex = ex.clone();
            std::thread::spawn(move || ex.send_chunk(Bytes::from_static(b"x")))
        };
        ex.set_gone();
        assert!(!producer.join().unwrap(), "gone is reported");
        assert_eq!(ex.read_body(1, 1), BodyPiece::Failed);
    }

    #[test]
    fn tiny_chunks_count_against_the_limit() {
        let ex = Arc::new(Exchange::new());
        let producer = {
            let ex = ex.clone();
            std::thread::spawn(move || {
                let mut sent = 0;
                while sent < 100_000 && ex.send_chunk(Bytes::from_static(b"x")) {
                    sent += 1;
                }
                sent
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(100));
        let queued = lock(&ex.conn).msgs.len();
        assert_eq!(queued, MAX_UNSENT / (MESSAGE_COST + 1) + 1, "one-byte items wait too");
        ex.set_gone();
        assert_eq!(producer.join().unwrap(), queued - 1);
    }

    #[test]
    fn waits_for_the_client_end_at_the_deadline() {
        use std::time::Duration;
        let ex = Arc::new(Exchange::new());
        let flag = Arc::new(Flag(false.into()));
        lock(&ex.conn).waker = Some(Waker::from(flag.clone()));
        ex.start(Some(Instant::now() + Duration::from_millis(150)));
        let t0 = Instant::now();
        assert!(ex.send_chunk(Bytes::from(vec![0; MAX_UNSENT / 2])));
        assert!(!ex.send_chunk(Bytes::from(vec![0; MAX_UNSENT])), "given up at the deadline");
        let waited = t0.elapsed();
        assert!(waited >= Duration::from_millis(140) && waited < Duration::from_secs(2), "{waited:?}");
        assert!(ex.is_gone());
        let msgs: Vec<ToConn> = lock(&ex.conn).msgs.drain(..).collect();
        assert!(matches!(msgs.last(), Some(ToConn::Abort)), "the connection is told to close: {msgs:?}");
        assert!(flag.0.load(std::sync::atomic::Ordering::SeqCst));
        // A body read past the deadline fails at once.
        assert_eq!(ex.read_body(1, 10), BodyPiece::Failed);
        let ex = Exchange::new();
        ex.start(Some(Instant::now() + Duration::from_millis(50)));
        let t0 = Instant::now();
        assert_eq!(ex.read_body(1, 10), BodyPiece::Failed, "a client that sends nothing");
        assert!(t0.elapsed() < Duration::from_secs(2));
    }
}

// ---------- the mailbox ----------

/// The mailbox of one core thread.
///
/// With the io_uring driver the core's drain task rings through a doorbell of its own: an
/// eventfd it reads through the ring, so a worker's ring completes that read and the runtime
/// wakes the task locally. Through monoio's cross-thread waker instead, the wake-up took two
/// trips into the kernel where one does: the eventfd's completion ended the core's wait, and
/// the waker, left in monoio's channel, was taken only at the next park, which then entered the
/// ring once more with nothing to submit (one `io_uring_enter` more per ring, and monoio's
/// channel and mutexes; strace on the core thread, one keep-alive connection: 4 entries per
/// request against the Rust-only reply's 2). The epoll driver keeps the waker: it cannot wait
/// for an eventfd read.
pub struct Mailbox {
    wakers: SegQueue<Waker>,
    /// A wake of the drain task is on its way (or the task is draining).
    rung: AtomicBool,
    drainer: Mutex<Option<Waker>>,
    /// The doorbell, while the drain task reads it (see [`Mailbox::with_bell`]).
    bell: Option<std::os::fd::OwnedFd>,
    /// The drain task reads the doorbell: a ring through it is heard. Cleared for good if a
    /// read of it fails; posters then wake the task through its waker.
    bell_heard: AtomicBool,
}

impl Default for Mailbox {
    fn default() -> Mailbox {
        // Rung until the drain task first runs: nobody to wake before that, and it drains first.
        Mailbox {
            wakers: SegQueue::new(),
            rung: AtomicBool::new(true),
            drainer: Mutex::new(None),
            bell: None,
            bell_heard: AtomicBool::new(false),
        }
    }
}

impl Mailbox {
    /// An empty mailbox whose drain task is woken through its waker (any driver).
    pub fn new() -> Mailbox {
        Mailbox::default()
    }

    /// An empty mailbox with a doorbell, for a core thread on the io_uring driver (its drain
    /// task reads the doorbell through the ring). Without an eventfd, a plain mailbox.
    pub fn with_bell() -> Mailbox {
        match crate::sys::process::eventfd() {
            Ok(fd) => Mailbox { bell: Some(fd), bell_heard: AtomicBool::new(true), ..Mailbox::default() },
            Err(e) => {
                crate::log::warning!(
                    "no eventfd for a core thread's mailbox ({e}); its tasks are woken through monoio"
                );
                Mailbox::default()
            }
        }
    }

    /// Leaves a task's waker for the core thread; wakes the core's drain task if nobody has.
    pub fn post(&self, waker: Waker) {
        self.wakers.push(waker);
        if !self.rung.swap(true, AcqRel) {
            if let Some(bell) = &self.bell
                && self.bell_heard.load(SeqCst)
                && crate::sys::process::ring(std::os::fd::AsRawFd::as_raw_fd(bell)).is_ok()
            {
                return;
            }
            let drainer = lock(&self.drainer).clone();
            if let Some(d) = drainer {
                d.wake();
            }
        }
    }

    /// Wakes every task whose waker was left, and keeps the drain task's waker for the next ring.
    fn empty(&self, cx: &std::task::Context<'_>) {
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
    }

    /// The drain task: runs on the core thread for the life of its runtime.
    pub async fn drain(&self) {
        if let Some(bell) = &self.bell {
            if let Err(e) = self.drain_bell(bell).await {
                crate::log::warning!(
                    "a core thread's doorbell failed ({e}); its tasks are woken through monoio"
                );
            }
            // Posters wake the task through its waker from now on; what rang the bell
            // meanwhile is emptied by the first poll below.
            self.bell_heard.store(false, SeqCst);
        }
        poll_fn(|cx| {
            self.empty(cx);
            Poll::<()>::Pending
        })
        .await
    }

    /// Empties the mailbox whenever the doorbell rings (or the task is woken); returns only if
    /// reading the doorbell fails.
    async fn drain_bell(&self, bell: &std::os::fd::OwnedFd) -> std::io::Result<()> {
        let file = monoio::fs::File::from_std(std::fs::File::from(bell.try_clone()?))?;
        let mut count = Vec::with_capacity(8);
        loop {
            let mut read = std::pin::pin!(file.read_at(count, 0));
            let (res, buf) = poll_fn(|cx| {
                self.empty(cx);
                read.as_mut().poll(cx)
            })
            .await;
            match res? {
                8 => {}
                // Not an eventfd's counter: the doorbell cannot be trusted to wait.
                n => return Err(std::io::Error::other(format!("read {n} bytes of 8"))),
            }
            count = buf;
            count.clear();
        }
    }
}

#[cfg(test)]
mod mailbox_tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::task::{Context, Wake};
    use std::time::Duration;

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

    /// Exchanges whose replies come from four threads at once, on a runtime of the io_uring
    /// driver, each awaited by a task of that runtime: every reply arrives (none is left unheard
    /// in the mailbox), within a deadline rather than a hang.
    fn replies_from_threads_all_arrive(mb: Arc<Mailbox>) {
        let mut rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .enable_timer()
            .build()
            .expect("io_uring runtime");
        rt.block_on(async move {
            let drainer = mb.clone();
            monoio::spawn(async move { drainer.drain().await });
            for round in 0..50 {
                let exchanges: Vec<Arc<Exchange>> =
                    (0..40).map(|_| Arc::new(Exchange::with_mailbox(mb.clone()))).collect();
                let waiting: Vec<_> = exchanges
                    .iter()
                    .map(|ex| {
                        let ex = ex.clone();
                        monoio::spawn(async move { matches!(ex.recv().await, ToConn::End) })
                    })
                    .collect();
                // Let the tasks start waiting before the replies come.
                monoio::time::sleep(Duration::from_millis(1)).await;
                let senders: Vec<_> = exchanges
                    .chunks(10)
                    .map(|part| {
                        let part = part.to_vec();
                        std::thread::spawn(move || part.iter().for_each(|ex| ex.send(ToConn::End)))
                    })
                    .collect();
                for w in waiting {
                    let got = monoio::time::timeout(Duration::from_secs(5), w).await;
                    assert_eq!(got, Ok(true), "round {round}: a reply was not heard");
                }
                for s in senders {
                    s.join().expect("sender");
                }
            }
        });
    }

    #[test]
    fn the_doorbell_wakes_the_core_for_replies_from_any_thread() {
        let mb = Arc::new(Mailbox::with_bell());
        assert!(mb.bell.is_some() && mb.bell_heard.load(SeqCst));
        replies_from_threads_all_arrive(mb.clone());
        assert!(mb.bell_heard.load(SeqCst), "the doorbell kept working");
    }

    #[test]
    fn a_doorbell_that_cannot_be_read_falls_back_to_the_waker() {
        // /dev/null reads as 0 bytes at once: not an eventfd's counter.
        let null = std::fs::File::open("/dev/null").expect("/dev/null");
        let mb = Arc::new(Mailbox {
            bell: Some(null.into()),
            bell_heard: AtomicBool::new(true),
            ..Mailbox::default()
        });
        replies_from_threads_all_arrive(mb.clone());
        assert!(!mb.bell_heard.load(SeqCst), "posters were told to use the waker");
    }
}
