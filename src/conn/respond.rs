//! The WSGI leg of a connection: pre-read the body, queue the job, then carry out what the worker
//! sends back (response head and body, requests for more body) until the response is complete.

use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Instant;

use bytes::Bytes;

use super::cached::{Candidate, Tee};
use super::parked::Unparked;
use super::{BODY_TIMEOUT, COPY_BELOW, Conn, Outcome, PREBUFFER, WRITE_TIMEOUT};
use crate::client::forwarded_https;
use crate::http::RequestHead;
use crate::http::body::BodyState;
use crate::http::response::{Framing, ResponseHead, encode_head, encode_simple, push_chunk_size};
use crate::pool::Job;
use crate::pool::exchange::{BodyPiece, Exchange, ToConn};
use crate::pool::priority::{ClientKey, Traits, is_public, is_robot};

/// What the connection knows of the request while its head is with the worker.
struct Req {
    is_head: bool,
    minor: u8,
    keep_alive: bool,
    expect_continue: bool,
    client: std::net::IpAddr,
}

/// How carrying out a response ended.
enum Carried {
    Done(Outcome),
    Parked(Box<crate::pool::exchange::ParkRequest>),
}

/// Marks the exchange gone when the connection leaves it without a complete response (an
/// error, an early return, a panic): the worker stops at its next step instead of waiting.
struct LeaveGuard {
    exchange: Arc<Exchange>,
    completed: bool,
}

impl Drop for LeaveGuard {
    fn drop(&mut self) {
        if !self.completed {
            self.exchange.set_gone();
        }
    }
}

/// A response being streamed.
struct Stream {
    framing: Framing,
    status: u16,
    /// Body bytes the framing still allows (Content-Length responses).
    left: Option<u64>,
    sent: u64,
    keep_alive: bool,
}

impl Conn {
    pub(super) async fn wsgi(
        &mut self,
        head: RequestHead,
        mut candidate: Option<Candidate>,
        client: std::net::IpAddr,
        started: Instant,
    ) -> Outcome {
        let req = Req {
            is_head: head.is_head(),
            minor: head.minor,
            keep_alive: head.keep_alive,
            expect_continue: head.expect_continue,
            client,
        };
        let body_deadline = started + BODY_TIMEOUT;
        let mut body = BodyState::new(head.body);
        let mut continued = false;
        let mut prefix = Bytes::new();
        if !body.is_done() && matches!(head.method(), b"POST" | b"PUT" | b"PATCH") {
            if req.expect_continue {
                if self.send_continue(body_deadline).await.is_err() {
                    return Outcome::close(0, 0);
                }
                continued = true;
            }
            match self.body_fill(&mut body, PREBUFFER, PREBUFFER, false, body_deadline).await {
                Ok(p) => prefix = p,
                Err(Some(e)) => {
                    let (status, bytes) = self.send_error(e).await;
                    return Outcome::close(status, bytes);
                }
                Err(None) => return Outcome::close(0, 0),
            }
        }
        let proto = head.field(b"x-forwarded-proto");
        let https = forwarded_https(self.peer.ip(), proto, &self.core.shared.config.trusted_proxies);
        let exchange = Arc::new(Exchange::with_mailbox(self.core.mailbox.clone()));
        let query = head.query().is_some_and(|q| !q.is_empty());
        let traits = if is_public(client) {
            let robot = head.field(b"user-agent").is_some_and(is_robot);
            Traits { client: Some(ClientKey::of(client)), robot, query }
        } else {
            Traits { client: None, robot: false, query }
        };
        let local = self.local_for(&head);
        // Queue time counts from now: after the body was read, if there was one to read.
        let queued_at = if prefix.is_empty() { started } else { self.core.now() };
        let mut job = Job {
            head,
            body: prefix,
            body_complete: body.is_done(),
            peer: self.peer,
            local,
            https,
            exchange: exchange.clone(),
            queued_at,
            traits,
            park_arg: None,
        };
        let mut guard = LeaveGuard { exchange, completed: false };
        loop {
            crate::stats::bump(&crate::stats::STATS.requests);
            let exchange = guard.exchange.clone();
            if let Err(refused) = self.submit(job) {
                drop(refused);
                let keep = req.keep_alive && body.discard_buffered(&mut self.buf);
                let msg = b"Service Unavailable: too many requests queued\n";
                encode_simple(&mut self.out, 503, b"Retry-After: 1\r\n", msg, req.is_head, keep, req.minor);
                let ok = self.flush_out(self.core.recent() + WRITE_TIMEOUT).await.is_ok();
                return Outcome { status: 503, bytes: msg.len() as u64, keep_alive: keep && ok };
            }
            // While the request waits and runs, the sweeper looks whether the client leaves.
            self.core.watch.set_waiting(self.key, Some(exchange.clone()));
            let carried = self
                .carry_out(&req, &exchange, &mut body, &mut continued, body_deadline, candidate.as_ref())
                .await;
            self.core.watch.set_waiting(self.key, None);
            let outcome = match carried {
                Carried::Done(outcome) => outcome,
                Carried::Parked(p) => {
                    self.apply_block(p.block, req.client);
                    match self.parked(p, &mut body, req.keep_alive, req.is_head, req.minor).await {
                        Unparked::Answered(outcome) => outcome,
                        Unparked::Retry(next) => {
                            // A retry's response is never stored.
                            candidate = None;
                            guard.exchange = next.exchange.clone();
                            job = *next;
                            continue;
                        }
                    }
                }
            };
            guard.completed = outcome.keep_alive;
            return outcome;
        }
    }

