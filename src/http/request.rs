//! Request heads: httparse for the syntax, our RFC 9112 framing rules on top.
//!
//! This is the only file that calls httparse. Parsing is a pure function of the bytes received so
//! far: `Ok(None)` means "need more bytes", an error is answered with its status and a close.
//! Positions are kept as offsets into the head buffer, so nothing is copied until Python needs it.

use bytes::Bytes;

use super::error::HttpError;
use super::path::{clean_path, encode_location, percent_decode};

/// Largest header block we accept (request line, fields and the empty line).
pub const MAX_HEAD: usize = 64 * 1024;
/// Longest request target we accept.
pub const MAX_TARGET: usize = 8 * 1024;
/// Longest request method accepted.
pub const MAX_METHOD: usize = 32;
/// Most header fields in one request.
pub const MAX_HEADERS: usize = 128;

/// A byte range within [`RequestHead::buf`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    /// The offset of its first byte.
    pub start: u32,
    /// The offset past its last byte.
    pub end: u32,
}

impl Span {
    fn of(buf: &[u8], part: &[u8]) -> Span {
        let start = part.as_ptr() as usize - buf.as_ptr() as usize;
        Span { start: start as u32, end: (start + part.len()) as u32 }
    }

    fn sub(self, from: usize, to: usize) -> Span {
        Span { start: self.start + from as u32, end: self.start + to as u32 }
    }

    /// Its length in bytes.
    pub fn len(self) -> usize {
        (self.end - self.start) as usize
    }

    /// Whether it covers no byte.
    pub fn is_empty(self) -> bool {
        self.start == self.end
    }
}

/// How the request body is framed (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body at all.
    Empty,
    /// Exactly this many bytes follow the head.
    Length(u64),
    /// A chunked body follows the head.
    Chunked,
}

/// The form of the request target (RFC 9112 §3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `/path?query`, or an absolute-form URI reduced to its path. `path` is percent-decoded.
    Path {
        /// The percent-decoded path.
        path: DecodedPath,
        /// The raw query, after `?`.
        query: Option<Span>,
    },
    /// `OPTIONS *`.
    Asterisk,
    /// `CONNECT host:port`.
    Authority,
    /// The decoded path is not canonical (`.`/`..` segments, `//`): answered with a 301 to the clean
    /// path, as the original (Go's ServeMux) does, so no such path ever reaches the app.
    Redirect(Vec<u8>),
}

/// A decoded path: a span of the head when it had no escapes, else its own bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodedPath {
    /// The path had no escapes: its bytes in the head.
    Raw(Span),
    /// The decoded path.
    Decoded(Vec<u8>),
}

/// One header field kept for the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// The field name.
    pub name: Span,
    /// The field value, without surrounding whitespace.
    pub value: Span,
}

/// A parsed, validated request head.
#[derive(Debug, Clone)]
pub struct RequestHead {
    /// The raw head, request line to the empty line inclusive.
    pub buf: Bytes,
    /// The method token.
    pub method: Span,
    /// The request target exactly as sent.
    pub raw_target: Span,
    /// What the target names.
    pub target: Target,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    /// Header fields in order, without fields whose names contain `_` (a `X_Foo` must not pose as `X-Foo`).
    pub fields: Vec<Field>,
    /// The host: from an absolute-form target, else the `Host` field.
    pub host: Option<Span>,
    /// How the body is framed.
    pub body: BodyKind,
    /// Whether the connection may stay open after this exchange.
    pub keep_alive: bool,
    /// The client sent `Expect: 100-continue`.
    pub expect_continue: bool,
}

impl RequestHead {
    /// The bytes of a span of the head.
    pub fn bytes(&self, span: Span) -> &[u8] {
        &self.buf[span.start as usize..span.end as usize]
    }

    /// The method token.
    pub fn method(&self) -> &[u8] {
        self.bytes(self.method)
    }

    /// Whether it is a `HEAD` request.
    pub fn is_head(&self) -> bool {
        self.method() == b"HEAD"
    }

    /// The percent-decoded path, when the target has one.
    pub fn path(&self) -> Option<&[u8]> {
        match &self.target {
            Target::Path { path: DecodedPath::Raw(s), .. } => Some(self.bytes(*s)),
            Target::Path { path: DecodedPath::Decoded(v), .. } => Some(v),
            _ => None,
        }
    }

