//! What a connection reads from and writes to: a TCP socket in the server, a scripted in-memory
//! stream in the tests (`conn::memory`). The connection loop is generic over it, so the same code
//! runs in both.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;

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
}

/// A connection's byte stream.
pub trait Transport {
    /// Reads into the spare capacity of `buf` (past its length, which grows by what came);
    /// `Ok(0)` means the peer closed.
    fn read(&mut self, buf: BytesMut) -> impl Future<Output = (io::Result<usize>, BytesMut)>;

    /// Writes all of `buf`; it comes back (cleared by the caller) for reuse.
    fn write_all(&mut self, buf: Vec<u8>) -> impl Future<Output = (io::Result<()>, Vec<u8>)>;

    /// One vectored write of what `parts` still holds; returns how many bytes were taken.
    fn writev(&mut self, parts: Parts) -> impl Future<Output = (io::Result<usize>, Parts)>;

    /// The local address (asked only for a wildcard listener's connection without a Host).
    fn local_addr(&self) -> io::Result<SocketAddr>;

    /// How the sweep ends its operations at a deadline and sees a departed client.
    fn kick(&self) -> Kick;
}

impl Transport for monoio::net::UnixStream {
    async fn read(&mut self, buf: BytesMut) -> (io::Result<usize>, BytesMut) {
        let len = buf.len();
        let (res, spare) = AsyncReadRent::read(self, buf.slice_mut(len..)).await;
        (res, spare.into_inner())
    }

    async fn write_all(&mut self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        let (res, buf) = AsyncWriteRentExt::write_all(self, buf).await;
        (res.map(drop), buf)
    }

    async fn writev(&mut self, parts: Parts) -> (io::Result<usize>, Parts) {
        AsyncWriteRent::writev(self, parts).await
    }

    /// A unix socket has no IP address: port 0 says so (see `wsgi::environ`).
    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(UNIX_LOCAL)
    }

    fn kick(&self) -> Kick {
        Kick::Fd(self.as_raw_fd())
    }
}

/// What a unix socket's connection reports as its local address: this host, port 0 (no TCP
/// port; the environ's `SERVER_PORT` then comes from the Host field).
pub const UNIX_LOCAL: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

impl Transport for monoio::net::TcpStream {
    async fn read(&mut self, buf: BytesMut) -> (io::Result<usize>, BytesMut) {
        // monoio reads into a buffer from its start: read into the spare capacity past `len`.
        let len = buf.len();
        let (res, spare) = AsyncReadRent::read(self, buf.slice_mut(len..)).await;
        (res, spare.into_inner())
    }

    async fn write_all(&mut self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        let (res, buf) = AsyncWriteRentExt::write_all(self, buf).await;
        (res.map(drop), buf)
    }

    async fn writev(&mut self, parts: Parts) -> (io::Result<usize>, Parts) {
        AsyncWriteRent::writev(self, parts).await
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        monoio::net::TcpStream::local_addr(self)
    }

    fn kick(&self) -> Kick {
        Kick::Fd(self.as_raw_fd())
    }
}
