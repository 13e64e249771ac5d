//! The access log: one line per response, in Combined Log Format (plus the duration) or as a
//! JSON object, to stdout, to a file, or nowhere (`--access-log`, `--access-log-format`).
//!
//! Lines are collected in a per-core buffer and handed to the log's writer thread when it fills,
//! every 100 ms, and at shutdown: a `write(2)` per request would cost more than the rest of a
//! small request, and a core thread never writes itself (a destination that blocks would stop it
//! serving; the writer's queue is bounded, and lines beyond it are dropped and counted). Fields
//! that come from the client are escaped so a request cannot forge a line. Timestamps are UTC:
//! an app may change the process's time zone (Django's `TIME_ZONE` calls `tzset()`), and the
//! lines of one log must not change offset under it.
//!
//! A log file is opened for appending and reopened on SIGHUP (logrotate moves the old one
//! away, then signals): [`Sink::reopen`].

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::writer::{Dest, Writer};

use crate::http::response::{push_ip, push_u64};
use crate::stats::CoreCounts;

/// Flush when the buffer holds this much.
const FLUSH_AT: usize = 32 * 1024;
/// Longest a line waits in the buffer.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// Where access lines go (`--access-log`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Nowhere (`off`).
    Off,
    /// Standard output (`-`).
    Stdout,
    /// A file, appended to.
    File(PathBuf),
}

impl std::str::FromStr for Target {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Target, Self::Err> {
        Ok(match s {
            "off" | "none" => Target::Off,
            "-" | "" => Target::Stdout,
            path => Target::File(PathBuf::from(path)),
        })
    }
}

/// How an access line is written (`--access-log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `client - - [time] "request" status bytes "referer" "user agent" duration`.
    Combined,
    /// One JSON object per line.
    Json,
}

/// The process's access-log destination, shared by its core threads. Their lines are written by
/// a thread of its own ([`Writer`]): a destination that blocks (a full pipe, a stalled terminal)
/// holds that thread, never a core thread, which would stop serving every connection it holds.
pub struct Sink {
    target: Target,
    /// `None` when off.
    writer: Option<Writer>,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink").field("target", &self.target).finish_non_exhaustive()
    }
}

impl Sink {
    /// Opens the destination (a file is created if needed, and appended to) and starts its
    /// writer thread.
    pub fn open(target: Target) -> std::io::Result<Sink> {
        let dest = match &target {
            Target::Off => return Ok(Sink { target, writer: None }),
            Target::Stdout => Dest::Stdout,
            Target::File(path) => Dest::File(append(path)?),
        };
        let writer = Writer::start("wsgo-access-log", dest, "access-log lines")?;
        Ok(Sink { target, writer: Some(writer) })
    }

    /// Whether the destination can be opened (a file is created if needed).
    pub fn check(target: &Target) -> std::io::Result<()> {
        match target {
            Target::File(path) => append(path).map(drop),
            _ => Ok(()),
        }
    }

    /// Whether lines are thrown away.
    pub fn is_off(&self) -> bool {
        self.writer.is_none()
    }

    /// Opens the file again under its name (after logrotate moved it); lines go on to the old
    /// file if that fails. Nothing to do for stdout.
    pub fn reopen(&self) -> std::io::Result<()> {
        if let (Target::File(path), Some(w)) = (&self.target, &self.writer) {
            let path: &std::path::Path = path;
            w.reopened(append(path)?);
        }
        Ok(())
    }

    /// Hands whole lines to the writer thread (dropped, counted, when it is far behind).
    fn send(&self, lines: Vec<u8>) {
        if let Some(w) = &self.writer {
            w.send(lines);
        }
    }

    /// Waits until everything handed over is written, at most `timeout`: whether it was.
    pub fn sync(&self, timeout: Duration) -> bool {
        self.writer.as_ref().is_none_or(|w| w.sync(timeout))
    }

    /// Lines dropped because the destination did not take them.
    pub fn dropped(&self) -> u64 {
        self.writer.as_ref().map_or(0, Writer::dropped)
    }
}

fn append(path: &std::path::Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().create(true).append(true).mode(0o644).custom_flags(libc::O_CLOEXEC).open(path)
}

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

/// The timestamps of one second: `28/Nov/2026:09:14:14 +0000` and `2026-11-28T09:14:14Z`.
type Stamps = ([u8; 26], [u8; 20]);

