//! Micro benchmarks of the pure HTTP layer: request heads, chunked bodies, response heads.
//! Throughput in bytes; inputs built outside the timed loop.

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
#[path = "inputs.rs"]
mod inputs;
use inputs::{BROWSER, CURL, chunked_body, response_head};
use wsgo::http::chunked::{ChunkedDecoder, Decoded};
use wsgo::http::parse_head;
use wsgo::http::response::{Framing, encode_head};

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
    let body = chunked_body();
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
    let head = response_head();
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
