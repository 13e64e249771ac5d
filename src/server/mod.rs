//! Process start, the core threads, signals and shutdown.
//!
//! Order at start (as the original): bind the listeners first so early connections wait in the
//! backlog, then start Python and import the app, then the workers, then the core threads. The
//! main thread then waits for SIGINT/SIGTERM and drains: stop accepting, close idle keep-alive
//! connections, let in-flight requests finish within `--request-timeout`, run `atexit`, exit 0.

mod core_thread;
mod diagnostics;
pub mod listener;
pub mod supervisor;

use std::future::poll_fn;
use std::process::ExitCode;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::pool::Pool;
use crate::static_files::Roots;
use crate::wsgi;
use monoio::blocking::DefaultThreadPool;

/// State shared by every thread of the process.
pub struct Shared {
    pub config: Config,
    /// Shutting down: accept nothing more, keep no connection alive.
    pub draining: AtomicBool,
    /// Connections open in the whole process.
    pub open: AtomicUsize,
    /// The listening sockets are the supervisor's (it stops new connections at shutdown);
    /// otherwise each core thread does so on its own socket.
    pub supervised: bool,
    /// The connection limit was reached (logged once per episode).
    pub at_limit: AtomicBool,
    /// Core threads that have not yet closed their listener (at shutdown they first serve what
    /// is queued on it; the process must not exit before).
    pub listening: AtomicUsize,
    /// The `--static-map` folders, open.
    pub roots: Arc<Roots>,
    /// Clients blocked by `X-WSGo-Block`.
    pub blocks: crate::block::Blocks,
    /// Requests parked by `X-WSGo-Park`.
    pub parking: Arc<crate::park::Parking>,
    /// The response cache (`None` when `--max-age` or `--cache-size` is 0).
    pub cache: Option<crate::cache::Store>,
    /// Threads for the blocking file-system calls of the core threads (opening files, reading
    /// files too big to keep in memory).
    pub blocking: DefaultThreadPool,
}

