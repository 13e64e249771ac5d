//! What a connection reads from and writes to: a TCP socket in the server, a scripted in-memory
//! stream in the tests (`conn::memory`). The connection loop is generic over it, so the same code
//! runs in both.

use std::fs::File;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;

use bytes::BytesMut;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};

use super::send::Parts;

/// How the core's sweep reaches a connection's transport.
#[derive(Clone)]
pub enum Kick {
    /// A socket: shut down at its deadline, polled for a departed client.
    Fd(RawFd),
    /// Anything else (the tests' scripted stream).
    Hook(Rc<dyn Hook>),
}

/// The sweep's handle on a transport without a descriptor.
pub trait Hook {
    /// Ends the pending and later operations, as `shutdown(2)` does on a socket.
    fn shut(&self);
    /// Whether the peer has closed or reset its side.
    fn hung_up(&self) -> bool;
    /// Ends a pending [`Transport::read_idle`] with [`rested`] unless bytes came.
    fn rest(&self);
}

/// A read for the next request cancelled so the connection can rest (`ECANCELED`).
pub fn rested(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ECANCELED)
}

/// A connection's byte stream.
pub trait Transport {
    /// Reads into the spare capacity of `buf` (past its length, which grows by what came);
    /// `Ok(0)` means the peer closed.
    fn read(&mut self, buf: BytesMut) -> impl Future<Output = (io::Result<usize>, BytesMut)>;

    /// [`Transport::read`] for the wait between requests, which the sweep may cancel through
    /// `cancel` (or the hook) when the connection is to rest: then an error [`rested`] says so,
    /// and nothing was read.
    fn read_idle(
        &mut self,
        buf: BytesMut,
        cancel: Option<monoio::io::CancelHandle>,
    ) -> impl Future<Output = (io::Result<usize>, BytesMut)>;

    /// Waits until there is something to read, the peer closed, or the socket was shut down,
    /// holding no buffer.
    fn readable(&mut self) -> impl Future<Output = io::Result<()>>;

    /// Writes all of `buf`; it comes back (cleared by the caller) for reuse.
    fn write_all(&mut self, buf: Vec<u8>) -> impl Future<Output = (io::Result<()>, Vec<u8>)>;

    /// One vectored write of what `parts` still holds; returns how many bytes were taken.
    fn writev(&mut self, parts: Parts) -> impl Future<Output = (io::Result<usize>, Parts)>;

    /// Writes `head`, then `len` bytes of `file` from `offset`; returns the body bytes sent
    /// (fewer when the file shrank) and `head`'s buffer for reuse. A socket has the kernel move
    /// the file's pages itself (`sendfile(2)`), the head sharing the first segment.
    fn send_file(
        &mut self,
        head: Vec<u8>,
        file: Arc<File>,
        offset: u64,
        len: u64,
    ) -> impl Future<Output = (io::Result<u64>, Vec<u8>)>;

    /// The local address (asked only for a wildcard listener's connection without a Host).
    fn local_addr(&self) -> io::Result<SocketAddr>;

    /// How the sweep ends its operations at a deadline and sees a departed client.
    fn kick(&self) -> Kick;
}

/// The [`Transport`] of a monoio socket: reads and writes through monoio, files with
/// `sendfile(2)` on its descriptor; `$local` is its local address.
macro_rules! socket_transport {
    ($socket:ty, |$s:ident| $local:expr) => {
        impl Transport for $socket {
            async fn read(&mut self, buf: BytesMut) -> (io::Result<usize>, BytesMut) {
                // monoio reads into a buffer from its start: read into the spare capacity past
                // `len`.
                let len = buf.len();
                let (res, spare) = AsyncReadRent::read(self, buf.slice_mut(len..)).await;
                (res, spare.into_inner())
            }

            async fn read_idle(
                &mut self,
                buf: BytesMut,
                cancel: Option<monoio::io::CancelHandle>,
            ) -> (io::Result<usize>, BytesMut) {
                let Some(cancel) = cancel else { return Transport::read(self, buf).await };
                let len = buf.len();
                let (res, spare) =
                    monoio::io::CancelableAsyncReadRent::cancelable_read(self, buf.slice_mut(len..), cancel)
                        .await;
                (res, spare.into_inner())
            }

            async fn readable(&mut self) -> io::Result<()> {
                <$socket>::readable(self, false).await
            }

            async fn write_all(&mut self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
                let (res, buf) = AsyncWriteRentExt::write_all(self, buf).await;
                (res.map(drop), buf)
            }

            async fn writev(&mut self, parts: Parts) -> (io::Result<usize>, Parts) {
                AsyncWriteRent::writev(self, parts).await
            }

            async fn send_file(
                &mut self,
                head: Vec<u8>,
                file: Arc<File>,
                offset: u64,
                len: u64,
            ) -> (io::Result<u64>, Vec<u8>) {
                let res =
                    socket_send_file(self.as_raw_fd(), &head, &file, offset, len, || self.writable(false))
                        .await;
                (res, head)
            }

            fn local_addr(&self) -> io::Result<SocketAddr> {
                let $s = self;
                $local
            }

            fn kick(&self) -> Kick {
                Kick::Fd(self.as_raw_fd())
            }
        }
    };
}

// A unix socket has no IP address: port 0 says so (see `wsgi::environ`).
socket_transport!(monoio::net::UnixStream, |_s| Ok(UNIX_LOCAL));

/// `send_file` on a socket: the head with `MSG_MORE`, then `sendfile(2)` until the range is sent,
/// waiting for `writable` whenever the socket is full. The socket is non-blocking meanwhile (the
/// io_uring driver's sockets are blocking otherwise; nothing else of the connection is in flight
/// while it sends). A deadline is the sweep's shutdown of the socket, which ends the wait.
async fn socket_send_file<W, F>(
    fd: RawFd,
    head: &[u8],
    file: &File,
    mut offset: u64,
    len: u64,
    writable: W,
) -> io::Result<u64>
where
    W: Fn() -> F,
    F: Future<Output = io::Result<()>>,
{
    use crate::sys::net::{send_more, sendfile, set_nonblocking};
    let was_nonblocking = set_nonblocking(fd, true)?;
    let start = offset;
    let end = offset + len;
    let mut head_sent = 0;
    let result = loop {
        let step = if head_sent < head.len() {
            send_more(fd, &head[head_sent..]).map(|n| head_sent += n)
        } else if offset < end {
            // At most 1 GiB a call (sendfile's count is a size_t, but the kernel caps a call
            // near 2 GiB anyway).
            let count = (end - offset).min(1 << 30) as usize;
            match sendfile(fd, file.as_raw_fd(), &mut offset, count) {
                // The file is shorter than it was: the response cannot be completed.
                Ok(0) => break Ok(offset - start),
                other => other.map(drop),
            }
        } else {
            break Ok(offset - start);
        };
        match step {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if let Err(e) = writable().await {
                    break Err(e);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    if !was_nonblocking {
        set_nonblocking(fd, false)?;
    }
    result
}

/// What a unix socket's connection reports as its local address: this host, port 0 (no TCP
/// port; the environ's `SERVER_PORT` then comes from the Host field).
pub const UNIX_LOCAL: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

socket_transport!(monoio::net::TcpStream, |s| monoio::net::TcpStream::local_addr(s));
