//! The response to a file request (pure): status, header lines and which bytes to send, from
//! the file's validators, the request's conditional and range fields, and `--static-max-age`.

use super::negotiate::{RangeAsk, if_range_holds, not_modified, range};
use crate::http::date::format_http_date;
use crate::http::response::push_u64;

/// What the request says about the file it wants.
#[derive(Debug, Default, Clone, Copy)]
pub struct Ask<'a> {
    /// The `If-None-Match` field.
    pub if_none_match: Option<&'a [u8]>,
    /// The `If-Modified-Since` field.
    pub if_modified_since: Option<&'a [u8]>,
    /// The `Range` field.
    pub range: Option<&'a [u8]>,
    /// The `If-Range` field.
    pub if_range: Option<&'a [u8]>,
}

/// The representation chosen for the response.
#[derive(Debug, Clone, Copy)]
pub struct Chosen<'a> {
    /// Its size in bytes.
    pub size: u64,
    /// Its modification time, seconds since the epoch.
    pub mtime: u64,
    /// Its strong ETag, quoted.
    pub etag: &'a [u8],
    /// Its modification time as an HTTP date.
    pub last_modified: &'a [u8],
    /// The Content-Type to send.
    pub content_type: &'a str,
    /// The `.gz` sibling is being sent.
    pub gzip: bool,
    /// A `.gz` sibling exists, so the response depends on Accept-Encoding.
    pub vary: bool,
}

/// What to send.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    /// The status code.
    pub status: u16,
    /// `Name: value\r\n` lines, without Content-Length and Date.
    pub lines: Vec<u8>,
    /// The bytes of the file to send: offset and length. `None`: no file bytes (304, 416).
    pub part: Option<(u64, u64)>,
    /// A server-made body (416).
    pub note: &'static [u8],
}

#[inline(always)]
fn line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Plans the response; `now` is the current time in seconds since the epoch. `max_age`: the
/// `--static-max-age` for Cache-Control and Expires; `None` sends neither (X-Sendfile responses,
/// whose caching is the app's to say).
pub fn plan(ask: &Ask<'_>, f: &Chosen<'_>, max_age: Option<u64>, now: u64) -> Plan {
    let mut lines = Vec::with_capacity(320);
    // Validators and caching fields go on 200, 206 and 304 alike (RFC 9110 §15.4.5).
    line(&mut lines, b"Last-Modified", f.last_modified);
    line(&mut lines, b"ETag", f.etag);
    match max_age {
        None => {}
        Some(0) => line(&mut lines, b"Cache-Control", b"no-cache"),
        Some(secs) => {
            lines.extend_from_slice(b"Cache-Control: public, max-age=");
            push_u64(&mut lines, secs);
            lines.extend_from_slice(b"\r\n");
            line(&mut lines, b"Expires", &format_http_date(now.saturating_add(secs)));
        }
    }
    if f.vary {
        line(&mut lines, b"Vary", b"Accept-Encoding");
    }
    if not_modified(ask.if_none_match, ask.if_modified_since, f.etag, f.mtime) {
        return Plan { status: 304, lines, part: None, note: b"" };
    }
    line(&mut lines, b"Accept-Ranges", b"bytes");
    let wanted = match (ask.range, ask.if_range) {
        (Some(_), Some(ir)) if !if_range_holds(ir, f.etag, f.mtime) => RangeAsk::Whole,
        (Some(r), _) => range(r, f.size),
        (None, _) => RangeAsk::Whole,
    };
    match wanted {
        RangeAsk::Unsatisfiable => {
            lines.clear();
            line(&mut lines, b"Content-Type", b"text/plain; charset=utf-8");
            lines.extend_from_slice(b"Content-Range: bytes */");
            push_u64(&mut lines, f.size);
            lines.extend_from_slice(b"\r\n");
            Plan { status: 416, lines, part: None, note: b"invalid range: failed to overlap\n" }
        }
        RangeAsk::Part { start, len } => {
            content_fields(&mut lines, f);
            lines.extend_from_slice(b"Content-Range: bytes ");
            push_u64(&mut lines, start);
            lines.push(b'-');
            push_u64(&mut lines, start + len - 1);
            lines.push(b'/');
            push_u64(&mut lines, f.size);
            lines.extend_from_slice(b"\r\n");
            Plan { status: 206, lines, part: Some((start, len)), note: b"" }
        }
        RangeAsk::Whole => {
            content_fields(&mut lines, f);
            Plan { status: 200, lines, part: Some((0, f.size)), note: b"" }
        }
    }
}

