//! Running one request through the application (PEP 3333): environ, the call with our
//! `start_response` (and the `write()` it returns), the response iterable, `close()`.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use pyo3::{ffi, intern};

use super::environ::{self, RequestInfo};
use super::headers::{HeadBuilder, parse_status};
use super::input::WsgiInput;
use super::shared::{body_bytes, item_bytes};
use crate::handoff::exchange::{Exchange, ToConn};
use crate::handoff::{Job, ParkRequest, Runner, Traits};
use crate::http::response::ResponseHead;
use crate::stats::{Stats, bump};

/// The application and what every request shares: the Python side of the server, run by the
/// pool's threads through [`Runner`].
pub struct App {
    /// The WSGI callable.
    pub callable: Py<PyAny>,
    /// The environ keys every request has, copied into each request's dict.
    pub base_environ: Py<PyDict>,
    /// The process's counters (failed requests).
    pub stats: Arc<Stats>,
}

impl Runner for App {
    type Task = super::module::Task;

    fn run(&self, py: Python<'_>, job: Box<Job>) {
        run(py, self, job);
    }

    fn run_task(&self, py: Python<'_>, task: &Self::Task, name: &str) {
        if let Err(e) = task.bind(py).call0() {
            crate::log::warning!("background job {name} failed:");
            e.print(py);
        }
    }

    fn after_job(&self, py: Python<'_>) {
        super::shared::release_dropped(py);
    }

    fn interrupt(&self, py: Python<'_>, ident: u64) -> bool {
        super::timeout::raise_timeout(py, ident)
    }

    fn after_interrupted(&self, py: Python<'_>, ident: u64) {
        super::timeout::after_interrupted(py, ident);
    }

    fn stack(&self, py: Python<'_>, ident: u64) -> String {
        super::timeout::thread_stack(py, ident)
    }

    fn counts(&self, py: Python<'_>) -> (u64, u64) {
        let threads = py
            .import("threading")
            .and_then(|t| t.call_method0("active_count"))
            .and_then(|n| n.extract::<u64>());
        let blocks = py
            .import("sys")
            .and_then(|s| s.call_method0("getallocatedblocks"))
            .and_then(|n| n.extract::<u64>());
        (threads.unwrap_or(0), blocks.unwrap_or(0))
    }
}

/// The response body as collected before anything was sent.
enum Collected {
    /// Nothing sent yet; this is the whole body so far.
    Buffered(Bytes),
    /// Head (and maybe chunks) already sent.
    Streaming,
}

/// A body collected from the items of the response: a lone item (the usual case) is kept as
/// [`body_bytes`] gives it, shared without a copy when large; more items are joined.
#[derive(Default)]
struct Gather {
    first: Option<Bytes>,
    joined: Option<BytesMut>,
}

impl Gather {
    fn push(&mut self, item: &Bound<'_, PyAny>) -> PyResult<()> {
        match (&self.first, &mut self.joined) {
            (None, _) => self.first = Some(body_bytes(item)?),
            (Some(first), None) => {
                let more = as_bytes(item)?;
                let mut j = BytesMut::with_capacity(first.len() + more.len());
                j.extend_from_slice(first);
                j.extend_from_slice(more);
                self.joined = Some(j);
            }
            (Some(_), Some(j)) => j.extend_from_slice(as_bytes(item)?),
        }
        Ok(())
    }

    fn len(&self) -> usize {
        match (&self.first, &self.joined) {
            (_, Some(j)) => j.len(),
            (Some(f), None) => f.len(),
            (None, None) => 0,
        }
    }

    fn take(&mut self) -> Bytes {
        match (self.first.take(), self.joined.take()) {
            (_, Some(j)) => j.freeze(),
            (Some(f), None) => f,
            (None, None) => Bytes::new(),
        }
    }
}

/// A short server-generated response for failures before the first byte.
pub fn error_head(status: u16) -> (ResponseHead, Bytes) {
    let body: &'static [u8] = match status {
        500 => b"Internal Server Error\n",
        503 => b"Service Unavailable\n",
        504 => b"Gateway Timeout\n",
        _ => b"Error\n",
    };
    let head = ResponseHead {
        status,
        lines: b"Content-Type: text/plain; charset=utf-8\r\n".to_vec(),
        content_length: Some(body.len() as u64),
        ..ResponseHead::default()
    };
    (head, Bytes::from_static(body))
}

