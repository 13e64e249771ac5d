//! Request paths: percent-decoding and canonical form.
//!
//! PATH_INFO is the percent-decoded path (PEP 3333 via CGI). A decoded path with `.`/`..`
//! segments or empty segments is not canonical: the original (Go's ServeMux) answers it with a
//! 301 to the cleaned path, so no such path ever reaches an application; we do the same.

/// Decodes `%XX` escapes. `None`: a malformed escape. `Some(None)`: nothing to decode.
pub fn percent_decode(raw: &[u8]) -> Option<Option<Vec<u8>>> {
    if !raw.contains(&b'%') {
        return Some(None);
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' {
            let hi = hex(*raw.get(i + 1)?)?;
            let lo = hex(*raw.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    Some(Some(out))
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The canonical form of a decoded path, or `None` when it already is canonical.
///
/// Collapses `//`, removes `.` segments, resolves `..` (never above the root) and keeps a
/// trailing slash, as Go's `path.Clean` plus ServeMux's trailing-slash rule.
pub fn clean_path(path: &[u8]) -> Option<Vec<u8>> {
    if is_clean(path) {
        return None;
    }
    let mut segments: Vec<&[u8]> = Vec::new();
    for seg in path.split(|&b| b == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = Vec::with_capacity(path.len());
    for s in &segments {
        out.push(b'/');
        out.extend_from_slice(s);
    }
    let trailing = path.ends_with(b"/");
    if out.is_empty() || (trailing && !segments.is_empty()) {
        out.push(b'/');
    }
    if out == path { None } else { Some(out) }
}

fn is_clean(path: &[u8]) -> bool {
    if path.first() != Some(&b'/') {
        return false;
    }
    // Every segment after the leading slash must be non-empty and not `.`/`..`; the last one
    // may be empty (a trailing slash).
    let mut segments = path[1..].split(|&b| b == b'/').peekable();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        if (seg.is_empty() && !last) || seg == b"." || seg == b".." {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_escapes() {
        let table: &[(&str, Option<Option<&[u8]>>)] = &[
            ("/plain", Some(None)),
            ("/x%2Fy%3Fz%20w", Some(Some(b"/x/y?z w"))),
            ("/caf%C3%a9", Some(Some("/café".as_bytes()))),
            ("/nul%00", Some(Some(b"/nul\0"))),
            ("/bad%zz", None),
            ("/short%2", None),
            ("/end%", None),
        ];
        for (raw, want) in table {
            let got = percent_decode(raw.as_bytes());
            assert_eq!(got.as_ref().map(|o| o.as_deref()), *want, "{raw}");
        }
    }

    #[test]
    fn cleans_like_servemux() {
        let table: &[(&str, Option<&str>)] = &[
            ("/", None),
            ("/a/b", None),
            ("/a/b/", None),
            ("/a/../b", Some("/b")),
            ("//x", Some("/x")),
            ("/a/./b", Some("/a/b")),
            ("/x/../y", Some("/y")),
            ("/a/b/../c/", Some("/a/c/")),
            ("/..", Some("/")),
            ("/../../etc", Some("/etc")),
            ("/a/.", Some("/a")),
            ("/a/..", Some("/")),
            ("/a//", Some("/a/")),
            ("/.hidden", None),
            ("/a..b", None),
        ];
        for (path, want) in table {
            let got = clean_path(path.as_bytes());
            assert_eq!(got.as_deref(), want.map(str::as_bytes), "{path}");
        }
    }
}
