//! Process start, the core threads, signals and shutdown: builds the one process state and
//! hands it down.
//!
//! Order at start (as the original): bind the listeners first so early connections wait in the
//! backlog, then start Python and import the app, then the workers, then the core threads. The
//! main thread then waits for SIGINT/SIGTERM and drains: stop accepting, close idle
//! keep-alive connections, let in-flight requests finish within `--request-timeout`, run
//! `atexit`, exit 0.

pub mod control;
mod core_thread;
mod diagnostics;
pub mod fleet;
pub mod hub;
pub mod listeners;
pub mod metrics;
pub mod reload;
pub mod sharing;
pub mod steering;
pub mod supervisor;
pub mod upkeep;

use std::future::poll_fn;
use std::process::ExitCode;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use monoio::blocking::DefaultThreadPool;

use std::os::fd::RawFd;

use control::{Channel, Message};
use listeners::Bound;

use crate::config::Config;
use crate::cron::Registry;
use crate::handoff::QUEUE_CAPACITY;
use crate::handoff::scheduler::Scheduler;
use crate::park::Parking;
use crate::pool::Pool;
use crate::state::State;
use crate::static_files::Roots;
use crate::stats::Stats;
use crate::sys::signals::{SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2, Signals};
use crate::wsgi;

/// A one-shot signal from the main thread to a core thread's runtime (its accept loops, one
/// per listening socket, each wait on it).
#[derive(Default)]
pub struct CoreSignal {
    fired: AtomicBool,
    wakers: Mutex<Vec<Waker>>,
}

impl CoreSignal {
    /// Fires the signal (once; later calls do nothing more).
    pub fn fire(&self) {
        self.fired.store(true, SeqCst);
        let wakers = std::mem::take(&mut *self.wakers.lock().unwrap_or_else(|e| e.into_inner()));
        for w in wakers {
            w.wake();
        }
    }

    /// Waits until the signal has fired. Keep one wait across many polls (as the accept loop
    /// does): once its waker is registered, a poll is an atomic load and a comparison.
    pub async fn wait(&self) {
        let mut registered: Option<Waker> = None;
        poll_fn(|cx| {
            if self.fired.load(SeqCst) {
                return Poll::Ready(());
            }
            if registered.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                return Poll::Pending;
            }
            let mut wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
            if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
                wakers.push(cx.waker().clone());
            }
            drop(wakers);
            registered = Some(cx.waker().clone());
            if self.fired.load(SeqCst) { Poll::Ready(()) } else { Poll::Pending }
        })
        .await
    }
}

/// Longest a new process waits, app loaded, for the supervisor's blocks in force before it
/// serves without them.
const CATCH_UP_WAIT: Duration = Duration::from_secs(5);
/// How long an exiting process waits for its access log's writer to write the last lines (the
/// diagnostics' writer is waited for in `main`, after this and every other way out of `run`).
const LOG_SYNC_WAIT: Duration = Duration::from_secs(2);

/// glibc's heap, used by Python for objects above 512 bytes: memory freed at the top of a heap is
/// kept up to this much instead of being handed back to the kernel at once.
const MALLOC_TRIM_THRESHOLD: i32 = 8 << 20;
/// Allocations from this size on get their own mapping (and give it back when freed).
const MALLOC_MMAP_THRESHOLD: i32 = 1 << 20;

/// Fixes glibc's trim and mapping thresholds, unless the user set them (GLIBC_TUNABLES or
/// MALLOC_TRIM_THRESHOLD_/MALLOC_MMAP_THRESHOLD_). The default trims a heap as soon as 128 KiB
/// at its top are free: with request and response bodies of tens of KiB alive across requests
/// (bodies are shared with the core threads until written), every request handed pages back
/// and faulted them in again (~3 page faults per 16 KiB POST echo, `perf stat -e page-faults`;
/// none with these).
fn tune_malloc() {
    let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    let var = |name| std::env::var_os(name).is_some();
    if malloc_set_by_user(&tunables, var("MALLOC_TRIM_THRESHOLD_"), var("MALLOC_MMAP_THRESHOLD_")) {
        return;
    }
    crate::sys::process::set_malloc_thresholds(MALLOC_MMAP_THRESHOLD, MALLOC_TRIM_THRESHOLD);
}

