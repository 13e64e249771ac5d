//! The supervisor (`--processes N`; README.md, "Processes"): binds the listening sockets (or
//! takes systemd's), starts N server processes by re-executing this binary, restarts them when
//! they die, and replaces them one at a time on SIGHUP, when one asks (`--max-requests`,
//! `--max-rss`) and when the source changes (`--reload`). With `--metrics` it serves every
//! process's metrics.
//!
//! The supervisor owns the listening sockets and hands them to every server process (inherited
//! descriptors, `WSGO_LISTEN_FDS`): an SO_REUSEPORT group with one socket per process, each
//! process's own named in `WSGO_LISTEN_OWN` (`listeners::owned_by_process`). A process accepts
//! from its own and rescues what waits too long on the others'; one that stops closes only its
//! copies, so connections waiting in the kernel's queue are never reset: the others (or its
//! successor, which owns the same sockets) accept them. That is what lets a replacement swap
//! processes without a refused or reset connection: the new process serves before the old one is
//! asked to drain. The supervisor never starts Python.
//!
//! Each process has a control channel to the supervisor (`control`): it says when it serves,
//! asks to be replaced, and reports metrics and the folders of its source. The supervisor's loop
//! never blocks on a process: it reads the channels, reaps, advances the one replacement under
//! way, and waits for a signal for at most [`TICK`].
//!
//! Children are started with `PR_SET_PDEATHSIG`, so they die with the supervisor. A child that
//! exits is restarted after 100 ms, doubling with each quick failure up to 10 s; a child that
//! cannot load the app (exit 27) before it ever served makes the supervisor exit with that status
//! (with `--reload`, it waits for the next edit instead).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::fd::RawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitCode};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::control::{Channel, Closed, MAX_MESSAGE, Message, Outgoing};
use super::fleet::{Fleet, Heard as FromFleet};
use super::hub::{Hub, To};
use super::listeners::{self, Listening};
use super::reload::Reloader;
use crate::config::Config;
use crate::share::Shared;
use crate::sys::signals::{SIGCHLD, SIGHUP, SIGINT, SIGKILL, SIGTERM, SIGUSR1, SIGUSR2, Signals};
use crate::wsgi::interp::EXIT_LOAD_FAILED;

/// The environment variable naming the inherited listening descriptors (`3,4`).
pub const LISTEN_FDS: &str = "WSGO_LISTEN_FDS";
/// The environment variable naming which of them are the process's own (`3,5`); the others it
/// only rescues connections from (`listeners::owned_by_process`).
pub const LISTEN_OWN: &str = "WSGO_LISTEN_OWN";
/// The environment variable naming a process's share of the CPUs (`0,1`).
pub const CPUS: &str = "WSGO_CPUS";
/// First restart delay, doubled per quick failure.
const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(10);
/// A child that ran this long counts as having worked: its next failure restarts quickly.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);
/// How long a replacement may take to serve before the old process is kept.
const READY_WAIT: Duration = Duration::from_secs(60);
/// The loop's longest wait.
const TICK: Duration = Duration::from_millis(50);
/// The wait instead while messages wait for a process's channel to take them.
const FLUSH_EVERY: Duration = Duration::from_millis(2);
/// `--redis`: how long the processes' `caught-up` waits for the fleet's blocks in force (read
/// from Redis when the supervisor subscribes); then they serve without them.
const FLEET_CATCH_UP_WAIT: Duration = Duration::from_secs(2);

/// One running server process.
struct Running {
    child: Child,
    started: Instant,
    control: Channel,
    /// What its channel could not take yet.
    outgoing: Outgoing,
    /// Told `caught-up`.
    caught_up: bool,
    served: bool,
    /// How busy it said its CPUs were lately (`--incoming-cpu`'s guard).
    busy: Option<u16>,
    /// Whether its sockets ask for its CPUs' connections (`--incoming-cpu`; it starts so).
    steering: super::steering::Guard,
}

