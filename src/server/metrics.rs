//! `--metrics ADDR`: Prometheus text on `GET /metrics`.
//!
//! Each server process renders its own sample lines, labelled `process="N"` ([`sample`]); with a
//! supervisor they reach it every second over the control channel and the supervisor serves
//! them all in one page, so one scrape sees every process, and the page keeps answering while
//! processes are replaced (a replaced process's counters start again from zero, which
//! Prometheus's `rate()` takes as a reset). An unsupervised process serves its own page.
//!
//! The endpoint runs on a thread of its own with plain blocking sockets: it is for a scraper,
//! not for the public, but a client that connects and sends nothing still only holds one of
//! [`MAX_CLIENTS`] slots for [`CLIENT_TIMEOUT`].

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use crate::handoff::scheduler::Scheduler;
use crate::state::State;
use crate::stats::get;

/// Every metric: name, type, help. A process's lines for anything else are dropped.
const METRICS: &[(&str, &str, &str)] = &[
    (
        "wsgo_requests_total",
        "counter",
        "Responses sent, by status class (class=\"none\": the connection closed first).",
    ),
    ("wsgo_app_requests_total", "counter", "Requests handed to the app's workers."),
    ("wsgo_app_errors_total", "counter", "Requests the app failed (an exception, an invalid response)."),
    (
        "wsgo_queue_timeouts_total",
        "counter",
        "Requests that waited for a worker past --request-timeout (504).",
    ),
    ("wsgo_interrupted_total", "counter", "Running requests interrupted by --request-timeout."),
    ("wsgo_queue_drops_total", "counter", "Requests refused because the queue was full (503)."),
    ("wsgo_queue_length", "gauge", "Requests waiting for a worker."),
    ("wsgo_workers_busy", "gauge", "Workers running a request."),
    ("wsgo_workers", "gauge", "Worker threads (--workers)."),
    ("wsgo_cache_hits_total", "counter", "Responses answered from the response cache."),
    ("wsgo_cache_misses_total", "counter", "GET and HEAD requests the response cache could not answer."),
    ("wsgo_cache_bytes", "gauge", "Bytes held by the response cache."),
    ("wsgo_cache_entries", "gauge", "Responses held by the response cache."),
    ("wsgo_static_files_total", "counter", "Static files served."),
    (
        "wsgo_connections_rescued_total",
        "counter",
        "Connections taken from another process's socket, where they had waited too long.",
    ),
    (
        "wsgo_incoming_cpu_steering",
        "gauge",
        "1 while the process's sockets ask for the connections its CPUs take in (--incoming-cpu), else 0.",
    ),
    (
        "wsgo_incoming_cpu_spread_total",
        "counter",
        "Times the process was taken off steering, its CPUs being busy and far busier than the others'.",
    ),
    ("wsgo_blocks_total", "counter", "Blocks established by X-WSGo-Block."),
    ("wsgo_blocked_requests_total", "counter", "Requests refused because their client is blocked."),
    ("wsgo_blocked_clients", "gauge", "Clients blocked now."),
    ("wsgo_parked_requests", "gauge", "Requests parked by X-WSGo-Park."),
    ("wsgo_open_connections", "gauge", "Client connections open."),
    ("wsgo_resident_memory_bytes", "gauge", "Resident memory of the process."),
    ("wsgo_start_time_seconds", "gauge", "When the process started, in seconds since the epoch."),
];

/// Status classes in the order of `stats::Stats::by_class`.
const CLASSES: [&str; 6] = ["none", "1xx", "2xx", "3xx", "4xx", "5xx"];

/// The sample lines of this process.
pub fn sample(state: &State, queue: &Scheduler, started: u64) -> String {
    use std::fmt::Write as _;
    let p = state.config.process.max(1);
    let s = &state.stats;
    let mut out = String::new();
    let mut line = |name: &str, value: u64| {
        let _ = writeln!(out, "{name}{{process=\"{p}\"}} {value}");
    };
    line("wsgo_app_requests_total", get(&s.requests));
    line("wsgo_app_errors_total", get(&s.errors));
    line("wsgo_queue_timeouts_total", get(&s.queue_timeouts));
    line("wsgo_interrupted_total", get(&s.interrupted));
    line("wsgo_queue_drops_total", get(&s.drops));
    line("wsgo_queue_length", queue.queued() as u64);
    line("wsgo_workers_busy", queue.running() as u64);
    line("wsgo_workers", state.config.workers as u64);
    line("wsgo_cache_hits_total", get(&s.cache_hits));
    line("wsgo_cache_misses_total", get(&s.cache_misses));
    line("wsgo_cache_bytes", state.cache.as_ref().map_or(0, |c| c.size() as u64));
    line("wsgo_cache_entries", state.cache.as_ref().map_or(0, |c| c.len() as u64));
    line("wsgo_static_files_total", get(&s.static_files));
    line("wsgo_connections_rescued_total", get(&s.rescued));
    line("wsgo_incoming_cpu_steering", u64::from(state.steering.steers()));
    line("wsgo_incoming_cpu_spread_total", state.steering.taken_off());
    let (established, refused) = state.blocks.counts();
    line("wsgo_blocks_total", established);
    line("wsgo_blocked_requests_total", refused);
    line("wsgo_blocked_clients", state.blocks.len() as u64);
    line("wsgo_parked_requests", state.parking.len() as u64);
    line("wsgo_open_connections", state.open.load(SeqCst) as u64);
    line("wsgo_resident_memory_bytes", crate::sys::process::rss_bytes());
    line("wsgo_start_time_seconds", started);
    for (class, n) in CLASSES.iter().zip(s.by_class()) {
        let _ = writeln!(out, "wsgo_requests_total{{process=\"{p}\",class=\"{class}\"}} {n}");
    }
    out
}

