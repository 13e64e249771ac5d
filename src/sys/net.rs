//! Sockets: listening (SO_REUSEPORT, TCP_DEFER_ACCEPT, the SYN-dropping filter of a drain),
//! accepting close-on-exec, shutting a connection down at its deadline, and looking whether
//! clients have left.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, TcpListener};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStringExt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Instant;

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
pub fn listen(addr: SocketAddr, defer_accept: bool) -> io::Result<TcpListener> {
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

/// Asks the kernel to hand this listening socket the connections whose packets CPU `cpu`
/// receives (SO_INCOMING_CPU): in an SO_REUSEPORT group where sockets set it, a new connection
/// goes to a socket of the CPU that took its SYN when there is one (Linux 6.2 and later), else by
/// the hash as before.
pub fn prefer_cpu(fd: RawFd, cpu: usize) -> io::Result<()> {
    let cpu = libc::c_int::try_from(cpu).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    set_opt(fd, libc::SOL_SOCKET, libc::SO_INCOMING_CPU, cpu)
}

/// Takes back [`prefer_cpu`]: the socket asks for no CPU's connections (it takes its share of
/// the hash's again).
pub fn prefer_no_cpu(fd: RawFd) -> io::Result<()> {
    set_opt(fd, libc::SOL_SOCKET, libc::SO_INCOMING_CPU, -1)
}

/// The CPU a socket asks for (SO_INCOMING_CPU); -1 for none.
pub fn preferred_cpu(fd: RawFd) -> io::Result<i32> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: value and len are ours and outlive the call; len says value's size.
    check(unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_INCOMING_CPU,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    Ok(value)
}

/// A process's TCP sockets and the CPU each asks for (`--incoming-cpu`): set at start, taken back
/// and given again as its supervisor says (`server::steering`).
pub struct Steering {
    /// The sockets and their CPUs; emptied when the process drains (it closes them).
    sockets: Mutex<Vec<(RawFd, usize)>>,
    /// Off steering now, by the supervisor's word.
    off: AtomicBool,
    /// Times the supervisor took this process off steering.
    taken_off: AtomicU64,
    /// What [`Steering::shed_before`] counts from.
    epoch: Instant,
    /// Connections accepted before this (nanoseconds after `epoch`; 0: none) end after their
    /// next response: the ones the process held when it was last taken off steering.
    shed_before: AtomicU64,
}

impl Default for Steering {
    fn default() -> Steering {
        Steering {
            sockets: Mutex::default(),
            off: AtomicBool::default(),
            taken_off: AtomicU64::default(),
            epoch: Instant::now(),
            shed_before: AtomicU64::default(),
        }
    }
}

impl Steering {
    /// Asks for `cpu`'s connections on `fd` (`--incoming-cpu`), and keeps that to give again.
    pub fn prefer(&self, fd: RawFd, cpu: usize) -> io::Result<()> {
        let mut sockets = self.sockets.lock().unwrap_or_else(|e| e.into_inner());
        prefer_cpu(fd, cpu)?;
        sockets.push((fd, cpu));
        Ok(())
    }

    /// Steers (`true`) or lets the hash spread this process's CPUs' connections (`false`).
    pub fn set(&self, on: bool) -> io::Result<()> {
        // Held while setting: `forget` waits for it, so a socket is never touched once closed.
        let sockets = self.sockets.lock().unwrap_or_else(|e| e.into_inner());
        let was_off = self.off.swap(!on, Relaxed);
        // A process with no steered socket (the option failed at start, or it drains) has piled
        // up nothing to shed.
        if !on && !was_off && !sockets.is_empty() {
            self.taken_off.fetch_add(1, Relaxed);
            // The connections it holds now were steered here: each ends after its next response,
            // and its client's next connection is spread by the hash.
            let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX).max(1);
            self.shed_before.store(now, Relaxed);
        }
        for &(fd, cpu) in sockets.iter() {
            if on { prefer_cpu(fd, cpu)? } else { prefer_no_cpu(fd)? }
        }
        Ok(())
    }

    /// Whether this process's sockets ask for its CPUs' connections now (`--incoming-cpu` set
    /// on at least one socket, and not taken off by the supervisor).
    pub fn steers(&self) -> bool {
        !self.off.load(Relaxed) && !self.sockets.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
    }

    /// Whether a connection accepted at `accepted` is to end after its response: it was open
    /// when the process was last taken off steering.
    pub fn sheds(&self, accepted: Instant) -> bool {
        let before = self.shed_before.load(Relaxed);
        before != 0 && accepted.saturating_duration_since(self.epoch).as_nanos() < u128::from(before)
    }

    /// Times the supervisor took this process off steering.
    pub fn taken_off(&self) -> u64 {
        self.taken_off.load(Relaxed)
    }

    /// The process drains and closes its sockets: nothing is set on them any more.
    pub fn forget(&self) {
        self.sockets.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// The network cards (interfaces backed by a device, under `root`, normally /sys/class/net)
/// that take in every packet on one CPU: one receive queue and no Receive Packet Steering
/// (`rps_cpus` all zeroes). `--incoming-cpu` would put every connection through such a card on
/// that CPU. Loopback, bridges, tunnels and other virtual interfaces have no device and are left
/// out; a folder that cannot be read counts as spreading (no warning on a guess).
pub fn cards_on_one_cpu(root: &std::path::Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(root) else { return Vec::new() };
    let mut out: Vec<String> = entries
        .flatten()
        .filter(|e| e.path().join("device").exists())
        .filter(|e| {
            let queues = e.path().join("queues");
            let rx: Vec<_> = std::fs::read_dir(&queues)
                .map(|q| q.flatten().filter(|q| q.file_name().to_string_lossy().starts_with("rx-")).collect())
                .unwrap_or_default();
            rx.len() == 1
                && std::fs::read_to_string(rx[0].path().join("rps_cpus")).is_ok_and(|mask| !spreads(&mask))
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

/// Whether an `rps_cpus` mask (hex words separated by commas) names any CPU.
fn spreads(mask: &str) -> bool {
    mask.trim().chars().any(|c| c.is_ascii_hexdigit() && c != '0')
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

/// Marks a descriptor close-on-exec.
pub fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl(F_SETFD) on a descriptor the caller owns; only its flags change.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether a descriptor is close-on-exec.
pub fn is_cloexec(fd: RawFd) -> bool {
    // SAFETY: fcntl(F_GETFD) only reads the descriptor's flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    flags >= 0 && flags & libc::FD_CLOEXEC != 0
}

/// Accepts a connection waiting on the listening socket `fd`, close-on-exec from the start (a
/// child process started by the app at that moment cannot inherit it). `nonblock`: for the
/// epoll driver; io_uring takes blocking sockets. `Ok(None)`: nothing is waiting.
/// The peer's address is `None` for a unix socket's client.
pub fn accept(fd: RawFd, nonblock: bool) -> io::Result<Option<(OwnedFd, Option<SocketAddr>)>> {
    // SAFETY: sockaddr_storage is plain data; accept4 fills at most `len` bytes of it.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let flags = libc::SOCK_CLOEXEC | if nonblock { libc::SOCK_NONBLOCK } else { 0 };
    // SAFETY: fd is a listening socket; storage and len are valid for writing.
    let conn =
        unsafe { libc::accept4(fd, (&mut storage as *mut libc::sockaddr_storage).cast(), &mut len, flags) };
    if conn < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) | Some(libc::ECONNABORTED) => Ok(None),
            _ => Err(e),
        };
    }
    // SAFETY: accept4 returned a new descriptor that nothing else owns.
    let conn = unsafe { OwnedFd::from_raw_fd(conn) };
    Ok(Some((conn, socket_addr(&storage))))
}

/// What kind of socket a descriptor is (for sockets inherited from a supervisor or systemd).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A TCP socket bound to this address.
    Tcp(SocketAddr),
    /// A unix socket (its path, if it has one).
    Unix(Option<std::path::PathBuf>),
}

/// The kind and local address of a socket descriptor; `None` for anything else.
pub fn kind(fd: RawFd) -> Option<Kind> {
    // SAFETY: sockaddr_storage is plain data; getsockname fills at most `len` bytes of it.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: fd is a descriptor the caller owns; storage and len are valid for writing.
    if unsafe { libc::getsockname(fd, (&mut storage as *mut libc::sockaddr_storage).cast(), &mut len) } != 0 {
        return None;
    }
    if i32::from(storage.ss_family) == libc::AF_UNIX {
        // SAFETY: the family says the storage holds a sockaddr_un, which fits in it.
        let un = unsafe { &*(&storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_un>() };
        let bytes: Vec<u8> = un.sun_path.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
        let path = (!bytes.is_empty()).then(|| std::path::PathBuf::from(std::ffi::OsString::from_vec(bytes)));
        return Some(Kind::Unix(path));
    }
    socket_addr(&storage).map(Kind::Tcp)
}

/// Binds a unix listening socket at `path` with permissions `mode`. A socket file already there
/// is replaced only when nobody listens on it (a connect is refused); a live one is
/// `AddrInUse`, anything else at the path `AlreadyExists`.
pub fn listen_unix(path: &std::path::Path, mode: u32) -> io::Result<std::os::unix::net::UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(io::Error::new(io::ErrorKind::AddrInUse, "Address already in use")),
            // Left by a process that is gone: replaced.
            Err(_) => std::fs::remove_file(path)?,
        },
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "something other than a socket is there",
            ));
        }
        Err(_) => {}
    }
    let listener = std::os::unix::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Whether something already listens on `addr`: a socket bound without SO_REUSEPORT cannot join
