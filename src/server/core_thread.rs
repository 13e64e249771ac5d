//! One core thread: pinned to its CPU, running its own monoio runtime and listener.
//!
//! The ring is built with IORING_SETUP_COOP_TASKRUN: with monoio's default flags io_uring measured
//! about 40% slower than epoll here, with it on a par and at half the CPU per request. If the ring
//! cannot be built (old kernel, seccomp, locked-memory limit) we fall back to epoll with one log
//! line; MONOIO_FORCE_LEGACY_DRIVER=1 forces epoll (the test suite runs on both).

use std::cell::Cell;
use std::net::TcpListener as StdListener;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use monoio::io::Canceller;
use monoio::net::TcpStream;
use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};

use super::{CoreSignal, Shared};
use crate::conn::watch::{SWEEP_EVERY, Watch};
use crate::conn::{self, CoreCtx};
use crate::log::{AccessLog, FLUSH_EVERY};
use crate::pool::Pool;
use crate::pool::mailbox::Mailbox;
use crate::static_files::FileCache;

/// At shutdown, how long the listener is still polled for connections that were under way.
const LINGER: Duration = Duration::from_millis(200);

/// Whether MONOIO_FORCE_LEGACY_DRIVER asks for epoll.
fn force_legacy() -> bool {
    std::env::var("MONOIO_FORCE_LEGACY_DRIVER")
        .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
}

pub(super) fn run(
    index: usize,
    core: Option<core_affinity::CoreId>,
    listener: StdListener,
    shared: Arc<Shared>,
    pool: Pool,
    signal: Arc<CoreSignal>,
) {
    if let Some(core) = core {
        core_affinity::set_for_current(core);
    }
    super::batch_scheduling();
    if !force_legacy() {
        let mut ring = io_uring::IoUring::builder();
        ring.setup_coop_taskrun();
        let uring = RuntimeBuilder::<IoUringDriver>::new()
            .uring_builder(ring)
            .with_entries(1024)
            .enable_timer()
            .attach_thread_pool(Box::new(shared.blocking.clone()))
            .build();
        match uring {
            Ok(mut rt) => {
                rt.block_on(serve(listener, shared, pool, signal));
                return;
            }
            Err(e) => {
                if index == 0 {
                    eprintln!("wsgo: io_uring unavailable ({e}); using the epoll driver");
                }
            }
        }
    }
    let legacy = RuntimeBuilder::<LegacyDriver>::new()
        .enable_timer()
        .attach_thread_pool(Box::new(shared.blocking.clone()));
    match legacy.build() {
        Ok(mut rt) => rt.block_on(serve(listener, shared, pool, signal)),
        Err(e) => {
            eprintln!("wsgo: core thread {index} cannot start a runtime: {e}");
            shared.listening.fetch_sub(1, SeqCst);
        }
    }
}