    /// Queues a job. When the queue is full, the requests of clients that already left are
    /// taken out first (a flood of connect-send-reset clients must not crowd out the living):
    /// this core's waiting connections are looked at now rather than at the next sweep.
    fn submit(&self, job: Job) -> Result<(), Box<Job>> {
        let job = match self.core.pool.submit(job) {
            Ok(()) => return Ok(()),
            Err(job) => job,
        };
        self.core.watch.check_waiting();
        if self.core.pool.purge_gone() {
            return self.core.pool.submit(*job);
        }
        Err(job)
    }

    /// Blocks the client when the app said so (`X-WSGo-Block`).
    fn apply_block(&self, block: Option<i64>, client: std::net::IpAddr) {
        if let Some(secs) = block {
            self.core.shared.blocks.block(client, secs, Instant::now());
        }
    }

    /// Follows the worker's messages until the response is complete or has failed.
    async fn carry_out(
        &mut self,
        req: &Req,
        exchange: &Exchange,
        body: &mut BodyState,
        continued: &mut bool,
        body_deadline: Instant,
        candidate: Option<&Candidate>,
    ) -> Carried {
        let write_deadline = self.core.recent() + WRITE_TIMEOUT;
        // While a worker waits on this client (to take a chunk, to receive body), the wait ends
        // at the request's deadline (DESIGN decision 16): the socket is shut down then.
        let bounded = |d: Instant| exchange.deadline().map_or(d, |r| r.min(d));
        let mut stream: Option<Stream> = None;
        let mut tee: Option<Tee> = None;
        loop {
            // Waiting for the application has no deadline of ours.
            self.core.watch.set_deadline(self.key, None);
            match exchange.recv().await {
                ToConn::Full(rh, data) => {
                    if let Some(c) = candidate {
                        self.offer(c, &rh, data.clone());
                    }
                    self.apply_block(rh.block, req.client);
                    return Carried::Done(self.send_full(req, rh, data, body, write_deadline).await);
                }
                ToConn::Sendfile(rh, head) => {
                    self.apply_block(rh.block, req.client);
                    return Carried::Done(self.send_app_file(&head, body, &rh).await);
                }
                ToConn::Park(p) => return Carried::Parked(p),
                ToConn::Head(rh) => {
                    self.apply_block(rh.block, req.client);
                    tee = self.start_tee(candidate, &rh);
                    let s = self.start_stream(req, &rh, body);
                    encode_head(&mut self.out, &rh, s.framing, s.keep_alive, req.minor);
                    if self.flush_out(bounded(write_deadline)).await.is_err() {
                        return Carried::Done(Outcome::close(rh.status, 0));
                    }
                    stream = Some(s);
                }
                ToConn::Chunk(data) => {
                    let Some(s) = stream.as_mut() else { return Carried::Done(Outcome::close(0, 0)) };
                    let len = data.len();
                    if tee.as_mut().is_some_and(|t| !t.push(&data)) {
                        tee = None;
                    }
                    if self.send_chunk(s, data, bounded(write_deadline)).await.is_err() {
                        return Carried::Done(Outcome::close(s.status, s.sent));
                    }
                    exchange.wrote(len);
                }
                ToConn::End => {
                    let Some(s) = stream.as_mut() else { return Carried::Done(Outcome::close(0, 0)) };
                    match s.framing {
                        Framing::Chunked => self.out.extend_from_slice(b"0\r\n\r\n"),
                        Framing::Length(_) if s.left != Some(0) => {
                            eprintln!(
                                "wsgo: response shorter than its Content-Length; closing the connection"
                            );
                            s.keep_alive = false;
                        }
                        Framing::UntilClose => s.keep_alive = false,
                        _ => {}
                    }
                    // PEP 3333 lets the app read its body after the head went out: what is
                    // left of it is dropped only now (the head promised keep-alive only if
                    // the rest was already buffered, see `start_stream`).
                    s.keep_alive = s.keep_alive && body.discard_buffered(&mut self.buf);
                    let ok = self.flush_out(write_deadline).await.is_ok();
                    let whole = !matches!(s.framing, Framing::Length(_)) || s.left == Some(0);
                    if let (Some(t), Some(c), true) = (tee.take(), candidate, whole) {
                        let (rh, data) = t.finish();
                        self.offer(c, &rh, data);
                    }
                    return Carried::Done(Outcome {
                        status: s.status,
                        bytes: s.sent,
                        keep_alive: s.keep_alive && ok,
                    });
                }
                ToConn::Abort => {
                    let (status, sent) = stream.as_ref().map_or((0, 0), |s| (s.status, s.sent));
                    return Carried::Done(Outcome::close(status, sent));
                }
                ToConn::ReadBody { min, max } => {
                    let deadline = bounded(body_deadline);
                    if req.expect_continue && !*continued && !body.is_done() {
                        *continued = true;
                        if self.send_continue(deadline).await.is_err() {
                            exchange.deliver_body(BodyPiece::Failed);
                            continue;
                        }
                    }
                    let piece = match self.body_fill(body, min, max, true, deadline).await {
                        Ok(d) if !d.is_empty() => BodyPiece::Data(d),
                        Ok(_) => BodyPiece::End,
                        Err(_) => BodyPiece::Failed,
                    };
                    exchange.deliver_body(piece);
                }
            }
        }
    }