/// Sends a server error unless the head already went out, in which case the response is aborted.
/// A request interrupted by the timeout gets 504, any other failure 500.
fn fail(py: Python<'_>, app: &App, exchange: &Exchange, sent: bool, err: PyErr) {
    err.print(py);
    bump(&app.stats.errors);
    if sent {
        exchange.send(ToConn::Abort);
    } else {
        let timed_out = err.is_instance_of::<super::module::RequestTimeoutException>(py);
        let (head, body) = error_head(if timed_out { 504 } else { 500 });
        exchange.send(ToConn::Full(head, body));
    }
}

thread_local! {
    static SPARE: std::cell::RefCell<Spare> = const {
        std::cell::RefCell::new(Spare { start_response: None, write: None, input: None, idle: None })
    };
}

/// This thread's `start_response`, `write` and `wsgi.input` objects, reused by its next request
/// when nothing else holds them (an app may keep any; then it keeps that one and the next request
/// gets a new one). Making and freeing a Python object costs ~300-600 instructions.
struct Spare {
    start_response: Option<Py<StartResponse>>,
    /// Points to the `start_response` it came from during a request, to nothing between them.
    write: Option<Py<Write>>,
    input: Option<Py<WsgiInput>>,
    /// What a spare `start_response` points to between requests: the last request's exchange
    /// is let go of when it ends.
    idle: Option<Arc<Exchange>>,
}

/// `obj` if only the spare slot holds it.
fn unshared<'py, T: pyo3::PyClass>(py: Python<'py>, obj: &Option<Py<T>>) -> Option<Bound<'py, T>> {
    // SAFETY: the pointer is a live object (the slot owns a reference) and the GIL is held (a
    // `Python` token), so its count is stable while it is read.
    obj.as_ref().filter(|o| unsafe { ffi::Py_REFCNT(o.as_ptr()) } == 1).map(|o| o.bind(py).clone())
}

/// The request's `start_response`: the spare one when it is free.
fn take_start_response(py: Python<'_>, exchange: Arc<Exchange>) -> PyResult<Bound<'_, StartResponse>> {
    SPARE.with(|spare| {
        let mut spare = spare.borrow_mut();
        if let Some(sr) = unshared(py, &spare.start_response) {
            let mut s = sr.borrow_mut();
            s.head = None;
            s.sent = false;
            s.exchange = exchange;
            drop(s);
            return Ok(sr);
        }
        let sr = Bound::new(py, StartResponse::new(exchange))?;
        spare.start_response = Some(sr.clone().unbind());
        Ok(sr)
    })
}

/// The `write` callable for `start_response` `sr`: the spare one when it is free.
fn take_write<'py>(sr: &Bound<'py, StartResponse>) -> PyResult<Bound<'py, Write>> {
    let py = sr.py();
    SPARE.with(|spare| {
        let mut spare = spare.borrow_mut();
        if let Some(w) = unshared(py, &spare.write) {
            w.borrow_mut().sr = Some(sr.clone().unbind());
            return Ok(w);
        }
        let w = Bound::new(py, Write { sr: Some(sr.clone().unbind()) })?;
        spare.write = Some(w.clone().unbind());
        Ok(w)
    })
}

/// The request's `wsgi.input`: the spare one when it is free.
fn take_input(py: Python<'_>, body: Bytes, source: Option<Arc<Exchange>>) -> PyResult<Bound<'_, WsgiInput>> {
    SPARE.with(|spare| {
        let mut spare = spare.borrow_mut();
        if let Some(input) = unshared(py, &spare.input) {
            input.borrow_mut().reset(body, source);
            return Ok(input);
        }
        let input = Bound::new(py, WsgiInput::new(body, source))?;
        spare.input = Some(input.clone().unbind());
        Ok(input)
    })
}

/// After a request: the spares let go of its exchange and body, or are given up to the app
/// that still holds them.
struct ReleaseSpares<'py>(Python<'py>);

impl Drop for ReleaseSpares<'_> {
    fn drop(&mut self) {
        let py = self.0;
        SPARE.with(|spare| {
            let mut spare = spare.borrow_mut();
            // First: a spare `write` holds its `start_response`.
            match unshared(py, &spare.write) {
                Some(w) => w.borrow_mut().sr = None,
                None => spare.write = None,
            }
            match unshared(py, &spare.start_response) {
                Some(sr) => {
                    let idle = spare.idle.get_or_insert_with(|| Arc::new(Exchange::new())).clone();
                    let mut s = sr.borrow_mut();
                    s.head = None;
                    s.exchange = idle;
                }
                None => spare.start_response = None,
            }
            match unshared(py, &spare.input) {
                Some(input) => input.borrow_mut().release(),
                None => spare.input = None,
            }
        });
    }
}