/// One core thread's log buffer, and its count of responses by status class.
pub struct AccessLog {
    sink: Arc<Sink>,
    format: Format,
    counts: Arc<CoreCounts>,
    buf: RefCell<Vec<u8>>,
    /// The second the cached timestamps are for.
    stamp: Cell<(u64, Stamps)>,
}

impl AccessLog {
    /// An empty buffer writing to `sink`, counting into `counts`.
    pub fn new(sink: Arc<Sink>, format: Format, counts: Arc<CoreCounts>) -> AccessLog {
        AccessLog {
            sink,
            format,
            counts,
            buf: RefCell::default(),
            stamp: Cell::new((u64::MAX, ([0; 26], [0; 20]))),
        }
    }

    /// Counts the response, and adds its line to the buffer (written when it fills, and every
    /// 100 ms).
    pub fn write(&self, e: &Entry<'_>) {
        self.counts.count(e.status);
        if self.sink.is_off() {
            return;
        }
        let stamps = self.timestamps();
        let mut buf = self.buf.borrow_mut();
        match self.format {
            Format::Combined => format_line(&mut buf, e, &stamps.0),
            Format::Json => format_json(&mut buf, e, &stamps.1),
        }
        if buf.len() >= FLUSH_AT {
            let full = std::mem::replace(&mut *buf, Vec::with_capacity(FLUSH_AT + 4096));
            self.sink.send(full);
        }
    }

    /// Writes the buffered lines now.
    pub fn flush(&self) {
        let lines = std::mem::take(&mut *self.buf.borrow_mut());
        self.sink.send(lines);
    }

    /// What is buffered (for tests).
    pub fn buffered(&self) -> Vec<u8> {
        self.buf.borrow().clone()
    }

