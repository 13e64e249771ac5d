//! How many requests a process on one CPU runs at once.
//!
//! A worker that waits for the GIL while another computes takes it by force after CPython's
//! switch interval (5 ms), in the middle of the other's request, and an app that lets the GIL go
//! around its database calls lets a waiting worker in there too. With a CPU-bound app every
//! worker then ends up holding a request in progress, each waiting for the GIL to come round:
//! `loadtest/in_progress.py` saw 7-16 requests of a Django page in progress at once on one CPU
//! with 16 workers, and a p99 of 108-315 ms; one at a time, 40-68 ms at the same throughput.
//! More requests in progress help only while the others wait outside the GIL (for a database, a
//! sleep), and a server cannot see why a thread waits. On one CPU it can see whether more
//! requests would get anything done: while the CPU is busy with the app, a request more in
//! progress only waits. So every [`WINDOW`] the limit follows [`next`]: one fewer while the
//! process kept its CPU busy and its workers did most of that ([`load`]), never below one; when
//! the limit held a request back and the CPU was not busy, as many as would have filled it (the
//! limit over the CPU's busy share: 13 at 93% makes 14, 1 at 10% makes 10), and for
//! [`FLOOR_FOR`] windows no cut back to where the CPU went idle. Requests that have run for
//! [`LONG`] let as many more start, up to [`LONG_AT_MOST`], so that a few slow requests do not
//! stop the rest; not all of them, since requests waiting for the GIL run long too, and letting
//! every one of them out of the count brought back all 16 in progress. Requests that have
//! computed for [`LONG`] (their thread's CPU time, not the clock's) are out of the count however
//! many: a request waiting for the GIL does not compute, and six slow reports computing at once
//! must not hold a quick request back until one of them ends.
//!
//! Only for a process on one CPU; with two or more, `Scheduler` acts on GIL waits instead.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::time::{Duration, Instant};

/// How often the limit is looked at.
pub const WINDOW: Duration = Duration::from_millis(20);
/// The process's CPU time over a window's length above which its CPU counts as busy.
pub const BUSY: f64 = 0.97;
/// The workers' share of that CPU time from which the busy CPU is the app's (the GIL's): not
/// the core threads', busy with static files or cached responses.
pub const APP_SHARE: f64 = 0.5;
/// A request running this long lets one more start beside the limit ...
pub const LONG: Duration = Duration::from_millis(50);
/// ... up to this many, unless it computed that long.
pub const LONG_AT_MOST: usize = 4;
/// Windows after a rise during which the limit is not cut to the level that left the CPU idle.
/// An app that waits outside the GIL keeps its CPU busy with a few requests fewer than it had,
/// and one fewer than that leaves it idle: each such cut costs a window of throughput, and so
/// it is tried again only after 2 s (cut again after each rise, a Flask endpoint waiting 2 ms
/// lost 5-15%).
pub const FLOOR_FOR: u32 = 100;

/// The limit at the end of a window, from the one during it: `workers` is the most there can be,
/// `running` the requests in progress now that count, `load` how the window used the CPU
/// ([`load`]), `held` whether the limit held a request back during the window, `floor` a level
/// that left the CPU idle less than [`FLOOR_FOR`] windows ago (0: none), not to be cut back to.
pub fn next(limit: usize, workers: usize, running: usize, load: Load, held: bool, floor: usize) -> usize {
    let workers = workers.max(1);
    let limit = limit.min(workers);
    if load.busy {
        limit.min(running).saturating_sub(1).max(floor + 1).max(1).min(limit)
    } else if held {
        // As many as would have kept the CPU busy, had the ones in progress used it alike.
        let fill = (limit as f64 / load.share.max(0.05)).round() as usize;
        fill.clamp(limit, workers)
    } else {
        limit
    }
}

/// How a window used the CPU.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Load {
    /// The app kept the CPU busy ([`load`]).
    pub busy: bool,
    /// The process's CPU time over the window's length.
    pub share: f64,
}

