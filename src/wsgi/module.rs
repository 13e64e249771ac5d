//! The built-in `wsgo` Python module, registered before the interpreter starts, so an app can
//! use it at import time: `cron`, `timer`, `add_cron`, `notify_parked`, the park actions and
//! `RequestTimeoutException`.
//!
//! The module reaches the process's parked requests and job registry through a handle the server
//! installs in it before the app is imported ([`install`]); there is no process-wide singleton.
//! Unlike the original, wrong arguments raise at once (TypeError / ValueError) instead of being
//! ignored or registering a job that fires every minute.

use std::sync::Arc;
use std::time::Duration;

use pyo3::create_exception;
use pyo3::exceptions::{PyBaseException, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyFloat, PyInt};

use crate::cron::next::Schedule;
use crate::cron::{Registry, When};
use crate::park::{Action, Parking, channels};
use crate::share::{Outbox, Shared};

create_exception!(
    wsgo,
    RequestTimeoutException,
    PyBaseException,
    "Raised into a request that ran past --request-timeout (and into a background job past 30 \
minutes). It surfaces at the next Python bytecode: a blocking C call finishes first. An app may \
catch it and still answer; if it escapes, the client gets 504. It derives from BaseException, \
as asyncio.CancelledError does, so that frameworks catching Exception (Flask, Django) let it \
reach the server instead of turning it into their 500 page."
);

/// A background job: the app's callable.
pub type Task = Py<PyAny>;

/// What the module's functions act on: this process's parked requests, its outbox to the
/// other processes, and its background jobs.
#[pyclass(module = "wsgo", name = "_Server", frozen)]
pub struct ServerHandle {
    parking: Arc<Parking>,
    share: Arc<Outbox>,
    jobs: Arc<Registry<Task>>,
}

/// Installs the process's state in the `wsgo` module (call before the app is imported).
pub fn install(
    py: Python<'_>,
    parking: Arc<Parking>,
    share: Arc<Outbox>,
    jobs: Arc<Registry<Task>>,
) -> PyResult<()> {
    let handle = Bound::new(py, ServerHandle { parking, share, jobs })?;
    py.import("wsgo")?.setattr("_server", handle)
}

