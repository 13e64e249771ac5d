//! Signals as bytes on a pipe: caught by a handler, read by one thread, never blocked (so the
//! application's child processes start with an empty signal mask).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering::SeqCst};

pub use libc::{SIGCHLD, SIGHUP, SIGINT, SIGKILL, SIGTERM, SIGUSR1, SIGUSR2};

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

    /// Waits up to `timeout` for a caught signal; `None` when none came.
    pub fn wait_timeout(&self, timeout: std::time::Duration) -> Option<libc::c_int> {
        self.wait_timeout_or(&[], timeout)
    }

    /// Waits up to `timeout` for a caught signal, or until one of `fds` is readable (or hung
    /// up); the signal if one came.
    pub fn wait_timeout_or(
        &self,
        fds: &[std::os::fd::RawFd],
        timeout: std::time::Duration,
    ) -> Option<libc::c_int> {
        let mut polled = Vec::with_capacity(fds.len() + 1);
        polled.push(libc::pollfd { fd: self.read.as_raw_fd(), events: libc::POLLIN, revents: 0 });
        polled.extend(fds.iter().map(|&fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 }));
        let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: `polled` is a live array of `polled.len()` pollfds; poll(2) waits at most `ms`
        // and only writes their `revents`.
        let n = unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, ms) };
        (n > 0 && polled[0].revents != 0).then(|| self.wait())
    }

    /// Blocks until a caught signal arrives; returns it.
    pub fn wait(&self) -> libc::c_int {
        loop {
            let mut byte = 0u8;
            // SAFETY: reads one byte into a local from the pipe we own.
            let n = unsafe { libc::read(self.read.as_raw_fd(), (&mut byte as *mut u8).cast(), 1) };
            if n == 1 {
                return libc::c_int::from(byte);
            }
        }
    }
}

/// Sends `sig` to the process `pid`.
pub fn kill(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) takes any pid and signal number; a stale pid only fails.
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}

/// Sends `sig` to this process (caught by its handler like one from outside).
pub fn raise_in_process(sig: libc::c_int) {
    kill(std::process::id(), sig);
}