impl Running {
    /// Sends it a message, after what waits for it already.
    fn tell(&mut self, m: &Message) {
        let dropped = self.outgoing.dropped();
        if !self.control.send_or_queue(&mut self.outgoing, m) && self.outgoing.dropped() == 1 && dropped == 0
        {
            crate::log::warning!(
                "process pid {} does not read its control channel: messages for it are dropped",
                self.child.id()
            );
        }
    }

    fn signal(&self, sig: i32) {
        // The pid of a child we started and have not reaped.
        crate::sys::signals::kill(self.child.id(), sig);
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

/// A process slot: its current child, a replacement under way, and when to start the next
/// child if it has none.
struct Slot {
    number: usize,
    current: Option<Running>,
    next: Option<(Running, Instant)>,
    restart_at: Option<Instant>,
    failures: u32,
    /// `--reload`: the app did not load; start again on the next edit.
    waiting_for_edit: bool,
    /// The current process's metrics.
    sample: Option<String>,
}

/// Everything a child is started with.
struct Spawner {
    args: Vec<OsString>,
    sockets: Vec<Listening>,
    /// Which of them each slot owns (indices).
    own: Vec<Vec<usize>>,
    /// Each slot's share of the CPUs (empty: no restriction).
    shares: Vec<Vec<usize>>,
}

/// Each of `processes` processes' share of `cpus`: contiguous runs as even as possible, one CPU
/// each (in turn) when there are more processes than CPUs.
pub fn cpu_shares(cpus: &[usize], processes: usize) -> Vec<Vec<usize>> {
    if cpus.is_empty() {
        return vec![Vec::new(); processes];
    }
    if processes > cpus.len() {
        return (0..processes).map(|k| vec![cpus[k % cpus.len()]]).collect();
    }
    (0..processes)
        .map(|k| cpus[k * cpus.len() / processes..(k + 1) * cpus.len() / processes].to_vec())
        .collect()
}

impl Spawner {
    fn spawn(&self, number: usize) -> std::io::Result<Running> {
        let (ours, theirs) = Channel::pair()?;
        let mut cmd = Command::new("/proc/self/exe");
        // Shown by ps as the supervisor's own name, not `exe`.
        cmd.arg0(std::env::args_os().next().unwrap_or_else(|| "wsgo".into()));
        cmd.args(&self.args).arg("--process").arg(number.to_string());
        if let Some(share) = self.shares.get(number - 1).filter(|s| !s.is_empty()) {
            let list: Vec<String> = share.iter().map(ToString::to_string).collect();
            cmd.env(CPUS, list.join(","));
        }
        let first = 3;
        let mut fds: Vec<RawFd> = self.sockets.iter().map(Listening::fd).collect();
        let names: Vec<String> = (0..fds.len()).map(|i| (first + i as RawFd).to_string()).collect();
        cmd.env(LISTEN_FDS, names.join(","));
        if let Some(own) = self.own.get(number - 1) {
            let own: Vec<&str> = own.iter().filter_map(|&i| names.get(i).map(String::as_str)).collect();
            cmd.env(LISTEN_OWN, own.join(","));
        }
        cmd.env(super::control::CONTROL_FD, (first + fds.len() as RawFd).to_string());
        // Fewer malloc arenas: Python's threads otherwise each grow their own (the original
        // sets the same for its children). Kept if the user set GLIBC_TUNABLES.
        if std::env::var_os("GLIBC_TUNABLES").is_none() {
            cmd.env("GLIBC_TUNABLES", "glibc.malloc.arena_max=2");
        }
        // The listening sockets, then the child's end of the channel, to 3, 4, ...
        fds.push(theirs.fd());
        let parent = std::process::id();
        // SAFETY: the closure runs in the child between fork and exec; `prepare_child` only makes
        // async-signal-safe calls, on descriptors and values prepared before the fork.
        unsafe {
            cmd.pre_exec(move || crate::sys::process::prepare_child(&fds, first, parent));
        }
        let child = cmd.spawn()?;
        drop(theirs);
        Ok(Running {
            child,
            started: Instant::now(),
            control: ours,
            outgoing: Outgoing::default(),
            caught_up: false,
            served: false,
            busy: None,
            steering: super::steering::Guard::default(),
        })
    }
}

fn describe(status: std::process::ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("status {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => "an unknown status".into(),
    }
}

/// What the loop learns from a process's messages.
#[derive(Default)]
struct Heard {
    replace: Option<String>,
    watch: Vec<std::path::PathBuf>,
}

/// What every process said for the others this round, and their SIGUSR2 reports.
#[derive(Default)]
struct Said {
    shared: Vec<(u32, Shared)>,
    reports: Vec<String>,
}

/// A SIGUSR2 whose totals wait for the processes' reports.
struct Reports {
    expected: usize,
    got: Vec<String>,
    deadline: Instant,
}

/// How long the totals wait for every process's report.
const REPORT_WAIT: Duration = Duration::from_secs(2);

/// Reads a process's messages; `Err` once its end closed (it exited, or is exiting).
fn listen(
    r: &mut Running,
    buf: &mut [u8],
    sample: Option<&mut Option<String>>,
    heard: &mut Heard,
    said: &mut Said,
) -> Result<(), Closed> {
    let mut sample = sample;
    for m in r.control.receive(buf)? {
        match m {
            Message::Share(m) => said.shared.push((r.child.id(), m)),
            Message::Report(lines) => said.reports.push(lines),
            Message::Ready => r.served = true,
            Message::Replace(why) => heard.replace = Some(why),
            Message::Metrics(lines) => {
                if let Some(s) = sample.as_deref_mut() {
                    *s = Some(lines);
                }
            }
            Message::Watch(dirs) => heard.watch.extend(dirs),
            Message::Busy(permille) => r.busy = Some(permille),
            // Only the supervisor says these.
            Message::CaughtUp | Message::Steer(_) => {}
        }
    }
    Ok(())
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
    // What would fail in every process fails here, once.
    if let Err(e) = crate::interpreter::choose() {
        crate::log::error!("{e}");
        return ExitCode::from(2);
    }
    if let Err(e) = crate::log::Sink::check(&config.access_log) {
        crate::log::error!("cannot open the access log {:?}: {e}", config.access_log);
        return ExitCode::from(1);
    }
    let systemd = listeners::from_systemd();
    let from_systemd = systemd.is_some();
    // One process: a socket of each TCP address per core thread, as without a supervisor. More:
    // one for each process, its own (`listeners::owned_by_process`), which its core threads share.
    // Not one per core thread of each: spread over all of them, a hello load came to each core
    // thread in smaller batches and cost 13% more CPU per request on `--processes 2` (7.4
    // against 8.4 us, `loadtest/placement.py`).
    let copies = if config.processes > 1 { config.processes } else { config.io_threads };
    let mut bound = match super::open_sockets(config, systemd, copies) {
        Ok(b) => b,
        Err(code) => return code,
    };
    if config.default_bind && !from_systemd {
        crate::log::warning!(
            "listening on every interface (the default --http-socket :8000); give --http-socket 127.0.0.1:8000 to serve this host only"
        );
    }
    let samples: Arc<Mutex<Vec<Option<String>>>> = Arc::new(Mutex::new(vec![None; config.processes]));
    if let Some(addr) = config.metrics {
        let shared = samples.clone();
        let page = Arc::new(move || {
            let samples = shared.lock().unwrap_or_else(|e| e.into_inner()).clone();
            super::metrics::render(samples.iter().flatten().map(String::as_str))
        });
        if let Err(e) = super::metrics::serve(addr, page) {
            crate::log::error!("cannot serve --metrics on {addr}: {e}");
            return ExitCode::from(1);
        }
    }
    let mut reloader = if config.reload {
        match Reloader::start(&super::reload::initial_folders(&config.module)) {
            Ok(r) => Some(r),
            Err(e) => {
                crate::log::error!("--reload: cannot watch the source: {e}");
                return ExitCode::from(1);
            }
        }
    } else {
        None
    };
    // Children serve the sockets handed to them.
    let mut args = strip_flags(args, &["--http-socket", "--processes", "--process"]);
    args.push("--processes".into());
    args.push(config.processes.to_string().into());
    super::check_incoming_cpu(config, &bound.sockets);
    let where_ = listeners::describe(&bound.sockets);
    let shares = if config.cpu_share {
        cpu_shares(&crate::sys::process::allowed_cpus(), config.processes)
    } else {
        Vec::new()
    };
    let fleet = match &config.redis {
        Some(url) => match Fleet::start(url, &config.redis_channel) {
            Ok(f) => Some(f),
            Err(e) => {
                crate::log::error!("{e}");
                return ExitCode::from(1);
            }
        },
        None => None,
    };
    let own = listeners::owned_by_process(&bound.sockets, config.processes);
    let spawner = Spawner { args, sockets: std::mem::take(&mut bound.sockets), own, shares };
    crate::log::info!(
        "supervisor {} starting {} processes on {where_}",
        std::process::id(),
        config.processes
    );
    let mut slots: Vec<Slot> = (1..=config.processes)
        .map(|number| Slot {
            number,
            current: None,
            next: None,
            restart_at: Some(Instant::now()),
            failures: 0,
            waiting_for_edit: false,
            sample: None,
        })
        .collect();
    let mut supervisor = Supervisor {
        spawner,
        retiring: Vec::new(),
        pending: VecDeque::new(),
        replacing: None,
        reload: config.reload,
        grace: config.request_timeout.unwrap_or(Duration::from_secs(60)) + Duration::from_secs(15),
        hub: Hub::default(),
        fleet_catch_up: fleet.as_ref().map(|_| Instant::now() + FLEET_CATCH_UP_WAIT),
        fleet,
        reports: None,
        guard: config.incoming_cpu && config.cpu_share && config.processes > 1,
    };
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut fds = Vec::new();
    // From here on a stderr nobody reads must not stop the loop that restarts the processes and
    // relays what they say (the lines wait in a writer thread, written before the exit).
    crate::log::defer_this_thread();
    loop {
        let mut watch = Vec::new();
        if let Some(code) = supervisor.tick(&mut slots, &mut buf, &mut watch) {
            supervisor.stop_all(&mut slots);
            return code;
        }
        *samples.lock().unwrap_or_else(|e| e.into_inner()) = slots.iter().map(|s| s.sample.clone()).collect();
        if let Some(r) = reloader.as_mut() {
            r.watch(&watch);
            if r.changed() {
                crate::log::info!("--reload: the source changed; replacing the processes");
                for slot in &mut slots {
                    if std::mem::take(&mut slot.waiting_for_edit) {
                        slot.restart_at = Some(Instant::now());
                    }
                }
                supervisor.replace_all(&slots);
            }
        }
        // Woken by a signal, or as soon as a process (or another host) says something: a
        // notification reaches the other processes without waiting for the tick.
        supervisor.fds(&slots, &mut fds);
        let wait = if supervisor.flush(&mut slots) { FLUSH_EVERY } else { TICK };
        match signals.wait_timeout_or(&fds, wait) {
            Some(SIGINT | SIGTERM) => {
                crate::log::info!("supervisor stopping its processes...");
                // New connection attempts are dropped from now on (clients see them refused; a
                // unix socket's file goes); the sockets then live only in the children, which
                // accept what is queued and close them as they drain. systemd's sockets are left
                // as they are: it keeps them for the next start.
                if !from_systemd {
                    for l in &supervisor.spawner.sockets {
                        if let Listening::Tcp(_) = l
                            && let Err(e) = crate::sys::net::refuse_new(l.fd())
                        {
                            crate::log::error!("cannot stop new connections before draining: {e}");
                        }
                    }
                }
                bound.remove_files();
                supervisor.spawner.sockets.clear();
                supervisor.stop_all(&mut slots);
                crate::log::info!("supervisor shut down.");
                return ExitCode::SUCCESS;
            }
            Some(SIGHUP) => {
                crate::log::info!("SIGHUP: replacing the processes one at a time");
                supervisor.replace_all(&slots);
            }
            Some(sig @ (SIGUSR1 | SIGUSR2)) => {
                let mut expected = 0;
                for r in slots.iter().filter_map(|s| s.current.as_ref()) {
                    r.signal(sig);
                    expected += 1;
                }
                if sig == SIGUSR2 && expected > 0 {
                    supervisor.reports =
                        Some(Reports { expected, got: Vec::new(), deadline: Instant::now() + REPORT_WAIT });
                }
            }
            _ => {}
        }
    }
}

/// The supervisor's state besides its slots.
struct Supervisor {
    spawner: Spawner,
    /// Replaced processes, draining.
    retiring: Vec<Running>,
    /// Slots waiting for their replacement, in order.
    pending: VecDeque<usize>,
    /// The slot being replaced.
    replacing: Option<usize>,
    reload: bool,
    /// How long a drain may take before SIGKILL.
    grace: Duration,
    /// What the processes share.
    hub: Hub,
    /// `--redis`: the other hosts.
    fleet: Option<Fleet>,
    /// Until when new processes' `caught-up` waits for the fleet's blocks in force; `None` once
    /// they came (or without `--redis`).
    fleet_catch_up: Option<Instant>,
    /// A SIGUSR2's totals, waiting for the reports.
    reports: Option<Reports>,
    /// `--incoming-cpu` and `--cpu-share` with more than one process: the guard against
    /// steering every connection to one process (`steering`).
    guard: bool,
}

impl Supervisor {
    /// Starts process `number` and queues for it what is in force, then `caught-up`: it reads
    /// them before it takes a connection. Whatever is said from now on reaches it after them.
    /// With `--redis`, `caught-up` waits for the blocks in force on the fleet (at most
    /// [`FLEET_CATCH_UP_WAIT`] from the supervisor's start), which reach it as relays.
    fn start(&mut self, number: usize) -> std::io::Result<Running> {
        let mut r = self.spawner.spawn(number)?;
        for m in self.hub.catch_up(Instant::now()) {
            r.tell(&Message::Share(m));
        }
        // With `--redis`, once the fleet's blocks in force came too (`share`).
        if self.fleet_catch_up.is_none() {
            r.tell(&Message::CaughtUp);
            r.caught_up = true;
        }
        Ok(r)
    }

    /// Sends what waits for each process, as far as its channel takes it; whether the loop
    /// should look again soon: something still waits for a process that is reading (one that
    /// took nothing this time is looked at again at the next tick, not every few milliseconds).
    fn flush(&mut self, slots: &mut [Slot]) -> bool {
        let mut soon = false;
        for r in Self::everyone_mut(slots, &mut self.retiring) {
            let went = r.control.flush(&mut r.outgoing);
            soon |= went > 0 && !r.outgoing.is_empty();
        }
        soon
    }

    /// Queues every slot with a process for replacement (once each).
    fn replace_all(&mut self, slots: &[Slot]) {
        for (i, slot) in slots.iter().enumerate() {
            if slot.current.is_some() {
                self.queue(i);
            }
        }
    }

    fn queue(&mut self, i: usize) {
        if self.replacing != Some(i) && !self.pending.contains(&i) {
            self.pending.push_back(i);
        }
    }

    /// One round: (re)starts, messages, exits, the replacement under way. `Some(code)`: stop.
    fn tick(
        &mut self,
        slots: &mut [Slot],
        buf: &mut [u8],
        watch: &mut Vec<std::path::PathBuf>,
    ) -> Option<ExitCode> {
        let now = Instant::now();
        let mut said = Said::default();
        for (i, slot) in slots.iter_mut().enumerate() {
            if slot.current.is_none() && slot.next.is_none() && slot.restart_at.is_some_and(|t| t <= now) {
                slot.restart_at = None;
                match self.start(slot.number) {
                    Ok(r) => slot.current = Some(r),
                    Err(e) => {
                        crate::log::error!("cannot start process {}: {e}", slot.number);
                        slot.failures += 1;
                        slot.restart_at = Some(now + backoff(slot.failures));
                    }
                }
            }
            let mut heard = Heard::default();
            if let Some(r) = slot.current.as_mut() {
                let _ = listen(r, buf, Some(&mut slot.sample), &mut heard, &mut said);
            }
            if let Some((r, _)) = slot.next.as_mut() {
                let _ = listen(r, buf, None, &mut heard, &mut said);
            }
            watch.append(&mut heard.watch);
            if let Some(why) = heard.replace {
                crate::log::info!("process {} asks to be replaced: {why}", slot.number);
                if self.replacing != Some(i) && !self.pending.contains(&i) {
                    self.pending.push_back(i);
                }
            }
        }
        for r in &mut self.retiring {
            // Draining processes still run requests: they may notify, and lift blocks.
            let _ = listen(r, buf, None, &mut Heard::default(), &mut said);
        }
        // Reap what exited.
        for slot in slots.iter_mut() {
            let Some(r) = slot.current.as_mut() else { continue };
            let Some(status) = r.exited() else { continue };
            let (ran, served) = (r.started.elapsed(), r.served);
            slot.current = None;
            slot.sample = None;
            if status.code() == Some(EXIT_LOAD_FAILED) && !served {
                if self.reload {
                    crate::log::error!(
                        "process {} could not load the application; waiting for the source to change",
                        slot.number
                    );
                    slot.waiting_for_edit = true;
                    continue;
                }
                crate::log::error!("process {} could not load the application; stopping", slot.number);
                return Some(ExitCode::from(EXIT_LOAD_FAILED as u8));
            }
            slot.failures = if ran >= HEALTHY_AFTER { 1 } else { slot.failures + 1 };
            if slot.next.is_some() {
                // Its replacement takes over when it serves.
                crate::log::warning!(
                    "process {} exited with {} while being replaced",
                    slot.number,
                    describe(status)
                );
                continue;
            }
            let delay = backoff(slot.failures);
            crate::log::warning!(
                "process {} exited with {}; restarting in {delay:?}",
                slot.number,
                describe(status)
            );
            slot.restart_at = Some(Instant::now() + delay);
        }
        self.retiring.retain_mut(|r| r.exited().is_none());
        self.balance(slots);
        self.advance(slots);
        self.share(slots, said);
        None
    }

    /// `--incoming-cpu`'s guard (`steering`): takes a process that is busy and far busier than
    /// the others off steering, and gives it back once the load evens out.
    fn balance(&mut self, slots: &mut [Slot]) {
        if !self.guard {
            return;
        }
        let busy: Vec<Option<u16>> = slots.iter().map(|s| s.current.as_ref().and_then(|r| r.busy)).collect();
        let steers: Vec<bool> =
            slots.iter().map(|s| s.current.as_ref().is_none_or(|r| r.steering.steers())).collect();
        let want = super::steering::decide(&busy, &steers);
        let now = Instant::now();
        for (i, slot) in slots.iter_mut().enumerate() {
            let Some(r) = slot.current.as_mut() else { continue };
            let Some(on) = r.steering.update(want[i], now) else { continue };
            r.tell(&Message::Steer(on));
            let (mine, others) =
                (busy[i].unwrap_or(0) / 10, super::steering::others_mean(&busy, i).unwrap_or(0) / 10);
            if on {
                crate::log::info!(
                    "--incoming-cpu: process {} is at {mine}% of its CPUs, the others at {others}%: it takes the connections its CPUs take in again",
                    slot.number
                );
            } else {
                crate::log::info!(
                    "--incoming-cpu: process {} is at {mine}% of its CPUs, the others at {others}%: the connections its CPUs take in are spread over every process until that evens out (at least {:?})",
                    slot.number,
                    r.steering.hold()
                );
            }
        }
    }

    /// Every live process's control channel (and the fleet's socket), for the loop's wait.
    fn fds(&self, slots: &[Slot], fds: &mut Vec<RawFd>) {
        fds.clear();
        fds.extend(self.everyone(slots).map(|r| r.control.fd()));
        fds.extend(self.fleet.as_ref().map(Fleet::fd));
    }

    fn everyone<'a>(&'a self, slots: &'a [Slot]) -> impl Iterator<Item = &'a Running> {
        slots
            .iter()
            .flat_map(|s| s.current.iter().chain(s.next.as_ref().map(|(r, _)| r)))
            .chain(self.retiring.iter())
    }

    fn everyone_mut<'a>(
        slots: &'a mut [Slot],
        retiring: &'a mut [Running],
    ) -> impl Iterator<Item = &'a mut Running> {
        slots
            .iter_mut()
            .flat_map(|s| s.current.iter_mut().chain(s.next.as_mut().map(|(r, _)| r)))
            .chain(retiring.iter_mut())
    }