/// a port another socket holds, whether that socket set SO_REUSEPORT or not (a port in TIME_WAIT
/// is free: SO_REUSEADDR).
pub fn address_taken(addr: SocketAddr) -> bool {
    let domain = if addr.is_ipv6() { libc::AF_INET6 } else { libc::AF_INET };
    // SAFETY: plain socket(2) call; the result is checked.
    let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return false;
    }
    // SAFETY: fd was just created and is owned by nothing else; closed on drop.
    let probe = unsafe { OwnedFd::from_raw_fd(fd) };
    let _ = set_opt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1);
    if addr.is_ipv6() {
        let _ = set_opt(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, i32::from(!addr.ip().is_unspecified()));
    }
    let (storage, len) = sockaddr(addr);
    // SAFETY: storage holds a valid sockaddr of `len` bytes for this address family.
    let taken = unsafe { libc::bind(fd, (&storage as *const libc::sockaddr_storage).cast(), len) } != 0
        && io::Error::last_os_error().raw_os_error() == Some(libc::EADDRINUSE);
    drop(probe);
    taken
}

/// Claims `name` for this process as long as the returned descriptor is open: an abstract unix
/// socket, which a second claimant cannot bind (`AddrInUse`) and the kernel frees with the
/// process, however it ends. Closes the gap between [`address_taken`] and the bind of two
/// instances started at once.
pub fn claim(name: &str) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked.
    let fd = check(unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: fd was just created and is owned by nothing else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_un is plain data for which all-zeroes is a valid value.
    let mut un: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    un.sun_family = libc::AF_UNIX as libc::sa_family_t;
    // An abstract name: a leading NUL, then the name (truncated to fit).
    let bytes = name.as_bytes();
    let n = bytes.len().min(un.sun_path.len() - 1);
    for (dst, &b) in un.sun_path[1..=n].iter_mut().zip(bytes) {
        *dst = b as libc::c_char;
    }
    let len = (size_of::<libc::sa_family_t>() + 1 + n) as libc::socklen_t;
    // SAFETY: `un` is a valid sockaddr_un of `len` bytes.
    check(unsafe { libc::bind(fd, (&un as *const libc::sockaddr_un).cast(), len) })?;
    Ok(owned)
}

