//! One connection's keep-alive loop: read a head, dispatch it through the stages, answer it,
//! repeat.
//!
//! Runs on a core thread and never blocks it: no Python, no locks held across an await. Requests
//! are answered strictly in order, so pipelined requests get their responses in order. Timeouts
//! follow the original: 2 s for a request head, 60 s idle between requests, 600 s for a body,
//! 3600 s to write a response; while a worker waits on the client, its request's deadline.
//!
//! Here: the loop, and [`Conn::dispatch`], the stages in the order of the design (the server's own
//! answers, blocked clients, static files, the response cache, the application). Elsewhere in
//! this module: `send` (the one response writer), `app` (the WSGI leg), `cached`, `files`,
//! `parked` (the other legs), `watch` (deadlines and departed clients), `transport` (what the loop
//! reads and writes).

mod app;
mod cached;
mod files;
#[cfg(test)]
mod memory;
mod parked;
mod send;
pub mod transport;
pub mod wake;
pub mod watch;

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::client::{Peer, client_ip};
use crate::config::canonical;
use crate::handoff::exchange::Mailbox;
use crate::handoff::scheduler::Scheduler;
use crate::http::answer::{Route, route};
use crate::http::body::{BodyState, Step};
use crate::http::{HttpError, RequestHead, Span, parse_head};
use crate::log::{AccessLog, Entry};
use crate::state::State;
use send::Response;
use transport::Transport;
use watch::Watch;

/// A new connection must deliver a complete head within this (and a keep-alive one, once its
/// next request has started).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(2);
/// An idle keep-alive connection is closed after this.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A whole request body must arrive within this.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(600);
/// A whole response must be written within this.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(3600);
/// How much of a POST/PUT/PATCH body is read before the request is queued.
pub const PREBUFFER: usize = 1 << 20;
/// Read size for bodies.
const READ_CHUNK: usize = 16 * 1024;
/// Read size for request heads, and a new or idle connection's buffer: most heads are a few
/// hundred bytes, and a keep-alive connection waiting for its next request holds its buffer
/// in the pending read (16 KiB there made an idle connection cost 28 KB of memory).
const HEAD_CHUNK: usize = 4 * 1024;
/// How long a keep-alive connection waits for its next request holding its buffers and request
/// state; then it rests (see [`serve`]). A client that comes back within it pays nothing; one that
/// comes back later pays three allocations and a readiness wait.
const REST_AFTER: Duration = Duration::from_secs(1);
/// Connections on a core from which idle ones rest (about 13 MB of them awake).
const REST_FROM_OPEN: usize = 1000;
/// How often a held blocked request looks whether the server drains.
const DRAIN_CHECK: Duration = Duration::from_millis(200);
/// Most the read buffer grows by at once while a body is pre-read.
const PREBUFFER_STEP: usize = 256 * 1024;

/// How long a connection may take for each of its steps (the constants above; tests shorten
/// them).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// To send a request head.
    pub head: Duration,
    /// Between keep-alive requests.
    pub idle: Duration,
    /// To send a whole request body.
    pub body: Duration,
    /// To take a whole response.
    pub write: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts { head: HEAD_TIMEOUT, idle: IDLE_TIMEOUT, body: BODY_TIMEOUT, write: WRITE_TIMEOUT }
    }
}

/// When an idle keep-alive connection rests (see [`serve`]).
#[derive(Debug, Clone, Copy)]
pub struct Rest {
    /// Idle this long between requests.
    pub after: Duration,
    /// Only while the core holds at least this many connections: a wait that can be cancelled
    /// costs ~600 instructions a request more (monoio's canceller keeps a hash set), which
    /// buys nothing while the connections' memory is a few megabytes.
    pub from_open: usize,
}

impl Default for Rest {
    fn default() -> Rest {
        Rest { after: REST_AFTER, from_open: REST_FROM_OPEN }
    }
}

