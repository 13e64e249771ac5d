//! One core thread: pinned to its CPU, running its own monoio runtime and listening sockets.
//!
//! The ring is built with IORING_SETUP_COOP_TASKRUN: with monoio's default flags io_uring measured
//! about 40% slower than epoll here, with it on a par and at half the CPU per request. If the ring
//! cannot be built (old kernel, seccomp, locked-memory limit) we fall back to epoll with one log
//! line; MONOIO_FORCE_LEGACY_DRIVER=1 forces epoll (the test suite runs on both).

use std::cell::Cell;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use monoio::net::{TcpStream, UnixStream};
use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};

use super::CoreSignal;
use super::listeners::Listening;
use crate::client::Peer;
use crate::conn::transport::{Transport, UNIX_LOCAL};
use crate::conn::watch::{SWEEP_EVERY, Watch};
use crate::conn::{self, Core};
use crate::handoff::exchange::Mailbox;
use crate::handoff::scheduler::Scheduler;
use crate::log::{AccessLog, FLUSH_EVERY};
use crate::state::State;
use crate::static_files::FileCache;

/// At shutdown, how long the listener is still polled for connections that were under way.
const LINGER: Duration = Duration::from_millis(200);
/// Connections accepted in a row before the accept loop lets the others run.
const ACCEPT_BURST: usize = 64;
/// How often a core thread looks at the sockets it rescues from (other processes' own sockets):
/// what was waiting there at two looks in a row is taken here. A process that stopped, is still
/// loading its app or is at `--max-connections` leaves its connections to the others after 20 to
/// 40 ms instead of until it serves again.
pub(super) const RESCUE_EVERY: Duration = Duration::from_millis(20);

/// Whether MONOIO_FORCE_LEGACY_DRIVER asks for epoll.
fn force_legacy() -> bool {
    std::env::var("MONOIO_FORCE_LEGACY_DRIVER")
        .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
}

/// `sockets`: the sockets this core thread accepts from, and those it only rescues from.
pub(super) fn run(
    index: usize,
    core: Option<core_affinity::CoreId>,
    sockets: (Vec<Listening>, Vec<Listening>),
    state: Arc<State>,
    queue: Arc<Scheduler>,
    signal: Arc<CoreSignal>,
) {
    if let Some(core) = core {
        core_affinity::set_for_current(core);
    }
    crate::sys::policy::batch();
    crate::log::defer_this_thread();
    let count = sockets.0.len();
    if !force_legacy() {
        let mut ring = io_uring::IoUring::builder();
        ring.setup_coop_taskrun();
        let uring = RuntimeBuilder::<IoUringDriver>::new()
            .uring_builder(ring)
            .with_entries(1024)
            .enable_timer()
            .attach_thread_pool(Box::new(state.blocking.clone()))
            .build();
        match uring {
            Ok(mut rt) => {
                rt.block_on(serve(sockets, state, queue, signal, false));
                return;
            }
            Err(e) => {
                if index == 0 {
                    crate::log::info!("io_uring unavailable ({e}); using the epoll driver");
                }
            }
        }
    }
    let legacy = RuntimeBuilder::<LegacyDriver>::new()
        .enable_timer()
        .attach_thread_pool(Box::new(state.blocking.clone()));
    match legacy.build() {
        Ok(mut rt) => rt.block_on(serve(sockets, state, queue, signal, true)),
        Err(e) => {
            crate::log::error!("core thread {index} cannot start a runtime: {e}");
            state.listening.fetch_sub(count, SeqCst);
        }
    }
}

/// How long after connections last rested their memory is returned to the system (forced: the
/// allocator otherwise keeps free memory for `KEEP_FREE_MEMORY_MS`, see `server::run`).
const RELEASE_AFTER: Duration = Duration::from_millis(1100);
/// How often it is returned while connections keep coming to rest.
const RELEASE_EVERY: Duration = Duration::from_secs(5);

