//! Deadlines and shutdown for one core thread's connections, without a timer per I/O operation.
//!
//! Each connection registers its socket with a deadline for what it is doing (reading a head,
//! waiting idle, reading a body, writing a response) or none (waiting for the application). A
//! sweep every [`SWEEP_EVERY`] shuts down the sockets whose deadline has passed, which ends their
//! pending read or write. Registering a timer for every read and write cost more than the rest of
//! the connection's user-space work; this costs a `Cell` store.
//!
//! The sweep also looks whether the clients of requests that wait for or run in a worker are
//! still there: one `poll(2)` over those sockets (no read is pending on them). A client that
//! closed or reset its connection has its exchange told so: a queued request is never run, a
//! running one fails its next body read or write (as the original did). Requests answered within one sweep
//! (nearly all) cost nothing here.
//!
//! And it lets long-idle connections rest: a keep-alive connection waiting for its next request
//! past its rest time has its pending read cancelled, gives back its buffers and its request
//! state, and waits for the socket to become readable holding nothing (see `conn::serve`).

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::{Duration, Instant};

use slab::Slab;

use super::transport::Kick;
use crate::handoff::exchange::Exchange;

/// How often deadlines are checked: a timeout fires up to this late.
pub const SWEEP_EVERY: Duration = Duration::from_millis(100);

struct Entry {
    kick: Kick,
    deadline: Cell<Option<Instant>>,
    /// Waiting for the next request: closed at once on shutdown.
    idle: Cell<bool>,
    /// Waiting for the next request in a read that may be cancelled: when it is to rest.
    rest_at: Cell<Option<Instant>>,
    /// Cancels that read (a socket's; made at its first idle read).
    canceller: RefCell<Option<monoio::io::Canceller>>,
    /// The exchange of a request queued or running in a worker.
    waiting: RefCell<Option<Arc<Exchange>>>,
}

/// The connections of one core thread.
#[derive(Default)]
pub struct Watch {
    conns: RefCell<Slab<Entry>>,
}

/// Ends a registered connection's operations (a deadline passed, or shutdown).
fn shutdown(kick: &Kick) {
    match kick {
        // The fd belongs to a registered connection on this thread, which deregisters before
        // its socket is closed.
        Kick::Fd(fd) => crate::sys::net::shutdown(*fd),
        Kick::Hook(h) => h.shut(),
    }
}

impl Watch {
    /// An empty registry.
    pub fn new() -> Watch {
        Watch::default()
    }

    /// Registers a connection; returns its key.
    pub fn register(&self, kick: Kick) -> usize {
        self.conns.borrow_mut().insert(Entry {
            kick,
            deadline: Cell::new(None),
            idle: Cell::new(false),
            rest_at: Cell::new(None),
            canceller: RefCell::new(None),
            waiting: RefCell::new(None),
        })
    }

    /// Forgets a connection (when it closes).
    pub fn remove(&self, key: usize) {
        self.conns.borrow_mut().try_remove(key);
    }

    /// The deadline of what the connection does now (`None`: none of ours).
    pub fn set_deadline(&self, key: usize, deadline: Option<Instant>) {
        if let Some(e) = self.conns.borrow().get(key) {
            e.deadline.set(deadline);
        }
    }

    /// Whether the connection waits between requests (closed at once on shutdown). Ends the
    /// read [`Watch::idle_read`] started, as far as the sweep is concerned.
    pub fn set_idle(&self, key: usize, idle: bool) {
        if let Some(e) = self.conns.borrow().get(key) {
            e.idle.set(idle);
            e.rest_at.set(None);
        }
    }

    /// The connection waits for its next request in a read the sweep cancels at `rest_at`; a
    /// socket's read takes the returned handle (a scripted stream is reached through its hook).
    pub fn idle_read(&self, key: usize, rest_at: Instant) -> Option<monoio::io::CancelHandle> {
        let conns = self.conns.borrow();
        let e = conns.get(key)?;
        e.idle.set(true);
        e.rest_at.set(Some(rest_at));
        match e.kick {
            Kick::Fd(_) => {
                Some(e.canceller.borrow_mut().get_or_insert_with(monoio::io::Canceller::new).handle())
            }
            Kick::Hook(_) => None,
        }
    }

    /// The connection's request is with a worker (`Some`) or no longer (`None`).
    pub fn set_waiting(&self, key: usize, exchange: Option<Arc<Exchange>>) {
        if let Some(e) = self.conns.borrow().get(key) {
            *e.waiting.borrow_mut() = exchange;
        }
    }