/// What one core thread's connections share.
pub struct Core {
    /// Where requests for the application are queued.
    pub queue: Arc<Scheduler>,
    /// The process's state.
    pub state: Arc<State>,
    /// This core's access-log buffer.
    pub log: AccessLog,
    /// The connections' deadlines, and which of them wait on a worker.
    pub watch: Watch,
    /// Connections open on this core.
    pub open: Cell<usize>,
    /// Where the Python threads leave wake-ups for this core's connection tasks.
    pub mailbox: Arc<Mailbox>,
    /// The wake-up of a worker for the jobs this core queued, once its batch is queued.
    pub batch_wake: wake::BatchWake,
    /// What this core knows of the `--static-map` folders (`None` without mappings).
    pub files: Option<crate::static_files::FileCache>,
    /// The last time read on this core (see [`Core::recent`]).
    pub clock: Cell<Instant>,
    /// The connections' timeouts.
    pub timeouts: Timeouts,
    /// When idle connections rest.
    pub rest: Rest,
}

impl Core {
    /// Reads the clock, and remembers the reading for [`Core::recent`].
    pub fn now(&self) -> Instant {
        let now = Instant::now();
        self.clock.set(now);
        now
    }

    /// The last reading on this core: at most one sweep (100 ms) old, as the sweeper reads the
    /// clock too. Good enough for deadlines of seconds, which the sweeper enforces at that
    /// granularity anyway; saves a clock read (~30 ns here) for each of them.
    pub fn recent(&self) -> Instant {
        self.clock.get()
    }

    /// A deadline `span` from now: every deadline of a connection is read this one way.
    fn deadline(&self, span: Duration) -> Instant {
        self.recent() + span
    }

    fn draining(&self) -> bool {
        self.state.draining.load(SeqCst)
    }
}

/// What the access log needs of a request after its head has moved into a job, and what a
/// panic report names.
struct LogInfo {
    buf: Bytes,
    method: Span,
    target: Span,
    referer: Option<Span>,
    user_agent: Option<Span>,
    minor: u8,
    client: std::net::IpAddr,
}

/// How a request ended, for the log and the keep-alive decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Outcome {
    /// The status sent (0 when nothing was).
    status: u16,
    /// Body bytes sent.
    bytes: u64,
    keep_alive: bool,
}

impl Outcome {
    fn close(status: u16, bytes: u64) -> Outcome {
        Outcome { status, bytes, keep_alive: false }
    }
}

/// What the connection knows of the request it is answering, whichever leg answers it.
struct Req {
    is_head: bool,
    minor: u8,
    /// The request allows the connection to stay open.
    keep_alive: bool,
    expect_continue: bool,
    /// `100 Continue` went out.
    continued: bool,
    client: std::net::IpAddr,
    /// The request body still to come.
    body: BodyState,
    /// The whole body must have arrived by then.
    body_deadline: Instant,
}

/// Why reading body bytes stopped. Both are the client's doing.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    /// The client broke the framing (answered with its status, then closed).
    #[error("bad request body: {0}")]
    Framing(HttpError),
    /// The client closed, reset, or missed the deadline: nothing more can be answered.
    #[error("the client left or missed its deadline while sending the body")]
    Gone,
}

impl crate::log::Blame for BodyError {
    fn cause(&self) -> crate::log::Cause {
        crate::log::Cause::Client
    }
}

/// Serves one accepted connection until it closes.
/// `local`: the listener's address (a unix socket's is [`transport::UNIX_LOCAL`]).
///
/// The request loop runs in a future of its own on the heap: its state (a request's, the
/// application's, the sender's) is most of a connection's memory. A connection idle between
/// requests past its [`Rest`] time ends that future, gives back its buffers, and waits for the
/// socket to become readable holding only this function's few hundred bytes (nginx's
/// keep-alive does the same); the next request starts a new one. Busy connections keep theirs:
/// one allocation for their whole life.
pub async fn serve<T: Transport>(stream: T, peer: Peer, local: SocketAddr, core: Rc<Core>) {
    let accepted = core.recent();
    let key = core.watch.register(stream.kick());
    let mut conn = Conn {
        stream,
        key,
        peer,
        local: SocketAddr::new(canonical(local.ip()), local.port()),
        buf: BytesMut::with_capacity(HEAD_CHUNK),
        out: Vec::with_capacity(1024),
        core,
        accepted,
        current: None,
    };
    let mut first = true;
    while let Ended::Rest = Box::pin(conn.run(first)).await {
        first = false;
        conn.buf = BytesMut::new();
        conn.out = Vec::new();
        // Still idle (closed at once on shutdown); the idle deadline set before the rest stands.
        conn.core.watch.set_idle(conn.key, true);
        let woke = conn.stream.readable().await;
        conn.core.watch.set_idle(conn.key, false);
        if woke.is_err() {
            return;
        }
        conn.buf = BytesMut::with_capacity(HEAD_CHUNK);
        conn.out = Vec::with_capacity(1024);
    }
}

