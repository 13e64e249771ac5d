//! Interrupting a request that runs too long, and cleaning up the thread after it (ARCHITECTURE.md,
//! "Timeouts").
//!
//! `wsgo.RequestTimeoutException` is raised asynchronously in the worker's thread: it surfaces at
//! the next Python bytecode, so a blocking C call (a sleep, a socket read) finishes first. After
//! such a job, a pending exception that never surfaced is cleared, and locks of the `logging`
//! module that the interrupted thread still holds are released (an exception raised inside a
//! `with lock:` block of logging's handlers leaves them held on Python < 3.13, and every later
//! log call would deadlock).

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::module::RequestTimeoutException;

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

/// Raises the timeout exception in the thread `ident`; false if CPython found no such thread.
pub fn raise_timeout(py: Python<'_>, ident: u64) -> bool {
    let exc = py.get_type::<RequestTimeoutException>();
    // SAFETY: called with the GIL held; `ident` is the id of a live thread attached to this
    // interpreter (workers stay attached for life), and the exception type is a live object kept
    // by the wsgo module. The call only records a pending exception.
    unsafe { ffi::PyThreadState_SetAsyncExc(ident as _, exc.as_ptr()) == 1 }
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
/// `logging` locks the thread still holds. Runs on the thread `ident` itself.
pub fn after_interrupted(py: Python<'_>, ident: u64) {
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
}
