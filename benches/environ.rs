//! Building the WSGI environ for a request, with the embedded interpreter.

use std::sync::Arc;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use pyo3::prelude::*;
use wsgo::handoff::exchange::Exchange;
use wsgo::http::parse_head;
use wsgo::wsgi::environ::{RequestInfo, base_environ, build};
use wsgo::wsgi::input::WsgiInput;

const BROWSER: &[u8] = b"GET /dashboard/reports?tab=summary HTTP/1.1\r\nHost: app.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0.0.0\r\nAccept: text/html,*/*;q=0.8\r\n\
Accept-Encoding: gzip, deflate, br\r\nAccept-Language: en-GB,en;q=0.9\r\n\
Cookie: sessionid=0123456789abcdef; csrftoken=abcdef0123456789\r\nReferer: https://app.example.com/\r\n\r\n";

fn environ(c: &mut Criterion) {
    wsgo::wsgi::interp::start_interpreter().expect("interpreter");
    let (head, len) = parse_head(BROWSER).unwrap().unwrap();
    let head = head.attach(Bytes::copy_from_slice(&BROWSER[..len]));
    let info = RequestInfo {
        head: &head,
        peer: wsgo::client::Peer::Ip("127.0.0.1:50000".parse().unwrap()),
        local: "127.0.0.1:8000".parse().unwrap(),
        https: false,
        park_arg: None,
    };
    Python::attach(|py| {
        let base = base_environ(py, false).unwrap();
        c.bench_function("environ_browser", |b| {
            b.iter(|| {
                let input = Bound::new(py, WsgiInput::new(Bytes::new(), None::<Arc<Exchange>>)).unwrap();
                build(py, &base, &info, input.into_any()).unwrap().len()
            })
        });
    });
}

criterion_group!(benches, environ);
criterion_main!(benches);
