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
            match self.prebuffer(&mut body, PREBUFFER, body_deadline).await {
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
        let job = Job {
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
        let mut job = job;
        let mut exchange = exchange;
        loop {
            crate::stats::bump(&crate::stats::STATS.requests);
            if self.core.pool.submit(job).is_err() {
                let keep = req.keep_alive && body.discard_buffered(&mut self.buf);
                let msg = b"Service Unavailable: too many requests queued\n";
                encode_simple(&mut self.out, 503, b"Retry-After: 1\r\n", msg, req.is_head, keep, req.minor);
                let ok = self.flush_out(self.core.recent() + WRITE_TIMEOUT).await.is_ok();
                return Outcome { status: 503, bytes: msg.len() as u64, keep_alive: keep && ok };
            }
            let carried = self
                .carry_out(&req, &exchange, &mut body, &mut continued, body_deadline, candidate.as_ref())
                .await;
            let outcome = match carried {
                Carried::Done(outcome) => outcome,
                Carried::Parked(p) => {
                    self.apply_block(p.block, req.client);
                    match self.parked(p, &mut body, req.keep_alive, req.is_head, req.minor).await {
                        Unparked::Answered(outcome) => outcome,
                        Unparked::Retry(next) => {
                            // A retry's response is never stored.
                            candidate = None;
                            exchange = next.exchange.clone();
                            job = *next;
                            continue;
                        }
                    }
                }
            };
            if !outcome.keep_alive {
                exchange.set_gone();
            }
            return outcome;
        }
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
                    if self.flush_out(write_deadline).await.is_err() {
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
                    if self.send_chunk(s, data, write_deadline).await.is_err() {
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
                ToConn::ReadBody(max) => {
                    if req.expect_continue && !*continued && !body.is_done() {
                        *continued = true;
                        if self.send_continue(body_deadline).await.is_err() {
                            exchange.deliver_body(BodyPiece::Failed);
                            continue;
                        }
                    }
                    let piece = match self.body_piece(body, max, body_deadline).await {
                        Ok(Some(d)) => BodyPiece::Data(d),
                        Ok(None) => BodyPiece::End,
                        Err(_) => BodyPiece::Failed,
                    };
                    exchange.deliver_body(piece);
                }
            }
        }
    }

    /// Whether the connection may be reused once this response is out: the request allows it,
    /// the app did not ask to close, and the request body is fully consumed.
    fn may_keep(&mut self, req: &Req, rh: &ResponseHead, body: &mut BodyState) -> bool {
        req.keep_alive
            && !rh.close
            && !self.core.shared.draining.load(SeqCst)
            && body.discard_buffered(&mut self.buf)
    }

    fn start_stream(&mut self, req: &Req, rh: &ResponseHead, body: &mut BodyState) -> Stream {
        let framing = Framing::choose(rh.status, req.is_head, req.minor, rh.content_length);
        let keep_alive = self.may_keep(req, rh, body) && framing != Framing::UntilClose;
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
