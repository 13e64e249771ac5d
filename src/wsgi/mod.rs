//! The Python bridge: interpreter start-up, environ, `start_response`, `wsgi.input`, calling the
//! application, and the built-in `wsgo` module. Never touches sockets.

pub mod call;
pub mod environ;
pub mod headers;
pub mod input;
pub mod interp;
pub mod module;
pub mod shared;
pub mod timeout;

pub use call::App;
