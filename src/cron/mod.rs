//! Cron and timer jobs (`@wsgo.cron`, `@wsgo.timer`, SPEC §17): registered by the app (usually at
//! import), run one at a time on one background Python thread, in the first process only.
//!
//! A timer runs every `period` seconds from its registration; a cron job at the next local time
//! its fields match (`next.rs`). A job's exception is printed and the schedule goes on. A job that
//! runs past [`JOB_LIMIT`] gets `wsgo.RequestTimeoutException`, like a request.

pub mod next;

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pyo3::prelude::*;

use next::{Civil, Schedule, next_run};

/// How long a background job may run before it is interrupted.
pub const JOB_LIMIT: Duration = Duration::from_secs(1800);

/// How a job is scheduled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum When {
    Every(Duration),
    Cron(Schedule),
}

struct Job {
    func: Py<PyAny>,
    name: String,
    when: When,
    due: Instant,
}

#[derive(Default)]
struct Jobs {
    list: Vec<Job>,
}

/// The process's background jobs.
pub struct Cron {
    jobs: Mutex<Jobs>,
    changed: Condvar,
}

/// Whether this process runs background jobs (only the first process of a group does).
pub static ENABLED: AtomicBool = AtomicBool::new(true);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The registry.
pub fn cron() -> &'static Cron {
    static CRON: OnceLock<Cron> = OnceLock::new();
    CRON.get_or_init(|| Cron { jobs: Mutex::new(Jobs::default()), changed: Condvar::new() })
}

/// Local civil time of a Unix time, and its seconds.
fn local(secs: i64) -> (Civil, i64) {
    // SAFETY: localtime_r writes into the tm we own; time_t is a plain integer.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        let t: libc::time_t = secs;
        libc::localtime_r(&t, &mut tm);
        tm
    };
    let c = Civil::date(
        i64::from(tm.tm_year) + 1900,
        i64::from(tm.tm_mon) + 1,
        i64::from(tm.tm_mday),
        i64::from(tm.tm_hour),
        i64::from(tm.tm_min),
    );
    (c, i64::from(tm.tm_sec))
}

/// The Unix time of a local civil time.
fn unix(c: &Civil) -> i64 {
    // SAFETY: mktime reads and normalises the tm we own.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        tm.tm_year = (c.year - 1900) as i32;
        tm.tm_mon = (c.month - 1) as i32;
        tm.tm_mday = c.day as i32;
        tm.tm_hour = c.hour as i32;
        tm.tm_min = c.minute as i32;
        tm.tm_isdst = -1;
        libc::mktime(&mut tm)
    }
}

fn now_unix() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// When a job is next due, and that time as text for the log.
fn next_due(when: &When) -> (Instant, String) {
    match when {
        When::Every(period) => {
            let now = Instant::now();
            (now.checked_add(*period).unwrap_or(now), format!("in {:.3} s", period.as_secs_f64()))
        }
        When::Cron(s) => {
            let now = now_unix();
            let (civil, secs) = local(now);
            let next = next_run(s, civil, secs);
            let at = unix(&next);
            let wait = Duration::from_secs((at - now).max(0) as u64);
            let text = format!(
                "at {:04}-{:02}-{:02} {:02}:{:02}:00 (local time)",
                next.year, next.month, next.day, next.hour, next.minute
            );
            let now = Instant::now();
            (now.checked_add(wait).unwrap_or(now), text)
        }
    }
}

impl Cron {
    /// Registers a job (no effect outside the first process).
    pub fn add(&self, func: Py<PyAny>, name: String, when: When) {
        if !ENABLED.load(SeqCst) {
            return;
        }
        let (due, text) = next_due(&when);
        eprintln!("wsgo: Added cron job {name} with next run {text}");
        lock(&self.jobs).list.push(Job { func, name, when, due });
        self.changed.notify_all();
    }

    pub fn len(&self) -> usize {
        lock(&self.jobs).list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The background thread's loop: waits for the earliest due job, runs every due job in turn.
    pub fn run(&self, slot: Arc<crate::pool::slot::Slot>) {
        // SAFETY: pthread_self has no preconditions.
        slot.ident.store(unsafe { libc::pthread_self() } as u64, SeqCst);
        let mut seq = 0u64;
        Python::attach(|py| {
            loop {
                py.detach(|| self.wait_until_due());
                // With the GIL (taken before this lock, as `add` does): take the due jobs.
                let due: Vec<(Py<PyAny>, String)> = {
                    let mut jobs = lock(&self.jobs);
                    let now = Instant::now();
                    jobs.list
                        .iter_mut()
                        .filter(|j| j.due <= now)
                        .map(|j| {
                            j.due = next_due(&j.when).0;
                            (j.func.clone_ref(py), j.name.clone())
                        })
                        .collect()
                };
                for (func, name) in due {
                    seq += 1;
                    slot.begin(seq, crate::pool::slot::What::Text(format!("background job {name}")));
                    if let Err(e) = func.bind(py).call0() {
                        eprintln!("wsgo: background job {name} failed:");
                        e.print(py);
                    }
                    if slot.end() {
                        crate::wsgi::timeout::after_interrupted(py, &slot);
                    }
                }
            }
        });
    }

    /// Blocks (without the GIL) until at least one job is due.
    fn wait_until_due(&self) {
        let mut jobs = lock(&self.jobs);
        loop {
            let now = Instant::now();
            let wait = match jobs.list.iter().map(|j| j.due).min() {
                Some(t) if t <= now => return,
                Some(t) => t - now,
                None => Duration::from_secs(60),
            };
            jobs = self.changed.wait_timeout(jobs, wait).unwrap_or_else(|e| e.into_inner()).0;
        }
    }
}

/// Starts the background thread if jobs were registered (or may be later).
pub fn start(pool: &crate::pool::Pool) -> std::io::Result<()> {
    if !ENABLED.load(SeqCst) {
        return Ok(());
    }
    let slot = pool.add_slot("background".into(), Some(JOB_LIMIT));
    std::thread::Builder::new().name("wsgo-cron".into()).spawn(move || cron().run(slot))?;
    Ok(())
}