/// A pair of connected datagram sockets (`SOCK_SEQPACKET`: messages keep their bounds), both
/// close-on-exec and non-blocking: the supervisor's control channel with one of its processes.
pub fn message_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    let kind = libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
    // SAFETY: socketpair writes two descriptors into the array we own.
    check(unsafe { libc::socketpair(libc::AF_UNIX, kind, 0, fds.as_mut_ptr()) })?;
    // SAFETY: both descriptors were just created and are owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Sends one message without waiting: `Err` with `WouldBlock` when the peer's queue is full,
/// another error when it could not go at all (the peer is gone).
pub fn send_message(fd: RawFd, msg: &[u8]) -> io::Result<()> {
    // SAFETY: sends `msg.len()` bytes from a live slice on a socket the caller owns.
    let n =
        unsafe { libc::send(fd, msg.as_ptr().cast(), msg.len(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // A SOCK_SEQPACKET message goes whole or not at all.
    if n as usize != msg.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "a message went in part"));
    }
    Ok(())
}

/// Waits until one of two descriptors is readable or hung up, for at most `timeout` (`None`:
/// no limit); which ones are.
pub fn wait_readable(fds: [RawFd; 2], timeout: Option<std::time::Duration>) -> [bool; 2] {
    let mut p = fds.map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 });
    let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as libc::c_int);
    // SAFETY: two valid pollfds for descriptors the caller owns; poll(2) waits at most `ms`
    // (forever with -1) and only writes their `revents`.
    let n = unsafe { libc::poll(p.as_mut_ptr(), 2, ms) };
    if n <= 0 {
        return [false, false];
    }
    [p[0].revents != 0, p[1].revents != 0]
}

