//! Scheduling policies: the core threads and the Python workers run under SCHED_BATCH, and what
//! the app starts runs under the normal policy.
//!
//! Under SCHED_BATCH a thread's wake-up does not preempt the thread running on its CPU. When a
//! core thread and the Python thread that runs its requests share a CPU, each hand-off would
//! otherwise switch threads at once (a context switch per request); with it, work queues up while
//! the other side runs and is taken as a batch (15% less CPU per request on one core, hello with
//! wrk -c64, against workers under the normal policy).
//!
//! A worker sleeps under SCHED_BATCH, and runs the app so while no other job runs. Until
//! 2026-12 it went back to the normal policy each time it woke and to SCHED_BATCH each time it
//! slept, so that the processes the app starts would not inherit SCHED_BATCH. Those two
//! `sched_setscheduler` calls per sleep cost more than their own time: the kernel reschedules at
//! the call. At one to four busy connections, where a worker sleeps after almost every request,
//! dropping them took 4-7% off the CPU per request at one and 4-15% at four (one core, hello,
//! medians of alternating runs; switches per request 3.01 against 3.40 at one connection, 1.02
//! against 1.39 at four; nothing changed at 64).
//!
//! Beside other running jobs a worker runs under the normal policy ([`before_job`]): workers
//! that wait for the GIL must take it when the holder lets it go, as a woken thread under the
//! normal policy does at once. Under SCHED_BATCH the holder took it back first, and a saturated
//! Django site's p99 was 2-6 times as long (one core: 603-1,250 ms against 272-288;
//! `--cpu-share` 571-1,350 against 191-252).
//!
//! The app's processes start under the normal policy: the interpreter's audit hook calls
//! [`normal_before_spawn`] before every Python call that starts a process or runs foreign code
//! (see `wsgi::interp`), which puts the calling thread under the normal policy until the worker's
//! next job or sleep; and a child forked by C code resets itself ([`reset_in_children`]).
//! Threads the app starts inherit the policy of the worker that starts them, as they would
//! inherit a nice value; so do processes that `_posixsubprocess` starts without an audit event
//! (multiprocessing's `spawn` and `forkserver` start methods: measured, SCHED_BATCH when the
//! worker ran alone).

use std::cell::Cell;
use std::sync::Once;

/// Where the calling thread stands.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mine {
    /// Not a worker, not looked at yet.
    Other,
    /// Not a worker, and under the normal policy (or one the app chose) since it was looked at.
    Looked,
    /// A worker, under SCHED_BATCH.
    Batch,
    /// A worker under the normal policy: running beside others, or about to start a process.
    Normal,
}

thread_local! {
    static MINE: Cell<Mine> = const { Cell::new(Mine::Other) };
}

fn set(policy: libc::c_int) {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; param is a valid sched_param for SCHED_BATCH and
    // SCHED_OTHER, which take priority 0.
    unsafe {
        libc::sched_setscheduler(0, policy, &param);
    }
}

/// Puts a worker under `to` unless it is there.
fn worker_to(m: &Cell<Mine>, to: Mine) {
    if m.get() != to {
        set(if to == Mine::Batch { libc::SCHED_BATCH } else { libc::SCHED_OTHER });
        m.set(to);
    }
}

/// The calling thread's policy (`libc::SCHED_*`), or -1 if it cannot be read.
pub fn current() -> libc::c_int {
    // SAFETY: sched_getscheduler takes a pid (0: the calling thread) and touches no memory.
    unsafe { libc::sched_getscheduler(0) }
}

/// Puts the calling thread under SCHED_BATCH (a core thread, which never runs app code).
pub fn batch() {
    set(libc::SCHED_BATCH);
}

/// A worker starts, under SCHED_BATCH.
pub fn start_worker() {
    set(libc::SCHED_BATCH);
    MINE.with(|m| m.set(Mine::Batch));
}

/// A worker is about to run a job, `alone` if no other job runs: it runs it under SCHED_BATCH
/// when alone, else under the normal policy. A system call only when that changes.
pub fn before_job(alone: bool) {
    MINE.with(|m| worker_to(m, if alone { Mine::Batch } else { Mine::Normal }));
}

/// A worker is about to sleep until it is handed work: under SCHED_BATCH, so that the wake-up
/// does not preempt the core thread that queued the work.
pub fn before_sleep() {
    MINE.with(|m| worker_to(m, Mine::Batch));
}

