//! The WSGI leg of a connection: pre-read the body, queue the job, then carry out what the worker
//! sends back (response head and body, requests for more body) until the response is complete.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::cached::{Candidate, Tee};
use super::parked::Unparked;
use super::send::{Response, Stream};
use super::transport::Transport;
use super::{BodyError, Conn, Outcome, PREBUFFER, Req};
use crate::client::{ClientKey, forwarded_https, is_public, is_robot};
use crate::handoff::exchange::{BodyPiece, Exchange, ToConn};
use crate::handoff::{Job, ParkRequest, Traits};
use crate::http::RequestHead;
use crate::stats::bump;

/// How carrying out a response ended.
enum Carried {
    Done(Outcome),
    Parked(Box<ParkRequest>),
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

const BUSY: &[u8] = b"Service Unavailable: too many requests queued\n";
const REFUSED: &[u8] = b"Gateway Timeout\n";

impl<T: Transport> Conn<T> {
    /// Runs the request through the application.
    pub(super) async fn app(
        &mut self,
        head: RequestHead,
        req: &mut Req,
        mut candidate: Option<Candidate>,
        started: Instant,
    ) -> Outcome {
        let mut prefix = Bytes::new();
        if !req.body.is_done() && matches!(head.method(), b"POST" | b"PUT" | b"PATCH") {
            if req.expect_continue {
                if self.send_continue(req.body_deadline).await.is_err() {
                    return Outcome::close(0, 0);
                }
                req.continued = true;
            }
            let deadline = req.body_deadline;
            match self.body_fill(&mut req.body, PREBUFFER, PREBUFFER, false, deadline).await {
                Ok(p) => prefix = p,
                Err(BodyError::Framing(e)) => {
                    let (status, bytes) = self.send_error(e).await;
                    return Outcome::close(status, bytes);
                }
                Err(BodyError::Gone) => return Outcome::close(0, 0),
            }
        }
        let proto = head.field(b"x-forwarded-proto");
        let https = forwarded_https(self.peer, proto, &self.core.state.config.trusted_proxies);
        let exchange = Arc::new(Exchange::with_mailbox(self.core.mailbox.clone()));
        let query = head.query().is_some_and(|q| !q.is_empty());
        let traits = if is_public(req.client) {
            let robot = head.field(b"user-agent").is_some_and(is_robot);
            Traits { client: Some(ClientKey::of(req.client)), robot, query }
        } else {
            Traits { client: None, robot: false, query }
        };
        let local = self.local_for(&head);
        // Queue time counts from now: after the body was read, if there was one to read.
        let queued_at = if prefix.is_empty() { started } else { self.core.now() };
        let mut job = Box::new(Job {
            head,
            body: prefix,
            body_complete: req.body.is_done(),
            peer: self.peer,
            local,
            https,
            exchange: exchange.clone(),
            queued_at,
            traits,
            park_arg: None,
        });
        let mut guard = LeaveGuard { exchange, completed: false };
        loop {
            bump(&self.core.state.stats.requests);
            let exchange = guard.exchange.clone();
            if self.submit(job).is_err() {
                let resp = Response::Simple { status: 503, lines: b"Retry-After: 1\r\n", body: BUSY };
                return self.send(req, resp).await;
            }
            // While the request waits and runs, the sweeper looks whether the client leaves.
            self.core.watch.set_waiting(self.key, Some(exchange.clone()));
            let carried = self.carry_out(req, &exchange, candidate.as_ref()).await;
            self.core.watch.set_waiting(self.key, None);
            let outcome = match carried {
                Carried::Done(outcome) => outcome,
                Carried::Parked(p) => {
                    self.apply_block(p.block, req.client);
                    match self.parked(p, req).await {
                        Unparked::Answered(outcome) => outcome,
                        Unparked::Retry(next) => {
                            // A retry's response is never stored.
                            candidate = None;
                            guard.exchange = next.exchange.clone();
                            job = next;
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
    fn submit(&self, job: Box<Job>) -> Result<(), Box<Job>> {
        let job = match self.core.queue.push(job) {
            Ok(()) => {
                self.core.batch_wake.note();
                return Ok(());
            }
            Err(job) => job,
        };
        self.core.watch.check_waiting();
        if self.core.queue.purge_gone() {
            return self.core.queue.submit(job);
        }
        Err(job)
    }

    /// Blocks the client when the app said so (`X-WSGo-Block`).
    pub(super) fn apply_block(&self, block: Option<i64>, client: std::net::IpAddr) {
        if let Some(secs) = block {
            self.core.state.blocks.block(client, secs, Instant::now());
        }
    }

    /// Follows the worker's messages until the response is complete or has failed.
    async fn carry_out(
        &mut self,
        req: &mut Req,
        exchange: &Exchange,
        candidate: Option<&Candidate>,
    ) -> Carried {
        let write_deadline = self.core.deadline(self.core.timeouts.write);
        // While a worker waits on this client (to take a chunk, to receive body), the wait ends
        // at the request's deadline: the socket is shut down then.
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
                    return Carried::Done(self.send(req, Response::Full { head: &rh, body: data }).await);
                }
                ToConn::Sendfile(rh, head) => {
                    self.apply_block(rh.block, req.client);
                    return Carried::Done(self.send_app_file(&head, req, &rh).await);
                }
                ToConn::Park(p) => return Carried::Parked(p),
                ToConn::Head(rh) => {
                    self.apply_block(rh.block, req.client);
                    tee = self.start_tee(candidate, &rh);
                    match self.stream_head(req, &rh, bounded(write_deadline)).await {
                        Ok(s) => stream = Some(s),
                        Err(outcome) => return Carried::Done(outcome),
                    }
                }
                ToConn::Chunk(data) => {
                    let Some(s) = stream.as_mut() else { return Carried::Done(Outcome::close(0, 0)) };
                    let len = data.len();
                    if tee.as_mut().is_some_and(|t| !t.push(&data)) {
                        tee = None;
                    }
                    if self.stream_chunk(s, data, bounded(write_deadline)).await.is_err() {
                        crate::log::debug!("{}: the client left during a streamed response", self.peer);
                        return Carried::Done(Outcome::close(s.status, s.sent));
                    }
                    exchange.wrote(len);
                }
                ToConn::End => {
                    let Some(mut s) = stream.take() else { return Carried::Done(Outcome::close(0, 0)) };
                    let (outcome, complete) = self.stream_end(req, &mut s).await;
                    if let (Some(t), Some(c), true) = (tee.take(), candidate, complete) {
                        let (rh, data) = t.finish();
                        self.offer(c, &rh, data);
                    }
                    return Carried::Done(outcome);
                }
                ToConn::Abort => {
                    let (status, sent) = stream.as_ref().map_or((0, 0), |s| (s.status, s.sent));
                    return Carried::Done(Outcome::close(status, sent));
                }
                ToConn::Refused => {
                    let resp = Response::Simple { status: 504, lines: b"", body: REFUSED };
                    return Carried::Done(self.send(req, resp).await);
                }
                ToConn::ReadBody { min, max } => {
                    let deadline = bounded(req.body_deadline);
                    if req.expect_continue && !req.continued && !req.body.is_done() {
                        req.continued = true;
                        if self.send_continue(deadline).await.is_err() {
                            exchange.deliver_body(BodyPiece::Failed);
                            continue;
                        }
                    }
                    let piece = match self.body_fill(&mut req.body, min, max, true, deadline).await {
                        Ok(d) if !d.is_empty() => BodyPiece::Data(d),
                        Ok(_) => BodyPiece::End,
                        Err(_) => BodyPiece::Failed,
                    };
                    exchange.deliver_body(piece);
                }
            }
        }
    }
}
