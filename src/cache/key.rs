//! Cache keys and `Vary` selections (pure; README.md, "Response cache").
//!
//! An entry is found by its key (scheme, host, raw path and raw query) and chosen among the entries
//! under that key by the request's values of the header fields the response varied on. With
//! `X-WSGo-Vary-Cookies: a, b`, `Vary: Cookie` only looks at the cookies `a` and `b`: other
//! cookies, their order and the spacing of the Cookie header don't matter.

use super::policy::{list, trim};

/// The key of a request: the scheme, the lower-case host, the raw path (as sent, not decoded)
/// and the raw query, each length-prefixed, so that no two different requests share a key: `/p%3Fx=1`
/// and `/p?x=1` differ (the query kept apart from the path), and so do `http` and `https`.
pub fn key(https: bool, host: &[u8], raw_path: &[u8], query: Option<&[u8]>) -> Vec<u8> {
    let mut k = Vec::with_capacity(host.len() + raw_path.len() + query.map_or(0, <[u8]>::len) + 14);
    k.push(u8::from(https));
    let field = |k: &mut Vec<u8>, bytes: &[u8]| k.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    field(&mut k, host);
    k.extend(host.iter().map(u8::to_ascii_lowercase));
    field(&mut k, raw_path);
    k.extend_from_slice(raw_path);
    match query {
        None => k.push(0),
        Some(q) => {
            k.push(1);
            field(&mut k, q);
            k.extend_from_slice(q);
        }
    }
    k
}

/// The cookie names listed in an `X-WSGo-Vary-Cookies` value.
pub fn cookie_names(value: &[u8]) -> Vec<Vec<u8>> {
    list(value).map(<[u8]>::to_vec).collect()
}

/// What a request presents for one field a response varied on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// The field is absent.
    Absent,
    /// The request's values, as compared.
    Value(Vec<u8>),
    /// The named cookies cannot be read here the way the frameworks read them: the request
    /// neither uses nor fills the cache (see [`selection`]).
    Ambiguous,
}

impl Selection {
    /// The stored form of a usable selection (`None` for [`Selection::Ambiguous`]).
    pub fn stored(self) -> Option<Option<Vec<u8>>> {
        match self {
            Selection::Absent => Some(None),
            Selection::Value(v) => Some(Some(v)),
            Selection::Ambiguous => None,
        }
    }

    /// Whether this matches a stored selection.
    pub fn matches(&self, stored: &Option<Vec<u8>>) -> bool {
        match (self, stored) {
            (Selection::Absent, None) => true,
            (Selection::Value(v), Some(s)) => v == s,
            _ => false,
        }
    }
}

