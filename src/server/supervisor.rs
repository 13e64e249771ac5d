//! The supervisor (`--processes N`, SPEC §2.1 with DESIGN decision 12): binds the listening
//! sockets, starts N server processes by re-executing this binary, restarts them when they die,
//! and replaces them one at a time on SIGHUP.
//!
//! The supervisor owns the listening sockets and hands them to every server process (inherited
//! descriptors, `WSGO_LISTEN_FDS`): all processes accept from the same sockets, one per core
//! thread slot (an SO_REUSEPORT group, so the kernel spreads connections over the slots). A
//! process that stops closes only its copies, so connections waiting in the kernel's queue are
//! never reset: another process accepts them. That is what lets SIGHUP swap processes without a
//! refused or reset connection. The supervisor never starts Python.
//!
//! Children are started with `PR_SET_PDEATHSIG`, so they die with the supervisor. A child that
//! exits is restarted after 100 ms, doubling with each quick failure up to 10 s; a child that
//! cannot load the app (exit 27) before it ever served makes the supervisor exit with that status.

use std::ffi::OsString;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitCode};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::wsgi::interp::EXIT_LOAD_FAILED;

/// The environment variable naming the inherited listening descriptors (`3,4`).
pub const LISTEN_FDS: &str = "WSGO_LISTEN_FDS";
/// The environment variable naming the descriptor a child writes one byte to once it serves.
pub const READY_FD: &str = "WSGO_READY_FD";
/// First restart delay, doubled per quick failure.
const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(10);
/// A child that ran this long counts as having worked: its next failure restarts quickly.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);
/// How long a new child may take to serve during SIGHUP before the old one is kept.
const READY_WAIT: Duration = Duration::from_secs(60);

/// One running server process.
struct Running {
    child: Child,
    started: Instant,
    ready: Option<OwnedFd>,
    served: bool,
}

/// A process slot: its current child, and when to start the next one if it has none.
struct Slot {
    number: usize,
    current: Option<Running>,
    restart_at: Option<Instant>,
    failures: u32,
}

/// Everything a child is started with.
struct Spawner {
    args: Vec<OsString>,
    listeners: Vec<TcpListener>,
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array we own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

impl Spawner {
    fn spawn(&self, number: usize) -> std::io::Result<Running> {
        let (ready_read, ready_write) = pipe()?;
        let mut cmd = Command::new("/proc/self/exe");
        // Shown by ps as the supervisor's own name, not `exe`.
        cmd.arg0(std::env::args_os().next().unwrap_or_else(|| "wsgo".into()));
        cmd.args(&self.args).arg("--process").arg(number.to_string());
        let first = 3;
        let fds: Vec<RawFd> = self.listeners.iter().map(AsRawFd::as_raw_fd).collect();
        let ready_target = first + fds.len() as RawFd;
        let names: Vec<String> = (0..fds.len()).map(|i| (first + i as RawFd).to_string()).collect();
        cmd.env(LISTEN_FDS, names.join(","));
        cmd.env(READY_FD, ready_target.to_string());
        // Fewer malloc arenas: Python's threads otherwise each grow their own (the original
        // sets the same for its children). Kept if the user set GLIBC_TUNABLES.
        if std::env::var_os("GLIBC_TUNABLES").is_none() {
            cmd.env("GLIBC_TUNABLES", "glibc.malloc.arena_max=2");
        }
        let ready_fd = ready_write.as_raw_fd();
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: the closure runs in the child between fork and exec and only makes
        // async-signal-safe calls (dup2, prctl, getppid, kill) on descriptors and values
        // prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                // Listening sockets to 3, 4, ...; dup2 leaves the copies without CLOEXEC. Moved
                // out of the way first, in case a source already sits in the target range.
                let mut moved = Vec::with_capacity(fds.len() + 1);
                for &fd in fds.iter().chain(std::iter::once(&ready_fd)) {
                    let high = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 100);
                    if high < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    moved.push(high);
                }
                for (i, &fd) in moved.iter().enumerate() {
                    if libc::dup2(fd, first + i as RawFd) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The supervisor may have died before the prctl took effect.
                if libc::getppid() != parent {
                    libc::kill(libc::getpid(), libc::SIGTERM);
                }
                // Signals the supervisor blocks for sigwait must not stay blocked in the child.
                let mut none: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut none);
                libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        drop(ready_write);
        Ok(Running { child, started: Instant::now(), ready: Some(ready_read), served: false })
    }
}

