//! The queue between the core threads and the workers, and who gets woken.
//!
//! Core threads push into a bounded lock-free inbox. A worker picks by draining the inbox into the
//! pending list and taking the best-scored job; every job is re-scored at each pick (once per
//! group of jobs with the same traits, which score alike: `waiting.rs`), so the priority rules
//! (`priority.rs`) change only [`Scheduler::score`], not the hand-off.
//!
//! Wake-ups follow the "searching worker" rule: new work wakes an idle worker only when none is
//! already on its way to pick ([`Scheduler::submit`] at once; a core thread once per batch of
//! [`Scheduler::push`]es, through [`Scheduler::wake_for_queued`]). A worker that finds nothing
//! gives up its searching token *before* its last look at the queue, so no job is ever left
//! without a worker to see it.
//!
//! More workers only help while the running ones wait outside the GIL (I/O, sleeps). When the app
//! is CPU-bound, every extra active worker takes the GIL by force after the switch interval (5 ms)
//! and leaves the preempted request waiting: with 16 active workers a 25 µs request was seen to
//! wait 100 ms (p99). So a woken worker measures how long it waited for the GIL: a long wait marks
//! the GIL contended for [`CONTENDED_FOR`], during which no further worker is woken while one runs,
//! and workers that finish a job yield to the ones already running instead of adding to the queue
//! for the GIL. Only with two or more CPUs: on one CPU workers cannot hold the GIL in parallel, and
//! a long wait measures the wait for the CPU instead (acting on it was seen to worsen p99 there).
//! There, `limit.rs` keeps the number of jobs in progress where the CPU stays busy: a pick
//! beyond it finds nothing, and no worker is woken for work it would hold back.

use std::sync::atomic::{
    AtomicBool, AtomicIsize, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst,
};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::Thread;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;

use super::limit::{Inputs, LONG, Limit};
use super::priority::{History, LOW, PerClient, priority};
use super::waiting::Waiting;
use super::{Job, Traits};
use crate::client::ClientKey;
use crate::stats::{Stats, bump};

/// A parked worker.
pub struct Sleeper {
    thread: Thread,
    /// Set (with a searching token handed over) by the waker before unparking.
    woken: AtomicBool,
}

/// A GIL wait at least this long means the running workers hold it by computing, not waiting:
/// a computing holder gives the GIL up only at the switch interval (5 ms), so its waiters wait
/// close to that. Shorter waits are the ordinary cost of I/O-bound apps whose threads take turns
/// (and of threads waiting for a CPU): counting 1 ms as contention held a Flask app that waits
/// 2 ms per request to a third of its throughput on two CPUs (1,924 against 4,371 requests/s).
pub const CONTENDED_WAIT: Duration = Duration::from_millis(4);
/// How long one such observation keeps the scheduler from waking more workers.
pub const CONTENDED_FOR: Duration = Duration::from_millis(10);

/// Jobs taken out of the inbox and not yet picked, and the clients' counts.
#[derive(Default)]
struct Pending {
    jobs: Waiting,
    history: History,
}