/// What a request presents for one varied-on field: its values joined with `, `, or for
/// `cookie` with a cookie list, the listed cookies in list order.
///
/// With a cookie list the selection must pick the cookies Django and Werkzeug will read, or a
/// response could be stored under the selection of another (cache poisoning: `lang=fr;
/// lang=de` reads `de` in Django, which keeps the last, and `fr` in Werkzeug, which keeps the
/// first). So the Cookie field is [`Selection::Ambiguous`] when any pair's name is not a plain
/// token (`\xa0`, which Python's `strip()` removes, controls, spaces inside), a pair has no
/// `=`, a value holds a quote other than a surrounding pair (Werkzeug reads `;` inside quotes
/// as part of the value), or a listed name appears twice.
pub fn selection(name: &[u8], values: &[&[u8]], cookies: Option<&[Vec<u8>]>) -> Selection {
    if let (b"cookie", Some(names)) = (name, cookies) {
        let mut found: Vec<Option<&[u8]>> = vec![None; names.len()];
        for pair in values.iter().flat_map(|v| v.split(|&b| b == b';')) {
            let pair = trim(pair);
            if pair.is_empty() {
                continue;
            }
            let Some(eq) = pair.iter().position(|&b| b == b'=') else { return Selection::Ambiguous };
            let (n, v) = (trim(&pair[..eq]), trim(&pair[eq + 1..]));
            let quoted = v.len() >= 2 && v[0] == b'"' && v[v.len() - 1] == b'"';
            let inner = if quoted { &v[1..v.len() - 1] } else { v };
            if !crate::http::is_token(n) || inner.contains(&b'"') {
                return Selection::Ambiguous;
            }
            if let Some(i) = names.iter().position(|w| w.as_slice() == n) {
                if found[i].is_some() {
                    return Selection::Ambiguous;
                }
                found[i] = Some(v);
            }
        }
        let mut out = Vec::new();
        for (wanted, v) in names.iter().zip(found) {
            if let Some(v) = v {
                if !out.is_empty() {
                    out.extend_from_slice(b"; ");
                }
                out.extend_from_slice(wanted);
                out.push(b'=');
                out.extend_from_slice(v);
            }
        }
        return Selection::Value(out);
    }
    if values.is_empty() {
        return Selection::Absent;
    }
    Selection::Value(values.join(&b", "[..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_never_collide() {
        // Pairs of different requests: path, query, scheme and host are kept apart.
        type Req = (bool, &'static str, &'static str, Option<&'static str>);
        let table: &[(Req, Req)] = &[
            ((false, "h", "/p%3Fx=1", None), (false, "h", "/p", Some("x=1"))),
            ((false, "h", "/p?x", None), (false, "h", "/p", Some("x"))),
            ((false, "h", "/", Some("")), (false, "h", "/", None)),
            ((false, "h", "/a", None), (true, "h", "/a", None)),
            ((false, "h /a", "", None), (false, "h", " /a", None)),
            ((false, "a", "/b", Some("c")), (false, "a/", "b", Some("c"))),
            ((false, "h", "/a%2Fb", None), (false, "h", "/a/b", None)),
            ((false, "h", "/x", Some("a")), (false, "h", "/x\x01\x00\x00\x00a", None)),
        ];
        for (a, b) in table {
            assert_ne!(
                key(a.0, a.1.as_bytes(), a.2.as_bytes(), a.3.map(str::as_bytes)),
                key(b.0, b.1.as_bytes(), b.2.as_bytes(), b.3.map(str::as_bytes)),
                "{a:?} {b:?}"
            );
        }
        // The host's case does not matter.
        assert_eq!(key(false, b"Example.COM", b"/", None), key(false, b"example.com", b"/", None));
    }

    fn sel(names: &[Vec<u8>], values: &[&str]) -> Selection {
        let v: Vec<&[u8]> = values.iter().map(|s| s.as_bytes()).collect();
        selection(b"cookie", &v, Some(names))
    }

    fn val(s: &str) -> Selection {
        Selection::Value(s.as_bytes().to_vec())
    }

    #[test]
    fn cookie_selections() {
        let names = cookie_names(b"sessionid,  lang ");
        assert_eq!(names, [b"sessionid".to_vec(), b"lang".to_vec()]);
        assert_eq!(sel(&names, &["sessionid=1; track=9"]), val("sessionid=1"));
        assert_eq!(sel(&names, &["track=10;sessionid=1"]), val("sessionid=1"));
        assert_eq!(sel(&names, &["lang=fr; sessionid=1", "x=y"]), val("sessionid=1; lang=fr"));
        assert_eq!(sel(&names, &["sessionid=1", "lang=fr"]), val("sessionid=1; lang=fr"));
        assert_eq!(sel(&names, &["sessionid=2"]), val("sessionid=2"));
        assert_eq!(sel(&names, &["other=1"]), val(""));
        assert_eq!(sel(&names, &[]), val(""));
        assert_eq!(sel(&names, &["lang=\"fr\""]), val("lang=\"fr\""));
        assert_eq!(sel(&names, &["a=b=c; lang=fr;"]), val("lang=fr"));
        // A name that merely starts with a listed one is another cookie.
        assert_eq!(sel(&names, &["sessionidx=1"]), val(""));
    }

    #[test]
    fn cookies_the_frameworks_read_differently_are_ambiguous() {
        let names = cookie_names(b"lang");
        for header in [
            "lang=fr; lang=de",
            "lang=fr",
            "lang=de",
            "\u{a0}lang=de",
            "lang\u{a0}=de",
            "la ng=de",
            "lang",
            "x; lang=de",
            "a=\"x;lang=de\"",
            "lang=d\"e",
            "x\x01=1; lang=de",
        ] {
            let got = match header {
                "lang=fr" | "lang=de" => continue,
                h => sel(&names, &[h]),
            };
            assert_eq!(got, Selection::Ambiguous, "{header:?}");
        }
        // Across two Cookie fields too.
        assert_eq!(sel(&names, &["lang=fr", "lang=de"]), Selection::Ambiguous);
        // Without a cookie list the whole field is the selection: nothing to misread.
        assert_eq!(selection(b"cookie", &[b"lang=fr; lang=de"], None), val("lang=fr; lang=de"));
    }

    #[test]
    fn plain_selections() {
        assert_eq!(selection(b"accept-language", &[b"fr", b"en"], None), val("fr, en"));
        assert_eq!(selection(b"accept-language", &[], None), Selection::Absent);
        assert_eq!(selection(b"cookie", &[b"a=1; b=2"], None), val("a=1; b=2"));
        assert!(val("x").matches(&Some(b"x".to_vec())) && Selection::Absent.matches(&None));
        assert!(!Selection::Ambiguous.matches(&None) && !Selection::Absent.matches(&Some(Vec::new())));
    }
}