/// How a run of the request loop ended.
enum Ended {
    /// The connection is done (closed, failed, or to close).
    Close,
    /// Idle past its rest time: to wait without its state.
    Rest,
}

struct Conn<T: Transport> {
    stream: T,
    /// This connection's entry in the core's [`Watch`].
    key: usize,
    peer: Peer,
    /// The listener's address until [`Conn::local_for`] needs the exact one.
    local: SocketAddr,
    buf: BytesMut,
    out: Vec<u8>,
    core: Rc<Core>,
    accepted: Instant,
    /// The request being answered (for its access-log line, and for the report of a panic).
    current: Option<LogInfo>,
}

impl<T: Transport> Drop for Conn<T> {
    fn drop(&mut self) {
        self.core.watch.remove(self.key);
        if std::thread::panicking() {
            // A bug: this connection is lost, the core thread and every other connection go on
            // (the task runs under `CatchUnwind`). Say which request it was, escaped.
            let mut line = Vec::new();
            if let Some(info) = &self.current {
                let span = |s: Span| &info.buf[s.start as usize..s.end as usize];
                crate::log::escape(&mut line, span(info.method));
                line.push(b' ');
                crate::log::escape(&mut line, span(info.target));
            }
            crate::log::error!(
                "a connection from {} failed on \"{}\" (a bug: the panic is above); it is closed, the server goes on",
                self.peer,
                String::from_utf8_lossy(&line)
            );
        }
    }
}

/// Runs a future, turning a panic inside it into `Err` (monoio does not catch panics of its
/// tasks: one would unwind through the core thread's runtime and take every connection on it).
/// The future is not polled again after a panic; dropping it drops what it held.
pub struct CatchUnwind<F>(pub F);

impl<F: std::future::Future> std::future::Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn std::any::Any + Send>>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        // SAFETY: structural pinning of the only field: it is never moved out of `self`.
        let inner = unsafe { self.map_unchecked_mut(|s| &mut s.0) };
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(std::task::Poll::Ready(v)) => std::task::Poll::Ready(Ok(v)),
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Err(panic) => std::task::Poll::Ready(Err(panic)),
        }
    }
}

/// Why reading a head stopped without one.
enum HeadError {
    /// Answer with this status, then close.
    Http(HttpError),
    /// Closed, timed out or failed: close silently.
    Gone,
    /// Idle past the rest time (nothing read).
    Rest,
}

impl<T: Transport> Conn<T> {
    /// The request loop; `first`: from the connection's start (else after a rest).
    async fn run(&mut self, mut first: bool) -> Ended {
        if first && self.core.state.config.proxy_protocol && !self.read_proxy_header().await {
            return Ended::Close;
        }
        loop {
            let (parsed, len) = match self.read_head(first).await {
                Ok(Some(p)) => p,
                Ok(None) | Err(HeadError::Gone) => return Ended::Close,
                Err(HeadError::Rest) => return Ended::Rest,
                Err(HeadError::Http(e)) => {
                    self.reject(e).await;
                    return Ended::Close;
                }
            };
            first = false;
            // A copy of the head (a few hundred bytes) keeps the read buffer unshared, so it is
            // reused for the next request instead of a new one being allocated.
            let head = parsed.attach(Bytes::copy_from_slice(&self.buf[..len]));
            bytes::Buf::advance(&mut self.buf, len);
            if !self.handle(head).await || self.core.draining() {
                return Ended::Close;
            }
        }
    }