/// How a window of `length` used the CPU: busy with the app when the process used at least
/// [`BUSY`] of it (`process`) and the workers at least [`APP_SHARE`] of that (`workers`).
pub fn load(process: Duration, workers: Duration, length: Duration) -> Load {
    if length.is_zero() {
        return Load { busy: false, share: 0.0 };
    }
    let (process, workers) = (process.as_secs_f64(), workers.as_secs_f64());
    let share = process / length.as_secs_f64();
    Load { busy: share >= BUSY && workers >= APP_SHARE * process, share }
}

/// What a window's end counts in the process.
#[derive(Clone, Copy, Debug)]
pub struct Inputs {
    /// Worker threads: the most requests there can be in progress.
    pub workers: usize,
    /// Requests in progress now.
    pub running: usize,
    /// Of those, the ones that have run for [`LONG`] ...
    pub long: usize,
    /// ... and, of these, the ones that computed that long.
    pub computing: usize,
    /// Whether requests wait in the queue.
    pub queued: bool,
}

impl Inputs {
    /// The requests in progress that do not count against the limit: every one that computed
    /// for [`LONG`], and up to [`LONG_AT_MOST`] more that ran that long.
    pub fn out(&self) -> usize {
        let computing = self.computing.min(self.long);
        (computing + (self.long - computing).min(LONG_AT_MOST)).min(self.running)
    }
}

struct Window {
    start: Instant,
    /// The process's and the workers' CPU time at `start`.
    cpu: (Duration, Duration),
    /// The level that last left the CPU idle, and for how many more windows it counts.
    floor: (usize, u32),
}

/// The limit and what it is measured from.
pub struct Limit {
    on: bool,
    limit: AtomicUsize,
    /// Requests in progress let out of the count as of the last window ([`Inputs::out`]).
    out: AtomicUsize,
    held: AtomicBool,
    window: Mutex<Option<Window>>,
}

impl Limit {
    /// No limit unless `on` (a process on one CPU).
    pub fn new(on: bool) -> Limit {
        Limit {
            on,
            limit: AtomicUsize::new(usize::MAX),
            out: AtomicUsize::new(0),
            held: AtomicBool::new(false),
            window: Mutex::new(None),
        }
    }

    /// Whether the limit is kept at all.
    pub fn is_on(&self) -> bool {
        self.on
    }

    /// Whether a request may start beside `running` others; if not, the window notes it.
    pub fn allows(&self, running: usize) -> bool {
        if !self.binds(running) {
            return true;
        }
        self.held.store(true, Relaxed);
        false
    }

    /// Whether the limit holds requests back now.
    pub fn binds(&self, running: usize) -> bool {
        running.saturating_sub(self.out.load(Relaxed)) >= self.limit.load(Relaxed)
    }

    /// The limit now (`usize::MAX`: none yet).
    pub fn get(&self) -> usize {
        self.limit.load(Relaxed)
    }

