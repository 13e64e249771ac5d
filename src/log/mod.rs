//! What the server says: diagnostics on stderr through one facade with levels, and the access
//! log (`access`: stdout, a file, or off). The only module that writes the process's output
//! streams.
//!
//! Diagnostics: `error!` for server faults (a thread that cannot start, a file that cannot be
//! read), `warning!` for what an operator should look at (a stuck worker, an app answering wrongly),
//! `info!` for the life of the process (start, signals, shutdown), `debug!` for what clients do
//! to themselves (a disconnect mid-response, a malformed request): quiet unless `--log-level
//! debug`. Each line is `wsgo: ` and the message (`wsgo: error: ` / `wsgo: warning: ` for the two
//! loud levels).

use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};

/// How loud a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// A fault of the server or its host: always shown.
    Error = 0,
    /// Something an operator should look at.
    Warn = 1,
    /// The life of the process.
    Info = 2,
    /// What clients do to themselves.
    Debug = 3,
}

/// A log level that is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown log level {0:?}: expected error, warn, info or debug")]
pub struct UnknownLevel(pub String);

impl std::str::FromStr for Level {
    type Err = UnknownLevel;

    fn from_str(s: &str) -> Result<Level, UnknownLevel> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "error" => Level::Error,
            "warn" | "warning" => Level::Warn,
            "info" => Level::Info,
            "debug" => Level::Debug,
            _ => return Err(UnknownLevel(s.to_string())),
        })
    }
}

/// Who caused an error: it decides how loud the error is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The client (a malformed request, a disconnect, a missed deadline): `debug`, quiet by
    /// default, since a client can cause any number of them.
    Client,
    /// The application (an exception, an invalid response): `warning`.
    App,
    /// The server or its host (a thread or file that cannot be had): `error`.
    Server,
}

impl Cause {
    /// The level errors of this cause are logged at.
    pub fn level(self) -> Level {
        match self {
            Cause::Client => Level::Debug,
            Cause::App => Level::Warn,
            Cause::Server => Level::Error,
        }
    }
}

/// An error that knows who caused it.
pub trait Blame: std::fmt::Display {
    /// Who caused it.
    fn cause(&self) -> Cause;
}

impl Blame for crate::http::HttpError {
    /// Every protocol error is the client's.
    fn cause(&self) -> Cause {
        Cause::Client
    }
}

/// Logs `err` at the level its cause gives, after `context`.
pub fn blame(err: &impl Blame, context: std::fmt::Arguments<'_>) {
    emit(err.cause().level(), format_args!("{context}: {err}"));
}

/// The most verbose level shown (a process-wide setting, like any logger's).
static SHOWN: AtomicU8 = AtomicU8::new(Level::Info as u8);

/// Shows diagnostics up to `level`.
pub fn set_level(level: Level) {
    SHOWN.store(level as u8, Relaxed);
}

/// Whether diagnostics of `level` are shown.
pub fn enabled(level: Level) -> bool {
    level as u8 <= SHOWN.load(Relaxed)
}

/// Writes one diagnostic line (use the macros).
#[doc(hidden)]
pub fn emit(level: Level, args: std::fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    let tag = match level {
        Level::Error => "error: ",
        Level::Warn => "warning: ",
        Level::Info => "",
        Level::Debug => "debug: ",
    };
    // One write for the line: lines of several threads do not interleave.
    let line = format!("wsgo: {tag}{args}\n");
    if DEFERRED.get()
        && let Some(w) = diagnostics()
    {
        w.send(line.into_bytes());
        return;
    }
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

thread_local! {
    /// This thread's diagnostics go through the writer thread ([`defer_this_thread`]).
    static DEFERRED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The calling thread's diagnostics go through a writer thread from now on, so that a stderr
/// nobody reads cannot stop it: for the core threads, a blocked write would stop every connection
/// they hold; for the monitor, it would hold the GIL. What the writer has not written is bounded
/// like the access log's queue. Not for the Python threads: their lines and the tracebacks Python
/// prints must keep their order.
pub fn defer_this_thread() {
    DEFERRED.set(true);
}

/// The diagnostics' writer thread, started on first use (`None` if it cannot start: lines are
/// then written directly).
fn diagnostics() -> Option<&'static writer::Writer> {
    DIAGNOSTICS
        .get_or_init(|| writer::Writer::start("wsgo-stderr", writer::Dest::Stderr, "diagnostic lines").ok())
        .as_ref()
}

static DIAGNOSTICS: std::sync::OnceLock<Option<writer::Writer>> = std::sync::OnceLock::new();

/// Waits until the deferred diagnostics are written, at most `timeout`: whether they were (a
/// process whose core threads said nothing has no writer to wait for).
pub fn sync_diagnostics(timeout: std::time::Duration) -> bool {
    DIAGNOSTICS.get().and_then(Option::as_ref).is_none_or(|w| w.sync(timeout))
}

/// Writes a multi-line report (SIGUSR1's stacks, SIGUSR2's counters) to stderr at once: never
/// mixed into the access log on stdout.
pub fn report_stderr(text: &str) {
    if DEFERRED.get()
        && let Some(w) = diagnostics()
    {
        w.send(text.as_bytes().to_vec());
        return;
    }
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// A server fault.
macro_rules! error {
    ($($arg:tt)*) => { $crate::log::emit($crate::log::Level::Error, format_args!($($arg)*)) };
}
/// Something an operator should look at.
macro_rules! warning {
    ($($arg:tt)*) => { $crate::log::emit($crate::log::Level::Warn, format_args!($($arg)*)) };
}
/// The life of the process.
macro_rules! info {
    ($($arg:tt)*) => { $crate::log::emit($crate::log::Level::Info, format_args!($($arg)*)) };
}
/// What clients do to themselves.
macro_rules! debug {
    ($($arg:tt)*) => { $crate::log::emit($crate::log::Level::Debug, format_args!($($arg)*)) };
}
pub(crate) use {debug, error, info, warning};

mod access;
mod writer;
pub use access::{
    AccessLog, Entry, FLUSH_EVERY, Format, Sink, Target, escape, format_json, format_line, format_stamps,
};
