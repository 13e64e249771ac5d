//! The parked leg of a connection (SPEC §16, DESIGN decision 11): wait on the core thread, with
//! no worker, until `notify_parked`, the park timeout, the client leaving, or shutdown; then act.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::task::Poll;
use std::time::{Duration, Instant};

use monoio::buf::IoBufMut;
use monoio::io::{CancelableAsyncReadRent, Canceller};

use super::{Conn, Outcome, WRITE_TIMEOUT};
use crate::client::forwarded_https;
use crate::http::body::BodyState;
use crate::http::response::encode_simple;
use crate::park::Action;
use crate::pool::Job;
use crate::pool::exchange::{Exchange, ParkRequest};

/// Bytes a parked connection buffers from its client (a pipelined request) before it stops
/// reading until the parked request is answered.
const PARKED_READ_LIMIT: usize = 64 * 1024;
/// How often a parked request looks whether the server is shutting down.
const DRAIN_CHECK: Duration = Duration::from_millis(250);

/// Takes a parked request off its channels when dropped.
struct Leave<'a>(&'a crate::park::Parking, u64);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.leave(self.1);
    }
}

/// How a parked request ended.
pub(super) enum Unparked {
    Answered(Outcome),
    Retry(Box<Job>),
}

enum Event {
    Notified(Action, String),
    TimedOut,
    Read(std::io::Result<usize>),
    Tick,
}

impl Conn {
    /// Waits for the parked request's fate and carries it out.
    pub(super) async fn parked(
        &mut self,
        p: Box<ParkRequest>,
        body: &mut BodyState,
        keep_alive: bool,
        is_head: bool,
        minor: u8,
    ) -> Unparked {
        let parking = self.core.shared.parking.clone();
        let names = p.channels.join(", ");
        let (id, notice) = parking.park(p.channels.clone());
        // Off the channels however this ends (a panic included): the count stays true.
        let leave = Leave(&parking, id);
        let now = Instant::now();
        let deadline = now.checked_add(p.timeout).unwrap_or(now);
        self.core.watch.set_deadline(self.key, None);
        let (action, arg) = loop {
            if self.core.shared.draining.load(SeqCst) {
                break (p.action, String::new());
            }
            let reading = self.buf.len() < PARKED_READ_LIMIT;
            match self.wait_one(&notice, deadline, reading).await {
                Event::Notified(a, arg) => break (a, arg),
                Event::TimedOut => break (p.action, String::new()),
                // The client closed (or reset): nothing to answer.
                Event::Read(Ok(0) | Err(_)) => break (Action::Disconnect, String::new()),
                Event::Read(Ok(_)) | Event::Tick => {}
            }
        };
        drop(leave);
        let code = match action {
            Action::Disconnect => 0,
            Action::Retry => 1,
            Action::Http204 => 2,
            Action::Http504 => 3,
        };
        eprintln!("wsgo: - retry {names} notified: action = {code}");
        let answer = |status| (status, is_head, minor);
        match action {
            Action::Disconnect => Unparked::Answered(Outcome::close(0, 0)),
            Action::Http204 => {
                Unparked::Answered(self.answer_parked(answer(204), body, keep_alive, b"").await)
            }
            Action::Http504 => Unparked::Answered(
                self.answer_parked(answer(504), body, keep_alive, b"Gateway Timeout\n").await,
            ),
            Action::Retry if p.streamed => {
                eprintln!("wsgo: a parked request read its body past the first MiB: it cannot be retried");
                Unparked::Answered(self.answer_parked(answer(502), body, keep_alive, b"Bad Gateway\n").await)
            }
            Action::Retry => {
                let p = *p;
                let proto = p.head.field(b"x-forwarded-proto");
                let https = forwarded_https(self.peer.ip(), proto, &self.core.shared.config.trusted_proxies);
                Unparked::Retry(Box::new(Job {
                    head: p.head,
                    body: p.body,
                    body_complete: p.body_complete,
                    peer: self.peer,
                    local: self.local,
                    https,
                    exchange: Arc::new(Exchange::with_mailbox(self.core.mailbox.clone())),
                    queued_at: Instant::now(),
                    traits: p.traits,
                    park_arg: Some(bytes::Bytes::from(arg)),
                }))
            }
        }
    }

    async fn answer_parked(
        &mut self,
        (status, is_head, minor): (u16, bool, u8),
        body: &mut BodyState,
        keep_alive: bool,
        msg: &[u8],
    ) -> Outcome {
        let keep =
            keep_alive && body.discard_buffered(&mut self.buf) && !self.core.shared.draining.load(SeqCst);
        encode_simple(&mut self.out, status, b"", msg, is_head, keep, minor);
        let sent = if is_head || status == 204 { 0 } else { msg.len() as u64 };
        match self.flush_out(Instant::now() + WRITE_TIMEOUT).await {
            Ok(()) => Outcome { status, bytes: sent, keep_alive: keep },
            Err(_) => Outcome::close(status, 0),
        }
    }

    /// The first of: the notification, the deadline, a read from the client (when `reading`),
    /// or a shutdown check tick. A read still in flight is cancelled and its bytes kept.
    async fn wait_one(&mut self, notice: &crate::park::Notice, deadline: Instant, reading: bool) -> Event {
        let now = Instant::now();
        if now >= deadline {
            return Event::TimedOut;
        }
        let nap = (deadline - now).min(DRAIN_CHECK);
        let mut wait = pin!(notice.wait());
        let mut sleep = pin!(monoio::time::sleep(nap));
        if !reading {
            return poll_fn(|cx| {
                if let Poll::Ready((a, arg)) = wait.as_mut().poll(cx) {
                    return Poll::Ready(Event::Notified(a, arg));
                }
                sleep.as_mut().poll(cx).map(|()| Event::Tick)
            })
            .await;
        }
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(16 * 1024);
        }
        let len = self.buf.len();
        let spare = std::mem::take(&mut self.buf).slice_mut(len..);
        let canceller = Canceller::new();
        let mut read = pin!(self.stream.cancelable_read(spare, canceller.handle()));
        let mut finished = None;
        let event = poll_fn(|cx| {
            if let Poll::Ready(r) = read.as_mut().poll(cx) {
                finished = Some(r);
                return Poll::Ready(None);
            }
            if let Poll::Ready((a, arg)) = wait.as_mut().poll(cx) {
                return Poll::Ready(Some(Event::Notified(a, arg)));
            }
            sleep.as_mut().poll(cx).map(|()| Some(Event::Tick))
        })
        .await;
        // A read still in flight is cancelled and awaited: its buffer (and any bytes that
        // arrived meanwhile) comes back with it.
        let (res, spare) = match finished {
            Some(r) => r,
            None => {
                let _ = canceller.cancel();
                read.await
            }
        };
        self.buf = spare.into_inner();
        match event {
            Some(Event::Tick) if Instant::now() >= deadline => Event::TimedOut,
            Some(e @ (Event::Notified(..) | Event::Tick)) => match res {
                // The client left while we were being told: it is gone either way.
                Ok(0) => Event::Read(Ok(0)),
                _ => e,
            },
            _ => Event::Read(res),
        }
    }
}
