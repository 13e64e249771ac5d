//! Runs one micro-benchmark workload N times, for `scripts/perf_check.py`, which runs this under
//! valgrind's callgrind with two values of N: the difference divided by the difference of N is
//! the instruction count of one iteration, repeatable where wall-clock timings are not.
//!
//! Usage: instr_count WORKLOAD N   (WORKLOAD: parse_curl, parse_browser, chunked_64k,
//! encode_head, cache_hit, static_plan)

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
#[path = "../benches/inputs.rs"]
mod inputs;
use inputs::{BROWSER, CURL, chunked_body, response_head};
use wsgo::cache::key::{Selection, key};
use wsgo::cache::{Entry, Store};
use wsgo::http::chunked::{ChunkedDecoder, Decoded};
use wsgo::http::parse_head;
use wsgo::http::response::{Framing, encode_head};
use wsgo::static_files::reply::{Ask, Chosen, plan};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(workload), Some(n)) = (args.get(1), args.get(2).and_then(|n| n.parse::<u64>().ok())) else {
        eprintln!("usage: instr_count WORKLOAD N");
        std::process::exit(2);
    };
    let mut sink = 0usize;
    match workload.as_str() {
        "parse_curl" | "parse_browser" => {
            // A heap copy, as a request arrives: the static's address (and so its alignment,
            // which the UTF-8 check's fast path depends on) moves with the binary's layout.
            let raw = if workload == "parse_curl" { CURL } else { BROWSER }.to_vec();
            for _ in 0..n {
                if let Ok(Some((h, len))) = parse_head(black_box(&raw)) {
                    sink += h.fields.len() + len;
                }
            }
        }
        "chunked_64k" => {
            let body = chunked_body();
            for _ in 0..n {
                let mut buf = BytesMut::from(&body[..]);
                let mut dec = ChunkedDecoder::new();
                while let Ok(Decoded::Data(d)) = dec.decode(&mut buf, usize::MAX) {
                    sink += d.len();
                }
            }
        }
        "encode_head" => {
            let head = response_head();
            let mut out = Vec::with_capacity(512);
            for _ in 0..n {
                out.clear();
                encode_head(&mut out, black_box(&head), Framing::Length(1234), true, 1);
                sink += out.len();
            }
        }
        "cache_hit" => {
            // A fixed hasher: the default one is seeded randomly, which would vary the count.
            let hasher =
                std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default();
            let store = Store::with_hasher(64 << 20, hasher);
            for i in 0..1000 {
                let k = key(false, b"example.com", format!("/page/{i}").as_bytes(), None);
                let e = Entry::new(
                    200,
                    vec![],
                    vec![],
                    false,
                    Bytes::from_static(b"x"),
                    vec![],
                    None,
                    Duration::from_secs(600),
                );
                store.insert(k, e);
            }
            let now = Instant::now();
            for _ in 0..n {
                let k = key(false, black_box(b"example.com"), black_box(b"/page/42"), None);
                sink += store.lookup(&k, now, |_, _| Selection::Absent).map_or(0, |e| e.body.len());
            }
        }
        "static_plan" => {
            let f = Chosen {
                size: 4096,
                mtime: 784_111_777,
                etag: b"\"2ebc6aa1-1000\"",
                last_modified: b"Sun, 06 Nov 1994 08:49:37 GMT",
                content_type: "text/css; charset=utf-8",
                gzip: false,
                vary: true,
            };
            let ask = Ask { range: Some(b"bytes=0-99"), ..Ask::default() };
            for _ in 0..n {
                sink += plan(black_box(&ask), black_box(&f), Some(86400), 1_800_000_000).lines.len();
            }
        }
        other => {
            eprintln!("unknown workload {other:?}");
            std::process::exit(2);
        }
    }
    println!("{sink}");
}
