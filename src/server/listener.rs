//! Listening sockets: one per core thread, all bound to the same address with SO_REUSEPORT so
//! the kernel spreads connections over the cores.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::FromRawFd;

/// Accept backlog per listener.
const BACKLOG: i32 = 1024;

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 { Err(io::Error::last_os_error()) } else { Ok(ret) }
}

fn set_opt(fd: libc::c_int, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: fd is a socket we own; the option value is a c_int that outlives the call.
    check(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Binds a non-blocking listener with SO_REUSEADDR and SO_REUSEPORT (and TCP_DEFER_ACCEPT when
/// `defer_accept`). An unspecified IPv6 address (`:8000`) accepts IPv4 too.
pub fn bind(addr: SocketAddr, defer_accept: bool) -> io::Result<TcpListener> {
    let domain = if addr.is_ipv6() { libc::AF_INET6 } else { libc::AF_INET };
    // SAFETY: plain socket(2) call; the result is checked.
    let fd = check(unsafe {
        libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, 0)
    })?;
    // SAFETY: fd was just created and is owned by nothing else; the listener closes it on drop,
    // including on the error paths below.
    let listener = unsafe { TcpListener::from_raw_fd(fd) };
    set_opt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    set_opt(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    // Accepted sockets inherit TCP_NODELAY from the listener: one setsockopt per listener
    // instead of one per connection.
    set_opt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
    if defer_accept {
        // Handed over when the first bytes arrive; a silent connection after one SYN-ACK
        // retransmission (about 1 s).
        set_opt(fd, libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT, 1)?;
    }
    if addr.is_ipv6() {
        let v6only = i32::from(!addr.ip().is_unspecified());
        set_opt(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, v6only)?;
    }
    let (storage, len) = sockaddr(addr);
    // SAFETY: storage holds a valid sockaddr of `len` bytes for this address family.
    check(unsafe { libc::bind(fd, (&storage as *const libc::sockaddr_storage).cast(), len) })?;
    // SAFETY: fd is a bound stream socket.
    check(unsafe { libc::listen(fd, BACKLOG) })?;
    Ok(listener)
}

/// Makes a listening socket drop new connection attempts, while the connections already queued
/// stay and can be accepted. Used when the last holder of a socket shuts down: a client whose
/// SYN is dropped sees a refused connection (its retry finds the port closed) rather than one
/// that is accepted by the kernel and then reset.
///
/// The socket filter drops only SYN segments (it sees the TCP header: byte 13 holds the flags),
/// so a handshake already answered still completes, and a deferred connection's first bytes
/// still make it acceptable. Sockets accepted later inherit the filter, which is harmless on an
/// established connection.
pub fn refuse_new(fd: std::os::fd::RawFd) -> io::Result<()> {
    const TCP_FLAGS: u32 = 13;
    const SYN: u32 = 0x02;
    let op = |code: u32, jt: u8, jf: u8, k: u32| libc::sock_filter { code: code as u16, jt, jf, k };
    let mut drop_syn = [
        op(libc::BPF_LD | libc::BPF_B | libc::BPF_ABS, 0, 0, TCP_FLAGS),
        // SYN set: go on to "drop"; otherwise skip it.
        op(libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K, 0, 1, SYN),
        op(libc::BPF_RET | libc::BPF_K, 0, 0, 0),
        op(libc::BPF_RET | libc::BPF_K, 0, 0, u32::MAX),
    ];
    let prog = libc::sock_fprog { len: drop_syn.len() as u16, filter: drop_syn.as_mut_ptr() };
    // SAFETY: fd is an open socket; prog points to a program of `len` instructions that outlives
    // the call (the kernel copies it).
    check(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&prog as *const libc::sock_fprog).cast(),
            size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    })
    .map(drop)
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data for which all-zeroes is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            let sin =
                unsafe { &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr = libc::in_addr { s_addr: u32::from(*a.ip()).to_be() };
            (storage, size_of::<libc::sockaddr_in>() as libc::socklen_t)
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            let sin6 =
                unsafe { &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr = libc::in6_addr { s6_addr: a.ip().octets() };
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
            (storage, size_of::<libc::sockaddr_in6>() as libc::socklen_t)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::time::{Duration, Instant};

    #[test]
    fn several_listeners_share_a_port() {
        let a = bind("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let port = a.local_addr().unwrap().port();
        let b = bind(SocketAddr::from(([127, 0, 0, 1], port)), false).unwrap();
        assert_eq!(b.local_addr().unwrap().port(), port);
        let dual = bind("[::]:0".parse().unwrap(), false).unwrap();
        let port = dual.local_addr().unwrap().port();
        // The dual-stack listener takes IPv4 connections.
        std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        // Accepted sockets inherit TCP_NODELAY.
        let _client = std::net::TcpStream::connect(a.local_addr().unwrap()).unwrap();
        let accepted = loop {
            match a.accept().or_else(|_| b.accept()) {
                Ok((s, _)) => break s,
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
            }
        };
        assert!(accepted.nodelay().unwrap());
    }

    fn accept_within(l: &TcpListener, limit: Duration) -> Option<std::net::TcpStream> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok((s, _)) = l.accept() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    /// A non-blocking connect: whether the handshake completes within `limit`.
    fn connects_within(addr: SocketAddr, limit: Duration) -> bool {
        std::net::TcpStream::connect_timeout(&addr, limit).is_ok()
    }

    #[test]
    fn deferred_connections_are_handed_over_with_their_first_bytes() {
        let l = bind("127.0.0.1:0".parse().unwrap(), true).unwrap();
        let addr = l.local_addr().unwrap();
        let mut silent = std::net::TcpStream::connect(addr).unwrap();
        assert!(accept_within(&l, Duration::from_millis(300)).is_none(), "accepted before any data");
        silent.write_all(b"GET").unwrap();
        let mut got = accept_within(&l, Duration::from_secs(2)).expect("accepted once data came");
        let mut buf = [0u8; 3];
        got.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"GET");
    }

    #[test]
    fn refusing_new_connections_keeps_the_ones_under_way() {
        let l = bind("127.0.0.1:0".parse().unwrap(), true).unwrap();
        let addr = l.local_addr().unwrap();
        // Queued before: established and sent its request.
        let mut queued = std::net::TcpStream::connect(addr).unwrap();
        queued.write_all(b"a").unwrap();
        // Under way: the handshake is done, the first bytes come after the filter.
        let mut under_way = std::net::TcpStream::connect(addr).unwrap();
        refuse_new(l.as_raw_fd()).unwrap();
        under_way.write_all(b"b").unwrap();
        // New attempts get no answer.
        assert!(!connects_within(addr, Duration::from_millis(300)), "a new connection got through");
        let mut seen = Vec::new();
        for _ in 0..2 {
            let mut s = accept_within(&l, Duration::from_secs(2)).expect("both are accepted");
            let mut b = [0u8; 1];
            s.read_exact(&mut b).unwrap();
            // The accepted connection still carries data both ways.
            s.write_all(b"ok").unwrap();
            seen.push(b[0]);
        }
        seen.sort_unstable();
        assert_eq!(seen, b"ab");
        let mut reply = [0u8; 2];
        under_way.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"ok");
    }
}