/// `nonblocking`: the driver wants non-blocking sockets (epoll); io_uring takes blocking ones.
async fn serve(
    (sockets, rescued): (Vec<Listening>, Vec<Listening>),
    state: Arc<State>,
    queue: Arc<Scheduler>,
    signal: Arc<CoreSignal>,
    nonblocking: bool,
) {
    let core = Rc::new(Core {
        queue,
        state: state.clone(),
        log: AccessLog::new(state.access.clone(), state.config.access_log_format, state.stats.core_counts()),
        watch: Watch::new(),
        open: Cell::new(0),
        files: (!state.roots.0.is_empty()).then(|| FileCache::new(state.roots.clone())),
        // The epoll driver cannot wait for the doorbell's read (`Mailbox::with_bell`).
        mailbox: Arc::new(if nonblocking { Mailbox::new() } else { Mailbox::with_bell() }),
        batch_wake: Default::default(),
        clock: Cell::new(Instant::now()),
        timeouts: Default::default(),
        rest: Default::default(),
    });

    let drainer = core.clone();
    monoio::spawn(async move { drainer.mailbox.drain().await });
    let waker = core.clone();
    monoio::spawn(async move { waker.batch_wake.run(|| waker.queue.wake_for_queued()).await });

    // Housekeeping: connection deadlines and departed clients every SWEEP_EVERY, the access log
    // every FLUSH_EVERY.
    let keeper = core.clone();
    monoio::spawn(async move {
        let mut last_flush = Instant::now();
        // The first and the last rest since memory was last returned.
        let mut rested: Option<(Instant, Instant)> = None;
        loop {
            monoio::time::sleep(SWEEP_EVERY).await;
            let now = keeper.now();
            let (_, resting) = keeper.watch.sweep(now);
            // What resting connections gave back leaves the process when rests stop, and every
            // few seconds while they go on.
            if rested.is_some_and(|(first, last)| {
                now.duration_since(last) > RELEASE_AFTER || now.duration_since(first) > RELEASE_EVERY
            }) {
                crate::sys::process::release_free_memory();
                rested = None;
            }
            if resting > 0 {
                rested = Some((rested.map_or(now, |(first, _)| first), now));
            }
            keeper.watch.check_waiting();
            keeper.state.blocks.sweep(now);
            if now.duration_since(last_flush) >= FLUSH_EVERY {
                keeper.log.flush();
                last_flush = now;
            }
        }
    });

    if !rescued.is_empty() {
        monoio::spawn(rescue_loop(rescued, core.clone(), signal.clone(), nonblocking));
    }
    let loops: Vec<_> = sockets
        .into_iter()
        .map(|l| monoio::spawn(accept_loop(l, core.clone(), signal.clone(), nonblocking)))
        .collect();
    for l in loops {
        l.await;
    }
    core.log.flush();
}

/// A listening socket registered with the runtime (which only says when it is readable).
enum Registered {
    Tcp(monoio::net::TcpListener),
    Unix(monoio::net::UnixListener),
}

impl Registered {
    async fn readable(&self) {
        let _ = match self {
            Registered::Tcp(l) => l.readable(false).await,
            Registered::Unix(l) => l.readable(false).await,
        };
    }
}