    fn timestamps(&self) -> Stamps {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let (secs, stamps) = self.stamp.get();
        if secs == now {
            return stamps;
        }
        let stamps = format_stamps(now);
        self.stamp.set((now, stamps));
        stamps
    }
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

/// Appends one JSON object and a newline: `time` (UTC, RFC 3339), `client`, `method`, `path`,
/// `query`, `protocol`, `status`, `bytes`, `duration` (seconds), `referer`, `user_agent` (null
/// when absent). The client's fields become JSON strings whatever their bytes.
pub fn format_json(buf: &mut Vec<u8>, e: &Entry<'_>, stamp: &[u8; 20]) {
    let (path, query) = match e.target.iter().position(|&b| b == b'?') {
        Some(i) => (&e.target[..i], &e.target[i + 1..]),
        None => (e.target, &b""[..]),
    };
    buf.extend_from_slice(b"{\"time\":\"");
    buf.extend_from_slice(stamp);
    buf.extend_from_slice(b"\",\"client\":\"");
    push_ip(buf, e.client);
    buf.extend_from_slice(b"\",\"method\":");
    json_string(buf, e.method);
    buf.extend_from_slice(b",\"path\":");
    json_string(buf, path);
    buf.extend_from_slice(b",\"query\":");
    json_string(buf, query);
    buf.extend_from_slice(if e.minor == 1 {
        b",\"protocol\":\"HTTP/1.1\""
    } else {
        b",\"protocol\":\"HTTP/1.0\""
    });
    buf.extend_from_slice(b",\"status\":");
    push_u64(buf, u64::from(e.status));
    buf.extend_from_slice(b",\"bytes\":");
    push_u64(buf, e.bytes);
    // Seconds with microseconds: `0.000123`.
    let micros = e.duration.as_micros() as u64;
    buf.extend_from_slice(b",\"duration\":");
    push_u64(buf, micros / 1_000_000);
    buf.push(b'.');
    let frac = micros % 1_000_000;
    for digit in (0..6).rev().map(|p| (frac / 10u64.pow(p)) % 10) {
        buf.push(b'0' + digit as u8);
    }
    buf.extend_from_slice(b",\"referer\":");
    json_optional(buf, e.referer);
    buf.extend_from_slice(b",\"user_agent\":");
    json_optional(buf, e.user_agent);
    buf.extend_from_slice(b"}\n");
}

fn json_optional(buf: &mut Vec<u8>, field: Option<&[u8]>) {
    match field {
        Some(f) => json_string(buf, f),
        None => buf.extend_from_slice(b"null"),
    }
}

/// A JSON string of `field`: UTF-8 text as it is; quotes, backslashes, control bytes and (in
/// text that is not UTF-8) bytes above 0x7f as `\u00HH`.
fn json_string(buf: &mut Vec<u8>, field: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let utf8 = std::str::from_utf8(field).is_ok();
    buf.push(b'"');
    for &b in field {
        let plain = b >= 0x20 && b != b'"' && b != b'\\' && b != 0x7f && (b < 0x80 || utf8);
        if plain {
            buf.push(b);
        } else {
            buf.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
        }
    }
    buf.push(b'"');
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

/// The timestamps of the second `secs` after the epoch, in UTC: `dd/Mon/yyyy:HH:MM:SS +0000`
/// and `yyyy-mm-ddTHH:MM:SSZ`.
pub fn format_stamps(secs: u64) -> Stamps {
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let (year, month, day) = crate::http::date::civil_from_days((secs / 86_400) as i64);
    let (hour, minute, second) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let clf = format!(
        "{day:02}/{}/{year:04}:{hour:02}:{minute:02}:{second:02} +0000",
        MONTHS[(month as usize).clamp(1, 12) - 1]
    );
    let iso = format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z");
    let mut out = ([b' '; 26], [b' '; 20]);
    let n = clf.len().min(26);
    out.0[..n].copy_from_slice(&clf.as_bytes()[..n]);
    let n = iso.len().min(20);
    out.1[..n].copy_from_slice(&iso.as_bytes()[..n]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry<'a>(target: &'a [u8], ua: Option<&'a [u8]>) -> Entry<'a> {
        Entry {
            client: "1.2.3.4".parse().unwrap(),
            method: b"GET",
            target,
            minor: 1,
            status: 200,
            bytes: 12,
            referer: None,
            user_agent: ua,
            duration: Duration::from_micros(3_250),
        }
    }

    fn log(format: Format) -> (AccessLog, Arc<CoreCounts>) {
        let counts = Arc::new(CoreCounts::default());
        let sink = Arc::new(Sink::open(Target::Stdout).unwrap());
        (AccessLog::new(sink, format, counts.clone()), counts)
    }

    #[test]
    fn escapes_client_fields() {
        let mut out = Vec::new();
        escape(&mut out, b"Mozilla \"x\"\n\\ok");
        assert_eq!(out, b"Mozilla \\x22x\\x22\\x0a\\x5cok");
    }

    #[test]
    fn formats_a_combined_line_in_utc() {
        let (log, counts) = log(Format::Combined);
        log.write(&entry(b"/x?y=1", Some(b"curl/8")));
        let line = String::from_utf8(log.buffered()).unwrap();
        assert!(line.starts_with("1.2.3.4 - - ["), "{line}");
        assert!(line.ends_with("] \"GET /x?y=1 HTTP/1.1\" 200 12 \"-\" \"curl/8\" 3ms\n"), "{line}");
        assert_eq!(&line[34..41], "+0000] ", "{line}");
        assert_eq!(counts.by_class(), [0, 0, 1, 0, 0, 0]);
    }

    #[test]
    fn timestamps() {
        // 2023-11-14 22:13:20 UTC.
        let (clf, iso) = format_stamps(1_700_000_000);
        assert_eq!(&clf, b"14/Nov/2023:22:13:20 +0000");
        assert_eq!(&iso, b"2023-11-14T22:13:20Z");
        let (clf, iso) = format_stamps(0);
        assert_eq!(&clf, b"01/Jan/1970:00:00:00 +0000");
        assert_eq!(&iso, b"1970-01-01T00:00:00Z");
    }

    #[test]
    fn json_lines_are_json_whatever_the_client_sends() {
        // Target, User-Agent, a part of the line.
        type Case = (&'static [u8], Option<&'static [u8]>, &'static str);
        let table: &[Case] = &[
            (
                b"/x?y=1&z",
                Some(b"curl/8"),
                r#""method":"GET","path":"/x","query":"y=1&z","protocol":"HTTP/1.1","status":200,"bytes":12,"duration":0.003250,"referer":null,"user_agent":"curl/8"}"#,
            ),
            (b"/a\"b\\c", None, r#""path":"/a\u0022b\u005cc","query":"""#),
            (b"/caf\xc3\xa9", Some(b"\x01\n"), "\"path\":\"/caf\u{e9}\""),
            (b"/bad\xff", Some(b"\x01\n"), r#""path":"/bad\u00ff""#),
            (b"/", Some(b"\x01\n\x7f"), r#""user_agent":"\u0001\u000a\u007f"}"#),
        ];
        for (target, ua, want) in table {
            let mut buf = Vec::new();
            format_json(&mut buf, &entry(target, *ua), b"2023-11-14T22:13:20Z");
            let line = String::from_utf8(buf).unwrap();
            assert!(
                line.starts_with(r#"{"time":"2023-11-14T22:13:20Z","client":"1.2.3.4","method":"GET""#),
                "{line}"
            );
            assert!(line.contains(want), "{target:?}: {line}");
            assert!(line.ends_with("}\n") && !line[..line.len() - 1].contains('\n'), "{line}");
        }
    }

    #[test]
    fn off_counts_but_writes_nothing() {
        let counts = Arc::new(CoreCounts::default());
        let log = AccessLog::new(Arc::new(Sink::open(Target::Off).unwrap()), Format::Json, counts.clone());
        let mut e = entry(b"/", None);
        for status in [200, 204, 301, 404, 503, 0] {
            e.status = status;
            log.write(&e);
        }
        assert!(log.buffered().is_empty());
        assert_eq!(counts.by_class(), [1, 0, 2, 1, 1, 1]);
    }

    /// A destination that takes nothing (a pipe nobody reads) holds the writer thread only: the
    /// core threads' writes return at once, lines beyond the queue are dropped and counted, and
    /// every line is either written or counted.
    #[test]
    fn a_destination_that_takes_nothing_holds_only_the_writer() {
        use std::io::Read;
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::OpenOptionsExt;
        let dir = std::env::temp_dir().join(format!("wsgo-access-fifo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("access.fifo");
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: mkfifo with a NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // A reader that reads nothing yet (opened first: opening a FIFO to write waits for one).
        let mut reader =
            std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(&path).unwrap();
        let sink = Arc::new(Sink::open(Target::File(path.clone())).unwrap());
        let log = AccessLog::new(sink.clone(), Format::Combined, Arc::new(CoreCounts::default()));
        let ua = vec![b'u'; 1000];
        const LINES: usize = 20_000; // ~21 MB, against a 64 KiB pipe and the 4 MiB queue
        let t0 = std::time::Instant::now();
        for _ in 0..LINES {
            log.write(&entry(b"/", Some(&ua)));
        }
        log.flush();
        assert!(t0.elapsed() < Duration::from_secs(5), "the writes were held {:?}", t0.elapsed());
        assert!(sink.dropped() > 10_000, "dropped {}", sink.dropped());
        assert!(!sink.sync(Duration::from_millis(100)), "written with nobody reading");
        let drain = std::thread::spawn(move || {
            let (mut lines, mut buf) = (0, vec![0; 1 << 16]);
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => return lines,
                    Ok(n) => lines += buf[..n].iter().filter(|&&b| b == b'\n').count(),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(1))
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        });
        assert!(sink.sync(Duration::from_secs(20)), "written once read");
        let dropped = sink.dropped() as usize;
        // The last owner gone, the writer ends and closes the pipe: the reader sees its end.
        drop((log, sink));
        let written = drain.join().unwrap();
        assert!(written > 3_000, "written {written}");
        assert_eq!(written + dropped, LINES, "every line written or counted");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_is_appended_to_and_reopened() {
        let dir = std::env::temp_dir().join(format!("wsgo-access-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("access.log");
        let sink = Arc::new(Sink::open(Target::File(path.clone())).unwrap());
        let log = AccessLog::new(sink.clone(), Format::Combined, Arc::new(CoreCounts::default()));
        log.write(&entry(b"/one", None));
        log.flush();
        std::fs::rename(&path, dir.join("access.log.1")).unwrap();
        log.write(&entry(b"/two", None));
        log.flush();
        sink.reopen().unwrap();
        log.write(&entry(b"/three", None));
        log.flush();
        assert!(sink.sync(Duration::from_secs(10)), "written");
        let old = std::fs::read_to_string(dir.join("access.log.1")).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert!(old.contains("/one") && old.contains("/two") && !old.contains("/three"), "{old}");
        assert!(new.contains("/three") && !new.contains("/two"), "{new}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
