//! One request through the stages, in the order of the design: the server's own answers (`OPTIONS
//! *`, `CONNECT`, the canonical-path redirect), blocked clients, static files, the response cache,
//! the application. The first stage that answers ends the request.

use std::time::{Duration, Instant};

use super::send::Response;
use super::transport::Transport;
use super::{Conn, LogInfo, Outcome, Req};
use crate::client::client_ip;
use crate::http::answer::{Route, route};
use crate::http::body::BodyState;
use crate::http::{RequestHead, Span};
use crate::log::Entry;

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
        client_ip(
            self.peer.ip(),
            forwarded.map(|f| head.bytes(f.value)),
            &self.core.state.config.trusted_proxies,
        )
    }

    /// A request from a blocked client: held back for the rest of the block (at most 25 s; at
    /// once when 100 are already held), then an empty 429.
    async fn blocked(&mut self, req: &mut Req, remaining: Duration) -> Outcome {
        let blocks = &self.core.state.blocks;
        if let Some(_held) = blocks.hold() {
            let delay = Duration::from_secs(remaining.as_secs()).min(crate::block::MAX_DELAY);
            self.core.watch.set_deadline(self.key, None);
            monoio::time::sleep(delay).await;
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
