//! The `start_response` callable and the `write()` it returns (PEP 3333, DESIGN decision 1).

use std::sync::Arc;

use bytes::Bytes;
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

use super::headers::{HeadBuilder, parse_status};
use crate::handoff::exchange::{Exchange, ToConn};
use crate::http::response::ResponseHead;

/// One request's `start_response`.
#[pyclass(module = "wsgo", name = "StartResponse")]
pub struct StartResponse {
    /// The status and headers of the last valid call.
    pub(crate) head: Option<ResponseHead>,
    /// The head has gone to the connection; it can no longer change.
    pub(crate) sent: bool,
    pub(crate) exchange: Arc<Exchange>,
}

impl StartResponse {
    pub fn new(exchange: Arc<Exchange>) -> StartResponse {
        StartResponse { head: None, sent: false, exchange }
    }

    /// Sends the head (once), then `data` as a streamed chunk. Returns false if the client is gone.
    pub(crate) fn stream(&mut self, py: Python<'_>, data: Bytes) -> PyResult<bool> {
        if !self.sent {
            if self.head.as_ref().is_some_and(|h| h.sendfile.is_some()) {
                return Err(PyRuntimeError::new_err("write() cannot be used with an X-Sendfile response"));
            }
            // The head is not needed once sent: take it rather than copy it.
            let head =
                self.head.take().ok_or_else(|| PyRuntimeError::new_err("start_response() was not called"))?;
            self.exchange.send(ToConn::Head(head));
            self.sent = true;
        }
        if data.is_empty() {
            return Ok(!self.exchange.is_gone());
        }
        let exchange = self.exchange.clone();
        if exchange.would_block(data.len()) {
            Ok(py.detach(move || exchange.send_chunk(data)))
        } else {
            Ok(exchange.send_chunk(data))
        }
    }
}

fn header_str<'a>(item: &'a Bound<'_, PyAny>, what: &str) -> PyResult<std::borrow::Cow<'a, str>> {
    let s = item
        .cast::<PyString>()
        .map_err(|_| PyTypeError::new_err(format!("header {what} must be str, not {}", type_name(item))))?;
    s.to_cow()
}

fn type_name(o: &Bound<'_, PyAny>) -> String {
    o.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into())
}

/// Validates a status and header list into a response head.
fn build_head(status: &Bound<'_, PyAny>, headers: &Bound<'_, PyAny>) -> PyResult<ResponseHead> {
    let status = status
        .cast::<PyString>()
        .map_err(|_| PyTypeError::new_err(format!("status must be str, not {}", type_name(status))))?;
    let (code, reason) = parse_status(&status.to_cow()?).map_err(PyValueError::new_err)?;
    let items: Vec<Bound<'_, PyAny>> = if let Ok(list) = headers.cast::<PyList>() {
        list.iter().collect()
    } else if let Ok(tuple) = headers.cast::<PyTuple>() {
        tuple.iter().collect()
    } else {
        return Err(PyTypeError::new_err(format!("headers must be a list, not {}", type_name(headers))));
    };
    let mut builder = HeadBuilder::new(code, reason);
    for item in &items {
        let pair = item.cast::<PyTuple>().ok().filter(|t| t.len() == 2).ok_or_else(|| {
            PyTypeError::new_err(format!(
                "each header must be a (name, value) tuple, not {}",
                item.repr().map(|r| r.to_string()).unwrap_or_default()
            ))
        })?;
        let name = pair.get_item(0)?;
        let value = pair.get_item(1)?;
        let name = header_str(&name, "name")?;
        let value = header_str(&value, "value")?;
        builder.add(&name, &value).map_err(PyValueError::new_err)?;
    }
    Ok(builder.finish())
}

#[pymethods]
impl StartResponse {
    /// `start_response(status, response_headers, exc_info=None)` -> `write`
    #[pyo3(signature = (status, response_headers, exc_info = None))]
    fn __call__<'py>(
        slf: &Bound<'py, Self>,
        status: &Bound<'py, PyAny>,
        response_headers: &Bound<'py, PyAny>,
        exc_info: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let exc_info = exc_info.filter(|e| !e.is_none());
        {
            let this = slf.borrow();
            if this.sent {
                // PEP 3333: with the head already sent, an error can only be re-raised.
                if let Some(info) = exc_info {
                    return Err(PyErr::from_value(info.get_item(1)?));
                }
                return Err(PyRuntimeError::new_err(
                    "start_response() called again after the response started",
                ));
            }
        }
        let head = build_head(status, response_headers)?;
        slf.borrow_mut().head = Some(head);
        // A small object of our own rather than the bound method `self.write`: looking up and
        // binding a method cost three times as much as the rest of start_response.
        Ok(Bound::new(slf.py(), Write { sr: slf.clone().unbind() })?.into_any())
    }

    /// The imperative `write(data)` of PEP 3333: sent to the client at once.
    fn write(&mut self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let bytes = data.cast::<PyBytes>().map_err(|_| {
            PyTypeError::new_err(format!("write() argument must be bytes, not {}", type_name(data)))
        })?;
        if !self.stream(py, super::shared::share(bytes))? {
            return Err(PyOSError::new_err("client disconnected"));
        }
        Ok(())
    }
}

/// The `write` callable `start_response` returns.
#[pyclass(module = "wsgo", name = "write", frozen)]
pub struct Write {
    sr: Py<StartResponse>,
}

#[pymethods]
impl Write {
    fn __call__(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        self.sr.bind(py).borrow_mut().write(py, data)
    }
}
