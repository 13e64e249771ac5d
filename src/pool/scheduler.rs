//! The queue between the core threads and the workers, and who gets woken.
//!
//! Core threads push into a bounded lock-free inbox. A worker picks by draining the inbox into the
//! pending list and taking the best-scored job; every job is re-scored at each pick, so the
//! priority rules (SPEC §13) change only [`Scheduler::score`], not the hand-off.
//!
//! Wake-ups follow the "searching worker" rule: a push wakes an idle worker only when none is
//! already on its way to pick. A worker that finds nothing gives up its searching token *before*
//! its last look at the queue, so no push is ever left without a worker to see it.
//!
//! More workers only help while the running ones wait outside the GIL (I/O, sleeps). When the app
//! is CPU-bound, every extra active worker takes the GIL by force after the switch interval (5 ms)
//! and leaves the preempted request waiting: with 16 active workers a 25 µs request was seen to
//! wait 100 ms (p99). So a woken worker measures how long it waited for the GIL: a long wait marks
//! the GIL contended for [`CONTENDED_FOR`], during which no further worker is woken while one runs,
//! and workers that finish a job yield to the ones already running instead of adding to the queue
//! for the GIL. Only with two or more CPUs: on one CPU workers cannot hold the GIL in parallel, and
//! a long wait measures the wait for the CPU instead (acting on it was seen to worsen p99 there).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::Thread;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;

use super::Job;

/// The queue holds as many jobs as it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull;

/// A parked worker.
pub struct Sleeper {
    thread: Thread,
    /// Set (with a searching token handed over) by the waker before unparking.
    woken: AtomicBool,
}

/// A GIL wait at least this long means the running workers hold it by computing, not waiting.
pub const CONTENDED_WAIT: Duration = Duration::from_millis(1);
/// How long one such observation keeps the scheduler from waking more workers.
pub const CONTENDED_FOR: Duration = Duration::from_millis(10);

