//! Response bodies shared with the connection without a copy.
//!
//! A large `bytes` object the application returns is handed to the core thread as a [`Bytes`]
//! that keeps the object alive and points at its contents: the core thread writes straight from
//! the Python object's memory. A `bytes` object never changes while a reference to it is held,
//! so reading it without the GIL is sound. The last reference is usually dropped on a core
//! thread, which is not attached to the interpreter: pyo3 then queues the decref, and the
//! workers release the queue after each job ([`release_dropped`]).
//!
//! Small bodies are copied: below [`SHARE_FROM`] a copy costs less than the shared owner's
//! allocation and the deferred decref.

use bytes::Bytes;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// Bodies from this size on are shared instead of copied.
pub const SHARE_FROM: usize = 4096;

/// Keeps a `bytes` object alive for as long as its contents are in use.
struct Owner {
    /// Holds the reference; never read, only dropped.
    _object: Py<PyBytes>,
    data: *const u8,
    len: usize,
}

// SAFETY: `data` points into the contents of `_object`, which stay valid and unchanged while the
// reference is held (bytes objects are immutable and are never resized once shared). The
// reference itself may be dropped on any thread (pyo3 defers the decref when not attached).
unsafe impl Send for Owner {}

impl AsRef<[u8]> for Owner {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: see `impl Send`: `len` bytes at `data` live as long as `self`.
        unsafe { std::slice::from_raw_parts(self.data, self.len) }
    }
}

/// A response item, which must be `bytes`.
pub fn item_bytes<'a, 'py>(item: &'a Bound<'py, PyAny>) -> PyResult<&'a Bound<'py, PyBytes>> {
    item.cast::<PyBytes>().map_err(|_| {
        PyTypeError::new_err(format!(
            "the response iterable must yield bytes, not {}",
            item.get_type().name().map(|n| n.to_string()).unwrap_or_default()
        ))
    })
}

/// The contents of a response item, which must be `bytes`: shared when large, copied when small.
pub fn body_bytes(item: &Bound<'_, PyAny>) -> PyResult<Bytes> {
    item_bytes(item).map(share)
}

/// A `bytes` object's contents: shared when large, copied when small.
pub fn share(b: &Bound<'_, PyBytes>) -> Bytes {
    let data = b.as_bytes();
    if data.len() < SHARE_FROM {
        return Bytes::copy_from_slice(data);
    }
    Bytes::from_owner(Owner { data: data.as_ptr(), len: data.len(), _object: b.clone().unbind() })
}

/// Releases the `bytes` objects whose last [`Bytes`] was dropped on a thread not attached to the
/// interpreter. Call on an attached thread; costs one relaxed load when there are none.
pub fn release_dropped(_py: Python<'_>) {
    // A nested attach on an attached thread runs pyo3's queue of deferred decrefs.
    Python::attach(|_| {});
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(obj: &Bound<'_, PyBytes>) -> isize {
        // SAFETY: the object is alive (borrowed) and the caller is attached.
        unsafe { pyo3::ffi::Py_REFCNT(obj.as_ptr()) }
    }

    #[test]
    fn large_bodies_are_shared_and_released_after_use_elsewhere() {
        crate::wsgi::interp::init_for_tests();
        let (obj, shared, refs_before) = Python::attach(|py| {
            let obj = PyBytes::new(py, &vec![7u8; SHARE_FROM * 2]);
            let before = refs(&obj);
            let shared = share(&obj);
            // No copy: the Bytes points into the object, and holds a reference to it.
            assert_eq!(shared.as_ptr(), obj.as_bytes().as_ptr());
            assert_eq!(refs(&obj), before + 1);
            (obj.unbind(), shared, before)
        });
        // Used and dropped on a thread that is not attached to the interpreter.
        std::thread::spawn(move || {
            let clone = shared.clone();
            drop(shared);
            assert_eq!(clone.len(), SHARE_FROM * 2);
            assert!(clone.iter().all(|&b| b == 7));
        })
        .join()
        .unwrap();
        Python::attach(|py| {
            release_dropped(py);
            assert_eq!(refs(obj.bind(py)), refs_before, "the reference is released");
        });
    }

    #[test]
    fn small_bodies_are_copied() {
        crate::wsgi::interp::init_for_tests();
        Python::attach(|py| {
            let obj = PyBytes::new(py, b"hello");
            let copied = share(&obj);
            assert_ne!(copied.as_ptr(), obj.as_bytes().as_ptr());
            assert_eq!(&copied[..], b"hello");
        });
    }
}
