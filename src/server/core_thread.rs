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

use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};

use super::{CoreSignal, Shared};
use crate::conn::watch::{SWEEP_EVERY, Watch};
use crate::conn::{self, CoreCtx};
use crate::log::{AccessLog, FLUSH_EVERY};
use crate::pool::Pool;
use crate::pool::mailbox::Mailbox;
use crate::static_files::FileCache;

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
        Err(e) => eprintln!("wsgo: core thread {index} cannot start a runtime: {e}"),
    }
}

async fn serve(listener: StdListener, shared: Arc<Shared>, pool: Pool, signal: Arc<CoreSignal>) {
    let listen_fd = listener.as_raw_fd();
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
    });

    let drainer = core.clone();
    monoio::spawn(async move { drainer.mailbox.drain().await });

    // Housekeeping: connection deadlines every SWEEP_EVERY, the access log every FLUSH_EVERY.
    let keeper = core.clone();
    monoio::spawn(async move {
        let mut last_flush = Instant::now();
        loop {
            monoio::time::sleep(SWEEP_EVERY).await;
            let now = Instant::now();
            keeper.watch.sweep(now);
            keeper.shared.blocks.sweep(now);
            if now.duration_since(last_flush) >= FLUSH_EVERY {
                keeper.log.flush();
                last_flush = now;
            }
        }
    });

    let watcher = core.clone();
    monoio::spawn(async move {
        signal.wait().await;
        // Stop accepting: a pending accept fails once the listening socket is shut down.
        // SAFETY: listen_fd stays open until this runtime ends (the listener lives in `serve`).
        unsafe { libc::shutdown(listen_fd, libc::SHUT_RD) };
        // Idle keep-alive connections are closed now; busy ones close after their response.
        watcher.watch.close_idle();
        watcher.log.flush();
    });

    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                if shared.draining.load(SeqCst) {
                    break;
                }
                let _ = stream.set_nodelay(true);
                shared.open.fetch_add(1, SeqCst);
                core.open.set(core.open.get() + 1);
                let c = core.clone();
                monoio::spawn(async move {
                    conn::serve(stream, peer, c.clone()).await;
                    c.open.set(c.open.get() - 1);
                    c.shared.open.fetch_sub(1, SeqCst);
                });
            }
            Err(e) => {
                if shared.draining.load(SeqCst) {
                    break;
                }
                // Out of file descriptors or memory: back off instead of spinning; the
                // connections we have keep being served.
                eprintln!("wsgo: accept failed: {e}");
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    // Keep driving the connections that are still open until the process exits.
    while core.open.get() > 0 {
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
    core.log.flush();
    drop(listener);
}
