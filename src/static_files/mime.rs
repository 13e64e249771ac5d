//! Content-Type by file extension: a built-in table for the web's common types (text types with
//! `charset=utf-8`, as the original's Go table), then the host's `/etc/mime.types`, else
//! `application/octet-stream`. Contents are never sniffed: what a file is called decides.

use std::collections::HashMap;
use std::sync::OnceLock;

const BUILT_IN: &[(&str, &str)] = &[
    ("html", "text/html; charset=utf-8"),
    ("htm", "text/html; charset=utf-8"),
    ("css", "text/css; charset=utf-8"),
    ("js", "text/javascript; charset=utf-8"),
    ("mjs", "text/javascript; charset=utf-8"),
    ("json", "application/json"),
    ("map", "application/json"),
    ("txt", "text/plain; charset=utf-8"),
    ("csv", "text/csv; charset=utf-8"),
    ("md", "text/markdown; charset=utf-8"),
    ("xml", "text/xml; charset=utf-8"),
    ("svg", "image/svg+xml"),
    ("png", "image/png"),
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("gif", "image/gif"),
    ("webp", "image/webp"),
    ("avif", "image/avif"),
    ("ico", "image/x-icon"),
    ("bmp", "image/bmp"),
    ("woff", "font/woff"),
    ("woff2", "font/woff2"),
    ("ttf", "font/ttf"),
    ("otf", "font/otf"),
    ("pdf", "application/pdf"),
    ("wasm", "application/wasm"),
    ("zip", "application/zip"),
    ("gz", "application/gzip"),
    ("mp4", "video/mp4"),
    ("webm", "video/webm"),
    ("mp3", "audio/mpeg"),
    ("ogg", "audio/ogg"),
    ("wav", "audio/wav"),
    ("py", "text/x-python; charset=utf-8"),
    ("webmanifest", "application/manifest+json"),
];

const FALLBACK: &str = "application/octet-stream";

fn system_types() -> &'static HashMap<String, String> {
    static TYPES: OnceLock<HashMap<String, String>> = OnceLock::new();
    TYPES.get_or_init(|| {
        let text = std::fs::read_to_string("/etc/mime.types").unwrap_or_default();
        parse_mime_types(&text)
    })
}

/// Parses the `type ext ext...` lines of a mime.types file.
fn parse_mime_types(text: &str) -> HashMap<String, String> {
    let mut map = HashMap::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        let Some(ty) = words.next() else { continue };
        // It goes into a response head: `type/subtype` of token characters only.
        let token = |t: &str| {
            !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        };
        if !ty.split_once('/').is_some_and(|(a, b)| token(a) && token(b)) {
            continue;
        }
        for ext in words {
            let ty = if ty.starts_with("text/") { format!("{ty}; charset=utf-8") } else { ty.to_string() };
            map.entry(ext.to_ascii_lowercase()).or_insert(ty);
        }
    }
    map
}

/// Reads the host's table now, so the first request does not do file I/O on a core thread.
pub fn preload() {
    system_types();
}

/// The Content-Type for a file name.
pub fn content_type(name: &[u8]) -> &'static str {
    let Some(dot) = name.iter().rposition(|&b| b == b'.') else { return FALLBACK };
    if name[dot + 1..].contains(&b'/') {
        return FALLBACK;
    }
    let Ok(ext) = std::str::from_utf8(&name[dot + 1..]) else { return FALLBACK };
    let ext = ext.to_ascii_lowercase();
    if let Some((_, ty)) = BUILT_IN.iter().find(|(e, _)| *e == ext) {
        return ty;
    }
    system_types().get(&ext).map_or(FALLBACK, String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_by_extension() {
        let table: &[(&str, &str)] = &[
            ("a.txt", "text/plain; charset=utf-8"),
            ("dir/style.CSS", "text/css; charset=utf-8"),
            ("app.js", "text/javascript; charset=utf-8"),
            ("x.png", "image/png"),
            ("noext", "application/octet-stream"),
            ("dir.d/noext", "application/octet-stream"),
            ("a.unknownext", "application/octet-stream"),
            ("a.tar.gz", "application/gzip"),
        ];
        for (name, want) in table {
            assert_eq!(content_type(name.as_bytes()), *want, "{name}");
        }
    }

    #[test]
    fn mime_types_file() {
        let map = parse_mime_types(
            "# comment\ntext/x-foo foo fo\napplication/x-bar bar # trailing\n\nbad\x01/x evil\nnoslash ns\n",
        );
        assert_eq!(map.get("foo").map(String::as_str), Some("text/x-foo; charset=utf-8"));
        assert_eq!(map.get("fo").map(String::as_str), Some("text/x-foo; charset=utf-8"));
        assert_eq!(map.get("bar").map(String::as_str), Some("application/x-bar"));
        assert_eq!(map.len(), 3);
    }
}
