//! Starting the embedded interpreter and loading the application.
//!
//! The interpreter is configured from a `PyConfig` we fill ourselves (no pyo3 auto-initialize):
//! the program name points at the active virtualenv's python so `sys.prefix` and site-packages are
//! the venv's, signal handlers stay ours, stdio is unbuffered, and the built-in
//! `wsgo` module is registered before start-up. An audit hook puts a worker under the normal
//! scheduling policy before the app starts a process (`sys::policy`).

use std::ffi::{CStr, c_char, c_int, c_void};
use std::mem::MaybeUninit;
use std::path::PathBuf;

use pyo3::ffi;
use pyo3::prelude::*;

use super::module::wsgo;

/// Exit code when the application cannot be loaded (the original's, so supervisors can tell).
pub const EXIT_LOAD_FAILED: i32 = 27;

/// Initialises the interpreter. Must run once, on the main thread, before any other Python use.
/// Leaves the calling thread detached (the GIL released).
pub fn start_interpreter() -> Result<(), StartError> {
    pyo3::append_to_inittab!(wsgo);
    let choice = crate::interpreter::choose().map_err(StartError::Venv)?;
    let program = widen(&choice.program.to_string_lossy());
    // SAFETY: PyConfig is a plain C struct that PyConfig_InitPythonConfig fully initialises before
    // any field is read; the strings we pass are NUL-terminated and copied by PyConfig_SetString;
    // the config is cleared after use. This runs once, before any other thread touches Python.
    unsafe {
        let mut config = MaybeUninit::<ffi::PyConfig>::zeroed();
        ffi::PyConfig_InitPythonConfig(config.as_mut_ptr());
        let config = config.assume_init_mut();
        config.install_signal_handlers = 0;
        config.buffered_stdio = 0;
        config.parse_argv = 0;
        let status = ffi::PyConfig_SetString(config, &mut config.program_name, program.as_ptr());
        if ffi::PyStatus_Exception(status) != 0 {
            ffi::PyConfig_Clear(config);
            return Err(StartError::Interpreter("could not set the interpreter's program name".into()));
        }
        let status = ffi::Py_InitializeFromConfig(config);
        ffi::PyConfig_Clear(config);
        if ffi::PyStatus_Exception(status) != 0 {
            let msg = if status.err_msg.is_null() {
                "unknown error".to_string()
            } else {
                std::ffi::CStr::from_ptr(status.err_msg).to_string_lossy().into_owned()
            };
            return Err(StartError::Interpreter(format!("could not start the Python interpreter: {msg}")));
        }
    }
    // SAFETY: the interpreter is initialised and this thread holds the GIL; the hook is a plain
    // function with no data.
    if unsafe { PySys_AddAuditHook(Some(before_spawn), std::ptr::null_mut()) } != 0 {
        // Only a hook added before it can refuse, and none is: were one to, the app's processes
        // could start under SCHED_BATCH (except those forked, see `reset_in_children`).
        crate::log::warning!(
            "could not add the audit hook that starts the app's processes under the normal policy"
        );
    }
    crate::sys::policy::reset_in_children();
    let setup = Python::attach(|py| -> PyResult<()> {
        // The working directory first on sys.path: the app, not an installed
        // package of the same name, is what gets imported.
        let cwd =
            std::env::current_dir().map(|p| p.to_string_lossy().into_owned()).unwrap_or_else(|_| ".".into());
        py.import("sys")?.getattr("path")?.call_method1("insert", (0, cwd))?;
        py.import("faulthandler")?.call_method0("enable")?;
        Ok(())
    });
    // SAFETY: the interpreter is initialised and this thread holds the GIL (it initialised it);
    // saving the thread state releases the GIL for the worker threads.
    unsafe {
        ffi::PyEval_SaveThread();
    }
    setup.map_err(|e| StartError::Interpreter(format!("could not set up the interpreter: {e}")))
}

// In CPython's C API (`cpython/sysmodule.h`, since 3.8), not bound by pyo3-ffi.
unsafe extern "C" {
    fn PySys_AddAuditHook(
        hook: Option<unsafe extern "C" fn(*const c_char, *mut ffi::PyObject, *mut c_void) -> c_int>,
        data: *mut c_void,
    ) -> c_int;
}

