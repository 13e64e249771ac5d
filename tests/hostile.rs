//! Hostile clients against the real binary: the request-smuggling catalogue, slowloris, slow
//! readers and uploaders, and connection floods. The server must answer each with its 4xx and a
//! close, never process what was pipelined behind a rejected request, and keep serving everyone
//! else promptly.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Server, closed_within, get};

fn read_all(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// Raises this process's open-file limit (servers started after inherit it).
fn raise_fd_limit(want: u64) {
    // SAFETY: getrlimit/setrlimit with a valid rlimit struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max.min(want.max(lim.rlim_cur));
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
}

#[test]
fn smuggling_attempts_are_refused_and_nothing_behind_them_runs() {
    let server = Server::start(&[]);
    let post = |extra: &str, body: &str| format!("POST /echo HTTP/1.1\r\nHost: t\r\n{extra}\r\n{body}");
    let table: Vec<(String, u16)> = vec![
        // Content-Length and Transfer-Encoding together (CL.TE / TE.CL).
        (post("Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"), 400),
        (post("Transfer-Encoding: chunked\r\nContent-Length: 4\r\n", "0\r\n\r\n"), 400),
        // Repeated or differing Content-Length, and its grammar.
        (post("Content-Length: 4\r\nContent-Length: 5\r\n", "abcd"), 400),
        (post("Content-Length: 4, 4\r\n", "abcd"), 400),
        (post("Content-Length: +4\r\n", "abcd"), 400),
        (post("Content-Length: 0x10\r\n", "abcd"), 400),
        (post("Content-Length: 4 4\r\n", "abcd"), 400),
        (post("Content-Length: 99999999999999999999999\r\n", ""), 400),
        (post("Content-Length: \r\n", ""), 400),
        // Transfer-Encoding lists and look-alikes.
        // Not ending in chunked: the length cannot be known (RFC 9112 §6.3): 400.
        (post("Transfer-Encoding: chunked, identity\r\n", "0\r\n\r\n"), 400),
        (post("Transfer-Encoding: xchunked\r\n", "0\r\n\r\n"), 400),
        (post("Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n", "0\r\n\r\n"), 400),
        // Ending in chunked after a coding we do not implement: 501.
        (post("Transfer-Encoding: gzip, chunked\r\n", "0\r\n\r\n"), 501),
        (post("Transfer-Encoding : chunked\r\n", "0\r\n\r\n"), 400),
        ("POST /echo HTTP/1.0\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".into(), 400),
        // Chunk sizes: empty, prefixed, too long, negative.
        (post("Transfer-Encoding: chunked\r\n", "\r\nabc\r\n0\r\n\r\n"), 400),
        (post("Transfer-Encoding: chunked\r\n", "0x3\r\nabc\r\n0\r\n\r\n"), 400),
        (post("Transfer-Encoding: chunked\r\n", "+3\r\nabc\r\n0\r\n\r\n"), 400),
        (post("Transfer-Encoding: chunked\r\n", "-3\r\nabc\r\n0\r\n\r\n"), 400),
        (post("Transfer-Encoding: chunked\r\n", "00000000000000003\r\nabc\r\n0\r\n\r\n"), 413),
        // Chunk extensions and trailers with bare CR/LF, or too long.
        (post("Transfer-Encoding: chunked\r\n", "3;a=\rb\r\nabc\r\n0\r\n\r\n"), 400),
        (post("Transfer-Encoding: chunked\r\n", "3\nabc\r\n0\r\n\r\n"), 400),
        (post("Transfer-Encoding: chunked\r\n", &format!("3;{}\r\nabc\r\n0\r\n\r\n", "e".repeat(5000))), 400),
        (post("Transfer-Encoding: chunked\r\n", "3\r\nabc\r\n0\r\nX: a\rb\r\n\r\n"), 400),
        (post("Transfer-Encoding: chunked\r\n", "3\r\nabcXX0\r\n\r\n"), 400),
        // Header syntax: bare LF or CR, obs-fold, space before the colon, NUL and DEL in values.
        ("GET / HTTP/1.1\r\nHost: t\nX: 1\r\n\r\n".into(), 400),
        ("GET / HTTP/1.1\r\nHost: t\rX: 1\r\n\r\n".into(), 400),
        ("GET / HTTP/1.1\r\nHost: t\r\nX: 1\r\n  2\r\n\r\n".into(), 400),
        ("GET / HTTP/1.1\r\nHost: t\r\nX : 1\r\n\r\n".into(), 400),
        ("GET / HTTP/1.1\r\nHost: t\r\nX: a\0b\r\n\r\n".into(), 400),
        ("GET / HTTP/1.1\r\nHost: t\r\nX: a\x7fb\r\n\r\n".into(), 400),
        // Host: missing, repeated, or contradicting an absolute-form target's.
        ("GET / HTTP/1.1\r\n\r\n".into(), 400),
        ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".into(), 400),
        // Over-long method, target, version.
        (format!("{} / HTTP/1.1\r\nHost: t\r\n\r\n", "G".repeat(9000)), 400),
        (format!("{} / HTTP/1.1\r\nHost: t\r\n\r\n", "G".repeat(40)), 400),
        (format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(9000)), 414),
        (format!("GET / HTTP/1.{}\r\nHost: t\r\n\r\n", "1".repeat(100)), 400),
    ];
    let mut wrong = Vec::new();
    for (raw, status) in &table {
        let mut s = server.connect();
        let mut bytes = raw.clone().into_bytes();
        bytes.extend_from_slice(b"GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n");
        let _ = s.write_all(&bytes);
        let text = String::from_utf8_lossy(&read_all(&mut s)).into_owned();
        let first = text.lines().next().unwrap_or("");
        let shown = &raw[..raw.len().min(90)];
        if !first.starts_with(&format!("HTTP/1.1 {status} ")) {
            wrong.push(format!("{shown:?}: want {status}, got {first:?}"));
            continue;
        }
        assert!(text.contains("Connection: close\r\n"), "{shown:?}: {text}");
        assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{shown:?}: answered twice: {text}");
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // Nothing pipelined behind a rejected request reached the app.
    std::thread::sleep(Duration::from_millis(300));
    assert!(!server.stdout_text().contains("/smuggled"), "a smuggled request ran");
    assert_eq!(get(&server, "/").text(), "Hello, World!");
}

#[test]
fn slowloris_does_not_delay_others_and_is_cut_off_by_the_head_timeout() {
    raise_fd_limit(4096);
    let server = Server::start(&[]);
    let started = Instant::now();
    let mut slow: Vec<TcpStream> = (0..1000).filter_map(|_| TcpStream::connect(server.addr).ok()).collect();
    assert!(slow.len() >= 990, "only {} connections", slow.len());
    for s in &mut slow {
        let _ = s.write_all(b"GET / HTTP/1.1\r\nHo");
    }
    // A fresh client is served promptly while the 1,000 dribble.
    let mut worst = Duration::ZERO;
    for _ in 0..5 {
        let t0 = Instant::now();
        assert_eq!(get(&server, "/").text(), "Hello, World!");
        worst = worst.max(t0.elapsed());
        for s in &mut slow {
            let _ = s.write_all(b"s");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(worst < Duration::from_millis(500), "a fresh request took {worst:?}");
    // Each dribbler is closed by the 2 s head timeout.
    let mut open = 0;
    for s in &mut slow {
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let left = Duration::from_secs(4).saturating_sub(started.elapsed());
        if !closed_within(s, left.max(Duration::from_millis(50))) {
            open += 1;
        }
    }
    assert_eq!(open, 0, "{open} slowloris connections outlived the head timeout");
    assert_eq!(get(&server, "/").text(), "Hello, World!");
}

#[test]
fn slow_readers_and_uploaders_hold_no_worker() {
    let server = Server::start(&["--workers", "1"]);
    // A 40 MB response nobody reads.
    let mut reader = server.connect();
    reader.write_all(b"GET /big?n=40000000 HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut head = [0u8; 64];
    let _ = reader.read(&mut head);
    // An upload trickling in.
    let mut uploader = server.connect();
    uploader.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\nabc").unwrap();
    for _ in 0..5 {
        let t0 = Instant::now();
        assert_eq!(get(&server, "/").text(), "Hello, World!");
        assert!(t0.elapsed() < Duration::from_millis(500), "the only worker is held: {:?}", t0.elapsed());
        uploader.write_all(b"x").unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_connection_limit_makes_new_connections_wait_and_keeps_old_ones_working() {
    let server = Server::start(&["--max-connections", "20", "--io-threads", "1"]);
    let mut held: Vec<TcpStream> = (0..20).map(|_| server.connect()).collect();
    // Make sure the server has accepted them all: each answers one request.
    for s in &mut held {
        s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let mut buf = [0u8; 256];
        assert!(s.read(&mut buf).unwrap() > 0);
    }
    // The 21st waits in the backlog.
    let mut waiting = server.connect();
    waiting.set_read_timeout(Some(Duration::from_millis(600))).unwrap();
    waiting.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    let mut buf = [0u8; 256];
    assert!(waiting.read(&mut buf).is_err(), "served beyond the limit");
    // Existing connections keep working.
    held[0].write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert!(held[0].read(&mut buf).unwrap() > 0);
    // One closes: the waiting one is served.
    drop(held.pop());
    waiting.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let text = String::from_utf8_lossy(&read_all(&mut waiting)).into_owned();
    assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
    assert!(server.stderr_text().contains("--max-connections"), "the limit is logged");
}

#[test]
fn broken_apps_get_their_status_and_the_process_keeps_serving() {
    let server = Server::start(&["--request-timeout", "2"]);
    // Not iterable, start_response twice: 500 before the first byte.
    for path in ["/not-iterable", "/start-twice"] {
        let r = get(&server, path);
        assert_eq!(r.status, 500, "{path}: {}", r.text());
    }
    // A generator that spins after its first chunk: interrupted at the timeout, the response
    // aborted (no terminating chunk), the worker back.
    let t0 = Instant::now();
    let r = get(&server, "/spin-gen");
    assert_eq!(r.status, 200);
    assert!(!r.complete && r.text() == "started;", "{:?}", r.text());
    assert!(t0.elapsed() < Duration::from_secs(5));
    // A huge header set (5,000 headers, ~550 KB) is sent whole.
    let r = get(&server, "/huge-headers");
    assert_eq!((r.status, r.headers.len() > 5000), (200, true));
    assert_eq!(r.text(), "many headers");
    let err = server.stderr_text();
    assert!(err.contains("Traceback") && err.contains("RequestTimeoutException"), "{err}");
    assert_eq!(get(&server, "/").text(), "Hello, World!");
}

#[test]
fn at_the_descriptor_limit_accept_backs_off_and_existing_connections_keep_working() {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let stderr = std::env::temp_dir().join(format!("wsgo-fdlimit-{}.err", std::process::id()));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wsgo"));
    cmd.args(["--module", "testapp", "--http-socket", "127.0.0.1:0", "--workers", "2", "--process", "1"])
        .current_dir(common::apps_dir())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap());
    // SAFETY: setrlimit is async-signal-safe; it runs in the child before exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit { rlim_cur: 96, rlim_max: 96 };
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let addr: std::net::SocketAddr = loop {
        let text = std::fs::read_to_string(&stderr).unwrap_or_default();
        if let Some(a) =
            text.lines().find_map(|l| l.split(" on http://").nth(1)).and_then(|r| r.split(' ').next())
        {
            break a.parse().unwrap();
        }
        assert!(Instant::now() < deadline, "no start: {text}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut first = TcpStream::connect(addr).unwrap();
    first.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 512];
    first.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert!(first.read(&mut buf).unwrap() > 0);
    // Far more connections than descriptors left, each with the start of a request (a silent
    // one would stay with the kernel: connections are handed over with their first bytes).
    let flood: Vec<TcpStream> = (0..150)
        .filter_map(|_| {
            let mut s = TcpStream::connect(addr).ok()?;
            s.write_all(b"GET / HTTP/1.1\r\n").ok()?;
            Some(s)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    // The connection we had still works.
    first.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let n = first.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200 "));
    let err = std::fs::read_to_string(&stderr).unwrap_or_default();
    assert!(err.contains("accept failed"), "the limit is logged: {err}");
    // Once the flood is gone, new clients are served again.
    drop(flood);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ok = TcpStream::connect(addr).ok().and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").ok()?;
            let mut out = Vec::new();
            s.read_to_end(&mut out).ok()?;
            Some(out.starts_with(b"HTTP/1.1 200 "))
        });
        if ok == Some(true) {
            break;
        }
        assert!(Instant::now() < deadline, "not serving after the flood");
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: kill(2) on the pid of our child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    let _ = std::fs::remove_file(&stderr);
}

/// A rush of new connections after a pause finds the memory the last rush used: the allocator
/// keeps its free memory for 10 s (`server::KEEP_FREE_MEMORY_MS`). With mimalloc's own delay
/// (1 s, the same server started with `MIMALLOC_PURGE_DELAY=1000`) the memory went back to the
/// system between the rushes and each page of it was faulted in again during the next one.
#[test]
fn a_rush_after_a_pause_reuses_the_memory_of_the_last() {
    const N: usize = 512;
    raise_fd_limit(N as u64 + 256);
    // Minor page faults of the server during a rush that comes 2 s after two others.
    let faults_of_a_late_rush = |env: &[(&str, &str)]| {
        let server = Server::start_with_env(&["--process", "1", "--io-threads", "1", "--workers", "2"], env);
        // Keep-alive connections, each sending one request at once; the client closes them all
        // once every response is in.
        let rush = || {
            let mut conns: Vec<_> = (0..N).map(|_| std::io::BufReader::new(server.connect())).collect();
            for c in &mut conns {
                c.get_mut().write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").expect("send");
            }
            for (i, c) in conns.iter_mut().enumerate() {
                let resp = common::read_response(c, false)
                    .unwrap_or_else(|| panic!("no response on connection {i}"));
                assert_eq!((resp.status, resp.text()), (200, "Hello, World!".to_string()), "connection {i}");
            }
        };
        rush();
        rush();
        std::thread::sleep(Duration::from_millis(2500));
        let before = server.minor_faults();
        rush();
        let faults = server.minor_faults() - before;
        assert!(server.stop().success());
        faults
    };
    let kept = faults_of_a_late_rush(&[]);
    let returned = faults_of_a_late_rush(&[("MIMALLOC_PURGE_DELAY", "1000")]);
    assert!(
        kept * 4 < returned,
        "a rush 2 s after the last faulted {kept} pages in (with the memory returned after 1 s: {returned})"
    );
}

/// Thousands of idle keep-alive connections: past 1,000 on a core thread, a connection idle for
/// a second rests (gives back its buffers and request state), and wakes for its next request;
/// a stop closes resting connections at once.
#[test]
fn idle_connections_rest_and_wake_for_their_next_request() {
    use std::io::BufReader;
    const N: usize = 3000;
    raise_fd_limit(2 * N as u64 + 256);
    let server = Server::start(&["--process", "1", "--io-threads", "1", "--workers", "2"]);
    let ask = |r: &mut BufReader<TcpStream>, i: usize| {
        r.get_mut().write_all(format!("GET /?n={i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes()).expect("send");
        let resp = common::read_response(r, false).unwrap_or_else(|| panic!("no response on connection {i}"));
        assert_eq!((resp.status, resp.text()), (200, "Hello, World!".to_string()), "connection {i}");
    };
    for _ in 0..50 {
        get(&server, "/");
    }
    let before = server.rss_kib();
    let mut conns: Vec<_> = (0..N)
        .map(|i| {
            let mut r = BufReader::new(server.connect());
            ask(&mut r, i);
            r
        })
        .collect();
    // Awake, each costs ~15 KB (README, "How it grows"): 44 MB for all; resting, the 2,000 past
    // the first 1,000 cost ~3 KB. Resting begins 1 s after a connection's request, the memory
    // leaves ~1 s after the last rest.
    let limit = 26 * 1024;
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut grown = server.rss_kib().saturating_sub(before);
    while grown >= limit && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        grown = server.rss_kib().saturating_sub(before);
    }
    assert!(grown < limit, "{N} idle connections grew the server by {grown} KiB");
    for (i, r) in conns.iter_mut().enumerate().rev() {
        ask(r, i);
    }
    std::thread::sleep(Duration::from_millis(1600));
    let stopping = Instant::now();
    assert!(server.stop().success());
    assert!(stopping.elapsed() < Duration::from_secs(5), "the stop took {:?}", stopping.elapsed());
    for (i, r) in conns.iter_mut().enumerate() {
        assert!(
            closed_within(r.get_mut(), Duration::from_secs(1)),
            "connection {i} still open after the stop"
        );
    }
}
