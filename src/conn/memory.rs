//! A scripted in-memory transport, and the connection loop driven through it on both drivers:
//! pipelining, partial writes at every cut, `100 Continue`, the timeouts, a client gone
//! mid-body, parked requests. A fake worker thread answers from the queue without Python.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::send::Parts;
use super::transport::{Hook, Kick, Transport};
use super::{Core, Rest, Timeouts};
use crate::handoff::exchange::Mailbox;
use crate::handoff::exchange::{BodyPiece, Exchange, ToConn};
use crate::handoff::scheduler::Scheduler;
use crate::handoff::{Job, ParkRequest};
use crate::http::response::ResponseHead;
use crate::park::Action;
use crate::state::State;

/// Both sides of a scripted connection.
#[derive(Default)]
struct Script {
    /// Sent by the client, not yet read by the server.
    incoming: VecDeque<u8>,
    /// The client will send nothing more (reads end with 0 once `incoming` is read).
    closed: bool,
    /// The client is gone (closed or reset): the sweep sees it, writes fail.
    left: bool,
    /// The server side was shut down (a deadline): reads end, writes fail.
    shut: bool,
    /// Everything the server wrote.
    outgoing: Vec<u8>,
    /// Most bytes one write takes (partial writes).
    cut: usize,
    /// The client reads nothing: writes wait.
    paused: bool,
    /// The sweep cancelled the wait for the next request (the connection is to rest).
    rested: bool,
    /// Waits for the next request the sweep ended so the connection rests.
    rests: usize,
    waker: Option<Waker>,
}

/// The server's end.
pub(super) struct MemStream(Rc<RefCell<Script>>);

/// The test's end.
#[derive(Clone)]
pub(super) struct Client(Rc<RefCell<Script>>);

struct MemHook(Rc<RefCell<Script>>);

impl Hook for MemHook {
    fn shut(&self) {
        let mut s = self.0.borrow_mut();
        s.shut = true;
        if let Some(w) = s.waker.take() {
            w.wake();
        }
    }

    fn hung_up(&self) -> bool {
        self.0.borrow().left
    }

    fn rest(&self) {
        let mut s = self.0.borrow_mut();
        s.rested = true;
        if let Some(w) = s.waker.take() {
            w.wake();
        }
    }
}

fn pair() -> (MemStream, Client) {
    let s = Rc::new(RefCell::new(Script { cut: usize::MAX, ..Script::default() }));
    (MemStream(s.clone()), Client(s))
}

