//! The channel between one connection task (core thread) and the Python worker running its
//! request: the response travels one way, the request body and flow control the other.
//!
//! Plain data only crosses here. The worker side blocks on a condition variable (with the GIL
//! released by its caller); the connection side is a future woken through its task's waker, which
//! monoio's `sync` feature lets a foreign thread wake.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Poll, Waker};

use bytes::Bytes;

use super::mailbox::Mailbox;
use crate::http::response::ResponseHead;

/// Bytes a worker may have handed over but not yet seen written before it waits: bounds the
/// memory a fast generator and a slow client can pin.
pub const MAX_UNSENT: usize = 1 << 20;

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
    /// The application failed after the head was sent: close without completing the body.
    Abort,
    /// The application wants up to this many more bytes of the request body.
    ReadBody(usize),
    /// Serve the file the head's `X-Sendfile` names; the request head comes back for its
    /// conditional and range fields.
    Sendfile(ResponseHead, Box<crate::http::RequestHead>),
    /// The app parked the request (`X-WSGo-Park`); what a retry needs comes back.
    Park(Box<ParkRequest>),
}

/// A parked request, as the worker hands it back to the connection.
#[derive(Debug)]
pub struct ParkRequest {
    pub channels: Vec<String>,
    pub timeout: std::time::Duration,
    pub action: crate::park::Action,
    /// The response's `X-WSGo-Block`, if any.
    pub block: Option<i64>,
    pub head: crate::http::RequestHead,
    /// The body received before the request was queued.
    pub body: Bytes,
    pub body_complete: bool,
    /// The app read beyond `body` (from the socket): a retry could not replay it.
    pub streamed: bool,
    pub traits: super::priority::Traits,
}

/// The answer to a [`ToConn::ReadBody`].
#[derive(Debug, PartialEq, Eq)]
pub enum BodyPiece {
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
    /// The connection is gone: stop producing, nothing more will be read or written.
    gone: bool,
    /// Bytes handed over and not yet written.
    unsent: usize,
    /// The worker asked for body beyond what came with the job.
    streamed: bool,
}

/// One request's exchange.
#[derive(Default)]
pub struct Exchange {
    conn: Mutex<ConnSide>,
    worker: Mutex<WorkerSide>,
    worker_cv: Condvar,
    /// The connection's core thread's mailbox; without one, the task is woken directly.
    mailbox: Option<Arc<Mailbox>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere while holding it; the data is plain state
    // that stays consistent, so keep going rather than take the process down.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Exchange {
    pub fn new() -> Exchange {
        Exchange::default()
    }

    /// An exchange whose connection task is woken through its core thread's mailbox.
    pub fn with_mailbox(mailbox: Arc<Mailbox>) -> Exchange {
        Exchange { mailbox: Some(mailbox), ..Exchange::default() }
    }

    // ----- worker side -----

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

    /// Sends a body chunk; blocks while too much is unsent. Returns false when the client is gone.
    /// Call with the GIL released.
    pub fn send_chunk(&self, data: Bytes) -> bool {
        {
            let mut w = lock(&self.worker);
            if w.gone {
                return false;
            }
            w.unsent += data.len();
        }
        self.send(ToConn::Chunk(data));
        let mut w = lock(&self.worker);
        while w.unsent > MAX_UNSENT && !w.gone {
            w = self.worker_cv.wait(w).unwrap_or_else(|e| e.into_inner());
        }
        !w.gone
    }

    /// Whether the chunk about to be sent would have to wait for the client.
    pub fn would_block(&self, len: usize) -> bool {
        lock(&self.worker).unsent + len > MAX_UNSENT
    }

    /// Asks for up to `max` more body bytes and waits for them. Call with the GIL released.
    pub fn read_body(&self, max: usize) -> BodyPiece {
        {
            let mut w = lock(&self.worker);
            if w.gone {
                return BodyPiece::Failed;
            }
            w.body = None;
            w.streamed = true;
        }
        self.send(ToConn::ReadBody(max));
        let mut w = lock(&self.worker);
        loop {
            if let Some(piece) = w.body.take() {
                return piece;
            }
            if w.gone {
                return BodyPiece::Failed;
            }
            w = self.worker_cv.wait(w).unwrap_or_else(|e| e.into_inner());
        }
    }

    pub fn is_gone(&self) -> bool {
        lock(&self.worker).gone
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

    /// Answers a [`ToConn::ReadBody`].
    pub fn deliver_body(&self, piece: BodyPiece) {
        lock(&self.worker).body = Some(piece);
        self.worker_cv.notify_all();
    }

    /// `n` bytes of the body were written to the client.
    pub fn wrote(&self, n: usize) {
        let mut w = lock(&self.worker);
        let was_full = w.unsent > MAX_UNSENT;
        w.unsent = w.unsent.saturating_sub(n);
        if was_full && w.unsent <= MAX_UNSENT {
            drop(w);
            self.worker_cv.notify_all();
        }
    }

    /// The connection is closed; the worker stops at its next step.
    pub fn set_gone(&self) {
        lock(&self.worker).gone = true;
        self.worker_cv.notify_all();
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
            std::thread::spawn(move || (ex.read_body(10), ex.read_body(10)))
        };
        for answer in [BodyPiece::Data(Bytes::from_static(b"abc")), BodyPiece::End] {
            loop {
                let msg = lock(&ex.conn).msgs.pop_front();
                match msg {
                    Some(ToConn::ReadBody(10)) => break,
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
        assert!(ex.send_chunk(Bytes::from(vec![0; MAX_UNSENT])));
        let producer = {
            let ex = ex.clone();
            std::thread::spawn(move || ex.send_chunk(Bytes::from_static(b"more")))
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!producer.is_finished(), "must wait while over the limit");
        ex.wrote(MAX_UNSENT);
        assert!(producer.join().unwrap());
        ex.wrote(4);
        assert!(ex.send_chunk(Bytes::from(vec![0; MAX_UNSENT])));
        let producer = {
            let ex = ex.clone();
            std::thread::spawn(move || ex.send_chunk(Bytes::from_static(b"x")))
        };
        ex.set_gone();
        assert!(!producer.join().unwrap(), "gone is reported");
        assert_eq!(ex.read_body(1), BodyPiece::Failed);
    }
}
