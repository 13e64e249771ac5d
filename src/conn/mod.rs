//! One connection's keep-alive loop: read a head, route it, answer it, repeat.
//!
//! Runs on a core thread and never blocks it: no Python, no locks held across an await. Requests
//! are answered strictly in order, so pipelined requests get their responses in order. Timeouts
//! follow the original: 2 s for a request head, 60 s idle between requests, 600 s for a body,
//! 3600 s to write a response.

mod cached;
mod files;
mod parked;
mod respond;
pub mod watch;

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use crate::client::client_ip;
use crate::config::canonical;
use crate::http::body::{BodyState, Step};
use crate::http::request::Span;
use crate::http::response::encode_simple;
use crate::http::{HttpError, RequestHead, parse_head};
use crate::log::{AccessLog, Entry};
use crate::pool::Pool;
use crate::router::{Route, error_answer, route};
use crate::server::Shared;
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
/// How much of a POST/PUT/PATCH body is read before the request is queued (SPEC §6.2).
pub const PREBUFFER: usize = 1 << 20;
/// Read size.
const READ_CHUNK: usize = 16 * 1024;
/// Most the read buffer grows by at once while a body is pre-read.
const PREBUFFER_STEP: usize = 256 * 1024;
/// Bodies below this size are copied behind the head and sent with it; larger ones are written
/// from where they lie (a shared Python object, a cached entry, a file's memory) with a vectored
/// write, see [`Conn::write_parts`].
const COPY_BELOW: usize = crate::wsgi::shared::SHARE_FROM;

/// What one core thread's connections share.
pub struct CoreCtx {
    pub pool: Pool,
    pub shared: Arc<Shared>,
    pub log: AccessLog,
    /// The connections' sockets and deadlines.
    pub watch: Watch,
    /// Connections open on this core.
    pub open: Cell<usize>,
    /// Where the Python threads leave wake-ups for this core's connection tasks.
    pub mailbox: Arc<crate::pool::mailbox::Mailbox>,
    /// What this core knows of the `--static-map` folders (`None` without mappings).
    pub files: Option<crate::static_files::FileCache>,
    /// The listener's address: every connection's local address unless it is a wildcard.
    pub listen_addr: SocketAddr,
    /// The last time read on this core (see [`CoreCtx::recent`]).
    pub clock: Cell<Instant>,
}

impl CoreCtx {
    /// Reads the clock, and remembers the reading for [`CoreCtx::recent`].
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
}

/// What the access log needs of a request after its head has moved into a job.
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
struct Outcome {
    status: u16,
    bytes: u64,
    keep_alive: bool,
}

impl Outcome {
    fn close(status: u16, bytes: u64) -> Outcome {
        Outcome { status, bytes, keep_alive: false }
    }
}

/// Serves one accepted connection until it closes.
pub async fn serve(stream: TcpStream, peer: SocketAddr, core: Rc<CoreCtx>) {
    let listen = core.listen_addr;
    let accepted = core.recent();
    let key = core.watch.register(stream.as_raw_fd());
    let mut conn = Conn {
        stream,
        key,
        peer: SocketAddr::new(canonical(peer.ip()), peer.port()),
        local: SocketAddr::new(canonical(listen.ip()), listen.port()),
        buf: BytesMut::with_capacity(READ_CHUNK),
        out: Vec::with_capacity(1024),
        core,
        accepted,
        current: None,
    };
    conn.run().await;
}

struct Conn {
    stream: TcpStream,
    /// This connection's entry in the core's [`Watch`].
    key: usize,
    peer: SocketAddr,
    /// The listener's address until [`Conn::local_for`] needs the exact one.
    local: SocketAddr,
    buf: BytesMut,
    out: Vec<u8>,
    core: Rc<CoreCtx>,
    accepted: Instant,
    /// The request being answered (for its access-log line, and for the report of a panic).
    current: Option<LogInfo>,
}