/// Turns transparent huge pages off for this process, unless the user set `MIMALLOC_ALLOW_THP`
/// (`=1` keeps them). The allocator asks for them on its regions, and each first touch of a
/// 2 MiB region then zeroes all of it in one fault: on a VM, 4-9 ms in a Python thread's
/// `mi_page_fresh_alloc` under load (`perf record`), with the core thread waiting for the CPU,
/// and a second rush of 1,024 connections took 45-54 ms to its last response against 21-24
/// without them (`loadtest/scaling.py`'s bursts with and without the variable, alternated, four
/// each). The resident memory of an idle process halves (45 to 23 MB) and CPU per request did
/// not move beyond the spread.
fn avoid_huge_pages() {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none()
        && let Err(e) = crate::sys::process::disable_huge_pages()
    {
        crate::log::debug!("cannot turn transparent huge pages off: {e}");
    }
}

/// Whether the user chose glibc's trim or mapping threshold (`GLIBC_TUNABLES`, or the older
/// `MALLOC_TRIM_THRESHOLD_`/`MALLOC_MMAP_THRESHOLD_` variables): then [`tune_malloc`] leaves both.
fn malloc_set_by_user(tunables: &str, trim_var: bool, mmap_var: bool) -> bool {
    let named = |t: &str| {
        tunables.split(':').any(|kv| kv.split('=').next().is_some_and(|k| k == format!("glibc.malloc.{t}")))
    };
    named("trim_threshold") || named("mmap_threshold") || trim_var || mmap_var
}

/// The listening sockets of a server process: handed over by the supervisor
/// (`WSGO_LISTEN_FDS`) or by systemd (`LISTEN_FDS`), or bound here.
/// `copies`: how many SO_REUSEPORT sockets to bind for each TCP address.
pub(crate) fn open_sockets(
    config: &Config,
    handed: Option<Vec<RawFd>>,
    copies: usize,
) -> Result<Bound, ExitCode> {
    let bound = match handed {
        Some(fds) => listeners::inherit(&fds).map(Bound::inherited),
        None => listeners::bind(config, copies),
    };
    bound.map_err(|e| {
        crate::log::error!("{e}");
        ExitCode::from(1)
    })
}

/// Takes the share of the CPUs the supervisor gave this process (`WSGO_CPUS`) and restricts the
/// process to it. Call first thing in `main`, before any thread starts and before the flags are
/// read (`--io-threads` defaults to the CPUs the process may use).
pub fn adopt_cpu_share() {
    let Some(list) = std::env::var_os(supervisor::CPUS) else { return };
    // SAFETY: called first in main, before any other thread exists, so nothing reads the
    // environment concurrently.
    unsafe { std::env::remove_var(supervisor::CPUS) };
    let cpus: Vec<usize> = list.to_str().unwrap_or("").split(',').filter_map(|c| c.parse().ok()).collect();
    if !cpus.is_empty()
        && let Err(e) = crate::sys::process::restrict_to_cpus(&cpus)
    {
        crate::log::warning!("cannot keep to CPUs {cpus:?}: {e}");
    }
}

/// What the supervisor passes to a server process in its environment, taken out of it (the
/// application and the processes it starts never see these).
struct FromSupervisor {
    /// `WSGO_LISTEN_FDS`: the inherited listening sockets.
    listen_fds: Option<Vec<RawFd>>,
    /// `WSGO_LISTEN_OWN`: which of them are this process's own (the others are only rescued
    /// from); all of them when absent.
    listen_own: Option<Vec<RawFd>>,
    /// `WSGO_CONTROL_FD`: the channel to the supervisor.
    control: Option<Channel>,
}

