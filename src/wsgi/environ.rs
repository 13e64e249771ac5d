//! The WSGI environ (PEP 3333; README.md, "The environ"), built per request.
//!
//! The constant keys live in a base dict; the entries that depend only on which listener a
//! request came to and which host it names (`SERVER_NAME`, `SERVER_PORT`, `HTTP_HOST`,
//! `SERVER_PROTOCOL`, `wsgi.url_scheme`) are set in a copy of it kept per thread for the last few
//! such origins ([`PREPARED_SLOTS`]), and that copy is copied per request: a request to a host seen
//! before sets only what is its own. The client's address is not part of an origin (a public
//! server sees many): `REMOTE_ADDR` is set per request, its text kept for the thread's last
//! client. Header keys (`HTTP_*`) are interned once per thread and reused. Values are decoded as
//! latin-1, as PEP 3333 requires.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};
use pyo3::{ffi, intern};

use crate::http::RequestHead;
use crate::http::response::{decimal, push_ip, push_u64};

/// Most distinct header keys kept interned per thread (a client can invent names endlessly).
const MAX_CACHED_KEYS: usize = 512;
/// Longest header name whose key is kept: real names are short, and a client must not make
/// each thread keep 512 keys of tens of KiB.
const MAX_KEPT_NAME: usize = 64;
/// Origins (local address, Host, protocol, scheme) whose prepared environ each thread keeps. A
/// client inventing Host values only replaces entries: the cost of a miss is the entries being
/// set, as they would be without the cache.
pub const PREPARED_SLOTS: usize = 8;
/// Longest Host whose prepared environ is kept (a DNS name is at most 253 bytes; the head may
/// carry a Host of tens of KiB, which is answered but not kept).
const MAX_KEPT_HOST: usize = 300;

/// What the environ needs beyond the request head.
pub struct RequestInfo<'a> {
    /// The request head.
    pub head: &'a RequestHead,
    /// The peer (`REMOTE_ADDR`, `REMOTE_PORT`; for a unix socket `REMOTE_ADDR` is empty and
    /// `REMOTE_PORT` absent, as gunicorn sets them).
    pub peer: crate::client::Peer,
    /// The local address (`SERVER_NAME` without a Host, `SERVER_PORT`).
    pub local: SocketAddr,
    /// A trusted proxy says the client used https.
    pub https: bool,
    /// A retried parked request: what `notify_parked` passed (`HTTP_X_WSGO_PARK_ARG`).
    pub park_arg: Option<&'a [u8]>,
}

/// The constant part of every environ.
///
/// It also holds every key each request sets (with placeholder values): the per-request copy then
/// starts at its final size and replaces values instead of growing the dict.
pub fn base_environ(py: Python<'_>, multiprocess: bool) -> PyResult<Py<PyDict>> {
    let d = PyDict::new(py);
    let empty = intern!(py, "");
    for key in [
        intern!(py, "REQUEST_METHOD"),
        intern!(py, "PATH_INFO"),
        intern!(py, "QUERY_STRING"),
        intern!(py, "SERVER_PROTOCOL"),
        intern!(py, "REMOTE_ADDR"),
        intern!(py, "REMOTE_PORT"),
        intern!(py, "SERVER_NAME"),
        intern!(py, "SERVER_PORT"),
        intern!(py, "HTTP_HOST"),
        intern!(py, "wsgi.url_scheme"),
        intern!(py, "wsgi.input"),
        intern!(py, "wsgi.errors"),
        intern!(py, "CONTENT_TYPE"),
        intern!(py, "CONTENT_LENGTH"),
    ] {
        d.set_item(key, empty)?;
    }
    d.set_item(intern!(py, "SCRIPT_NAME"), empty)?;
    d.set_item(intern!(py, "wsgi.version"), PyTuple::new(py, [1, 0])?)?;
    d.set_item(intern!(py, "wsgi.multithread"), true)?;
    d.set_item(intern!(py, "wsgi.multiprocess"), multiprocess)?;
    d.set_item(intern!(py, "wsgi.run_once"), false)?;
    d.set_item(intern!(py, "wsgi.input_terminated"), true)?;
    Ok(d.unbind())
}

