//! Deadlines and shutdown for one core thread's connections, without a timer per I/O operation.
//!
//! Each connection registers its socket with a deadline for what it is doing (reading a head,
//! waiting idle, reading a body, writing a response) or none (waiting for the application). A
//! sweep every [`SWEEP_EVERY`] shuts down the sockets whose deadline has passed, which ends their
//! pending read or write. Registering a timer for every read and write cost more than the rest of
//! the connection's user-space work; this costs a `Cell` store.

use std::cell::{Cell, RefCell};
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use slab::Slab;

/// How often deadlines are checked: a timeout fires up to this late.
pub const SWEEP_EVERY: Duration = Duration::from_millis(100);

struct Entry {
    fd: RawFd,
    deadline: Cell<Option<Instant>>,
    /// Waiting for the next request: closed at once on shutdown.
    idle: Cell<bool>,
}

/// The connections of one core thread.
#[derive(Default)]
pub struct Watch {
    conns: RefCell<Slab<Entry>>,
}

fn shutdown(fd: RawFd) {
    // SAFETY: the fd belongs to a registered connection on this thread, which deregisters before
    // its socket is closed; shutdown(2) only ends the pending operations on it.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
}

impl Watch {
    pub fn new() -> Watch {
        Watch::default()
    }

    pub fn register(&self, fd: RawFd) -> usize {
        self.conns.borrow_mut().insert(Entry { fd, deadline: Cell::new(None), idle: Cell::new(false) })
    }

    pub fn remove(&self, key: usize) {
        self.conns.borrow_mut().try_remove(key);
    }

    pub fn set_deadline(&self, key: usize, deadline: Option<Instant>) {
        if let Some(e) = self.conns.borrow().get(key) {
            e.deadline.set(deadline);
        }
    }

    pub fn set_idle(&self, key: usize, idle: bool) {
        if let Some(e) = self.conns.borrow().get(key) {
            e.idle.set(idle);
        }
    }

    /// Shuts down every connection whose deadline has passed; returns how many.
    pub fn sweep(&self, now: Instant) -> usize {
        let conns = self.conns.borrow();
        let mut n = 0;
        for (_, e) in conns.iter() {
            if e.deadline.get().is_some_and(|d| d <= now) {
                e.deadline.set(None);
                shutdown(e.fd);
                n += 1;
            }
        }
        n
    }

    /// Shuts down every idle connection (at shutdown).
    pub fn close_idle(&self) {
        for (_, e) in self.conns.borrow().iter() {
            if e.idle.get() {
                shutdown(e.fd);
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
    fn sweeps_only_what_is_due_and_closes_only_idle_on_shutdown() {
        let watch = Watch::new();
        let (mut a, _a_peer) = UnixStream::pair().unwrap();
        let (mut b, _b_peer) = UnixStream::pair().unwrap();
        let (mut c, _c_peer) = UnixStream::pair().unwrap();
        let now = Instant::now();
        let ka = watch.register(a.as_raw_fd());
        let kb = watch.register(b.as_raw_fd());
        let kc = watch.register(c.as_raw_fd());
        watch.set_deadline(ka, Some(now - Duration::from_millis(1)));
        watch.set_deadline(kb, Some(now + Duration::from_secs(60)));
        assert_eq!(watch.sweep(now), 1);
        assert!(closed(&mut a));
        assert!(!closed(&mut b));
        assert_eq!(watch.sweep(now), 0, "a swept deadline does not fire twice");
        watch.set_idle(kc, true);
        watch.close_idle();
        assert!(closed(&mut c));
        assert!(!closed(&mut b));
        watch.remove(kb);
        watch.remove(kb);
        assert_eq!(watch.conns.borrow().len(), 2);
    }
}