    /// The path as sent, before percent-decoding: the target up to its query, without the
    /// scheme and authority of an absolute-form target.
    pub fn raw_path(&self) -> &[u8] {
        let t = self.bytes(self.raw_target);
        let t = if t.first() == Some(&b'/') {
            t
        } else {
            let rest = strip_scheme(t).unwrap_or(t);
            &rest[rest.iter().position(|&b| b == b'/' || b == b'?').unwrap_or(rest.len())..]
        };
        &t[..t.iter().position(|&b| b == b'?').unwrap_or(t.len())]
    }

    /// The raw query (after `?`), when the target has one.
    pub fn query(&self) -> Option<&[u8]> {
        match &self.target {
            Target::Path { query: Some(q), .. } => Some(self.bytes(*q)),
            _ => None,
        }
    }

    /// The first value of a field, by case-insensitive name.
    pub fn field(&self, name: &[u8]) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|f| self.bytes(f.name).eq_ignore_ascii_case(name))
            .map(|f| self.bytes(f.value))
    }
}

/// Parses a request head from the start of `buf`.
///
/// Returns `Ok(None)` when `buf` holds no complete head yet, `Ok(Some((head, len)))` with the
/// length of the head otherwise.
/// The spans of the result point into `buf`; bind them with [`RequestHead::attach`].
pub fn parse_head(buf: &[u8]) -> Result<Option<(RequestHead, usize)>, HttpError> {
    // Left uninitialised: zeroing 128 header slots cost more than parsing a small request.
    let mut headers = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let status = match req.parse_with_uninit_headers(buf, &mut headers) {
        Ok(s) => s,
        // httparse rejects `HTTP/2` before it has seen `.0`: wait for the whole version before
        // deciding between 505 (a version we don't speak) and 400 (garbage).
        Err(httparse::Error::Version) if version_may_continue(buf) => {
            return check_partial(buf).map(|()| None);
        }
        Err(e) => return Err(map_httparse_error(e, buf)),
    };
    let len = match status {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial => {
            return check_partial(buf).map(|()| None);
        }
    };
    if len > MAX_HEAD {
        return Err(HttpError::HeadersTooLarge);
    }
    // RFC 9112 §2.2: we do not accept a bare LF as a line terminator (request smuggling through
    // parsers that disagree on line ends).
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(HttpError::BadRequest("incomplete request line"));
    };
    // httparse has split the head into lines already: checking the end of each line costs less
    // than scanning every byte.
    let line_ends = std::iter::once(target.as_bytes()).chain(req.headers.iter().map(|h| h.value));
    if !lines_end_in_crlf(&buf[..len], line_ends) {
        return Err(HttpError::BadRequest("bare LF in request head"));
    }
    if target.len() > MAX_TARGET {
        return Err(HttpError::UriTooLong);
    }
    // The longest registered method is 17 bytes; a long one is garbage or an attack.
    if method.len() > MAX_METHOD {
        return Err(HttpError::BadRequest("request method too long"));
    }
    let method = Span::of(buf, method.as_bytes());
    let raw_target = Span::of(buf, target.as_bytes());

    let mut fields = Vec::with_capacity(req.headers.len());
    let mut host: Option<Span> = None;
    let mut content_length: Option<u64> = None;
    let mut te: Vec<Span> = Vec::new();
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    let mut expect_continue = false;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        let value = h.value;
        if name.contains(&b'_') {
            continue;
        }
        let field = Field { name: Span::of(buf, name), value: Span::of(buf, value) };
        if name.eq_ignore_ascii_case(b"host") {
            if host.is_some() {
                return Err(HttpError::BadRequest("duplicate Host"));
            }
            host = Some(field.value);
        } else if name.eq_ignore_ascii_case(b"content-length") {
            // RFC 9110 §8.6: a list or a repeat could be collapsed, but proxies disagree on how;
            // refusing is the safe reading.
            if content_length.is_some() {
                return Err(HttpError::BadRequest("duplicate Content-Length"));
            }
            content_length = Some(parse_content_length(value)?);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            te.push(field.value);
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',') {
                let token = trim(token);
                conn_close |= token.eq_ignore_ascii_case(b"close");
                conn_keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case(b"expect") {
            if trim(value).eq_ignore_ascii_case(b"100-continue") {
                // RFC 9110 §10.1.1: an HTTP/1.0 client's expectation is ignored (it would not
                // understand a 1xx).
                expect_continue = minor == 1;
            } else {
                return Err(HttpError::ExpectationFailed);
            }
        }
        fields.push(field);
    }

    let body = body_kind(buf, minor, content_length, &te)?;
    let target = parse_target(buf, method, raw_target, &mut host)?;
    match host {
        None if minor == 1 => return Err(HttpError::BadRequest("missing required Host header")),
        // It becomes SERVER_NAME and part of the cache key: RFC 3986 syntax only.
        Some(h) if !valid_authority(&buf[h.start as usize..h.end as usize]) => {
            return Err(HttpError::BadRequest("invalid Host"));
        }
        _ => {}
    }
    let keep_alive = if minor == 1 { !conn_close } else { conn_keep_alive && !conn_close };
    Ok(Some((
        RequestHead {
            buf: Bytes::new(),
            method,
            raw_target,
            target,
            minor,
            fields,
            host,
            body,
            keep_alive,
            expect_continue,
        },
        len,
    )))
}

