//! Micro benchmarks of the pure HTTP layer: request heads, chunked bodies, response heads.
//! Throughput in bytes; inputs built outside the timed loop.

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use wsgo::http::chunked::{ChunkedDecoder, Decoded};
use wsgo::http::parse_head;
use wsgo::http::response::{Framing, ResponseHead, encode_head};

/// What curl sends: about 80 bytes of head... padded with the headers a proxy adds, ~200 bytes.
const CURL: &[u8] =
    b"GET /api/items?page=2 HTTP/1.1\r\nHost: example.com:8000\r\nUser-Agent: curl/7.88.1\r\n\
Accept: */*\r\nX-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\nX-Request-Id: 6f1c2a9e\r\n\r\n";

/// A browser navigation: about 800 bytes.
const BROWSER: &[u8] = b"GET /dashboard/reports/2026/11?tab=summary&sort=desc HTTP/1.1\r\n\
Host: app.example.com\r\n\
Connection: keep-alive\r\n\
sec-ch-ua: \"Chromium\";v=\"156\", \"Not-A.Brand\";v=\"24\"\r\n\
sec-ch-ua-mobile: ?0\r\n\
sec-ch-ua-platform: \"Linux\"\r\n\
Upgrade-Insecure-Requests: 1\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8\r\n\
Sec-Fetch-Site: same-origin\r\n\
Sec-Fetch-Mode: navigate\r\n\
Sec-Fetch-User: ?1\r\n\
Sec-Fetch-Dest: document\r\n\
Referer: https://app.example.com/dashboard\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-GB,en;q=0.9\r\n\
Cookie: sessionid=0123456789abcdef0123456789abcdef; csrftoken=abcdefABCDEF0123456789abcdefABCDEF; theme=dark\r\n\r\n";

fn heads(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse_head");
    for (name, raw) in [("curl_200B", CURL), ("browser_800B", BROWSER)] {
        g.throughput(Throughput::Bytes(raw.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| parse_head(black_box(raw)).map(|r| r.map(|(h, n)| (h.fields.len(), n))))
        });
    }
    g.finish();
}

fn chunked(c: &mut Criterion) {
    let mut body = Vec::new();
    for _ in 0..64 {
        body.extend_from_slice(b"400\r\n");
        body.extend(std::iter::repeat_n(b'x', 1024));
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let mut g = c.benchmark_group("chunked");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("64x1KiB", |b| {
        b.iter_batched(
            || BytesMut::from(&body[..]),
            |mut buf| {
                let mut dec = ChunkedDecoder::new();
                let mut n = 0;
                while let Ok(Decoded::Data(d)) = dec.decode(&mut buf, usize::MAX) {
                    n += d.len();
                }
                n
            },
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn response_heads(c: &mut Criterion) {
    let head = ResponseHead {
        status: 200,
        lines: b"Content-Type: text/html; charset=utf-8\r\nX-Frame-Options: DENY\r\nVary: Cookie\r\n"
            .to_vec(),
        ..ResponseHead::default()
    };
    let mut out = Vec::with_capacity(512);
    c.bench_function("encode_head", |b| {
        b.iter(|| {
            out.clear();
            encode_head(&mut out, black_box(&head), Framing::Length(1234), true, 1);
            out.len()
        })
    });
}

criterion_group!(benches, heads, chunked, response_heads);
criterion_main!(benches);