    /// Whether the connection may be reused once this response is out: the request allows it,
    /// the app did not ask to close, and the request body is fully consumed (what is buffered
    /// of it is dropped). For a response the app has finished.
    fn may_keep(&mut self, req: &Req, rh: &ResponseHead, body: &mut BodyState) -> bool {
        req.keep_alive
            && !rh.close
            && !self.core.shared.draining.load(SeqCst)
            && body.discard_buffered(&mut self.buf)
    }

    fn start_stream(&mut self, req: &Req, rh: &ResponseHead, body: &BodyState) -> Stream {
        let framing = Framing::choose(rh.status, req.is_head, req.minor, rh.content_length);
        // The app may still read its body: nothing is consumed here. Keep-alive is promised
        // only if the rest of the body is already buffered, so it can be dropped at the end.
        let keep_alive = req.keep_alive
            && !rh.close
            && !self.core.shared.draining.load(SeqCst)
            && body.ends_within(&self.buf)
            && framing != Framing::UntilClose;
        let left = match framing {
            Framing::Length(n) => Some(n),
            _ => None,
        };
        Stream { framing, status: rh.status, left, sent: 0, keep_alive }
    }

    async fn send_chunk(&mut self, s: &mut Stream, data: Bytes, deadline: Instant) -> std::io::Result<()> {
        let data = match s.framing {
            Framing::NoBody { .. } => return Ok(()),
            Framing::Length(_) => {
                let left = s.left.unwrap_or(0);
                if data.len() as u64 > left {
                    eprintln!("wsgo: response longer than its Content-Length; the excess is not sent");
                    s.keep_alive = false;
                }
                let n = (data.len() as u64).min(left) as usize;
                s.left = Some(left - n as u64);
                data.slice(..n)
            }
            Framing::Chunked | Framing::UntilClose => data,
        };
        if data.is_empty() {
            return Ok(());
        }
        s.sent += data.len() as u64;
        let chunked = s.framing == Framing::Chunked;
        if chunked {
            push_chunk_size(&mut self.out, data.len());
        }
        let tail: &'static [u8] = if chunked { b"\r\n" } else { b"" };
        if data.len() < COPY_BELOW {
            self.out.extend_from_slice(&data);
            self.out.extend_from_slice(tail);
            return self.flush_out(deadline).await;
        }
        self.write_parts(data, tail, deadline).await
    }

    async fn send_full(
        &mut self,
        req: &Req,
        rh: ResponseHead,
        data: Bytes,
        body: &mut BodyState,
        deadline: Instant,
    ) -> Outcome {
        let len = data.len() as u64;
        let framing =
            Framing::choose(rh.status, req.is_head, req.minor, Some(rh.content_length.unwrap_or(len)));
        let mut keep = self.may_keep(req, &rh, body);
        let mut data = data;
        if let Framing::Length(declared) = framing
            && declared != len
        {
            eprintln!(
                "wsgo: response body is {len} bytes but its Content-Length says {declared}; closing the connection"
            );
            keep = false;
            data = data.slice(..declared.min(len) as usize);
        }
        encode_head(&mut self.out, &rh, framing, keep, req.minor);
        let sent = if framing.has_body() { data.len() as u64 } else { 0 };
        let result = if !framing.has_body() || data.is_empty() {
            self.flush_out(deadline).await
        } else if data.len() < COPY_BELOW {
            self.out.extend_from_slice(&data);
            self.flush_out(deadline).await
        } else {
            self.write_parts(data, b"", deadline).await
        };
        match result {
            Ok(()) => Outcome { status: rh.status, bytes: sent, keep_alive: keep },
            Err(_) => Outcome::close(rh.status, 0),
        }
    }
}