impl FromSupervisor {
    /// Reads and removes the variables. Call before any other thread starts.
    fn take() -> FromSupervisor {
        let fds = |var: &str| {
            let list = std::env::var(var).ok();
            // SAFETY: called at the start of the process, before any other thread exists, so
            // nothing reads the environment concurrently.
            unsafe { std::env::remove_var(var) };
            list.map(|list| list.split(',').filter_map(|f| f.parse().ok()).collect::<Vec<RawFd>>())
        };
        let listen_fds = fds(supervisor::LISTEN_FDS);
        let listen_own = fds(supervisor::LISTEN_OWN);
        FromSupervisor { listen_fds, listen_own, control: Channel::from_env() }
    }
}

/// How long the allocator keeps the memory it has free before returning it to the system,
/// unless the user set `MIMALLOC_PURGE_DELAY` (mimalloc's own default is 1 s).
///
/// Why: a rush of 1,024 new connections touches ~12 MB of fresh memory on a core thread (the
/// request futures, buffers and tasks). With the default, a rush that came more than a second
/// after the last one faulted all of it in again, 2,700 minor page faults, and took 21.7-30.1 ms
/// to its last response against 15.2-23.2 ms with this (90-210 faults; `loadtest/scaling.py
/// --burst 1024`, the rush after a 2 s pause, four alternated pairs). What resting connections
/// give back still leaves within ~1 s of their rest: that release forces the purge.
const KEEP_FREE_MEMORY_MS: std::os::raw::c_long = 10_000;

fn keep_free_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        crate::sys::process::keep_free_memory_ms(KEEP_FREE_MEMORY_MS);
        // A return already scheduled (by what was freed before main) keeps the delay it was
        // scheduled with, and takes everything freed until it is due: with the default, what
        // the first rushes of the first second freed went back to the system. Returning it now
        // starts the next schedule with the new delay.
        crate::sys::process::release_free_memory();
    }
}

