//! `wsgi.input`: a complete file-like object over the request body (PEP 3333).
//!
//! The first MiB of a POST/PUT/PATCH body arrives with the job; the rest is asked of the
//! connection while the app reads, with the GIL released during the wait.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::handoff::exchange::{BodyPiece, Exchange, MAX_BODY_PIECE};

/// Refill size for `readline`: what is there, up to this much.
const LINE_STEP: usize = 64 * 1024;

/// The request body as a Python file-like object.
///
/// Received pieces are kept as they arrive and copied once, into the `bytes` object a call
/// returns: reading a body of any size in one call, or in many, is linear in its length (joining
/// each new piece to everything read so far made a 64 MiB `read()` take minutes).
#[pyclass(module = "wsgo", name = "WsgiInput")]
pub struct WsgiInput {
    /// Pieces received and not yet returned, in order; none is empty.
    pieces: VecDeque<Bytes>,
    /// Their total length.
    len: usize,
    /// How many bytes from the front are known to hold no `\n` (readline resumes there).
    scanned: usize,
    /// Where more comes from; `None` once the body is complete.
    source: Option<Arc<Exchange>>,
    failed: bool,
}

fn body_error() -> PyErr {
    PyOSError::new_err("request body could not be read (client disconnected or timed out)")
}

impl WsgiInput {
    /// `prefix` is the body received so far; `source` is `None` when it is the whole body.
    pub fn new(prefix: Bytes, source: Option<Arc<Exchange>>) -> WsgiInput {
        let mut input = WsgiInput { pieces: VecDeque::new(), len: 0, scanned: 0, source, failed: false };
        input.push(prefix);
        input
    }

    /// Makes a spare object the input of a new request (see `call::Spare`).
    pub(crate) fn reset(&mut self, prefix: Bytes, source: Option<Arc<Exchange>>) {
        self.pieces.clear();
        self.len = 0;
        self.scanned = 0;
        self.source = source;
        self.failed = false;
        self.push(prefix);
    }

    /// Lets go of the request's body and exchange (a spare keeps neither).
    pub(crate) fn release(&mut self) {
        self.reset(Bytes::new(), None);
    }

    fn push(&mut self, data: Bytes) {
        if !data.is_empty() {
            self.len += data.len();
            self.pieces.push_back(data);
        }
    }

    /// Asks the connection for at least `min` and at most `max` more bytes (fewer only at the
    /// end of the body); returns false at the end of the body.
    fn fill(&mut self, py: Python<'_>, min: usize, max: usize) -> PyResult<bool> {
        if self.failed {
            return Err(body_error());
        }
        let Some(source) = self.source.clone() else { return Ok(false) };
        match py.detach(move || source.read_body(min, max)) {
            BodyPiece::Data(data) => {
                self.push(data);
                Ok(true)
            }
            BodyPiece::End => {
                self.source = None;
                Ok(false)
            }
            BodyPiece::Failed => {
                self.failed = true;
                self.source = None;
                Err(body_error())
            }
        }
    }

    /// Reads until at least `n` bytes are held or the body ends.
    fn fill_to(&mut self, py: Python<'_>, n: usize) -> PyResult<()> {
        while self.len < n {
            let short = (n - self.len).min(MAX_BODY_PIECE);
            if !self.fill(py, short, short)? {
                break;
            }
        }
        Ok(())
    }

    /// The first `n` held bytes (all, if fewer), as one `bytes` object: each byte copied once.
    fn take<'py>(&mut self, py: Python<'py>, n: usize) -> PyResult<Bound<'py, PyBytes>> {
        let n = n.min(self.len);
        let out = match self.pieces.front_mut() {
            Some(first) if first.len() >= n => {
                let out = PyBytes::new(py, &first[..n]);
                if first.len() == n {
                    self.pieces.pop_front();
                } else {
                    let _ = first.split_to(n);
                }
                out
            }
            _ => {
                let pieces = &mut self.pieces;
                PyBytes::new_with(py, n, |dst| {
                    let mut at = 0;
                    while at < n {
                        let Some(front) = pieces.front_mut() else { break };
                        let k = front.len().min(n - at);
                        dst[at..at + k].copy_from_slice(&front[..k]);
                        at += k;
                        if k == front.len() {
                            pieces.pop_front();
                        } else {
                            let _ = front.split_to(k);
                        }
                    }
                    Ok(())
                })?
            }
        };
        self.len -= n;
        self.scanned = self.scanned.saturating_sub(n);
        Ok(out)
    }

    /// The length through the first `\n` within the first `limit` held bytes, if there is one.
    /// Bytes scanned before are not scanned again.
    fn line_end(&mut self, limit: usize) -> Option<usize> {
        let limit = limit.min(self.len);
        let mut offset = 0;
        for piece in &self.pieces {
            if offset >= limit {
                break;
            }
            let end = piece.len().min(limit - offset);
            let from = self.scanned.saturating_sub(offset).min(end);
            if let Some(p) = piece[from..end].iter().position(|&b| b == b'\n') {
                return Some(offset + from + p + 1);
            }
            offset += piece.len();
        }
        self.scanned = self.scanned.max(limit);
        None
    }

    fn read_line<'py>(&mut self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let limit = match size {
            Some(n) if n >= 0 => n as usize,
            _ => usize::MAX,
        };
        loop {
            if let Some(end) = self.line_end(limit) {
                return self.take(py, end);
            }
            let room = limit - self.len.min(limit);
            if room == 0 || !self.fill(py, 1, room.min(LINE_STEP))? {
                return self.take(py, limit);
            }
        }
    }
}

#[pymethods]
impl WsgiInput {
    /// `read(size=-1)`: up to `size` bytes, fewer only at the end; everything when negative.
    #[pyo3(signature = (size = -1))]
    fn read<'py>(&mut self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        match size {
            Some(n) if n >= 0 => {
                let n = n as usize;
                self.fill_to(py, n)?;
                self.take(py, n)
            }
            _ => {
                while self.fill(py, MAX_BODY_PIECE, MAX_BODY_PIECE)? {}
                self.take(py, usize::MAX)
            }
        }
    }

    /// `readline(size=-1)`: through the next `\n`, at most `size` bytes.
    #[pyo3(signature = (size = -1))]
    fn readline<'py>(&mut self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        self.read_line(py, size)
    }

    /// `readlines(hint=-1)`: lines until the end, or until `hint` bytes have been read.
    #[pyo3(signature = (hint = -1))]
    fn readlines<'py>(&mut self, py: Python<'py>, hint: Option<isize>) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        let hint = match hint {
            Some(n) if n > 0 => n as usize,
            _ => usize::MAX,
        };
        let mut lines = Vec::new();
        let mut total = 0;
        loop {
            let line = self.read_line(py, None)?;
            let len = line.as_bytes().len();
            if len == 0 {
                return Ok(lines);
            }
            total += len;
            lines.push(line);
            if total >= hint {
                return Ok(lines);
            }
        }
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let line = self.read_line(py, None)?;
        Ok((!line.as_bytes().is_empty()).then_some(line))
    }

    /// Accepted for file-like compatibility; the body belongs to the server.
    fn close(&self) {}
}