/// A `str` from bytes decoded as latin-1 (every byte is one code point).
pub fn latin1<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyString>> {
    // SAFETY: the pointer and length describe a live slice; PyUnicode_DecodeLatin1 copies it and
    // returns a new reference or NULL with an exception set, which from_owned_ptr_or_err handles.
    unsafe {
        let ptr = ffi::PyUnicode_DecodeLatin1(
            bytes.as_ptr().cast(),
            bytes.len() as ffi::Py_ssize_t,
            std::ptr::null(),
        );
        Ok(Bound::from_owned_ptr_or_err(py, ptr)?.cast_into_unchecked())
    }
}

thread_local! {
    static KEYS: RefCell<HashMap<Box<[u8]>, Py<PyString>>> = RefCell::new(HashMap::new());
    static PREPARED: RefCell<Vec<Prepared>> = const { RefCell::new(Vec::new()) };
    /// The last client address's `REMOTE_ADDR` text.
    static REMOTE: RefCell<Option<(std::net::IpAddr, Py<PyString>)>> = const { RefCell::new(None) };
}

/// What the entries of a [`Prepared`] environ depend on. The client is not among them
/// (`REMOTE_ADDR` and `REMOTE_PORT` are set per request), only whether it came over a unix
/// socket (which has neither).
#[derive(PartialEq)]
struct Origin {
    unix: bool,
    local: SocketAddr,
    https: bool,
    minor: u8,
    host: Box<[u8]>,
}

impl Origin {
    fn of(req: &RequestInfo<'_>) -> Origin {
        let unix = matches!(req.peer, crate::client::Peer::Unix);
        Origin {
            unix,
            local: req.local,
            https: req.https,
            minor: req.head.minor,
            host: host_of(req.head).into(),
        }
    }

    fn matches(&self, req: &RequestInfo<'_>) -> bool {
        self.unix == matches!(req.peer, crate::client::Peer::Unix)
            && self.local == req.local
            && self.https == req.https
            && self.minor == req.head.minor
            && *self.host == *host_of(req.head)
    }
}

/// The request's Host value (empty without one).
fn host_of(head: &RequestHead) -> &[u8] {
    head.host.map(|h| head.bytes(h)).unwrap_or(b"")
}

/// `REMOTE_ADDR` for `ip`: the thread's last client's text when it is the same client.
fn remote_addr<'py>(py: Python<'py>, ip: std::net::IpAddr) -> PyResult<Bound<'py, PyString>> {
    REMOTE.with(|last| {
        let mut last = last.borrow_mut();
        if let Some((seen, text)) = last.as_ref()
            && *seen == ip
        {
            return Ok(text.bind(py).clone());
        }
        let mut text = Vec::with_capacity(48);
        push_ip(&mut text, ip);
        let text = latin1(py, &text)?;
        *last = Some((ip, text.clone().unbind()));
        Ok(text)
    })
}

