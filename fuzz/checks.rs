//! What the fuzz targets (`fuzz/fuzz_targets/`) run, shared with the regression test that replays
//! their corpus (`tests/fuzz_corpus.rs`): both include this file with `#[path]`, so it is compiled
//! only where it is used. Each function takes arbitrary bytes, runs one pure parser on them and
//! checks the invariants that must hold whatever the input; a violated invariant panics.

use bytes::BytesMut;

use wsgo::http::chunked::{ChunkedDecoder, Decoded};
use wsgo::http::parse_head;

/// Splits fuzz input into a few arbitrary pieces (for parsers taking several arguments).
fn pieces(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = data.splitn(n, |&b| b == 0xff).collect();
    out.resize(n, &[]);
    out
}

/// The PROXY protocol header parser: never panics; a header's length lies within the input and
/// its limits; the same bytes cut anywhere before the header's end need more, or fail the same
/// way (never a different header); a header reads the same with anything behind it.
pub fn proxy_header(data: &[u8]) {
    use wsgo::http::proxy::{Start, V1_MAX, V2_MAX_BODY, parse};
    let whole = parse(data);
    if let Ok(Start::Header(header, len)) = whole {
        assert!(len <= data.len() && len <= V1_MAX.max(16 + V2_MAX_BODY));
        assert_eq!(parse(&data[..len]), Ok(Start::Header(header, len)));
        for cut in 0..len {
            match parse(&data[..cut]) {
                Ok(Start::NeedMore) => {}
                other => panic!("cut {cut} of a {len}-byte header: {other:?}"),
            }
        }
    }
    if let Ok(Start::Http) = whole {
        assert!(!data.is_empty());
    }
}

/// The request-head parser: never panics; a parsed head's spans lie inside the consumed bytes;
/// feeding the same bytes in two pieces gives the same outcome as whole.
pub fn request_head(data: &[u8]) {
    let whole = parse_head(data);
    if let Ok(Some((head, len))) = &whole {
        assert!(*len <= data.len());
        let head = head.clone().attach(bytes::Bytes::copy_from_slice(&data[..*len]));
        for f in &head.fields {
            assert!(f.name.end as usize <= *len && f.value.end as usize <= *len);
            let _ = head.bytes(f.name);
        }
        let _ = (head.path(), head.query(), head.field(b"host"), head.method());
    }
    // A prefix never parses to a different head: it is incomplete or the same error.
    let cut = data.len() / 2;
    if let (Ok(Some((_, len))), Ok(Some((_, len2)))) = (&whole, parse_head(&data[..cut])) {
        assert_eq!(*len, len2, "a head complete in the prefix must be the same head");
    }
}

/// The chunked body decoder: never panics, never returns more bytes than it was given, and gives
/// the same bytes whether the input arrives whole or in two pieces.
pub fn chunked(data: &[u8]) {
    let run = |parts: &[&[u8]], max: usize| -> (Vec<u8>, bool) {
        let mut dec = ChunkedDecoder::new();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for part in parts {
            buf.extend_from_slice(part);
            loop {
                match dec.decode(&mut buf, max) {
                    Ok(Decoded::Data(d)) => out.extend_from_slice(&d),
                    Ok(Decoded::NeedMore) => break,
                    Ok(Decoded::Done) => return (out, true),
                    Err(_) => return (out, false),
                }
            }
        }
        (out, false)
    };
    let max = 1 + data.first().map_or(0, |&b| usize::from(b)) * 7;
    let (whole, done) = run(&[data], max);
    assert!(whole.len() <= data.len());
    let cut = data.len() / 3;
    let (split, done2) = run(&[&data[..cut], &data[cut..]], max);
    if done {
        assert!(done2 && split == whole, "splitting changed a complete body");
    }
}

/// Static path resolution: never panics; what it accepts is a plain relative path.
pub fn static_path(data: &[u8]) {
    let p = pieces(data, 2);
    let (prefix, path) = (p[0], p[1]);
    let _ = wsgo::static_files::resolve::has_encoded_separator(path);
    if let Some(rel) = wsgo::static_files::resolve::relative(prefix, path) {
        assert!(!rel.is_empty() && !rel.contains(&0) && !rel.starts_with(b"/"));
        assert!(rel.split(|&b| b == b'/').all(|s| !matches!(s, b"" | b"." | b"..")), "{rel:?}");
        assert!(path.ends_with(rel));
    }
    let _ = wsgo::static_files::mime::content_type(path);
}

