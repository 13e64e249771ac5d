//! A thread that writes for others: the threads that must not wait (the core threads) hand it
//! whole lines and go on. A destination that blocks (a pipe nobody reads, a stalled terminal)
//! holds this thread only. What it has not written is bounded; lines beyond are dropped and
//! counted, and it says how many once it writes again.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Most bytes waiting to be written. A destination that takes nothing fills it in a few seconds
/// of busy traffic.
pub(super) const QUEUE_MAX: usize = 4 << 20;

/// Where a writer writes.
pub(super) enum Dest {
    Stdout,
    Stderr,
    File(File),
}

/// What the writer thread is handed, in order.
enum Item {
    Lines(Vec<u8>),
    /// The file opened again (SIGHUP): the lines queued before it go to the old file.
    Reopened(File),
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Item>,
    /// Bytes of lines queued or being written.
    bytes: usize,
    /// The writer took items and has not finished writing them.
    writing: bool,
    /// Lines dropped since the writer last said so.
    dropped: u64,
    /// The owner is gone: the writer ends once the queue is empty.
    closed: bool,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    /// Items arrived (for the writer), or the writer emptied the queue (for `sync`).
    changed: Condvar,
    /// Lines dropped in the writer's life.
    dropped_total: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A writer thread and its queue. Dropping it lets the thread write what is queued and end.
pub(super) struct Writer {
    shared: Arc<Shared>,
}

impl Writer {
    /// Starts the thread `name`, writing to `dest`; `what` names the lines in the note about
    /// dropped ones ("access-log lines").
    pub(super) fn start(name: &str, dest: Dest, what: &'static str) -> std::io::Result<Writer> {
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        std::thread::Builder::new().name(name.into()).spawn(move || run(&s, dest, what))?;
        Ok(Writer { shared })
    }

    /// Hands over whole lines; drops them (counted) when the writer is that far behind.
    pub(super) fn send(&self, lines: Vec<u8>) {
        if lines.is_empty() {
            return;
        }
        let mut q = lock(&self.shared.queue);
        if q.bytes + lines.len() > QUEUE_MAX {
            let n = lines.iter().filter(|&&b| b == b'\n').count() as u64;
            q.dropped += n;
            self.shared.dropped_total.fetch_add(n, Relaxed);
            return;
        }
        q.bytes += lines.len();
        q.items.push_back(Item::Lines(lines));
        drop(q);
        self.shared.changed.notify_all();
    }

    /// From now on writes go to `fresh` (after the lines already handed over).
    pub(super) fn reopened(&self, fresh: File) {
        lock(&self.shared.queue).items.push_back(Item::Reopened(fresh));
        self.shared.changed.notify_all();
    }

    /// Waits until everything handed over is written, at most `timeout`: whether it was.
    pub(super) fn sync(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut q = lock(&self.shared.queue);
        while !q.items.is_empty() || q.writing {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            q = self.shared.changed.wait_timeout(q, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        true
    }

    /// Lines dropped because the destination did not take them.
    pub(super) fn dropped(&self) -> u64 {
        self.shared.dropped_total.load(Relaxed)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        lock(&self.shared.queue).closed = true;
        self.shared.changed.notify_all();
    }
}

/// The writer thread: writes what is handed over, in order, until its owner is gone.
fn run(shared: &Shared, mut dest: Dest, what: &str) {
    let mut q = lock(&shared.queue);
    loop {
        if q.items.is_empty() {
            q.writing = false;
            shared.changed.notify_all();
            if q.closed {
                return;
            }
            q = shared.changed.wait(q).unwrap_or_else(|e| e.into_inner());
            continue;
        }
        let items: Vec<Item> = q.items.drain(..).collect();
        let dropped = std::mem::take(&mut q.dropped);
        q.writing = true;
        drop(q);
        let mut written = 0;
        for item in items {
            match item {
                Item::Lines(lines) => {
                    written += lines.len();
                    let _ = match &mut dest {
                        Dest::Stdout => {
                            let mut out = std::io::stdout().lock();
                            out.write_all(&lines).and_then(|()| out.flush())
                        }
                        Dest::Stderr => std::io::stderr().lock().write_all(&lines),
                        Dest::File(f) => f.write_all(&lines),
                    };
                }
                Item::Reopened(fresh) => dest = Dest::File(fresh),
            }
        }
        if dropped > 0 {
            // Written directly (this thread never defers): it says why lines are missing.
            crate::log::warning!(
                "{dropped} {what} dropped: their destination fell {} MiB behind",
                QUEUE_MAX >> 20
            );
        }
        q = lock(&shared.queue);
        q.bytes -= written;
    }
}