async fn serve(listener: StdListener, shared: Arc<Shared>, pool: Pool, signal: Arc<CoreSignal>) {
    let listen_fd = listener.as_raw_fd();
    let listen_addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("wsgo: cannot read the listener's address: {e}");
            shared.listening.fetch_sub(1, SeqCst);
            return;
        }
    };
    let listener = match monoio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("wsgo: cannot register the listener: {e}");
            return;
        }
    };
    let core = Rc::new(CoreCtx {
        pool,
        shared: shared.clone(),
        log: AccessLog::new(),
        watch: Watch::new(),
        open: Cell::new(0),
        files: (!shared.roots.0.is_empty()).then(|| FileCache::new(shared.roots.clone())),
        mailbox: Arc::new(Mailbox::new()),
        listen_addr,
        clock: Cell::new(Instant::now()),
    });

    let drainer = core.clone();
    monoio::spawn(async move { drainer.mailbox.drain().await });

    // Housekeeping: connection deadlines every SWEEP_EVERY, the access log every FLUSH_EVERY.
    let keeper = core.clone();
    monoio::spawn(async move {
        let mut last_flush = Instant::now();
        loop {
            monoio::time::sleep(SWEEP_EVERY).await;
            let now = keeper.now();
            keeper.watch.sweep(now);
            keeper.watch.check_waiting();
            keeper.shared.blocks.sweep(now);
            if now.duration_since(last_flush) >= FLUSH_EVERY {
                keeper.log.flush();
                last_flush = now;
            }
        }
    });

    // Shutdown: the pending accept is cancelled (not the socket shut down: other processes may
    // share it), then everything already queued on it is accepted and served.
    let canceller = Rc::new(std::cell::RefCell::new(Canceller::new()));
    let watcher = core.clone();
    let cancel = canceller.clone();
    monoio::spawn(async move {
        signal.wait().await;
        let c = std::mem::replace(&mut *cancel.borrow_mut(), Canceller::new());
        let _ = c.cancel();
        // Idle keep-alive connections are closed now; busy ones close after their response.
        watcher.watch.close_idle();
        watcher.log.flush();
    });

    let mut accept_failures = 0u64;
    let mut last_accept_log: Option<Instant> = None;
    loop {
        if shared.draining.load(SeqCst) {
            break;
        }
        if shared.open.load(SeqCst) >= shared.config.max_connections {
            // At the limit: leave new connections in the kernel's backlog until one closes.
            if !shared.at_limit.swap(true, SeqCst) {
                eprintln!(
                    "wsgo: {} connections open (--max-connections); new ones wait until some close",
                    shared.config.max_connections
                );
            }
            monoio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        shared.at_limit.store(false, SeqCst);
        let handle = canceller.borrow().handle();
        match listener.cancelable_accept(handle).await {
            Ok((stream, peer)) => start_conn(&core, stream, peer),
            Err(e) => {
                if shared.draining.load(SeqCst) {
                    break;
                }
                // Out of file descriptors or memory: back off instead of spinning; the
                // connections we have keep being served. Logged at most every 5 s.
                accept_failures += 1;
                if last_accept_log.is_none_or(|t: Instant| t.elapsed() >= Duration::from_secs(5)) {
                    eprintln!("wsgo: accept failed ({accept_failures} times): {e}; retrying every 50 ms");
                    last_accept_log = Some(Instant::now());
                }
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    // Serve the connections that were already waiting in the kernel's queue; unsupervised, this
    // process is the last holder of its socket, so new attempts are dropped first (the
    // supervisor does that for its sockets when everything stops).
    if !shared.supervised
        && let Err(e) = super::listener::refuse_new(listen_fd)
    {
        eprintln!("wsgo: cannot stop new connections before draining: {e}");
    }
    // New connection attempts are dropped by now (the socket filter drops SYNs), but connections
    // under way still arrive: a handshake in flight, or a deferred connection whose request comes
    // after its handshake. Keep taking them for LINGER, and while this core still serves others.
    let stopped = Instant::now();
    let mut drained = 0;
    loop {
        while let Some((stream, peer)) = accept_now(listen_fd) {
            match TcpStream::from_std(stream) {
                Ok(s) => {
                    start_conn(&core, s, peer);
                    drained += 1;
                }
                Err(e) => eprintln!("wsgo: cannot register a queued connection: {e}"),
            }
        }
        if core.open.get() == 0 && stopped.elapsed() >= LINGER {
            break;
        }
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
    if drained > 0 {
        eprintln!("wsgo: served {drained} connections that were under way at shutdown");
    }
    drop(listener);
    shared.listening.fetch_sub(1, SeqCst);
    core.log.flush();
}

/// Starts serving an accepted connection.
fn start_conn(core: &Rc<CoreCtx>, stream: TcpStream, peer: std::net::SocketAddr) {
    core.shared.open.fetch_add(1, SeqCst);
    core.open.set(core.open.get() + 1);
    let c = core.clone();
    monoio::spawn(async move {
        conn::serve(stream, peer, c.clone()).await;
        c.open.set(c.open.get() - 1);
        c.shared.open.fetch_sub(1, SeqCst);
    });
}

/// Accepts a connection already queued on the (non-blocking) listening socket, if there is one.
fn accept_now(listen_fd: std::os::fd::RawFd) -> Option<(std::net::TcpStream, std::net::SocketAddr)> {
    use std::os::fd::FromRawFd;
    // SAFETY: sockaddr_storage is plain data; accept4 fills at most `len` bytes of it.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: listen_fd is our open listening socket; storage and len are valid for writing.
    let fd = unsafe {
        libc::accept4(
            listen_fd,
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
            libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: accept4 returned a new descriptor that nothing else owns.
    let stream = unsafe { std::net::TcpStream::from_raw_fd(fd) };
    let peer = stream.peer_addr().ok()?;
    Some((stream, peer))
}