/// Cache-Control, Vary and cookie selections, and the conditional/range/negotiation parsers of
/// static files: never panic; ranges stay inside the representation.
pub fn cache_rules(data: &[u8]) {
    use wsgo::static_files::negotiate::{RangeAsk, accepts_gzip, if_range_holds, not_modified, range};
    let p = pieces(data, 3);
    let status = 200 + u16::from(data.first().copied().unwrap_or(0) % 3) * 2;
    if let Some(s) = wsgo::cache::policy::storable(status, p[0], 60) {
        assert!(s.lifetime > 0 && s.lifetime <= 60);
        assert!(s.vary.iter().all(|v| v.as_slice() != b"*"));
    }
    let names = wsgo::cache::key::cookie_names(p[1]);
    let _ = wsgo::cache::key::selection(b"cookie", &[p[2]], Some(&names));
    let _ = wsgo::cache::key::selection(p[1], &[p[2], p[0]], None);
    // Different (path, query) pairs never share a key.
    let k = wsgo::cache::key::key(false, p[0], p[1], Some(p[2]));
    let swapped = wsgo::cache::key::key(false, p[0], p[2], Some(p[1]));
    assert!(p[1] == p[2] || k != swapped);
    assert_ne!(k, wsgo::cache::key::key(true, p[0], p[1], Some(p[2])));
    assert_ne!(k, wsgo::cache::key::key(false, p[0], p[1], None));
    let _ = accepts_gzip(Some(p[0]));
    let _ = wsgo::http::date::parse_http_date(p[1]);
    let _ = not_modified(Some(p[0]), Some(p[1]), b"\"x\"", 5);
    let _ = if_range_holds(p[2], b"\"x\"", 5);
    let size = u64::from_le_bytes(
        p[2].iter().copied().chain([0; 8]).take(8).collect::<Vec<_>>().try_into().unwrap_or([0; 8]),
    ) % (1 << 40);
    if let RangeAsk::Part { start, len } = range(p[1], size) {
        assert!(len > 0 && start + len <= size, "{start}+{len} > {size}");
    }
}

/// The `X-WSGo-*` header parsers and response-header validation: never panic; what is accepted
/// carries no line break.
pub fn wsgo_headers(data: &[u8]) {
    let p = pieces(data, 2);
    let (name, value) = (String::from_utf8_lossy(p[0]), String::from_utf8_lossy(p[1]));
    let _ = wsgo::park::channels(&value);
    let (t, _) = wsgo::park::timeout(Some(&value));
    assert!(t.as_secs() > 0);
    let _ = wsgo::block::parse_seconds(p[1]);
    let mut b = wsgo::wsgi::headers::HeadBuilder::new(200, Vec::new());
    if b.add(&name, &value).is_ok() {
        let head = b.finish();
        let lines = head.lines;
        assert!(lines.is_empty() || lines.ends_with(b"\r\n"));
        assert_eq!(lines.iter().filter(|&&c| c == b'\n').count(), usize::from(!lines.is_empty()));
    }
    let _ = wsgo::wsgi::headers::parse_status(&value);
}

/// Cron arguments and the next-run computation: never panic; for valid fields the next run is
/// after `now`.
pub fn cron(data: &[u8]) {
    use wsgo::cron::next::{Civil, Schedule, next_run};
    let b = |i: usize| i64::from(data.get(i).copied().unwrap_or(0));
    let field = |i: usize, span: i64| b(i) % (span + 3) - 2;
    let Ok(s) = Schedule::new(field(0, 60), field(1, 24), field(2, 32), field(3, 13), field(4, 8)) else {
        return;
    };
    let now = Civil::date(1971 + b(5) * 2, 1 + b(6) % 12, 1 + b(7) % 31, b(8) % 24, b(9) % 60);
    let secs = b(10) % 60;
    let next = next_run(&s, now, secs);
    assert!(next.minutes() * 60 > now.minutes() * 60 + secs, "{s:?} {now:?} -> {next:?}");
}

/// Header names of a complete response head, lower-cased, in order; panics unless httparse
/// parses it and every value is free of control bytes (HTAB aside).
fn head_names(out: &[u8]) -> Vec<Vec<u8>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(out) {
        Ok(httparse::Status::Complete(_)) => {}
        other => panic!("the head does not parse ({other:?}): {:?}", String::from_utf8_lossy(out)),
    }
    let reason = resp.reason.unwrap_or("");
    assert!(reason.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b) || b >= 0x80), "{reason:?}");
    resp.headers
        .iter()
        .map(|h| {
            assert!(
                h.value.iter().all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f)),
                "control byte in {}: {:?}",
                h.name,
                String::from_utf8_lossy(h.value)
            );
            h.name.to_ascii_lowercase().into_bytes()
        })
        .collect()
}

