//! What deployers rely on, against the real binary: one instance per address, unix sockets and
//! their files, SIGHUP reopening the access log, the access log's destinations.

mod common;

use std::io::{BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use common::{Server, get, read_response, spawn, wait_with_deadline};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wsgo-deploy-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs wsgo to its exit (it is expected to fail at start); the status, stderr and how long.
fn run_to_exit(args: &[&str]) -> (std::process::ExitStatus, String, Duration) {
    let t0 = Instant::now();
    let (mut child, _out, err) = spawn(args);
    let status = wait_with_deadline(&mut child, Duration::from_secs(20));
    (status, std::fs::read_to_string(err).unwrap_or_default(), t0.elapsed())
}

fn unix_get(path: &Path, target: &str) -> common::Response {
    let mut s = UnixStream::connect(path).expect("connect to the unix socket");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        format!("GET {target} HTTP/1.1\r\nHost: app.example:8080\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    read_response(&mut BufReader::new(s), false).expect("a response")
}

#[test]
fn a_second_instance_on_the_address_fails_and_the_first_keeps_every_request() {
    for mode in [&["--processes", "1"][..], &["--process", "1"][..]] {
        let first = Server::start(mode);
        let addr = first.addr.to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let load = {
            let (stop, ok, failed, addr) = (stop.clone(), ok.clone(), failed.clone(), first.addr);
            std::thread::spawn(move || {
                while !stop.load(SeqCst) {
                    let mut s = TcpStream::connect(addr).unwrap();
                    s.write_all(b"GET /pid HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
                    let mut out = Vec::new();
                    let _ = s.read_to_end(&mut out);
                    let counter = if out.starts_with(b"HTTP/1.1 200") { &ok } else { &failed };
                    counter.fetch_add(1, SeqCst);
                }
            })
        };
        for second in [&["--processes", "2"][..], &["--process", "1"][..]] {
            let mut args = vec!["--module", "testapp", "--http-socket", &addr];
            args.extend_from_slice(second);
            let (status, err, took) = run_to_exit(&args);
            assert_eq!(status.code(), Some(1), "{mode:?} then {second:?}: {err}");
            assert!(
                err.contains(&format!("cannot listen on http://{addr}: Address already in use")),
                "{err}"
            );
            assert!(took < Duration::from_secs(2), "{took:?}");
            // The same port on every interface is the same port.
            let any = format!("0.0.0.0:{}", first.addr.port());
            let (status, err, _) =
                run_to_exit(&["--module", "testapp", "--http-socket", &any, "--process", "1"]);
            assert_eq!(status.code(), Some(1), "{err}");
            assert!(err.contains("Address already in use"), "{err}");
        }
        // The first goes on serving after the attempts.
        let deadline = Instant::now() + Duration::from_secs(10);
        let seen = ok.load(SeqCst);
        while ok.load(SeqCst) < seen + 20 {
            assert!(Instant::now() < deadline, "the first instance stopped serving");
            std::thread::sleep(Duration::from_millis(10));
        }
        stop.store(true, SeqCst);
        load.join().unwrap();
        assert!(ok.load(SeqCst) > 10 && failed.load(SeqCst) == 0, "{ok:?} ok, {failed:?} failed");
        // Every response came from the first instance: its access log has them all.
        let deadline = Instant::now() + Duration::from_secs(5);
        while first.stdout_text().lines().filter(|l| l.contains("GET /pid")).count() < ok.load(SeqCst) {
            assert!(Instant::now() < deadline, "{}", first.stdout_text());
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(first.stop().success());
    }
}

#[test]
fn an_address_someone_else_listens_on_is_refused() {
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = other.local_addr().unwrap().to_string();
    let (status, err, took) = run_to_exit(&["--module", "testapp", "--http-socket", &addr]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("Address already in use"), "{err}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    // Nothing was taken from it: it still accepts.
    other.set_nonblocking(true).unwrap();
    let _c = TcpStream::connect(&addr).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert!(other.accept().is_ok());
}

#[test]
fn a_unix_socket_serves_with_gunicorns_environ_and_its_file_goes_at_exit() {
    let dir = scratch("unix");
    let sock = dir.join("app.sock");
    let spec = format!("unix:{}", sock.display());
    let server = Server::start(&["--http-socket", &spec]);
    let meta = std::fs::symlink_metadata(&sock).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    let r = unix_get(&sock, "/env");
    assert_eq!(r.status, 200);
    let env = r.text();
    // gunicorn's environ for a unix socket: REMOTE_ADDR empty, no REMOTE_PORT; the port the
    // client asked for from Host.
    assert!(env.contains("\"REMOTE_ADDR\": \"\""), "{env}");
    assert!(!env.contains("REMOTE_PORT"), "{env}");
    assert!(env.contains("\"SERVER_PORT\": \"8080\""), "{env}");
    // Over TCP as before.
    let tcp = get(&server, "/env").text();
    assert!(tcp.contains("\"REMOTE_ADDR\": \"127.0.0.1\"") && tcp.contains("REMOTE_PORT"), "{tcp}");
    // A unix socket's peer is a proxy on this host: its X-Forwarded-For names the client (in
    // the access log, the scheduler, blocks); without one the client is this host.
    let mut s = UnixStream::connect(&sock).unwrap();
    s.write_all(
        b"GET /?via-proxy HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 203.0.113.9\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(read_response(&mut BufReader::new(s), false).unwrap().status, 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.stdout_text().contains("203.0.113.9 - - [") {
        assert!(Instant::now() < deadline, "{}", server.stdout_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(server.stdout_text().lines().any(|l| l.starts_with("127.0.0.1 - - [") && l.contains("GET /env")));
    assert!(server.stop().success());
    assert!(!sock.exists(), "the socket file is removed at exit");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_unix_socket_file_is_replaced_only_when_nobody_listens() {
    let dir = scratch("stale");
    let sock = dir.join("app.sock");
    let spec = format!("unix:{}", sock.display());
    // Left behind by a process that is gone: replaced.
    drop(UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let server = Server::start(&["--http-socket", &spec, "--socket-mode", "600", "--process", "1"]);
    assert_eq!(std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(unix_get(&sock, "/").status, 200);
    // Served: a second instance is refused and leaves the file alone.
    let (status, err, _) = run_to_exit(&["--module", "testapp", "--http-socket", &spec]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("Address already in use"), "{err}");
    assert_eq!(unix_get(&sock, "/").status, 200);
    assert!(server.stop().success());
    assert!(!sock.exists());
    // Something that is not a socket is never removed.
    std::fs::write(&sock, "precious").unwrap();
    let (status, err, _) = run_to_exit(&["--module", "testapp", "--http-socket", &spec]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("something other than a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&sock).unwrap(), "precious");
    for bad in ["--socket-mode=999", "--socket-mode=rw"] {
        let (status, err, _) = run_to_exit(&["--module", "testapp", bad]);
        assert_eq!(status.code(), Some(2), "{err}");
        assert!(err.contains("invalid --socket-mode"), "{err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sighup_reopens_the_access_log_of_a_server_process_and_it_keeps_serving() {
    let dir = scratch("rotate");
    let log = dir.join("access.log");
    let spec = log.to_str().unwrap().to_string();
    let server = Server::start(&["--process", "1", "--access-log", &spec]);
    assert_eq!(get(&server, "/?first").status, 200);
    let slow = {
        let addr = server.addr;
        std::thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /sleep?t=1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out);
            out
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    // logrotate: move the file away, then signal.
    std::fs::rename(&log, dir.join("access.log.1")).unwrap();
    server.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.stderr_text().contains("access log reopened") {
        assert!(Instant::now() < deadline, "{}", server.stderr_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    let body = String::from_utf8_lossy(&slow.join().unwrap()).into_owned();
    assert!(body.starts_with("HTTP/1.1 200") && body.ends_with("slept"), "{body}");
    assert_eq!(get(&server, "/?second").status, 200);
    let fresh = || std::fs::read_to_string(&log).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !fresh().contains("GET /?second") {
        assert!(Instant::now() < deadline, "the new file gets the lines: {:?}", fresh());
        std::thread::sleep(Duration::from_millis(20));
    }
    let old = std::fs::read_to_string(dir.join("access.log.1")).unwrap();
    assert!(old.contains("GET /?first") && !old.contains("GET /?second"), "{old}");
    assert!(!server.stdout_text().contains("GET /"), "nothing on stdout: {}", server.stdout_text());
    assert!(!server.stderr_text().contains("shutting down"), "{}", server.stderr_text());
    assert!(server.stop().success());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sigusr2_reports_on_stderr_and_access_off_writes_nothing() {
    let server = Server::start(&["--access-log", "off"]);
    for _ in 0..3 {
        assert_eq!(get(&server, "/").status, 200);
    }
    server.signal(libc::SIGUSR2);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.stderr_text().contains("Request count:") {
        assert!(Instant::now() < deadline, "{}", server.stderr_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.stdout_text(), "", "no access lines, no report on stdout");
    assert!(server.stop().success());
}

#[test]
fn an_unwritable_access_log_fails_at_start() {
    let (status, err, _) =
        run_to_exit(&["--module", "testapp", "--access-log", "/nonexistent-wsgo-dir/access.log"]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("cannot open the access log"), "{err}");
}