/// The audit events raised before Python starts a process, replaces this one, or calls foreign
/// code (which may start one: the C library's `popen`, `system`).
const SPAWNING: [&[u8]; 8] = [
    b"subprocess.Popen",
    b"os.system",
    b"os.posix_spawn",
    b"os.fork",
    b"os.forkpty",
    b"os.exec",
    b"os.spawn",
    b"ctypes.call_function",
];

/// The interpreter's audit hook: a worker runs the app under SCHED_BATCH (`sys::policy`), and a
/// process it starts would inherit that; before one is started the thread goes under the normal
/// policy. Raises nothing.
unsafe extern "C" fn before_spawn(
    event: *const c_char,
    _args: *mut ffi::PyObject,
    _data: *mut c_void,
) -> c_int {
    if event.is_null() {
        return 0;
    }
    // SAFETY: CPython passes the event's name, a NUL-terminated string alive during the call.
    let name = unsafe { CStr::from_ptr(event) }.to_bytes();
    if SPAWNING.contains(&name) {
        crate::sys::policy::normal_before_spawn();
    }
    0
}

/// Starts the interpreter once for the unit tests that need one.
#[cfg(test)]
pub fn init_for_tests() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| start_interpreter().expect("the interpreter starts"));
}

fn widen(s: &str) -> Vec<libc::wchar_t> {
    s.chars().map(|c| c as libc::wchar_t).chain(std::iter::once(0)).collect()
}

/// Imports `module` and returns its `callable` (or, with `factory_args`, what calling it with
/// those literal arguments returns). Prints the traceback on failure.
pub fn load_app(module: &str, callable: &str, factory_args: Option<&str>) -> Result<Py<PyAny>, StartError> {
    Python::attach(|py| {
        let m = match py.import(module) {
            Ok(m) => m,
            Err(e) => {
                e.print(py);
                return Err(StartError::App(format!("Couldn't import module: {module}")));
            }
        };
        let mut app = m.clone().into_any();
        for part in callable.split('.') {
            app = match app.getattr(part) {
                Ok(a) => a,
                Err(e) => {
                    e.print(py);
                    return Err(StartError::App(format!(
                        "Couldn't find '{callable}' entrypoint in module {module}"
                    )));
                }
            };
        }
        if let Some(args) = factory_args {
            app = call_factory(py, &app, args).map_err(|e| {
                e.print(py);
                StartError::App(format!("The factory {module}:{callable}({args}) failed"))
            })?;
        }
        if !app.is_callable() {
            return Err(StartError::App(format!("'{module}:{callable}' is not callable")));
        }
        Ok(app.unbind())
    })
}

/// Calls a factory with `args`, the source text of literal arguments (`"dev", debug=True`):
/// parsed with `ast`, never evaluated as code.
fn call_factory<'py>(
    py: Python<'py>,
    factory: &Bound<'py, PyAny>,
    args: &str,
) -> PyResult<Bound<'py, PyAny>> {
    let code = c"import ast
def parse(src):
    call = ast.parse('f(' + src + ')', mode='eval').body
    try:
        if not isinstance(call, ast.Call) or any(isinstance(a, ast.Starred) for a in call.args) \\
                or any(k.arg is None for k in call.keywords):
            raise ValueError(src)
        return ([ast.literal_eval(a) for a in call.args],
                {k.arg: ast.literal_eval(k.value) for k in call.keywords})
    except ValueError:
        raise ValueError('factory arguments must be literals: ' + repr(src)) from None
";
    let scope = pyo3::types::PyDict::new(py);
    py.run(code, Some(&scope), None)?;
    let parse =
        scope.get_item("parse")?.ok_or_else(|| pyo3::exceptions::PyRuntimeError::new_err("no parser"))?;
    let parsed = parse.call1((args,))?;
    let (positional, keywords): (Bound<'py, pyo3::types::PyList>, Bound<'py, pyo3::types::PyDict>) =
        parsed.extract()?;
    factory.call(positional.to_tuple(), Some(&keywords))
}

