//! `--proxy-protocol` against the real binary: PROXY v1 and v2 headers (IPv4 and IPv6) from a
//! trusted balancer name the client; from anyone else they are refused; requests pipelined behind
//! the header; a header split at every byte; the head timeout; what X-Forwarded-For does after.

mod common;

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Server, closed_within, read_response};

fn v2(family: u8, body: &[u8]) -> Vec<u8> {
    let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    out.push(0x21);
    out.push(family);
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn v2_tcp4() -> Vec<u8> {
    // 172.19.0.1:42578 -> 172.19.0.3:80 (gunicorn's pp_04).
    v2(0x11, &[172, 19, 0, 1, 172, 19, 0, 3, 0xa6, 0x52, 0x00, 0x50])
}

fn v2_tcp6() -> Vec<u8> {
    // [2001:db8::7]:42578 -> [2001:db8::1]:80.
    let mut body = vec![0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
    body.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    body.extend_from_slice(&[0xa6, 0x52, 0x00, 0x50]);
    v2(0x21, &body)
}

/// Sends `bytes` on a new connection and reads one response.
fn send(server: &Server, bytes: &[u8]) -> (common::Response, BufReader<TcpStream>) {
    let mut s = server.connect();
    s.write_all(bytes).unwrap();
    let mut r = BufReader::new(s);
    let resp = read_response(&mut r, false).expect("a response");
    (resp, r)
}

fn env_of(server: &Server, header: &[u8]) -> String {
    let req = [header, b"GET /env HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"].concat();
    let (r, _) = send(server, &req);
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
}

#[test]
fn headers_from_a_trusted_balancer_name_the_client() {
    let server = Server::start(&["--proxy-protocol"]);
    let table: &[(&[u8], &str, &str)] = &[
        (b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n", "192.168.0.1", "56324"),
        (b"PROXY TCP6 2001:db8::7 2001:db8::1 1234 443\r\n", "2001:db8::7", "1234"),
        (&v2_tcp4(), "172.19.0.1", "42578"),
        (&v2_tcp6(), "2001:db8::7", "42578"),
        // UNKNOWN and LOCAL: the peer itself.
        (b"PROXY UNKNOWN\r\n", "127.0.0.1", ""),
        (b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00", "127.0.0.1", ""),
        // No header at all: served as before.
        (b"", "127.0.0.1", ""),
    ];
    for (header, addr, port) in table {
        let env = env_of(&server, header);
        assert!(env.contains(&format!("\"REMOTE_ADDR\": \"{addr}\"")), "{header:?}: {env}");
        if !port.is_empty() {
            assert!(env.contains(&format!("\"REMOTE_PORT\": \"{port}\"")), "{header:?}: {env}");
        }
    }
    // The access log names the client too.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.stdout_text().lines().any(|l| l.starts_with("172.19.0.1 - - [")) {
        assert!(Instant::now() < deadline, "{}", server.stdout_text());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn requests_pipelined_behind_the_header_and_a_header_split_at_every_byte() {
    let server = Server::start(&["--proxy-protocol"]);
    // gunicorn's pp_02: a header, then a keep-alive request with a body and a chunked one.
    let pipelined = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n\
        POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 14\r\n\r\n{\"nom\": \"nom\"}\
        POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n1e\r\nall your base are belong to us\r\n0\r\n\r\n\
        GET /env HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    let (first, mut rd) = send(&server, pipelined);
    assert_eq!(first.text(), "{\"nom\": \"nom\"}");
    assert_eq!(read_response(&mut rd, false).unwrap().text(), "all your base are belong to us");
    let env = read_response(&mut rd, false).unwrap().text();
    assert!(env.contains("\"REMOTE_ADDR\": \"192.168.0.1\""), "{env}");

    for header in [b"PROXY TCP4 10.9.8.7 10.0.0.1 4000 80\r\n".to_vec(), v2_tcp6()] {
        let want = if header[0] == b'P' { "10.9.8.7" } else { "2001:db8::7" };
        for cut in 1..header.len() {
            let mut s = server.connect();
            s.write_all(&header[..cut]).unwrap();
            std::thread::sleep(Duration::from_millis(5));
            s.write_all(&header[cut..]).unwrap();
            s.write_all(b"GET /env HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
            let env = read_response(&mut BufReader::new(s), false).expect("a response").text();
            assert!(env.contains(&format!("\"REMOTE_ADDR\": \"{want}\"")), "cut {cut}: {env}");
        }
    }
}

#[test]
fn a_header_from_an_untrusted_peer_or_a_malformed_one_is_refused() {
    // Loopback is not a trusted proxy here.
    let server = Server::start(&["--proxy-protocol", "--trusted-proxy", "10.0.0.0/8"]);
    for header in [b"PROXY TCP4 203.0.113.7 10.0.0.1 4000 80\r\n".to_vec(), v2_tcp4()] {
        let (r, mut rd) = send(&server, &[&header[..], b"GET /env HTTP/1.1\r\nHost: t\r\n\r\n"].concat());
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.text().contains("not a --trusted-proxy"), "{}", r.text());
        assert!(closed_within(&mut rd, Duration::from_secs(2)));
    }
    // Without a header the same peer is served.
    let (r, _) = send(&server, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 200);

    let trusting = Server::start(&["--proxy-protocol"]);
    let malformed: &[&[u8]] = &[
        b"PROXY TCP4 192.168.0.1 192.16...\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 80 080\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 80 443\nGET / HTTP/1.1\r\nHost: t\r\n\r\n",
        b"\r\n\r\n\0\r\nQUIT\n\x21\x21\x00\x0c\xac\x13\x00\x01\xac\x13\x00\x03\xa6\x52\x00\x50GET / HTTP/1.1\r\n\r\n",
    ];
    for m in malformed {
        let (r, mut rd) = send(&trusting, m);
        assert_eq!(r.status, 400, "{m:?}");
        assert!(r.text().contains("PROXY"), "{}", r.text());
        assert!(closed_within(&mut rd, Duration::from_secs(2)));
    }
    // A v1 line that never ends within its 107 bytes.
    let (r, _) = send(&trusting, &[b"PROXY UNKNOWN ".as_slice(), &[b'x'; 120]].concat());
    assert_eq!(r.status, 400);
    // A header that never completes is cut at the head timeout.
    let mut s = trusting.connect();
    s.write_all(b"PROXY TCP4 192.168.0.1").unwrap();
    let t0 = Instant::now();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(got.is_empty() && t0.elapsed() < Duration::from_secs(5), "{:?} {got:?}", t0.elapsed());
    // The server goes on.
    assert!(env_of(&trusting, b"").contains("127.0.0.1"));
}

#[test]
fn without_the_flag_a_header_is_a_bad_request() {
    let server = Server::start(&[]);
    let (r, _) =
        send(&server, b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 400);
}

#[test]
fn forwarded_for_is_resolved_from_the_balancers_client() {
    let server = Server::start(&["--proxy-protocol"]);
    // The balancer's client is a private proxy (trusted): its X-Forwarded-For names the client.
    let via_proxy = b"PROXY TCP4 10.1.2.3 10.0.0.1 4000 80\r\n\
        GET /?via-proxy HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 203.0.113.9\r\nConnection: close\r\n\r\n";
    assert_eq!(send(&server, via_proxy).0.status, 200);
    // A public client's own X-Forwarded-For is not believed.
    let direct = b"PROXY TCP4 198.51.100.7 10.0.0.1 4000 80\r\n\
        GET /?direct HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 203.0.113.66\r\nConnection: close\r\n\r\n";
    assert_eq!(send(&server, direct).0.status, 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = server.stdout_text();
        let line = |q: &str| log.lines().find(|l| l.contains(q)).map(str::to_string);
        if let (Some(a), Some(b)) = (line("GET /?via-proxy"), line("GET /?direct")) {
            assert!(a.starts_with("203.0.113.9 - - ["), "{a}");
            assert!(b.starts_with("198.51.100.7 - - ["), "{b}");
            break;
        }
        assert!(Instant::now() < deadline, "{log}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_block_applies_to_the_balancers_client_not_the_balancer() {
    let server = Server::start(&["--proxy-protocol"]);
    let via = |client: &str, target: &str| {
        format!(
            "PROXY TCP4 {client} 10.0.0.1 4000 80\r\nGET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
    };
    assert_eq!(send(&server, via("198.51.100.7", "/block-forever?secs=60").as_bytes()).0.status, 200);
    // The blocked client's next request is held (its 429 comes later)...
    let mut blocked = server.connect();
    blocked.write_all(via("198.51.100.7", "/").as_bytes()).unwrap();
    // ...while another client behind the same balancer is served at once.
    assert_eq!(send(&server, via("198.51.100.8", "/").as_bytes()).0.status, 200);
    blocked.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut byte = [0u8; 1];
    assert!(blocked.read(&mut byte).is_err(), "held, not answered at once");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.stderr_text().contains("- blocking 198.51.100.7 for 60 seconds") {
        assert!(Instant::now() < deadline, "{}\n{}", server.stdout_text(), server.stderr_text());
        std::thread::sleep(Duration::from_millis(20));
    }
}
