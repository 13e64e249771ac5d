//! Which file a request path names under a `--static-map` prefix (pure).
//!
//! The prefix matches whole path segments (`/static` matches `/static/a.css`, not
//! `/staticx.css`, unlike the original's string prefix). The remainder must be a plain relative
//! path: no `.`/`..` or empty segments, no NUL byte, and the raw target must not have encoded a
//! slash (`%2F` would let one segment pose as two). Anything else is not a static path and goes
//! on to the app. Containment of links is checked when the file is opened (`files.rs`).

/// The path relative to the mapped folder, or `None` when `path` is not under `prefix` or is not
/// a plain file path. `prefix` has no trailing slash (`/` is empty).
pub fn relative<'a>(prefix: &[u8], path: &'a [u8]) -> Option<&'a [u8]> {
    let rest = path.strip_prefix(prefix)?;
    let rel = rest.strip_prefix(b"/")?;
    if rel.is_empty() || rel.contains(&0) {
        return None;
    }
    let plain = rel.split(|&b| b == b'/').all(|seg| !matches!(seg, b"" | b"." | b".."));
    plain.then_some(rel)
}

/// Whether a raw request target encodes a slash or a NUL (`%2F`, `%00`): such paths are never
/// static.
pub fn has_encoded_separator(raw_path: &[u8]) -> bool {
    raw_path.windows(3).any(|w| w[0] == b'%' && ((w[1] == b'2' && w[2] | 0x20 == b'f') || w[1..] == *b"00"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_whole_segments() {
        let table: &[(&str, &str, Option<&str>)] = &[
            ("/static", "/static/a.css", Some("a.css")),
            ("/static", "/static/img/x.png", Some("img/x.png")),
            ("/static", "/staticx.css", None),
            ("/static", "/static", None),
            ("/static", "/static/", None),
            ("/static", "/other/a.css", None),
            ("", "/a.txt", Some("a.txt")),
            ("", "/", None),
            ("", "/dir/", None),
            ("", "/a/../b", None),
            ("", "/a/./b", None),
            ("", "/a//b", None),
            ("", "/..", None),
            ("", "/a\0b", None),
            ("/media", "/mediaimg/x.png", None),
            ("/a/b", "/a/b/c", Some("c")),
            ("/a/b", "/a/bc", None),
        ];
        for (prefix, path, want) in table {
            let got = relative(prefix.as_bytes(), path.as_bytes());
            assert_eq!(got, want.map(str::as_bytes), "{prefix} {path}");
        }
    }

    #[test]
    fn encoded_separators() {
        for (raw, want) in [
            ("/a%2Fb", true),
            ("/a%2fb", true),
            ("/a%00", true),
            ("/a%20b", false),
            ("/a%2e%2e", false),
            ("/plain", false),
            ("/%2", false),
        ] {
            assert_eq!(has_encoded_separator(raw.as_bytes()), want, "{raw}");
        }
    }
}
