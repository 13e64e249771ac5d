//! Content negotiation and conditional requests for files (pure): `Accept-Encoding` (RFC 9110
//! §12.5.3), `If-None-Match`/`If-Modified-Since` (§13.1.2, §13.1.3), `Range` and `If-Range`
//! (§14.2, §13.1.5).

use crate::http::date::parse_http_date;

/// Whether the client accepts a gzip-encoded body: `gzip` (or `x-gzip`) listed with a non-zero
/// q-value, or `*` with a non-zero q-value and gzip not refused by name. No header: identity.
pub fn accepts_gzip(accept_encoding: Option<&[u8]>) -> bool {
    let Some(value) = accept_encoding else { return false };
    let mut star = None;
    for item in value.split(|&b| b == b',') {
        let mut parts = item.split(|&b| b == b';');
        let coding = trim(parts.next().unwrap_or_default());
        let mut q = 1000;
        for param in parts {
            let param = trim(param);
            if param.len() >= 2 && param[..2].eq_ignore_ascii_case(b"q=") {
                q = qvalue(trim(&param[2..])).unwrap_or(0);
            }
        }
        if coding.eq_ignore_ascii_case(b"gzip") || coding.eq_ignore_ascii_case(b"x-gzip") {
            return q > 0;
        }
        if coding == b"*" {
            star = Some(q > 0);
        }
    }
    star.unwrap_or(false)
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|c| !matches!(c, b' ' | b'\t')).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !matches!(c, b' ' | b'\t')).map_or(start, |e| e + 1);
    &b[start..end]
}

/// A q-value in thousandths (`0`, `0.5`, `1.000`); `None` when malformed.
fn qvalue(s: &[u8]) -> Option<u32> {
    let (int, frac) = match s.iter().position(|&b| b == b'.') {
        Some(dot) => (&s[..dot], &s[dot + 1..]),
        None => (s, &b""[..]),
    };
    if int.len() != 1 || frac.len() > 3 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut n = match int[0] {
        b'0' => 0,
        b'1' => 1000,
        _ => return None,
    };
    let mut scale = 100;
    for d in frac {
        n += u32::from(d - b'0') * scale;
        scale /= 10;
    }
    (n <= 1000).then_some(n)
}

/// Whether an `If-None-Match` list matches `etag` (weak comparison, §13.1.2).
pub fn none_match(if_none_match: &[u8], etag: &[u8]) -> bool {
    let strip = |t: &[u8]| -> Vec<u8> { t.strip_prefix(b"W/").unwrap_or(t).to_vec() };
    let etag = strip(etag);
    if_none_match.split(|&b| b == b',').map(trim).any(|t| t == b"*" || strip(t) == etag)
}

/// Whether a GET/HEAD with these validators may be answered 304: `If-None-Match` decides when
/// present; otherwise `If-Modified-Since` at or after the file's modification time.
pub fn not_modified(
    if_none_match: Option<&[u8]>,
    if_modified_since: Option<&[u8]>,
    etag: &[u8],
    mtime: u64,
) -> bool {
    match (if_none_match, if_modified_since) {
        (Some(inm), _) => none_match(inm, etag),
        (None, Some(ims)) => parse_http_date(ims).is_some_and(|t| mtime <= t),
        (None, None) => false,
    }
}

/// What a `Range` header asks of a representation of `size` bytes.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum RangeAsk {
    /// No usable range: send the whole representation.
    Whole,
    /// Bytes `start..start + len`.
    Part {
        /// The first byte's offset.
        start: u64,
        /// How many bytes (at least one).
        len: u64,
    },
    /// 416.
    Unsatisfiable,
}

/// Interprets a `Range` header. Only a single `bytes` range is served; several ranges, other
/// units and malformed values are ignored (the whole body is sent), as §14.2 allows.
pub fn range(value: &[u8], size: u64) -> RangeAsk {
    let Some(spec) = value.strip_prefix(b"bytes=") else { return RangeAsk::Whole };
    let spec = trim(spec);
    if spec.contains(&b',') {
        return RangeAsk::Whole;
    }
    let Some(dash) = spec.iter().position(|&b| b == b'-') else { return RangeAsk::Whole };
    let num = |s: &[u8]| -> Option<u64> {
        (!s.is_empty() && s.len() <= 19 && s.iter().all(u8::is_ascii_digit))
            .then(|| std::str::from_utf8(s).ok()?.parse().ok())?
    };
    let (first, last) = (trim(&spec[..dash]), trim(&spec[dash + 1..]));
    match (first.is_empty(), last.is_empty()) {
        // bytes=-N: the last N bytes.
        (true, false) => match num(last) {
            Some(0) => RangeAsk::Unsatisfiable,
            Some(_) if size == 0 => RangeAsk::Unsatisfiable,
            Some(n) => RangeAsk::Part { start: size - n.min(size), len: n.min(size) },
            None => RangeAsk::Whole,
        },
        (false, _) => {
            let Some(start) = num(first) else { return RangeAsk::Whole };
            let end = if last.is_empty() {
                u64::MAX
            } else {
                match num(last) {
                    Some(e) if e >= start => e,
                    _ => return RangeAsk::Whole,
                }
            };
            if start >= size {
                return RangeAsk::Unsatisfiable;
            }
            RangeAsk::Part { start, len: end.min(size - 1) - start + 1 }
        }
        (true, true) => RangeAsk::Whole,
    }
}

