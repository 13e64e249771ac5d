//! Response heads: status lines, framing decisions and the bytes of the head.
//!
//! The application's headers arrive already validated and serialised (`Name: value\r\n` lines,
//! see `wsgi::headers`); here we add the framing and hop-by-hop fields the server owns.

use super::date::now_http_date;

/// The head of a response, as decided by the application or the server.
#[derive(Debug, Clone, Default)]
pub struct ResponseHead {
    /// The status code.
    pub status: u16,
    /// The reason phrase to send; empty means the standard one for `status`.
    pub reason: Vec<u8>,
    /// Validated `Name: value\r\n` lines, without Content-Length, Transfer-Encoding and Connection.
    pub lines: Vec<u8>,
    /// A Content-Length the application declared.
    pub content_length: Option<u64>,
    /// The application supplied its own `Date`.
    pub has_date: bool,
    /// The application asked for `Connection: close`.
    pub close: bool,
    /// `X-Sendfile` / `X-Accel-Redirect`: serve this file instead of the body.
    pub sendfile: Option<Vec<u8>>,
    /// `X-WSGo-Vary-Cookies`: the cookies `Vary: Cookie` looks at.
    pub vary_cookies: Option<Vec<u8>>,
    /// `X-WSGo-Block: SECONDS`.
    pub block: Option<i64>,
    /// `X-WSGo-Park: channels`.
    pub park: Option<String>,
    /// `X-WSGo-Park-Timeout: SECONDS ACTION`.
    pub park_timeout: Option<String>,
}

/// How a response body is delimited on the wire (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body may be sent (HEAD, 1xx, 204, 304); a known length may still be announced.
    NoBody {
        /// A Content-Length to announce (a HEAD's), if known.
        announce: Option<u64>,
    },
    /// Exactly this many bytes, announced by Content-Length.
    Length(u64),
    /// Chunked transfer coding (HTTP/1.1 without a known length).
    Chunked,
    /// HTTP/1.0 without a known length: the body ends when the connection closes.
    UntilClose,
}

impl Framing {
    /// Chooses the framing for a response of `status` with a body of `len` (if known).
    pub fn choose(status: u16, is_head: bool, minor: u8, len: Option<u64>) -> Framing {
        if status < 200 || status == 204 {
            return Framing::NoBody { announce: None };
        }
        // RFC 9110 §8.6: a 304 may only announce the length of the 200 it stands for, which
        // the server does not know here: it announces none (never the `0` of an empty body).
        if status == 304 {
            return Framing::NoBody { announce: None };
        }
        if is_head {
            return Framing::NoBody { announce: len };
        }
        match (len, minor) {
            (Some(n), _) => Framing::Length(n),
            (None, 1) => Framing::Chunked,
            (None, _) => Framing::UntilClose,
        }
    }

    /// Whether body bytes are written at all.
    pub fn has_body(self) -> bool {
        !matches!(self, Framing::NoBody { .. })
    }
}

/// The standard reason phrase of a status code.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        418 => "I'm a teapot",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        425 => "Too Early",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// Appends the response head to `out`.
pub fn encode_head(out: &mut Vec<u8>, head: &ResponseHead, framing: Framing, keep_alive: bool, minor: u8) {
    let parts = HeadParts { status: head.status, reason: &head.reason, lines: &head.lines, extra: b"" };
    encode_parts(out, &parts, head.has_date, framing, keep_alive, minor);
}

/// A response head by reference: status, reason (empty: the standard one), the header lines and
/// more lines after them.
pub struct HeadParts<'a> {
    /// The status code.
    pub status: u16,
    /// The reason phrase (empty: the standard one).
    pub reason: &'a [u8],
    /// Validated `Name: value\r\n` lines.
    pub lines: &'a [u8],
    /// More lines after them (a cache hit's `Age`).
    pub extra: &'a [u8],
}

/// Appends a response head given by parts to `out`.
pub fn encode_parts(
    out: &mut Vec<u8>,
    head: &HeadParts<'_>,
    has_date: bool,
    framing: Framing,
    keep_alive: bool,
    minor: u8,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_u64(out, u64::from(head.status));
    out.push(b' ');
    if head.reason.is_empty() {
        out.extend_from_slice(reason_phrase(head.status).as_bytes());
    } else {
        out.extend_from_slice(head.reason);
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(head.lines);
    out.extend_from_slice(head.extra);
    match framing {
        Framing::Length(n) | Framing::NoBody { announce: Some(n) } => {
            out.extend_from_slice(b"Content-Length: ");
            push_u64(out, n);
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        Framing::NoBody { announce: None } | Framing::UntilClose => {}
    }
    if !has_date {
        out.extend_from_slice(b"Date: ");
        out.extend_from_slice(&now_http_date());
        out.extend_from_slice(b"\r\n");
    }
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if minor == 0 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A complete short response generated by the server itself (errors, redirects, 503/504).
pub fn encode_simple(
    out: &mut Vec<u8>,
    status: u16,
    extra_lines: &[u8],
    body: &[u8],
    is_head: bool,
    keep_alive: bool,
    minor: u8,
) {
    let mut lines = Vec::with_capacity(64 + extra_lines.len());
    if !body.is_empty() {
        lines.extend_from_slice(b"Content-Type: text/plain; charset=utf-8\r\n");
    }
    lines.extend_from_slice(extra_lines);
    let head = ResponseHead { status, lines, ..ResponseHead::default() };
    let framing = Framing::choose(status, is_head, minor, Some(body.len() as u64));
    encode_head(out, &head, framing, keep_alive, minor);
    if framing.has_body() {
        out.extend_from_slice(body);
    }
}

/// Appends the size line of one chunk.
pub fn push_chunk_size(out: &mut Vec<u8>, len: usize) {
    let mut digits = [0u8; 16];
    let mut n = len;
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
    out.extend_from_slice(b"\r\n");
}

/// Appends an IP address in its usual text form (IPv4 by hand: formatting machinery cost more
/// than the rest of an access-log line).
pub fn push_ip(out: &mut Vec<u8>, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_u64(out, u64::from(*octet));
            }
        }
        v6 => {
            use std::io::Write;
            let _ = write!(out, "{v6}");
        }
    }
}