/// The folders the app's modules were loaded from (for `--reload`): the working directory's
/// and the app's own, not the interpreter's or a site-packages.
pub fn source_folders() -> Vec<PathBuf> {
    let code = c"import os, sys
def folders():
    skip = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    out = set()
    for m in list(sys.modules.values()):
        f = getattr(m, '__file__', None)
        if not isinstance(f, str):
            continue
        d = os.path.dirname(os.path.realpath(f))
        parts = d.split(os.sep)
        if 'site-packages' in parts or 'dist-packages' in parts:
            continue
        if any(d == s or d.startswith(s + os.sep) for s in skip):
            continue
        out.add(d)
    return sorted(out)
";
    Python::attach(|py| -> PyResult<Vec<String>> {
        let scope = pyo3::types::PyDict::new(py);
        py.run(code, Some(&scope), None)?;
        let f = scope
            .get_item("folders")?
            .ok_or_else(|| pyo3::exceptions::PyRuntimeError::new_err("no folders"))?;
        f.call0()?.extract()
    })
    .map(|v| v.into_iter().map(PathBuf::from).collect())
    .unwrap_or_default()
}

/// The running interpreter for the start-up line: `python 3.11.2, venv /srv/app/.venv (from
/// VIRTUAL_ENV)`.
pub fn describe_python() -> String {
    let version = Python::attach(|py| -> PyResult<String> {
        py.import("platform")?.call_method0("python_version")?.extract()
    })
    .unwrap_or_else(|_| crate::interpreter::BUILD_VERSION.to_string());
    match crate::interpreter::choose() {
        Ok(choice) => choice.to_string().replacen(crate::interpreter::BUILD_VERSION, &version, 1),
        Err(e) => format!("python {version} ({e})"),
    }
}

/// Starts the interpreter, installs the process's parked requests, its outbox to the other
/// processes and its job registry in the `wsgo` module, imports the application and prepares
/// what every request shares. An error says what went wrong (the traceback is printed already);
/// [`StartError::exit_code`] tells the process's exit status.
pub fn start(
    config: &crate::config::Config,
    parking: std::sync::Arc<crate::park::Parking>,
    share: std::sync::Arc<crate::share::Outbox>,
    jobs: std::sync::Arc<crate::cron::Registry<super::module::Task>>,
    stats: std::sync::Arc<crate::stats::Stats>,
) -> Result<super::App, StartError> {
    start_interpreter()?;
    Python::attach(|py| super::module::install(py, parking, share, jobs))
        .map_err(|e| StartError::Interpreter(format!("could not set up the wsgo module: {e}")))?;
    let callable = load_app(&config.module, &config.callable, config.factory_args.as_deref())?;
    let base_environ = Python::attach(|py| super::environ::base_environ(py, config.processes > 1))
        .map_err(|e| StartError::Interpreter(format!("could not build the environ: {e}")))?;
    Ok(super::App { callable, base_environ, stats })
}

/// Why the Python side could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The interpreter could not start or be set up (a broken installation).
    #[error("{0}")]
    Interpreter(String),
    /// The application could not be imported, lacks its callable, or it is not callable.
    #[error("{0}")]
    App(String),
    /// `VIRTUAL_ENV` is not a venv.
    #[error(transparent)]
    Venv(crate::interpreter::NotAVenv),
}

impl crate::log::Blame for StartError {
    fn cause(&self) -> crate::log::Cause {
        match self {
            StartError::Interpreter(_) | StartError::Venv(_) => crate::log::Cause::Server,
            StartError::App(_) => crate::log::Cause::App,
        }
    }
}

impl StartError {
    /// The process's exit status: 27 when the app cannot be loaded (the original's, which
    /// supervisors look for), 2 for a bad `VIRTUAL_ENV` (a usage error, like a bad flag), else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            StartError::Interpreter(_) => 1,
            StartError::App(_) => EXIT_LOAD_FAILED as u8,
            StartError::Venv(_) => 2,
        }
    }
}

/// Runs the `atexit` handlers and flushes Python's stdio, as interpreter finalisation would.
///
/// We do not call `Py_FinalizeEx`: the worker threads keep their thread states for life, and
/// finalising under them can hang; the process exits right after this.
pub fn run_exit_handlers() {
    let _ = Python::try_attach(|py| {
        let code = c"import atexit, sys
atexit._run_exitfuncs()
for s in (sys.stdout, sys.stderr):
    try: s.flush()
    except Exception: pass
";
        if let Err(e) = py.run(code, None, None) {
            e.print(py);
        }
    });
}