/// One page from the processes' samples: each metric's HELP and TYPE, then its lines from
/// every process, in order.
pub fn render<'a>(samples: impl IntoIterator<Item = &'a str> + Clone) -> String {
    let mut out = String::new();
    for (name, kind, help) in METRICS {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for sample in samples.clone() {
            for line in sample.lines() {
                let rest = line.strip_prefix(name);
                if rest.is_some_and(|r| r.starts_with('{') || r.starts_with(' ')) {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
    }
    out
}

/// Scrapes served at once; more wait in the backlog.
const MAX_CLIENTS: usize = 8;
/// Longest a scraper may take to send its request or read the page.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest request head read.
const MAX_HEAD: usize = 8 * 1024;

/// Binds `addr` and serves the page `page()` makes on a thread of its own.
pub fn serve(addr: SocketAddr, page: Arc<dyn Fn() -> String + Send + Sync>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    let busy = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new().name("wsgo-metrics".into()).spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            };
            while busy.load(SeqCst) >= MAX_CLIENTS {
                std::thread::sleep(Duration::from_millis(10));
            }
            busy.fetch_add(1, SeqCst);
            let (page, done) = (page.clone(), busy.clone());
            let spawned = std::thread::Builder::new().name("wsgo-metrics-client".into()).spawn(move || {
                answer(conn, &*page);
                done.fetch_sub(1, SeqCst);
            });
            if spawned.is_err() {
                // The closure (and its count) went with the failed spawn.
                busy.fetch_sub(1, SeqCst);
            }
        }
    })?;
    Ok(bound)
}

/// Reads one request and answers it, then closes.
fn answer(mut conn: TcpStream, page: &dyn Fn() -> String) {
    let _ = conn.set_read_timeout(Some(CLIENT_TIMEOUT));
    let _ = conn.set_write_timeout(Some(CLIENT_TIMEOUT));
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
        if head.len() > MAX_HEAD {
            let _ = conn.write_all(&response("431 Request Header Fields Too Large", "text/plain", "", false));
            return;
        }
    }
    let mut fields = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut fields);
    let reply = match req.parse(&head) {
        Ok(httparse::Status::Complete(_)) => {
            let path = req.path.unwrap_or("").split('?').next().unwrap_or("");
            match (req.method.unwrap_or(""), path) {
                (m @ ("GET" | "HEAD"), "/metrics") => {
                    response("200 OK", "text/plain; version=0.0.4; charset=utf-8", &page(), m == "HEAD")
                }
                ("GET" | "HEAD", _) => {
                    response("404 Not Found", "text/plain", "metrics are at /metrics\n", false)
                }
                _ => response("405 Method Not Allowed", "text/plain", "", false),
            }
        }
        _ => response("400 Bad Request", "text/plain", "", false),
    };
    let _ = conn.write_all(&reply);
}

fn response(status: &str, kind: &str, body: &str, head_only: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_groups_each_metric_over_the_processes() {
        let one =
            "wsgo_workers{process=\"1\"} 16\nwsgo_requests_total{process=\"1\",class=\"2xx\"} 5\nbogus 1\n";
        let two = "wsgo_workers{process=\"2\"} 16\nwsgo_requests_total{process=\"2\",class=\"2xx\"} 7\n";
        let page = render([one, two]);
        let lines: Vec<&str> = page.lines().collect();
        let at =
            |l: &str| lines.iter().position(|x| *x == l).unwrap_or_else(|| panic!("{l} missing:\n{page}"));
        assert!(
            at("# TYPE wsgo_requests_total counter")
                < at("wsgo_requests_total{process=\"1\",class=\"2xx\"} 5")
        );
        assert_eq!(
            at("wsgo_requests_total{process=\"1\",class=\"2xx\"} 5") + 1,
            at("wsgo_requests_total{process=\"2\",class=\"2xx\"} 7")
        );
        assert_eq!(at("wsgo_workers{process=\"1\"} 16") + 1, at("wsgo_workers{process=\"2\"} 16"));
        assert!(!page.contains("bogus"));
        // A name that is a prefix of another takes only its own lines.
        assert_eq!(page.matches("wsgo_workers{").count(), 2);
    }

    #[test]
    fn the_endpoint_answers_scrapes_and_refuses_the_rest() {
        let page: Arc<dyn Fn() -> String + Send + Sync> =
            Arc::new(|| render(["wsgo_workers{process=\"1\"} 3\n"]));
        let addr = serve("127.0.0.1:0".parse().unwrap(), page).unwrap();
        let ask = |req: &[u8]| {
            let mut c = TcpStream::connect(addr).unwrap();
            c.write_all(req).unwrap();
            let mut out = String::new();
            c.read_to_string(&mut out).unwrap();
            out
        };
        let ok = ask(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(
            ok.starts_with("HTTP/1.1 200 OK\r\n") && ok.contains("\nwsgo_workers{process=\"1\"} 3\n"),
            "{ok}"
        );
        assert!(ok.contains("Content-Type: text/plain; version=0.0.4"), "{ok}");
        assert!(ask(b"GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(ask(b"POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        assert!(ask(b"\x00\x01garbage\r\n\r\n").starts_with("HTTP/1.1 400"));
        let head = ask(b"HEAD /metrics HTTP/1.1\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 200") && head.ends_with("\r\n\r\n"), "{head}");
    }
}
