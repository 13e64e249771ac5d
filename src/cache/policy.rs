//! Which responses the cache may keep, and for how long (pure; RFC 9111 as README.md, "Response
//! cache", describes).
//!
//! Kept: a GET's response with status 200, 204 or 301, a `Cache-Control: max-age=N` (N > 0;
//! directives case-insensitive, any spacing), none of `private`, `no-store`, `no-cache`, no
//! `Set-Cookie`, no `Vary: *`, a body of at most 1,000,000 bytes. Lifetime: min(N, `--max-age`).

/// Largest body the cache keeps (decimal, as the original).
pub const MAX_BODY: usize = 1_000_000;

/// How a storable response is to be kept.
#[derive(Debug, PartialEq, Eq)]
pub struct Storable {
    /// Seconds.
    pub lifetime: u64,
    /// Request header names the response varies on, lower-case.
    pub vary: Vec<Vec<u8>>,
}

/// The fields of a response head as `(name, value)` pairs from its `Name: value\r\n` lines.
pub fn fields(lines: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    lines.split(|&b| b == b'\n').filter_map(|l| {
        let l = l.strip_suffix(b"\r").unwrap_or(l);
        let colon = l.iter().position(|&b| b == b':')?;
        Some((&l[..colon], trim(&l[colon + 1..])))
    })
}

/// Without leading and trailing spaces and tabs (optional whitespace, RFC 9110 §5.6.3).
pub fn trim(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|c| !matches!(c, b' ' | b'\t')).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !matches!(c, b' ' | b'\t')).map_or(start, |e| e + 1);
    &b[start..end]
}

/// The elements of a comma-separated list field, trimmed, empty ones dropped.
pub fn list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(trim).filter(|t| !t.is_empty())
}

/// Whether a response with this status and these header lines may be stored, and how.
/// `max_age` is `--max-age`.
pub fn storable(status: u16, lines: &[u8], max_age: u64) -> Option<Storable> {
    if !matches!(status, 200 | 204 | 301) || max_age == 0 {
        return None;
    }
    let mut lifetime = None;
    let mut vary = Vec::new();
    for (name, value) in fields(lines) {
        if name.eq_ignore_ascii_case(b"set-cookie") {
            return None;
        }
        if name.eq_ignore_ascii_case(b"cache-control") {
            for directive in list(value) {
                let (key, arg) = match directive.iter().position(|&b| b == b'=') {
                    Some(eq) => (trim(&directive[..eq]), Some(trim(&directive[eq + 1..]))),
                    None => (directive, None),
                };
                let is = |k: &[u8]| key.eq_ignore_ascii_case(k);
                if is(b"private") || is(b"no-store") || is(b"no-cache") {
                    return None;
                }
                if is(b"max-age") {
                    let arg = arg?;
                    let arg = arg.strip_prefix(b"\"").and_then(|a| a.strip_suffix(b"\"")).unwrap_or(arg);
                    let n = std::str::from_utf8(arg).ok()?.parse::<u64>().ok()?;
                    lifetime = Some(n.min(max_age));
                }
            }
        } else if name.eq_ignore_ascii_case(b"vary") {
            for v in list(value) {
                if v == b"*" {
                    return None;
                }
                let v = v.to_ascii_lowercase();
                if !vary.contains(&v) {
                    vary.push(v);
                }
            }
        }
    }
    let lifetime = lifetime.filter(|&n| n > 0)?;
    Some(Storable { lifetime, vary })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_stored() {
        type Want = Option<(u64, &'static [&'static str])>;
        let table: &[(u16, &str, u64, Want)] = &[
            (200, "Cache-Control: max-age=30\r\n", 60, Some((30, &[]))),
            (200, "Cache-Control: public, max-age=30\r\n", 60, Some((30, &[]))),
            (200, "Cache-Control: public,max-age=30\r\n", 60, Some((30, &[]))),
            (200, "cache-control: Max-Age = 30\r\n", 60, Some((30, &[]))),
            (200, "Cache-Control: max-age=\"30\"\r\n", 60, Some((30, &[]))),
            (200, "Cache-Control: max-age=300\r\n", 60, Some((60, &[]))),
            (204, "Cache-Control: max-age=30\r\n", 60, Some((30, &[]))),
            (301, "Cache-Control: max-age=30\r\n", 60, Some((30, &[]))),
            (
                200,
                "Cache-Control: max-age=30\r\nVary: Cookie, Accept-Language\r\n",
                60,
                Some((30, &["cookie", "accept-language"])),
            ),
            (
                200,
                "Cache-Control: max-age=30\r\nVary: Accept-Language,X-Foo\r\nVary: x-foo\r\n",
                60,
                Some((30, &["accept-language", "x-foo"])),
            ),
            (200, "Cache-Control: max-age=30\r\nVary: *\r\n", 60, None),
            (200, "Cache-Control: max-age=0\r\n", 60, None),
            (200, "Cache-Control: max-age=30\r\n", 0, None),
            (200, "Cache-Control: private, max-age=30\r\n", 60, None),
            (200, "Cache-Control: max-age=30, NO-STORE\r\n", 60, None),
            (200, "Cache-Control: no-cache, max-age=30\r\n", 60, None),
            (200, "Cache-Control: no-cache=\"Set-Cookie\", max-age=30\r\n", 60, None),
            (200, "Cache-Control: max-age=abc\r\n", 60, None),
            (200, "Cache-Control: max-age\r\n", 60, None),
            (200, "Cache-Control: s-maxage=30\r\n", 60, None),
            (200, "Content-Type: text/html\r\n", 60, None),
            (200, "Cache-Control: max-age=30\r\nSet-Cookie: a=1\r\n", 60, None),
            (201, "Cache-Control: max-age=30\r\n", 60, None),
            (404, "Cache-Control: max-age=30\r\n", 60, None),
            (302, "Cache-Control: max-age=30\r\n", 60, None),
        ];
        for (status, lines, max_age, want) in table {
            let got = storable(*status, lines.as_bytes(), *max_age);
            let want = want.map(|(lifetime, vary)| Storable {
                lifetime,
                vary: vary.iter().map(|v| v.as_bytes().to_vec()).collect(),
            });
            assert_eq!(got, want, "{status} {lines:?} {max_age}");
        }
    }
}
