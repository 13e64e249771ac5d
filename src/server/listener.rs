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

/// Binds a non-blocking listener with SO_REUSEADDR and SO_REUSEPORT. An unspecified IPv6 address
/// (`:8000`) accepts IPv4 too.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
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

/// Makes a listening socket drop new connection attempts (a socket filter that drops every
/// packet), while the connections already queued stay and can be accepted. Used when the last
/// holder of a socket shuts down: a client whose SYN is dropped sees a refused connection (its
/// retry finds the port closed) rather than one that is accepted by the kernel and then reset.
pub fn refuse_new(fd: std::os::fd::RawFd) -> io::Result<()> {
    let mut drop_all = [libc::sock_filter { code: (libc::BPF_RET | libc::BPF_K) as u16, jt: 0, jf: 0, k: 0 }];
    let prog = libc::sock_fprog { len: 1, filter: drop_all.as_mut_ptr() };
    // SAFETY: fd is an open socket; prog points to a one-instruction program that outlives the
    // call (the kernel copies it).
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

    #[test]
    fn several_listeners_share_a_port() {
        let a = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = a.local_addr().unwrap().port();
        let b = bind(SocketAddr::from(([127, 0, 0, 1], port))).unwrap();
        assert_eq!(b.local_addr().unwrap().port(), port);
        let dual = bind("[::]:0".parse().unwrap()).unwrap();
        let port = dual.local_addr().unwrap().port();
        // The dual-stack listener takes IPv4 connections.
        std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    }
}