/// A port's decimal digits as a `str`, without allocating for the digits.
fn port_str(py: Python<'_>, port: u16) -> PyResult<Bound<'_, PyString>> {
    latin1(py, decimal(u64::from(port), &mut [0; 20]))
}

/// The base environ with one origin's entries set, and the `wsgi.errors` it holds.
struct Prepared {
    origin: Origin,
    dict: Py<PyDict>,
    errors: Py<PyAny>,
}

/// The prepared environ for the request's origin, made (and kept, replacing the least recently
/// made) when this thread has none.
fn prepared<'py>(py: Python<'py>, base: &Py<PyDict>, req: &RequestInfo<'_>) -> PyResult<Bound<'py, PyDict>> {
    let errors = current_stderr(py)?;
    PREPARED.with(|slots| {
        let mut slots = slots.borrow_mut();
        if let Some(p) = slots.iter_mut().find(|p| p.origin.matches(req)) {
            let dict = p.dict.bind(py);
            // The app may have replaced sys.stderr since.
            if !p.errors.bind(py).is(&errors) {
                dict.set_item(intern!(py, "wsgi.errors"), &errors)?;
                p.errors = errors.unbind();
            }
            return Ok(dict.clone());
        }
        let dict = base.bind(py).copy()?;
        set_origin(py, &dict, req)?;
        dict.set_item(intern!(py, "wsgi.errors"), &errors)?;
        if host_of(req.head).len() > MAX_KEPT_HOST {
            return Ok(dict);
        }
        if slots.len() == PREPARED_SLOTS {
            slots.pop();
        }
        slots.insert(
            0,
            Prepared { origin: Origin::of(req), dict: dict.clone().unbind(), errors: errors.unbind() },
        );
        Ok(dict)
    })
}

/// The entries that depend only on the request's origin.
fn set_origin(py: Python<'_>, env: &Bound<'_, PyDict>, req: &RequestInfo<'_>) -> PyResult<()> {
    let head = req.head;
    let protocol = if head.minor == 1 { intern!(py, "HTTP/1.1") } else { intern!(py, "HTTP/1.0") };
    env.set_item(intern!(py, "SERVER_PROTOCOL"), protocol)?;
    if matches!(req.peer, crate::client::Peer::Unix) {
        // The base holds "" for REMOTE_ADDR, set per request for a TCP client.
        env.del_item(intern!(py, "REMOTE_PORT"))?;
    }
    let host = host_of(head);
    let mut text = Vec::with_capacity(48);
    if host.is_empty() {
        push_ip(&mut text, req.local.ip());
    } else {
        text.extend_from_slice(host_without_port(host));
    }
    env.set_item(intern!(py, "SERVER_NAME"), latin1(py, &text)?)?;
    text.clear();
    match req.local.port() {
        // A unix socket: the port the client asked for (its proxy's), else HTTP's.
        0 => text.extend_from_slice(host_port(host).unwrap_or(b"80")),
        port => push_u64(&mut text, u64::from(port)),
    }
    env.set_item(intern!(py, "SERVER_PORT"), latin1(py, &text)?)?;
    env.set_item(intern!(py, "HTTP_HOST"), latin1(py, host)?)?;
    let scheme = if req.https { intern!(py, "https") } else { intern!(py, "http") };
    env.set_item(intern!(py, "wsgi.url_scheme"), scheme)?;
    Ok(())
}

/// `sys.stderr` as it is now (the app may have replaced it).
/// `sys.stderr` as it is now (the app may replace it), looked up in the `sys` module's dict,
/// kept per thread, with an interned key: PySys_GetObject built a new key string per call.
fn current_stderr(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    thread_local! {
        static SYS_DICT: RefCell<Option<Py<PyDict>>> = const { RefCell::new(None) };
    }
    let dict = SYS_DICT.with(|d| -> PyResult<Py<PyDict>> {
        if let Some(dict) = d.borrow().as_ref() {
            return Ok(dict.clone_ref(py));
        }
        let dict = py.import("sys")?.dict().unbind();
        *d.borrow_mut() = Some(dict.clone_ref(py));
        Ok(dict)
    })?;
    dict.bind(py)
        .get_item(intern!(py, "stderr"))?
        .ok_or_else(|| pyo3::exceptions::PyRuntimeError::new_err("sys.stderr is not set"))
}

/// `X-Foo-Bar` -> `HTTP_X_FOO_BAR`, interned and cached per thread.
fn header_key<'py>(py: Python<'py>, name: &[u8]) -> Bound<'py, PyString> {
    KEYS.with(|keys| {
        if let Some(k) = keys.borrow().get(name) {
            return k.bind(py).clone();
        }
        let s = PyString::intern(py, &http_key(name));
        let mut keys = keys.borrow_mut();
        if keys.len() < MAX_CACHED_KEYS && name.len() <= MAX_KEPT_NAME {
            keys.insert(name.into(), s.clone().unbind());
        }
        s
    })
}

/// How the value of a repeated field is joined (RFC 9110 §5.3; cookies by RFC 6265 §5.4).
fn separator(name: &[u8]) -> &'static [u8] {
    if name.eq_ignore_ascii_case(b"cookie") { b"; " } else { b", " }
}