    /// Tells the exchanges of connections whose clients have closed or reset (`POLLRDHUP`,
    /// `POLLHUP`, `POLLERR`: one `poll(2)` for all of them); returns how many.
    pub fn check_waiting(&self) -> usize {
        let conns = self.conns.borrow();
        let mut fds = Vec::new();
        let mut keys = Vec::new();
        let mut gone_keys = Vec::new();
        for (key, e) in conns.iter() {
            if e.waiting.borrow().as_ref().is_none_or(|x| x.is_gone()) {
                continue;
            }
            match &e.kick {
                Kick::Fd(fd) => {
                    fds.push(*fd);
                    keys.push(key);
                }
                Kick::Hook(h) if h.hung_up() => gone_keys.push(key),
                Kick::Hook(_) => {}
            }
        }
        let mut gone = Vec::new();
        crate::sys::net::hung_up(&fds, &mut gone);
        gone_keys.extend(keys.into_iter().zip(gone).filter(|(_, g)| *g).map(|(k, _)| k));
        for &key in &gone_keys {
            if let Some(x) = conns.get(key).and_then(|e| e.waiting.borrow_mut().take()) {
                x.client_gone();
            }
        }
        gone_keys.len()
    }

    /// Shuts down every connection whose deadline has passed, and cancels the idle reads of
    /// those due to rest; returns how many of each.
    pub fn sweep(&self, now: Instant) -> (usize, usize) {
        let conns = self.conns.borrow();
        let (mut shut, mut rested) = (0, 0);
        for (_, e) in conns.iter() {
            if e.deadline.get().is_some_and(|d| d <= now) {
                e.deadline.set(None);
                shutdown(&e.kick);
                shut += 1;
            } else if e.rest_at.get().is_some_and(|t| t <= now) {
                e.rest_at.set(None);
                match &e.kick {
                    Kick::Fd(_) => {
                        let mut c = e.canceller.borrow_mut();
                        // A canceller cancels once; it hands on a fresh one for the next read.
                        *c = c.take().map(monoio::io::Canceller::cancel);
                    }
                    Kick::Hook(h) => h.rest(),
                }
                rested += 1;
            }
        }
        (shut, rested)
    }

    /// Shuts down every idle connection (at shutdown).
    pub fn close_idle(&self) {
        for (_, e) in self.conns.borrow().iter() {
            if e.idle.get() {
                shutdown(&e.kick);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    fn closed(s: &mut UnixStream) -> bool {
        s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        matches!(s.read(&mut [0u8; 8]), Ok(0))
    }

    #[test]
    fn clients_that_leave_are_told_to_their_exchanges() {
        use std::io::Write;
        let watch = Watch::new();
        let (a, a_peer) = UnixStream::pair().unwrap();
        let (b, mut b_peer) = UnixStream::pair().unwrap();
        let (c, c_peer) = UnixStream::pair().unwrap();
        let (ka, kb, kc) = (
            watch.register(Kick::Fd(a.as_raw_fd())),
            watch.register(Kick::Fd(b.as_raw_fd())),
            watch.register(Kick::Fd(c.as_raw_fd())),
        );
        let ex: Vec<Arc<Exchange>> = (0..3).map(|_| Arc::new(Exchange::new())).collect();
        for (k, x) in [ka, kb, kc].into_iter().zip(&ex) {
            watch.set_waiting(k, Some(x.clone()));
        }
        assert_eq!(watch.check_waiting(), 0, "all there");
        // A pipelined request is no departure; a close is, and so is a close not waited on.
        b_peer.write_all(b"GET / HTTP/1.1\r\n").unwrap();
        drop(a_peer);
        watch.set_waiting(kc, None);
        drop(c_peer);
        assert_eq!(watch.check_waiting(), 1);
        assert!(ex[0].is_gone() && !ex[1].is_gone() && !ex[2].is_gone());
        assert_eq!(watch.check_waiting(), 0, "told once");
        drop(b_peer);
        assert_eq!(watch.check_waiting(), 1);
        assert!(ex[1].is_gone());
    }

    #[test]
    fn sweeps_only_what_is_due_and_closes_only_idle_on_shutdown() {
        let watch = Watch::new();
        let (mut a, _a_peer) = UnixStream::pair().unwrap();
        let (mut b, _b_peer) = UnixStream::pair().unwrap();
        let (mut c, _c_peer) = UnixStream::pair().unwrap();
        let now = Instant::now();
        let ka = watch.register(Kick::Fd(a.as_raw_fd()));
        let kb = watch.register(Kick::Fd(b.as_raw_fd()));
        let kc = watch.register(Kick::Fd(c.as_raw_fd()));
        watch.set_deadline(ka, Some(now - Duration::from_millis(1)));
        watch.set_deadline(kb, Some(now + Duration::from_secs(60)));
        assert_eq!(watch.sweep(now), (1, 0));
        assert!(closed(&mut a));
        assert!(!closed(&mut b));
        assert_eq!(watch.sweep(now), (0, 0), "a swept deadline does not fire twice");
        watch.set_idle(kc, true);
        watch.close_idle();
        assert!(closed(&mut c));
        assert!(!closed(&mut b));
        watch.remove(kb);
        watch.remove(kb);
        assert_eq!(watch.conns.borrow().len(), 2);
    }
}