    /// Relays what the processes (and other hosts) said, tells the others who is gone, writes
    /// the ended blocks' lines, and the SIGUSR2 totals once every process has reported.
    fn share(&mut self, slots: &mut [Slot], said: Said) {
        let now = Instant::now();
        let mut out = Vec::new();
        let mut read_standing = false;
        for (from, m) in said.shared {
            self.hub.from_process(from, m, now, &mut out);
        }
        if let Some(fleet) = &self.fleet {
            for heard in fleet.receive() {
                match heard {
                    FromFleet::Live(m) => self.hub.from_fleet(m, false, now, &mut out),
                    FromFleet::Standing(m) => self.hub.from_fleet(m, true, now, &mut out),
                    FromFleet::ReadStanding => read_standing = true,
                }
            }
        }
        // After the messages: a process that said something and exited this round is gone
        // after what it said.
        let live: Vec<u32> = self.everyone(slots).map(|r| r.child.id()).collect();
        self.hub.members(&live, &mut out);
        self.hub.expire(now);
        for (to, m) in out {
            if to == To::Fleet {
                if let Some(fleet) = &self.fleet {
                    fleet.publish(&m);
                }
                continue;
            }
            let message = Message::Share(m);
            for r in Self::everyone_mut(slots, &mut self.retiring) {
                let pid = r.child.id();
                let send = match to {
                    To::AllBut(p) => p != pid,
                    To::All => true,
                    To::Fleet => false,
                };
                if send {
                    r.tell(&message);
                }
            }
        }
        // The fleet's blocks in force went out above: the processes started meanwhile may serve.
        if self.fleet_catch_up.is_some_and(|until| read_standing || now >= until) {
            self.fleet_catch_up = None;
            for r in Self::everyone_mut(slots, &mut self.retiring).filter(|r| !r.caught_up) {
                r.tell(&Message::CaughtUp);
                r.caught_up = true;
            }
        }
        if let Some(reports) = self.reports.as_mut() {
            reports.got.extend(said.reports);
            if reports.got.len() >= reports.expected || now >= reports.deadline {
                crate::log::report_stderr(&super::diagnostics::totals(&reports.got));
                self.reports = None;
            }
        }
    }