impl RequestHead {
    /// Binds the spans to `buf`, which must hold the bytes that were parsed (the connection splits
    /// the head off its read buffer once it is complete).
    pub fn attach(mut self, buf: Bytes) -> RequestHead {
        self.buf = buf;
        self
    }
}

fn check_partial(buf: &[u8]) -> Result<(), HttpError> {
    // A request line still open after the longest target we accept is a 414; a head still open
    // after the largest block is a 431.
    let line_open = !buf.contains(&b'\n');
    if line_open && buf.len() > MAX_TARGET + 64 {
        return Err(HttpError::UriTooLong);
    }
    if buf.len() > MAX_HEAD {
        return Err(HttpError::HeadersTooLarge);
    }
    if has_bare_lf(buf) {
        return Err(HttpError::BadRequest("bare LF in request head"));
    }
    Ok(())
}

fn map_httparse_error(e: httparse::Error, buf: &[u8]) -> HttpError {
    match e {
        httparse::Error::Version => {
            // httparse only knows 1.0 and 1.1: a well-formed `HTTP/x.y` is a version we don't
            // speak (505), anything else is garbage (400).
            if looks_like_other_version(buf) {
                HttpError::VersionNotSupported
            } else {
                HttpError::BadRequest("malformed request line")
            }
        }
        httparse::Error::TooManyHeaders => HttpError::HeadersTooLarge,
        httparse::Error::HeaderName => HttpError::BadRequest("invalid header name"),
        httparse::Error::HeaderValue => HttpError::BadRequest("invalid header value"),
        httparse::Error::NewLine => HttpError::BadRequest("invalid line ending"),
        httparse::Error::Token => HttpError::BadRequest("invalid token"),
        httparse::Error::Status => HttpError::BadRequest("malformed request line"),
    }
}

/// The request line is not finished and what follows its last space could still become
/// `HTTP/x.y`.
fn version_may_continue(buf: &[u8]) -> bool {
    if buf.iter().any(|&b| b == b'\r' || b == b'\n') {
        return false;
    }
    let Some(sp) = buf.iter().rposition(|&b| b == b' ') else { return false };
    let v = &buf[sp + 1..];
    let pattern = b"HTTP/0.0";
    v.len() < pattern.len()
        && v.iter().zip(pattern).all(|(&b, &p)| if p == b'0' { b.is_ascii_digit() } else { b == p })
}

fn looks_like_other_version(buf: &[u8]) -> bool {
    let line_end = buf.iter().position(|&b| b == b'\r' || b == b'\n').unwrap_or(buf.len());
    let line = &buf[..line_end];
    // method SP target SP version: anything else is a malformed line, not a version problem.
    if line.iter().filter(|&&b| b == b' ').count() != 2 {
        return false;
    }
    let Some(sp) = line.iter().rposition(|&b| b == b' ') else { return false };
    let v = &line[sp + 1..];
    v.len() == 8 && v.starts_with(b"HTTP/") && v[5].is_ascii_digit() && v[6] == b'.' && v[7].is_ascii_digit()
}