impl MemStream {
    /// Takes up to `cut` bytes of `bytes` once the client reads (or fails as a socket would).
    async fn take(&mut self, bytes: &mut dyn Iterator<Item = u8>) -> io::Result<usize> {
        poll_fn(|cx| {
            let mut s = self.0.borrow_mut();
            if s.shut {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
            if s.left {
                return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
            }
            if s.paused {
                s.waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            let cut = s.cut;
            let before = s.outgoing.len();
            s.outgoing.extend((&mut *bytes).take(cut));
            Poll::Ready(Ok(s.outgoing.len() - before))
        })
        .await
    }
}

impl MemStream {
    /// A read, which a rest ends when `restful` (as the sweep's cancel does a socket's).
    async fn read_or_rest(&mut self, mut buf: BytesMut, restful: bool) -> (io::Result<usize>, BytesMut) {
        let res = poll_fn(|cx| {
            let mut s = self.0.borrow_mut();
            if s.shut {
                return Poll::Ready(Ok(0));
            }
            // Bytes that came before the cancel are read (an io_uring cancel may come too late).
            let rested = std::mem::take(&mut s.rested);
            if restful && rested && s.incoming.is_empty() && !s.closed && !s.left {
                s.rests += 1;
                return Poll::Ready(Err(io::Error::from_raw_os_error(libc::ECANCELED)));
            }
            if !s.incoming.is_empty() {
                let n = s.incoming.len().min(buf.capacity() - buf.len());
                buf.extend(s.incoming.drain(..n));
                return Poll::Ready(Ok(n));
            }
            if s.closed || s.left {
                return Poll::Ready(Ok(0));
            }
            s.waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        (res, buf)
    }
}

impl Transport for MemStream {
    async fn read(&mut self, buf: BytesMut) -> (io::Result<usize>, BytesMut) {
        self.read_or_rest(buf, false).await
    }

    async fn read_idle(
        &mut self,
        buf: BytesMut,
        _cancel: Option<monoio::io::CancelHandle>,
    ) -> (io::Result<usize>, BytesMut) {
        self.read_or_rest(buf, true).await
    }

    async fn readable(&mut self) -> io::Result<()> {
        poll_fn(|cx| {
            let mut s = self.0.borrow_mut();
            if s.shut || s.closed || s.left || !s.incoming.is_empty() {
                return Poll::Ready(Ok(()));
            }
            s.waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    async fn write_all(&mut self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        let mut at = 0;
        while at < buf.len() {
            match self.take(&mut buf[at..].iter().copied()).await {
                Ok(n) => at += n,
                Err(e) => return (Err(e), buf),
            }
        }
        (Ok(()), buf)
    }

    async fn writev(&mut self, parts: Parts) -> (io::Result<usize>, Parts) {
        let pending: Vec<u8> = parts.pending().flatten().copied().collect();
        let res = self.take(&mut pending.into_iter()).await;
        (res, parts)
    }

    async fn send_file(
        &mut self,
        head: Vec<u8>,
        file: std::sync::Arc<std::fs::File>,
        offset: u64,
        len: u64,
    ) -> (io::Result<u64>, Vec<u8>) {
        use std::os::unix::fs::FileExt;
        let mut body = vec![0; len as usize];
        let n = match file.read_at(&mut body, offset) {
            Ok(n) => n,
            Err(e) => return (Err(e), head),
        };
        body.truncate(n);
        let (res, head) = self.write_all(head).await;
        if let Err(e) = res {
            return (Err(e), head);
        }
        let (res, _) = self.write_all(body).await;
        (res.map(|()| n as u64), head)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(SocketAddr::from(([127, 0, 0, 1], 8000)))
    }

    fn kick(&self) -> Kick {
        Kick::Hook(Rc::new(MemHook(self.0.clone())))
    }
}

impl Client {
    fn wake(s: &mut Script) {
        if let Some(w) = s.waker.take() {
            w.wake();
        }
    }

    fn send(&self, bytes: &[u8]) {
        let mut s = self.0.borrow_mut();
        s.incoming.extend(bytes);
        Client::wake(&mut s);
    }

    fn close(&self) {
        let mut s = self.0.borrow_mut();
        s.closed = true;
        Client::wake(&mut s);
    }

    fn leave(&self) {
        let mut s = self.0.borrow_mut();
        s.left = true;
        Client::wake(&mut s);
    }

    fn set_cut(&self, cut: usize) {
        self.0.borrow_mut().cut = cut;
    }

    fn pause(&self, paused: bool) {
        let mut s = self.0.borrow_mut();
        s.paused = paused;
        Client::wake(&mut s);
    }

    fn output(&self) -> Vec<u8> {
        self.0.borrow().outgoing.clone()
    }

    fn shut(&self) -> bool {
        self.0.borrow().shut
    }
}

/// Polls `cond` every millisecond until it holds; fails after `limit`.
async fn wait_for(what: &str, limit: Duration, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        monoio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The complete responses in `out`, with the `Date` field removed (it changes by the second).
fn responses(out: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = out;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut r = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(head_len)) = r.parse(rest) else { break };
        let status = r.code.unwrap_or(0);
        let field = |name: &str| {
            r.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value))
        };
        let mut body_len = match field("content-length") {
            Some(n) => n.parse::<usize>().unwrap_or(0),
            None if status < 200 || status == 204 || status == 304 => 0,
            None if field("transfer-encoding").is_some() => {
                // Chunked: up to the terminating chunk.
                match rest[head_len..].windows(5).position(|w| w == b"0\r\n\r\n") {
                    Some(p) => p + 5,
                    None => break,
                }
            }
            None => rest.len() - head_len,
        };
        if rest.len() < head_len + body_len {
            break;
        }
        if status < 200 {
            body_len = 0;
        }
        let text = String::from_utf8_lossy(&rest[..head_len + body_len]);
        found.push(text.lines().filter(|l| !l.starts_with("Date: ")).collect::<Vec<_>>().join("\n"));
        rest = &rest[head_len + body_len..];
    }
    found
}

/// What the fake worker saw.
#[derive(Default)]
struct Seen {
    body_failures: AtomicUsize,
    jobs: AtomicUsize,
}

/// The job parked on channel `room` for a minute, answered 204 at its timeout.
fn park_on_room(job: Job) -> Box<ParkRequest> {
    Box::new(ParkRequest {
        channels: vec!["room".into()],
        timeout: Duration::from_secs(60),
        action: Action::Http204,
        block: None,
        body: job.body.clone(),
        body_complete: job.body_complete,
        streamed: false,
        traits: job.traits,
        head: job.head,
    })
}

/// Answers jobs by path, without Python.
fn work(job: Job, seen: &Seen) {
    seen.jobs.fetch_add(1, SeqCst);
    let ex = job.exchange.clone();
    let head = |status| ResponseHead {
        status,
        lines: b"Content-Type: text/plain\r\n".to_vec(),
        ..ResponseHead::default()
    };
    let read_all = |ex: &Exchange, mut body: Vec<u8>| loop {
        match ex.read_body(1, 65536) {
            BodyPiece::Data(d) => body.extend_from_slice(&d),
            BodyPiece::End => return Some(body),
            BodyPiece::Failed => return None,
        }
    };
    match job.head.path().unwrap_or(b"") {
        b"/stream" => {
            ex.send(ToConn::Head(head(200)));
            for piece in [&b"one;"[..], b"two;", b"three"] {
                ex.send_chunk(Bytes::from_static(piece));
            }
            ex.send(ToConn::End);
        }
        b"/echo" => match read_all(&ex, job.body.to_vec()) {
            Some(body) => ex.send(ToConn::Full(head(200), Bytes::from(body))),
            None => {
                seen.body_failures.fetch_add(1, SeqCst);
                ex.send(ToConn::Full(head(500), Bytes::from_static(b"failed")));
            }
        },
        b"/write-then-read" => {
            ex.send(ToConn::Head(head(200)));
            ex.send_chunk(Bytes::from_static(b"started;"));
            match read_all(&ex, job.body.to_vec()) {
                Some(body) => {
                    ex.send_chunk(Bytes::from(body));
                    ex.send(ToConn::End);
                }
                None => ex.send(ToConn::Abort),
            }
        }
        b"/big" => {
            // A slow reader's stream, bounded by the request's deadline.
            ex.start(Some(Instant::now() + Duration::from_millis(300)));
            ex.send(ToConn::Head(head(200)));
            while ex.send_chunk(Bytes::from(vec![b'x'; 65536])) {}
            ex.send(ToConn::End);
        }
        b"/park" => ex.send(ToConn::Park(park_on_room(job))),
        b"/park-retry" if job.park_arg.is_some() => {
            let arg = job.park_arg.clone().unwrap_or_default();
            ex.send(ToConn::Full(head(200), arg));
        }
        b"/park-retry" => ex.send(ToConn::Park(park_on_room(job))),
        _ => ex.send(ToConn::Full(head(200), Bytes::from_static(b"Hello, World!"))),
    }
}

/// A core for one test, its queue worked by a thread without Python.
struct Harness {
    core: Rc<Core>,
    seen: Arc<Seen>,
    stop: Arc<AtomicBool>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
    }
}

fn harness(timeouts: Timeouts, rest: Rest, bell: bool) -> Harness {
    let config = <crate::cli::Args as clap::Parser>::try_parse_from(["wsgo"])
        .expect("defaults")
        .into_config()
        .expect("config");
    let stats = Arc::new(crate::stats::Stats::default());
    let queue = Arc::new(Scheduler::new(16, None, 1, stats.clone()));
    let state = Arc::new(State {
        config,
        draining: AtomicBool::new(false),
        open: AtomicUsize::new(0),
        shared_sockets: false,
        at_limit: AtomicBool::new(false),
        listening: AtomicUsize::new(1),
        roots: Arc::new(crate::static_files::Roots::open(&[]).expect("no roots")),
        blocks: Default::default(),
        parking: Default::default(),
        share: Default::default(),
        cache: None,
        blocking: monoio::blocking::DefaultThreadPool::new(1),
        stats,
        access: Arc::new(crate::log::Sink::open(crate::log::Target::Off).expect("no log")),
        steering: Arc::default(),
    });
    let core = Rc::new(Core {
        queue: queue.clone(),
        log: crate::log::AccessLog::new(
            state.access.clone(),
            crate::log::Format::Combined,
            state.stats.core_counts(),
        ),
        state,
        watch: super::watch::Watch::new(),
        open: std::cell::Cell::new(0),
        mailbox: Arc::new(if bell { Mailbox::with_bell() } else { Mailbox::new() }),
        batch_wake: Default::default(),
        files: None,
        clock: std::cell::Cell::new(Instant::now()),
        timeouts,
        rest,
    });
    let (seen, stop) = (Arc::new(Seen::default()), Arc::new(AtomicBool::new(false)));
    {
        let (seen, stop) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut refused = Vec::new();
            while !stop.load(SeqCst) {
                match queue.pick_scored(&mut refused) {
                    Some((job, _)) => {
                        let traits = job.traits;
                        work(*job, &seen);
                        queue.done(&traits);
                    }
                    None => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        });
    }
    Harness { core, seen, stop }
}

/// Runs `test` on a fresh runtime of each driver, with the core's mailbox and sweep running.
/// Waits between requests can always be cancelled, but take longer than a test to rest.
fn on_both_drivers<F, Fut>(timeouts: Timeouts, test: F)
where
    F: Fn(Rc<Harness>) -> Fut,
    Fut: Future<Output = ()>,
{
    on_both_drivers_resting(timeouts, Rest { after: Duration::from_secs(3600), from_open: 0 }, test)
}

/// [`on_both_drivers`], with idle connections resting as `rest` says.
fn on_both_drivers_resting<F, Fut>(timeouts: Timeouts, rest: Rest, test: F)
where
    F: Fn(Rc<Harness>) -> Fut,
    Fut: Future<Output = ()>,
{
    let run = |h: Rc<Harness>| async {
        let drainer = h.core.clone();
        monoio::spawn(async move { drainer.mailbox.drain().await });
        let keeper = h.core.clone();
        monoio::spawn(async move {
            loop {
                monoio::time::sleep(Duration::from_millis(20)).await;
                let now = keeper.now();
                keeper.watch.sweep(now);
                keeper.watch.check_waiting();
            }
        });
        test(h).await;
    };
    let mut uring =
        monoio::RuntimeBuilder::<monoio::IoUringDriver>::new().enable_timer().build().expect("io_uring");
    uring.block_on(run(Rc::new(harness(timeouts, rest, true))));
    let mut legacy =
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().expect("epoll");
    legacy.block_on(run(Rc::new(harness(timeouts, rest, false))));
}

/// Starts serving a scripted connection; the flag says when the connection loop ended.
fn connect(h: &Harness) -> (Client, Rc<std::cell::Cell<bool>>) {
    let (stream, client) = pair();
    let (core, done) = (h.core.clone(), Rc::new(std::cell::Cell::new(false)));
    let ended = done.clone();
    monoio::spawn(async move {
        super::serve(
            stream,
            crate::client::Peer::Ip(SocketAddr::from(([127, 0, 0, 1], 40000))),
            SocketAddr::from(([127, 0, 0, 1], 8000)),
            core,
        )
        .await;
        ended.set(true);
    });
    (client, done)
}

const LONG: Duration = Duration::from_secs(5);

#[test]
fn pipelined_requests_are_answered_in_order_at_every_cut() {
    on_both_drivers(Timeouts::default(), |h| async move {
        let requests = b"GET /a HTTP/1.1\r\nHost: t\r\n\r\nGET /stream HTTP/1.1\r\nHost: t\r\n\r\nPOST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabcGET /c HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
        let mut first: Option<Vec<String>> = None;
        // The same requests whole, split at every byte, and with writes cut after every size.
        for cut in [usize::MAX, 1, 2, 3, 5, 8, 13, 64] {
            let (client, done) = connect(&h);
            client.set_cut(cut);
            if cut == usize::MAX {
                client.send(requests);
            } else {
                for piece in requests.chunks(cut) {
                    client.send(piece);
                    monoio::time::sleep(Duration::from_micros(50)).await;
                }
            }
            wait_for("the connection to close", LONG, || done.get()).await;
            let got = responses(&client.output());
            assert_eq!(got.len(), 4, "cut {cut}: {got:?}");
            assert!(got[0].ends_with("Hello, World!") && got[2].ends_with("abc"), "{got:?}");
            assert!(got[1].contains("Transfer-Encoding: chunked") && got[1].contains("three"), "{got:?}");
            assert!(got[3].contains("Connection: close"), "{got:?}");
            match &first {
                None => first = Some(got),
                Some(f) => assert_eq!(&got, f, "cut {cut} changed the bytes"),
            }
        }
    });
}

#[test]
fn continue_goes_out_before_the_body_is_sent() {
    on_both_drivers(Timeouts::default(), |h| async move {
        let (client, _) = connect(&h);
        client.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
        wait_for("100 Continue", LONG, || client.output().starts_with(b"HTTP/1.1 100 Continue\r\n\r\n"))
            .await;
        assert_eq!(client.output(), b"HTTP/1.1 100 Continue\r\n\r\n", "nothing else before the body");
        client.send(b"hello");
        wait_for("the echo", LONG, || responses(&client.output()).len() == 2).await;
        assert!(responses(&client.output())[1].ends_with("hello"));
        // HTTP/1.0: no 100 Continue.
        let (client, _) = connect(&h);
        client.send(b"POST /echo HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi");
        wait_for("the echo", LONG, || !responses(&client.output()).is_empty()).await;
        assert!(client.output().starts_with(b"HTTP/1.1 200 OK\r\n"));
    });
}

#[test]
fn each_timeout_closes_the_connection() {
    let short = Duration::from_millis(150);
    let timeouts = Timeouts { head: short, idle: short, body: short, write: short };
    on_both_drivers(timeouts, |h| async move {
        // A head that never completes.
        let (client, done) = connect(&h);
        client.send(b"GET / HTTP/1.1\r\nHo");
        wait_for("the head timeout", LONG, || done.get()).await;
        assert!(client.shut() && client.output().is_empty());
        // An idle keep-alive connection.
        let (client, done) = connect(&h);
        client.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
        wait_for("the idle timeout", LONG, || done.get()).await;
        assert_eq!(responses(&client.output()).len(), 1);
        // A body that stops coming (read by the app).
        let (client, done) = connect(&h);
        client.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc");
        wait_for("the body timeout", LONG, || done.get()).await;
        // A response the client does not read.
        let (client, done) = connect(&h);
        client.pause(true);
        client.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
        wait_for("the write timeout", LONG, || done.get()).await;
        assert!(client.output().is_empty());
        // A worker's stream to a client that does not read: the request's deadline (300 ms)
        // ends it, whatever the write timeout.
        let (client, done) = connect(&h);
        client.pause(true);
        client.send(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n");
        wait_for("the request deadline", LONG, || done.get()).await;
    });
}

#[test]
fn a_client_gone_mid_body_fails_the_read() {
    on_both_drivers(Timeouts::default(), |h| async move {
        // The app reads a body that stops coming (a GET's body is not pre-read).
        let (client, done) = connect(&h);
        client.send(b"GET /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123456789");
        monoio::time::sleep(Duration::from_millis(50)).await;
        client.leave();
        wait_for("the connection to end", LONG, || done.get()).await;
        wait_for("the worker's failed read", LONG, || h.seen.body_failures.load(SeqCst) == 1).await;
        // A POST's body is pre-read before any worker sees it: gone there, nothing is queued.
        let jobs = h.seen.jobs.load(SeqCst);
        let (client, done) = connect(&h);
        client.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123456789");
        monoio::time::sleep(Duration::from_millis(50)).await;
        client.leave();
        wait_for("the connection to end", LONG, || done.get()).await;
        assert_eq!(h.seen.jobs.load(SeqCst), jobs);
    });
}

#[test]
fn the_body_can_be_read_after_the_head() {
    on_both_drivers(Timeouts::default(), |h| async move {
        let (client, done) = connect(&h);
        client.send(b"GET /write-then-read HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello");
        wait_for("the response", LONG, || responses(&client.output()).len() == 1).await;
        let r = &responses(&client.output())[0];
        assert!(r.contains("started;") && r.contains("hello") && !r.contains("Connection: close"), "{r}");
        // The connection is good for the next request; closing between requests ends it.
        client.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
        wait_for("the next response", LONG, || responses(&client.output()).len() == 2).await;
        client.close();
        wait_for("the connection to end", LONG, || done.get()).await;
    });
}

#[test]
fn parked_requests_wait_and_are_woken_or_forgotten() {
    on_both_drivers(Timeouts::default(), |h| async move {
        let parking = h.core.state.parking.clone();
        let (client, _) = connect(&h);
        client.send(b"GET /park HTTP/1.1\r\nHost: t\r\n\r\n");
        wait_for("the park", LONG, || parking.len() == 1).await;
        assert!(client.output().is_empty());
        assert_eq!(parking.notify(&["room".into()], Action::Http204, ""), 1);
        wait_for("the 204", LONG, || responses(&client.output()).len() == 1).await;
        assert!(responses(&client.output())[0].starts_with("HTTP/1.1 204"));
        // A retry runs again with the argument.
        client.send(b"GET /park-retry HTTP/1.1\r\nHost: t\r\n\r\n");
        wait_for("the park", LONG, || parking.len() == 1).await;
        parking.notify(&["room".into()], Action::Retry, "the-arg");
        wait_for("the retry's answer", LONG, || responses(&client.output()).len() == 2).await;
        assert!(responses(&client.output())[1].ends_with("the-arg"));
        // A parked client that leaves is forgotten (the sweep sees it).
        let (client, done) = connect(&h);
        client.send(b"GET /park HTTP/1.1\r\nHost: t\r\n\r\n");
        wait_for("the park", LONG, || parking.len() == 1).await;
        client.leave();
        wait_for("the connection to end", LONG, || done.get()).await;
        assert_eq!(parking.len(), 0);
    });
}

#[test]
fn an_idle_connection_rests_and_wakes_for_its_next_request() {
    let timeouts = Timeouts { idle: Duration::from_millis(900), ..Timeouts::default() };
    let rest = Rest { after: Duration::from_millis(100), from_open: 0 };
    on_both_drivers_resting(timeouts, rest, |h| async move {
        let (client, done) = connect(&h);
        let rests = || client.0.borrow().rests;
        client.send(b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n");
        wait_for("the first response", LONG, || responses(&client.output()).len() == 1).await;
        wait_for("the first rest", LONG, || rests() == 1).await;
        // Woken by two pipelined requests: both answered, in order.
        client.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nfirstGET /b HTTP/1.1\r\nHost: t\r\n\r\n");
        wait_for("the pipelined responses", LONG, || responses(&client.output()).len() == 3).await;
        let all = responses(&client.output());
        assert!(all[1].ends_with("first") && all[2].ends_with("Hello, World!"), "{all:?}");
        // Woken by part of a head: the rest of it still makes a request.
        wait_for("the second rest", LONG, || rests() == 2).await;
        client.send(b"GET /c HT");
        monoio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(rests(), 2, "a connection with part of a head does not rest");
        client.send(b"TP/1.1\r\nHost: t\r\n\r\n");
        wait_for("the fourth response", LONG, || responses(&client.output()).len() == 4).await;
        // Resting does not extend the idle timeout: closed 900 ms after the last response.
        wait_for("the third rest", LONG, || rests() == 3).await;
        let rested = Instant::now();
        wait_for("the idle timeout", LONG, || done.get()).await;
        assert!(rested.elapsed() < Duration::from_millis(1500), "closed after {:?}", rested.elapsed());
        assert!(client.shut());
        // A client that leaves while its connection rests ends it.
        let (client, done) = connect(&h);
        client.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
        wait_for("the rest", LONG, || client.0.borrow().rests == 1).await;
        client.close();
        wait_for("the connection to end", LONG, || done.get()).await;
        assert_eq!(responses(&client.output()).len(), 1);
    });
}
