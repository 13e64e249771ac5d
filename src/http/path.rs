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

/// Bytes a `Location` path carries percent-encoded: controls, space, the delimiters and unsafe
/// characters of RFC 3986 §2.2/appendix C that would end or change the path (`%`, `?`, `#`,
/// `"`, `<`, `>`, `\`, `^`, `` ` ``, `{`, `|`, `}`), and every byte from 0x80. Whatever the
/// decoded path holds, the header line stays one line of visible ASCII.
const ENCODE_IN_LOCATION: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b <= b' '
            || b >= 0x7f
            || matches!(
                b,
                b'"' | b'#' | b'%' | b'<' | b'>' | b'?' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}'
            );
        i += 1;
    }
    t
};

/// Bytes a query keeps encoded in a `Location`: only what is not visible ASCII (httparse lets
/// bytes from 0x80 through in a target).
const ENCODE_IN_QUERY: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = i <= 0x20 || i >= 0x7f;
        i += 1;
    }
    t
};

/// The `Location` of a redirect to the canonical form of a decoded path: the path
/// percent-encoded (see [`ENCODE_IN_LOCATION`]), then `?` and the query as received (any byte
/// outside visible ASCII in it encoded too).
///
/// The result never starts with `//` or `/\`, which browsers read as another host: the clean
/// path has no empty segment, and a `\` is encoded.
pub fn encode_location(clean: &[u8], query: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(clean.len() + query.map_or(0, |q| q.len() + 1) + 8);
    push_encoded(&mut out, clean, &ENCODE_IN_LOCATION);
    if out.starts_with(b"//") {
        // Not produced by `clean_path`; kept impossible here whatever the caller passes.
        out.splice(1..2, *b"%2F");
    }
    if let Some(q) = query {
        out.push(b'?');
        push_encoded(&mut out, q, &ENCODE_IN_QUERY);
    }
    out
}

fn push_encoded(out: &mut Vec<u8>, bytes: &[u8], encode: &[bool; 256]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if encode[b as usize] {
            out.extend_from_slice(&[b'%', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
        } else {
            out.push(b);
        }
    }
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

    /// The redirect of a raw path: decoded, cleaned, then encoded for `Location`.
    fn location(raw: &str, query: Option<&str>) -> Option<String> {
        let decoded = percent_decode(raw.as_bytes()).unwrap();
        let decoded = decoded.as_deref().unwrap_or(raw.as_bytes());
        let clean = clean_path(decoded)?;
        Some(String::from_utf8(encode_location(&clean, query.map(str::as_bytes))).unwrap())
    }

    #[test]
    fn locations_are_encoded() {
        let table: &[(&str, Option<&str>, &str)] = &[
            // Header injection through encoded CR LF.
            (
                "//%0d%0aSet-Cookie:%20sessionid=evil;%20Path=/",
                None,
                "/%0D%0ASet-Cookie:%20sessionid=evil;%20Path=/",
            ),
            ("//a%0Ab", None, "/a%0Ab"),
            ("//%00%01%1f%7f", None, "/%00%01%1F%7F"),
            // Open redirects: a backslash or an encoded slash never makes `//` or `/\`.
            ("/.%2f%5cevil.com", None, "/%5Cevil.com"),
            ("/./%5c%5cevil.com", None, "/%5C%5Cevil.com"),
            ("/..%2f%2fevil.com", None, "/evil.com"),
            ("/.%2F%2Fevil.com/", None, "/evil.com/"),
            ("/x/..%2f%5c%5cevil", None, "/%5C%5Cevil"),
            ("//%5cevil.com", None, "/%5Cevil.com"),
            // Delimiters and unsafe bytes inside the path; the query as received.
            ("//a%3Fb%23c%25d", Some("q=%41&r"), "/a%3Fb%23c%25d?q=%41&r"),
            ("//a%20b%22%3C%3E%5E%60%7B%7C%7D", None, "/a%20b%22%3C%3E%5E%60%7B%7C%7D"),
            ("//caf%C3%A9", None, "/caf%C3%A9"),
            ("/a/../b", Some(""), "/b?"),
            ("/a/./b/", Some("x=1"), "/a/b/?x=1"),
        ];
        for (raw, query, want) in table {
            assert_eq!(location(raw, *query).as_deref(), Some(*want), "{raw}");
        }
        // Whatever the decoded path, the result is visible ASCII and never leaves the site.
        for b in 0..=255u8 {
            for path in [vec![b'/', b'/', b], vec![b'/', b, b'/', b'/'], vec![b'/', b, b, b'/', b'.']] {
                let Some(clean) = clean_path(&path) else { continue };
                let loc = encode_location(&clean, Some(&[b, b'\r', b'\n']));
                assert!(loc.iter().all(|c| (0x21..0x7f).contains(c)), "{path:?} -> {loc:?}");
                assert!(!loc.starts_with(b"//") && !loc.starts_with(b"/\\"), "{path:?} -> {loc:?}");
            }
        }
        // A caller's `//` is defused too.
        assert_eq!(encode_location(b"//evil.com", None), b"/%2Fevil.com");
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
