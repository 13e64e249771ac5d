//! The built-in `wsgo` Python module, registered before the interpreter starts.
//!
//! Only what works is exposed: the park action constants and `RequestTimeoutException`, which apps
//! import to catch. The cron, timer and parking functions arrive with those features.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(
    wsgo,
    RequestTimeoutException,
    PyException,
    "Raised in a request that ran past --request-timeout."
);

#[pymodule]
pub fn wsgo(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("DISCONNECT", 0)?;
    m.add("RETRY", 1)?;
    m.add("HTTP_204", 2)?;
    m.add("HTTP_504", 3)?;
    m.add("RequestTimeoutException", m.py().get_type::<RequestTimeoutException>())?;
    Ok(())
}