/// Fields the environ does not carry as `HTTP_*`.
fn skipped(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"content-type")
        || name.eq_ignore_ascii_case(b"content-length")
        || name.eq_ignore_ascii_case(b"transfer-encoding")
        || name.eq_ignore_ascii_case(b"host")
        // httpoxy: a `Proxy` header would become HTTP_PROXY, which HTTP clients read as config.
        || name.eq_ignore_ascii_case(b"proxy")
        // The server's own headers (X-WSGo-Park-Arg on a retry): clients cannot set them.
        || (name.len() >= 7 && name[..7].eq_ignore_ascii_case(b"x-wsgo-"))
}

/// Builds the environ for one request; `input` becomes `wsgi.input`.
pub fn build<'py>(
    py: Python<'py>,
    base: &Py<PyDict>,
    req: &RequestInfo<'_>,
    input: Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyDict>> {
    let head = req.head;
    let env = prepared(py, base, req)?.copy()?;
    env.set_item(intern!(py, "REQUEST_METHOD"), method_str(py, head.method())?)?;
    env.set_item(intern!(py, "PATH_INFO"), latin1(py, head.path().unwrap_or(b"/"))?)?;
    if let crate::client::Peer::Ip(peer) = req.peer {
        env.set_item(intern!(py, "REMOTE_ADDR"), remote_addr(py, peer.ip())?)?;
        env.set_item(intern!(py, "REMOTE_PORT"), port_str(py, peer.port())?)?;
    }
    env.set_item(intern!(py, "wsgi.input"), input)?;
    // The base holds "" for these: set only when the request has a value.
    let query = head.query().unwrap_or(b"");
    if !query.is_empty() {
        env.set_item(intern!(py, "QUERY_STRING"), latin1(py, query)?)?;
    }
    let (content_type, content_length) = content_fields(head);
    if !content_type.is_empty() {
        env.set_item(intern!(py, "CONTENT_TYPE"), latin1(py, content_type)?)?;
    }
    if !content_length.is_empty() {
        env.set_item(intern!(py, "CONTENT_LENGTH"), latin1(py, content_length)?)?;
    }
    for (name, value) in header_entries(head) {
        env.set_item(header_key(py, name), latin1(py, &value)?)?;
    }
    if let Some(arg) = req.park_arg {
        env.set_item(intern!(py, "HTTP_X_WSGO_PARK_ARG"), PyString::new(py, &String::from_utf8_lossy(arg)))?;
    }
    Ok(env)
}

/// The CGI name of a header field: `X-Foo-Bar` -> `HTTP_X_FOO_BAR`.
pub fn http_key(name: &[u8]) -> String {
    let mut key = String::with_capacity(name.len() + 5);
    key.push_str("HTTP_");
    // Header names are tokens (checked by the parser): ASCII only, never `_` (dropped there).
    key.extend(name.iter().map(|&b| if b == b'-' { '_' } else { b.to_ascii_uppercase() as char }));
    key
}

/// `CONTENT_TYPE` (first value) and `CONTENT_LENGTH` (as sent; empty when absent or chunked).
pub fn content_fields(head: &RequestHead) -> (&[u8], &[u8]) {
    let content_type = head.field(b"content-type").unwrap_or(b"");
    let content_length = match head.body {
        crate::http::BodyKind::Chunked => b"",
        _ => head.field(b"content-length").unwrap_or(b""),
    };
    (content_type, content_length)
}

/// The `HTTP_*` entries of a request, in first-seen order: repeated fields joined into one value
/// (`, `, or `; ` for cookies), and the fields the environ carries elsewhere left out.
pub fn header_entries(head: &RequestHead) -> Vec<(&[u8], Cow<'_, [u8]>)> {
    let mut out: Vec<(&[u8], Cow<'_, [u8]>)> = Vec::with_capacity(head.fields.len());
    for f in &head.fields {
        let name = head.bytes(f.name);
        if skipped(name) {
            continue;
        }
        let value = head.bytes(f.value);
        match out.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
            Some((_, joined)) => {
                let v = joined.to_mut();
                v.extend_from_slice(separator(name));
                v.extend_from_slice(value);
            }
            None => out.push((name, Cow::Borrowed(value))),
        }
    }
    out
}