/// The whole request -> response-head path for what the server answers by itself, for any
/// request bytes: the error answer of a malformed request, the server's own answers (`OPTIONS
/// *`, `CONNECT`, the canonical-path 301), the static-file head planned from the request's
/// conditional and range fields, and the access-log line. Each head parses with httparse, has
/// exactly the header names the server means to send, and no control bytes in its values; the
/// log line is one line of visible text.
pub fn response_head(data: &[u8]) {
    use wsgo::http::answer::{Route, error_answer, route};
    use wsgo::http::response::{Framing, ResponseHead, encode_head, encode_simple};
    use wsgo::static_files::reply::{Ask, Chosen, plan};

    let simple =
        |status: u16, lines: &[u8], body: &[u8], is_head: bool, keep: bool, minor: u8, extra: &[&[u8]]| {
            let mut out = Vec::new();
            encode_simple(&mut out, status, lines, body, is_head, keep, minor);
            let mut meant: Vec<&[u8]> = Vec::new();
            if !body.is_empty() {
                meant.push(b"content-type");
            }
            meant.extend_from_slice(extra);
            if status >= 200 && status != 204 {
                meant.push(b"content-length");
            }
            meant.push(b"date");
            if !keep || minor == 0 {
                meant.push(b"connection");
            }
            assert_eq!(head_names(&out), meant, "{:?}", String::from_utf8_lossy(&out));
        };
    let head = match parse_head(data) {
        Err(e) => {
            let a = error_answer(e);
            return simple(a.status, &a.lines, &a.body, false, false, 1, &[]);
        }
        Ok(None) => return,
        Ok(Some((head, len))) => head.attach(bytes::Bytes::copy_from_slice(&data[..len])),
    };
    if let Some(h) = head.host {
        assert!(wsgo::http::request::valid_authority(head.bytes(h)));
    }
    match route(&head) {
        Route::Answer(a) => {
            let extra: &[&[u8]] = if a.status == 301 { &[b"location"] } else { &[] };
            simple(a.status, &a.lines, &a.body, head.is_head(), head.keep_alive, head.minor, extra);
        }
        Route::Stages => {
            let ask = Ask {
                if_none_match: head.field(b"if-none-match"),
                if_modified_since: head.field(b"if-modified-since"),
                range: head.field(b"range"),
                if_range: head.field(b"if-range"),
            };
            let size = u64::from(data.len() as u32) * 977;
            let file = Chosen {
                size,
                mtime: 784_111_777,
                etag: b"\"2ebc6aa1-a\"",
                last_modified: b"Sun, 06 Nov 1994 08:49:37 GMT",
                content_type: wsgo::static_files::mime::content_type(head.path().unwrap_or(b"")),
                gzip: data.len().is_multiple_of(2),
                vary: data.len().is_multiple_of(3),
            };
            let p = plan(&ask, &file, Some(86_400), 1_700_000_000);
            let rh = ResponseHead { status: p.status, lines: p.lines, ..ResponseHead::default() };
            let len = p.part.map_or(p.note.len() as u64, |(_, n)| n);
            let framing = Framing::choose(p.status, head.is_head(), head.minor, Some(len));
            let mut out = Vec::new();
            encode_head(&mut out, &rh, framing, head.keep_alive, head.minor);
            let names = head_names(&out);
            const FILE_FIELDS: &[&[u8]] = &[
                b"last-modified",
                b"etag",
                b"cache-control",
                b"expires",
                b"vary",
                b"accept-ranges",
                b"content-type",
                b"content-encoding",
                b"content-range",
                b"content-length",
                b"date",
                b"connection",
            ];
            for (i, n) in names.iter().enumerate() {
                assert!(FILE_FIELDS.contains(&n.as_slice()), "{n:?}");
                assert!(!names[..i].contains(n), "{n:?} twice");
            }
        }
    }
    // The access-log line: the request's method, target, Referer and User-Agent are escaped.
    let span = |s: wsgo::http::request::Span| head.bytes(s);
    let mut line = Vec::new();
    let (stamp, iso) = wsgo::log::format_stamps(1_700_000_000);
    let entry = wsgo::log::Entry {
        client: std::net::Ipv4Addr::LOCALHOST.into(),
        method: span(head.method),
        target: span(head.raw_target),
        minor: head.minor,
        status: 200,
        bytes: 0,
        referer: head.field(b"referer"),
        user_agent: head.field(b"user-agent"),
        duration: std::time::Duration::ZERO,
    };
    wsgo::log::format_line(&mut line, &entry, &stamp);
    assert!(line.ends_with(b"\n") && line.iter().filter(|&&b| b == b'\n').count() == 1);
    assert!(line[..line.len() - 1].iter().all(|&b| (0x20..0x7f).contains(&b)), "{line:?}");
    // The JSON line: one line, no control byte, valid UTF-8, every string closed.
    let mut json = Vec::new();
    wsgo::log::format_json(&mut json, &entry, &iso);
    assert!(json.ends_with(b"}\n") && json.iter().filter(|&&b| b == b'\n').count() == 1);
    assert!(json[..json.len() - 1].iter().all(|&b| b >= 0x20 && b != 0x7f), "{json:?}");
    let text = std::str::from_utf8(&json).expect("UTF-8");
    let mut quotes = 0;
    let mut escaped = false;
    for c in text.chars() {
        match (escaped, c) {
            (true, _) => escaped = false,
            (false, '\\') => escaped = true,
            (false, '"') => quotes += 1,
            _ => {}
        }
    }
    assert_eq!(quotes % 2, 0, "{text}");
}
