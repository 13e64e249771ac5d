//! `wsgi.input`: a complete file-like object over the request body (DESIGN decision 3).
//!
//! The first MiB of a POST/PUT/PATCH body arrives with the job; the rest is asked of the
//! connection while the app reads, with the GIL released during the wait.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::pool::exchange::{BodyPiece, Exchange};

/// How much to ask the connection for at a time when the caller wants "everything".
const READ_STEP: usize = 256 * 1024;
/// Refill size for `readline`.
const LINE_STEP: usize = 8192;

/// The request body as a Python file-like object.
#[pyclass(module = "wsgo", name = "WsgiInput")]
pub struct WsgiInput {
    /// Bytes received and not yet returned.
    buf: Bytes,
    /// Where more comes from; `None` once the body is complete.
    source: Option<Arc<Exchange>>,
    failed: bool,
}

impl WsgiInput {
    /// `prefix` is the body received so far; `source` is `None` when it is the whole body.
    pub fn new(prefix: Bytes, source: Option<Arc<Exchange>>) -> WsgiInput {
        WsgiInput { buf: prefix, source, failed: false }
    }

    /// Asks the connection for more; returns false at the end of the body.
    fn fill(&mut self, py: Python<'_>, want: usize) -> PyResult<bool> {
        if self.failed {
            return Err(PyOSError::new_err(
                "request body could not be read (client disconnected or timed out)",
            ));
        }
        let Some(source) = self.source.clone() else { return Ok(false) };
        match py.detach(move || source.read_body(want)) {
            BodyPiece::Data(data) => {
                if self.buf.is_empty() {
                    self.buf = data;
                } else {
                    let mut joined = BytesMut::with_capacity(self.buf.len() + data.len());
                    joined.extend_from_slice(&self.buf);
                    joined.extend_from_slice(&data);
                    self.buf = joined.freeze();
                }
                Ok(true)
            }
            BodyPiece::End => {
                self.source = None;
                Ok(false)
            }
            BodyPiece::Failed => {
                self.failed = true;
                self.source = None;
                Err(PyOSError::new_err("request body could not be read (client disconnected or timed out)"))
            }
        }
    }

    fn take<'py>(&mut self, py: Python<'py>, n: usize) -> Bound<'py, PyBytes> {
        let part = self.buf.split_to(n.min(self.buf.len()));
        PyBytes::new(py, &part)
    }

    fn line_end(&self, limit: usize) -> Option<usize> {
        let scan = &self.buf[..self.buf.len().min(limit)];
        scan.iter().position(|&b| b == b'\n').map(|p| p + 1)
    }

    fn read_line<'py>(&mut self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let limit = match size {
            Some(n) if n >= 0 => n as usize,
            _ => usize::MAX,
        };
        loop {
            if let Some(end) = self.line_end(limit) {
                return Ok(self.take(py, end));
            }
            if self.buf.len() >= limit || !self.fill(py, LINE_STEP)? {
                return Ok(self.take(py, limit));
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
                while self.buf.len() < n && self.fill(py, (n - self.buf.len()).min(READ_STEP * 4))? {}
                Ok(self.take(py, n))
            }
            _ => {
                while self.fill(py, READ_STEP)? {}
                Ok(self.take(py, usize::MAX))
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