fn method_str<'py>(py: Python<'py>, method: &[u8]) -> PyResult<Bound<'py, PyString>> {
    Ok(match method {
        b"GET" => intern!(py, "GET").clone(),
        b"POST" => intern!(py, "POST").clone(),
        b"HEAD" => intern!(py, "HEAD").clone(),
        b"PUT" => intern!(py, "PUT").clone(),
        b"DELETE" => intern!(py, "DELETE").clone(),
        b"PATCH" => intern!(py, "PATCH").clone(),
        b"OPTIONS" => intern!(py, "OPTIONS").clone(),
        other => latin1(py, other)?,
    })
}

/// The port of a Host value (`h:8000`, `[::1]:8000`), if it names one.
pub fn host_port(host: &[u8]) -> Option<&[u8]> {
    let after = &host[host_without_port(host).len()..];
    after.strip_prefix(b":").filter(|p| !p.is_empty())
}

/// A Host value without its port: `example.com:8000` -> `example.com`; `[::1]:80` -> `[::1]`.
pub fn host_without_port(host: &[u8]) -> &[u8] {
    if host.first() == Some(&b'[') {
        return match host.iter().position(|&b| b == b']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.iter().rposition(|&b| b == b':') {
        Some(colon) => &host[..colon],
        None => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_ports() {
        let table: &[(&str, &str, Option<&str>)] = &[
            ("example.com", "example.com", None),
            ("example.com:8000", "example.com", Some("8000")),
            ("[::1]:80", "[::1]", Some("80")),
            ("[::1]", "[::1]", None),
            ("127.0.0.1:1", "127.0.0.1", Some("1")),
            ("h:", "h", None),
        ];
        for (host, want, port) in table {
            assert_eq!(host_without_port(host.as_bytes()), want.as_bytes(), "{host}");
            assert_eq!(host_port(host.as_bytes()), port.map(str::as_bytes), "{host}");
        }
    }

    fn head(raw: &str) -> RequestHead {
        let (h, len) = crate::http::parse_head(raw.as_bytes()).unwrap().unwrap();
        h.attach(bytes::Bytes::copy_from_slice(&raw.as_bytes()[..len]))
    }

    #[test]
    fn maps_header_fields() {
        let h = head(
            "POST /x HTTP/1.1\r\nHost: h:1\r\nCookie: a=1\r\nX-Dup: 1\r\nContent-Type: text/plain\r\n\
             Cookie: b=2\r\nx-dup: 2\r\nProxy: evil\r\nContent-Length: 5\r\nX_Under: u\r\nUser-Agent: ua\r\n\r\n",
        );
        let got: Vec<(String, String)> = header_entries(&h)
            .into_iter()
            .map(|(n, v)| (http_key(n), String::from_utf8(v.into_owned()).unwrap()))
            .collect();
        let want = [("HTTP_COOKIE", "a=1; b=2"), ("HTTP_X_DUP", "1, 2"), ("HTTP_USER_AGENT", "ua")];
        let want: Vec<(String, String)> = want.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(got, want);
        assert_eq!(content_fields(&h), (&b"text/plain"[..], &b"5"[..]));
        let h = head("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(content_fields(&h), (&b""[..], &b""[..]));
        assert!(header_entries(&h).is_empty());
    }

    #[test]
    fn ports_as_text() {
        crate::wsgi::interp::init_for_tests();
        Python::attach(|py| {
            for port in [0u16, 7, 10, 80, 8000, 65535] {
                assert_eq!(port_str(py, port).unwrap().to_cow().unwrap(), port.to_string());
            }
        });
    }

    #[test]
    fn separators_and_skips() {
        assert_eq!(separator(b"Cookie"), b"; ");
        assert_eq!(separator(b"X-Dup"), b", ");
        for name in ["Content-Type", "content-length", "Transfer-Encoding", "HOST", "Proxy"] {
            assert!(skipped(name.as_bytes()), "{name}");
        }
        assert!(!skipped(b"X-Proxy"));
    }
}