    /// At the end of a window, sets the next limit; returns whether it rose (the caller wakes a
    /// worker for the work it held back). `cpu` gives the process's and the workers' CPU time so
    /// far, `inputs` what the process has in progress now.
    pub fn regulate(
        &self,
        now: Instant,
        cpu: impl FnOnce() -> (Duration, Duration),
        inputs: impl FnOnce() -> Inputs,
    ) -> bool {
        if !self.on {
            return false;
        }
        let Ok(mut window) = self.window.try_lock() else { return false };
        let Some(w) = window.as_ref() else {
            *window = Some(Window { start: now, cpu: cpu(), floor: (0, 0) });
            return false;
        };
        let elapsed = now.saturating_duration_since(w.start);
        if elapsed < WINDOW {
            return false;
        }
        let spent = cpu();
        let load = load(spent.0.saturating_sub(w.cpu.0), spent.1.saturating_sub(w.cpu.1), elapsed);
        let now_in = inputs();
        let (workers, running, out) = (now_in.workers, now_in.running, now_in.out());
        // Held back: a pick refused during the window, or requests waiting now at the limit.
        let held = self.held.swap(false, Relaxed) || (now_in.queued && self.binds(running));
        self.out.store(out, SeqCst);
        let before = self.limit.load(SeqCst);
        let floor = if w.floor.1 > 0 { w.floor.0 } else { 0 };
        let after = next(before, workers, running - out, load, held, floor);
        let rose = after > before.min(workers);
        let floor =
            if rose { (before.min(workers), FLOOR_FOR) } else { (w.floor.0, w.floor.1.saturating_sub(1)) };
        *window = Some(Window { start: now, cpu: spent, floor });
        drop(window);
        self.limit.store(after, SeqCst);
        rose
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_follows_how_busy_the_cpu_was() {
        let busy = Load { busy: true, share: 0.99 };
        let at = |share| Load { busy: false, share };
        // (limit, workers, running, load, held) -> next, without a floor
        type Row = ((usize, usize, usize, Load, bool), usize);
        let table: &[Row] = &[
            // No limit yet: the first busy window cuts to one below what runs.
            ((usize::MAX, 16, 16, busy, false), 15),
            ((usize::MAX, 16, 3, busy, true), 2),
            // Busy: one fewer each window, never below one.
            ((5, 16, 5, busy, true), 4),
            ((1, 16, 1, busy, true), 1),
            ((2, 16, 0, busy, false), 1),
            // Not busy and something was held back: as many as would have filled the CPU, up to
            // the workers, never fewer.
            ((13, 16, 13, at(0.93), true), 14),
            ((1, 16, 1, at(0.1), true), 10),
            ((1, 16, 1, at(0.0), true), 16),
            ((12, 16, 12, at(0.5), true), 16),
            // A CPU nearly full with one in progress: one is enough.
            ((1, 16, 1, at(0.95), true), 1),
            // A CPU full, but with the core threads' work: as it was.
            ((4, 16, 4, at(1.0), true), 4),
            // Not busy, nothing held back: as it was.
            ((3, 16, 1, at(0.2), false), 3),
            ((usize::MAX, 16, 0, at(0.0), false), 16),
        ];
        for &((limit, workers, running, load, held), want) in table {
            let got = next(limit, workers, running, load, held, 0);
            assert_eq!(got, want, "{limit} {running} {load:?} {held}");
        }
        // A level that left the CPU idle is not cut back to; the rest is as above.
        assert_eq!(next(8, 16, 8, busy, false, 7), 8);
        assert_eq!(next(9, 16, 9, busy, false, 7), 8);
        assert_eq!(next(8, 16, 3, busy, false, 7), 8);
        assert_eq!(next(8, 16, 8, at(0.5), true, 7), 16);
    }

    #[test]
    fn the_cpu_is_busy_with_the_app_when_the_process_fills_it_and_the_workers_most_of_that() {
        let ms = Duration::from_millis;
        // (process, workers, length) -> busy (the share is process / length)
        let table = [
            ((20, 17, 20), true),
            ((20, 10, 20), true),
            ((17, 17, 20), false),
            ((20, 9, 20), false),
            ((40, 30, 20), true),
            ((0, 0, 0), false),
        ];
        for ((process, workers, length), want) in table {
            let l = load(ms(process), ms(workers), ms(length));
            assert_eq!(l.busy, want, "{process} {workers} {length}");
            if length > 0 {
                assert!((l.share - process as f64 / length as f64).abs() < 1e-9, "{}", l.share);
            }
        }
    }

    fn inputs(workers: usize, running: usize, long: usize, computing: usize, queued: bool) -> Inputs {
        Inputs { workers, running, long, computing, queued }
    }

    #[test]
    fn requests_that_computed_long_are_out_of_the_count_however_many() {
        // (running, ran long, computed long) -> out of the count
        let table = [
            ((8, 0, 0), 0),
            ((8, 2, 0), 2),
            ((8, 6, 0), LONG_AT_MOST),
            ((8, 6, 6), 6),
            ((8, 6, 1), 1 + LONG_AT_MOST),
            ((16, 16, 10), 10 + LONG_AT_MOST),
            ((16, 16, 16), 16),
            // A request computes no longer than it runs; counts read at different moments may
            // disagree, and never let out more than there are.
            ((3, 2, 5), 2),
            ((2, 5, 0), 2),
        ];
        for ((running, long, computing), out) in table {
            let i = inputs(16, running, long, computing, false);
            assert_eq!(i.out(), out, "{i:?}");
        }
    }

    #[test]
    fn a_window_measures_the_cpu_over_its_length() {
        let ms = Duration::from_millis;
        let l = Limit::new(true);
        let t0 = Instant::now();
        assert!(!l.regulate(t0, || (ms(0), ms(0)), || unreachable!()), "the first look starts a window");
        assert!(!l.regulate(t0 + WINDOW / 2, || unreachable!(), || unreachable!()), "too soon");
        // 20 ms of CPU in 20 ms, 17 of them the workers': busy, with 8 running.
        assert!(!l.regulate(t0 + WINDOW, || (ms(20), ms(17)), || inputs(16, 8, 0, 0, false)));
        assert_eq!(l.get(), 7);
        assert!(l.binds(7) && !l.binds(6));
        // Held back, then a window where the CPU was busy half the time: twice as many.
        assert!(!l.allows(7));
        assert!(l.regulate(t0 + 2 * WINDOW, || (ms(30), ms(25)), || inputs(16, 7, 0, 0, false)));
        assert_eq!(l.get(), 14);
        // Busy again: cut, but not back to 7 (which left the CPU idle) for FLOOR_FOR windows.
        let (mut t, mut cpu) = (t0 + 2 * WINDOW, (ms(30), ms(25)));
        for _ in 0..FLOOR_FOR {
            t += WINDOW;
            cpu = (cpu.0 + WINDOW, cpu.1 + WINDOW);
            assert!(!l.regulate(t, || cpu, || inputs(16, 14, 0, 0, false)));
            assert!(l.get() >= 8);
        }
        assert_eq!(l.get(), 8);
        t += WINDOW;
        cpu = (cpu.0 + WINDOW, cpu.1 + WINDOW);
        assert!(!l.regulate(t, || cpu, || inputs(16, 14, 0, 0, false)));
        assert_eq!(l.get(), 7);
        // Requests that have run long let as many more start, up to LONG_AT_MOST.
        t += WINDOW;
        cpu = (cpu.0 + WINDOW, cpu.1 + WINDOW);
        assert!(!l.regulate(t, || cpu, || inputs(16, 15, 2, 0, false)));
        assert_eq!(l.get(), 6);
        assert!(!l.binds(7) && l.binds(8));
        t += WINDOW;
        assert!(!l.regulate(t, || (cpu.0 + WINDOW, cpu.1 + WINDOW), || inputs(16, 15, 9, 0, false)));
        assert_eq!(l.get(), 5);
        assert!(!l.binds(8) && l.binds(9));
        // Six slow requests computing at once: all out of the count, so one more may start.
        t += WINDOW;
        assert!(!l.regulate(t, || (cpu.0 + 2 * WINDOW, cpu.1 + 2 * WINDOW), || inputs(16, 6, 6, 6, true)));
        assert_eq!(l.get(), 1);
        assert!(!l.binds(6) && l.binds(7));
        // One worker at the limit runs the queue alone (no pick is refused), the CPU idle: the
        // requests waiting say it holds them back.
        let l = Limit::new(true);
        assert!(!l.regulate(t0, || (ms(0), ms(0)), || unreachable!()));
        assert!(!l.regulate(t0 + WINDOW, || (ms(20), ms(19)), || inputs(16, 1, 0, 0, true)));
        assert_eq!(l.get(), 1);
        assert!(l.regulate(t0 + 2 * WINDOW, || (ms(22), ms(20)), || inputs(16, 1, 0, 0, true)));
        assert_eq!(l.get(), 10);
        // Off: never a limit.
        let off = Limit::new(false);
        assert!(!off.regulate(t0, || (ms(0), ms(0)), || inputs(16, 16, 0, 0, false)));
        assert!(off.allows(1000));
    }
}