/// Whether every line of a complete head ends in CRLF: the leading empty lines, the line holding
/// each of `anchors` (slices of `head`), and the final empty line.
fn lines_end_in_crlf<'a>(head: &[u8], anchors: impl Iterator<Item = &'a [u8]>) -> bool {
    let mut start = 0;
    while head[start..].starts_with(b"\r\n") {
        start += 2;
    }
    if head.get(start) == Some(&b'\n') {
        return false;
    }
    for anchor in anchors {
        let from = anchor.as_ptr() as usize + anchor.len() - head.as_ptr() as usize;
        match head[from..].iter().position(|&b| b == b'\n') {
            Some(nl) if from + nl > 0 && head[from + nl - 1] == b'\r' => {}
            _ => return false,
        }
    }
    head.ends_with(b"\r\n\r\n")
}

fn has_bare_lf(buf: &[u8]) -> bool {
    buf.first() == Some(&b'\n') || buf.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r')
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |e| e + 1);
    &v[start..end]
}

/// RFC 9110 §8.6: `Content-Length = 1*DIGIT`, nothing else (no sign, no list, no spaces inside).
pub fn parse_content_length(value: &[u8]) -> Result<u64, HttpError> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return Err(HttpError::BadRequest("invalid Content-Length"));
    }
    Ok(value.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

fn body_kind(buf: &[u8], minor: u8, content_length: Option<u64>, te: &[Span]) -> Result<BodyKind, HttpError> {
    if te.is_empty() {
        return Ok(match content_length {
            Some(0) | None => BodyKind::Empty,
            Some(n) => BodyKind::Length(n),
        });
    }
    // RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 means faulty framing; with Content-Length it is
    // the classic smuggling vector. Both are refused.
    if minor == 0 {
        return Err(HttpError::BadRequest("Transfer-Encoding in HTTP/1.0"));
    }
    if content_length.is_some() {
        return Err(HttpError::BadRequest("both Content-Length and Transfer-Encoding"));
    }
    let codings: Vec<&[u8]> = te
        .iter()
        .flat_map(|s| buf[s.start as usize..s.end as usize].split(|&b| b == b','))
        .map(trim)
        .collect();
    if codings.iter().any(|c| c.is_empty()) {
        return Err(HttpError::BadRequest("empty transfer coding"));
    }
    let chunked = |c: &[u8]| c.eq_ignore_ascii_case(b"chunked");
    // RFC 9112 §6.3: chunked must be the final coding, and only once.
    if !codings.last().is_some_and(|c| chunked(c)) || codings.iter().filter(|c| chunked(c)).count() > 1 {
        return Err(HttpError::BadRequest("chunked is not the final transfer coding"));
    }
    if codings.len() > 1 {
        return Err(HttpError::NotImplemented("Unsupported transfer encoding"));
    }
    Ok(BodyKind::Chunked)
}

fn parse_target(buf: &[u8], method: Span, raw: Span, host: &mut Option<Span>) -> Result<Target, HttpError> {
    let bytes = &buf[raw.start as usize..raw.end as usize];
    let method_bytes = &buf[method.start as usize..method.end as usize];
    if method_bytes == b"CONNECT" {
        return Ok(Target::Authority);
    }
    if bytes == b"*" {
        return if method_bytes == b"OPTIONS" {
            Ok(Target::Asterisk)
        } else {
            Err(HttpError::BadRequest("asterisk target without OPTIONS"))
        };
    }
    let (path_span, query) = if bytes.first() == Some(&b'/') {
        split_query(raw, bytes)
    } else if let Some(rest) = strip_scheme(bytes) {
        // Absolute form (RFC 9112 §3.2.2): the authority replaces the Host field.
        let scheme_len = bytes.len() - rest.len();
        let auth_len = rest.iter().position(|&b| b == b'/' || b == b'?').unwrap_or(rest.len());
        if auth_len == 0 {
            return Err(HttpError::BadRequest("absolute-form target without authority"));
        }
        *host = Some(raw.sub(scheme_len, scheme_len + auth_len));
        let after = raw.sub(scheme_len + auth_len, bytes.len());
        if after.is_empty() {
            return Ok(Target::Path { path: DecodedPath::Decoded(b"/".to_vec()), query: None });
        }
        let after_bytes = &buf[after.start as usize..after.end as usize];
        if after_bytes[0] == b'?' {
            let q = after.sub(1, after_bytes.len());
            return Ok(Target::Path { path: DecodedPath::Decoded(b"/".to_vec()), query: Some(q) });
        }
        split_query(after, after_bytes)
    } else {
        return Err(HttpError::BadRequest("malformed request target"));
    };
    let raw_path = &buf[path_span.start as usize..path_span.end as usize];
    let decoded = percent_decode(raw_path).ok_or(HttpError::BadRequest("invalid URL escape"))?;
    let decoded_bytes: &[u8] = decoded.as_deref().unwrap_or(raw_path);
    if let Some(clean) = clean_path(decoded_bytes) {
        // The decoded path may hold any byte (`%0d%0a`, `%5c`): encoded before it reaches the head.
        let query = query.map(|q| &buf[q.start as usize..q.end as usize]);
        return Ok(Target::Redirect(encode_location(&clean, query)));
    }
    let path = match decoded {
        None => DecodedPath::Raw(path_span),
        Some(v) => DecodedPath::Decoded(v),
    };
    Ok(Target::Path { path, query })
}

/// What each byte may be in a Host value outside brackets (RFC 3986 §3.2.2): 1 a `reg-name`
/// character (unreserved or sub-delims; an IPv4 address is a reg-name too), 2 `%` (two hex
/// digits must follow), 3 `:` (the port follows), 0 nothing allowed.
const HOST_BYTE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = if b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            ) {
            1
        } else if b == b'%' {
            2
        } else if b == b':' {
            3
        } else {
            0
        };
        i += 1;
    }
    t
};