/// The queue of jobs for the Python threads, and who of them is woken.
pub struct Scheduler {
    inbox: ArrayQueue<Box<Job>>,
    /// Most jobs waiting; beyond it the lowest-scored are refused.
    limit: usize,
    pending: Mutex<Pending>,
    /// Inbox plus pending.
    queued: AtomicIsize,
    running: AtomicUsize,
    searching: AtomicUsize,
    idle: Mutex<Vec<Arc<Sleeper>>>,
    /// Until when (ns since `epoch`) the GIL counts as contended.
    contended_until: AtomicU64,
    /// Whether GIL waits are acted on (the process may run on two or more CPUs).
    watch_gil: bool,
    /// On one CPU: how many requests may be in progress at once (`limit.rs`).
    in_progress: Limit,
    /// The last pick found only low-scored jobs while others ran: queued work that may not run
    /// yet, so idle workers sleep instead of spinning on it.
    deferred: AtomicBool,
    epoch: Instant,
    /// How long a job may wait in the queue and run; `None`: no limit.
    pub request_timeout: Option<Duration>,
    slots: Mutex<Vec<Arc<super::slot::Slot>>>,
    stats: Arc<Stats>,
    /// A ranked client's request started or finished since the last report of the counts.
    counts_changed: AtomicBool,
    /// Called when the counts change after a report (wakes the thread that reports them).
    on_counts_changed: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Scheduler {
    /// `cpus`: how many CPUs the process may run on (GIL contention needs two). At most `limit`
    /// jobs wait; the inbox takes twice that before refusing at once, so that a full queue
    /// refuses its lowest-scored job rather than the newest.
    pub fn new(limit: usize, request_timeout: Option<Duration>, cpus: usize, stats: Arc<Stats>) -> Scheduler {
        Scheduler {
            inbox: ArrayQueue::new(2 * limit),
            limit,
            pending: Mutex::new(Pending::default()),
            queued: AtomicIsize::new(0),
            running: AtomicUsize::new(0),
            searching: AtomicUsize::new(0),
            idle: Mutex::new(Vec::new()),
            contended_until: AtomicU64::new(0),
            watch_gil: cpus >= 2,
            in_progress: Limit::new(cpus < 2),
            deferred: AtomicBool::new(false),
            epoch: Instant::now(),
            request_timeout,
            slots: Mutex::new(Vec::new()),
            stats,
            counts_changed: AtomicBool::new(false),
            on_counts_changed: std::sync::OnceLock::new(),
        }
    }

    /// For the monitor's tick: wakes a worker for queued work that nobody is looking for. A
    /// submit during GIL contention wakes nobody; once the contention has passed, this makes
    /// sure the queue does not wait for a running request to finish.
    pub fn kick(&self) {
        if self.queued.load(SeqCst) > 0
            && self.searching.load(SeqCst) == 0
            && (self.running.load(SeqCst) == 0 || !self.contended())
            && !self.deferred.load(SeqCst)
            && !self.in_progress.binds(self.running.load(SeqCst))
        {
            self.wake_one();
        }
    }

    /// Registers a Python thread's slot.
    pub fn add_slot(&self, name: String, limit: Option<Duration>) -> Arc<super::slot::Slot> {
        let slot = Arc::new(super::slot::Slot::new(name, limit, self.epoch));
        lock(&self.slots).push(slot.clone());
        slot
    }

    /// Every Python thread's slot.
    pub fn slots(&self) -> Vec<Arc<super::slot::Slot>> {
        lock(&self.slots).clone()
    }

    /// Jobs queued and not yet picked.
    pub fn queued(&self) -> usize {
        usize::try_from(self.queued.load(SeqCst)).unwrap_or(0)
    }

    /// Jobs picked and not yet done.
    pub fn running(&self) -> usize {
        self.running.load(SeqCst)
    }

    /// Called on a core thread: queue the job, wake a worker if none is searching. A full queue
    /// refuses the job (it comes back; the caller answers 503).
    pub fn submit(&self, job: Box<Job>) -> Result<(), Box<Job>> {
        self.push(job)?;
        self.wake_for_queued();
        Ok(())
    }

    /// Queues the job and wakes nobody: the core thread calls [`Scheduler::wake_for_queued`]
    /// once its batch is queued (see `conn::wake::BatchWake`).
    pub fn push(&self, job: Box<Job>) -> Result<(), Box<Job>> {
        // Counted once it can be picked: a count ahead of the inbox would send workers looking
        // for a job that is not there yet (and, on one CPU, spinning while the core thread that
        // was about to push it waits for them). A worker may take the job before it is counted:
        // the count dips below zero for that moment.
        self.inbox.push(job)?;
        self.queued.fetch_add(1, SeqCst);
        Ok(())
    }

    /// Wakes a worker for the queued work if none is searching (and, while the GIL is
    /// contended, only when nothing runs).
    pub fn wake_for_queued(&self) {
        if self.queued.load(SeqCst) > 0
            && self.searching.load(SeqCst) == 0
            && (self.running.load(SeqCst) == 0 || !self.contended())
            && !self.in_progress.binds(self.running.load(SeqCst))
        {
            self.wake_one();
        }
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Whether a recent GIL wait said the running workers are computing.
    pub fn contended(&self) -> bool {
        self.now_ns() < self.contended_until.load(Relaxed)
    }

    /// A woken worker waited `waited` to take the GIL.
    pub fn note_gil_wait(&self, waited: Duration) {
        if self.watch_gil && waited >= CONTENDED_WAIT {
            self.contended_until.store(self.now_ns() + CONTENDED_FOR.as_nanos() as u64, Relaxed);
        }
    }

    /// After a job: whether this worker should step back and let the running ones drain the
    /// queue (the GIL is contended and someone else is running).
    pub fn should_yield(&self) -> bool {
        self.running.load(SeqCst) > 0 && self.queued.load(SeqCst) > 0 && self.contended()
    }

    /// Looks at the limit on requests in progress once its window has passed (`limit.rs`), and
    /// wakes a worker for the work it held back if it rose. Called by workers after each job and
    /// by the monitor at each tick.
    pub fn regulate(&self, now: Instant) {
        let cpu = || {
            let slots = lock(&self.slots);
            let workers = slots.iter().filter(|s| s.is_worker()).map(|s| s.cpu()).sum();
            (crate::sys::process::cpu_time(), workers)
        };
        let inputs = || {
            let slots = lock(&self.slots);
            let workers = slots.iter().filter(|s| s.is_worker());
            let long: Vec<_> =
                workers.clone().filter(|s| s.running_for().is_some_and(|t| t >= LONG)).collect();
            // Only the long ones' CPU is read: a system call each.
            let computing = long.iter().filter(|s| s.computed().is_some_and(|t| t >= LONG)).count();
            Inputs {
                workers: workers.count(),
                running: self.running(),
                long: long.len(),
                computing,
                queued: self.queued.load(SeqCst) > 0,
            }
        };
        if self.in_progress.regulate(now, cpu, inputs) {
            self.wake_for_queued();
        }
    }

    /// Whether requests in progress are limited (a process on one CPU).
    pub fn limits(&self) -> bool {
        self.in_progress.is_on()
    }

    /// Hands a searching token to one idle worker, if there is one.
    fn wake_one(&self) {
        let sleeper = {
            let mut idle = lock(&self.idle);
            let Some(s) = idle.pop() else { return };
            self.searching.fetch_add(1, SeqCst);
            s
        };
        sleeper.woken.store(true, SeqCst);
        sleeper.thread.unpark();
    }

    /// Moves the inbox into the pending list and takes out what must be answered now: jobs past
    /// the queue timeout, and the lowest-scored (the oldest among equals) beyond the limit.
    // Jobs stay boxed from the core thread to the worker (a `Job` is 328 bytes: moving the box
    // instead saved ~2% of a request's instructions); the refused ones too.
    #[allow(clippy::vec_box)]
    fn intake(&self, p: &mut Pending, now: Instant, refused: &mut Vec<Box<Job>>) {
        while let Some(job) = self.inbox.pop() {
            p.jobs.push(job);
        }
        if p.jobs.len() > self.limit {
            // Before refusing anyone: the requests of clients that already left go first.
            self.drop_gone(p);
        }
        if let Some(t) = self.request_timeout {
            // The expired ones are the oldest (the cores' pushes interleave by microseconds at
            // most; such a job is caught at the next look): no look at every job at every pick.
            while p.jobs.oldest().is_some_and(|j| now.saturating_duration_since(j.queued_at) > t) {
                bump(&self.stats.queue_timeouts);
                refused.extend(p.jobs.take_oldest());
                self.queued.fetch_sub(1, SeqCst);
            }
        }
        while p.jobs.len() > self.limit {
            let history = &p.history;
            let worst = p.jobs.worst(|t| Self::score(history, t, now));
            let Some(job) = worst.and_then(|w| p.jobs.take(w)) else { break };
            bump(&self.stats.drops);
            self.queued.fetch_sub(1, SeqCst);
            refused.push(job);
        }
    }

    fn score(history: &History, t: &Traits, now: Instant) -> i64 {
        match t.client {
            None => priority(t, 0, 0.0),
            Some(key) => {
                let (running, recent) = history.counts(key, now);
                priority(t, running, recent)
            }
        }
    }

    /// Takes the best queued job, with its score. Jobs to refuse (past the queue timeout, or
    /// beyond the limit) are added to `refused`; the caller answers them. Called by workers.
    pub fn pick_scored(&self, refused: &mut Vec<Box<Job>>) -> Option<(Box<Job>, i64)> {
        if self.queued.load(SeqCst) <= 0 || !self.in_progress.allows(self.running.load(SeqCst)) {
            return None;
        }
        let now = Instant::now();
        let mut p = lock(&self.pending);
        self.intake(&mut p, now, refused);
        let history = &p.history;
        let best = p.jobs.best(|t| Self::score(history, t, now))?;
        let score = best.score;
        if score <= LOW && self.running.load(SeqCst) > 0 {
            self.deferred.store(true, SeqCst);
            return None;
        }
        self.deferred.store(false, SeqCst);
        let job = p.jobs.take(best)?;
        let ranked = job.traits.client.inspect(|&key| p.history.started(key, now)).is_some();
        drop(p);
        if ranked {
            self.note_counts_changed();
        }
        self.queued.fetch_sub(1, SeqCst);
        self.running.fetch_add(1, SeqCst);
        Some((job, score))
    }

    /// [`Scheduler::pick_scored`] for tests, which refuse nothing.
    #[cfg(test)]
    pub fn pick(&self) -> Option<Box<Job>> {
        self.pick_scored(&mut Vec::new()).map(|(j, _)| j)
    }

    /// For the monitor: the jobs waiting past the queue timeout or beyond the limit, taken out;
    /// the jobs of clients that left are dropped.
    pub fn expired(&self) -> Vec<Box<Job>> {
        let mut refused = Vec::new();
        if self.queued.load(SeqCst) > 0 {
            let mut p = lock(&self.pending);
            self.intake(&mut p, Instant::now(), &mut refused);
            self.drop_gone(&mut p);
        }
        refused
    }

    /// Drops the queued jobs whose clients have left (their connections are closed already, so
    /// nobody is answered); returns whether there were any.
    pub fn purge_gone(&self) -> bool {
        if self.queued.load(SeqCst) <= 0 {
            return false;
        }
        let mut p = lock(&self.pending);
        while let Some(job) = self.inbox.pop() {
            p.jobs.push(job);
        }
        self.drop_gone(&mut p) > 0
    }

    fn drop_gone(&self, p: &mut Pending) -> usize {
        let dropped = p.jobs.retain(|j| !j.exchange.is_gone());
        if dropped > 0 {
            self.queued.fetch_sub(dropped as isize, SeqCst);
            self.stats.abandoned.fetch_add(dropped as u64, Relaxed);
        }
        dropped
    }

    /// Requests running per ranked client (for SIGUSR2).
    pub fn running_by_client(&self) -> Vec<(ClientKey, u32)> {
        lock(&self.pending).history.running_by_client()
    }

    /// Keeps the clients' counts for the other processes from now on (see
    /// [`History::report`]); `changed` is called when they change after a report (once until
    /// the next report: a ranked client's requests cost it at most one call per report).
    pub fn share_counts(&self, changed: Box<dyn Fn() + Send + Sync>) {
        let _ = self.on_counts_changed.set(changed);
        lock(&self.pending).history.share();
    }

    fn note_counts_changed(&self) {
        if !self.counts_changed.swap(true, Relaxed)
            && let Some(changed) = self.on_counts_changed.get()
        {
            changed();
        }
    }

    /// What to tell the other processes, if anything changed since the last report: per
    /// client, the requests running here and those started since then. Costs an atomic load
    /// when nothing did (no ranked client: loopback and private addresses never count).
    pub fn report_counts(&self) -> Option<(PerClient, PerClient)> {
        if !self.counts_changed.swap(false, Relaxed) {
            return None;
        }
        Some(lock(&self.pending).history.report())
    }

    /// Adds in another process's report (`from`: its pid).
    pub fn merge_counts(&self, from: u32, running: Vec<(ClientKey, u32)>, started: &[(ClientKey, u32)]) {
        lock(&self.pending).history.merge(from, running, started, Instant::now());
    }

    /// Another process is gone: what it ran no longer counts.
    pub fn forget_process(&self, from: u32) {
        lock(&self.pending).history.forget(from);
    }

    /// The worker loop's pick: takes the best job, and hands back the searching token a woken
    /// worker holds (`token`), passing it on if work remains.
    pub fn next_job(&self, token: &mut bool, refused: &mut Vec<Box<Job>>) -> Option<(Box<Job>, i64)> {
        let job = self.pick_scored(refused);
        if std::mem::take(token) {
            self.searched();
        }
        job
    }

    /// A picked job of a client with these traits is finished.
    pub fn done(&self, traits: &Traits) {
        if let Some(key) = traits.client {
            lock(&self.pending).history.finished(key);
            self.note_counts_changed();
        }
        if self.running.fetch_sub(1, SeqCst) == 1
            && self.deferred.load(SeqCst)
            && self.queued.load(SeqCst) > 0
            && self.searching.load(SeqCst) == 0
        {
            // Deferred low-scored work may run now that nothing runs.
            self.wake_one();
        }
    }

    /// A worker that held a searching token has looked for work: give the token back, and if
    /// there is still work and nobody else is searching, pass the token on.
    pub fn searched(&self) {
        self.searching.fetch_sub(1, SeqCst);
        if self.queued.load(SeqCst) > 0
            && self.searching.load(SeqCst) == 0
            && (self.running.load(SeqCst) == 0 || !self.contended())
            && !self.in_progress.binds(self.running.load(SeqCst))
        {
            self.wake_one();
        }
    }

    /// Parks the calling worker until it is handed a searching token. Returns at once (without a
    /// token) if work arrived while it was registering, unless `stepping_back` (see
    /// [`Scheduler::should_yield`]), or the running workers are gone and the work would be left.
    /// Call with the GIL released.
    pub fn park(&self, me: &Arc<Sleeper>, stepping_back: bool) -> bool {
        lock(&self.idle).push(me.clone());
        let nobody_runs = self.running.load(SeqCst) == 0;
        let may_run = !stepping_back
            && !self.deferred.load(SeqCst)
            && !self.in_progress.binds(self.running.load(SeqCst));
        if self.queued.load(SeqCst) > 0 && (nobody_runs || may_run) {
            let mut idle = lock(&self.idle);
            if let Some(pos) = idle.iter().position(|s| Arc::ptr_eq(s, me)) {
                idle.swap_remove(pos);
                return false;
            }
            // Someone already took us off the list: the token is on its way.
        }
        // Asleep under SCHED_BATCH (`sys::policy`), so that the wake-up that hands it work does
        // not preempt the core thread that queued it. Only before a real sleep: a policy change
        // reschedules, and changing it on every look for work made idle workers hand the CPU to
        // each other thousands of times a second while the core thread, itself under
        // SCHED_BATCH, waited (50-90 ms stalls, p99 x30).
        let mut batched = false;
        while !me.woken.swap(false, SeqCst) {
            if !batched {
                crate::sys::policy::before_sleep();
                batched = true;
            }
            std::thread::park();
        }
        true
    }

    /// The calling worker's handle for [`Scheduler::park`].
    pub fn sleeper() -> Arc<Sleeper> {
        Arc::new(Sleeper { thread: std::thread::current(), woken: AtomicBool::new(false) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn job(path: &str) -> Box<Job> {
        crate::handoff::test_job(path, Traits { query: path.contains('?'), ..Traits::local() })
    }

    fn path(j: &Job) -> Vec<u8> {
        j.head.path().unwrap().to_vec()
    }

    fn public(path: &str, ip: [u8; 4], robot: bool) -> Box<Job> {
        let mut j = job(path);
        j.traits = Traits {
            client: Some(crate::client::ClientKey::V4(u32::from_be_bytes(ip))),
            robot,
            query: path.contains('?'),
        };
        j
    }

    fn paths(jobs: &[Box<Job>]) -> Vec<String> {
        jobs.iter().map(|j| String::from_utf8(path(j)).unwrap()).collect()
    }

    #[test]
    fn jobs_of_clients_that_left_are_dropped_before_anyone_is_refused() {
        let s = Scheduler::new(2, None, 1, Arc::default());
        let (a, b, c) = (job("/a"), job("/b"), job("/c"));
        let gone = [a.exchange.clone(), b.exchange.clone()];
        for j in [a, b, c] {
            s.submit(j).unwrap();
        }
        assert!(!s.purge_gone(), "nobody left yet");
        for e in &gone {
            e.set_gone();
        }
        assert!(s.purge_gone());
        assert_eq!(s.queued(), 1);
        s.submit(job("/d")).unwrap();
        let mut refused = Vec::new();
        let (first, _) = s.pick_scored(&mut refused).unwrap();
        assert_eq!((path(&first), refused.len()), (b"/c".to_vec(), 0));
        // Over the limit, the gone ones go before a living one is refused.
        let e = job("/e");
        let gone = e.exchange.clone();
        s.submit(e).unwrap();
        s.submit(job("/f")).unwrap();
        gone.set_gone();
        let (next, _) = s.pick_scored(&mut refused).unwrap();
        assert_eq!((path(&next), refused.len(), s.queued()), (b"/d".to_vec(), 0, 1));
    }

    #[test]
    fn a_full_queue_refuses_the_lowest_scored_and_picks_keep_arrival_order() {
        let s = Scheduler::new(3, None, 1, Arc::default());
        for p in ["/a", "/b", "/c"] {
            assert!(s.submit(job(p)).is_ok());
        }
        assert_eq!(path(&s.pick().unwrap()), b"/a");
        // Over the limit: the lowest-scored go (a query string scores lower; then the oldest).
        s.submit(job("/q?x=1")).unwrap();
        s.submit(job("/d")).unwrap();
        s.submit(job("/e")).unwrap();
        let mut refused = Vec::new();
        let (first, score) = s.pick_scored(&mut refused).unwrap();
        assert_eq!(
            (paths(&refused), path(&first), score),
            (vec!["/q".to_string(), "/b".to_string()], b"/c".to_vec(), 1000)
        );
        let order: Vec<Vec<u8>> = std::iter::from_fn(|| s.pick()).map(|j| path(&j)).collect();
        assert_eq!(order, vec![b"/d".to_vec(), b"/e".to_vec()]);
        assert_eq!((s.queued(), s.running()), (0, 4));
        s.done(&Traits::local());
        assert_eq!(s.running(), 3);
        // The inbox itself holds twice the limit; beyond that the newest is refused at once.
        for i in 0..6 {
            s.submit(job(&format!("/f{i}"))).unwrap();
        }
        assert!(s.submit(job("/g")).is_err(), "the job comes back");
    }

    #[test]
    fn shared_counts_nudge_once_per_report_and_only_for_ranked_clients() {
        let s = Scheduler::new(64, None, 1, Arc::default());
        let nudges = Arc::new(AtomicUsize::new(0));
        let n = nudges.clone();
        s.share_counts(Box::new(move || {
            n.fetch_add(1, SeqCst);
        }));
        s.submit(job("/local")).unwrap();
        let local = s.pick().unwrap();
        s.done(&local.traits);
        assert_eq!((nudges.load(SeqCst), s.report_counts()), (0, None), "loopback never counts");
        s.submit(public("/p1", [8, 8, 8, 8], false)).unwrap();
        s.submit(public("/p2", [8, 8, 8, 8], false)).unwrap();
        let (a, b) = (s.pick().unwrap(), s.pick().unwrap());
        assert_eq!(nudges.load(SeqCst), 1, "one nudge until the next report");
        let key = crate::client::ClientKey::V4(0x0808_0808);
        assert_eq!(s.report_counts(), Some((vec![(key, 2)], vec![(key, 2)])));
        assert_eq!(s.report_counts(), None, "nothing changed since");
        s.done(&a.traits);
        s.done(&b.traits);
        assert_eq!(nudges.load(SeqCst), 2);
        assert_eq!(s.report_counts(), Some((vec![], vec![])));
    }

    #[test]
    fn busy_clients_and_robots_wait_their_turn() {
        let s = Scheduler::new(64, None, 1, Arc::default());
        // A public client with two requests running, another public client, a local one.
        s.submit(public("/p1", [8, 8, 8, 8], false)).unwrap();
        s.submit(public("/p2", [8, 8, 8, 8], false)).unwrap();
        let (a, b) = (s.pick().unwrap(), s.pick().unwrap());
        s.submit(public("/p3", [8, 8, 8, 8], false)).unwrap();
        s.submit(public("/robot", [66, 249, 66, 1], true)).unwrap();
        s.submit(public("/other", [1, 1, 1, 1], false)).unwrap();
        s.submit(job("/local?q")).unwrap();
        assert_eq!(path(&s.pick().unwrap()), b"/other");
        assert_eq!(path(&s.pick().unwrap()), b"/local");
        s.done(&b.traits);
        s.done(&a.traits);
        let p3 = s.pick().unwrap();
        assert_eq!(path(&p3), b"/p3");
        // The robot scores -7000: it waits while anything runs.
        assert!(s.pick().is_none(), "a robot does not start while others run");
        for t in [Traits::local(), Traits::local(), p3.traits] {
            s.done(&t);
        }
        assert_eq!(s.running(), 0);
        assert_eq!(path(&s.pick().unwrap()), b"/robot");
    }

    #[test]
    fn queue_timeouts_are_refused_at_pick_and_by_the_monitor() {
        let s = Scheduler::new(8, Some(Duration::from_millis(30)), 1, Arc::default());
        s.submit(job("/old")).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        s.submit(job("/new")).unwrap();
        assert_eq!(paths(&s.expired()), vec!["/old".to_string()]);
        assert_eq!(s.queued(), 1);
        std::thread::sleep(Duration::from_millis(50));
        let mut refused = Vec::new();
        assert!(s.pick_scored(&mut refused).is_none());
        assert_eq!(paths(&refused), vec!["/new".to_string()]);
        assert_eq!(s.queued(), 0);
    }

    /// Workers park when idle; every submitted job is picked, with no lost wake-up, whatever the
    /// interleaving of submits and parks.
    #[test]
    fn no_job_is_left_behind() {
        let s = Arc::new(Scheduler::new(64, None, 2, Arc::default()));
        let picked = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..3)
            .map(|_| {
                let (s, picked) = (s.clone(), picked.clone());
                std::thread::spawn(move || {
                    let me = Scheduler::sleeper();
                    let mut token = false;
                    let mut refused = Vec::new();
                    loop {
                        let next = s.next_job(&mut token, &mut refused);
                        // Beyond the limit (64 here) the lowest-scored jobs are refused: they are
                        // answered (504), not left behind. A slow machine gets there.
                        picked.fetch_add(refused.drain(..).count(), SeqCst);
                        match next {
                            Some((j, _)) if path(&j) == b"/stop" => return,
                            Some(_) => {
                                picked.fetch_add(1, SeqCst);
                                s.done(&Traits::local());
                            }
                            None => token = s.park(&me, false),
                        }
                    }
                })
            })
            .collect();
        let total = 2000;
        for i in 0..total {
            while s.submit(job(&format!("/j{i}"))).is_err() {
                std::thread::yield_now();
            }
            if i % 7 == 0 {
                std::thread::sleep(std::time::Duration::from_micros(50));
            }
        }
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while picked.load(SeqCst) < total {
            assert!(Instant::now() < deadline, "only {} of {total} picked or refused", picked.load(SeqCst));
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        for _ in 0..3 {
            while s.submit(job("/stop")).is_err() {
                std::thread::yield_now();
            }
        }
        for w in workers {
            w.join().unwrap();
        }
    }

    #[test]
    fn long_gil_waits_mark_contention_only_with_two_cpus() {
        let two = Scheduler::new(8, None, 2, Arc::default());
        two.note_gil_wait(Duration::from_micros(100));
        assert!(!two.contended(), "a short wait is not contention");
        two.note_gil_wait(Duration::from_millis(6));
        assert!(two.contended());
        let one = Scheduler::new(8, None, 1, Arc::default());
        one.note_gil_wait(Duration::from_millis(6));
        assert!(!one.contended(), "on one CPU a long wait is a wait for the CPU");
    }

    fn parked(s: &Arc<Scheduler>, stepping_back: bool) -> std::thread::JoinHandle<bool> {
        let s = s.clone();
        std::thread::spawn(move || s.park(&Scheduler::sleeper(), stepping_back))
    }

    fn still_parked(h: &std::thread::JoinHandle<bool>) -> bool {
        std::thread::sleep(std::time::Duration::from_millis(50));
        !h.is_finished()
    }

    /// A push wakes nobody; the wake-up the core thread asks for once its batch is queued hands
    /// an idle worker the searching token.
    #[test]
    fn a_push_waits_for_the_batch_wake_up() {
        let s = Arc::new(Scheduler::new(8, None, 1, Arc::default()));
        let idle = parked(&s, false);
        assert!(still_parked(&idle), "nothing queued: asleep");
        s.push(job("/a")).unwrap();
        s.push(job("/b")).unwrap();
        assert!(still_parked(&idle), "a push wakes nobody");
        s.wake_for_queued();
        assert!(idle.join().unwrap(), "woken with a searching token");
    }

    /// While the GIL is contended and a worker runs, new work wakes nobody and a finished worker
    /// steps back; once nobody runs, work wakes a worker again.
    #[test]
    fn contention_holds_back_extra_workers() {
        let s = Arc::new(Scheduler::new(8, None, 2, Arc::default()));
        s.submit(job("/a")).unwrap();
        s.submit(job("/b")).unwrap();
        let running = s.pick().unwrap();
        // Without stepping back, queued work means no sleep at all.
        assert!(!parked(&s, false).join().unwrap());
        s.note_gil_wait(Duration::from_millis(6));
        assert!(s.should_yield());
        let stepped_back = parked(&s, true);
        assert!(still_parked(&stepped_back), "a worker stepping back sleeps despite queued work");
        // Contention lasts CONTENDED_FOR (shorter than the wait above): observe it again.
        s.note_gil_wait(Duration::from_millis(6));
        s.submit(job("/c")).unwrap();
        assert!(still_parked(&stepped_back), "no wake while contended and a worker runs");
        drop(running);
        s.done(&Traits::local());
        assert!(!s.should_yield());
        s.submit(job("/d")).unwrap();
        assert!(stepped_back.join().unwrap(), "woken with a searching token once nobody runs");
        // Stepping back when nobody runs would strand the queue: it returns at once.
        assert!(!parked(&s, true).join().unwrap());
    }
}