    /// Moves the replacement under way along: starts the next one, swaps a new process in once
    /// it serves (asking the old one to drain), or gives up on one that does not come up.
    fn advance(&mut self, slots: &mut [Slot]) {
        if self.replacing.is_none() {
            while let Some(i) = self.pending.pop_front() {
                let slot = &mut slots[i];
                if slot.current.is_none() {
                    continue;
                }
                match self.start(slot.number) {
                    Ok(r) => {
                        slot.next = Some((r, Instant::now() + READY_WAIT));
                        self.replacing = Some(i);
                    }
                    Err(e) => crate::log::error!("cannot start a new process {}: {e}", slot.number),
                }
                break;
            }
        }
        let Some(i) = self.replacing else { return };
        let slot = &mut slots[i];
        let Some((fresh, deadline)) = slot.next.as_mut() else {
            self.replacing = None;
            return;
        };
        if fresh.served {
            let Some((fresh, _)) = slot.next.take() else { return };
            crate::log::info!("process {} replaced (pid {})", slot.number, fresh.child.id());
            if let Some(old) = slot.current.replace(fresh) {
                old.signal(SIGTERM);
                self.retiring.push(old);
            }
            slot.sample = None;
            slot.failures = 0;
            slot.restart_at = None;
            self.replacing = None;
        } else if let Some(status) = fresh.exited() {
            slot.next = None;
            self.replacing = None;
            if status.code() == Some(EXIT_LOAD_FAILED) {
                crate::log::error!(
                    "the new process {} could not load the application (traceback above); keeping the old processes",
                    slot.number
                );
                self.pending.clear();
            } else {
                crate::log::warning!(
                    "the new process {} exited with {} before serving; keeping the old one",
                    slot.number,
                    describe(status)
                );
            }
            if slot.current.is_none() {
                slot.restart_at = Some(Instant::now() + backoff(slot.failures.max(1)));
            }
        } else if Instant::now() > *deadline {
            crate::log::error!("the new process {} did not start serving; keeping the old one", slot.number);
            fresh.signal(SIGKILL);
            let _ = fresh.child.wait();
            slot.next = None;
            self.replacing = None;
            if slot.current.is_none() {
                slot.restart_at = Some(Instant::now());
            }
        }
    }