/// About to start a process (or run foreign code that may): the calling thread goes under the
/// normal policy, which the child inherits. A worker stays so until its next job or sleep; any
/// other thread (one the app started, which inherited SCHED_BATCH) stays normal. Costs a system
/// call only when the policy changes, and on a thread that is not a worker one to look, the
/// first time.
pub fn normal_before_spawn() {
    MINE.with(|m| match m.get() {
        Mine::Batch => worker_to(m, Mine::Normal),
        Mine::Normal | Mine::Looked => {}
        Mine::Other => {
            normal_if_batch();
            m.set(Mine::Looked);
        }
    });
}

/// Puts the calling thread under the normal policy if it is under SCHED_BATCH (one it inherited,
/// not one of ours to keep). System calls only: safe between fork and exec.
fn normal_if_batch() {
    if current() == libc::SCHED_BATCH {
        set(libc::SCHED_OTHER);
    }
}

extern "C" fn normal_in_child() {
    // Runs in a child between fork and whatever it does next: async-signal-safe calls only.
    normal_if_batch();
}

/// Makes every child forked from now on (by any thread, also by C code that bypasses Python's
/// audit events) start under the normal policy. `vfork` and `posix_spawn` run no fork handlers;
/// Python's calls that use them raise the audit events that [`normal_before_spawn`] answers.
pub fn reset_in_children() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: registers a handler with no state; it makes only async-signal-safe calls.
        unsafe {
            libc::pthread_atfork(None, None, Some(normal_in_child));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_a_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::spawn(f).join().expect("the thread ends")
    }

    #[test]
    fn a_worker_runs_alone_under_batch_beside_others_normal_and_sleeps_under_batch() {
        let seen = on_a_thread(|| {
            let mut seen = vec![current()];
            start_worker();
            seen.push(current());
            before_job(true);
            seen.push(current());
            before_job(false);
            seen.push(current());
            before_job(false);
            seen.push(current());
            before_sleep();
            seen.push(current());
            before_sleep();
            seen.push(current());
            seen
        });
        let (o, b) = (libc::SCHED_OTHER, libc::SCHED_BATCH);
        assert_eq!(seen, vec![o, b, b, o, o, b, b]);
    }

    #[test]
    fn a_worker_is_normal_from_a_spawn_to_its_next_job_alone_or_sleep() {
        let seen = on_a_thread(|| {
            start_worker();
            before_job(true);
            let mut seen = vec![current()];
            normal_before_spawn();
            seen.push(current());
            normal_before_spawn();
            seen.push(current());
            before_job(true);
            seen.push(current());
            normal_before_spawn();
            before_sleep();
            seen.push(current());
            seen
        });
        let (o, b) = (libc::SCHED_OTHER, libc::SCHED_BATCH);
        assert_eq!(seen, vec![b, o, o, b, b]);
    }

    #[test]
    fn a_thread_that_inherited_batch_is_normal_from_its_first_spawn_on() {
        let seen = on_a_thread(|| {
            start_worker();
            // What an app's thread started by a worker gets.
            std::thread::spawn(|| {
                let mut seen = vec![current()];
                normal_before_spawn();
                seen.push(current());
                normal_before_spawn();
                seen.push(current());
                seen
            })
            .join()
            .expect("the thread ends")
        });
        assert_eq!(seen, vec![libc::SCHED_BATCH, libc::SCHED_OTHER, libc::SCHED_OTHER]);
    }

    #[test]
    fn a_thread_that_is_not_a_worker_keeps_its_policy_at_a_spawn() {
        let seen = on_a_thread(|| {
            normal_before_spawn();
            let normal = current();
            batch(); // a core thread
            normal_before_spawn();
            (normal, current())
        });
        assert_eq!(seen, (libc::SCHED_OTHER, libc::SCHED_BATCH));
    }

    #[test]
    fn a_child_forked_by_a_worker_starts_normal() {
        reset_in_children();
        let status = on_a_thread(|| {
            start_worker();
            // SAFETY: the child makes only async-signal-safe calls (sched_getscheduler, _exit).
            unsafe {
                let pid = libc::fork();
                if pid == 0 {
                    libc::_exit(libc::sched_getscheduler(0));
                }
                let mut status = 0;
                libc::waitpid(pid, &mut status, 0);
                (libc::WIFEXITED(status), libc::WEXITSTATUS(status), current())
            }
        });
        assert_eq!(
            status,
            (true, libc::SCHED_OTHER, libc::SCHED_BATCH),
            "the child normal, the worker batch"
        );
    }
}