/// Whether `If-Range` lets the range apply: an entity tag must match strongly, a date must equal
/// the modification time (§13.1.5).
pub fn if_range_holds(if_range: &[u8], etag: &[u8], mtime: u64) -> bool {
    let v = trim(if_range);
    if v.starts_with(b"\"") || v.starts_with(b"W/") {
        return !v.starts_with(b"W/") && v == etag;
    }
    parse_http_date(v) == Some(mtime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_acceptance() {
        let table: &[(Option<&str>, bool)] = &[
            (None, false),
            (Some("gzip"), true),
            (Some("gzip, deflate, br"), true),
            (Some("br;q=1.0, gzip;q=0.8, *;q=0.1"), true),
            (Some("gzip;q=0"), false),
            (Some("gzip; q=0.000"), false),
            (Some("gzip;q=0.001"), true),
            (Some("GZIP"), true),
            (Some("x-gzip"), true),
            (Some("identity"), false),
            (Some("*"), true),
            (Some("*;q=0"), false),
            (Some("*, gzip;q=0"), false),
            (Some("deflate, br"), false),
            (Some("gzip;q=abc"), false),
            (Some("gzipx"), false),
            (Some(""), false),
        ];
        for (value, want) in table {
            assert_eq!(accepts_gzip(value.map(str::as_bytes)), *want, "{value:?}");
        }
    }

    #[test]
    fn conditional_requests() {
        let etag = b"\"5f-a\"";
        let mtime = 784_111_777;
        let table: &[(Option<&str>, Option<&str>, bool)] = &[
            (Some("\"5f-a\""), None, true),
            (Some("W/\"5f-a\""), None, true),
            (Some("\"x\", \"5f-a\""), None, true),
            (Some("*"), None, true),
            (Some("\"other\""), None, false),
            // If-None-Match decides when present, even if the date would match.
            (Some("\"other\""), Some("Sun, 06 Nov 1994 08:49:37 GMT"), false),
            (None, Some("Sun, 06 Nov 1994 08:49:37 GMT"), true),
            (None, Some("Sun, 06 Nov 1994 09:00:00 GMT"), true),
            (None, Some("Sun, 06 Nov 1994 08:49:36 GMT"), false),
            (None, Some("garbage"), false),
            (None, None, false),
        ];
        for (inm, ims, want) in table {
            let got = not_modified(inm.map(str::as_bytes), ims.map(str::as_bytes), etag, mtime);
            assert_eq!(got, *want, "{inm:?} {ims:?}");
        }
    }

    #[test]
    fn ranges() {
        use RangeAsk::*;
        let table: &[(&str, u64, RangeAsk)] = &[
            ("bytes=0-2", 10, Part { start: 0, len: 3 }),
            ("bytes=2-", 10, Part { start: 2, len: 8 }),
            ("bytes=-3", 10, Part { start: 7, len: 3 }),
            ("bytes=-30", 10, Part { start: 0, len: 10 }),
            ("bytes=5-100", 10, Part { start: 5, len: 5 }),
            ("bytes=9-9", 10, Part { start: 9, len: 1 }),
            ("bytes=10-", 10, Unsatisfiable),
            ("bytes=10-20", 10, Unsatisfiable),
            ("bytes=-0", 10, Unsatisfiable),
            ("bytes=0-0", 0, Unsatisfiable),
            ("bytes=-5", 0, Unsatisfiable),
            ("bytes=3-2", 10, Whole),
            ("bytes=0-1,4-5", 10, Whole),
            ("items=0-1", 10, Whole),
            ("bytes=a-b", 10, Whole),
            ("bytes=-", 10, Whole),
            ("bytes=99999999999999999999-", 10, Whole),
            ("bytes= 1-2", 10, Part { start: 1, len: 2 }),
        ];
        for (value, size, want) in table {
            assert_eq!(range(value.as_bytes(), *size), *want, "{value} / {size}");
        }
    }

    #[test]
    fn if_range() {
        let etag = b"\"5f-a\"";
        assert!(if_range_holds(b"\"5f-a\"", etag, 0));
        assert!(!if_range_holds(b"W/\"5f-a\"", etag, 0));
        assert!(!if_range_holds(b"\"x\"", etag, 0));
        assert!(if_range_holds(b"Sun, 06 Nov 1994 08:49:37 GMT", etag, 784_111_777));
        assert!(!if_range_holds(b"Sun, 06 Nov 1994 08:49:38 GMT", etag, 784_111_777));
    }
}
