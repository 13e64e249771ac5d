//! The cache leg of a connection: answer GET and HEAD from the shared store when a fresh entry
//! matches, and offer the app's responses to GETs to the store.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::send::Response;
use super::transport::Transport;
use super::{Conn, Outcome, Req};
use crate::cache::key::{cookie_names, key, selection};
use crate::cache::policy::{MAX_BODY, storable};
use crate::cache::{Entry, Store};
use crate::client::forwarded_https;
use crate::http::RequestHead;
use crate::http::response::ResponseHead;
use crate::stats::bump;

/// A GET whose response may be stored: its key and head (for the `Vary` selections).
pub(super) struct Candidate {
    key: Vec<u8>,
    head: RequestHead,
}

/// A streamed response being collected for the store.
pub(super) struct Tee {
    head: ResponseHead,
    chunks: Vec<Bytes>,
    len: usize,
}

fn values<'a>(head: &'a RequestHead, name: &[u8]) -> Vec<&'a [u8]> {
    head.fields
        .iter()
        .filter(|f| head.bytes(f.name).eq_ignore_ascii_case(name))
        .map(|f| head.bytes(f.value))
        .collect()
}

impl<T: Transport> Conn<T> {
    fn store(&self) -> Option<&Store> {
        self.core.state.cache.as_ref()
    }

    /// Answers from the cache on a hit. On a miss, returns what is needed to store the app's
    /// response, when it may be stored.
    pub(super) async fn try_cache(
        &mut self,
        head: &RequestHead,
        req: &mut Req,
    ) -> Result<Outcome, Option<Candidate>> {
        let Some(store) = self.store() else { return Err(None) };
        let is_get = head.method() == b"GET";
        if !is_get && !head.is_head() {
            return Err(None);
        }
        if head.path().is_none() {
            return Err(None);
        }
        let host = head.host.map_or(&b""[..], |h| head.bytes(h));
        let proto = head.field(b"x-forwarded-proto");
        let https = forwarded_https(self.peer, proto, &self.core.state.config.trusted_proxies);
        let key = key(https, host, head.raw_path(), head.query());
        let hit =
            store.lookup(&key, Instant::now(), |name, cookies| selection(name, &values(head, name), cookies));
        let stats = &self.core.state.stats;
        bump(if hit.is_some() { &stats.cache_hits } else { &stats.cache_misses });
        match hit {
            Some(entry) => Ok(self.send(req, Response::Cached { entry: &entry }).await),
            // Responses to requests with credentials are not stored (RFC 9111 §3.5).
            None if is_get && head.field(b"authorization").is_none() => {
                Err(Some(Candidate { key, head: head.clone() }))
            }
            None => Err(None),
        }
    }

    /// Stores a complete response to a candidate GET when the rules allow it.
    pub(super) fn offer(&self, cand: &Candidate, rh: &ResponseHead, body: Bytes) {
        let Some(store) = self.store() else { return };
        if body.len() > MAX_BODY || rh.content_length.is_some_and(|n| n != body.len() as u64) {
            return;
        }
        let max_age = self.core.state.config.cache_max_age;
        let Some(policy) = storable(rh.status, &rh.lines, max_age) else { return };
        let cookies = rh.vary_cookies.as_deref().map(cookie_names);
        let mut vary = Vec::with_capacity(policy.vary.len());
        for name in policy.vary {
            // The named cookies cannot be read as the app reads them: not stored.
            let Some(sel) = selection(&name, &values(&cand.head, &name), cookies.as_deref()).stored() else {
                return;
            };
            vary.push((name, sel));
        }
        let entry = Entry::new(
            rh.status,
            rh.reason.clone(),
            rh.lines.clone(),
            rh.has_date,
            body,
            vary,
            cookies,
            Duration::from_secs(policy.lifetime),
        );
        store.insert(cand.key.clone(), entry);
    }

    /// Starts collecting a streamed response for the store, if it may be stored.
    pub(super) fn start_tee(&self, cand: Option<&Candidate>, rh: &ResponseHead) -> Option<Tee> {
        cand?;
        let max_age = self.core.state.config.cache_max_age;
        storable(rh.status, &rh.lines, max_age)?;
        Some(Tee { head: rh.clone(), chunks: Vec::new(), len: 0 })
    }
}

impl Tee {
    /// Adds a chunk; false when the body became too big to store.
    pub(super) fn push(&mut self, data: &Bytes) -> bool {
        self.len += data.len();
        if self.len > MAX_BODY {
            return false;
        }
        self.chunks.push(data.clone());
        true
    }

    pub(super) fn finish(self) -> (ResponseHead, Bytes) {
        let body = match self.chunks.len() {
            1 => self.chunks.into_iter().next().unwrap_or_default(),
            _ => {
                let mut b = BytesMut::with_capacity(self.len);
                for c in &self.chunks {
                    b.extend_from_slice(c);
                }
                b.freeze()
            }
        };
        (self.head, body)
    }
}
