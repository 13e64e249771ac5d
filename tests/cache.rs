//! The response cache against the real binary: what is stored, what is not, Vary and
//! X-WSGo-Vary-Cookies, lifetimes, HEAD and other methods, and that hits never reach the app.

mod common;

use std::time::{Duration, Instant};

use common::{Response, Server, get, roundtrip};

fn calls(server: &Server) -> u64 {
    // /calls itself counts as one call.
    get(server, "/calls").text().parse::<u64>().expect("a number")
}

fn req(server: &Server, method: &str, target: &str, extra: &str) -> Response {
    let body = if method == "POST" { "Content-Length: 0\r\n" } else { "" };
    roundtrip(
        server,
        format!("{method} {target} HTTP/1.1\r\nHost: test\r\n{body}{extra}Connection: close\r\n\r\n")
            .as_bytes(),
    )
}

/// Whether two GETs of `target` give the same (cached) body.
fn cached(server: &Server, target: &str) -> bool {
    let a = get(server, target);
    let b = get(server, target);
    assert_eq!(a.status, b.status);
    a.body == b.body
}

#[test]
fn hits_are_served_without_the_app() {
    let server = Server::start(&["--max-age", "60"]);
    let first = get(&server, "/cache?cc=max-age=30");
    assert!(first.header("age").is_none());
    let before = calls(&server);
    for _ in 0..20 {
        let r = get(&server, "/cache?cc=max-age=30");
        assert_eq!(r.body, first.body);
        assert_eq!(r.header("age"), Some("0"));
        assert_eq!(r.header("cache-control"), Some("max-age=30"));
        assert_eq!(r.header("content-length"), Some(first.body.len().to_string().as_str()));
    }
    // Only the two /calls requests reached the app.
    assert_eq!(calls(&server), before + 1);
    // HEAD is answered from the GET's entry, without a body.
    let r = req(&server, "HEAD", "/cache?cc=max-age=30", "");
    assert_eq!((r.status, r.body.len()), (200, 0));
    assert_eq!(r.header("content-length"), Some(first.body.len().to_string().as_str()));
    assert_eq!(calls(&server), before + 2);
    // Other methods always reach the app.
    let r = req(&server, "POST", "/cache?cc=max-age=30", "");
    assert!(r.text().contains("method=POST"), "{}", r.text());
    // A HEAD response is never stored for a GET.
    let r = req(&server, "HEAD", "/cache?cc=max-age=30&head-first", "");
    assert_eq!(r.status, 200);
    let r = get(&server, "/cache?cc=max-age=30&head-first");
    assert!(r.text().contains("method=GET"), "{}", r.text());
    // Hits are logged with their status.
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.stdout_text().matches("\"GET /cache?cc=max-age=30 HTTP/1.1\" 200").count() < 21 {
        assert!(Instant::now() < deadline, "hits are logged: {}", server.stdout_text());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn what_is_stored() {
    let server = Server::start(&["--max-age", "60"]);
    let table: &[(&str, bool)] = &[
        ("/cache?cc=max-age=30&t=1", true),
        ("/cache?cc=public,%20max-age=30&t=2", true),
        ("/cache?cc=public,max-age=30&t=3", true),
        ("/cache?cc=Max-Age%3D30&t=4", true),
        ("/cache?cc=max-age=30&s=301%20Moved%20Permanently&t=5", true),
        ("/cache?cc=max-age=30&s=204%20No%20Content&t=6", true),
        ("/cache?cc=max-age=30&stream=1&t=7", true),
        ("/cache?t=8", false),
        ("/cache?cc=max-age=0&t=9", false),
        ("/cache?cc=private,%20max-age=30&t=10", false),
        ("/cache?cc=no-store,%20max-age=30&t=11", false),
        ("/cache?cc=no-cache,%20max-age=30&t=12", false),
        ("/cache?cc=max-age=30&cookie=1&t=13", false),
        ("/cache?cc=max-age=30&s=404%20Not%20Found&t=14", false),
        ("/cache?cc=max-age=30&s=201%20Created&t=15", false),
        ("/cache?cc=max-age=30&vary=*&t=16", false),
        ("/cache?cc=max-age=30&n=999988&t=17", true),
        ("/cache?cc=max-age=30&n=1000008&t=18", false),
        ("/cache?cc=max-age=30&n=1000008&stream=1&t=19", false),
    ];
    for (target, want) in table {
        let before = calls(&server);
        let a = get(&server, target);
        let b = get(&server, target);
        let app_calls = calls(&server) - before - 1;
        if a.status != 204 {
            assert_eq!(a.body == b.body, *want, "{target}");
        }
        assert_eq!(app_calls, if *want { 1 } else { 2 }, "{target}");
    }
    // A body of 5 KB from the cache is whole.
    let r = get(&server, "/cache?cc=max-age=30&n=5000&t=20");
    assert_eq!(get(&server, "/cache?cc=max-age=30&n=5000&t=20").body, r.body);
}

#[test]
fn vary_and_vary_cookies() {
    let server = Server::start(&["--max-age", "60"]);
    let t = "/cache?cc=max-age=30&vary=Cookie&vc=sessionid,%20lang";
    let body = |cookie: &str| {
        let extra = if cookie.is_empty() { String::new() } else { format!("Cookie: {cookie}\r\n") };
        req(&server, "GET", t, &extra)
    };
    let a = body("sessionid=1; track=9");
    assert!(a.header("x-wsgo-vary-cookies").is_none(), "internal header sent");
    assert_eq!(body("track=10;sessionid=1").body, a.body, "other cookies and spacing don't matter");
    assert_eq!(body("sessionid=1").body, a.body);
    assert_ne!(body("sessionid=2").body, a.body);
    let fr = body("lang=fr; sessionid=1");
    assert_ne!(fr.body, a.body);
    assert_eq!(body("sessionid=1; lang=fr").body, fr.body, "cookie order doesn't matter");
    let none = body("");
    assert_eq!(body("").body, none.body);
    assert_eq!(body("unrelated=1").body, none.body);

    let t = "/cache?cc=max-age=30&vary=Accept-Language";
    let lang = |l: &str| req(&server, "GET", t, &format!("Accept-Language: {l}\r\n")).body;
    let en = lang("en");
    assert_eq!(lang("en"), en);
    assert_ne!(lang("fr"), en);
    assert_eq!(req(&server, "GET", t, "").body, req(&server, "GET", t, "").body);
}

#[test]
fn lifetimes_credentials_and_a_small_store() {
    let server = Server::start(&["--max-age", "1", "--cache-size", "20000"]);
    let t = "/cache?cc=max-age=30&life";
    let a = get(&server, t);
    assert_eq!(get(&server, t).body, a.body);
    std::thread::sleep(Duration::from_millis(1100));
    assert_ne!(get(&server, t).body, a.body, "--max-age 1 caps the lifetime");

    // A request with credentials is not stored, but may be served what an anonymous one stored.
    let t = "/cache?cc=max-age=30&auth";
    let x = req(&server, "GET", t, "Authorization: x\r\n");
    let anon = get(&server, t);
    assert_ne!(anon.body, x.body);
    assert_eq!(get(&server, t).body, anon.body);
    assert_eq!(req(&server, "GET", t, "Authorization: y\r\n").body, anon.body);

    // Many entries through a 20 KB store: eviction, and every answer still right.
    for i in 0..60 {
        let t = format!("/cache?cc=max-age=30&n=3000&evict={i}");
        let r = get(&server, &t);
        assert_eq!((r.status, r.body.len()), (200, 3000), "{t}");
    }
    assert!(cached(&server, "/cache?cc=max-age=30&n=3000&evict=59"));
}

#[test]
fn no_cache_without_max_age() {
    let server = Server::start(&[]);
    assert!(!cached(&server, "/cache?cc=max-age=30"));
}