/// Receives one message without waiting: `Ok(Some(n))` with its whole length (more than
/// `buf.len()` when it did not fit: only its start is in `buf`), `Ok(None)` when none waits,
/// `Ok(Some(0))` when the peer closed.
pub fn receive_message(fd: RawFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
    // SAFETY: receives at most `buf.len()` bytes into a live buffer on a socket the caller owns;
    // MSG_TRUNC only makes the return value the message's real length.
    let n =
        unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT | libc::MSG_TRUNC) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(None),
            _ => Err(e),
        };
    }
    Ok(Some(n as usize))
}

/// The address in a `sockaddr_storage` filled by the kernel (IPv4 or IPv6).
fn socket_addr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, which fits in it.
            let a = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(a.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6, which fits in it.
            let a = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Ends the pending operations on a connection's socket (both directions), as its deadline passed
/// or the server is shutting down; the descriptor stays open for its owner to close.
pub fn shutdown(fd: RawFd) {
    // SAFETY: shutdown(2) on a descriptor the caller registered and has not closed; it only ends
    // the operations on the socket.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
}

/// Which of `fds` (listening sockets) have a connection waiting: `POLLIN` in one `poll(2)` that
/// does not wait. `ready[i]` is set for `fds[i]`.
pub fn readable(fds: &[RawFd], ready: &mut Vec<bool>) {
    poll_now(fds, libc::POLLIN, libc::POLLIN, ready);
}

/// Which of `fds` (sockets) the peer has closed or reset: hung-up flags (`POLLRDHUP`, `POLLHUP`,
/// `POLLERR`) in one `poll(2)` that does not wait. `gone[i]` is set for `fds[i]`.
pub fn hung_up(fds: &[RawFd], gone: &mut Vec<bool>) {
    poll_now(fds, libc::POLLRDHUP, libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR, gone);
}

/// One `poll(2)` over `fds` for `events` that does not wait: `out[i]` is set when `fds[i]`
/// reported any of `flags`.
fn poll_now(fds: &[RawFd], events: i16, flags: i16, out: &mut Vec<bool>) {
    out.clear();
    out.resize(fds.len(), false);
    if fds.is_empty() {
        return;
    }
    let mut polls: Vec<libc::pollfd> =
        fds.iter().map(|&fd| libc::pollfd { fd, events, revents: 0 }).collect();
    // SAFETY: `polls` is a valid array of `polls.len()` pollfd structs; a zero timeout makes
    // poll(2) only report, never wait.
    let n = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, 0) };
    if n <= 0 {
        return;
    }
    for (o, p) in out.iter_mut().zip(&polls) {
        *o = p.revents & flags != 0;
    }
}