/// Runs `job` on this (GIL-holding) thread and sends its response to the connection.
pub fn run(py: Python<'_>, app: &App, job: Box<Job>) {
    // Declared first, so dropped last: after the environ and the response iterable.
    let _spares = ReleaseSpares(py);
    let Job { head, body, body_complete, peer, local, https, exchange, park_arg, traits, .. } = *job;
    let source = (!body_complete).then(|| exchange.clone());
    let replay = body.clone();
    let sr = match take_start_response(py, exchange.clone()) {
        Ok(sr) => sr,
        Err(e) => return fail(py, app, &exchange, false, e),
    };
    let info = RequestInfo { head: &head, peer, local, https, park_arg: park_arg.as_deref() };
    let environ = take_input(py, body, source)
        .and_then(|input| environ::build(py, &app.base_environ, &info, input.into_any()));
    let environ = match environ {
        Ok(e) => e,
        Err(e) => return fail(py, app, &exchange, false, e),
    };
    let result = match app.callable.bind(py).call1((environ, sr.clone())) {
        Ok(r) => r,
        Err(e) => {
            let sent = sr.borrow().sent;
            return fail(py, app, &exchange, sent, e);
        }
    };
    // A retried request cannot park again: its X-WSGo-Park is dropped.
    let may_park = park_arg.is_none();
    let diverted = |h: &ResponseHead| h.sendfile.is_some() || (may_park && h.park.is_some());
    if sr.borrow().head.as_ref().is_some_and(diverted) {
        // X-Sendfile or parking: the body is not used; close() is still called (PEP 3333).
        if let Err(e) = close(py, &result) {
            e.print(py);
        }
        if let Some(h) = sr.borrow_mut().head.take() {
            exchange.send(divert(h, head, replay, body_complete, &exchange, traits));
        }
        return;
    }
    let outcome = consume(py, &sr, &result, may_park);
    // PEP 3333: close() is called whatever happened, exactly once. Its exception after a
    // complete body is the app's cleanup failing, not the response: the client gets what the
    // app produced (as gunicorn and uWSGI do), the traceback goes to stderr.
    if let Err(e) = close(py, &result) {
        crate::log::warning!("the response iterable's close() raised:");
        e.print(py);
    }
    let sent = sr.borrow().sent;
    match outcome {
        Err(e) => fail(py, app, &exchange, sent, e),
        Ok(Collected::Streaming) => exchange.send(ToConn::End),
        Ok(Collected::Buffered(body)) => match sr.borrow_mut().head.take() {
            Some(rh) if diverted(&rh) => {
                exchange.send(divert(rh, head, replay, body_complete, &exchange, traits))
            }
            Some(rh) => exchange.send(ToConn::Full(rh, body)),
            None => fail(
                py,
                app,
                &exchange,
                false,
                PyErr::new::<pyo3::exceptions::PyRuntimeError, _>(
                    "the application returned without calling start_response()",
                ),
            ),
        },
    }
}

/// The message for a response that is not sent as such: a file to serve, or a parked request.
fn divert(
    rh: ResponseHead,
    head: crate::http::RequestHead,
    body: Bytes,
    body_complete: bool,
    exchange: &Exchange,
    traits: Traits,
) -> ToConn {
    match rh.park.as_deref() {
        Some(park) if rh.sendfile.is_none() => {
            let (timeout, action) = crate::park::timeout(rh.park_timeout.as_deref());
            crate::log::info!("- parked request {park}");
            ToConn::Park(Box::new(ParkRequest {
                channels: crate::park::channels(park),
                timeout,
                action,
                block: rh.block,
                head,
                body,
                body_complete,
                streamed: exchange.body_streamed(),
                traits,
            }))
        }
        _ => ToConn::Sendfile(rh, Box::new(head)),
    }
}

fn close(py: Python<'_>, result: &Bound<'_, PyAny>) -> PyResult<()> {
    if result.is_exact_instance_of::<PyList>() || result.is_exact_instance_of::<PyTuple>() {
        return Ok(());
    }
    match result.getattr(intern!(py, "close")) {
        Ok(close) => close.call0().map(drop),
        Err(_) => Ok(()),
    }
}

fn as_bytes<'a>(item: &'a Bound<'_, PyAny>) -> PyResult<&'a [u8]> {
    item_bytes(item).map(|b| b.as_bytes())
}

/// Whether iterating cannot block: the iterator walks a list or tuple already in memory, so the
/// whole body can be collected and sent with a Content-Length (Django's HttpResponse is one).
fn in_memory(it: &Bound<'_, PyAny>) -> bool {
    // SAFETY: reading the type pointer of a live object and comparing it with the addresses of
    // two static type objects; nothing is dereferenced.
    unsafe {
        let ty = ffi::Py_TYPE(it.as_ptr());
        ty == std::ptr::addr_of_mut!(ffi::PyListIter_Type)
            || ty == std::ptr::addr_of_mut!(ffi::PyTupleIter_Type)
    }
}