/// Accepts connections from one listening socket until the drain, then serves those that were
/// under way.
async fn accept_loop(socket: Listening, core: Rc<Core>, signal: Arc<CoreSignal>, nonblocking: bool) {
    let state = core.state.clone();
    let listen_fd = socket.fd();
    let unix = matches!(socket, Listening::Unix(_));
    // The address a TCP connection is served on (the environ's SERVER_PORT); a unix socket's
    // connections report UNIX_LOCAL.
    let local = match &socket {
        Listening::Tcp(l) => l.local_addr().unwrap_or(UNIX_LOCAL),
        Listening::Unix(_) => UNIX_LOCAL,
    };
    let registered = match socket {
        Listening::Tcp(l) => monoio::net::TcpListener::from_std(l).map(Registered::Tcp),
        Listening::Unix(l) => monoio::net::UnixListener::from_std(l).map(Registered::Unix),
    };
    let listener = match registered {
        Ok(l) => l,
        Err(e) => {
            crate::log::error!("cannot register the listener: {e}");
            state.listening.fetch_sub(1, SeqCst);
            return;
        }
    };
    let start = |fd: OwnedFd, peer: Option<SocketAddr>| start_accepted(&core, fd, peer, unix, local);

    // Connections are taken with accept4(SOCK_CLOEXEC) rather than the runtime's accept (whose
    // io_uring form leaves them inheritable by the app's child processes); the runtime only
    // says when the listener is readable. At shutdown the wait is dropped (which cancels it),
    // not the socket shut down: other processes may share it.
    let mut accept_failures = 0u64;
    let mut last_accept_log: Option<Instant> = None;
    let mut burst = 0;
    let mut stopped = std::pin::pin!(signal.wait());
    loop {
        if state.draining.load(SeqCst) {
            break;
        }
        if state.open.load(SeqCst) >= state.config.max_connections {
            // At the limit: leave new connections in the kernel's backlog until one closes.
            if !state.at_limit.swap(true, SeqCst) {
                crate::log::warning!(
                    "{} connections open (--max-connections); new ones wait until some close",
                    state.config.max_connections
                );
            }
            monoio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        state.at_limit.store(false, SeqCst);
        match crate::sys::net::accept(listen_fd, nonblocking) {
            // Up to a burst at a time: then the wait below lets the new connections run.
            Ok(Some((fd, peer))) if burst < ACCEPT_BURST => {
                burst += 1;
                start(fd, peer);
                continue;
            }
            Ok(Some((fd, peer))) => start(fd, peer),
            Ok(None) => {}
            Err(e) => {
                // Out of file descriptors or memory: back off instead of spinning; the
                // connections we have keep being served. Logged at most every 5 s.
                accept_failures += 1;
                if last_accept_log.is_none_or(|t: Instant| t.elapsed() >= Duration::from_secs(5)) {
                    crate::log::error!("accept failed ({accept_failures} times): {e}; retrying every 50 ms");
                    last_accept_log = Some(Instant::now());
                }
                monoio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        }
        burst = 0;
        let stop = monoio::select! {
            _ = listener.readable() => false,
            _ = stopped.as_mut() => true,
        };
        if stop {
            break;
        }
    }
    // Idle keep-alive connections are closed now; busy ones close after their response.
    core.watch.close_idle();
    core.log.flush();
    // Serve the connections that were already waiting in the kernel's queue. When the socket is
    // this process's own, it is the last holder, so new attempts are dropped first (the
    // supervisor does that for its sockets when everything stops, systemd keeps its sockets for
    // the next start; a unix socket's file is removed by its owner instead).
    if !state.shared_sockets
        && !unix
        && let Err(e) = crate::sys::net::refuse_new(listen_fd)
    {
        crate::log::error!("cannot stop new connections before draining: {e}");
    }
    // New connection attempts are dropped by now (the socket filter drops SYNs), but connections
    // under way still arrive: a handshake in flight, or a deferred connection whose request comes
    // after its handshake. Keep taking them for LINGER, and while this core still serves others.
    let stopped = Instant::now();
    let mut drained = 0;
    loop {
        while let Ok(Some((fd, peer))) = crate::sys::net::accept(listen_fd, nonblocking) {
            start(fd, peer);
            drained += 1;
        }
        if core.open.get() == 0 && stopped.elapsed() >= LINGER {
            break;
        }
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
    if drained > 0 {
        crate::log::info!("served {drained} connections that were under way at shutdown");
    }
    drop(listener);
    state.listening.fetch_sub(1, SeqCst);
}

/// Registers an accepted connection with the runtime and starts serving it.
fn start_accepted(core: &Rc<Core>, fd: OwnedFd, peer: Option<SocketAddr>, unix: bool, local: SocketAddr) {
    if unix {
        match UnixStream::from_std(std::os::unix::net::UnixStream::from(fd)) {
            Ok(s) => start_conn(core, s, Peer::Unix, local),
            Err(e) => crate::log::error!("cannot register a connection: {e}"),
        }
    } else {
        let Some(peer) = peer else { return };
        match TcpStream::from_std(std::net::TcpStream::from(fd)) {
            Ok(s) => start_conn(core, s, Peer::Ip(peer), local),
            Err(e) => crate::log::error!("cannot register a connection: {e}"),
        }
    }
}

/// Takes the connections that wait too long on other processes' sockets: every
/// [`RESCUE_EVERY`], a socket readable at this look and the last one is accepted from (up to a
/// burst). Ends at the drain.
async fn rescue_loop(sockets: Vec<Listening>, core: Rc<Core>, signal: Arc<CoreSignal>, nonblocking: bool) {
    let state = core.state.clone();
    let fds: Vec<_> = sockets.iter().map(Listening::fd).collect();
    let locals: Vec<(bool, SocketAddr)> = sockets
        .iter()
        .map(|s| match s {
            Listening::Tcp(l) => (false, l.local_addr().unwrap_or(UNIX_LOCAL)),
            Listening::Unix(_) => (true, UNIX_LOCAL),
        })
        .collect();
    let mut waited = vec![false; fds.len()];
    let mut ready = Vec::new();
    let mut stopped = std::pin::pin!(signal.wait());
    loop {
        let stop = monoio::select! {
            _ = monoio::time::sleep(RESCUE_EVERY) => false,
            _ = stopped.as_mut() => true,
        };
        if stop || state.draining.load(SeqCst) {
            break;
        }
        if state.open.load(SeqCst) >= state.config.max_connections {
            waited.fill(false);
            continue;
        }
        crate::sys::net::readable(&fds, &mut ready);
        for (i, &fd) in fds.iter().enumerate() {
            if !(ready[i] && waited[i]) {
                waited[i] = ready[i];
                continue;
            }
            waited[i] = false;
            let (unix, local) = locals[i];
            let mut taken = 0;
            // Up to a burst, and never past --max-connections (the rest waits for the owner).
            while taken < ACCEPT_BURST
                && state.open.load(SeqCst) < state.config.max_connections
                && let Ok(Some((conn, peer))) = crate::sys::net::accept(fd, nonblocking)
            {
                start_accepted(&core, conn, peer, unix, local);
                taken += 1;
            }
            if taken > 0 {
                core.state.stats.rescued.fetch_add(taken as u64, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}

/// Starts serving an accepted connection.
fn start_conn<T: Transport + 'static>(core: &Rc<Core>, stream: T, peer: Peer, local: SocketAddr) {
    core.state.open.fetch_add(1, SeqCst);
    core.open.set(core.open.get() + 1);
    let c = core.clone();
    monoio::spawn(async move {
        // A panic costs this connection only (see `CatchUnwind`); the counts stay true.
        let _ = conn::CatchUnwind(conn::serve(stream, peer, local, c.clone())).await;
        c.open.set(c.open.get() - 1);
        c.state.open.fetch_sub(1, SeqCst);
    });
}
