//! Static files and X-Sendfile against the real binary: what is served, what is never served
//! (traversal, encoded separators, links out of the folder, folders, FIFOs), negotiation,
//! conditional requests, ranges, and that files change visibly.

mod common;

use std::io::BufReader;
use std::io::Write;
use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Response, Server, get, read_response, roundtrip};

/// A web root with known files, removed when dropped.
struct Root {
    base: PathBuf,
    web: PathBuf,
}

impl Root {
    fn new() -> Root {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let base = std::env::temp_dir().join(format!(
            "wsgo-static-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let web = base.join("webroot");
        std::fs::create_dir_all(web.join("sub")).unwrap();
        std::fs::write(web.join("a.txt"), "hello txt\n").unwrap();
        std::fs::write(web.join("style.css"), "body { color: red }\n").unwrap();
        std::fs::write(web.join("style.css.gz"), b"\x1f\x8bnot really gzip").unwrap();
        std::fs::write(web.join("index.html"), "<p>index</p>").unwrap();
        std::fs::write(web.join("sub/page.html"), "<p>page</p>").unwrap();
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(web.join("big.bin"), big).unwrap();
        std::fs::write(base.join("secret.txt"), "SECRET").unwrap();
        symlink("../secret.txt", web.join("escape.txt")).unwrap();
        symlink(base.join("secret.txt"), web.join("abs-escape.txt")).unwrap();
        symlink("/etc", web.join("etc")).unwrap();
        symlink("sub/page.html", web.join("inside.html")).unwrap();
        let fifo = std::ffi::CString::new(web.join("fifo.txt").to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        Root { base, web }
    }

    fn map(&self, prefix: &str) -> String {
        format!("{prefix}={}", self.web.display())
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

fn request(server: &Server, head: &str) -> Response {
    roundtrip(server, format!("{head}\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
}

/// The test app answers unknown paths with a JSON summary: the request reached the app.
fn reached_app(r: &Response) -> bool {
    r.status == 200 && r.text().starts_with("{\"method\"")
}

#[test]
fn files_are_served_with_validators_and_caching_fields() {
    let root = Root::new();
    let server = Server::start(&["--static-map", &root.map("/")]);
    let r = get(&server, "/a.txt");
    assert_eq!((r.status, r.text().as_str()), (200, "hello txt\n"));
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.header("content-length"), Some("10"));
    assert_eq!(r.header("cache-control"), Some("public, max-age=86400"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert!(r.header("vary").is_none());
    let expires = r.header("expires").expect("Expires");
    assert!(expires.ends_with(" GMT"), "{expires}");
    let etag = r.header("etag").expect("ETag").to_string();
    assert!(etag.starts_with('"') && etag.ends_with('"') && !etag.starts_with("W/"), "{etag}");
    let lm = r.header("last-modified").expect("Last-Modified").to_string();

    let r = request(&server, &format!("GET /a.txt HTTP/1.1\r\nIf-None-Match: {etag}"));
    assert_eq!((r.status, r.body.len()), (304, 0));
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    let r = request(&server, &format!("GET /a.txt HTTP/1.1\r\nIf-Modified-Since: {lm}"));
    assert_eq!(r.status, 304);
    let r = request(&server, "GET /a.txt HTTP/1.1\r\nIf-None-Match: \"other\"");
    assert_eq!(r.status, 200);
    let r = request(&server, "GET /a.txt HTTP/1.1\r\nIf-Modified-Since: Thu, 01 Jan 1970 00:00:00 GMT");
    assert_eq!(r.status, 200);

    let r = request(&server, "GET /a.txt HTTP/1.1\r\nRange: bytes=0-2");
    assert_eq!((r.status, r.text().as_str()), (206, "hel"));
    assert_eq!(r.header("content-range"), Some("bytes 0-2/10"));
    let r = request(&server, "GET /a.txt HTTP/1.1\r\nRange: bytes=-4");
    assert_eq!((r.status, r.text().as_str()), (206, "txt\n"));
    let r = request(&server, "GET /a.txt HTTP/1.1\r\nRange: bytes=50-");
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */10"));
    let r = request(&server, &format!("GET /a.txt HTTP/1.1\r\nRange: bytes=0-2\r\nIf-Range: {etag}"));
    assert_eq!(r.status, 206);
    let r = request(&server, "GET /a.txt HTTP/1.1\r\nRange: bytes=0-2\r\nIf-Range: \"stale\"");
    assert_eq!((r.status, r.body.len()), (200, 10));

    let r = request(&server, "HEAD /a.txt HTTP/1.1");
    assert_eq!((r.status, r.header("content-length")), (200, Some("10")));
    assert!(r.body.is_empty());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.stdout_text().contains("\"GET /a.txt HTTP/1.1\" 206 3 ") {
        assert!(Instant::now() < deadline, "static requests are logged: {}", server.stdout_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(server.stdout_text().contains("\"GET /a.txt HTTP/1.1\" 200 10 "));
}

#[test]
fn gzip_siblings_follow_accept_encoding() {
    let root = Root::new();
    let server = Server::start(&["--static-map", &root.map("/")]);
    let gz = std::fs::read(root.web.join("style.css.gz")).unwrap();
    for ae in ["gzip", "br, gzip;q=0.5", "*"] {
        let r = request(&server, &format!("GET /style.css HTTP/1.1\r\nAccept-Encoding: {ae}"));
        assert_eq!(r.body, gz, "{ae}");
        assert_eq!(r.header("content-encoding"), Some("gzip"), "{ae}");
        assert_eq!(r.header("content-type"), Some("text/css; charset=utf-8"));
        assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    }
    for ae in [None, Some("gzip;q=0"), Some("br"), Some("*, gzip;q=0")] {
        let extra = ae.map(|v| format!("\r\nAccept-Encoding: {v}")).unwrap_or_default();
        let r = request(&server, &format!("GET /style.css HTTP/1.1{extra}"));
        assert_eq!(r.text(), "body { color: red }\n", "{ae:?}");
        assert!(r.header("content-encoding").is_none(), "{ae:?}");
        assert_eq!(r.header("vary"), Some("Accept-Encoding"), "{ae:?}");
    }
}

#[test]
fn nothing_outside_the_folder_and_no_special_files() {
    let root = Root::new();
    let server = Server::start(&["--static-map", &root.map("/static"), "--static-map", &root.map("/")]);
    // Links out of the folder, folders, FIFOs, encoded separators: the app answers instead.
    for path in [
        "/escape.txt",
        "/abs-escape.txt",
        "/etc/hostname",
        "/static/etc/passwd",
        "/sub",
        "/sub/",
        "/fifo.txt",
        "/sub%2Fpage.html",
        "/a.txt%00",
        "/missing.css",
    ] {
        let r = get(&server, path);
        assert!(reached_app(&r), "{path}: {} {}", r.status, r.text());
        assert!(!r.text().contains("SECRET"), "{path}");
    }
    // No index files: `/` is the app's.
    assert_eq!(get(&server, "/").text(), "Hello, World!");
    // Dot segments, plain or encoded, are redirected to the clean path: never a file outside.
    for path in
        ["/../secret.txt", "/%2e%2e/secret.txt", "/static/../../secret.txt", "/sub/..%2f..%2fsecret.txt"]
    {
        let r = get(&server, path);
        assert!(!r.text().contains("SECRET"), "{path}: {}", r.text());
        assert!(r.status == 301 || reached_app(&r), "{path}: {}", r.status);
    }
    // Links inside the folder are followed; prefixes match whole segments.
    assert_eq!(get(&server, "/inside.html").text(), "<p>page</p>");
    assert_eq!(get(&server, "/static/sub/page.html").text(), "<p>page</p>");
    assert!(reached_app(&get(&server, "/staticsub/page.html")));
    // Only GET and HEAD read files; other methods go to the app.
    let r = roundtrip(
        &server,
        b"POST /a.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
    );
    assert!(reached_app(&r), "{}", r.text());
}

#[test]
fn big_files_stream_and_changes_show_within_a_second() {
    let root = Root::new();
    let server = Server::start(&["--static-map", &root.map("/"), "--static-max-age", "0"]);
    let want = std::fs::read(root.web.join("big.bin")).unwrap();
    let r = get(&server, "/big.bin");
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert_eq!(r.header("cache-control"), Some("no-cache"));
    assert!(r.header("expires").is_none());
    assert!(r.body == want, "3 MB body differs ({} bytes)", r.body.len());
    let r = request(&server, "GET /big.bin HTTP/1.1\r\nRange: bytes=2000000-2000009");
    assert_eq!(r.body, want[2_000_000..2_000_010]);

    // Several requests for the big file on one keep-alive connection.
    let s = server.connect();
    let mut w = s.try_clone().unwrap();
    let mut rd = BufReader::new(s);
    for _ in 0..3 {
        write!(w, "GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let r = read_response(&mut rd, false).unwrap();
        assert_eq!(r.body.len(), want.len());
    }

    assert_eq!(get(&server, "/a.txt").text(), "hello txt\n");
    std::fs::write(root.web.join("a.txt"), "changed!\n").unwrap();
    std::fs::write(root.web.join("new.txt"), "new\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (a, n) = (get(&server, "/a.txt"), get(&server, "/new.txt"));
        if a.text() == "changed!\n" && n.text() == "new\n" {
            break;
        }
        assert!(Instant::now() < deadline, "changes not seen: {:?} {:?}", a.text(), n.text());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::remove_file(root.web.join("new.txt")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !reached_app(&get(&server, "/new.txt")) {
        assert!(Instant::now() < deadline, "a removed file is still served");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn x_sendfile_serves_the_named_file_with_the_apps_headers() {
    let server = Server::start(&[]);
    let file = std::fs::read(common::apps_dir().join("testapp.py")).unwrap();
    let closes_before: u32 = get(&server, "/close-count").text().parse().unwrap();
    for header in ["X-Sendfile", "X-Accel-Redirect"] {
        let r = get(&server, &format!("/sendfile?f=testapp.py&h={header}"));
        assert_eq!(r.status, 200, "{header}");
        assert_eq!(r.body, file);
        assert_eq!(r.header("x-extra"), Some("kept"));
        assert!(r.header("x-sendfile").is_none() && r.header("x-accel-redirect").is_none());
        assert!(r.header("last-modified").is_some());
        assert_eq!(r.header("content-type"), Some("text/x-python; charset=utf-8"));
    }
    // The iterable's close() was called for each.
    let closes: u32 = get(&server, "/close-count").text().parse().unwrap();
    assert_eq!(closes, closes_before + 2);
    let r = get(&server, "/sendfile?f=testapp.py&ct=application/x-custom");
    assert_eq!(r.header("content-type"), Some("application/x-custom"));
    let r = request(&server, "GET /sendfile?f=testapp.py HTTP/1.1\r\nRange: bytes=0-3");
    assert_eq!((r.status, r.body.as_slice()), (206, &file[..4]));
    assert_eq!(r.header("content-range"), Some(format!("bytes 0-3/{}", file.len()).as_str()));
    let abs = common::apps_dir().join("testapp.py");
    let r = roundtrip(
        &server,
        format!(
            "POST /sendfile?f={} HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
            abs.display()
        )
        .as_bytes(),
    );
    assert_eq!((r.status, r.body.len()), (200, file.len()));
    for missing in ["nonexist", "/tmp", "/dev/null"] {
        let r = get(&server, &format!("/sendfile?f={missing}"));
        assert_eq!((r.status, r.text().as_str()), (404, "404 page not found\n"), "{missing}");
    }
    // The server keeps serving.
    assert_eq!(get(&server, "/").text(), "Hello, World!");
}

#[test]
fn a_file_the_kernel_sends_leaves_the_core_free_and_a_shrinking_one_closes() {
    use std::io::Read;
    let root = Root::new();
    let huge: Vec<u8> = (0..24_000_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(root.web.join("huge.bin"), &huge).unwrap();
    let server = Server::start(&["--static-map", &root.map("/"), "--io-threads", "1"]);

    // A client that asks for 24 MB and does not read: the one core thread serves others.
    let mut stalled = server.connect();
    stalled.write_all(b"GET /huge.bin HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    assert_eq!(get(&server, "/a.txt").text(), "hello txt\n");
    assert!(t0.elapsed() < Duration::from_millis(500), "{:?}", t0.elapsed());
    let r = read_response(&mut BufReader::new(stalled), false).unwrap();
    assert!(r.body == huge, "24 MB body differs ({} bytes)", r.body.len());

    // The file shrinks while it is sent: the response ends early and the connection closes
    // (its Content-Length is not met), the server goes on.
    let mut s = server.connect();
    s.write_all(b"GET /huge.bin HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut first = vec![0u8; 65536];
    let n = s.read(&mut first).unwrap();
    assert!(n > 0);
    std::fs::OpenOptions::new()
        .write(true)
        .open(root.web.join("huge.bin"))
        .unwrap()
        .set_len(1_000_000)
        .unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let got = n + rest.len();
    assert!(got < 24_000_000, "closed before the promised length: {got} bytes");
    assert_eq!(get(&server, "/a.txt").text(), "hello txt\n");
}
