//! The access log: one line per request on stdout, buffered per core thread.
//!
//! Lines are collected in a per-core buffer and written when it fills, every 100 ms, and at
//! shutdown: a `write(2)` per request would cost more than the rest of a small request. Fields
//! that come from the client are escaped so a request cannot forge log lines.

use std::cell::{Cell, RefCell};
use std::io::Write;

use crate::http::response::{push_ip, push_u64};
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Flush when the buffer holds this much.
const FLUSH_AT: usize = 32 * 1024;
/// Longest a line waits in the buffer.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// What one access-log line says.
pub struct Entry<'a> {
    pub client: IpAddr,
    pub method: &'a [u8],
    pub target: &'a [u8],
    pub minor: u8,
    /// The status actually sent (0 when nothing was sent).
    pub status: u16,
    /// Body bytes sent.
    pub bytes: u64,
    pub referer: Option<&'a [u8]>,
    pub user_agent: Option<&'a [u8]>,
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
    pub fn new() -> AccessLog {
        AccessLog::default()
    }

    pub fn write(&self, e: &Entry<'_>) {
        let stamp = self.timestamp();
        let mut buf = self.buf.borrow_mut();
        push_ip(&mut buf, e.client);
        buf.extend_from_slice(b" - - [");
        buf.extend_from_slice(&stamp);
        buf.extend_from_slice(b"] \"");
        escape(&mut buf, e.method);
        buf.push(b' ');
        escape(&mut buf, e.target);
        buf.extend_from_slice(if e.minor == 1 { b" HTTP/1.1\" " } else { b" HTTP/1.0\" " });
        push_u64(&mut buf, u64::from(e.status));
        buf.push(b' ');
        push_u64(&mut buf, e.bytes);
        buf.extend_from_slice(b" \"");
        escape(&mut buf, e.referer.unwrap_or(b"-"));
        buf.extend_from_slice(b"\" \"");
        escape(&mut buf, e.user_agent.unwrap_or(b"-"));
        buf.extend_from_slice(b"\" ");
        push_u64(&mut buf, e.duration.as_millis() as u64);
        buf.extend_from_slice(b"ms\n");
        if buf.len() >= FLUSH_AT {
            flush_to_stdout(&mut buf);
        }
    }

    /// Takes the lines not yet written (for checks of the format).
    #[doc(hidden)]
    pub fn take(&self) -> Vec<u8> {
        std::mem::take(&mut self.buf.borrow_mut())
    }

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
    // SAFETY: localtime_r writes into the zeroed tm we own and reads the time_t we pass.
    let tm = unsafe {
        let t = secs as libc::time_t;
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            let days = (secs / 86_400) as i64;
            let (y, m, d) = crate::http::date::civil_from_days(days);
            tm.tm_year = (y - 1900) as i32;
            tm.tm_mon = m as i32 - 1;
            tm.tm_mday = d as i32;
            tm.tm_hour = ((secs / 3600) % 24) as i32;
            tm.tm_min = ((secs / 60) % 60) as i32;
            tm.tm_sec = (secs % 60) as i32;
        }
        tm
    };
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let off = tm.tm_gmtoff / 60;
    let sign = if off < 0 { '-' } else { '+' };
    let text = format!(
        "{:02}/{}/{:04}:{:02}:{:02}:{:02} {}{:02}{:02}",
        tm.tm_mday,
        MONTHS[tm.tm_mon.clamp(0, 11) as usize],
        tm.tm_year + 1900,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
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