/// Whether a Host value (or an absolute-form authority) is `host [ ":" port ]` (RFC 9110 §7.2,
/// RFC 3986 §3.2.2-3): a reg-name or IPv4 address, or an IP literal in brackets, then at most
/// five port digits. No user info, no spaces or controls, no `/`. An empty value is allowed
/// (RFC 9112 §3.2: a target without authority).
pub fn valid_authority(v: &[u8]) -> bool {
    let port = if v.first() == Some(&b'[') {
        let Some(close) = v.iter().position(|&b| b == b']') else { return false };
        if !valid_ip_literal(&v[1..close]) {
            return false;
        }
        match &v[close + 1..] {
            [] => return true,
            [b':', port @ ..] => port,
            _ => return false,
        }
    } else {
        // One pass over the host: a table lookup per byte.
        let mut i = 0;
        loop {
            let Some(&b) = v.get(i) else { return true };
            match HOST_BYTE[b as usize] {
                1 => i += 1,
                2 if v.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                    && v.get(i + 2).is_some_and(u8::is_ascii_hexdigit) =>
                {
                    i += 3
                }
                3 => break &v[i + 1..],
                _ => return false,
            }
        }
    };
    port.len() <= 5 && port.iter().all(u8::is_ascii_digit)
}

/// `IPv6address / IPvFuture` inside the brackets of an IP literal (RFC 3986 §3.2.2).
fn valid_ip_literal(inner: &[u8]) -> bool {
    if let [b'v' | b'V', rest @ ..] = inner {
        // IPvFuture: "v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" )
        let Some(dot) = rest.iter().position(|&b| b == b'.') else { return false };
        let (ver, tail) = (&rest[..dot], &rest[dot + 1..]);
        return !ver.is_empty()
            && ver.iter().all(u8::is_ascii_hexdigit)
            && !tail.is_empty()
            && tail.iter().all(|&b| HOST_BYTE[b as usize] & 1 == 1);
    }
    std::str::from_utf8(inner).is_ok_and(|s| s.parse::<std::net::Ipv6Addr>().is_ok())
}

fn split_query(span: Span, bytes: &[u8]) -> (Span, Option<Span>) {
    match bytes.iter().position(|&b| b == b'?') {
        Some(q) => (span.sub(0, q), Some(span.sub(q + 1, bytes.len()))),
        None => (span, None),
    }
}

