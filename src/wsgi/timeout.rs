//! Interrupting a request that runs too long (SPEC §14, DESIGN decision 10), and cleaning up the
//! thread after it.
//!
//! `wsgo.RequestTimeoutException` is raised asynchronously in the worker's thread: it surfaces at
//! the next Python bytecode, so a blocking C call (a sleep, a socket read) finishes first. After
//! such a job, a pending exception that never surfaced is cleared, and locks of the `logging`
//! module that the interrupted thread still holds are released (an exception raised inside a
//! `with lock:` block of logging's handlers leaves them held on Python < 3.13, and every later
//! log call would deadlock).

use std::sync::atomic::Ordering::SeqCst;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::module::RequestTimeoutException;
use crate::pool::slot::Slot;

/// The Python stack of the thread `ident`, formatted (empty when it runs no Python).
pub fn thread_stack(py: Python<'_>, ident: u64) -> String {
    let stack = || -> PyResult<String> {
        let frames = py.import("sys")?.call_method0("_current_frames")?;
        let Some(frame) = frames.cast::<PyDict>()?.get_item(ident)? else { return Ok(String::new()) };
        let lines = py.import("traceback")?.call_method1("format_stack", (frame,))?;
        Ok(lines.extract::<Vec<String>>()?.concat())
    };
    stack().unwrap_or_else(|e| format!("(stack unavailable: {e})\n"))
}

/// Raises the timeout exception in the thread of `slot` if it is still on job `seq`.
pub fn interrupt(slot: &Slot, seq: u64) {
    Python::attach(|py| {
        // Under the GIL the worker cannot move to another job: it changes jobs holding it.
        if slot.job.load(SeqCst) != seq || slot.fired.load(SeqCst) {
            return;
        }
        let ident = slot.ident.load(SeqCst);
        let ran = slot.running_for().unwrap_or_default().as_secs_f64();
        eprintln!(
            "wsgo: Task timed out! {} has run {} for {ran:.1} s; raising wsgo.RequestTimeoutException\n{}",
            slot.name,
            slot.what(),
            thread_stack(py, ident)
        );
        let exc = py.get_type::<RequestTimeoutException>();
        // SAFETY: called with the GIL held; `ident` is the id of a live thread attached to this
        // interpreter (the worker stays attached for life), and the exception type is a live
        // object kept by the wsgo module. The call only records a pending exception.
        let n = unsafe { ffi::PyThreadState_SetAsyncExc(ident as _, exc.as_ptr()) };
        if n == 1 {
            slot.fired.store(true, SeqCst);
            crate::stats::bump(&crate::stats::STATS.interrupted);
        } else {
            eprintln!("wsgo: Failed to issue RequestTimeoutException to stuck worker!");
        }
    });
}

const RELEASE_LOGGING_LOCKS: &std::ffi::CStr = cr#"
def release_logging_locks():
    import logging, sys
    locks = [("logging._lock", getattr(logging, "_lock", None))]
    for ref in list(getattr(logging, "_handlerList", [])):
        handler = ref()
        if handler is not None:
            locks.append((repr(handler) + " lock", getattr(handler, "lock", None)))
    for name, lock in locks:
        if lock is None:
            continue
        for _ in range(50):
            try:
                lock.release()
            except Exception:
                break
            print("wsgo: Released leaked " + name + "!", file=sys.stderr)
"#;

/// After a job that was interrupted: clear an exception that never surfaced, and release the
/// `logging` locks the thread still holds.
pub fn after_interrupted(py: Python<'_>, slot: &Slot) {
    let ident = slot.ident.load(SeqCst);
    // SAFETY: with the GIL held, a NULL exception clears a pending asynchronous exception of
    // this (the current) thread.
    unsafe { ffi::PyThreadState_SetAsyncExc(ident as _, std::ptr::null_mut()) };
    let release = || -> PyResult<()> {
        let globals = PyDict::new(py);
        py.run(RELEASE_LOGGING_LOCKS, Some(&globals), None)?;
        if let Some(f) = globals.get_item("release_logging_locks")? {
            f.call0()?;
        }
        Ok(())
    };
    if let Err(e) = release() {
        e.print(py);
    }
    eprintln!("wsgo: {} finished its interrupted job", slot.name);
}