fn content_fields(lines: &mut Vec<u8>, f: &Chosen<'_>) {
    line(lines, b"Content-Type", f.content_type.as_bytes());
    if f.gzip {
        line(lines, b"Content-Encoding", b"gzip");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LM: &[u8] = b"Sun, 06 Nov 1994 08:49:37 GMT";

    fn file() -> Chosen<'static> {
        Chosen {
            size: 10,
            mtime: 784_111_777,
            etag: b"\"2ebc6aa1-a\"",
            last_modified: LM,
            content_type: "text/plain; charset=utf-8",
            gzip: false,
            vary: false,
        }
    }

    fn text(p: &Plan) -> String {
        String::from_utf8(p.lines.clone()).unwrap()
    }

    #[test]
    fn whole_file() {
        let p = plan(&Ask::default(), &file(), Some(86400), 0);
        assert_eq!((p.status, p.part), (200, Some((0, 10))));
        let t = text(&p);
        for want in [
            "Content-Type: text/plain; charset=utf-8\r\n",
            "Last-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\n",
            "ETag: \"2ebc6aa1-a\"\r\n",
            "Accept-Ranges: bytes\r\n",
            "Cache-Control: public, max-age=86400\r\n",
            "Expires: Fri, 02 Jan 1970 00:00:00 GMT\r\n",
        ] {
            assert!(t.contains(want), "{want} in {t}");
        }
        assert!(!t.contains("Vary") && !t.contains("Content-Encoding"));
    }

    #[test]
    fn no_cache_and_gzip() {
        let f = Chosen { gzip: true, vary: true, ..file() };
        let t = text(&plan(&Ask::default(), &f, Some(0), 0));
        assert!(!text(&plan(&Ask::default(), &f, None, 0)).contains("Cache-Control"));
        assert!(t.contains("Cache-Control: no-cache\r\n") && !t.contains("Expires"), "{t}");
        assert!(t.contains("Content-Encoding: gzip\r\n") && t.contains("Vary: Accept-Encoding\r\n"), "{t}");
    }

    #[test]
    fn conditional_and_ranges() {
        let ask = |inm: Option<&'static str>, r: Option<&'static str>, ir: Option<&'static str>| Ask {
            if_none_match: inm.map(str::as_bytes),
            if_modified_since: None,
            range: r.map(str::as_bytes),
            if_range: ir.map(str::as_bytes),
        };
        let f = file();
        let p = plan(&ask(Some("\"2ebc6aa1-a\""), None, None), &f, Some(60), 0);
        assert_eq!((p.status, p.part), (304, None));
        assert!(text(&p).contains("ETag") && !text(&p).contains("Content-Type"));
        let p = plan(&ask(None, Some("bytes=0-2"), None), &f, Some(60), 0);
        assert_eq!((p.status, p.part), (206, Some((0, 3))));
        assert!(text(&p).contains("Content-Range: bytes 0-2/10\r\n"));
        let p = plan(&ask(None, Some("bytes=20-"), None), &f, Some(60), 0);
        assert_eq!((p.status, p.part), (416, None));
        assert!(text(&p).contains("Content-Range: bytes */10\r\n"));
        let p = plan(&ask(None, Some("bytes=0-2"), Some("\"old\"")), &f, Some(60), 0);
        assert_eq!((p.status, p.part), (200, Some((0, 10))));
        let p = plan(&ask(None, Some("bytes=0-2"), Some("\"2ebc6aa1-a\"")), &f, Some(60), 0);
        assert_eq!(p.status, 206);
        let ims = Ask { if_modified_since: Some(LM), ..Ask::default() };
        assert_eq!(plan(&ims, &f, Some(60), 0).status, 304);
    }
}
