//! Raw bytes against the real binary: framing, keep-alive, pipelining, limits, timeouts, every
//! error status, and what a broken application gets.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::time::{Duration, Instant};

use common::{Server, closed_within, get, read_response, roundtrip};

fn read_all(s: &mut std::net::TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

#[test]
fn hello_has_length_and_date_and_no_server_header() {
    let server = Server::start(&[]);
    let r = get(&server, "/");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "Hello, World!");
    assert_eq!(r.header("content-length"), Some("13"));
    assert!(r.header("date").is_some_and(|d| d.ends_with(" GMT")));
    assert!(r.header("server").is_none());
    assert_eq!(r.header("connection"), Some("close"));
}

#[test]
fn keep_alive_serves_many_requests_on_one_connection() {
    let server = Server::start(&[]);
    let s = server.connect();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    for i in 0..5 {
        write!(w, "GET /json-{i}?i={i} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let resp = read_response(&mut r, false).unwrap();
        assert_eq!(resp.status, 200);
        assert!(resp.text().contains(&format!("\"path\": \"/json-{i}\"")), "{}", resp.text());
        assert!(resp.header("connection").is_none());
    }
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let server = Server::start(&[]);
    let mut s = server.connect();
    let mut batch = Vec::new();
    for i in 0..8 {
        let delay = if i % 3 == 0 { "/sleep?t=0.05" } else { "" };
        if delay.is_empty() {
            batch.extend_from_slice(format!("GET /p{i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        } else {
            batch.extend_from_slice(format!("GET {delay}&i={i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        }
    }
    batch.extend_from_slice(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhelloGET /last HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    s.write_all(&batch).unwrap();
    let mut r = BufReader::new(s);
    for i in 0..8 {
        let resp = read_response(&mut r, false).unwrap();
        if i % 3 == 0 {
            assert_eq!(resp.text(), "slept");
        } else {
            assert!(resp.text().contains(&format!("\"/p{i}\"")), "{i}: {}", resp.text());
        }
    }
    assert_eq!(read_response(&mut r, false).unwrap().text(), "hello");
    let last = read_response(&mut r, false).unwrap();
    assert!(last.text().contains("\"/last\""));
    assert!(closed_within(&mut r, Duration::from_secs(2)));
}

#[test]
fn http_1_0_closes_unless_asked_to_keep_alive() {
    let server = Server::start(&[]);
    let mut s = server.connect();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let text = String::from_utf8(read_all(&mut s)).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("Connection: close\r\n"));
    assert!(text.ends_with("Hello, World!"));

    let s = server.connect();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    for _ in 0..2 {
        w.write_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
        let resp = read_response(&mut r, false).unwrap();
        assert_eq!(resp.header("connection"), Some("keep-alive"));
        assert_eq!(resp.text(), "Hello, World!");
    }
    // A streamed body of unknown length on HTTP/1.0 is delimited by closing the connection.
    w.write_all(b"GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
    let resp = read_response(&mut r, false).unwrap();
    assert_eq!(resp.text(), "chunk0;chunk1;chunk2;");
    assert!(resp.header("transfer-encoding").is_none());
}

#[test]
fn without_a_host_the_server_name_is_the_local_address() {
    // The local address comes from the listener (no getsockname per connection).
    let server = Server::start(&[]);
    let mut s = server.connect();
    s.write_all(b"GET /env HTTP/1.0\r\n\r\n").unwrap();
    let text = String::from_utf8(read_all(&mut s)).unwrap();
    assert!(text.contains(r#""SERVER_NAME": "127.0.0.1""#), "{text}");
    assert!(text.contains(&format!(r#""SERVER_PORT": "{}""#, server.addr.port())), "{text}");
}

/// The origin entries of the environ (`SERVER_NAME`, `SERVER_PORT`, `HTTP_HOST`,
/// `SERVER_PROTOCOL`, `REMOTE_*`) come from a per-thread prepared copy: each request must still
/// see its own, whatever the requests before it sent or did to their environ. One worker, so
/// every request meets the same thread's prepared entries; more Host values than it keeps.
#[test]
fn each_request_sees_its_own_origin_in_the_environ() {
    let server = Server::start(&["--workers", "1"]);
    let port = server.addr.port();
    let env_of = |raw: String| -> Env {
        let resp = roundtrip(&server, raw.as_bytes());
        assert_eq!(resp.status, 200, "{raw}");
        Env(resp.text())
    };
    let hosts: Vec<String> = (0..12).map(|i| format!("h{i}.example:{}", 8000 + i)).collect();
    for round in 0..2 {
        for (i, host) in hosts.iter().enumerate() {
            let minor = if i % 3 == 0 { 0 } else { 1 };
            let query = if i % 2 == 0 { format!("?r={round}") } else { String::new() };
            let env = env_of(format!(
                "GET /env{query} HTTP/1.{minor}\r\nHost: {host}\r\nConnection: close\r\n\r\n"
            ));
            assert_eq!(env.get("HTTP_HOST").as_deref(), Some(host.as_str()));
            assert_eq!(env.get("SERVER_NAME"), Some(format!("h{i}.example")));
            assert_eq!(env.get("SERVER_PORT"), Some(port.to_string()), "the listener's port, not the Host's");
            assert_eq!(env.get("SERVER_PROTOCOL"), Some(format!("HTTP/1.{minor}")));
            assert_eq!(env.get("REMOTE_ADDR").as_deref(), Some("127.0.0.1"));
            assert!(env.get("REMOTE_PORT").unwrap().parse::<u16>().unwrap() > 0);
            assert_eq!(env.get("QUERY_STRING").as_deref(), Some(query.trim_start_matches('?')));
            assert_eq!(env.get("wsgi.url_scheme").as_deref(), Some("http"));
            assert_eq!(env.get("wsgi.errors_is_stderr").as_deref(), Some("true"));
        }
    }
    // What an app does to its environ stays in that request.
    let host = &hosts[1];
    let raw = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    assert_eq!(roundtrip(&server, raw("/env-mutate?x=1").as_bytes()).text(), "mutated");
    let env = env_of(raw("/env"));
    assert_eq!(env.get("SERVER_NAME").as_deref(), Some("h1.example"));
    assert_eq!(env.get("HTTP_HOST").as_deref(), Some(host.as_str()));
    assert_eq!(env.get("SERVER_PROTOCOL").as_deref(), Some("HTTP/1.1"));
    assert_eq!(env.get("REMOTE_ADDR").as_deref(), Some("127.0.0.1"));
    assert_eq!(env.get("QUERY_STRING").as_deref(), Some(""));
    assert_eq!(env.get("wsgi.url_scheme").as_deref(), Some("http"));
    assert_eq!(env.get("HTTP_X_ADDED"), None);
    // Two connections from one address share the prepared entries: each has its own port.
    let ports: Vec<String> = (0..2).map(|_| env_of(raw("/env")).get("REMOTE_PORT").unwrap()).collect();
    assert_ne!(ports[0], ports[1], "two connections, two client ports");
    // Clients from other addresses (loopback has all of 127/8) to the same host: each request
    // sees its own address, alternating.
    for i in 0..6u8 {
        let from = std::net::Ipv4Addr::new(127, 0, 0, 2 + i % 3);
        let mut s = connect_from(from, server.addr);
        s.write_all(raw("/env").as_bytes()).unwrap();
        let env = Env(String::from_utf8_lossy(&read_all(&mut s)).into_owned());
        assert_eq!(env.get("REMOTE_ADDR"), Some(from.to_string()), "{}", env.0);
        assert_eq!(env.get("SERVER_NAME").as_deref(), Some("h1.example"));
    }
    // wsgi.errors follows sys.stderr when the app replaces it, and back.
    for to in ["new", "back"] {
        assert_eq!(roundtrip(&server, raw(&format!("/swap-stderr?to={to}")).as_bytes()).text(), "swapped");
        assert_eq!(
            env_of(raw("/env")).get("wsgi.errors_is_stderr").as_deref(),
            Some("true"),
            "after swapping to {to}"
        );
    }
}

/// What the environ keeps per thread (header keys, prepared origins) is bounded in size, not
/// only in count: 400 requests each with a new 32 KiB header name and a new 16 KiB Host are
/// answered, and the server keeps none of them (it kept 512 such keys per thread: 32 MiB).
#[test]
fn long_header_names_and_hosts_are_answered_but_not_kept() {
    let server = Server::start(&["--workers", "1"]);
    for _ in 0..20 {
        assert_eq!(roundtrip(&server, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").status, 200);
    }
    let before = server.rss_kib();
    for i in 0..400 {
        let name = format!("X-{i:05}{}", "n".repeat(32 * 1024));
        let host = format!("h{i:05}{}", "h".repeat(16 * 1024));
        let raw = format!("GET /env HTTP/1.1\r\nHost: {host}\r\n{name}: v\r\nConnection: close\r\n\r\n");
        let resp = roundtrip(&server, raw.as_bytes());
        assert_eq!(resp.status, 200, "request {i}");
        if i % 100 == 0 {
            let env = Env(resp.text());
            assert_eq!(env.get("HTTP_HOST"), Some(host.clone()));
            assert_eq!(env.get(&format!("HTTP_X_{i:05}{}", "N".repeat(32 * 1024))).as_deref(), Some("v"));
        }
    }
    let grown = server.rss_kib().saturating_sub(before);
    // The C allocator may keep up to 8 MiB of freed memory (README, "Where we differ").
    assert!(grown < 12 * 1024, "the server grew by {grown} KiB");
}

/// Each thread reuses its `start_response` and `wsgi.input` objects when nothing else holds
/// them: an app that keeps them past its request keeps them intact, and the requests after it
/// get their own.
#[test]
fn an_app_may_keep_start_response_and_input_past_its_request() {
    let server = Server::start(&["--workers", "1"]);
    let post = |path: &str, body: &str| {
        let raw = format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        roundtrip(&server, raw.as_bytes())
    };
    assert_eq!(post("/keep", "the kept body").text(), "kept");
    for i in 0..3 {
        let body = format!("later body {i}");
        assert_eq!(post("/echo", &body).text(), body, "a later request reads its own body");
        assert_eq!(get(&server, "/").text(), "Hello, World!");
    }
    // The kept input still holds its request's body; calling the kept start_response and its
    // write changes nothing of this request.
    let resp = get(&server, "/use-kept");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "the kept body");
    assert_eq!(post("/echo", "after").text(), "after");
    // On one keep-alive connection too: the next requests get their own objects.
    let mut s = std::io::BufReader::new(server.connect());
    for path in ["/keep", "/use-kept", "/", "/use-kept", "/"] {
        std::io::Write::write_all(s.get_mut(), format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .expect("send");
        let resp = common::read_response(&mut s, false).expect("a response");
        let want = if path == "/keep" {
            "kept"
        } else if path == "/" {
            "Hello, World!"
        } else {
            ""
        };
        assert_eq!((resp.status, resp.text()), (200, want.to_string()), "{path}");
    }
}

/// A TCP connection to `to` from the loopback address `from`.
fn connect_from(from: std::net::Ipv4Addr, to: std::net::SocketAddr) -> std::net::TcpStream {
    use std::os::fd::FromRawFd;
    let std::net::SocketAddr::V4(to) = to else { panic!("an IPv4 test server") };
    let sockaddr = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(ip).to_be() },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor made here, with sockaddr_in values that live
    // across each call; the descriptor is owned by the TcpStream made from it (or closed).
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket");
        let (local, remote) = (sockaddr(from, 0), sockaddr(*to.ip(), to.port()));
        let bound = libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len);
        let connected = libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len);
        if bound != 0 || connected != 0 {
            libc::close(fd);
            panic!("cannot connect from {from}: {}", std::io::Error::last_os_error());
        }
        std::net::TcpStream::from_raw_fd(fd)
    }
}

/// The `/env` route's JSON object (string, number and boolean values only).
struct Env(String);

impl Env {
    /// The value of `key`: a string's contents, or a literal as written.
    fn get(&self, key: &str) -> Option<String> {
        let at = self.0.find(&format!("\"{key}\": "))? + key.len() + 4;
        let rest = &self.0[at..];
        Some(match rest.strip_prefix('"') {
            Some(s) => s[..s.find('"')?].to_string(),
            None => rest[..rest.find([',', '}'])?].to_string(),
        })
    }
}

#[test]
fn expect_100_continue_is_answered_before_the_body() {
    let server = Server::start(&[]);
    let s = server.connect();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    w.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 7\r\nExpect: 100-continue\r\n\r\n")
        .unwrap();
    let interim = read_response(&mut r, false).unwrap();
    assert_eq!(interim.status, 100);
    w.write_all(b"payload").unwrap();
    let resp = read_response(&mut r, false).unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "payload");
}

#[test]
fn chunked_request_bodies_are_decoded() {
    let server = Server::start(&[]);
    let r = roundtrip(&server, b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "hello, world");
}

#[test]
fn large_bodies_stream_past_the_prebuffer() {
    let server = Server::start(&[]);
    let body: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut s = server.connect();
    write!(s, "POST /md5?chunk=1000000 HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n", body.len())
        .unwrap();
    s.write_all(&body).unwrap();
    let resp = read_response(&mut BufReader::new(s), false).unwrap();
    let expected_len = body.len().to_string();
    assert!(resp.text().starts_with(&expected_len), "{}", resp.text());

    // The same body chunked, in pieces, on a GET (not pre-buffered).
    let mut s = server.connect();
    s.write_all(b"GET /md5 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
    for piece in body.chunks(300_000) {
        write!(s, "{:x}\r\n", piece.len()).unwrap();
        s.write_all(piece).unwrap();
        s.write_all(b"\r\n").unwrap();
    }
    s.write_all(b"0\r\n\r\n").unwrap();
    let resp2 = read_response(&mut BufReader::new(s), false).unwrap();
    assert_eq!(resp.text(), resp2.text(), "same length and digest");
}

/// Each malformed request gets its status, `Connection: close`, and a closed connection; a
/// request pipelined behind it is never processed.
#[test]
fn malformed_requests_get_their_status_and_close() {
    let server = Server::start(&[]);
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(9000));
    let big_head = format!(
        "GET / HTTP/1.1\r\nHost: t\r\n{}\r\n",
        "X-Filler: 0123456789012345678901234567890123456789\r\n".repeat(1500)
    );
    let table: Vec<(&[u8], u16)> = vec![
        (b"GET / HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\nHost: t\n\n", 400),
        (b"GET / HTTP/1.1\r\nHost: t\r\nX-A: 1\r\n folded\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: t\r\nX-A : 1\r\n\r\n", 400),
        (b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400),
        (b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: -3\r\n\r\n", 400),
        (b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n11111111111111111\r\n", 413),
        (long_target.as_bytes(), 414),
        (big_head.as_bytes(), 431),
        (b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        (b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505),
        (b"GET / HTTP/1.1\r\nHost: t\r\nExpect: tea\r\n\r\n", 417),
        (b"GET /%zz HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        (b"GARBAGE\r\n\r\n", 400),
    ];
    for (raw, status) in table {
        let mut s = server.connect();
        let mut bytes = raw.to_vec();
        bytes.extend_from_slice(b"GET /env HTTP/1.1\r\nHost: t\r\n\r\n");
        let _ = s.write_all(&bytes);
        let text = String::from_utf8_lossy(&read_all(&mut s)).into_owned();
        let first = text.lines().next().unwrap_or("");
        assert!(
            first.starts_with(&format!("HTTP/1.1 {status} ")),
            "{:?}: {text:?}",
            String::from_utf8_lossy(&raw[..raw.len().min(80)])
        );
        assert!(text.contains("Connection: close\r\n"), "{text}");
        assert_eq!(
            text.matches("HTTP/1.1 ").count(),
            1,
            "the pipelined request must not be answered: {text}"
        );
    }
    // The server is unharmed.
    assert_eq!(get(&server, "/").status, 200);
}

#[test]
fn special_targets() {
    let server = Server::start(&[]);
    let r = roundtrip(&server, b"OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!((r.status, r.header("content-length")), (200, Some("0")));
    let r = roundtrip(&server, b"GET /a/../b?q=1 HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!((r.status, r.header("location")), (301, Some("/b?q=1")));
    let r = roundtrip(&server, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n");
    assert_eq!(r.status, 404);
    let r = roundtrip(&server, b"GET http://other.example/env?x=1 HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(r.text().contains("\"PATH_INFO\": \"/env\""), "{}", r.text());
    assert!(r.text().contains("\"HTTP_HOST\": \"other.example\""), "{}", r.text());
}

#[test]
fn a_silent_connection_is_closed_after_the_head_timeout() {
    // Accepted at once (--no-defer-accept): closed by the 2 s head timeout.
    let server = Server::start(&["--no-defer-accept"]);
    let started = Instant::now();
    let mut s = server.connect();
    assert!(closed_within(&mut s, Duration::from_secs(5)));
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1800) && waited < Duration::from_millis(2800), "{waited:?}");
    drop(server);

    // By default the kernel holds a silent connection for about a second before handing it
    // over; the head timeout runs from then.
    let server = Server::start(&[]);
    let started = Instant::now();
    let mut s = server.connect();
    assert!(closed_within(&mut s, Duration::from_secs(6)));
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(2700) && waited < Duration::from_millis(4500), "{waited:?}");

    // A head started but not finished is closed at the same deadline, without a response.
    let started = Instant::now();
    let mut s = server.connect();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert!(out.is_empty());
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1800) && waited < Duration::from_secs(4), "{waited:?}");
}

#[test]
fn head_and_bodiless_statuses_carry_no_body() {
    let server = Server::start(&[]);
    let s = server.connect();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    w.write_all(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let resp = read_response(&mut r, true).unwrap();
    assert_eq!((resp.status, resp.header("content-length")), (200, Some("13")));
    for status in ["204%20No%20Content", "304%20Not%20Modified"] {
        write!(w, "GET /status?s={status} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let resp = read_response(&mut r, false).unwrap();
        assert!(resp.body.is_empty());
        assert!(resp.header("transfer-encoding").is_none());
    }
    // The connection is still in step: the next response is the right one.
    w.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut r, false).unwrap().text(), "Hello, World!");
}

#[test]
fn bodies_of_any_size_arrive_whole_however_the_app_returns_them() {
    // Pieces below and above the size from which bodies are shared with the app's bytes objects
    // (and written with writev), returned as a list, a generator (chunked), a generator with a
    // Content-Length, and through write().
    let server = Server::start(&[]);
    let sizes = [5000usize, 10, 70_000, 4096, 4095, 1];
    let want: Vec<u8> =
        sizes.iter().enumerate().flat_map(|(i, &n)| std::iter::repeat_n(b'A' + i as u8, n)).collect();
    let list = sizes.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(",");
    for how in ["list", "gen", "gen-cl", "write"] {
        for minor in [1, 0] {
            let mut s = server.connect();
            let req = format!("GET /pieces?sizes={list}&how={how} HTTP/1.{minor}\r\nHost: t\r\n\r\n");
            s.write_all(req.as_bytes()).unwrap();
            if minor == 0 {
                let raw = read_all(&mut s);
                let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                assert!(raw[split..] == want[..], "{how} HTTP/1.0: {} bytes", raw.len() - split);
            } else {
                let resp = read_response(&mut BufReader::new(s), false).unwrap();
                assert_eq!(resp.status, 200, "{how}");
                assert!(resp.body == want, "{how}: {} bytes", resp.body.len());
            }
        }
        // One large piece alone: the shared, zero-copy case.
        let resp = get(&server, &format!("/pieces?sizes=300000&how={how}"));
        assert!(resp.body.len() == 300_000 && resp.body.iter().all(|&b| b == b'A'), "{how} alone");
    }
}

#[test]
fn streamed_chunks_are_flushed_promptly() {
    let server = Server::start(&[]);
    let mut s = server.connect();
    s.write_all(b"GET /stream?n=3&delay=0.5 HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let started = Instant::now();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
    }
    line.clear();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "7\r\n");
    line.clear();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "chunk0;\r\n");
    assert!(started.elapsed() < Duration::from_millis(400), "first chunk took {:?}", started.elapsed());
}

#[test]
fn broken_apps_get_500_and_the_process_keeps_serving() {
    let server = Server::start(&[]);
    for path in [
        "/raise",
        "/raise-after-start",
        "/bad-header",
        "/bad-header-value",
        "/bytes-header",
        "/bad-status",
        "/no-start",
        "/none",
        "/str-body",
    ] {
        let r = get(&server, path);
        assert_eq!(r.status, 500, "{path}: {}", r.text());
        assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    }
    // An error after the first byte: the response is cut short, never framed as complete.
    let r = get(&server, "/raise-in-iter");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "first;");
    assert!(!r.complete, "a failed stream must not look complete");
    let err = server.stderr_text();
    for needle in ["boom before start_response", "Bad Name", "boom mid-stream", "Traceback"] {
        assert!(err.contains(needle), "stderr lacks {needle:?}: {err}");
    }
    assert_eq!(get(&server, "/").status, 200);
}

#[test]
fn content_length_mismatches_close_the_connection() {
    let server = Server::start(&[]);
    let r = roundtrip(&server, b"GET /cl-long HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.text(), "too");
    let mut s = server.connect();
    s.write_all(b"GET /cl-short HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let text = String::from_utf8_lossy(&read_all(&mut s)).into_owned();
    assert!(text.contains("Content-Length: 100\r\n") && text.ends_with("\r\n\r\nshort"), "{text}");
}

#[test]
fn app_connection_close_is_honoured() {
    let server = Server::start(&[]);
    let mut s = server.connect();
    s.write_all(b"GET /connection-close HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let text = String::from_utf8_lossy(&read_all(&mut s)).into_owned();
    assert!(text.contains("Connection: close\r\n"));
    assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{text}");
}

#[test]
fn access_log_has_one_line_per_request() {
    let server = Server::start(&[]);
    get(&server, "/?x=1");
    roundtrip(&server, b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nUser-Agent: t\"ua\r\nConnection: close\r\n\r\nabc");
    get(&server, "/raise");
    let deadline = Instant::now() + Duration::from_secs(5);
    let log = loop {
        let log = server.stdout_text();
        if log.lines().count() >= 3 || Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Each core thread buffers its own lines, so their order across connections is not fixed.
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 3, "{log}");
    assert!(lines.iter().all(|l| l.starts_with("127.0.0.1 - - [")), "{log}");
    let find = |needle: &str| lines.iter().any(|l| l.contains(needle));
    assert!(find("\"GET /?x=1 HTTP/1.1\" 200 13 \"-\" \"-\" "), "{log}");
    assert!(find("\"POST /echo HTTP/1.1\" 200 3 \"-\" \"t\\x22ua\""), "{log}");
    assert!(find("\"GET /raise HTTP/1.1\" 500 "), "{log}");
}

#[test]
fn sigterm_lets_in_flight_requests_finish() {
    let server = Server::start(&[]);
    let mut s = server.connect();
    s.write_all(b"GET /sleep?t=1.5 HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    // A keep-alive connection between requests.
    let idle = server.connect();
    let mut idle_reader = BufReader::new(idle.try_clone().unwrap());
    (&idle).write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut idle_reader, false).unwrap().status, 200);
    std::thread::sleep(Duration::from_millis(300));
    let addr = server.addr;
    let started = Instant::now();
    let waiter = std::thread::spawn(move || server.stop());
    let resp = read_response(&mut BufReader::new(s), false).unwrap();
    assert_eq!((resp.status, resp.text().as_str()), (200, "slept"));
    assert_eq!(resp.header("connection"), Some("close"));
    let mut idle = idle;
    assert!(closed_within(&mut idle, Duration::from_secs(2)), "idle keep-alive connections are closed");
    let status = waiter.join().unwrap();
    assert!(status.success(), "{status}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(std::net::TcpStream::connect(addr).is_err(), "no longer accepting");
}

#[test]
fn a_missing_or_broken_module_exits_27_with_the_traceback() {
    for (module, needles) in [
        ("nonexistent_module", &["ModuleNotFoundError", "Couldn't import module: nonexistent_module"][..]),
        ("broken_import", &["Traceback", "this module is broken on purpose"][..]),
        ("noapp", &["Couldn't find 'application' entrypoint in module noapp"][..]),
        ("testapp:nothere", &["Couldn't find 'nothere'"][..]),
    ] {
        let (mut child, out, err) = common::spawn(&["--module", module, "--http-socket", "127.0.0.1:0"]);
        let status = common::wait_with_deadline(&mut child, Duration::from_secs(20));
        let text = std::fs::read_to_string(&err).unwrap();
        assert_eq!(status.code(), Some(27), "{module}: {text}");
        for n in needles {
            assert!(text.contains(n), "{module}: stderr lacks {n:?}: {text}");
        }
        let _ = (std::fs::remove_file(out), std::fs::remove_file(err));
    }
}

#[test]
fn bad_flags_exit_2_with_a_message() {
    for (args, needle) in [
        (&["--bogus"][..], "--bogus"),
        (&["--workers", "abc"][..], "abc"),
        (&["--workers", "0"][..], "workers"),
        (&["--http-socket", "99999"][..], "http-socket"),
        (&["-module", "a:b:c"][..], "module"),
        (&["--trusted-proxy", "1.2.3.4/99"][..], "CIDR"),
    ] {
        let (mut child, out, err) = common::spawn(args);
        let status = common::wait_with_deadline(&mut child, Duration::from_secs(10));
        let text = std::fs::read_to_string(&err).unwrap();
        assert_eq!(status.code(), Some(2), "{args:?}: {text}");
        assert!(text.contains(needle), "{args:?}: {text}");
        let _ = (std::fs::remove_file(out), std::fs::remove_file(err));
    }
    let (mut child, out, err) = common::spawn(&["-h"]);
    assert!(common::wait_with_deadline(&mut child, Duration::from_secs(10)).success());
    let help = std::fs::read_to_string(&out).unwrap();
    for flag in
        ["--module", "--http-socket", "--workers", "--request-timeout", "--io-threads", "--trusted-proxy"]
    {
        assert!(help.contains(flag), "help lacks {flag}: {help}");
    }
    let _ = (std::fs::remove_file(out), std::fs::remove_file(err));
}

#[test]
fn a_bind_failure_is_reported() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (mut child, out, err) = common::spawn(&["--http-socket", &addr]);
    let status = common::wait_with_deadline(&mut child, Duration::from_secs(10));
    let text = std::fs::read_to_string(&err).unwrap();
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(text.contains("cannot listen on"), "{text}");
    let _ = (std::fs::remove_file(out), std::fs::remove_file(err));
}

#[test]
fn a_request_that_waits_past_the_timeout_for_a_worker_gets_504() {
    let server = Server::start(&["--workers", "1", "--request-timeout", "1"]);
    let mut busy = server.connect();
    busy.write_all(b"GET /sleep?t=1.5 HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let waiting = get(&server, "/");
    assert_eq!(waiting.status, 504, "{}", waiting.text());
    // Answered at the deadline by the monitor, not when the worker comes free.
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(800) && waited < Duration::from_millis(1250), "{waited:?}");
    // The running request is waited for: it ran past the timeout too, and the exception raised
    // into it surfaces when its sleep returns.
    let first = read_response(&mut BufReader::new(busy), false).unwrap();
    assert_eq!(first.status, 504, "{}", first.text());
    assert_eq!(get(&server, "/").status, 200);
}

#[test]
fn a_bad_chunked_body_is_answered_and_logged_once() {
    let server = Server::start(&[]);
    let r = roundtrip(
        &server,
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n",
    );
    assert_eq!(r.status, 400);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.stdout_text().contains("\"POST /echo HTTP/1.1\" 400 ") {
        assert!(Instant::now() < deadline, "no log line: {}", server.stdout_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.stdout_text().lines().count(), 1, "{}", server.stdout_text());
}

#[test]
fn the_access_log_names_the_client_behind_a_trusted_proxy() {
    let server = Server::start(&[]);
    roundtrip(
        &server,
        b"GET /?xff HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 6.6.6.6, 203.0.113.9\r\nConnection: close\r\n\r\n",
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.stdout_text().contains("GET /?xff ") {
        assert!(Instant::now() < deadline, "no log line");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The right-most untrusted address, not the left-most one a client could have forged.
    assert!(server.stdout_text().starts_with("203.0.113.9 - - ["), "{}", server.stdout_text());
}

#[test]
fn continue_is_sent_when_the_app_first_reads_a_body_it_was_not_given() {
    let server = Server::start(&[]);
    let s = server.connect();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    // GET bodies are not pre-read: the 100 goes out only when the app asks for the body.
    w.write_all(b"GET /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        .unwrap();
    let interim = read_response(&mut r, false).unwrap();
    assert_eq!(interim.status, 100);
    w.write_all(b"body").unwrap();
    let resp = read_response(&mut r, false).unwrap();
    assert_eq!(resp.text(), "body");
}