pub struct Scheduler {
    inbox: ArrayQueue<Job>,
    /// Jobs taken out of the inbox and not yet picked; only workers touch it.
    pending: Mutex<VecDeque<Job>>,
    /// Inbox plus pending.
    queued: AtomicUsize,
    running: AtomicUsize,
    searching: AtomicUsize,
    idle: Mutex<Vec<Arc<Sleeper>>>,
    /// Until when (ns since `epoch`) the GIL counts as contended.
    contended_until: AtomicU64,
    /// Whether GIL waits are acted on (the process may run on two or more CPUs).
    watch_gil: bool,
    epoch: Instant,
    pub(crate) request_timeout: Option<Duration>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Scheduler {
    /// `cpus`: how many CPUs the process may run on (GIL contention needs two).
    pub fn new(capacity: usize, request_timeout: Option<Duration>, cpus: usize) -> Scheduler {
        Scheduler {
            inbox: ArrayQueue::new(capacity),
            pending: Mutex::new(VecDeque::with_capacity(capacity)),
            queued: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            searching: AtomicUsize::new(0),
            idle: Mutex::new(Vec::new()),
            contended_until: AtomicU64::new(0),
            watch_gil: cpus >= 2,
            epoch: Instant::now(),
            request_timeout,
        }
    }

    pub fn queued(&self) -> usize {
        self.queued.load(SeqCst)
    }

    pub fn running(&self) -> usize {
        self.running.load(SeqCst)
    }

    /// Called on a core thread: queue the job, wake a worker if none is searching. A full queue
    /// refuses the job (it is dropped; the caller answers 503).
    pub fn submit(&self, job: Job) -> Result<(), QueueFull> {
        if self.queued.fetch_add(1, SeqCst) >= self.inbox.capacity() {
            self.queued.fetch_sub(1, SeqCst);
            return Err(QueueFull);
        }
        if self.inbox.push(job).is_err() {
            self.queued.fetch_sub(1, SeqCst);
            return Err(QueueFull);
        }
        if self.searching.load(SeqCst) == 0 && (self.running.load(SeqCst) == 0 || !self.contended()) {
            self.wake_one();
        }
        Ok(())
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

    /// The score of a queued job; the highest runs first, ties in arrival order.
    fn score(_job: &Job) -> i64 {
        0
    }

    /// Takes the best queued job. Called by workers only.
    pub fn pick(&self) -> Option<Job> {
        if self.queued.load(SeqCst) == 0 {
            return None;
        }
        let mut pending = lock(&self.pending);
        while let Some(job) = self.inbox.pop() {
            pending.push_back(job);
        }
        let best = pending
            .iter()
            .enumerate()
            .max_by_key(|(i, j)| (Self::score(j), std::cmp::Reverse(*i)))
            .map(|(i, _)| i)?;
        let job = pending.remove(best)?;
        self.queued.fetch_sub(1, SeqCst);
        self.running.fetch_add(1, SeqCst);
        Some(job)
    }

    /// The worker loop's pick: takes the best job, and hands back the searching token a woken
    /// worker holds (`token`), passing it on if work remains.
    pub fn next_job(&self, token: &mut bool) -> Option<Job> {
        let job = self.pick();
        if std::mem::take(token) {
            self.searched();
        }
        job
    }

    /// A picked job is finished.
    pub fn done(&self) {
        self.running.fetch_sub(1, SeqCst);
    }

    /// A worker that held a searching token has looked for work: give the token back, and if
    /// there is still work and nobody else is searching, pass the token on.
    pub fn searched(&self) {
        self.searching.fetch_sub(1, SeqCst);
        if self.queued.load(SeqCst) > 0
            && self.searching.load(SeqCst) == 0
            && (self.running.load(SeqCst) == 0 || !self.contended())
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
        if self.queued.load(SeqCst) > 0 && (!stepping_back || self.running.load(SeqCst) == 0) {
            let mut idle = lock(&self.idle);
            if let Some(pos) = idle.iter().position(|s| Arc::ptr_eq(s, me)) {
                idle.swap_remove(pos);
                return false;
            }
            // Someone already took us off the list: the token is on its way.
        }
        while !me.woken.swap(false, SeqCst) {
            std::thread::park();
        }
        true
    }

    pub fn sleeper() -> Arc<Sleeper> {
        Arc::new(Sleeper { thread: std::thread::current(), woken: AtomicBool::new(false) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::exchange::Exchange;
    use std::time::Instant;

    fn job(path: &str) -> Job {
        let raw = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
        let (h, len) = crate::http::parse_head(raw.as_bytes()).unwrap().unwrap();
        Job {
            head: h.attach(bytes::Bytes::copy_from_slice(&raw.as_bytes()[..len])),
            body: bytes::Bytes::new(),
            body_complete: true,
            peer: "127.0.0.1:1".parse().unwrap(),
            local: "127.0.0.1:2".parse().unwrap(),
            https: false,
            exchange: Arc::new(Exchange::new()),
            queued_at: Instant::now(),
        }
    }

    fn path(j: &Job) -> Vec<u8> {
        j.head.path().unwrap().to_vec()
    }

    #[test]
    fn a_full_queue_refuses_and_picks_keep_arrival_order() {
        let s = Scheduler::new(3, None, 1);
        for p in ["/a", "/b", "/c"] {
            assert!(s.submit(job(p)).is_ok());
        }
        assert_eq!(s.submit(job("/d")), Err(QueueFull));
        assert_eq!(s.queued(), 3);
        assert_eq!(path(&s.pick().unwrap()), b"/a");
        assert!(s.submit(job("/e")).is_ok());
        let order: Vec<Vec<u8>> = std::iter::from_fn(|| s.pick()).map(|j| path(&j)).collect();
        assert_eq!(order, vec![b"/b".to_vec(), b"/c".to_vec(), b"/e".to_vec()]);
        assert_eq!((s.queued(), s.running()), (0, 4));
        s.done();
        assert_eq!(s.running(), 3);
    }

    /// Workers park when idle; every submitted job is picked, with no lost wake-up, whatever the
    /// interleaving of submits and parks.
    #[test]
    fn no_job_is_left_behind() {
        let s = Arc::new(Scheduler::new(64, None, 2));
        let picked = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..3)
            .map(|_| {
                let (s, picked) = (s.clone(), picked.clone());
                std::thread::spawn(move || {
                    let me = Scheduler::sleeper();
                    let mut token = false;
                    loop {
                        match s.next_job(&mut token) {
                            Some(j) if path(&j) == b"/stop" => return,
                            Some(_) => {
                                picked.fetch_add(1, SeqCst);
                                s.done();
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
            assert!(Instant::now() < deadline, "only {} of {total} picked", picked.load(SeqCst));
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
        let two = Scheduler::new(8, None, 2);
        two.note_gil_wait(Duration::from_micros(100));
        assert!(!two.contended(), "a short wait is not contention");
        two.note_gil_wait(Duration::from_millis(3));
        assert!(two.contended());
        let one = Scheduler::new(8, None, 1);
        one.note_gil_wait(Duration::from_millis(3));
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

    /// While the GIL is contended and a worker runs, new work wakes nobody and a finished worker
    /// steps back; once nobody runs, work wakes a worker again.
    #[test]
    fn contention_holds_back_extra_workers() {
        let s = Arc::new(Scheduler::new(8, None, 2));
        s.submit(job("/a")).unwrap();
        s.submit(job("/b")).unwrap();
        let running = s.pick().unwrap();
        // Without stepping back, queued work means no sleep at all.
        assert!(!parked(&s, false).join().unwrap());
        s.note_gil_wait(Duration::from_millis(3));
        assert!(s.should_yield());
        let stepped_back = parked(&s, true);
        assert!(still_parked(&stepped_back), "a worker stepping back sleeps despite queued work");
        // Contention lasts CONTENDED_FOR (shorter than the wait above): observe it again.
        s.note_gil_wait(Duration::from_millis(3));
        s.submit(job("/c")).unwrap();
        assert!(still_parked(&stepped_back), "no wake while contended and a worker runs");
        drop(running);
        s.done();
        assert!(!s.should_yield());
        s.submit(job("/d")).unwrap();
        assert!(stepped_back.join().unwrap(), "woken with a searching token once nobody runs");
        // Stepping back when nobody runs would strand the queue: it returns at once.
        assert!(!parked(&s, true).join().unwrap());
    }
}
