//! The supervisor (`--processes N`; README.md, "Processes"): binds the listening
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
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitCode};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::sys::signals::{SIGCHLD, SIGHUP, SIGINT, SIGKILL, SIGTERM, SIGUSR1, SIGUSR2, Signals};
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

impl Spawner {
    fn spawn(&self, number: usize) -> std::io::Result<Running> {
        let (ready_read, ready_write) = crate::sys::process::pipe()?;
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
        // The listening sockets, then the readiness pipe's write end, to 3, 4, ...
        let mut moved = fds;
        moved.push(ready_write.as_raw_fd());
        let parent = std::process::id();
        // SAFETY: the closure runs in the child between fork and exec; `prepare_child` only makes
        // async-signal-safe calls, on descriptors and values prepared before the fork.
        unsafe {
            cmd.pre_exec(move || crate::sys::process::prepare_child(&moved, first, parent));
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
        if let Some(fd) = &self.ready
            && crate::sys::process::read_byte(fd.as_raw_fd())
        {
            self.served = true;
            self.ready = None;
        }
        self.served
    }

    fn signal(&self, sig: i32) {
        // The pid of a child we started and have not reaped.
        crate::sys::signals::kill(self.child.id(), sig);
    }
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
    let caught = [SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGUSR2, SIGCHLD];
    let signals = match Signals::install(&caught) {
        Ok(s) => s,
        Err(e) => {
            crate::log::error!("cannot install the signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    if config.processes == 0 {
        crate::log::info!("--processes 0: nothing to run");
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
    crate::log::info!(
        "supervisor {} starting {} processes on http://{bound}",
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
                        crate::log::error!("cannot start process {}: {e}", slot.number);
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
                crate::log::error!("process {} could not load the application; stopping", slot.number);
                stop_all(&mut slots, &mut retiring, grace);
                return ExitCode::from(EXIT_LOAD_FAILED as u8);
            }
            slot.failures = if ran >= HEALTHY_AFTER { 1 } else { slot.failures + 1 };
            let delay = backoff(slot.failures);
            crate::log::warning!(
                "process {} exited with {}; restarting in {delay:?}",
                slot.number,
                describe(status)
            );
            slot.restart_at = Some(Instant::now() + delay);
        }
        retiring.retain_mut(|r| !matches!(r.child.try_wait(), Ok(Some(_))));
        match signals.wait_timeout(Duration::from_millis(100)) {
            Some(SIGINT | SIGTERM) => {
                crate::log::info!("supervisor stopping its processes...");
                // New connection attempts are dropped from now on (clients see them refused);
                // the sockets then live only in the children, which accept what is queued and
                // close them as they drain.
                for l in &spawner.listeners {
                    if let Err(e) = crate::sys::net::refuse_new(l.as_raw_fd()) {
                        crate::log::error!("cannot stop new connections before draining: {e}");
                    }
                }
                drop(spawner);
                stop_all(&mut slots, &mut retiring, grace);
                crate::log::info!("supervisor shut down.");
                return ExitCode::SUCCESS;
            }
            Some(SIGHUP) => {
                crate::log::info!("SIGHUP: replacing the processes one at a time");
                for slot in &mut slots {
                    if let Some(old) = replace(&spawner, slot) {
                        retiring.push(old);
                    }
                }
            }
            Some(sig @ (SIGUSR1 | SIGUSR2)) => {
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
            crate::log::error!("cannot start a new process {}: {e}", slot.number);
            return None;
        }
    };
    let deadline = Instant::now() + READY_WAIT;
    while !fresh.check_ready() {
        if let Ok(Some(status)) = fresh.child.try_wait() {
            crate::log::warning!(
                "the new process {} exited with {} before serving; keeping the old one",
                slot.number,
                describe(status)
            );
            return None;
        }
        if Instant::now() > deadline {
            crate::log::error!("the new process {} did not start serving; keeping the old one", slot.number);
            fresh.signal(SIGKILL);
            let _ = fresh.child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let old = slot.current.replace(fresh);
    if let Some(o) = &old {
        o.signal(SIGTERM);
    }
    slot.failures = 0;
    old
}

/// SIGTERM to every process, then waits for them (SIGKILL after `grace`).
fn stop_all(slots: &mut [Slot], retiring: &mut Vec<Running>, grace: Duration) {
    let mut all: Vec<Running> = slots.iter_mut().filter_map(|s| s.current.take()).collect();
    all.append(retiring);
    for r in &all {
        r.signal(SIGTERM);
    }
    let deadline = Instant::now() + grace;
    for r in &mut all {
        loop {
            if let Ok(Some(_)) = r.child.try_wait() {
                break;
            }
            if Instant::now() > deadline {
                r.signal(SIGKILL);
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
