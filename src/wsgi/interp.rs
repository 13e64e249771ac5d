//! Starting the embedded interpreter and loading the application.
//!
//! The interpreter is configured from a `PyConfig` we fill ourselves (no pyo3 auto-initialize):
//! the program name points at the active virtualenv's python so `sys.prefix` and site-packages are
//! the venv's, signal handlers stay ours, stdio is unbuffered, and the built-in
//! `wsgo` module is registered before start-up.

use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};

use pyo3::ffi;
use pyo3::prelude::*;

use super::module::wsgo;

/// Exit code when the application cannot be loaded (the original's, so supervisors can tell).
pub const EXIT_LOAD_FAILED: i32 = 27;

/// The python executable whose prefix the interpreter should adopt.
pub fn program_path() -> PathBuf {
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV") {
        let exe = Path::new(&venv).join("bin").join("python");
        if exe.exists() {
            return exe;
        }
    }
    // Installed into a venv (`pip install`): `venv/bin/wsgo` beside `venv/bin/python`.
    if let Ok(exe) = std::env::current_exe()
        && let Some(bin) = exe.parent()
        && bin.parent().is_some_and(|p| p.join("pyvenv.cfg").exists())
        && bin.join("python").exists()
    {
        return bin.join("python");
    }
    // A venv that is first on PATH without being activated.
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let exe = dir.join("python3");
            if exe.exists() {
                if dir.parent().is_some_and(|p| p.join("pyvenv.cfg").exists()) {
                    return exe;
                }
                break;
            }
        }
    }
    PathBuf::from(env!("WSGO_BUILD_PYTHON"))
}

/// Initialises the interpreter. Must run once, on the main thread, before any other Python use.
/// Leaves the calling thread detached (the GIL released).
pub fn start_interpreter() -> Result<(), StartError> {
    pyo3::append_to_inittab!(wsgo);
    let program = program_path();
    let program = widen(&program.to_string_lossy());
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

/// Starts the interpreter once for the unit tests that need one.
#[cfg(test)]
pub fn init_for_tests() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| start_interpreter().expect("the interpreter starts"));
}

fn widen(s: &str) -> Vec<libc::wchar_t> {
    s.chars().map(|c| c as libc::wchar_t).chain(std::iter::once(0)).collect()
}

/// Imports `module` and returns its `callable`. Prints the traceback on failure.
pub fn load_app(module: &str, callable: &str) -> Result<Py<PyAny>, StartError> {
    Python::attach(|py| {
        let m = match py.import(module) {
            Ok(m) => m,
            Err(e) => {
                e.print(py);
                return Err(StartError::App(format!("Couldn't import module: {module}")));
            }
        };
        let app = match m.getattr(callable) {
            Ok(a) => a,
            Err(e) => {
                e.print(py);
                return Err(StartError::App(format!(
                    "Couldn't find '{callable}' entrypoint in module {module}"
                )));
            }
        };
        if !app.is_callable() {
            return Err(StartError::App(format!("'{module}:{callable}' is not callable")));
        }
        Ok(app.unbind())
    })
}

/// Starts the interpreter, installs the process's parked requests and job registry in the `wsgo`
/// module, imports the application and prepares what every request shares. An error says what
/// went wrong (the traceback is printed already); [`StartError::exit_code`] tells the process's
/// exit status.
pub fn start(
    config: &crate::config::Config,
    parking: std::sync::Arc<crate::park::Parking>,
    jobs: std::sync::Arc<crate::cron::Registry<super::module::Task>>,
    stats: std::sync::Arc<crate::stats::Stats>,
) -> Result<super::App, StartError> {
    start_interpreter()?;
    Python::attach(|py| super::module::install(py, parking, jobs))
        .map_err(|e| StartError::Interpreter(format!("could not set up the wsgo module: {e}")))?;
    let callable = load_app(&config.module, &config.callable)?;
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
}

impl crate::log::Blame for StartError {
    fn cause(&self) -> crate::log::Cause {
        match self {
            StartError::Interpreter(_) => crate::log::Cause::Server,
            StartError::App(_) => crate::log::Cause::App,
        }
    }
}

impl StartError {
    /// The process's exit status: 27 when the app cannot be loaded (the original's, which
    /// supervisors look for), else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            StartError::Interpreter(_) => 1,
            StartError::App(_) => EXIT_LOAD_FAILED as u8,
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
