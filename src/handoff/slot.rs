//! What each Python thread is doing, for the request timeout, stuck-worker detection and the
//! SIGUSR1 dump. Written by the thread itself, read by the monitor.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::http::request::Span;

/// How long a thread may take to come back after the timeout exception before it counts as stuck.
pub const STUCK_GRACE: Duration = Duration::from_secs(5);

/// One Python thread running requests or background jobs.
pub struct Slot {
    /// `worker 3`, `cron`.
    pub name: String,
    /// The thread's Python identifier (`threading.get_ident()`).
    pub ident: AtomicU64,
    /// The job it runs: 0 when idle, else a sequence number unique to this slot.
    pub job: AtomicU64,
    /// When the job started, in ns since `epoch`.
    started: AtomicU64,
    /// How long a job may run before it is interrupted.
    pub limit: Option<Duration>,
    /// The timeout exception was raised into the current job: the thread counts as stuck until
    /// the job returns.
    pub fired: AtomicBool,
    /// The current job, for messages: its request head and the spans of method and target,
    /// formatted only when asked for (a copy per request cost more than the rest of this).
    what: Mutex<What>,
    /// The thread's CPU clock, readable by every thread ([`Slot::take_cpu_clock`]).
    clock: OnceLock<libc::clockid_t>,
    /// The job the thread's CPU time was first read for by [`Slot::computed`], and that time.
    job_cpu: Mutex<(u64, Duration)>,
    epoch: Instant,
}

/// What a slot runs, as given to [`Slot::begin`].
#[derive(Default)]
pub enum What {
    #[default]
    /// Idle.
    Nothing,
    /// A request: its head bytes and the spans of method and target.
    Request(bytes::Bytes, Span, Span),
    /// Something else (a background job).
    Text(String),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Slot {
    /// A slot for a thread called `name` whose jobs may run `limit`; times count from `epoch`.
    pub fn new(name: String, limit: Option<Duration>, epoch: Instant) -> Slot {
        Slot {
            name,
            ident: AtomicU64::new(0),
            job: AtomicU64::new(0),
            started: AtomicU64::new(0),
            limit,
            fired: AtomicBool::new(false),
            what: Mutex::new(What::Nothing),
            clock: OnceLock::new(),
            job_cpu: Mutex::new((0, Duration::ZERO)),
            epoch,
        }
    }

    /// Whether it is a worker's (it runs requests).
    pub fn is_worker(&self) -> bool {
        self.name.starts_with("worker")
    }

    /// Called by the thread itself when it starts: its CPU time can be read from now on.
    pub fn take_cpu_clock(&self) {
        if let Some(clock) = crate::sys::process::thread_cpu_clock() {
            let _ = self.clock.set(clock);
        }
    }

    /// The CPU time the thread has used (zero before [`Slot::take_cpu_clock`]). A system call.
    pub fn cpu(&self) -> Duration {
        self.clock.get().map_or(Duration::ZERO, |&c| crate::sys::process::clock_time(c))
    }

    /// The CPU time the current job has used since it was first looked at here (`None` when
    /// idle): zero at the first look, so a job is measured from some time after its start. For
    /// one caller at a time (`handoff::limit`'s window).
    pub fn computed(&self) -> Option<Duration> {
        let seq = self.job.load(SeqCst);
        if seq == 0 {
            return None;
        }
        let now = self.cpu();
        let mut first = lock(&self.job_cpu);
        if first.0 != seq {
            *first = (seq, now);
        }
        Some(now.saturating_sub(first.1))
    }

    /// The thread starts job `seq`.
    pub fn begin(&self, seq: u64, what: What) {
        *lock(&self.what) = what;
        self.started.store(self.epoch.elapsed().as_nanos() as u64, SeqCst);
        self.job.store(seq, SeqCst);
    }

    /// The thread finished its job; returns whether the timeout exception was raised into it.
    pub fn end(&self) -> bool {
        self.job.store(0, SeqCst);
        self.fired.swap(false, SeqCst)
    }

    /// How long the current job has run (`None` when idle).
    pub fn running_for(&self) -> Option<Duration> {
        if self.job.load(SeqCst) == 0 {
            return None;
        }
        let started = Duration::from_nanos(self.started.load(SeqCst));
        Some(self.epoch.elapsed().saturating_sub(started))
    }

    /// The current job, as text (`GET /path`).
    pub fn what(&self) -> String {
        match &*lock(&self.what) {
            What::Nothing => String::new(),
            What::Request(buf, method, target) => {
                let part =
                    |s: &Span| String::from_utf8_lossy(&buf[s.start as usize..s.end as usize]).into_owned();
                format!("{} {}", part(method), part(target))
            }
            What::Text(t) => t.clone(),
        }
    }

    /// Whether the current job is past its limit and not yet interrupted.
    pub fn overdue(&self) -> Option<u64> {
        let limit = self.limit?;
        let seq = self.job.load(SeqCst);
        (seq != 0 && !self.fired.load(SeqCst) && self.running_for()? > limit).then_some(seq)
    }

    /// The timeout exception was raised and the job has not come back within a further
    /// [`STUCK_GRACE`] (or its limit, if longer): a blocking call that will never return.
    pub fn stuck(&self) -> bool {
        let grace = self.limit.unwrap_or_default().max(STUCK_GRACE);
        self.fired.load(SeqCst) && self.limit.zip(self.running_for()).is_some_and(|(l, ran)| ran > l + grace)
    }

    /// The timeout exception was raised into the current job.
    pub fn interrupted(&self) -> bool {
        self.job.load(SeqCst) != 0 && self.fired.load(SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overdue_once_then_stuck_until_the_job_ends() {
        let s = Slot::new("worker 1".into(), Some(Duration::from_millis(20)), Instant::now());
        assert_eq!(s.overdue(), None);
        s.begin(7, What::Text("GET /slow".into()));
        assert_eq!(s.overdue(), None);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(s.overdue(), Some(7));
        s.fired.store(true, SeqCst);
        assert_eq!(s.overdue(), None, "raised once per job");
        assert!(s.interrupted());
        assert!(!s.stuck(), "given time to come back");
        assert!(s.end(), "the job was interrupted");
        assert!(!s.interrupted());
        assert_eq!(s.running_for(), None);
        assert_eq!(s.computed(), None, "idle");
        let unlimited = Slot::new("cron".into(), None, Instant::now());
        unlimited.begin(1, What::Nothing);
        assert_eq!(unlimited.overdue(), None);
    }

    #[test]
    fn a_job_computes_from_its_first_look() {
        let s = Slot::new("worker 1".into(), None, Instant::now());
        s.take_cpu_clock();
        let spin = |ms| {
            let start = Instant::now();
            let mut x = 0u64;
            while start.elapsed() < Duration::from_millis(ms) {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        };
        spin(20);
        s.begin(1, What::Nothing);
        assert_eq!(s.computed(), Some(Duration::ZERO), "measured from the first look");
        spin(20);
        let one = s.computed().unwrap_or_default();
        assert!(one >= Duration::from_millis(10) && one < Duration::from_millis(40), "{one:?}");
        s.end();
        s.begin(2, What::Nothing);
        assert_eq!(s.computed(), Some(Duration::ZERO), "a new job starts again");
        assert!(s.cpu() >= Duration::from_millis(30), "the thread's own total: {:?}", s.cpu());
    }
}