    /// Reads until a complete head is buffered. `Ok(None)`: the client closed between requests.
    async fn read_head(&mut self, first: bool) -> Result<Option<(RequestHead, usize)>, HeadError> {
        let mut deadline = if first || !self.buf.is_empty() {
            Some(if first {
                self.accepted + self.core.timeouts.head
            } else {
                self.core.deadline(self.core.timeouts.head)
            })
        } else {
            None
        };
        loop {
            if !self.buf.is_empty()
                && let Some(p) = parse_head(&self.buf).map_err(HeadError::Http)?
            {
                return Ok(Some(p));
            }
            // Idle: a keep-alive connection between requests. A new connection is not idle: its
            // first request is on its way (and at shutdown it is read and answered).
            let idle = self.buf.is_empty() && !first;
            if idle && self.core.draining() {
                return Ok(None);
            }
            if idle && self.buf.capacity() > 2 * HEAD_CHUNK {
                // A body made it grow: the wait for the next request holds a small one.
                self.buf = BytesMut::with_capacity(HEAD_CHUNK);
            }
            let until = deadline.unwrap_or_else(|| self.core.deadline(self.core.timeouts.idle));
            let read = if idle {
                self.read_idle(until).await
            } else {
                self.read_more(Some(until), HEAD_CHUNK).await
            };
            self.core.watch.set_idle(self.key, false);
            match read {
                Err(e) if transport::rested(&e) => return Err(HeadError::Rest),
                Ok(0) if self.buf.is_empty() => return Ok(None),
                Ok(0) | Err(_) => return Err(HeadError::Gone),
                Ok(_) => {
                    deadline.get_or_insert_with(|| self.core.deadline(self.core.timeouts.head));
                }
            }
        }
    }

    /// With `--proxy-protocol`: reads the PROXY header a load balancer sends before the first
    /// request. From a trusted peer its source address becomes the connection's peer (for the
    /// environ, the access log, priorities, blocks, and `X-Forwarded-For`, which is resolved from
    /// there); from any other peer a header is refused. No header: the bytes are the first
    /// request. Returns false when the connection is to close.
    async fn read_proxy_header(&mut self) -> bool {
        use crate::http::proxy::{Header, Start, parse};
        let deadline = self.accepted + self.core.timeouts.head;
        loop {
            let refused = match parse(&self.buf) {
                Ok(Start::Http) => return true,
                Ok(Start::NeedMore) => match self.read_more(Some(deadline), HEAD_CHUNK).await {
                    Ok(n) if n > 0 => continue,
                    _ => return false,
                },
                Ok(Start::Header(header, len)) => {
                    if self.peer.trusted(&self.core.state.config.trusted_proxies) {
                        bytes::Buf::advance(&mut self.buf, len);
                        if let Header::Proxied { source, .. } = header {
                            self.peer = Peer::Ip(source);
                        }
                        return true;
                    }
                    HttpError::BadRequest("PROXY protocol header from a peer that is not a --trusted-proxy")
                }
                Err(crate::http::proxy::ProxyError::TooLong) => {
                    HttpError::BadRequest("PROXY protocol header too long")
                }
                Err(crate::http::proxy::ProxyError::Malformed) => {
                    HttpError::BadRequest("malformed PROXY protocol header")
                }
            };
            self.reject(refused).await;
            return false;
        }
    }

    /// Reads more into the buffer, making room for about `chunk` bytes first. One read into the
    /// buffer: a passed deadline shuts the socket down (see [`Watch`]), which ends the read with
    /// 0 or an error.
    async fn read_more(&mut self, deadline: Option<Instant>, chunk: usize) -> io::Result<usize> {
        self.make_room(chunk);
        self.core.watch.set_deadline(self.key, deadline);
        let (res, buf) = self.stream.read(std::mem::take(&mut self.buf)).await;
        self.buf = buf;
        res
    }

    /// Room for about `chunk` more bytes in the read buffer.
    fn make_room(&mut self, chunk: usize) {
        if self.buf.capacity() - self.buf.len() < chunk / 2 {
            self.buf.reserve(chunk);
        }
    }

    /// [`Conn::read_more`] for the wait between requests, which the sweep ends at the rest time
    /// when the core holds enough connections for their memory to matter.
    async fn read_idle(&mut self, deadline: Instant) -> io::Result<usize> {
        self.make_room(HEAD_CHUNK);
        let cancel = if self.core.open.get() >= self.core.rest.from_open {
            self.core.watch.idle_read(self.key, self.core.deadline(self.core.rest.after))
        } else {
            self.core.watch.set_idle(self.key, true);
            None
        };
        self.core.watch.set_deadline(self.key, Some(deadline));
        let (res, buf) = self.stream.read_idle(std::mem::take(&mut self.buf), cancel).await;
        self.buf = buf;
        res
    }

