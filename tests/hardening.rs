//! Hardening, round 2 (issue 12), raw bytes against the real binary: no request byte reaches a
//! response head unencoded, Host is validated, slow or vanished clients never pin workers,
//! request bodies, clean children, nothing from the app or a client panics a core thread, the
//! cache key, and protocol details.
//!
//! Each test fails against the build before these changes (run it with `WSGO_TEST_BIN` set to
//! an older binary to see).

mod common;

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;

use common::{Server, closed_within, get, read_response, roundtrip};
use std::time::{Duration, Instant};

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

// ---------- 3. slow clients never pin workers ----------

/// Asserts the server (still the process `pid`) answers a fresh client within a second.
fn answers_promptly(server: &Server, pid: u32) {
    let t0 = Instant::now();
    let r = get(server, "/");
    assert_eq!(r.status, 200, "after {:?}; the server said:\n{}", t0.elapsed(), server.stderr_text());
    assert!(t0.elapsed() < Duration::from_secs(1), "answered after {:?}", t0.elapsed());
    assert_eq!(server.pid(), pid);
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists(), "the process is gone");
    let err = server.stderr_text();
    assert!(!err.contains("stuck"), "{err}");
}

#[test]
fn slow_readers_of_a_large_stream_do_not_pin_workers() {
    let server = Server::start(&["--workers", "2", "--request-timeout", "3", "--log-level", "debug"]);
    let pid = server.pid();
    // Two clients ask for 50 MB each and read nothing.
    let readers: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = server.connect();
            s.write_all(b"GET /generate?n=50000000 HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_secs(14));
    answers_promptly(&server, pid);
    // Their connections were closed at the deadline, their generators closed.
    for mut s in readers {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let got = read_all(&mut s).len();
        assert!(got < 50_000_000, "{got} bytes: the response cannot have been completed");
    }
    let r = get(&server, "/close-count");
    assert_eq!(r.text(), "2", "each generator was closed");
    let err = server.stderr_text();
    assert!(err.contains("did not read or send in time"), "{err}");
}

#[test]
fn slow_uploaders_do_not_pin_workers() {
    let server = Server::start(&["--workers", "2", "--request-timeout", "3"]);
    let pid = server.pid();
    // Two clients send 1.5 of 4 MB, past the pre-buffer, to a view that reads it all, then stall.
    let uploaders: Vec<TcpStream> = (0..2)
        .map(|i| {
            let mut s = server.connect();
            let head =
                format!("POST /read-record?id=up{i} HTTP/1.1\r\nHost: t\r\nContent-Length: 4000000\r\n\r\n");
            s.write_all(head.as_bytes()).unwrap();
            s.write_all(&vec![b'u'; 1_500_000]).unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_secs(14));
    answers_promptly(&server, pid);
    let recorded = get(&server, "/recorded").text();
    for i in 0..2 {
        assert!(recorded.contains(&format!("up{i} OSError after")), "{recorded}");
    }
    for mut s in uploaders {
        assert!(closed_within(&mut s, Duration::from_secs(2)), "the uploader's connection is closed");
    }
}

// ---------- 4. request bodies ----------

#[test]
fn a_large_body_is_read_whole_in_one_call() {
    let server = Server::start(&[]);
    let mut s = server.connect();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let n = 64 << 20;
    let head = format!("POST /md5 HTTP/1.1\r\nHost: t\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n");
    s.write_all(head.as_bytes()).unwrap();
    let body: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
    let writer = {
        let mut s = s.try_clone().unwrap();
        std::thread::spawn(move || s.write_all(&body))
    };
    let r = read_response(&mut BufReader::new(s), false).expect("a response");
    writer.join().unwrap().unwrap();
    let want: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
    let digest = md5_hex(&want);
    assert_eq!(r.text(), format!("{n} {digest}"));

    // One 32 MiB line read with readline(): its pieces are scanned once, not again at each refill.
    let n = 32 << 20;
    let mut s = server.connect();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let head =
        format!("POST /lines?n=2 HTTP/1.1\r\nHost: t\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n");
    s.write_all(head.as_bytes()).unwrap();
    let mut line = vec![b'l'; n];
    line[n - 1] = b'\n';
    let writer = {
        let mut s = s.try_clone().unwrap();
        std::thread::spawn(move || s.write_all(&line))
    };
    let r = read_response(&mut BufReader::new(s), false).expect("a response within the minute");
    writer.join().unwrap().unwrap();
    let text = r.text();
    assert_eq!(text.bytes().filter(|&b| b == b'l').count(), n - 1);
    assert!(text.ends_with(r#"\n", ""]"#), "the line and an empty one: ...{}", &text[text.len() - 20..]);
}

/// MD5 through the test app's interpreter-free twin: Python's hashlib in a child process.
fn md5_hex(data: &[u8]) -> String {
    let mut child = std::process::Command::new("python3")
        .args(["-c", "import hashlib,sys; print(hashlib.md5(sys.stdin.buffer.read()).hexdigest())"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn the_body_can_be_read_after_the_response_started() {
    let server = Server::start(&[]);
    // A GET's body is not pre-read, a POST's past 1 MiB is not: both are read after write().
    let mut s = server.connect();
    s.write_all(b"GET /write-then-read HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello").unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let resp = read_response(&mut r, false).expect("a response");
    assert_eq!(resp.text(), format!("started;5 {}", md5_hex(b"hello")));
    let big = vec![b'b'; 3_000_000];
    let head = format!("POST /write-then-read HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n", big.len());
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&big).unwrap();
    let resp = read_response(&mut r, false).expect("a response on the same connection");
    assert_eq!(resp.text(), format!("started;3000000 {}", md5_hex(&big)));
    // When the head went out the rest of the body was still on its way: the connection could
    // not be promised for another request, and is closed after this one.
    assert_eq!(resp.header("connection"), Some("close"));
    assert!(closed_within(&mut r, Duration::from_secs(2)));
}

/// Closes `s` with a reset (SO_LINGER 0) instead of a FIN.
fn reset(s: TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt on an open socket we own, with a valid linger struct.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(s);
}

#[test]
fn a_request_whose_client_left_while_queued_is_not_run() {
    let server = Server::start(&["--workers", "1"]);
    let busy = {
        let addr = server.addr;
        std::thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /sleep?t=1.5 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
            read_all(&mut s)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let mut closed = server.connect();
    closed.write_all(b"GET /record?id=closed HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    closed.shutdown(std::net::Shutdown::Both).unwrap();
    drop(closed);
    let mut was_reset = server.connect();
    was_reset.write_all(b"GET /record?id=reset HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    reset(was_reset);
    let mut stays = server.connect();
    stays.write_all(b"GET /record?id=stays HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    assert!(String::from_utf8_lossy(&busy.join().unwrap()).contains("slept"));
    assert!(String::from_utf8_lossy(&read_all(&mut stays)).ends_with("recorded"));
    assert_eq!(get(&server, "/recorded").text(), r#"["stays"]"#);
}

#[test]
fn a_running_request_fails_fast_when_its_client_leaves() {
    let server = Server::start(&["--request-timeout", "30"]);
    let mut s = server.connect();
    s.write_all(b"POST /read-record?id=gone HTTP/1.1\r\nHost: t\r\nContent-Length: 4000000\r\n\r\n").unwrap();
    s.write_all(&vec![b'x'; 1_500_000]).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    reset(s);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let recorded = get(&server, "/recorded").text();
        if recorded.contains("gone OSError after") {
            break;
        }
        assert!(Instant::now() < deadline, "the read did not fail: {recorded}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A client that closes while the app computes: the app's next write fails, rather than
    // going into a buffer nobody reads.
    let mut s = server.connect();
    s.write_all(b"GET /sleep-then-write?t=1.5&id=late HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    s.shutdown(std::net::Shutdown::Both).unwrap();
    drop(s);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let recorded = get(&server, "/recorded").text();
        if recorded.contains("late write") {
            assert!(recorded.contains("late write failed"), "{recorded}");
            break;
        }
        assert!(Instant::now() < deadline, "{recorded}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_flood_of_vanishing_clients_does_not_fill_the_queue() {
    let server = Server::start(&["--workers", "1", "--request-timeout", "60"]);
    let busy = {
        let addr = server.addr;
        std::thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /sleep?t=4 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
            read_all(&mut s)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    // 3,000 clients connect, send a request and reset: more than the queue holds.
    for _ in 0..3000 {
        let Ok(mut s) = TcpStream::connect(server.addr) else { continue };
        let _ = s.write_all(b"GET /record?id=flood HTTP/1.1\r\nHost: t\r\n\r\n");
        reset(s);
    }
    std::thread::sleep(Duration::from_millis(300));
    let r = get(&server, "/record?id=after");
    assert_eq!(r.status, 200, "a living client is served after the flood: {}", r.text());
    assert!(String::from_utf8_lossy(&busy.join().unwrap()).contains("slept"));
    let recorded = get(&server, "/recorded").text();
    let flood_runs = recorded.matches("flood").count();
    assert!(flood_runs < 30, "{flood_runs} requests of vanished clients ran: {recorded}");
}

// ---------- 6. nothing from the app or a client panics a core thread ----------

#[test]
fn durations_from_the_app_are_clamped() {
    // One core thread: a panic there would take every connection and the listener.
    let server = Server::start(&["--process", "1", "--io-threads", "1", "--request-timeout", "0"]);
    let mut other = server.connect();
    other.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut ro = BufReader::new(other.try_clone().unwrap());
    assert_eq!(read_response(&mut ro, false).expect("a response").status, 200);
    // A park as long as u64 seconds; it waits, and is woken as any other.
    let mut parked = server.connect();
    parked.write_all(b"GET /park-forever?channel=huge HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // A block as long as i64 seconds, from a public client behind the (trusted) loopback proxy.
    let r = roundtrip(
        &server,
        b"GET /block-forever HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 8.8.8.8\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let mut blocked = server.connect();
    blocked
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 8.8.8.8\r\nConnection: close\r\n\r\n")
        .unwrap();
    // The core thread is alive: the old connection and new ones are served.
    other.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut ro, false).expect("the old connection works").status, 200);
    assert_eq!(get(&server, "/notify?channel=huge&action=2").text(), "1");
    let r = read_response(&mut BufReader::new(parked), false).expect("the parked request is answered");
    assert_eq!(r.status, 204);
    // The blocked client's request is held (its 429 comes after at most 25 s).
    blocked.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut byte = [0u8; 1];
    assert!(blocked.read(&mut byte).is_err(), "held, not answered at once");
    assert!(!server.stderr_text().contains("panicked"), "{}", server.stderr_text());
}

// ---------- 7. the cache key and cookies ----------

fn fetch(server: &Server, target: &str, extra: &str) -> common::Response {
    let raw = format!("GET {target} HTTP/1.1\r\nHost: t\r\n{extra}Connection: close\r\n\r\n");
    roundtrip(server, raw.as_bytes())
}

#[test]
fn the_cache_key_keeps_path_query_and_scheme_apart() {
    let server = Server::start(&["--max-age", "60"]);
    let stored = fetch(&server, "/cache?cc=max-age=60", "");
    assert_eq!(fetch(&server, "/cache?cc=max-age=60", "").text(), stored.text(), "a hit");
    // The same bytes once decoded, but another request: the app sees PATH_INFO
    // "/cache?cc=max-age=60" and no query.
    let other = fetch(&server, "/cache%3Fcc=max-age=60", "");
    assert!(other.header("age").is_none(), "not served the other's response: {:?}", other.headers);
    assert_ne!(other.text(), stored.text());
    // https (from a trusted proxy) is another key.
    let https = fetch(&server, "/cache?cc=max-age=60", "X-Forwarded-Proto: https\r\n");
    assert!(https.header("age").is_none());
    assert_ne!(https.text(), stored.text());
}

#[test]
fn cookies_read_differently_by_the_frameworks_bypass_the_cache() {
    let server = Server::start(&["--max-age", "60"]);
    let url = "/cache?cc=max-age=60&vary=Cookie&vc=lang";
    // Ambiguous: not stored...
    let a = fetch(&server, url, "Cookie: lang=fr; lang=de\r\n");
    let fr = fetch(&server, url, "Cookie: lang=fr\r\n");
    assert_ne!(a.text(), fr.text(), "the ambiguous response was stored for lang=fr");
    assert_eq!(fetch(&server, url, "Cookie: lang=fr\r\n").text(), fr.text(), "lang=fr is cached");
    // ...and not served from the cache either.
    for header in ["lang=fr; lang=de", "\u{a0}lang=de", "lang", "x=\"a;lang=fr\""] {
        let r = roundtrip(
            &server,
            format!("GET {url} HTTP/1.1\r\nHost: t\r\nCookie: {header}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
        assert!(r.header("age").is_none(), "{header:?} was served from the cache");
    }
}

// ---------- 8. protocol details ----------

#[test]
fn not_modified_carries_no_content_length() {
    let dir = std::env::temp_dir().join(format!("wsgo-hardening-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a.txt"), "hello\n").unwrap();
    let server = Server::start(&["--static-map", &format!("/static={}", dir.display())]);
    let first = fetch(&server, "/static/a.txt", "");
    let etag = first.header("etag").expect("an ETag").to_string();
    let r = fetch(&server, "/static/a.txt", &format!("If-None-Match: {etag}\r\n"));
    assert_eq!(r.status, 304);
    assert!(r.header("content-length").is_none(), "{:?}", r.headers);
    let r = fetch(&server, "/status?s=304%20Not%20Modified", "");
    assert_eq!(r.status, 304);
    assert!(r.header("content-length").is_none(), "{:?}", r.headers);
    // The encoded-separator rule looks at the path only: this is the file.
    let r = fetch(&server, "/static/a.txt?v=a%2Fb", "");
    assert_eq!((r.status, r.text().as_str()), (200, "hello\n"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn no_100_continue_to_an_http_1_0_client() {
    let server = Server::start(&[]);
    let mut s = server.connect();
    s.write_all(b"POST /echo HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    s.write_all(b"hello").unwrap();
    let text = String::from_utf8_lossy(&read_all(&mut s)).into_owned();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(!text.contains("100 Continue"), "{text}");
    assert!(text.ends_with("\r\n\r\nhello"), "{text}");
}

#[test]
fn x_sendfile_keeps_the_apps_content_encoding() {
    let server = Server::start(&[]);
    let r = get(&server, "/sendfile?f=testapp.py&s=200%20OK&ce=gzip");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), Some("gzip"), "{:?}", r.headers);
}

#[test]
fn an_exception_in_close_after_a_complete_body_keeps_the_response() {
    let server = Server::start(&[]);
    let r = get(&server, "/raise-in-close");
    assert_eq!((r.status, r.text().as_str()), (200, "x"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.stderr_text().contains("boom in close") {
        assert!(Instant::now() < deadline, "the exception goes to stderr");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(get(&server, "/").status, 200);
}

/// A FIFO in a folder of its own (removed by the caller), and its read end, opened without
/// waiting: opened first, since a process opening a FIFO to write waits for a reader.
fn fifo(name: &str) -> (std::path::PathBuf, std::path::PathBuf, std::fs::File) {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = std::env::temp_dir().join(format!("wsgo-fifo-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.fifo"));
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: mkfifo with a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let reader = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(&path).unwrap();
    (dir, path, reader)
}

/// An access log nobody reads (here a FIFO whose reader reads nothing; in the wild a stdout pipe
/// whose reader stalled) used to stop the server: a core thread blocked writing its lines stopped
/// serving every connection it held. Now the core threads never write themselves: requests go on
/// being answered, lines beyond the writer's queue are dropped, and the server says how many.
#[test]
fn an_access_log_nobody_reads_does_not_stop_the_server() {
    let (dir, path, mut reader) = fifo("access");
    let server = Server::start(&["--access-log", path.to_str().unwrap()]);
    // ~2 KB lines: 4,000 of them are 8 MB against a 64 KiB pipe and the writer's 4 MiB queue.
    let ua = "u".repeat(2000);
    let mut r = BufReader::new(server.connect());
    let t0 = Instant::now();
    for i in 0..4000 {
        let req = format!("GET /?n={i} HTTP/1.1\r\nHost: t\r\nUser-Agent: {ua}\r\n\r\n");
        r.get_mut().write_all(req.as_bytes()).unwrap();
        let resp = read_response(&mut r, false).unwrap_or_else(|| panic!("request {i} unanswered"));
        assert_eq!(resp.status, 200);
    }
    assert!(t0.elapsed() < Duration::from_secs(60), "{:?}", t0.elapsed());
    // Once read, the log flows again: lines arrive and the server says how many it dropped.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut lines, mut buf) = (0, vec![0; 1 << 16]);
    while !server.stderr_text().contains("access-log lines dropped") {
        assert!(Instant::now() < deadline, "no word of dropped lines: {}", server.stderr_text());
        match reader.read(&mut buf) {
            Ok(n) => lines += buf[..n].iter().filter(|&&b| b == b'\n').count(),
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    assert!(lines > 0, "no line came through");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The same for the core threads' diagnostics: a stderr nobody reads held a core thread in its
/// write of a warning. Now they go through a writer thread too.
#[test]
fn a_stderr_nobody_reads_does_not_stop_the_server() {
    let (dir, path, mut reader) = fifo("stderr");
    let stderr = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    let mut child = std::process::Command::new(common::binary())
        .args([
            "--module",
            "testapp",
            "--http-socket",
            "127.0.0.1:0",
            "--workers",
            "4",
            "--request-timeout",
            "1",
        ])
        .current_dir(common::apps_dir())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut text = String::new();
    // Reads what is there; false once the writers are gone.
    let mut read_some = move |text: &mut String| {
        let mut buf = vec![0; 1 << 16];
        match reader.read(&mut buf) {
            Ok(0) => return false,
            Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
        true
    };
    // The start-up lines are read, up to the address; then nothing more until the end.
    let deadline = Instant::now() + Duration::from_secs(20);
    let addr: std::net::SocketAddr = loop {
        read_some(&mut text);
        if let Some(a) =
            text.lines().find_map(|l| l.split(" on http://").nth(1)?.split(' ').next()?.parse().ok())
        {
            break a;
        }
        assert!(Instant::now() < deadline, "no address: {text}");
    };
    // Each response is shorter than its Content-Length: a core thread warns for each, 3,000
    // lines (~240 KB) against a 64 KiB pipe.
    for i in 0..3000 {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /short-cl HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let got = read_all(&mut s);
        assert!(
            got.starts_with(b"HTTP/1.1 200"),
            "request {i} unanswered: {:?}",
            String::from_utf8_lossy(&got)
        );
    }
    // The pipe is full now. A request past its timeout makes the monitor warn, which it does
    // holding the GIL: the app goes on answering (on another worker).
    let sleeper = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(b"GET /sleep?t=2 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
        read_all(&mut s)
    });
    std::thread::sleep(Duration::from_millis(1500));
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    let got = read_all(&mut s);
    assert!(got.starts_with(b"HTTP/1.1 200"), "the app stopped answering after the timeout's warning");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !text.contains("Task timed out!") || text.matches("but its Content-Length says").count() < 3000 {
        assert!(
            Instant::now() < deadline,
            "{} warnings",
            text.matches("but its Content-Length says").count()
        );
        read_some(&mut text);
    }
    // The timed-out request's worker printed its traceback itself (Python writes a Python
    // thread's output): read now, it answers.
    assert!(sleeper.join().unwrap().starts_with(b"HTTP/1.1 504"));
    // SAFETY: kill(2) on the pid of a child we started and have not reaped yet.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    // Read on, so that the exit's own lines do not wait for a reader.
    let reading = std::thread::spawn(move || {
        let mut rest = String::new();
        while read_some(&mut rest) {}
    });
    common::wait_with_deadline(&mut child, Duration::from_secs(20));
    reading.join().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A field of /proc/PID/status or /proc/PID/limits, as a number.
fn proc_number(pid: u32, file: &str, field: &str, column: usize) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).expect("proc file");
    let line = text.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("no {field} in {file}"));
    line[field.len()..].split_whitespace().nth(column).and_then(|v| v.parse().ok()).expect("a number")
}

/// A first touch of a 2 MiB transparent huge page zeroes all of it in one fault, with requests
/// waiting (4-9 ms on a VM): a server process runs with them off.
#[test]
fn a_server_process_runs_without_transparent_huge_pages() {
    let server = Server::start(&["--process", "1"]);
    let pid = server.pid();
    assert_eq!(proc_number(pid, "status", "THP_enabled:", 0), 0, "THP still on for the server process");
    assert_eq!(get(&server, "/").status, 200);
}

/// `MIMALLOC_ALLOW_THP` (any value) leaves the process as it was started: with the setting it
/// inherited, here this test's own.
#[test]
fn mimalloc_allow_thp_keeps_transparent_huge_pages() {
    let own = proc_number(std::process::id(), "status", "THP_enabled:", 0);
    let server = Server::start_with_env(&["--process", "1"], &[("MIMALLOC_ALLOW_THP", "1")]);
    assert_eq!(proc_number(server.pid(), "status", "THP_enabled:", 0), own, "the server changed THP");
    assert_eq!(get(&server, "/").status, 200);
}

/// The kernel grows a process's descriptor table by doubling when a new descriptor does not fit,
/// and in a process with threads each growth first waits for an RCU grace period, in the call
/// that opened the descriptor: a core thread's accept4, with all its connections waiting (the
/// first 256 connections of a new process got their first response after 12-26 ms, against
/// 2-3 ms once the table had grown). The server grows the table once at its start, before it
/// has threads: room for --max-connections and 1,024 more.
#[test]
fn the_descriptor_table_is_grown_before_the_first_connection() {
    let server = Server::start(&["--process", "1", "--max-connections", "3000"]);
    let pid = server.pid();
    let slots = proc_number(pid, "status", "FDSize:", 0);
    let limit = proc_number(pid, "limits", "Max open files", 0);
    assert!(slots >= 4024.min(limit), "descriptor table of {slots} slots (open-file limit {limit})");
    // Connections beyond what a small table held are served as before.
    let mut open: Vec<TcpStream> = (0..300).map(|_| server.connect()).collect();
    for s in open.iter_mut() {
        s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").expect("send");
    }
    for s in open.iter_mut() {
        let r = read_response(&mut BufReader::new(s), false).expect("a response");
        assert_eq!(r.status, 200);
    }
    assert_eq!(proc_number(pid, "status", "FDSize:", 0), slots, "no growth while serving");
    server.stop();
}
