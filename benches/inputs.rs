//! Realistic inputs for the micro benchmarks (`benches/`) and the instruction-count check
//! (`examples/instr_count.rs`), kept in one place so both measure the same work; each includes
//! this file with `#[path]`.

use wsgo::http::response::ResponseHead;

/// What curl sends, with the headers a proxy adds: about 200 bytes.
pub const CURL: &[u8] =
    b"GET /api/items?page=2 HTTP/1.1\r\nHost: example.com:8000\r\nUser-Agent: curl/7.88.1\r\n\
Accept: */*\r\nX-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\nX-Request-Id: 6f1c2a9e\r\n\r\n";

/// A browser navigation: about 800 bytes.
pub const BROWSER: &[u8] = b"GET /dashboard/reports/2026/11?tab=summary&sort=desc HTTP/1.1\r\n\
Host: app.example.com\r\n\
Connection: keep-alive\r\n\
sec-ch-ua: \"Chromium\";v=\"156\", \"Not-A.Brand\";v=\"24\"\r\n\
sec-ch-ua-mobile: ?0\r\n\
sec-ch-ua-platform: \"Linux\"\r\n\
Upgrade-Insecure-Requests: 1\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8\r\n\
Sec-Fetch-Site: same-origin\r\n\
Sec-Fetch-Mode: navigate\r\n\
Sec-Fetch-User: ?1\r\n\
Sec-Fetch-Dest: document\r\n\
Referer: https://app.example.com/dashboard\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-GB,en;q=0.9\r\n\
Cookie: sessionid=0123456789abcdef0123456789abcdef; csrftoken=abcdefABCDEF0123456789abcdefABCDEF; theme=dark\r\n\r\n";

/// A chunked body of 64 chunks of 1 KiB and its terminator.
pub fn chunked_body() -> Vec<u8> {
    let mut body = Vec::new();
    for _ in 0..64 {
        body.extend_from_slice(b"400\r\n");
        body.extend(std::iter::repeat_n(b'x', 1024));
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    body
}

/// A typical app response head.
pub fn response_head() -> ResponseHead {
    ResponseHead {
        status: 200,
        lines: b"Content-Type: text/html; charset=utf-8\r\nX-Frame-Options: DENY\r\nVary: Cookie\r\n"
            .to_vec(),
        ..ResponseHead::default()
    }
}