    /// The local address the app sees. Its port is the listener's; its IP address is shown only
    /// when the request names no Host, so a wildcard listener's connection asks the kernel for
    /// it (getsockname) only then.
    fn local_for(&mut self, head: &RequestHead) -> SocketAddr {
        if self.local.ip().is_unspecified()
            && head.host.is_none()
            && let Ok(a) = self.stream.local_addr()
        {
            self.local = SocketAddr::new(canonical(a.ip()), a.port());
        }
        self.local
    }

    /// Answers a malformed request and logs it; the connection is closed after.
    async fn reject(&mut self, e: HttpError) {
        let started = Instant::now();
        crate::log::blame(&e, format_args!("{}: malformed request", self.peer));
        let (status, bytes) = self.send_error(e).await;
        self.core.log.write(&Entry {
            client: self.peer.ip(),
            method: b"-",
            target: b"-",
            minor: 1,
            status,
            bytes,
            referer: None,
            user_agent: None,
            duration: started.elapsed(),
        });
    }

    /// Takes up to `max` body bytes, reading from the socket as needed; `None` at its end.
    async fn body_piece(
        &mut self,
        state: &mut BodyState,
        max: usize,
        deadline: Instant,
    ) -> Result<Option<Bytes>, BodyError> {
        loop {
            match state.take(&mut self.buf, max).map_err(BodyError::Framing)? {
                Step::Data(d) => return Ok(Some(d)),
                Step::Done => return Ok(None),
                Step::NeedMore => match self.read_more(Some(deadline), READ_CHUNK).await {
                    Ok(n) if n > 0 => {}
                    _ => return Err(BodyError::Gone),
                },
            }
        }
    }

    /// Reads body bytes into one piece: at least `min` of them (fewer only at the end of the
    /// body), at most `max`. `reserve_all`: room for the whole piece is made at once (the app
    /// asked for it); otherwise the buffer grows as bytes arrive, not by what a client merely
    /// declares (the pre-buffer, read before any worker is involved).
    async fn body_fill(
        &mut self,
        state: &mut BodyState,
        min: usize,
        max: usize,
        reserve_all: bool,
        deadline: Instant,
    ) -> Result<Bytes, BodyError> {
        // A body of known length is read straight into the read buffer until the piece is
        // there, so it is taken out as one slice (no joining copy, and reads as large as the
        // piece).
        if let Some(left) = state.remaining().filter(|&n| n > 0) {
            let want = (min as u64).min(left) as usize;
            let cap = (max as u64).min(left) as usize;
            if reserve_all && self.buf.capacity() - self.buf.len() < cap.saturating_sub(self.buf.len()) {
                self.buf.reserve(cap.saturating_sub(self.buf.len()).max(READ_CHUNK));
            }
            while self.buf.len() < want {
                let short = cap - self.buf.len().min(cap);
                if self.buf.capacity() - self.buf.len() < short.min(READ_CHUNK) {
                    self.buf.reserve(short.clamp(READ_CHUNK, PREBUFFER_STEP));
                }
                match self.read_more(Some(deadline), READ_CHUNK).await {
                    Ok(n) if n > 0 => {}
                    _ => return Err(BodyError::Gone),
                }
            }
        }
        let mut first: Option<Bytes> = None;
        let mut joined: Option<BytesMut> = None;
        let mut total = 0;
        while total < min {
            let Some(piece) = self.body_piece(state, max - total, deadline).await? else { break };
            total += piece.len();
            match (&mut first, &mut joined) {
                (None, _) => first = Some(piece),
                (Some(f), None) => {
                    let mut j = BytesMut::with_capacity(max.min(f.len() + piece.len() + READ_CHUNK));
                    j.extend_from_slice(f);
                    j.extend_from_slice(&piece);
                    joined = Some(j);
                }
                (Some(_), Some(j)) => j.extend_from_slice(&piece),
            }
        }
        Ok(match (first, joined) {
            (_, Some(j)) => j.freeze(),
            (Some(f), None) => f,
            (None, None) => Bytes::new(),
        })
    }
}

