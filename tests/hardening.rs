//! Hardening, round 2 (issue 12), raw bytes against the real binary: no request byte reaches a
//! response head unencoded, Host is validated, slow or vanished clients never pin workers,
//! request bodies, clean children, nothing from the app or a client panics a core thread, the
//! cache key, and protocol details.
//!
//! Each test fails against the build before these changes (run it with `WSGO_TEST_BIN` set to
//! an older binary to see).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::{Server, get, roundtrip};

fn read_all(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// The raw head of the one response to `raw` (sent on a new connection).
fn raw_head(server: &Server, raw: &[u8]) -> String {
    let mut s = server.connect();
    s.write_all(raw).unwrap();
    let bytes = read_all(&mut s);
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n").map_or(bytes.len(), |p| p + 4);
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Header names of a raw head, lower-cased, in order.
fn names(head: &str) -> Vec<String> {
    head.split("\r\n")
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| l.split(':').next().unwrap_or("").to_ascii_lowercase())
        .collect()
}

// ---------- 1. the server's own redirect ----------

#[test]
fn the_canonical_path_redirect_cannot_inject_headers_or_leave_the_site() {
    let server = Server::start(&[]);
    let head = raw_head(
        &server,
        b"GET //%0d%0aSet-Cookie:%20sessionid=evil;%20Path=/ HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert!(head.starts_with("HTTP/1.1 301 "), "{head}");
    assert_eq!(names(&head), ["location", "content-length", "date", "connection"], "{head}");
    assert!(head.contains("\r\nLocation: /%0D%0ASet-Cookie:%20sessionid=evil;%20Path=/\r\n"), "{head}");

    let table: &[(&str, &str)] = &[
        ("/.%2f%5cevil.com", "/%5Cevil.com"),
        ("/./%5c%5cevil.com/", "/%5C%5Cevil.com/"),
        ("/..%2f%2fevil.com", "/evil.com"),
        ("//%09evil.com", "/%09evil.com"),
        ("//a%00b?x=%0d%0a", "/a%00b?x=%0d%0a"),
        ("//a%3Fb%23c", "/a%3Fb%23c"),
        ("//caf%C3%A9?q=1", "/caf%C3%A9?q=1"),
    ];
    for (target, want) in table {
        let raw = format!("GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        let r = roundtrip(&server, raw.as_bytes());
        assert_eq!((r.status, r.header("location")), (301, Some(*want)), "{target}");
        assert_eq!(r.headers.len(), 4, "{target}: {:?}", r.headers);
    }
}

// ---------- 2. Host ----------

#[test]
fn hosts_outside_rfc_3986_are_refused() {
    let server = Server::start(&[]);
    for host in ["a b", "a/b", "a@b", "a\x7fb", "a\x01b", "[::1", "a:b", "x:1:2", "a\\b", "a%zz", "caf\u{e9}"]
    {
        let raw = format!("GET /env HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let r = roundtrip(&server, raw.as_bytes());
        assert_eq!(r.status, 400, "Host {host:?}: {}", r.text());
    }
    for host in ["example.com:8000", "127.0.0.1", "[::1]:80", "a-b.c_d~e"] {
        let raw = format!("GET /env HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let r = roundtrip(&server, raw.as_bytes());
        assert_eq!(r.status, 200, "Host {host:?}");
        assert!(r.text().contains(&format!("\"HTTP_HOST\": \"{host}\"")), "{}", r.text());
    }
    let r = roundtrip(&server, b"GET http://a@b/env HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 400, "user info in an absolute-form target");
    assert_eq!(get(&server, "/").status, 200);
}
