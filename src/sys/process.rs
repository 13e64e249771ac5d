//! The process and its threads: the open-file limit, glibc's heap thresholds, thread identity,
//! and what a child process is given between fork and exec.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// The open-file limit (soft and hard).
fn open_file_limit() -> io::Result<libc::rlimit> {
    // SAFETY: getrlimit with a valid, initialised rlimit struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(lim)
    }
}

/// Raises the open-file limit to its hard maximum: each connection is a descriptor.
pub fn raise_fd_limit() {
    if let Ok(mut lim) = open_file_limit()
        && lim.rlim_cur < lim.rlim_max
    {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: setrlimit with a valid, initialised rlimit struct.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    }
}

/// Grows the process's descriptor table now to hold descriptors up to `n` (at most the open-file
/// limit). The kernel grows the table by doubling when a new descriptor does not fit, and in a
/// process with more than one thread each growth first waits for an RCU grace period
/// (`expand_files` -> `synchronize_rcu`), in the call that opened the descriptor: a core thread's
/// `accept4`, with every connection of that core waiting (11-13 ms a growth here: the first 256
/// connections of a new process waited 12 ms for their first response, bjoern's 2 ms). Grown
/// once at the start, the table never shrinks. The kernel keeps ~8 bytes per slot (128 KiB for
/// 16,384).
pub fn reserve_fds(n: usize) -> io::Result<()> {
    let limit = open_file_limit()?.rlim_cur;
    let top = n.min(usize::try_from(limit).unwrap_or(usize::MAX).saturating_sub(1)).min(i32::MAX as usize);
    // SAFETY: eventfd creates a descriptor we own (closed below).
    let probe = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if probe < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `probe` is open; F_DUPFD_CLOEXEC takes the lowest free descriptor at or above
    // `top`, which makes the kernel grow the table to hold it; both are closed at once.
    unsafe {
        let high = libc::fcntl(probe, libc::F_DUPFD_CLOEXEC, top as libc::c_int);
        let err = io::Error::last_os_error();
        libc::close(probe);
        if high < 0 {
            return Err(err);
        }
        libc::close(high);
    }
    Ok(())
}

/// Sets glibc's heap thresholds: allocations from `mmap` bytes get their own mapping, and up to
/// `trim` free bytes at the top of a heap are kept. Call before any other thread starts.
pub fn set_malloc_thresholds(mmap: i32, trim: i32) {
    // SAFETY: mallopt only adjusts allocator parameters; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, mmap);
        libc::mallopt(libc::M_TRIM_THRESHOLD, trim);
    }
}

/// mimalloc's `mi_option_purge_delay` (its place in `mi_option_t`, which the Rust bindings do
/// not name): how long, in ms, its free memory stays before it goes back to the system.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Has the allocator (mimalloc, the binary's global allocator) keep memory it has free for `ms`
/// before it goes back to the system: what a burst of connections used is there for the next
/// burst instead of faulted in again page by page.
pub fn keep_free_memory_ms(ms: std::os::raw::c_long) {
    // SAFETY: mi_option_set takes an option number and a value; mimalloc reads the option at
    // each purge, from any thread.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, ms) }
}

/// Has the allocator return the calling thread's free pages to the system now, whatever its
/// purge delay. Without it they go back only when the thread next allocates enough to look at
/// them, and not before the delay. It walks the thread's heap and takes in blocks other threads
/// freed into it: ~3 ms for a core thread holding 10,000 connections.
pub fn release_free_memory() {
    // SAFETY: mi_collect takes no pointers; it walks the calling thread's own heap.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// Turns transparent huge pages off for the calling process and those it starts (the flag
/// survives fork and exec): page faults map 4 KiB pages, whatever the memory was advised.
pub fn disable_huge_pages() -> io::Result<()> {
    // SAFETY: PR_SET_THP_DISABLE takes integers only and changes no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// The calling thread's POSIX identifier, which CPython uses as `threading.get_ident()`.
pub fn thread_id() -> u64 {
    // SAFETY: pthread_self has no preconditions.
    unsafe { libc::pthread_self() as u64 }
}

/// CPU time the whole process has used (user and system, every thread).
pub fn cpu_time() -> std::time::Duration {
    clock_time(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// The calling thread's CPU-time clock, which every thread of the process can read
/// ([`clock_time`]); `None` where the system has none.
pub fn thread_cpu_clock() -> Option<libc::clockid_t> {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: pthread_self is the calling thread, alive; the id goes into our local.
    (unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) } == 0).then_some(clock)
}

/// The time on `clock` (for a thread's CPU clock, the CPU time it has used); zero if it cannot be
/// read (the thread has ended: the kernel finds no thread of this process behind the id).
pub fn clock_time(clock: libc::clockid_t) -> std::time::Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes only into the timespec we own; an unknown clock is EINVAL.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return std::time::Duration::ZERO;
    }
    std::time::Duration::new(ts.tv_sec.max(0) as u64, ts.tv_nsec.clamp(0, 999_999_999) as u32)
}