// ---------- one request through the stages ----------

impl<T: Transport> Conn<T> {
    /// Answers one request; returns whether the connection stays open.
    pub(super) async fn handle(&mut self, head: RequestHead) -> bool {
        let started = self.core.now();
        let client = self.client_of(&head);
        let mut req = Req {
            is_head: head.is_head(),
            minor: head.minor,
            keep_alive: head.keep_alive,
            expect_continue: head.expect_continue,
            continued: false,
            client,
            body: BodyState::new(head.body),
            body_deadline: started + self.core.timeouts.body,
        };
        // Kept where a panic can find it (see `Drop for Conn`), until the line is written.
        self.current = Some(LogInfo::of(&head, client));
        #[cfg(feature = "fault-injection")]
        if head.path() == Some(b"/__panic") {
            panic!("fault injection: a panic on a chosen request");
        }
        let (outcome, logged) = self.dispatch(head, &mut req, started).await;
        let info = self.current.take();
        if let (Some(info), true) = (info, logged) {
            let span = |s: Span| &info.buf[s.start as usize..s.end as usize];
            self.core.log.write(&Entry {
                client: info.client,
                method: span(info.method),
                target: span(info.target),
                minor: info.minor,
                status: outcome.status,
                bytes: outcome.bytes,
                referer: info.referer.map(span),
                user_agent: info.user_agent.map(span),
                duration: started.elapsed(),
            });
        }
        if self.core.draining() {
            self.core.log.flush();
        }
        outcome.keep_alive
    }

    /// The stages. Returns the outcome, and whether it goes to the access log (blocked requests
    /// are counted instead).
    async fn dispatch(&mut self, head: RequestHead, req: &mut Req, started: Instant) -> (Outcome, bool) {
        if let Route::Answer(a) = route(&head) {
            let resp = Response::Simple { status: a.status, lines: &a.lines, body: &a.body };
            return (self.send(req, resp).await, true);
        }
        if let Some(remaining) = self.core.state.blocks.check(req.client, started) {
            return (self.blocked(req, remaining).await, false);
        }
        if let Some(outcome) = self.try_static(&head, req).await {
            return (outcome, true);
        }
        let candidate = match self.try_cache(&head, req).await {
            Ok(outcome) => return (outcome, true),
            Err(candidate) => candidate,
        };
        (self.app(head, req, candidate, started).await, true)
    }

    /// The client: the peer, or what a trusted proxy says it forwards.
    fn client_of(&self, head: &RequestHead) -> std::net::IpAddr {
        let forwarded =
            head.fields.iter().filter(|f| head.bytes(f.name).eq_ignore_ascii_case(b"x-forwarded-for"));
        client_ip(self.peer, forwarded.map(|f| head.bytes(f.value)), &self.core.state.config.trusted_proxies)
    }

    /// A request from a blocked client: held back for the rest of the block (at most 25 s; at
    /// once when 100 are already held), then an empty 429. A drain ends the wait: a blocked
    /// client does not hold a stop or a replacement back.
    async fn blocked(&mut self, req: &mut Req, remaining: Duration) -> Outcome {
        let blocks = &self.core.state.blocks;
        if let Some(_held) = blocks.hold() {
            let delay = Duration::from_secs(remaining.as_secs()).min(crate::block::MAX_DELAY);
            self.core.watch.set_deadline(self.key, None);
            let until = Instant::now() + delay;
            while !self.core.draining() {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                monoio::time::sleep(left.min(DRAIN_CHECK)).await;
            }
        }
        self.send(req, Response::Simple { status: 429, lines: b"", body: b"" }).await
    }
}

impl LogInfo {
    fn of(head: &RequestHead, client: std::net::IpAddr) -> LogInfo {
        let find = |name: &[u8]| {
            head.fields.iter().find(|f| head.bytes(f.name).eq_ignore_ascii_case(name)).map(|f| f.value)
        };
        LogInfo {
            buf: head.buf.clone(),
            method: head.method,
            target: head.raw_target,
            referer: find(b"referer"),
            user_agent: find(b"user-agent"),
            minor: head.minor,
            client,
        }
    }
}
