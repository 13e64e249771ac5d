//! The parked leg of a connection: wait on the core thread, with no worker, until
//! `notify_parked`, the park timeout, the client leaving, or shutdown; then act.
//!
//! Nothing is read from the client meanwhile (a pipelined request waits in the kernel): whether
//! it left is seen by the core's sweep, as for a request waiting on a worker, through the
//! exchange the retry will use.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use super::send::Response;
use super::transport::Transport;
use super::{Conn, Outcome, Req};
use crate::client::forwarded_https;
use crate::handoff::exchange::{Exchange, ToConn};
use crate::handoff::{Job, ParkRequest};
use crate::park::{Action, Notice, Parking};

/// How often a parked request looks whether the server is shutting down.
const DRAIN_CHECK: Duration = Duration::from_millis(250);

/// How a parked request ended.
pub(super) enum Unparked {
    Answered(Outcome),
    Retry(Box<Job>),
}

enum Event {
    Notified(Action, String),
    TimedOut,
    /// The client closed or reset its connection.
    Left,
    Tick,
}

/// Takes a parked request off its channels when dropped (however the wait ends).
struct Leave<'a>(&'a Parking, u64);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.leave(self.1);
    }
}

impl<T: Transport> Conn<T> {
    /// Waits for the parked request's fate and carries it out.
    pub(super) async fn parked(&mut self, p: Box<ParkRequest>, req: &mut Req) -> Unparked {
        let parking = self.core.state.parking.clone();
        let names = p.channels.join(", ");
        let (id, notice) = parking.park(p.channels.clone());
        let leave = Leave(&parking, id);
        let now = Instant::now();
        let deadline = now.checked_add(p.timeout).unwrap_or(now);
        // The exchange of a retry, and meanwhile how the sweep tells that the client left.
        let exchange = Arc::new(Exchange::with_mailbox(self.core.mailbox.clone()));
        self.core.watch.set_deadline(self.key, None);
        self.core.watch.set_waiting(self.key, Some(exchange.clone()));
        let (action, arg) = loop {
            if self.core.draining() {
                break (p.action, String::new());
            }
            match wait_one(&notice, &exchange, deadline).await {
                Event::Notified(a, arg) => break (a, arg),
                Event::TimedOut => break (p.action, String::new()),
                // Nothing to answer.
                Event::Left => break (Action::Disconnect, String::new()),
                Event::Tick => {}
            }
        };
        self.core.watch.set_waiting(self.key, None);
        drop(leave);
        let code = match action {
            Action::Disconnect => 0,
            Action::Retry => 1,
            Action::Http204 => 2,
            Action::Http504 => 3,
        };
        crate::log::info!("- retry {names} notified: action = {code}");
        let answer = |status, body: &'static [u8]| Response::Simple { status, lines: b"", body };
        match action {
            Action::Disconnect => Unparked::Answered(Outcome::close(0, 0)),
            Action::Http204 => Unparked::Answered(self.send(req, answer(204, b"")).await),
            Action::Http504 => Unparked::Answered(self.send(req, answer(504, b"Gateway Timeout\n")).await),
            Action::Retry if p.streamed => {
                crate::log::warning!(
                    "a parked request read its body past the first MiB: it cannot be retried"
                );
                Unparked::Answered(self.send(req, answer(502, b"Bad Gateway\n")).await)
            }
            Action::Retry => {
                let p = *p;
                let proto = p.head.field(b"x-forwarded-proto");
                let https = forwarded_https(self.peer, proto, &self.core.state.config.trusted_proxies);
                Unparked::Retry(Box::new(Job {
                    head: p.head,
                    body: p.body,
                    body_complete: p.body_complete,
                    peer: self.peer,
                    local: self.local,
                    https,
                    exchange,
                    queued_at: Instant::now(),
                    traits: p.traits,
                    park_arg: Some(bytes::Bytes::from(arg)),
                }))
            }
        }
    }
}

/// The first of: the notification, the deadline, the client leaving, or a shutdown check tick.
async fn wait_one(notice: &Notice, exchange: &Exchange, deadline: Instant) -> Event {
    let now = Instant::now();
    if now >= deadline {
        return Event::TimedOut;
    }
    let nap = (deadline - now).min(DRAIN_CHECK);
    let mut wait = pin!(notice.wait());
    let mut left = pin!(exchange.recv());
    let mut sleep = pin!(monoio::time::sleep(nap));
    poll_fn(|cx| {
        if let Poll::Ready((a, arg)) = wait.as_mut().poll(cx) {
            return Poll::Ready(Event::Notified(a, arg));
        }
        // The only message this exchange gets before a retry is the sweep's `Abort`.
        if let Poll::Ready(ToConn::Abort) = left.as_mut().poll(cx) {
            return Poll::Ready(Event::Left);
        }
        sleep
            .as_mut()
            .poll(cx)
            .map(|()| if Instant::now() >= deadline { Event::TimedOut } else { Event::Tick })
    })
    .await
}