/// Runs a server process until SIGINT/SIGTERM. Returns the process exit code.
pub fn run(config: Config) -> ExitCode {
    tune_malloc();
    avoid_huge_pages();
    keep_free_memory();
    let from_supervisor = FromSupervisor::take();
    // SIGHUP reopens the access log (never the instant death of the default action).
    let signals = match Signals::install(&[SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGUSR2]) {
        Ok(s) => s,
        Err(e) => {
            crate::log::error!("cannot install the signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    crate::sys::process::raise_fd_limit();
    // Room for every connection (and the listeners, files and Python's own) before the core
    // threads accept: a growth of the table later stalls the accepting core thread.
    if let Err(e) = crate::sys::process::reserve_fds(config.max_connections.saturating_add(1024)) {
        crate::log::debug!("cannot reserve the descriptor table: {e}");
    }
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    // Sockets from the supervisor, else from systemd, else bound here.
    let handed = from_supervisor.listen_fds.clone().or_else(listeners::from_systemd);
    let shared_sockets = handed.is_some();
    let mut bound = match open_sockets(&config, handed, config.io_threads) {
        Ok(b) => b,
        Err(code) => return code,
    };
    if bound.sockets.is_empty() {
        crate::log::error!("no socket to listen on");
        return ExitCode::from(1);
    }
    if from_supervisor.control.is_none() {
        check_incoming_cpu(&config, &bound.sockets);
    }
    // This process's own sockets, and the other processes' (only rescued from).
    let (own, others): (Vec<&listeners::Listening>, Vec<&listeners::Listening>) = bound
        .sockets
        .iter()
        .partition(|l| from_supervisor.listen_own.as_ref().is_none_or(|own| own.contains(&l.fd())));
    let dealt = listeners::per_core(&own, config.io_threads)
        .and_then(|own| Ok((own, listeners::deal(&others, config.io_threads)?)));
    let (per_core, rescued_per_core) = match dealt {
        Ok(p) => p,
        Err(e) => {
            crate::log::error!("cannot share the listening sockets out to the core threads: {e}");
            return ExitCode::from(1);
        }
    };
    if config.default_bind && !shared_sockets {
        crate::log::warning!(
            "listening on every interface (the default --http-socket :8000); give --http-socket 127.0.0.1:8000 to serve this host only"
        );
    }
    let access = match crate::log::Sink::open(config.access_log.clone()) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            crate::log::error!("cannot open the access log {:?}: {e}", config.access_log);
            return ExitCode::from(1);
        }
    };
    let stats = Arc::new(Stats::default());
    let parking = Arc::new(Parking::default());
    // Under a supervisor, what this process says to the others goes through its channel.
    let share = Arc::new(crate::share::Outbox::default());
    let blocks = Arc::new(crate::block::Blocks::sharing(share.clone()));
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let queue = Arc::new(Scheduler::new(QUEUE_CAPACITY, config.request_timeout, cpus, stats.clone()));
    let control = from_supervisor.control.map(Arc::new);
    // `--incoming-cpu`: this process's sockets and their CPUs, which the supervisor may take off
    // steering and give back.
    let steering = Arc::new(crate::sys::net::Steering::default());
    // What the others say is applied from now on, while the app loads.
    let mut caught_up = None;
    if let Some(control) = &control {
        sharing::connect(&share, control.clone());
        let here = sharing::Here {
            parking: parking.clone(),
            blocks: blocks.clone(),
            share: share.clone(),
            queue: queue.clone(),
            steering: steering.clone(),
        };
        match sharing::start(control.clone(), here) {
            Ok(c) => caught_up = Some(c),
            Err(e) => {
                crate::log::error!("cannot start the sharing thread: {e}");
                return ExitCode::from(1);
            }
        }
    }
    // Background jobs run in the first process only.
    let jobs = Arc::new(Registry::new(config.process <= 1));
    let app = match wsgi::interp::start(&config, parking.clone(), share.clone(), jobs.clone(), stats.clone())
    {
        Ok(app) => Arc::new(app),
        Err(e) => {
            crate::log::blame(&e, format_args!("cannot start"));
            return ExitCode::from(e.exit_code());
        }
    };
    let pool = Pool::new(queue.clone(), stats.clone());
    if let Err(e) = pool.start_workers(config.workers, &app) {
        crate::log::error!("cannot start the worker threads: {e}");
        return ExitCode::from(1);
    }
    // The process gives up (every worker stuck): drain as on SIGTERM, then exit 1 so that a
    // supervisor starts a fresh one.
    let failed = Arc::new(AtomicBool::new(false));
    let quit_flag = failed.clone();
    let quit = move |_why: &str| {
        quit_flag.store(true, SeqCst);
        // Caught by our handler and passed to the main thread, like one from outside.
        crate::sys::signals::raise_in_process(SIGTERM);
    };
    if let Err(e) = pool.start_background(&app, &jobs) {
        crate::log::error!("cannot start the background job thread: {e}");
        return ExitCode::from(1);
    }
    if let Err(e) = pool.start_monitor(&app, Box::new(quit)) {
        crate::log::error!("cannot start the monitor thread: {e}");
        return ExitCode::from(1);
    }
    let roots = match Roots::open(&config.static_maps) {
        Ok(r) => Arc::new(r),
        Err(e) => {
            crate::log::error!("cannot open a --static-map folder: {e}");
            return ExitCode::from(1);
        }
    };
    crate::static_files::mime::preload();
    // Started here, on the unpinned main thread, so the pool's threads may run on any CPU.
    let blocking = DefaultThreadPool::new(config.io_threads.clamp(2, 8));
    let cache_size = usize::try_from(config.cache_size).unwrap_or(usize::MAX);
    let socket_count = per_core.iter().map(Vec::len).sum();
    let state = Arc::new(State {
        config,
        draining: AtomicBool::new(false),
        open: AtomicUsize::new(0),
        listening: AtomicUsize::new(socket_count),
        shared_sockets,
        at_limit: AtomicBool::new(false),
        roots,
        blocks,
        parking,
        share,
        cache: (cache_size > 0).then(|| crate::cache::Store::new(cache_size)),
        blocking,
        stats,
        access,
        steering: steering.clone(),
    });
    // No connection before the blocks in force are in the table: the supervisor sent them
    // first thing, so this waits only when the app loaded faster than they were read.
    if let Some(c) = caught_up
        && !c.wait(CATCH_UP_WAIT)
    {
        crate::log::warning!(
            "the supervisor's blocks in force did not arrive within {CATCH_UP_WAIT:?}; serving without them"
        );
    }
    let mut signals_to_cores = Vec::new();
    for (i, (sockets, rescued)) in per_core.into_iter().zip(rescued_per_core).enumerate() {
        let signal = Arc::new(CoreSignal::default());
        signals_to_cores.push(signal.clone());
        let core_id = (!cores.is_empty()).then(|| cores[i % cores.len()]);
        if state.config.incoming_cpu {
            prefer_this_cpu(&steering, &sockets, core_id, i);
        }
        let (state, queue) = (state.clone(), queue.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("wsgo-core-{i}"))
            .spawn(move || core_thread::run(i, core_id, (sockets, rescued), state, queue, signal));
        if let Err(e) = spawned {
            crate::log::error!("cannot start core thread {i}: {e}");
            return ExitCode::from(1);
        }
    }
    if state.config.redis.is_some() && control.is_none() {
        crate::log::warning!("--redis needs the supervisor (it talks to Redis): ignored with --process");
    }
    if state.config.reload && control.is_none() {
        crate::log::warning!("--reload needs the supervisor (it watches the source): ignored with --process");
    }
    if let Err(e) = upkeep::start(state.clone(), queue.clone(), control.clone()) {
        crate::log::error!("cannot start the upkeep thread: {e}");
        return ExitCode::from(1);
    }
    if let Some(control) = &control {
        control.send(&Message::Ready);
        if state.config.reload {
            control.send(&Message::Watch(wsgi::interp::source_folders()));
        }
    }
    crate::log::info!(
        "process {} (pid {}) serving {} on {} ({} io threads, {} workers, CPUs {}; {})",
        state.config.process.max(1),
        std::process::id(),
        state.config.module_spec(),
        listeners::describe(&bound.sockets),
        state.config.io_threads,
        state.config.workers,
        crate::sys::process::allowed_cpus().iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
        wsgi::interp::describe_python(),
    );
    // The signal loop and the shutdown must not wait on a stderr nobody reads either.
    crate::log::defer_this_thread();

    let sig = loop {
        match signals.wait() {
            SIGUSR1 => diagnostics::dump_stacks(&pool, &*app),
            SIGUSR2 => {
                let report = diagnostics::print_stats(&state, &queue, &pool, &*app, &jobs);
                // The supervisor adds up every process's report.
                if let Some(control) = &control {
                    control.send(&Message::Report(report));
                }
            }
            // logrotate's signal: the access log file is opened again; serving goes on (the
            // supervisor replaces its processes on SIGHUP, and they open it afresh).
            SIGHUP => match state.access.reopen() {
                Ok(()) => crate::log::info!("SIGHUP: access log reopened"),
                Err(e) => crate::log::error!("SIGHUP: cannot reopen the access log: {e}"),
            },
            other => break other,
        }
    };
    let name = if sig == SIGINT { "interrupt" } else { "terminated" };
    crate::log::info!("got {name} signal, shutting down...");
    // The core threads close their sockets from here on: the supervisor's word on steering no
    // longer touches them.
    steering.forget();
    state.draining.store(true, SeqCst);
    bound.remove_files();
    for s in &signals_to_cores {
        s.fire();
    }
    let deadline = state.config.request_timeout.map(|t| Instant::now() + t);
    let drained = loop {
        let busy = state.listening.load(SeqCst) > 0
            || state.open.load(SeqCst) > 0
            || queue.running() > 0
            || queue.queued() > 0;
        if !busy {
            break true;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    wsgi::interp::run_exit_handlers();
    // The core threads handed over their last lines; a destination that takes nothing does not
    // hold the exit.
    if !state.access.sync(LOG_SYNC_WAIT) {
        crate::log::warning!("the access log's last lines were not written within {LOG_SYNC_WAIT:?}");
    }
    if drained {
        crate::log::info!("shut down gracefully.");
    } else {
        crate::log::warning!("shutdown timed out, exiting.");
    }
    if failed.load(SeqCst) { ExitCode::from(1) } else { ExitCode::SUCCESS }
}

/// `--incoming-cpu` with a network card that takes in every packet on one CPU sends every
/// connection through it to that CPU: said once at start (by the supervisor, or a process that
/// has none). Not for sockets bound to loopback only, whose packets come in on the client's CPU.
fn check_incoming_cpu(config: &Config, sockets: &[listeners::Listening]) {
    use crate::config::Bind;
    let loopback_only = sockets.iter().filter_map(listeners::Listening::bind).all(|b| match b {
        Bind::Tcp(a) => a.ip().is_loopback(),
        Bind::Unix(_) => true,
    });
    if !config.incoming_cpu || loopback_only {
        return;
    }
    for card in crate::sys::net::cards_on_one_cpu(std::path::Path::new("/sys/class/net")) {
        crate::log::warning!(
            "--incoming-cpu: {card} takes in every packet on one CPU (one receive queue, no RPS), so every connection through it goes to that CPU; spread them (RPS: /sys/class/net/{card}/queues/rx-0/rps_cpus) or leave --incoming-cpu off"
        );
    }
}

/// `--incoming-cpu`: core `index`'s own TCP sockets ask for the connections that its CPU takes
/// in. Set before the process reports ready, so that no connection is spread by the hash first.
/// A socket that several cores share (fewer sockets than cores) ends with the last one's CPU;
/// the kernel then steers to it what that CPU takes in, and any of its cores accepts.
fn prefer_this_cpu(
    steering: &crate::sys::net::Steering,
    own: &[listeners::Listening],
    core: Option<core_affinity::CoreId>,
    index: usize,
) {
    let Some(core) = core else {
        if index == 0 {
            crate::log::warning!(
                "--incoming-cpu: no CPU list to pin the core threads to; connections are spread by their addresses"
            );
        }
        return;
    };
    for l in own.iter().filter(|l| matches!(l, listeners::Listening::Tcp(_))) {
        if let Err(e) = steering.prefer(l.fd(), core.id) {
            // What fails for one core fails for every one: said once.
            if index == 0 {
                crate::log::warning!(
                    "--incoming-cpu: cannot set SO_INCOMING_CPU ({e}); connections are spread by their addresses"
                );
            }
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::malloc_set_by_user;

    #[test]
    fn a_core_signal_holds_one_waker_per_waiter_and_ends_every_wait() {
        use std::sync::Arc;
        use std::time::Duration;
        let signal = Arc::new(super::CoreSignal::default());
        let mut rt =
            monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().expect("runtime");
        let s = signal.clone();
        let ended = rt.block_on(async move {
            // As the accept loop waits: one wait kept across many waits for something else...
            let mut stopped = std::pin::pin!(s.wait());
            for _ in 0..1000 {
                monoio::select! {
                    _ = monoio::time::sleep(Duration::from_micros(1)) => {},
                    _ = stopped.as_mut() => return false,
                }
            }
            // ...and waits made afresh each time.
            for _ in 0..100 {
                monoio::select! {
                    _ = monoio::time::sleep(Duration::from_micros(1)) => {},
                    _ = s.wait() => return false,
                }
            }
            assert!(s.wakers.lock().unwrap().len() <= 1, "one task, one waker");
            let fire = s.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                fire.fire();
            });
            monoio::select! {
                _ = monoio::time::sleep(Duration::from_secs(5)) => false,
                _ = stopped.as_mut() => true,
            }
        });
        assert!(ended, "the kept wait ends when the signal fires from another thread");
        assert!(signal.wakers.lock().unwrap().is_empty());
    }

    #[test]
    fn the_users_malloc_thresholds_are_left_alone() {
        let table: &[(&str, bool, bool, bool)] = &[
            ("", false, false, false),
            // What the supervisor sets for its processes is ours, not the user's.
            ("glibc.malloc.arena_max=2", false, false, false),
            ("glibc.malloc.arena_max=2:glibc.malloc.trim_threshold=0", false, false, true),
            ("glibc.malloc.mmap_threshold=65536", false, false, true),
            ("glibc.pthread.rseq=0", false, false, false),
            ("", true, false, true),
            ("", false, true, true),
        ];
        for &(tunables, trim, mmap, want) in table {
            assert_eq!(malloc_set_by_user(tunables, trim, mmap), want, "{tunables:?} {trim} {mmap}");
        }
    }
}
