//! Cron and timer jobs (`@wsgo.cron`, `@wsgo.timer`): the registry the app fills (usually at
//! import) and the background thread takes due jobs from. Pure schedules: the registry holds the
//! app's callables as opaque values and never calls them; `pool`'s background thread runs them.
//!
//! A timer runs every `period` seconds from its registration; a cron job at the next local time
//! its fields match (`next.rs`). Jobs run in the first process only.

pub mod next;

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use next::{Civil, Schedule, next_run};

/// How long a background job may run before it is interrupted.
pub const JOB_LIMIT: Duration = Duration::from_secs(1800);

/// How a job is scheduled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum When {
    /// Every so long, from registration on.
    Every(Duration),
    /// Whenever the local time matches.
    Cron(Schedule),
}

struct Job<T> {
    task: Arc<T>,
    name: String,
    when: When,
    due: Instant,
}

/// The process's background jobs: `T` is the app's callable.
pub struct Registry<T> {
    jobs: Mutex<Vec<Job<T>>>,
    changed: Condvar,
    /// Whether this process runs background jobs (only the first process of a group does).
    enabled: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Local civil time of a Unix time, and its seconds.
fn local(secs: i64) -> (Civil, i64) {
    match crate::sys::time::local(secs) {
        Some(t) => (Civil::date(t.year, t.month, t.day, t.hour, t.minute), t.second),
        None => {
            let days = secs.div_euclid(86_400);
            let (y, m, d) = crate::http::date::civil_from_days(days);
            let rest = secs.rem_euclid(86_400);
            (Civil::date(y, m as i64, d as i64, rest / 3600, rest / 60 % 60), rest % 60)
        }
    }
}

/// The Unix time of a local civil time.
fn unix(c: &Civil) -> i64 {
    crate::sys::time::unix_of_local(c.year, c.month, c.day, c.hour, c.minute)
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

impl<T> Registry<T> {
    /// A registry; `enabled` is false outside the first process (jobs are then ignored).
    pub fn new(enabled: bool) -> Registry<T> {
        Registry { jobs: Mutex::new(Vec::new()), changed: Condvar::new(), enabled }
    }

    /// Whether this process runs background jobs.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Registers a job (no effect outside the first process).
    pub fn add(&self, task: T, name: String, when: When) {
        if !self.enabled {
            return;
        }
        let (due, text) = next_due(&when);
        crate::log::info!("Added cron job {name} with next run {text}");
        lock(&self.jobs).push(Job { task: Arc::new(task), name, when, due });
        self.changed.notify_all();
    }

    /// Jobs registered.
    pub fn len(&self) -> usize {
        lock(&self.jobs).len()
    }

    /// Whether no job is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The jobs due now, in registration order, each rescheduled.
    pub fn take_due(&self) -> Vec<(Arc<T>, String)> {
        let mut jobs = lock(&self.jobs);
        let now = Instant::now();
        jobs.iter_mut()
            .filter(|j| j.due <= now)
            .map(|j| {
                j.due = next_due(&j.when).0;
                (j.task.clone(), j.name.clone())
            })
            .collect()
    }

    /// Blocks until at least one job is due.
    pub fn wait_until_due(&self) {
        let mut jobs = lock(&self.jobs);
        loop {
            let now = Instant::now();
            let wait = match jobs.iter().map(|j| j.due).min() {
                Some(t) if t <= now => return,
                Some(t) => t - now,
                None => Duration::from_secs(60),
            };
            jobs = self.changed.wait_timeout(jobs, wait).unwrap_or_else(|e| e.into_inner()).0;
        }
    }
}