/// Two decimal digits for each value below 100.
const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// Appends a decimal number (two digits per division: a response head and a log line format
/// eight or more numbers).
pub fn push_u64(out: &mut Vec<u8>, n: u64) {
    if n < 10 {
        out.push(b'0' + n as u8);
        return;
    }
    out.extend_from_slice(decimal(n, &mut [0; 20]));
}

/// A number's decimal digits, written at the end of `digits`.
pub fn decimal(mut n: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut i = digits.len();
    while n >= 100 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        i -= 2;
        digits[i..i + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    }
    if n >= 10 {
        let pair = n as usize * 2;
        i -= 2;
        digits[i..i + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    } else {
        i -= 1;
        digits[i] = b'0' + n as u8;
    }
    &digits[i..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_numbers() {
        for n in [0, 1, 9, 10, 11, 99, 100, 101, 999, 1000, 65535, 1_000_000, 123_456_789, u64::MAX] {
            let mut out = Vec::new();
            push_u64(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes(), "{n}");
            assert_eq!(decimal(n, &mut [0; 20]), n.to_string().as_bytes(), "{n}");
        }
    }

    #[test]
    fn framing_table() {
        let table: &[(u16, bool, u8, Option<u64>, Framing)] = &[
            (200, false, 1, Some(5), Framing::Length(5)),
            (200, false, 1, None, Framing::Chunked),
            (200, false, 0, None, Framing::UntilClose),
            (200, true, 1, Some(5), Framing::NoBody { announce: Some(5) }),
            (200, true, 1, None, Framing::NoBody { announce: None }),
            (204, false, 1, Some(5), Framing::NoBody { announce: None }),
            (304, false, 1, Some(5), Framing::NoBody { announce: None }),
            (304, true, 1, Some(0), Framing::NoBody { announce: None }),
            (101, false, 1, None, Framing::NoBody { announce: None }),
            (404, false, 1, Some(0), Framing::Length(0)),
        ];
        for (status, head, minor, len, want) in table {
            assert_eq!(
                Framing::choose(*status, *head, *minor, *len),
                *want,
                "{status} {head} {minor} {len:?}"
            );
        }
    }

    fn text(v: &[u8]) -> String {
        String::from_utf8(v.to_vec()).unwrap()
    }

    #[test]
    fn encodes_heads() {
        let head = ResponseHead {
            status: 200,
            reason: b"Custom Reason".to_vec(),
            lines: b"Content-Type: text/plain\r\n".to_vec(),
            has_date: true,
            ..ResponseHead::default()
        };
        let mut out = Vec::new();
        encode_head(&mut out, &head, Framing::Length(12), true, 1);
        assert_eq!(
            text(&out),
            "HTTP/1.1 200 Custom Reason\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\n"
        );

        let head = ResponseHead { status: 299, ..ResponseHead::default() };
        let mut out = Vec::new();
        encode_head(&mut out, &head, Framing::Chunked, false, 1);
        let s = text(&out);
        assert!(s.starts_with("HTTP/1.1 299 \r\nTransfer-Encoding: chunked\r\nDate: "), "{s}");
        assert!(s.ends_with(" GMT\r\nConnection: close\r\n\r\n"), "{s}");

        let mut out = Vec::new();
        encode_head(
            &mut out,
            &ResponseHead { status: 404, has_date: true, ..ResponseHead::default() },
            Framing::UntilClose,
            true,
            0,
        );
        assert_eq!(text(&out), "HTTP/1.1 404 Not Found\r\nConnection: keep-alive\r\n\r\n");
    }

    #[test]
    fn encodes_simple_responses() {
        let mut out = Vec::new();
        encode_simple(&mut out, 400, b"", b"400 Bad Request", false, false, 1);
        let s = text(&out);
        assert!(s.starts_with("HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 15\r\nDate: "));
        assert!(s.ends_with("Connection: close\r\n\r\n400 Bad Request"));
        let mut out = Vec::new();
        encode_simple(&mut out, 503, b"", b"busy", true, true, 1);
        assert!(text(&out).ends_with("\r\n\r\n"), "HEAD carries no body");
    }

    #[test]
    fn numbers() {
        let mut out = Vec::new();
        for (n, want) in [(0usize, "0"), (10, "a"), (255, "ff"), (4096, "1000")] {
            out.clear();
            push_chunk_size(&mut out, n);
            assert_eq!(text(&out), format!("{want}\r\n"));
        }
        for ip in ["0.0.0.0", "127.0.0.1", "255.255.255.255", "10.20.30.4", "::1", "2001:db8::7"] {
            out.clear();
            push_ip(&mut out, ip.parse().unwrap());
            assert_eq!(text(&out), ip);
        }
        for (n, want) in
            [(0u64, "0"), (7, "7"), (1234567890123, "1234567890123"), (u64::MAX, "18446744073709551615")]
        {
            out.clear();
            push_u64(&mut out, n);
            assert_eq!(text(&out), want);
        }
    }
}
