//! The response cache's lookup, which every core thread runs for every GET when the cache is on:
//! its cost on one thread, and whether two threads looking up at once slow each other down (the
//! store must not serialise the cores). Also the cost of a miss with a `Vary: Cookie` entry.

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use wsgo::cache::key::{Selection, key, selection};
use wsgo::cache::{Entry, Store};

fn filled() -> Arc<Store> {
    let store = Store::new(64 << 20);
    for i in 0..10_000 {
        let k = key(false, b"example.com", format!("/page/{i}").as_bytes(), Some(b"a=1"));
        let e = Entry::new(
            200,
            vec![],
            b"Content-Type: text/html\r\nCache-Control: max-age=60\r\n".to_vec(),
            false,
            Bytes::from(vec![b'x'; 4096]),
            vec![],
            None,
            Duration::from_secs(600),
        );
        store.insert(k, e);
    }
    let cookie = vec![(b"cookie".to_vec(), Some(b"sessionid=1".to_vec()))];
    let e = Entry::new(
        200,
        vec![],
        vec![],
        false,
        Bytes::new(),
        cookie,
        Some(vec![b"sessionid".to_vec()]),
        Duration::from_secs(600),
    );
    store.insert(key(false, b"example.com", b"/vary", None), e);
    Arc::new(store)
}

/// `threads` threads each do `iters` hit lookups at the same moment; returns the slowest
/// thread's time, so contention shows as a longer time per lookup.
fn concurrent(store: &Arc<Store>, threads: usize, iters: u64, same_key: bool) -> Duration {
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (store, barrier) = (store.clone(), barrier.clone());
            std::thread::spawn(move || {
                let keys: Vec<Vec<u8>> = (0..64)
                    .map(|i| {
                        let page = if same_key { 7 } else { t * 1000 + i };
                        key(false, b"example.com", format!("/page/{page}").as_bytes(), Some(b"a=1"))
                    })
                    .collect();
                barrier.wait();
                let start = Instant::now();
                for i in 0..iters {
                    let k = &keys[(i % 64) as usize];
                    black_box(store.lookup(black_box(k), Instant::now(), |_, _| Selection::Absent));
                }
                start.elapsed()
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().expect("bench thread")).max().unwrap_or_default()
}

fn lookups(c: &mut Criterion) {
    let store = filled();
    let mut g = c.benchmark_group("cache_lookup");
    let hit = key(false, b"example.com", b"/page/42", Some(b"a=1"));
    g.bench_function("hit_one_thread", |b| {
        b.iter(|| store.lookup(black_box(&hit), Instant::now(), |_, _| Selection::Absent))
    });
    let miss = key(false, b"example.com", b"/nothing", None);
    g.bench_function("miss", |b| {
        b.iter(|| store.lookup(black_box(&miss), Instant::now(), |_, _| Selection::Absent))
    });
    let vary = key(false, b"example.com", b"/vary", None);
    let cookies: &[&[u8]] = &[b"csrftoken=abc; sessionid=1; theme=dark"];
    g.bench_function("hit_vary_cookie", |b| {
        b.iter(|| store.lookup(black_box(&vary), Instant::now(), |name, list| selection(name, cookies, list)))
    });
    g.bench_function("key_build", |b| {
        b.iter(|| key(false, black_box(b"example.com:8000"), black_box(b"/page/42"), black_box(Some(b"a=1"))))
    });
    for (name, threads, same) in [
        ("hit_2_threads_same_key", 2, true),
        ("hit_2_threads_other_keys", 2, false),
        ("hit_1_thread_via_spawn", 1, true),
    ] {
        g.bench_function(name, |b| b.iter_custom(|iters| concurrent(&store, threads, iters, same)));
    }
    g.finish();
}

criterion_group!(benches, lookups);
criterion_main!(benches);
