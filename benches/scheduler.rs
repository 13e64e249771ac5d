//! The scheduler's pick with 128 and 1,024 jobs queued: every pick scores each group of jobs with
//! the same traits once (ARCHITECTURE.md, "Scheduling"), so this is the cost a worker pays per
//! request when the queue is long. Measured with local clients only (nothing to rank, a third of
//! the requests with a query string), with 32 public clients (their counts looked up per group),
//! and with one public client flooding.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use wsgo::client::ClientKey;
use wsgo::handoff::exchange::Exchange;
use wsgo::handoff::scheduler::Scheduler;
use wsgo::handoff::{Job, Traits};
use wsgo::http::parse_head;

fn job(i: u32, clients: u32) -> Box<Job> {
    let raw = format!("GET /item/{i}?page=2 HTTP/1.1\r\nHost: t\r\n\r\n");
    let (h, len) = parse_head(raw.as_bytes()).expect("valid").expect("complete");
    let client = (clients > 0).then(|| ClientKey::V4(0x0808_0000 + i % clients));
    Box::new(Job {
        head: h.attach(Bytes::copy_from_slice(&raw.as_bytes()[..len])),
        body: Bytes::new(),
        body_complete: true,
        peer: wsgo::client::Peer::Ip("127.0.0.1:1".parse().expect("addr")),
        local: "127.0.0.1:2".parse().expect("addr"),
        https: false,
        exchange: Arc::new(Exchange::new()),
        queued_at: Instant::now(),
        traits: Traits { client, robot: false, query: i.is_multiple_of(3) },
        park_arg: None,
    })
}

fn picks(c: &mut Criterion) {
    let mut g = c.benchmark_group("scheduler_pick");
    for (queued, name, clients) in [
        (128, "local_clients", 0),
        (128, "32_public_clients", 32),
        (1024, "local_clients", 0),
        (1024, "32_public_clients", 32),
        (1024, "1_public_client", 1),
    ] {
        let s = Scheduler::new(2048, None, 1, Default::default());
        for i in 0..queued {
            s.submit(job(i, clients)).expect("room");
        }
        let name = format!("{queued}_queued/{name}");
        let mut refused = Vec::new();
        g.bench_function(&name, |b| {
            b.iter(|| {
                let (j, score) = s.pick_scored(&mut refused).expect("a job");
                black_box(score);
                s.done(&j.traits);
                s.submit(j).expect("room");
            })
        });
    }
    g.finish();
}

criterion_group!(benches, picks);
criterion_main!(benches);