impl Running {
    /// Whether the child said it serves (reads its readiness pipe without blocking).
    fn check_ready(&mut self) -> bool {
        if self.served {
            return true;
        }
        if let Some(fd) = &self.ready {
            let mut byte = 0u8;
            // SAFETY: reading one byte into a local from a non-blocking pipe we own.
            let n = unsafe { libc::read(fd.as_raw_fd(), (&mut byte as *mut u8).cast(), 1) };
            if n == 1 {
                self.served = true;
                self.ready = None;
            }
        }
        self.served
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on the pid of a child we started and have not reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
    }
}

fn signal_set() -> libc::sigset_t {
    // SAFETY: the set is initialised by sigemptyset before use; pthread_sigmask only reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGUSR1, libc::SIGUSR2, libc::SIGCHLD] {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Waits up to `timeout` for one of the blocked signals; `None` on timeout.
fn next_signal(set: &libc::sigset_t, timeout: Duration) -> Option<libc::c_int> {
    let ts =
        libc::timespec { tv_sec: timeout.as_secs() as libc::time_t, tv_nsec: timeout.subsec_nanos() as _ };
    // SAFETY: set is initialised; siginfo may be null; ts outlives the call.
    let sig = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &ts) };
    (sig > 0).then_some(sig)
}

fn describe(status: std::process::ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("status {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => "an unknown status".into(),
    }
}

/// Runs the supervisor; `args` are the command line without the program name.
pub fn run(config: &Config, args: Vec<OsString>) -> ExitCode {
    let set = signal_set();
    if config.processes == 0 {
        eprintln!("wsgo: --processes 0: nothing to run");
        return ExitCode::SUCCESS;
    }
    let listeners = match super::bind_listeners(config, None) {
        Ok((l, _)) => l,
        Err(code) => return code,
    };
    let bound = listeners.first().and_then(|l| l.local_addr().ok()).map_or(config.bind, |a| a);
    // Children listen on what was bound (port 0 resolved), through the inherited sockets.
    let mut args = strip_flags(args, &["--http-socket", "--processes", "--process"]);
    args.push("--http-socket".into());
    args.push(bound.to_string().into());
    args.push("--processes".into());
    args.push(config.processes.to_string().into());
    let spawner = Spawner { args, listeners };
    eprintln!(
        "wsgo: supervisor {} starting {} processes on http://{bound}",
        std::process::id(),
        config.processes
    );
    let mut slots: Vec<Slot> = (1..=config.processes)
        .map(|number| Slot { number, current: None, restart_at: Some(Instant::now()), failures: 0 })
        .collect();
    let mut retiring: Vec<Running> = Vec::new();
    let grace = config.request_timeout.unwrap_or(Duration::from_secs(60)) + Duration::from_secs(15);
    loop {
        let now = Instant::now();
        for slot in &mut slots {
            if slot.current.is_none() && slot.restart_at.is_some_and(|t| t <= now) {
                slot.restart_at = None;
                match spawner.spawn(slot.number) {
                    Ok(r) => slot.current = Some(r),
                    Err(e) => {
                        eprintln!("wsgo: cannot start process {}: {e}", slot.number);
                        slot.failures += 1;
                        slot.restart_at = Some(now + backoff(slot.failures));
                    }
                }
            }
            if let Some(r) = slot.current.as_mut() {
                r.check_ready();
            }
        }
        // Reap what exited.
        for slot in &mut slots {
            let Some(r) = slot.current.as_mut() else { continue };
            let Ok(Some(status)) = r.child.try_wait() else { continue };
            let ran = r.started.elapsed();
            let served = r.check_ready();
            slot.current = None;
            if status.code() == Some(EXIT_LOAD_FAILED) && !served {
                eprintln!("wsgo: process {} could not load the application; stopping", slot.number);
                stop_all(&mut slots, &mut retiring, grace);
                return ExitCode::from(EXIT_LOAD_FAILED as u8);
            }
            slot.failures = if ran >= HEALTHY_AFTER { 1 } else { slot.failures + 1 };
            let delay = backoff(slot.failures);
            eprintln!(
                "wsgo: process {} exited with {}; restarting in {delay:?}",
                slot.number,
                describe(status)
            );
            slot.restart_at = Some(Instant::now() + delay);
        }
        retiring.retain_mut(|r| !matches!(r.child.try_wait(), Ok(Some(_))));
        match next_signal(&set, Duration::from_millis(100)) {
            Some(libc::SIGINT | libc::SIGTERM) => {
                eprintln!("wsgo: supervisor stopping its processes...");
                // New connection attempts are dropped from now on (clients see them refused);
                // the sockets then live only in the children, which accept what is queued and
                // close them as they drain.
                for l in &spawner.listeners {
                    if let Err(e) = super::listener::refuse_new(l.as_raw_fd()) {
                        eprintln!("wsgo: cannot stop new connections before draining: {e}");
                    }
                }
                drop(spawner);
                stop_all(&mut slots, &mut retiring, grace);
                eprintln!("wsgo: supervisor shut down.");
                return ExitCode::SUCCESS;
            }
            Some(libc::SIGHUP) => {
                eprintln!("wsgo: SIGHUP: replacing the processes one at a time");
                for slot in &mut slots {
                    if let Some(old) = replace(&spawner, slot) {
                        retiring.push(old);
                    }
                }
            }
            Some(sig @ (libc::SIGUSR1 | libc::SIGUSR2)) => {
                for r in slots.iter().filter_map(|s| s.current.as_ref()) {
                    r.signal(sig);
                }
            }
            _ => {}
        }
    }
}