/// A one-shot signal from the main thread to a core thread's runtime.
#[derive(Default)]
pub struct CoreSignal {
    fired: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl CoreSignal {
    pub fn fire(&self) {
        self.fired.store(true, SeqCst);
        let waker = self.waker.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(w) = waker {
            w.wake();
        }
    }

    pub async fn wait(&self) {
        poll_fn(|cx| {
            if self.fired.load(SeqCst) {
                return Poll::Ready(());
            }
            *self.waker.lock().unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
            if self.fired.load(SeqCst) { Poll::Ready(()) } else { Poll::Pending }
        })
        .await
    }
}

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
    // SAFETY: mallopt only adjusts allocator parameters; called before any other thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD);
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

/// The listening sockets, one per core thread: inherited from the supervisor
/// (`WSGO_LISTEN_FDS`, each core taking a copy of one of them) or bound here. Port 0 is resolved.
pub(crate) fn bind_listeners(
    config: &Config,
    inherited: Option<&std::ffi::OsStr>,
) -> Result<(Vec<std::net::TcpListener>, std::net::SocketAddr), ExitCode> {
    use std::os::fd::FromRawFd;
    let mut bind = config.bind;
    if let Some(list) = inherited {
        let fds: Vec<i32> = list.to_str().unwrap_or("").split(',').filter_map(|f| f.parse().ok()).collect();
        if fds.is_empty() {
            eprintln!("wsgo: {} names no descriptors", supervisor::LISTEN_FDS);
            return Err(ExitCode::from(1));
        }
        let inherited: Vec<std::net::TcpListener> = fds
            .iter()
            .map(|&fd| {
                // SAFETY: the supervisor passed us these open listening sockets and nothing else
                // in this process owns them. CLOEXEC again, so the app's subprocesses don't
                // inherit them.
                unsafe {
                    libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                    std::net::TcpListener::from_raw_fd(fd)
                }
            })
            .collect();
        let mut listeners = Vec::with_capacity(config.io_threads);
        for i in 0..config.io_threads {
            match inherited[i % inherited.len()].try_clone() {
                Ok(l) => listeners.push(l),
                Err(e) => {
                    eprintln!("wsgo: cannot use the inherited listener: {e}");
                    return Err(ExitCode::from(1));
                }
            }
        }
        if let Ok(addr) = listeners[0].local_addr() {
            bind = addr;
        }
        return Ok((listeners, bind));
    }
    let mut listeners = Vec::with_capacity(config.io_threads);
    for _ in 0..config.io_threads {
        match listener::bind(bind, config.defer_accept) {
            Ok(l) => {
                // Port 0: the first listener picks the port, the others join it.
                if bind.port() == 0
                    && let Ok(addr) = l.local_addr()
                {
                    bind.set_port(addr.port());
                }
                listeners.push(l);
            }
            Err(e) => {
                eprintln!("wsgo: cannot listen on {bind}: {e}");
                return Err(ExitCode::from(1));
            }
        }
    }
    Ok((listeners, bind))
}

/// What the supervisor passes to a server process in its environment, taken out of it (the
/// application and the processes it starts never see these).
struct FromSupervisor {
    /// `WSGO_LISTEN_FDS`: the inherited listening sockets.
    listen_fds: Option<std::ffi::OsString>,
    /// `WSGO_READY_FD`: where to say "serving".
    ready_fd: Option<i32>,
}

impl FromSupervisor {
    /// Reads and removes the variables. Call before any other thread starts.
    fn take() -> FromSupervisor {
        let listen_fds = std::env::var_os(supervisor::LISTEN_FDS);
        let ready_fd = std::env::var(supervisor::READY_FD).ok().and_then(|f| f.parse::<i32>().ok());
        // SAFETY: called at the start of the process, before any other thread exists, so
        // nothing reads the environment concurrently.
        unsafe {
            std::env::remove_var(supervisor::LISTEN_FDS);
            std::env::remove_var(supervisor::READY_FD);
        }
        if let Some(fd) = ready_fd {
            // Held until the app has loaded: not to be inherited by what it starts.
            let _ = crate::sys::set_cloexec(fd);
        }
        FromSupervisor { listen_fds, ready_fd }
    }
}

/// Tells the supervisor (if any) that this process serves: one byte on `WSGO_READY_FD`.
fn notify_ready(ready_fd: Option<i32>) {
    let Some(fd) = ready_fd else {
        return;
    };
    // SAFETY: the descriptor was passed by the supervisor for this one write; closed after.
    unsafe {
        libc::write(fd, b"1".as_ptr().cast(), 1);
        libc::close(fd);
    }
}

/// Raises the open-file limit to its hard maximum: each connection is a descriptor.
fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit with a valid, initialised rlimit struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Runs a server process until SIGINT/SIGTERM. Returns the process exit code.
pub fn run(config: Config) -> ExitCode {
    tune_malloc();
    let from_supervisor = FromSupervisor::take();
    // SIGHUP as SIGTERM: a process's own hang-up is a graceful stop (the supervisor, or
    // systemd, starts the next one), never the instant death of the default action.
    let caught = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGUSR1, libc::SIGUSR2];
    let signals = match crate::sys::Signals::install(&caught) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("wsgo: cannot install the signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    raise_fd_limit();
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let mut config = config;
    let listeners = match bind_listeners(&config, from_supervisor.listen_fds.as_deref()) {
        Ok((l, bound)) => {
            config.bind = bound;
            l
        }
        Err(code) => return code,
    };
    // Background jobs run in the first process only.
    crate::cron::ENABLED.store(config.process <= 1, SeqCst);
    if let Err(e) = wsgi::interp::start_interpreter() {
        eprintln!("wsgo: {e}");
        return ExitCode::from(1);
    }
    let app = match wsgi::interp::load_app(&config.module, &config.callable) {
        Ok(app) => app,
        Err(msg) => {
            eprintln!("wsgo: {msg}");
            return ExitCode::from(wsgi::interp::EXIT_LOAD_FAILED as u8);
        }
    };
    let multiprocess = config.processes > 1;
    let base_environ = pyo3::Python::attach(|py| wsgi::environ::base_environ(py, multiprocess));
    let base_environ = match base_environ {
        Ok(b) => b,
        Err(e) => {
            eprintln!("wsgo: could not build the environ: {e}");
            return ExitCode::from(1);
        }
    };
    let pool = Pool::new(config.request_timeout);
    let app = Arc::new(wsgi::App { callable: app, base_environ });
    if let Err(e) = pool.start_workers(config.workers, app) {
        eprintln!("wsgo: cannot start the worker threads: {e}");
        return ExitCode::from(1);
    }
    // The process gives up (every worker stuck): drain as on SIGTERM, then exit 1 so that a
    // supervisor starts a fresh one.
    let failed = Arc::new(AtomicBool::new(false));
    let quit_flag = failed.clone();
    let quit = move |why: &str| {
        eprintln!("wsgo: {why}");
        quit_flag.store(true, SeqCst);
        // SAFETY: kill(2) on our own pid; SIGTERM is caught and passed to the main thread.
        unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
    };
    if let Err(e) = crate::cron::start(&pool) {
        eprintln!("wsgo: cannot start the background job thread: {e}");
        return ExitCode::from(1);
    }
    if let Err(e) = pool.start_monitor(Box::new(quit)) {
        eprintln!("wsgo: cannot start the monitor thread: {e}");
        return ExitCode::from(1);
    }
    let roots = match Roots::open(&config.static_maps) {
        Ok(r) => Arc::new(r),
        Err(e) => {
            eprintln!("wsgo: cannot open a --static-map folder: {e}");
            return ExitCode::from(1);
        }
    };
    crate::static_files::mime::preload();
    // Started here, on the unpinned main thread, so the pool's threads may run on any CPU.
    let blocking = DefaultThreadPool::new(config.io_threads.clamp(2, 8));
    let config_cache_size = usize::try_from(config.cache_size).unwrap_or(usize::MAX);
    let config_io_threads = listeners.len();
    let parking = crate::wsgi::module::parking();
    let shared = Arc::new(Shared {
        config,
        draining: AtomicBool::new(false),
        open: AtomicUsize::new(0),
        listening: AtomicUsize::new(config_io_threads),
        supervised: from_supervisor.listen_fds.is_some(),
        at_limit: AtomicBool::new(false),
        roots,
        blocks: Default::default(),
        parking: parking.clone(),
        cache: (config_cache_size > 0).then(|| crate::cache::Store::new(config_cache_size)),
        blocking,
    });
    let mut signals_to_cores = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let signal = Arc::new(CoreSignal::default());
        signals_to_cores.push(signal.clone());
        let core_id = (!cores.is_empty()).then(|| cores[i % cores.len()]);
        let (shared, pool) = (shared.clone(), pool.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("wsgo-core-{i}"))
            .spawn(move || core_thread::run(i, core_id, listener, shared, pool, signal));
        if let Err(e) = spawned {
            eprintln!("wsgo: cannot start core thread {i}: {e}");
            return ExitCode::from(1);
        }
    }
    notify_ready(from_supervisor.ready_fd);
    eprintln!(
        "wsgo: process {} (pid {}) serving {}:{} on http://{} ({} io threads, {} workers)",
        shared.config.process.max(1),
        std::process::id(),
        shared.config.module,
        shared.config.callable,
        shared.config.bind,
        shared.config.io_threads,
        shared.config.workers
    );

    let sig = loop {
        match signals.wait() {
            libc::SIGUSR1 => diagnostics::dump_stacks(&pool),
            libc::SIGUSR2 => diagnostics::print_stats(&shared, &pool),
            other => break other,
        }
    };
    let name = match sig {
        libc::SIGINT => "interrupt",
        libc::SIGHUP => "hangup",
        _ => "terminated",
    };
    eprintln!("wsgo: got {name} signal, shutting down...");
    shared.draining.store(true, SeqCst);
    for s in &signals_to_cores {
        s.fire();
    }
    let deadline = shared.config.request_timeout.map(|t| Instant::now() + t);
    let drained = loop {
        let busy = shared.listening.load(SeqCst) > 0
            || shared.open.load(SeqCst) > 0
            || pool.running() > 0
            || pool.queued() > 0;
        if !busy {
            break true;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    wsgi::interp::run_exit_handlers();
    if drained {
        eprintln!("wsgo: shut down gracefully.");
    } else {
        eprintln!("wsgo: shutdown timed out, exiting.");
    }
    if failed.load(SeqCst) { ExitCode::from(1) } else { ExitCode::SUCCESS }
}

#[cfg(test)]
mod tests {
    use super::malloc_set_by_user;

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
