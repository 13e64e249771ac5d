//! Opening a file beneath a folder, so that neither `..` nor a symbolic link leads outside it.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// The flags static files are opened with: read-only, close-on-exec, without waiting for a FIFO's
/// writer (a FIFO is then refused as not regular), never as a controlling terminal.
pub const OPEN_FLAGS: i32 = libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY;
/// Added when a resolved path is opened: a link swapped in meanwhile is refused.
pub const NO_FOLLOW: i32 = libc::O_NOFOLLOW;

/// What [`open_beneath`] found.
pub enum Beneath {
    /// The file, open.
    File(File),
    /// Nothing there that may be opened (missing, outside the folder, a loop, no permission).
    Nothing,
    /// The kernel has no openat2 (before 5.6): the caller resolves by hand.
    Unsupported,
}

/// Opens `rel` beneath the folder `dir` with `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`.
pub fn open_beneath(dir: RawFd, rel: &CStr) -> io::Result<Beneath> {
    // SAFETY: open_how is three plain integers; all-zero is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = OPEN_FLAGS as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: the folder's descriptor is open (the caller holds it), `rel` is a NUL-terminated
    // string that outlives the call, and `how` is a valid open_how of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir,
            rel.as_ptr(),
            &how as *const libc::open_how,
            size_of::<libc::open_how>(),
        )
    };
    if fd >= 0 {
        // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
        return Ok(Beneath::File(File::from(unsafe { OwnedFd::from_raw_fd(fd as i32) })));
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ENOSYS) => Ok(Beneath::Unsupported),
        Some(libc::ENOENT | libc::ENOTDIR | libc::EXDEV | libc::ELOOP | libc::EACCES | libc::ENXIO) => {
            Ok(Beneath::Nothing)
        }
        _ => Err(err),
    }
}