/// Starts a new process for `slot`, waits until it serves, then asks the old one to drain.
/// Returns the old process (draining), or `None` if the new one failed (the old one is kept).
fn replace(spawner: &Spawner, slot: &mut Slot) -> Option<Running> {
    let mut fresh = match spawner.spawn(slot.number) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("wsgo: cannot start a new process {}: {e}", slot.number);
            return None;
        }
    };
    let deadline = Instant::now() + READY_WAIT;
    while !fresh.check_ready() {
        if let Ok(Some(status)) = fresh.child.try_wait() {
            eprintln!(
                "wsgo: the new process {} exited with {} before serving; keeping the old one",
                slot.number,
                describe(status)
            );
            return None;
        }
        if Instant::now() > deadline {
            eprintln!("wsgo: the new process {} did not start serving; keeping the old one", slot.number);
            fresh.signal(libc::SIGKILL);
            let _ = fresh.child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let old = slot.current.replace(fresh);
    if let Some(o) = &old {
        o.signal(libc::SIGTERM);
    }
    slot.failures = 0;
    old
}

/// SIGTERM to every process, then waits for them (SIGKILL after `grace`).
fn stop_all(slots: &mut [Slot], retiring: &mut Vec<Running>, grace: Duration) {
    let mut all: Vec<Running> = slots.iter_mut().filter_map(|s| s.current.take()).collect();
    all.append(retiring);
    for r in &all {
        r.signal(libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    for r in &mut all {
        loop {
            if let Ok(Some(_)) = r.child.try_wait() {
                break;
            }
            if Instant::now() > deadline {
                r.signal(libc::SIGKILL);
                let _ = r.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(10);
    (FIRST_DELAY * 2u32.pow(exp)).min(MAX_DELAY)
}

/// Removes flags (and their values) from a command line, in all the forms the parser accepts.
pub fn strip_flags(args: Vec<OsString>, flags: &[&str]) -> Vec<OsString> {
    let mut out = Vec::with_capacity(args.len());
    let mut skip_next = false;
    for arg in args {
        if std::mem::take(&mut skip_next) {
            continue;
        }
        let Some(s) = arg.to_str() else {
            out.push(arg);
            continue;
        };
        let long = if s.starts_with("--") { s.to_string() } else { format!("-{s}") };
        match flags.iter().find(|f| long == **f || long.starts_with(&format!("{f}="))) {
            Some(f) if long == *f => skip_next = true,
            Some(_) => {}
            None => out.push(arg),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_stripped_in_every_form() {
        let args: Vec<OsString> =
            ["--module", "app", "--processes", "2", "-http-socket=:8000", "--process=1", "--workers", "4"]
                .iter()
                .map(OsString::from)
                .collect();
        let got = strip_flags(args, &["--http-socket", "--processes", "--process"]);
        assert_eq!(got, ["--module", "app", "--workers", "4"].map(OsString::from).to_vec());
    }

    #[test]
    fn restarts_back_off() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(5), Duration::from_millis(1600));
        assert_eq!(backoff(30), MAX_DELAY);
    }
}
