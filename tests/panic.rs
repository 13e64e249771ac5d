//! A bug costs one connection, never a core thread (issue 12, item 6): a build with the
//! `fault-injection` feature panics on `GET /__panic`; the connection that asked is closed, every
//! other connection on the same core thread goes on, the panic is logged with its request line,
//! the connection count stays true, and shutdown still completes.
//!
//! Run by the test command as `cargo test --features fault-injection --target-dir target/fault
//! --test panic`.
#![cfg(feature = "fault-injection")]

mod common;

use std::io::{BufReader, Read, Write};
use std::time::{Duration, Instant};

use common::{Server, get, read_response};

#[test]
fn a_panic_costs_one_connection_and_nothing_else() {
    // One core thread: the panic and the other connections share it. No request timeout: a
    // wrong connection count would make shutdown wait forever.
    let server = Server::start(&["--process", "1", "--io-threads", "1", "--request-timeout", "0"]);
    let mut a = server.connect();
    a.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut ra = BufReader::new(a.try_clone().unwrap());
    assert_eq!(read_response(&mut ra, false).expect("a response").text(), "Hello, World!");

    let mut b = server.connect();
    b.write_all(b"GET /__panic?x=%22%0a HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let _ = b.read_to_end(&mut got);
    assert!(got.is_empty(), "no response, the connection closed: {:?}", String::from_utf8_lossy(&got));

    // The same core thread goes on: the old connection and new ones are served.
    a.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert_eq!(
        read_response(&mut ra, false).expect("the old connection still works").text(),
        "Hello, World!"
    );
    assert_eq!(get(&server, "/").status, 200);
    let err = server.stderr_text();
    assert!(err.contains("panicked at") && err.contains("fault injection"), "{err}");
    assert!(err.contains(r#"failed on "GET /__panic?x=%22%0a""#), "{err}");

    // The count of open connections is true: only `a` is open.
    std::thread::sleep(Duration::from_millis(200));
    server.signal(libc::SIGUSR2);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.stderr_text().contains("Open connections: ") {
        assert!(Instant::now() < deadline, "no stats");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(server.stderr_text().contains("Open connections: 1\n"), "{}", server.stderr_text());

    drop(ra);
    drop(a);
    let status = server.stop();
    assert!(status.success(), "{status:?}");
}
