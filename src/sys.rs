//! Calls into libc that the server's process set-up needs: signals delivered through a pipe,
//! accepting with close-on-exec, descriptor flags, scheduling policy.
//!
//! What the application's child processes inherit is decided here (DESIGN decision 15/16's
//! "clean children"): no blocked signals (signals are caught by a handler, not blocked for
//! `sigwait`), SIGPIPE at its default (a handled signal is reset to default by `execve`, an
//! ignored one stays ignored), normal scheduling, and no descriptor of ours (every socket and
//! pipe is close-on-exec from the moment it exists).

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering::SeqCst};

/// The write end of the signal pipe, for the handler (a signal handler can reach nothing else).
static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = SIGNAL_PIPE.load(SeqCst);
    if fd >= 0 {
        let byte = sig as u8;
        // SAFETY: write(2) is async-signal-safe; the byte lives on this stack frame. A full
        // pipe (a burst of signals) drops the byte: the same signal is already pending there.
        unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
    }
}

extern "C" fn ignore(_sig: libc::c_int) {}

fn handle(sig: libc::c_int, handler: extern "C" fn(libc::c_int)) -> io::Result<()> {
    // SAFETY: a zeroed sigaction with a handler address, an empty mask and SA_RESTART is a
    // valid argument; the handler only makes async-signal-safe calls.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Signals that arrive as bytes on a pipe, read by one thread with [`Signals::wait`].
pub struct Signals {
    read: OwnedFd,
}

impl Signals {
    /// Catches `signals` with a handler that writes them to a pipe; makes SIGPIPE a no-op
    /// handler (so a write to a closed socket fails with EPIPE, and children still start with
    /// the default); and unblocks every signal in the calling thread, which the threads it
    /// starts inherit. Call before any other thread starts.
    pub fn install(signals: &[libc::c_int]) -> io::Result<Signals> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two new descriptors into the array we own.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created and belong to nothing else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: fcntl on the pipe's write end we own; a signal handler must never block.
        unsafe {
            let flags = libc::fcntl(fds[1], libc::F_GETFL);
            libc::fcntl(fds[1], libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
        // The write end lives for the rest of the process: the handler may run at any time.
        let old = SIGNAL_PIPE.swap(std::os::fd::IntoRawFd::into_raw_fd(write), SeqCst);
        if old >= 0 {
            // SAFETY: the previous write end came from an earlier install and is ours to close.
            unsafe { libc::close(old) };
        }
        for &sig in signals {
            handle(sig, on_signal)?;
        }
        handle(libc::SIGPIPE, ignore)?;
        // SAFETY: the set is initialised by sigemptyset; an empty mask unblocks everything.
        unsafe {
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        }
        Ok(Signals { read })
    }

    /// Blocks until a caught signal arrives; returns it.
    pub fn wait(&self) -> libc::c_int {
        loop {
            let mut byte = 0u8;
            // SAFETY: reads one byte into a local from the pipe we own.
            let n = unsafe {
                libc::read(std::os::fd::AsRawFd::as_raw_fd(&self.read), (&mut byte as *mut u8).cast(), 1)
            };
            if n == 1 {
                return libc::c_int::from(byte);
            }
        }
    }
}

/// Marks a descriptor close-on-exec.
pub fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl(F_SETFD) on a descriptor the caller owns; only its flags change.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether a descriptor is close-on-exec.
pub fn is_cloexec(fd: RawFd) -> bool {
    // SAFETY: fcntl(F_GETFD) only reads the descriptor's flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    flags >= 0 && flags & libc::FD_CLOEXEC != 0
}

/// Accepts a connection waiting on the listening socket `fd`, close-on-exec from the start (a
/// child process started by the app at that moment cannot inherit it). `nonblock`: for the
/// epoll driver; io_uring takes blocking sockets. `Ok(None)`: nothing is waiting.
pub fn accept(fd: RawFd, nonblock: bool) -> io::Result<Option<(OwnedFd, SocketAddr)>> {
    // SAFETY: sockaddr_storage is plain data; accept4 fills at most `len` bytes of it.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let flags = libc::SOCK_CLOEXEC | if nonblock { libc::SOCK_NONBLOCK } else { 0 };
    // SAFETY: fd is a listening socket; storage and len are valid for writing.
    let conn =
        unsafe { libc::accept4(fd, (&mut storage as *mut libc::sockaddr_storage).cast(), &mut len, flags) };
    if conn < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) | Some(libc::ECONNABORTED) => Ok(None),
            _ => Err(e),
        };
    }
    // SAFETY: accept4 returned a new descriptor that nothing else owns.
    let conn = unsafe { OwnedFd::from_raw_fd(conn) };
    let peer = socket_addr(&storage).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    Ok(Some((conn, peer)))
}

/// The address in a `sockaddr_storage` filled by the kernel (IPv4 or IPv6).
fn socket_addr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, which fits in it.
            let a = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(a.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6, which fits in it.
            let a = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Puts the calling thread under SCHED_BATCH: a wake-up no longer preempts the thread running on
/// that CPU. When a core thread and a Python thread share a CPU, each hand-off would otherwise
/// switch threads at once (a context switch per request); with it, work queues up while the other
/// side runs and is taken as a batch. A policy is inherited by the processes a thread starts
/// (SCHED_RESET_ON_FORK does not reset SCHED_BATCH): Python threads take it only while idle,
/// see [`normal_scheduling`].
pub fn batch_scheduling() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; param is a valid sched_param for SCHED_BATCH.
    unsafe {
        libc::sched_setscheduler(0, libc::SCHED_BATCH, &param);
    }
}

/// Puts the calling thread back under the normal policy (SCHED_OTHER).
pub fn normal_scheduling() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; param is a valid sched_param for SCHED_OTHER.
    unsafe {
        libc::sched_setscheduler(0, libc::SCHED_OTHER, &param);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn accepted_sockets_are_close_on_exec_and_say_who_called() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        assert!(accept(listener.as_raw_fd(), true).unwrap().is_none(), "nobody waits yet");
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let mut got = None;
        for _ in 0..100 {
            got = accept(listener.as_raw_fd(), false).unwrap();
            if got.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let (fd, peer) = got.expect("the connection");
        assert_eq!(peer, client.local_addr().unwrap());
        assert!(is_cloexec(fd.as_raw_fd()));
        // SAFETY: F_GETFL only reads the flags of a descriptor we own.
        let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
        assert_eq!(flags & libc::O_NONBLOCK, 0, "blocking for io_uring");
    }
}
