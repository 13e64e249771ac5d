//! Cache keys and `Vary` selections (pure; SPEC §12.1, §12.3 with DESIGN decision 9).
//!
//! An entry is found by its key (host, decoded path and raw query) and chosen among the entries
//! under that key by the request's values of the header fields the response varied on. With
//! `X-WSGo-Vary-Cookies: a, b`, `Vary: Cookie` only looks at the cookies `a` and `b`: other
//! cookies, their order and the spacing of the Cookie header don't matter.

use super::policy::{list, trim};

/// The key of a request: lower-case host, decoded path, `?`, raw query.
pub fn key(host: &[u8], path: &[u8], query: Option<&[u8]>) -> Vec<u8> {
    let mut k = Vec::with_capacity(host.len() + path.len() + query.map_or(0, <[u8]>::len) + 2);
    k.extend(host.iter().map(u8::to_ascii_lowercase));
    k.push(b' ');
    k.extend_from_slice(path);
    if let Some(q) = query {
        k.push(b'?');
        k.extend_from_slice(q);
    }
    k
}

/// The cookie names listed in an `X-WSGo-Vary-Cookies` value.
pub fn cookie_names(value: &[u8]) -> Vec<Vec<u8>> {
    list(value).map(<[u8]>::to_vec).collect()
}

/// What a request presents for one varied-on field: its values joined with `, `, or for
/// `cookie` with a cookie list, the listed cookies in list order. `None`: the field is absent.
pub fn selection(name: &[u8], values: &[&[u8]], cookies: Option<&[Vec<u8>]>) -> Option<Vec<u8>> {
    if let (b"cookie", Some(names)) = (name, cookies) {
        let mut out = Vec::new();
        for wanted in names {
            let found = values
                .iter()
                .flat_map(|v| v.split(|&b| b == b';'))
                .filter_map(|pair| {
                    let pair = trim(pair);
                    let eq = pair.iter().position(|&b| b == b'=')?;
                    (trim(&pair[..eq]) == wanted.as_slice()).then(|| trim(&pair[eq + 1..]))
                })
                .next();
            if let Some(v) = found {
                if !out.is_empty() {
                    out.extend_from_slice(b"; ");
                }
                out.extend_from_slice(wanted);
                out.push(b'=');
                out.extend_from_slice(v);
            }
        }
        return Some(out);
    }
    if values.is_empty() {
        return None;
    }
    Some(values.join(&b", "[..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(key(b"Example.COM:8000", b"/a b", Some(b"x=1")), b"example.com:8000 /a b?x=1");
        assert_eq!(key(b"h", b"/", None), b"h /");
        assert_ne!(key(b"h", b"/", Some(b"")), key(b"h", b"/", None));
    }

    #[test]
    fn cookie_selections() {
        let names = cookie_names(b"sessionid,  lang ");
        assert_eq!(names, [b"sessionid".to_vec(), b"lang".to_vec()]);
        let sel = |values: &[&str]| {
            let v: Vec<&[u8]> = values.iter().map(|s| s.as_bytes()).collect();
            selection(b"cookie", &v, Some(&names)).map(|s| String::from_utf8(s).unwrap())
        };
        assert_eq!(sel(&["sessionid=1; track=9"]).as_deref(), Some("sessionid=1"));
        assert_eq!(sel(&["track=10;sessionid=1"]).as_deref(), Some("sessionid=1"));
        assert_eq!(sel(&["lang=fr; sessionid=1", "x=y"]).as_deref(), Some("sessionid=1; lang=fr"));
        assert_eq!(sel(&["sessionid=1", "lang=fr"]).as_deref(), Some("sessionid=1; lang=fr"));
        assert_eq!(sel(&["sessionid=2"]).as_deref(), Some("sessionid=2"));
        assert_eq!(sel(&["other=1"]).as_deref(), Some(""));
        assert_eq!(sel(&[]).as_deref(), Some(""));
        // A name that merely starts with a listed one is another cookie.
        assert_eq!(sel(&["sessionidx=1"]).as_deref(), Some(""));
    }

    #[test]
    fn plain_selections() {
        assert_eq!(selection(b"accept-language", &[b"fr", b"en"], None), Some(b"fr, en".to_vec()));
        assert_eq!(selection(b"accept-language", &[], None), None);
        // Without a cookie list, the whole Cookie header counts.
        assert_eq!(selection(b"cookie", &[b"a=1; b=2"], None), Some(b"a=1; b=2".to_vec()));
    }
}