/// The system's page size in bytes.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(0) as u64
}

/// A pipe, both ends close-on-exec and non-blocking: (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array we own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// An eventfd (counter 0, close-on-exec, blocking: an io_uring read of it waits in the ring).
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes integers only and returns a new descriptor or -1.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just created and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds one to an eventfd's counter, waking whoever reads it. Fails only if the counter would
/// overflow (2^64 - 2 rings unread) or the descriptor is bad; a failed ring is reported, not
/// retried: the reader wakes for the rings already counted.
pub fn ring(fd: RawFd) -> io::Result<()> {
    let one = 1u64;
    // SAFETY: writes the 8 bytes of `one`, which lives across the call.
    let n = unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
    if n == 8 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// This process's resident memory in bytes, from /proc/self/statm (0 if it cannot be read).
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * page_size()
}

/// In a child between fork and exec: moves `fds` to descriptors `first, first + 1, ...` (without
/// close-on-exec, so the new program inherits them), asks for SIGTERM when the parent `parent`
/// dies (and sends it at once if it already has), and clears the signal mask.
///
/// # Safety
/// Only async-signal-safe calls are made, as a `pre_exec` closure requires; call it only there,
/// with descriptors and values prepared before the fork.
pub unsafe fn prepare_child(fds: &[RawFd], first: RawFd, parent: u32) -> io::Result<()> {
    // SAFETY: async-signal-safe calls (fcntl, dup2, prctl, getppid, kill, sigprocmask) on values
    // prepared before the fork; the caller runs this between fork and exec.
    unsafe {
        // Moved out of the way first, in case a source already sits in the target range. At most
        // a handful: a fixed array, no allocation after fork.
        let mut moved = [0 as RawFd; 64];
        if fds.len() > moved.len() {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        for (i, &fd) in fds.iter().enumerate() {
            let high = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 100);
            if high < 0 {
                return Err(io::Error::last_os_error());
            }
            moved[i] = high;
        }
        for (i, &fd) in moved[..fds.len()].iter().enumerate() {
            if libc::dup2(fd, first + i as RawFd) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
            return Err(io::Error::last_os_error());
        }
        // The parent may have died before the prctl took effect.
        if libc::getppid() != parent as libc::pid_t {
            libc::kill(libc::getpid(), libc::SIGTERM);
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    }
    Ok(())
}

/// The CPUs this process may run on (its affinity mask), in order.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data for which all-zeroes is a valid (empty) set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is the calling thread; `set` is valid for writing `size_of` bytes.
    if unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
        return Vec::new();
    }
    // SAFETY: CPU_ISSET reads the set we own, with indices below its capacity.
    (0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) }).collect()
}

/// Restricts the calling thread, and every thread it starts afterwards, to `cpus`. Called at the
/// start of a server process, before any other thread, it restricts the whole process.
pub fn restrict_to_cpus(cpus: &[usize]) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data for which all-zeroes is a valid (empty) set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus.iter().filter(|&&c| c < libc::CPU_SETSIZE as usize) {
        // SAFETY: CPU_SET writes the set we own, at an index below its capacity.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t of the size given.
    if unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// The allocator's purge delay in ms (its default is 1,000; -1 never).
    fn free_memory_kept_ms() -> std::os::raw::c_long {
        // SAFETY: mi_option_get takes an option number and touches no memory of ours.
        unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) }
    }

    /// The option number is mimalloc's purge delay: the one whose default is 1,000 ms (or what
    /// MIMALLOC_PURGE_DELAY says), and it takes what is set.
    #[test]
    fn the_allocators_purge_delay_is_read_and_set() {
        let expected =
            std::env::var("MIMALLOC_PURGE_DELAY").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
        let before = free_memory_kept_ms();
        assert_eq!(before, expected);
        keep_free_memory_ms(10_000);
        assert_eq!(free_memory_kept_ms(), 10_000);
        keep_free_memory_ms(before);
        assert_eq!(free_memory_kept_ms(), before);
    }

    #[test]
    fn a_threads_cpu_clock_reads_from_another_thread_until_it_ends() {
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            tx.send(thread_cpu_clock()).unwrap();
            let start = Instant::now();
            let mut x = 0u64;
            while start.elapsed() < Duration::from_millis(30) {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
            done_rx.recv().unwrap();
        });
        let clock = rx.recv().unwrap().expect("a thread CPU clock");
        std::thread::sleep(Duration::from_millis(60));
        let used = clock_time(clock);
        assert!(used >= Duration::from_millis(10), "the computing thread used {used:?}");
        assert!(used < Duration::from_millis(60), "its clock is its own: {used:?}");
        done_tx.send(()).unwrap();
        t.join().unwrap();
        assert_eq!(clock_time(clock), Duration::ZERO, "an ended thread's clock reads nothing");
        assert!(cpu_time() >= used, "the process's time holds its threads'");
    }
}
