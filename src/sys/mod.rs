//! Every call into libc the server makes, behind safe functions: signals, sockets, the process
//! and its threads, local time, opening files beneath a folder.
//!
//! What the application's child processes inherit is decided here: no blocked signals (signals
//! are caught by a handler, not blocked for `sigwait`), SIGPIPE at its default (a handled signal
//! is reset to default by `execve`, an ignored one stays ignored), the normal scheduling policy
//! (`policy`), and no descriptor of ours (every socket and pipe is close-on-exec from the moment
//! it exists).

pub mod fs;
pub mod net;
pub mod policy;
pub mod process;
pub mod signals;
pub mod time;