/// The handle [`install`] put in the module.
fn server(py: Python<'_>) -> PyResult<Bound<'_, ServerHandle>> {
    let handle = py.import("wsgo")?.getattr("_server").map_err(|_| {
        pyo3::exceptions::PyRuntimeError::new_err("the wsgo module is only usable inside the wsgo server")
    })?;
    Ok(handle.cast_into::<ServerHandle>()?)
}

/// A whole number (not a bool, not a float).
fn int_arg(value: &Bound<'_, PyAny>, what: &str) -> PyResult<i64> {
    if value.is_instance_of::<PyBool>() || !value.is_instance_of::<PyInt>() {
        return Err(PyTypeError::new_err(format!(
            "{what} must be an int, not {}",
            value.get_type().name().map(|n| n.to_string()).unwrap_or_default()
        )));
    }
    value.extract()
}

fn schedule(fields: [&Bound<'_, PyAny>; 5]) -> PyResult<Schedule> {
    let names = ["minute", "hour", "day", "month", "weekday"];
    let mut v = [0i64; 5];
    for i in 0..5 {
        v[i] = int_arg(fields[i], names[i])?;
    }
    Schedule::new(v[0], v[1], v[2], v[3], v[4]).map_err(|e| PyValueError::new_err(e.to_string()))
}

fn period(value: &Bound<'_, PyAny>) -> PyResult<Duration> {
    let secs: f64 = if value.is_instance_of::<PyBool>() {
        return Err(PyTypeError::new_err("period must be a number of seconds, not a bool"));
    } else if value.is_instance_of::<PyInt>() || value.is_instance_of::<PyFloat>() {
        value.extract()?
    } else {
        return Err(PyTypeError::new_err("period must be a number of seconds"));
    };
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(PyValueError::new_err(format!("timer period must be more than 0 seconds, not {secs}")));
    }
    // At most a year: the period reaches time arithmetic.
    if secs > crate::cli::MAX_SECONDS as f64 {
        return Err(PyValueError::new_err(format!(
            "timer period must be at most {} seconds (a year), not {secs}",
            crate::cli::MAX_SECONDS
        )));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn register(func: &Bound<'_, PyAny>, when: When) -> PyResult<()> {
    if !func.is_callable() {
        return Err(PyTypeError::new_err("a cron or timer job must be callable"));
    }
    let name = func.str().map(|s| s.to_string()).unwrap_or_else(|_| "?".into());
    server(func.py())?.get().jobs.add(func.clone().unbind(), name, when);
    Ok(())
}

/// The decorator `cron(...)` and `timer(...)` return.
#[pyclass(module = "wsgo", name = "_JobDecorator", frozen)]
pub struct JobDecorator {
    when: When,
}

#[pymethods]
impl JobDecorator {
    /// Registers `func` and returns it unchanged.
    fn __call__<'py>(&self, func: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        register(&func, self.when)?;
        Ok(func)
    }
}

/// cron(minute, hour, day, month, weekday)
/// --
///
/// Decorator: run the function on a background thread whenever the local time matches. Each
/// field is -1 for any value, else minute 0-59, hour 0-23, day 1-31, month 1-12, weekday 0-7
/// (0 and 7 are Sunday). Runs in the first process only, one job at a time.
#[pyfunction]
fn cron_decorator(
    minute: &Bound<'_, PyAny>,
    hour: &Bound<'_, PyAny>,
    day: &Bound<'_, PyAny>,
    month: &Bound<'_, PyAny>,
    weekday: &Bound<'_, PyAny>,
) -> PyResult<JobDecorator> {
    Ok(JobDecorator { when: When::Cron(schedule([minute, hour, day, month, weekday])?) })
}

/// timer(period)
/// --
///
/// Decorator: run the function on a background thread every `period` seconds (more than 0),
/// the first time `period` seconds after registration.
#[pyfunction]
fn timer(period_seconds: &Bound<'_, PyAny>) -> PyResult<JobDecorator> {
    Ok(JobDecorator { when: When::Every(period(period_seconds)?) })
}

/// add_cron(func, period, minute, hour, day, month, weekday)
/// --
///
/// Registers `func` directly: with `period` > 0 as a timer (the other fields must be 0 or -1),
/// with `period` 0 as a cron job on the fields.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn add_cron(
    func: &Bound<'_, PyAny>,
    period_seconds: &Bound<'_, PyAny>,
    minute: &Bound<'_, PyAny>,
    hour: &Bound<'_, PyAny>,
    day: &Bound<'_, PyAny>,
    month: &Bound<'_, PyAny>,
    weekday: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let is_zero =
        period_seconds.extract::<f64>().is_ok_and(|p| p == 0.0) && !period_seconds.is_instance_of::<PyBool>();
    if is_zero {
        register(func, When::Cron(schedule([minute, hour, day, month, weekday])?))
    } else {
        register(func, When::Every(period(period_seconds)?))
    }
}

/// notify_parked(channels, action, arg)
/// --
///
/// Wakes every request parked on any of the comma-separated `channels`, once each, in every
/// process of the server (and, with --redis, on every host of the fleet): `action` is RETRY
/// (run it again, the app seeing `arg` in HTTP_X_WSGO_PARK_ARG), HTTP_204, HTTP_504 or
/// DISCONNECT. Callable from any thread; never waits for the other processes. Returns how many
/// were woken in this process (the others wake theirs within milliseconds, uncounted here). A
/// notification whose channels and arg exceed 64 KiB reaches this process only.
#[pyfunction]
#[pyo3(signature = (channels_list, action, arg = None))]
fn notify_parked(
    py: Python<'_>,
    channels_list: &str,
    action: &Bound<'_, PyAny>,
    arg: Option<&Bound<'_, PyAny>>,
) -> PyResult<usize> {
    let action = Action::from_code(int_arg(action, "action")?);
    let arg: String = match arg {
        Some(a) if !a.is_none() => a.extract().map_err(|_| PyTypeError::new_err("arg must be a str"))?,
        _ => String::new(),
    };
    let server = server(py)?;
    let server = server.get();
    let channels = channels(channels_list);
    let woken = server.parking.notify(&channels, action, &arg);
    server.share.send(&Shared::Notify { channels, action, arg });
    Ok(woken)
}

#[pymodule]
/// Fills the `wsgo` module (registered with `append_to_inittab` before the interpreter starts).
pub fn wsgo(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__doc__", "wsgo's server API: background jobs, request parking, the request timeout.")?;
    m.add("DISCONNECT", 0)?;
    m.add("RETRY", 1)?;
    m.add("HTTP_204", 2)?;
    m.add("HTTP_504", 3)?;
    m.add("RequestTimeoutException", m.py().get_type::<RequestTimeoutException>())?;
    m.add_class::<JobDecorator>()?;
    m.add_class::<ServerHandle>()?;
    let cron_fn = wrap_pyfunction!(cron_decorator, m)?;
    m.add("cron", cron_fn)?;
    m.add_function(wrap_pyfunction!(timer, m)?)?;
    m.add_function(wrap_pyfunction!(add_cron, m)?)?;
    m.add_function(wrap_pyfunction!(notify_parked, m)?)?;
    Ok(())
}