fn strip_scheme(bytes: &[u8]) -> Option<&[u8]> {
    for scheme in [&b"http://"[..], b"https://"] {
        if bytes.len() >= scheme.len() && bytes[..scheme.len()].eq_ignore_ascii_case(scheme) {
            return Some(&bytes[scheme.len()..]);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<RequestHead, HttpError> {
        let bytes = raw.as_bytes();
        match parse_head(bytes)? {
            Some((h, len)) => Ok(h.attach(Bytes::copy_from_slice(&bytes[..len]))),
            None => panic!("incomplete: {raw:?}"),
        }
    }

    #[test]
    fn parses_simple_get() {
        let h = parse("GET /a/b?x=1&y=%20z HTTP/1.1\r\nHost: example.com\r\nX-A: 1\r\n\r\n").unwrap();
        assert_eq!(h.method(), b"GET");
        assert_eq!(h.path(), Some(&b"/a/b"[..]));
        assert_eq!(h.query(), Some(&b"x=1&y=%20z"[..]));
        assert_eq!(h.minor, 1);
        assert_eq!(h.bytes(h.host.unwrap()), b"example.com");
        assert_eq!(h.body, BodyKind::Empty);
        assert!(h.keep_alive);
        assert_eq!(h.field(b"x-a"), Some(&b"1"[..]));
    }

    #[test]
    fn partial_heads_need_more() {
        for cut in ["", "GET", "GET / HTTP/1.1\r\n", "GET / HTTP/1.1\r\nHost: a\r\n"] {
            assert!(parse_head(cut.as_bytes()).unwrap().is_none(), "{cut:?}");
        }
    }

    #[test]
    fn status_for_each_malformed_head() {
        let long_target = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(MAX_TARGET));
        let many = format!("GET / HTTP/1.1\r\nHost: a\r\n{}\r\n", "X-A: 1\r\n".repeat(MAX_HEADERS));
        let table: Vec<(&str, u16)> = vec![
            ("GET / HTTP/1.1\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            ("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
            ("GET / HTTP/1.1\nHost: a\n\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nX : x\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", 400),
            ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n", 417),
            ("GET /%zz HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET abc HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET / FOO/1.1\r\nHost: a\r\n\r\n", 400),
            (long_target.as_str(), 414),
            (many.as_str(), 431),
        ];
        for (raw, status) in table {
            match parse_head(raw.as_bytes()) {
                Err(e) => assert_eq!(e.status(), status, "{raw:?}: {e}"),
                Ok(r) => panic!("accepted {raw:?}: {:?}", r.map(|x| x.0)),
            }
        }
    }

    #[test]
    fn oversized_partial_heads_are_refused() {
        let open_line = format!("GET /{}", "a".repeat(MAX_TARGET + 100));
        assert_eq!(parse_head(open_line.as_bytes()).unwrap_err().status(), 414);
        let open_head = format!("GET / HTTP/1.1\r\n{}", "X-A: 1234567890\r\n".repeat(5000));
        assert_eq!(parse_head(open_head.as_bytes()).unwrap_err().status(), 431);
    }

    #[test]
    fn framing_and_keep_alive() {
        let table: &[(&str, BodyKind, bool, bool)] = &[
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n", BodyKind::Length(5), true, false),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", BodyKind::Empty, true, false),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n",
                BodyKind::Chunked,
                true,
                false,
            ),
            ("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", BodyKind::Empty, false, false),
            ("GET / HTTP/1.0\r\n\r\n", BodyKind::Empty, false, false),
            ("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", BodyKind::Empty, true, false),
            (
                "PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n",
                BodyKind::Length(1),
                true,
                true,
            ),
            // RFC 9110 §10.1.1: ignored from HTTP/1.0.
            (
                "PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
                BodyKind::Length(1),
                false,
                false,
            ),
        ];
        for (raw, body, keep_alive, expect) in table {
            let h = parse(raw).unwrap();
            assert_eq!((h.body, h.keep_alive, h.expect_continue), (*body, *keep_alive, *expect), "{raw:?}");
        }
    }

    #[test]
    fn targets() {
        let h = parse("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!(h.target, Target::Asterisk);
        let h = parse("CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!(h.target, Target::Authority);
        let h = parse("GET http://other.example/env?x=1 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!(h.path(), Some(&b"/env"[..]));
        assert_eq!(h.query(), Some(&b"x=1"[..]));
        assert_eq!(h.bytes(h.host.unwrap()), b"other.example");
        let h = parse("GET HTTP://h:8 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!(h.path(), Some(&b"/"[..]));
        assert_eq!(h.bytes(h.host.unwrap()), b"h:8");
        let h = parse("GET /caf%C3%A9/x%2Fy?q=%ZZ HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!(h.path(), Some("/café/x/y".as_bytes()));
        assert_eq!(h.query(), Some(&b"q=%ZZ"[..]));
        for (raw, want) in [
            ("GET /p%3Fx=1?y HTTP/1.1\r\nHost: a\r\n\r\n", "/p%3Fx=1"),
            ("GET /a%2Fb HTTP/1.1\r\nHost: a\r\n\r\n", "/a%2Fb"),
            ("GET http://h:8/x%20y?q HTTP/1.1\r\nHost: a\r\n\r\n", "/x%20y"),
            ("GET http://h?q HTTP/1.1\r\nHost: a\r\n\r\n", ""),
        ] {
            assert_eq!(parse(raw).unwrap().raw_path(), want.as_bytes(), "{raw:?}");
        }
        let h = parse("GET /a/../b?q=1 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!(h.target, Target::Redirect(b"/b?q=1".to_vec()));
        // HTTP/1.0 needs no Host.
        let h = parse("GET / HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!(h.host, None);
    }

    #[test]
    fn hosts_follow_rfc_3986() {
        let good = [
            "example.com",
            "example.com:8000",
            "EXAMPLE.com",
            "127.0.0.1",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:8000",
            "[2001:db8::7]:1",
            "[v1.fe80::a+en1]",
            "a-b_c~d.e",
            "xn--caf-dma.example",
            "a%20b",
            "!$&'()*+,;=",
            "h:",
            "",
        ];
        let bad = [
            "a b",
            "a/b",
            "a@b",
            "user:pw@host",
            "a\x7fb",
            "a\tb",
            "a\\b",
            "[::1",
            "::1]",
            "[::1]x",
            "[::1]:8000:1",
            "[zz]",
            "[]",
            "[::1%25eth0]",
            "a:b",
            "a:123456",
            "a:1:2",
            "a%2",
            "a%zz",
            "a\"b",
            "a<b>",
            "a?b",
            "a#b",
            "caf\u{e9}",
            "[v1.]",
            "[v.x]",
        ];
        for h in good {
            assert!(valid_authority(h.as_bytes()), "{h:?} refused");
            let raw = format!("GET / HTTP/1.1\r\nHost: {h}\r\n\r\n");
            assert!(parse_head(raw.as_bytes()).is_ok(), "{h:?}");
        }
        for h in bad {
            assert!(!valid_authority(h.as_bytes()), "{h:?} accepted");
            let raw = format!("GET / HTTP/1.1\r\nHost: {h}\r\n\r\n");
            if let Ok(r) = parse_head(raw.as_bytes()) {
                panic!("{h:?}: {:?}", r.map(|x| x.0));
            }
            let absolute = format!("GET http://{h}/x HTTP/1.1\r\nHost: a\r\n\r\n");
            if !h.contains('/') && !h.contains('?') && !h.contains('#') && !h.is_empty() {
                assert!(parse_head(absolute.as_bytes()).is_err(), "absolute-form {h:?}");
            }
        }
    }

    #[test]
    fn underscore_fields_are_dropped() {
        let h = parse("GET / HTTP/1.1\r\nHost: a\r\nX_Foo: evil\r\nX-Foo: good\r\n\r\n").unwrap();
        assert_eq!(h.fields.len(), 2);
        assert_eq!(h.field(b"x-foo"), Some(&b"good"[..]));
        assert!(h.fields.iter().all(|f| !h.bytes(f.name).contains(&b'_')));
    }

    fn assert_needs_more(raw: &[u8], upto: usize) {
        for cut in 0..upto {
            let got = parse_head(&raw[..cut]);
            assert!(
                matches!(got, Ok(None)),
                "prefix {:?}: {:?}",
                String::from_utf8_lossy(&raw[..cut]),
                got.map(|o| o.map(|x| x.1))
            );
        }
    }

    #[test]
    fn every_prefix_of_a_valid_head_needs_more() {
        let raw = b"GET /json-0?i=0 HTTP/1.1\r\nHost: t\r\nX-A: 1\r\n\r\n";
        assert_needs_more(raw, raw.len());
        // An unsupported version is only judged once complete.
        let raw = b"GET / HTTP/2.0\r\nHost: t\r\n\r\n";
        assert_eq!(parse_head(raw).unwrap_err().status(), 505);
        assert_needs_more(raw, 14);
    }
}