/// Iterates the response. Lists and in-memory iterators are collected (one message, a
/// Content-Length); anything else is streamed chunk by chunk as it is produced, so long-poll and
/// event-stream apps work, except that a first chunk matching a declared Content-Length
/// completes the response at once.
fn consume(
    py: Python<'_>,
    sr: &Bound<'_, StartResponse>,
    result: &Bound<'_, PyAny>,
    may_park: bool,
) -> PyResult<Collected> {
    let collected = |items: &mut dyn Iterator<Item = PyResult<Bound<'_, PyAny>>>| -> PyResult<Collected> {
        let mut body = Gather::default();
        for item in items {
            body.push(&item?)?;
        }
        if sr.borrow().sent {
            // write() was used: the rest follows as chunks.
            sr.borrow_mut().stream(py, body.take())?;
            return Ok(Collected::Streaming);
        }
        Ok(Collected::Buffered(body.take()))
    };
    if let Ok(list) = result.cast_exact::<PyList>() {
        return collected(&mut list.iter().map(Ok));
    }
    let iter = result.try_iter()?;
    if in_memory(iter.as_any()) {
        return collected(&mut iter.into_iter());
    }
    let mut pending: Option<Gather> = if sr.borrow().sent { None } else { Some(Gather::default()) };
    for item in iter {
        let item = item?;
        let len = as_bytes(&item)?.len();
        if len == 0 {
            continue;
        }
        let mut this = sr.borrow_mut();
        if this.head.as_ref().is_some_and(|h| h.sendfile.is_some() || (may_park && h.park.is_some())) {
            // start_response was called from the generator with X-Sendfile or X-WSGo-Park: the
            // body is unused.
            return Ok(Collected::Buffered(Bytes::new()));
        }
        if let Some(buf) = pending.as_mut() {
            let declared = this.head.as_ref().and_then(|h| h.content_length);
            if declared == Some((buf.len() + len) as u64) {
                // The declared body is complete: send it whole, then let the iterator finish.
                buf.push(&item)?;
                continue;
            }
            if buf.len() > 0 {
                // Already complete per Content-Length, yet more came: send what was declared,
                // the connection side cuts off anything past it.
                let whole = buf.take();
                this.stream(py, whole)?;
            }
            pending = None;
        }
        if !this.stream(py, body_bytes(&item)?)? {
            return Ok(Collected::Streaming);
        }
    }
    Ok(match pending {
        Some(mut buf) => Collected::Buffered(buf.take()),
        None => Collected::Streaming,
    })
}

// ---------- start_response and write() ----------

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
    /// The `start_response` of the request whose exchange this is.
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
    let (code, reason) = parse_status(&status.to_cow()?).map_err(|e| PyValueError::new_err(e.to_string()))?;
    let mut builder = HeadBuilder::new(code, reason);
    let mut add = |item: Bound<'_, PyAny>| -> PyResult<()> {
        let pair = item.cast::<PyTuple>().ok().filter(|t| t.len() == 2).ok_or_else(|| {
            PyTypeError::new_err(format!(
                "each header must be a (name, value) tuple, not {}",
                item.repr().map(|r| r.to_string()).unwrap_or_default()
            ))
        })?;
        let (name, value) = (pair.get_borrowed_item(0)?, pair.get_borrowed_item(1)?);
        let name = header_str(&name, "name")?;
        let value = header_str(&value, "value")?;
        builder.add(&name, &value).map_err(|e| PyValueError::new_err(e.to_string()))
    };
    // Iterated in place (a list's iterator rereads its length: nothing here runs Python code
    // that could change it, bar an invalid item's repr, after which it stops).
    if let Ok(list) = headers.cast::<PyList>() {
        list.iter().try_for_each(&mut add)?;
    } else if let Ok(tuple) = headers.cast::<PyTuple>() {
        tuple.iter().try_for_each(&mut add)?;
    } else {
        return Err(PyTypeError::new_err(format!("headers must be a list, not {}", type_name(headers))));
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
        Ok(take_write(slf)?.into_any())
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
#[pyclass(module = "wsgo", name = "write")]
pub struct Write {
    /// The `start_response` it writes through; none only while it is this thread's unused spare.
    sr: Option<Py<StartResponse>>,
}

#[pymethods]
impl Write {
    fn __call__(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let sr =
            self.sr.as_ref().ok_or_else(|| PyRuntimeError::new_err("write() of a request that has ended"))?;
        sr.bind(py).borrow_mut().write(py, data)
    }
}
