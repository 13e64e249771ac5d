//! The one response writer: every response of every leg leaves through here (server answers,
//! errors, 429, 503, 504, static files, cache hits, whole and streamed app responses, parked
//! answers). It owns the framing, the keep-alive decision, whether a body is copied behind the
//! head or written from where it lies (`writev`), and the write deadline. No other code of the
//! connection writes to its transport.

use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;

use super::transport::Transport;
use super::{Conn, Outcome, Req};
use crate::cache::Entry;
use crate::http::HttpError;
use crate::http::answer::error_answer;
use crate::http::response::{
    Framing, HeadParts, ResponseHead, encode_head, encode_parts, encode_simple, push_chunk_size, push_u64,
};
use crate::static_files::StaticFile;
use crate::static_files::reply::Plan;

/// Bodies below this size are copied behind the head and sent with it; larger ones are written
/// from where they lie (a shared Python object, a cached entry, a file's memory) with a vectored
/// write.
const COPY_BELOW: usize = 4096;

/// A whole response, by what it is made of.
pub(super) enum Response<'a> {
    /// Made by the server: a status, extra header lines and a fixed body.
    Simple { status: u16, lines: &'a [u8], body: &'a [u8] },
    /// An application's whole response.
    Full { head: &'a ResponseHead, body: Bytes },
    /// A response stored in the cache.
    Cached { entry: &'a Entry },
    /// A file: a static file or an app's X-Sendfile, as planned (`app_close`: the app asked to
    /// close the connection).
    File { plan: Plan, file: &'a Rc<StaticFile>, app_close: bool },
}

/// A response being streamed (its head is out).
pub(super) struct Stream {
    pub(super) framing: Framing,
    pub(super) status: u16,
    /// Body bytes the framing still allows (Content-Length responses).
    left: Option<u64>,
    /// Body bytes sent.
    pub(super) sent: u64,
    keep_alive: bool,
}

impl<T: Transport> Conn<T> {
    /// Whether the connection may be reused after this response: the request allows it, the
    /// response does not ask to close or end with the connection, the server is not draining,
    /// `--incoming-cpu`'s guard does not shed it, and the request's body is consumed.
    /// `finished`: the response is complete, so what is buffered of the body is dropped now;
    /// otherwise (a streamed head) only promised if the rest of the body is already buffered,
    /// since the app may still read it (PEP 3333).
    fn keep(&mut self, req: &mut Req, asks_close: bool, framing: Framing, finished: bool) -> bool {
        req.keep_alive
            && !asks_close
            && framing != Framing::UntilClose
            && !self.core.draining()
            && !self.core.state.steering.sheds(self.accepted)
            && if finished {
                req.body.discard_buffered(&mut self.buf)
            } else {
                req.body.ends_within(&self.buf)
            }
    }

    /// Sends a whole response; returns how it ended.
    pub(super) async fn send(&mut self, req: &mut Req, resp: Response<'_>) -> Outcome {
        let deadline = self.core.deadline(self.core.timeouts.write);
        match resp {
            Response::Simple { status, lines, body } => {
                let framing = Framing::choose(status, req.is_head, req.minor, Some(body.len() as u64));
                let keep = self.keep(req, false, framing, true);
                encode_simple(&mut self.out, status, lines, body, req.is_head, keep, req.minor);
                let sent = if framing.has_body() { body.len() as u64 } else { 0 };
                let written = self.flush_out(deadline).await;
                self.finish(written, status, sent, keep)
            }
            Response::Full { head, body } => {
                let len = body.len() as u64;
                let framing = Framing::choose(
                    head.status,
                    req.is_head,
                    req.minor,
                    Some(head.content_length.unwrap_or(len)),
                );
                let mut keep = self.keep(req, head.close, framing, true);
                let mut body = body;
                if let Framing::Length(declared) = framing
                    && declared != len
                {
                    crate::log::warning!(
                        "response body is {len} bytes but its Content-Length says {declared}; closing the connection"
                    );
                    keep = false;
                    body = body.slice(..declared.min(len) as usize);
                }
                encode_head(&mut self.out, head, framing, keep, req.minor);
                let body = if framing.has_body() { body } else { Bytes::new() };
                let sent = body.len() as u64;
                let written = self.write_body(body, b"", deadline).await;
                self.finish(written, head.status, sent, keep)
            }
            Response::Cached { entry } => {
                let len = entry.body.len() as u64;
                let framing = Framing::choose(entry.status, req.is_head, req.minor, Some(len));
                let keep = self.keep(req, false, framing, true);
                let mut age = Vec::with_capacity(24);
                age.extend_from_slice(b"Age: ");
                push_u64(&mut age, entry.age(Instant::now()));
                age.extend_from_slice(b"\r\n");
                let parts = HeadParts {
                    status: entry.status,
                    reason: &entry.reason,
                    lines: &entry.lines,
                    extra: &age,
                };
                encode_parts(&mut self.out, &parts, entry.has_date, framing, keep, req.minor);
                let body = if framing.has_body() { entry.body.clone() } else { Bytes::new() };
                let sent = body.len() as u64;
                let written = self.write_body(body, b"", deadline).await;
                self.finish(written, entry.status, sent, keep)
            }
            Response::File { plan, file, app_close } => {
                self.send_file(req, plan, file, app_close, deadline).await
            }
        }
    }

    fn finish(&self, written: std::io::Result<()>, status: u16, sent: u64, keep: bool) -> Outcome {
        match written {
            Ok(()) => Outcome { status, bytes: sent, keep_alive: keep },
            Err(_) => Outcome::close(status, 0),
        }
    }

    async fn send_file(
        &mut self,
        req: &mut Req,
        p: Plan,
        file: &Rc<StaticFile>,
        app_close: bool,
        deadline: Instant,
    ) -> Outcome {
        let len = match p.part {
            Some((_, len)) => len,
            None => p.note.len() as u64,
        };
        let framing = Framing::choose(p.status, req.is_head, req.minor, Some(len));
        let keep = self.keep(req, app_close, framing, true);
        let rh = ResponseHead { status: p.status, lines: p.lines, ..ResponseHead::default() };
        encode_head(&mut self.out, &rh, framing, keep, req.minor);
        let sent = if framing.has_body() { len } else { 0 };
        let written = match (framing.has_body(), p.part, &file.body) {
            (false, _, _) => self.flush_out(deadline).await,
            (true, None, _) => self.write_body(Bytes::from_static(p.note), b"", deadline).await,
            (true, Some((start, len)), Some(body)) => {
                self.write_body(body.slice(start as usize..(start + len) as usize), b"", deadline).await
            }
            (true, Some((start, len)), None) => {
                // The kernel sends the file (sendfile); the head shares its first segment.
                let Some(f) = file.file.clone() else {
                    crate::log::warning!("a file being sent has no open descriptor; closing the connection");
                    return Outcome::close(p.status, 0);
                };
                self.core.watch.set_deadline(self.key, Some(deadline));
                let (res, mut head) =
                    self.stream.send_file(std::mem::take(&mut self.out), f, start, len).await;
                head.clear();
                self.out = head;
                match res {
                    Ok(n) if n == len => Ok(()),
                    Ok(n) => {
                        // The file shrank under us: the response cannot be completed.
                        crate::log::warning!("a file being sent became shorter; closing the connection");
                        return Outcome::close(p.status, n);
                    }
                    Err(_) => return Outcome::close(p.status, 0),
                }
            }
        };
        self.finish(written, p.status, sent, keep)
    }

    /// Answers a protocol error (the connection is closed after it). Returns the status and the
    /// body bytes sent.
    pub(super) async fn send_error(&mut self, e: HttpError) -> (u16, u64) {
        let a = error_answer(e);
        encode_simple(&mut self.out, a.status, &a.lines, &a.body, false, false, 1);
        match self.flush_out(self.core.deadline(self.core.timeouts.head)).await {
            Ok(()) => (a.status, a.body.len() as u64),
            Err(_) => (a.status, 0),
        }
    }

    /// `100 Continue` (RFC 9110 §15.2.1), before the body is first read.
    pub(super) async fn send_continue(&mut self, deadline: Instant) -> std::io::Result<()> {
        self.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        self.flush_out(deadline).await
    }

    /// Sends the head of a streamed response (`deadline`: the write's, see `app`).
    pub(super) async fn stream_head(
        &mut self,
        req: &mut Req,
        rh: &ResponseHead,
        deadline: Instant,
    ) -> Result<Stream, Outcome> {
        let framing = Framing::choose(rh.status, req.is_head, req.minor, rh.content_length);
        let keep_alive = self.keep(req, rh.close, framing, false);
        let left = match framing {
            Framing::Length(n) => Some(n),
            _ => None,
        };
        encode_head(&mut self.out, rh, framing, keep_alive, req.minor);
        match self.flush_out(deadline).await {
            Ok(()) => Ok(Stream { framing, status: rh.status, left, sent: 0, keep_alive }),
            Err(_) => Err(Outcome::close(rh.status, 0)),
        }
    }

    /// Sends one piece of a streamed body at once (prompt flushing), framed; bytes past a
    /// declared Content-Length are not sent (and the connection will close).
    pub(super) async fn stream_chunk(
        &mut self,
        s: &mut Stream,
        data: Bytes,
        deadline: Instant,
    ) -> std::io::Result<()> {
        let data = match s.framing {
            Framing::NoBody { .. } => return Ok(()),
            Framing::Length(_) => {
                let left = s.left.unwrap_or(0);
                if data.len() as u64 > left {
                    crate::log::warning!("response longer than its Content-Length; the excess is not sent");
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
        self.write_body(data, if chunked { b"\r\n" } else { b"" }, deadline).await
    }

    /// Ends a streamed response: the last chunk, or a close when the body fell short of its
    /// Content-Length or is delimited by the close. `complete`: the body is as long as framed.
    pub(super) async fn stream_end(&mut self, req: &mut Req, s: &mut Stream) -> (Outcome, bool) {
        match s.framing {
            Framing::Chunked => self.out.extend_from_slice(b"0\r\n\r\n"),
            Framing::Length(_) if s.left != Some(0) => {
                crate::log::warning!("response shorter than its Content-Length; closing the connection");
                s.keep_alive = false;
            }
            _ => {}
        }
        // What is left of the request body is dropped only now: the app may have read it after
        // the head went out.
        s.keep_alive = s.keep_alive && req.body.discard_buffered(&mut self.buf);
        let ok = self.flush_out(self.core.deadline(self.core.timeouts.write)).await.is_ok();
        let complete = !matches!(s.framing, Framing::Length(_)) || s.left == Some(0);
        (Outcome { status: s.status, bytes: s.sent, keep_alive: s.keep_alive && ok }, complete)
    }

    /// Writes the pending head (in `self.out`), then `body` and `tail`: small bodies copied
    /// behind the head, large ones written from where they lie.
    async fn write_body(
        &mut self,
        body: Bytes,
        tail: &'static [u8],
        deadline: Instant,
    ) -> std::io::Result<()> {
        if body.len() < COPY_BELOW {
            self.out.extend_from_slice(&body);
            self.out.extend_from_slice(tail);
            return self.flush_out(deadline).await;
        }
        self.write_parts(body, tail, deadline).await
    }

    /// Writes `self.out` in full and clears it.
    async fn flush_out(&mut self, deadline: Instant) -> std::io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        self.core.watch.set_deadline(self.key, Some(deadline));
        let (res, mut out) = self.stream.write_all(std::mem::take(&mut self.out)).await;
        out.clear();
        self.out = out;
        res
    }

    /// Writes `self.out`, then `body`, then `tail` (a chunk's CRLF) with one writev per attempt.
    /// Clears `self.out`.
    async fn write_parts(
        &mut self,
        body: Bytes,
        tail: &'static [u8],
        deadline: Instant,
    ) -> std::io::Result<()> {
        self.core.watch.set_deadline(self.key, Some(deadline));
        let mut parts = Parts::new(std::mem::take(&mut self.out), body, tail);
        let result = loop {
            if parts.is_done() {
                break Ok(());
            }
            let (res, back) = self.stream.writev(parts).await;
            parts = back;
            match res {
                Ok(0) => break Err(std::io::Error::from(std::io::ErrorKind::WriteZero)),
                Ok(n) => parts.advance(n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        let mut out = parts.out;
        out.clear();
        self.out = out;
        result
    }
}

/// The pieces of one vectored write: the pending head bytes, a body and a short tail.
pub struct Parts {
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

    /// The bytes not yet written, as slices (for transports that do not take iovecs).
    pub fn pending(&self) -> impl Iterator<Item = &[u8]> {
        let mut skip = self.written;
        [&self.out[..], &self.body[..], self.tail].into_iter().filter_map(move |part| {
            if skip >= part.len() {
                skip -= part.len();
                return None;
            }
            let rest = &part[skip..];
            skip = 0;
            Some(rest)
        })
    }

    /// Points the iovecs at the bytes not yet written.
    fn aim(&mut self) {
        let mut iov = std::mem::take(&mut self.iov);
        iov.clear();
        iov.extend(
            self.pending().map(|rest| libc::iovec {
                iov_base: rest.as_ptr() as *mut libc::c_void,
                iov_len: rest.len(),
            }),
        );
        self.iov = iov;
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
                    assert_eq!(p.pending().flatten().copied().collect::<Vec<u8>>(), &whole[written..]);
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