    /// SIGTERM to every process, then waits for them (SIGKILL after the grace period).
    fn stop_all(&mut self, slots: &mut [Slot]) {
        let mut all: Vec<Running> = Vec::new();
        for slot in slots.iter_mut() {
            all.extend(slot.current.take());
            all.extend(slot.next.take().map(|(r, _)| r));
        }
        all.append(&mut self.retiring);
        for r in &all {
            r.signal(SIGTERM);
        }
        let deadline = Instant::now() + self.grace;
        for r in &mut all {
            loop {
                if r.exited().is_some() {
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
    fn cpu_shares_split_the_cpus() {
        // The CPUs, the processes, each one's share.
        type Case = (&'static [usize], usize, &'static [&'static [usize]]);
        let table: &[Case] = &[
            (&[0, 1], 2, &[&[0], &[1]]),
            (&[0, 1, 2, 3], 2, &[&[0, 1], &[2, 3]]),
            (&[0, 1, 2, 3, 4], 2, &[&[0, 1], &[2, 3, 4]]),
            (&[0, 1, 2], 3, &[&[0], &[1], &[2]]),
            (&[0, 1], 3, &[&[0], &[1], &[0]]),
            (&[4, 6], 1, &[&[4, 6]]),
            (&[], 2, &[&[], &[]]),
        ];
        for (cpus, n, want) in table {
            let got = cpu_shares(cpus, *n);
            let want: Vec<Vec<usize>> = want.iter().map(|s| s.to_vec()).collect();
            assert_eq!(got, want, "{cpus:?} over {n}");
        }
    }

    #[test]
    fn restarts_back_off() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(5), Duration::from_millis(1600));
        assert_eq!(backoff(30), MAX_DELAY);
    }
}