impl Drop for Conn {
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
            eprintln!(
                "wsgo: a connection from {} failed on \"{}\" (a bug: the panic is above); it is closed, the server goes on",
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

/// The pieces of one vectored write: the pending head bytes, a body and a short tail.
struct Parts {
    /// What is left to write; rebuilt by [`Parts::advance`].
    iov: Vec<libc::iovec>,
    out: Vec<u8>,
    body: Bytes,
    tail: &'static [u8],
    written: usize,
}

impl Parts {
    fn new(out: Vec<u8>, body: Bytes, tail: &'static [u8]) -> Parts {
        let mut p = Parts { iov: Vec::with_capacity(3), out, body, tail, written: 0 };
        p.aim();
        p
    }

    fn is_done(&self) -> bool {
        self.written == self.out.len() + self.body.len() + self.tail.len()
    }

    fn advance(&mut self, n: usize) {
        self.written += n;
        self.aim();
    }

    /// Points the iovecs at the bytes not yet written.
    fn aim(&mut self) {
        let Parts { iov, out, body, tail, written } = self;
        iov.clear();
        let mut skip = *written;
        for part in [&out[..], &body[..], tail] {
            if skip >= part.len() {
                skip -= part.len();
                continue;
            }
            let rest = &part[skip..];
            skip = 0;
            iov.push(libc::iovec { iov_base: rest.as_ptr() as *mut libc::c_void, iov_len: rest.len() });
        }
    }
}

// SAFETY: the iovecs live in a heap vector and point into `out`'s heap buffer, `body`'s shared
// buffer and a static tail. None of these moves or changes while the value exists, wherever the
// value itself is moved (into the driver's operation and back), and `aim` keeps them within the
// three buffers.
unsafe impl monoio::buf::IoVecBuf for Parts {
    fn read_iovec_ptr(&self) -> *const libc::iovec {
        self.iov.as_ptr()
    }

    fn read_iovec_len(&self) -> usize {
        self.iov.len()
    }
}

/// Why reading a head stopped without one.
enum HeadError {
    /// Answer with this status, then close.
    Http(HttpError),
    /// Closed, timed out or failed: close silently.
    Gone,
}

impl Conn {
    async fn run(&mut self) {
        let mut first = true;
        loop {
            let (parsed, len) = match self.read_head(first).await {
                Ok(Some(p)) => p,
                Ok(None) | Err(HeadError::Gone) => return,
                Err(HeadError::Http(e)) => {
                    self.reject(e).await;
                    return;
                }
            };
            first = false;
            // A copy of the head (a few hundred bytes) keeps the read buffer unshared, so it is
            // reused for the next request instead of a new one being allocated.
            let head = parsed.attach(Bytes::copy_from_slice(&self.buf[..len]));
            self.buf.advance(len);
            if !self.handle(head).await || self.core.shared.draining.load(SeqCst) {
                return;
            }
        }
    }

    /// Reads until a complete head is buffered. `Ok(None)`: the client closed between requests.
    async fn read_head(&mut self, first: bool) -> Result<Option<(RequestHead, usize)>, HeadError> {
        let mut deadline = if first || !self.buf.is_empty() {
            Some(if first { self.accepted } else { self.core.recent() } + HEAD_TIMEOUT)
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
            if idle && self.core.shared.draining.load(SeqCst) {
                return Ok(None);
            }
            self.core.watch.set_idle(self.key, idle);
            let read =
                self.read_more(Some(deadline.unwrap_or_else(|| self.core.recent() + IDLE_TIMEOUT))).await;
            self.core.watch.set_idle(self.key, false);
            match read {
                Ok(0) if self.buf.is_empty() => return Ok(None),
                Ok(0) | Err(_) => return Err(HeadError::Gone),
                Ok(_) => {
                    deadline.get_or_insert_with(|| self.core.recent() + HEAD_TIMEOUT);
                }
            }
        }
    }

    /// One read into the buffer. A passed deadline shuts the socket down (see [`Watch`]), which
    /// ends the read with 0 or an error.
    async fn read_more(&mut self, deadline: Option<Instant>) -> io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 2 {
            self.buf.reserve(READ_CHUNK);
        }
        self.core.watch.set_deadline(self.key, deadline);
        // monoio reads into a buffer from its start: read into the spare capacity past `len`.
        let len = self.buf.len();
        let spare = std::mem::take(&mut self.buf).slice_mut(len..);
        let (res, spare) = self.stream.read(spare).await;
        self.buf = spare.into_inner();
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

    /// Writes `self.out` in full and clears it.
    async fn flush_out(&mut self, deadline: Instant) -> io::Result<()> {
        let out = std::mem::take(&mut self.out);
        self.write_bytes_vec(out, deadline).await
    }

    async fn write_bytes_vec(&mut self, out: Vec<u8>, deadline: Instant) -> io::Result<()> {
        self.core.watch.set_deadline(self.key, Some(deadline));
        let (res, mut out) = self.stream.write_all(out).await;
        out.clear();
        self.out = out;
        res.map(drop)
    }

    /// Writes `self.out`, then `body`, then `tail` (a chunk's CRLF) with one writev per attempt:
    /// a large body goes out from where it lies (a shared Python object, a cached entry) instead
    /// of being copied behind the head. Clears `self.out`.
    async fn write_parts(&mut self, body: Bytes, tail: &'static [u8], deadline: Instant) -> io::Result<()> {
        self.core.watch.set_deadline(self.key, Some(deadline));
        let mut parts = Parts::new(std::mem::take(&mut self.out), body, tail);
        let result = loop {
            if parts.is_done() {
                break Ok(());
            }
            let (res, back) = self.stream.writev(parts).await;
            parts = back;
            match res {
                Ok(0) => break Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => parts.advance(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        let mut out = parts.out;
        out.clear();
        self.out = out;
        result
    }

    /// Answers a malformed request and logs it; the connection is closed after.
    async fn reject(&mut self, e: HttpError) {
        let started = Instant::now();
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

    /// Writes the response to a protocol error (the connection is closed after it). Returns the
    /// status and the body bytes sent.
    async fn send_error(&mut self, e: HttpError) -> (u16, u64) {
        let a = error_answer(e);
        encode_simple(&mut self.out, a.status, &a.lines, &a.body, false, false, 1);
        match self.flush_out(Instant::now() + HEAD_TIMEOUT).await {
            Ok(()) => (a.status, a.body.len() as u64),
            Err(_) => (a.status, 0),
        }
    }

    /// Answers one request; returns whether the connection stays open.
    async fn handle(&mut self, head: RequestHead) -> bool {
        let started = self.core.now();
        let forwarded =
            head.fields.iter().filter(|f| head.bytes(f.name).eq_ignore_ascii_case(b"x-forwarded-for"));
        let client = client_ip(
            self.peer.ip(),
            forwarded.map(|f| head.bytes(f.value)),
            &self.core.shared.config.trusted_proxies,
        );
        let find = |name: &[u8]| {
            head.fields.iter().find(|f| head.bytes(f.name).eq_ignore_ascii_case(name)).map(|f| f.value)
        };
        let info = LogInfo {
            buf: head.buf.clone(),
            method: head.method,
            target: head.raw_target,
            referer: find(b"referer"),
            user_agent: find(b"user-agent"),
            minor: head.minor,
            client,
        };
        #[cfg(feature = "fault-injection")]
        if head.path() == Some(b"/__panic") {
            self.current = Some(info);
            panic!("fault injection: a panic on a chosen request");
        }
        if let Some(remaining) = self.core.shared.blocks.check(client, started) {
            return self.blocked(&head, remaining).await;
        }
        // Kept where a panic can find it (see `Drop for Conn`), until the line is written.
        self.current = Some(info);
        let outcome = match route(&head) {
            Route::Answer(a) => self.simple(&head, a.status, &a.lines, &a.body).await,
            Route::Stages => match self.try_static(&head).await {
                Some(outcome) => outcome,
                None => match self.try_cache(&head).await {
                    Ok(outcome) => outcome,
                    Err(candidate) => self.wsgi(head, candidate, client, started).await,
                },
            },
        };
        if let Some(info) = self.current.take() {
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
        if self.core.shared.draining.load(SeqCst) {
            self.core.log.flush();
        }
        outcome.keep_alive
    }

    /// A request from a blocked client: held back for the rest of the block (at most 25 s; at
    /// once when 100 are already held), then an empty 429. Not access-logged (counted instead).
    async fn blocked(&mut self, head: &RequestHead, remaining: Duration) -> bool {
        let blocks = &self.core.shared.blocks;
        if let Some(_held) = blocks.hold() {
            let delay = Duration::from_secs(remaining.as_secs()).min(crate::block::MAX_DELAY);
            self.core.watch.set_deadline(self.key, None);
            monoio::time::sleep(delay).await;
        }
        self.simple(head, 429, b"", b"").await.keep_alive
    }

    /// A response the server makes by itself.
    async fn simple(&mut self, head: &RequestHead, status: u16, lines: &[u8], body: &[u8]) -> Outcome {
        let mut state = BodyState::new(head.body);
        let keep = head.keep_alive
            && state.discard_buffered(&mut self.buf)
            && !self.core.shared.draining.load(SeqCst);
        encode_simple(&mut self.out, status, lines, body, head.is_head(), keep, head.minor);
        let sent = if head.is_head() { 0 } else { body.len() as u64 };
        match self.flush_out(self.core.recent() + WRITE_TIMEOUT).await {
            Ok(()) => Outcome { status, bytes: sent, keep_alive: keep },
            Err(_) => Outcome::close(status, 0),
        }
    }

    /// Takes up to `max` body bytes, reading from the socket as needed.
    async fn body_piece(
        &mut self,
        state: &mut BodyState,
        max: usize,
        deadline: Instant,
    ) -> Result<Option<Bytes>, Option<HttpError>> {
        loop {
            match state.take(&mut self.buf, max).map_err(Some)? {
                Step::Data(d) => return Ok(Some(d)),
                Step::Done => return Ok(None),
                Step::NeedMore => match self.read_more(Some(deadline)).await {
                    Ok(n) if n > 0 => {}
                    _ => return Err(None),
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
    ) -> Result<Bytes, Option<HttpError>> {
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
                match self.read_more(Some(deadline)).await {
                    Ok(n) if n > 0 => {}
                    _ => return Err(None),
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

    async fn send_continue(&mut self, deadline: Instant) -> io::Result<()> {
        self.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        self.flush_out(deadline).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the iovecs point at, joined.
    fn aimed(p: &Parts) -> Vec<u8> {
        p.iov
            .iter()
            // SAFETY: `aim` points every iovec into one of the three live buffers of `p`.
            .flat_map(|v| unsafe { std::slice::from_raw_parts(v.iov_base as *const u8, v.iov_len) }.to_vec())
            .collect()
    }

    #[test]
    fn a_vectored_write_resumes_where_a_partial_one_stopped() {
        let whole = b"HTTP/1.1 200 OK\r\n\r\n0123456789\r\n";
        // Head, body and tail of every size, including empty ones, cut after every byte count.
        for (out, body, tail) in [
            (&b"HTTP/1.1 200 OK\r\n\r\n"[..], &b"0123456789"[..], &b"\r\n"[..]),
            (&b""[..], &b"HTTP/1.1 200 OK\r\n\r\n0123456789\r\n"[..], &b""[..]),
            (&b"HTTP/1.1 200 OK\r\n\r\n0123456789\r\n"[..], &b""[..], &b""[..]),
        ] {
            let tail: &'static [u8] = if tail.is_empty() { b"" } else { b"\r\n" };
            for step in 1..=whole.len() {
                let mut p = Parts::new(out.to_vec(), Bytes::copy_from_slice(body), tail);
                let mut written = 0;
                while !p.is_done() {
                    assert_eq!(aimed(&p), &whole[written..], "step {step}");
                    assert!(p.iov.len() <= 3 && p.iov.iter().all(|v| v.iov_len > 0));
                    let n = step.min(whole.len() - written);
                    p.advance(n);
                    written += n;
                }
                assert_eq!(written, whole.len());
                assert!(p.iov.is_empty());
            }
        }
    }
}