/// Sets or clears `O_NONBLOCK` on a descriptor; returns whether it was set before.
pub fn set_nonblocking(fd: RawFd, on: bool) -> io::Result<bool> {
    // SAFETY: fcntl(F_GETFL) on a descriptor the caller owns.
    let flags = check(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    let was = flags & libc::O_NONBLOCK != 0;
    if was != on {
        let flags = if on { flags | libc::O_NONBLOCK } else { flags & !libc::O_NONBLOCK };
        // SAFETY: fcntl(F_SETFL) with flags derived from the descriptor's own.
        check(unsafe { libc::fcntl(fd, libc::F_SETFL, flags) })?;
    }
    Ok(was)
}

/// Sends what it can of `buf` without waiting, telling the kernel more follows (`MSG_MORE`: the
/// bytes wait to share a segment with the next send). `WouldBlock` when the socket is full.
pub fn send_more(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    let flags = libc::MSG_MORE | libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
    // SAFETY: sends at most `buf.len()` bytes from a live slice on a socket the caller owns.
    let n = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), flags) };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
}

/// `sendfile(2)`: up to `count` bytes of the file `file` from `*offset` to the socket `sock`,
/// which the kernel moves without copying them through this process; `*offset` advances by
/// what went. On a non-blocking socket, `WouldBlock` when it is full.
pub fn sendfile(sock: RawFd, file: RawFd, offset: &mut u64, count: usize) -> io::Result<usize> {
    let mut off = *offset as libc::off_t;
    // SAFETY: both descriptors are the caller's; `off` is a valid offset for the kernel to update.
    let n = unsafe { libc::sendfile(sock, file, &mut off, count) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    *offset = off as u64;
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    #[test]
    fn steering_sets_and_clears_each_sockets_cpu_until_forgotten() {
        use std::os::fd::AsRawFd;
        let listener = listen("127.0.0.1:0".parse().expect("addr"), false).expect("bind");
        let fd = listener.as_raw_fd();
        let s = Steering::default();
        assert!(!s.steers(), "no socket asks for a CPU");
        s.prefer(fd, 1).expect("SO_INCOMING_CPU");
        assert_eq!(preferred_cpu(fd).expect("read"), 1);
        assert!(s.steers());
        let before = Instant::now();
        assert!(!s.sheds(before), "nothing shed while it steers");
        std::thread::sleep(std::time::Duration::from_millis(2));
        s.set(false).expect("set");
        let after = Instant::now();
        std::thread::sleep(std::time::Duration::from_millis(2));
        s.set(false).expect("set");
        assert_eq!(preferred_cpu(fd).expect("read"), -1);
        assert!(!s.steers());
        assert_eq!(s.taken_off(), 1, "counted once per change");
        // The connections held when it was taken off end after their next response; later ones
        // (and being told again) do not.
        assert!(s.sheds(before));
        assert!(!s.sheds(after));
        s.set(true).expect("set");
        assert_eq!(preferred_cpu(fd).expect("read"), 1);
        assert!(s.steers());
        s.forget();
        s.set(false).expect("set");
        assert_eq!(preferred_cpu(fd).expect("read"), 1);
        // Told to stop steering with no socket that steered: nothing counted, nothing shed.
        let none = Steering::default();
        let before = Instant::now();
        std::thread::sleep(std::time::Duration::from_millis(2));
        none.set(false).expect("set");
        assert!(!none.sheds(before));
        assert_eq!(none.taken_off(), 0);
    }

    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::time::{Duration, Instant};

    #[test]
    fn readable_names_the_listeners_with_a_connection_waiting() {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fds = [a.as_raw_fd(), b.as_raw_fd()];
        let mut ready = vec![true; 5];
        readable(&fds, &mut ready);
        assert_eq!(ready, [false, false]);
        let _client = std::net::TcpStream::connect(b.local_addr().unwrap()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            readable(&fds, &mut ready);
            if ready == [false, true] || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(ready, [false, true]);
        drop(b.accept().unwrap());
        readable(&fds, &mut ready);
        assert_eq!(ready, [false, false], "nothing waits once taken");
    }

    #[test]
    fn a_listener_that_prefers_a_cpu_gets_the_connections_that_cpu_takes_in() {
        let cpus = crate::sys::process::allowed_cpus();
        assert!(cpus.len() >= 2, "this test needs two CPUs, it has {cpus:?}");
        let a = listen("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let addr = a.local_addr().unwrap();
        let b = listen(addr, false).unwrap();
        prefer_cpu(a.as_raw_fd(), cpus[0]).unwrap();
        prefer_cpu(b.as_raw_fd(), cpus[1]).unwrap();
        for (cpu, mine, other) in [(cpus[0], &a, &b), (cpus[1], &b, &a)] {
            // On loopback the SYN is taken in on the CPU of the thread that connects.
            let clients = std::thread::spawn(move || {
                core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
                (0..16).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect::<Vec<_>>()
            })
            .join()
            .unwrap();
            for i in 0..16 {
                assert!(
                    accept_within(mine, Duration::from_secs(2)).is_some(),
                    "connection {i} from CPU {cpu}"
                );
            }
            assert!(other.accept().is_err(), "a connection from CPU {cpu} went to the other listener");
            drop(clients);
        }
    }

    #[test]
    fn several_listeners_share_a_port() {
        let a = listen("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let port = a.local_addr().unwrap().port();
        let b = listen(SocketAddr::from(([127, 0, 0, 1], port)), false).unwrap();
        assert_eq!(b.local_addr().unwrap().port(), port);
        let dual = listen("[::]:0".parse().unwrap(), false).unwrap();
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
        let l = listen("127.0.0.1:0".parse().unwrap(), true).unwrap();
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
        let l = listen("127.0.0.1:0".parse().unwrap(), true).unwrap();
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

    #[test]
    fn accepted_sockets_are_close_on_exec_and_say_who_called() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        assert!(accept(listener.as_raw_fd(), true).unwrap().is_none(), "nobody waits yet");
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let mut got = None;
        for _ in 0..100 {
            got = accept(listener.as_raw_fd(), false).unwrap();
            if got.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let (fd, peer) = got.expect("the connection");
        assert_eq!(peer, Some(client.local_addr().unwrap()));
        assert!(is_cloexec(fd.as_raw_fd()));
        // SAFETY: F_GETFL only reads the flags of a descriptor we own.
        let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
        assert_eq!(flags & libc::O_NONBLOCK, 0, "blocking for io_uring");
    }

    #[test]
    fn an_rps_mask_spreads_when_it_names_a_cpu() {
        for (mask, want) in [
            ("0\n", false),
            ("00000000,00000000\n", false),
            ("", false),
            ("1\n", true),
            ("00000000,00000003\n", true),
            ("f0,00000000", true),
        ] {
            assert_eq!(spreads(mask), want, "{mask:?}");
        }
    }

    #[test]
    fn cards_on_one_cpu_are_those_with_one_receive_queue_and_no_rps() {
        let root = std::env::temp_dir().join(format!("wsgo-sysnet-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        // name, has a device, receive queues' rps_cpus
        let cards: [(&str, bool, &[&str]); 6] = [
            ("eth0", true, &["0\n"]),
            ("ens5", true, &["0\n", "0\n", "0\n", "0\n"]),
            ("eth1", true, &["00000000,00000003\n"]),
            ("lo", false, &["0\n"]),
            ("br0", false, &["0\n"]),
            ("wlan0", true, &["00000000,00000000\n"]),
        ];
        for (name, device, queues) in cards {
            let dir = root.join(name);
            std::fs::create_dir_all(dir.join("queues")).unwrap();
            if device {
                std::fs::create_dir_all(dir.join("device")).unwrap();
            }
            for (i, mask) in queues.iter().enumerate() {
                let q = dir.join("queues").join(format!("rx-{i}"));
                std::fs::create_dir_all(&q).unwrap();
                std::fs::write(q.join("rps_cpus"), mask).unwrap();
                std::fs::create_dir_all(dir.join("queues").join(format!("tx-{i}"))).unwrap();
            }
        }
        assert_eq!(cards_on_one_cpu(&root), ["eth0", "wlan0"]);
        std::fs::remove_dir_all(&root).unwrap();
        assert!(cards_on_one_cpu(&root).is_empty(), "no folder, no warning");
    }
}
