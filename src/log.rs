//! What the server says: diagnostics on stderr through one facade with levels, and the access
//! log on stdout. The only module that writes the process's output streams.
//!
//! Diagnostics: `error!` for server faults (a thread that cannot start, a file that cannot be
//! read), `warning!` for what an operator should look at (a stuck worker, an app answering wrongly),
//! `info!` for the life of the process (start, signals, shutdown), `debug!` for what clients do
//! to themselves (a disconnect mid-response, a malformed request): quiet unless `--log-level
//! debug`. Each line is `wsgo: ` and the message (`wsgo: error: ` / `wsgo: warning: ` for the two
//! loud levels).
//!
//! Access log: lines are collected in a per-core buffer and written when it fills, every 100 ms,
//! and at shutdown: a `write(2)` per request would cost more than the rest of a small request.
//! Fields that come from the client are escaped so a request cannot forge log lines.

use std::cell::{Cell, RefCell};
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
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Writes a multi-line report (SIGUSR1) to stderr at once.
pub fn report_stderr(text: &str) {
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// Writes a multi-line report (SIGUSR2) to stdout at once.
pub fn report_stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
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

use crate::http::response::{push_ip, push_u64};
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Flush when the buffer holds this much.
const FLUSH_AT: usize = 32 * 1024;
/// Longest a line waits in the buffer.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// What one access-log line says.
pub struct Entry<'a> {
    /// The client (after `--trusted-proxy` resolution).
    pub client: IpAddr,
    /// The method as sent.
    pub method: &'a [u8],
    /// The request target as sent.
    pub target: &'a [u8],
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    /// The status actually sent (0 when nothing was sent).
    pub status: u16,
    /// Body bytes sent.
    pub bytes: u64,
    /// The `Referer` field.
    pub referer: Option<&'a [u8]>,
    /// The `User-Agent` field.
    pub user_agent: Option<&'a [u8]>,
    /// From the head's arrival to the response's end.
    pub duration: Duration,
}

/// One core thread's log buffer.
#[derive(Default)]
pub struct AccessLog {
    buf: RefCell<Vec<u8>>,
    /// The second the cached timestamp is for, and the text `25/Nov/2026:19:14:14 +0000`.
    stamp: Cell<(u64, [u8; 26])>,
}

impl AccessLog {
    /// An empty buffer.
    pub fn new() -> AccessLog {
        AccessLog::default()
    }

    /// Adds a line to the buffer (written when it fills, and every 100 ms).
    pub fn write(&self, e: &Entry<'_>) {
        let stamp = self.timestamp();
        let mut buf = self.buf.borrow_mut();
        format_line(&mut buf, e, &stamp);
        if buf.len() >= FLUSH_AT {
            flush_to_stdout(&mut buf);
        }
    }

    /// Writes the buffered lines now.
    pub fn flush(&self) {
        flush_to_stdout(&mut self.buf.borrow_mut());
    }

    fn timestamp(&self) -> [u8; 26] {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let (secs, text) = self.stamp.get();
        if secs == now {
            return text;
        }
        let text = format_local(now);
        self.stamp.set((now, text));
        text
    }
}

fn flush_to_stdout(buf: &mut Vec<u8>) {
    if buf.is_empty() {
        return;
    }
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(buf);
    let _ = out.flush();
    buf.clear();
}

/// Appends one access-log line: Combined Log Format plus the duration; the client's fields are
/// escaped.
pub fn format_line(buf: &mut Vec<u8>, e: &Entry<'_>, stamp: &[u8; 26]) {
    push_ip(buf, e.client);
    buf.extend_from_slice(b" - - [");
    buf.extend_from_slice(stamp);
    buf.extend_from_slice(b"] \"");
    escape(buf, e.method);
    buf.push(b' ');
    escape(buf, e.target);
    buf.extend_from_slice(if e.minor == 1 { b" HTTP/1.1\" " } else { b" HTTP/1.0\" " });
    push_u64(buf, u64::from(e.status));
    buf.push(b' ');
    push_u64(buf, e.bytes);
    buf.extend_from_slice(b" \"");
    escape(buf, e.referer.unwrap_or(b"-"));
    buf.extend_from_slice(b"\" \"");
    escape(buf, e.user_agent.unwrap_or(b"-"));
    buf.extend_from_slice(b"\" ");
    push_u64(buf, e.duration.as_millis() as u64);
    buf.extend_from_slice(b"ms\n");
}

/// Quotes, backslashes and non-printable bytes become `\xHH`.
pub fn escape(buf: &mut Vec<u8>, field: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let plain = |b: u8| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\';
    if field.iter().all(|&b| plain(b)) {
        buf.extend_from_slice(field);
        return;
    }
    for &b in field {
        if plain(b) {
            buf.push(b);
        } else {
            buf.extend_from_slice(&[b'\\', b'x', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
        }
    }
}

/// `dd/Mon/yyyy:HH:MM:SS +zzzz` in the local time zone.
pub fn format_local(secs: u64) -> [u8; 26] {
    let t = crate::sys::time::local(secs as i64).unwrap_or_else(|| {
        let days = (secs / 86_400) as i64;
        let (year, month, day) = crate::http::date::civil_from_days(days);
        crate::sys::time::LocalTime {
            year,
            month: i64::from(month),
            day: i64::from(day),
            hour: ((secs / 3600) % 24) as i64,
            minute: ((secs / 60) % 60) as i64,
            second: (secs % 60) as i64,
            offset: 0,
        }
    });
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let off = t.offset / 60;
    let sign = if off < 0 { '-' } else { '+' };
    let text = format!(
        "{:02}/{}/{:04}:{:02}:{:02}:{:02} {}{:02}{:02}",
        t.day,
        MONTHS[(t.month - 1).clamp(0, 11) as usize],
        t.year,
        t.hour,
        t.minute,
        t.second,
        sign,
        off.abs() / 60,
        off.abs() % 60
    );
    let mut out = [b' '; 26];
    let n = text.len().min(26);
    out[..n].copy_from_slice(&text.as_bytes()[..n]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_client_fields() {
        let mut out = Vec::new();
        escape(&mut out, b"Mozilla \"x\"\n\\ok");
        assert_eq!(out, b"Mozilla \\x22x\\x22\\x0a\\x5cok");
    }

    #[test]
    fn formats_a_line() {
        let log = AccessLog::new();
        log.write(&Entry {
            client: "1.2.3.4".parse().unwrap(),
            method: b"GET",
            target: b"/x?y=1",
            minor: 1,
            status: 200,
            bytes: 12,
            referer: None,
            user_agent: Some(b"curl/8"),
            duration: Duration::from_millis(3),
        });
        let line = String::from_utf8(log.buf.borrow().clone()).unwrap();
        assert!(line.starts_with("1.2.3.4 - - ["), "{line}");
        assert!(line.ends_with("] \"GET /x?y=1 HTTP/1.1\" 200 12 \"-\" \"curl/8\" 3ms\n"), "{line}");
        let stamp = &line[13..39];
        assert_eq!(&stamp[2..3], "/");
        assert_eq!(&stamp[20..21], " ");
    }
}
