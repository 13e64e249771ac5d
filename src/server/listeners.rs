//! The listening sockets: bound here (TCP and unix), inherited from the supervisor, or handed
//! over by systemd (socket activation); and shared out to the core threads.
//!
//! A TCP address gets one SO_REUSEPORT socket per core thread (per process, when the supervisor
//! binds), so the kernel spreads its connections over the cores (the processes). Before binding,
//! the address is claimed for this process (an abstract unix socket named after it) and probed (a bind without SO_REUSEPORT fails when anyone
//! holds the port): a second wsgo, or anything else, on an address a wsgo serves fails at start
//! with "Address already in use" instead of silently sharing its connections. A unix socket is
//! one socket that every core accepts from.

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use crate::config::{Bind, Config};
use crate::sys::net::Kind;

/// One listening socket.
#[derive(Debug)]
pub enum Listening {
    /// TCP.
    Tcp(TcpListener),
    /// A unix socket.
    Unix(UnixListener),
}

impl Listening {
    /// Its descriptor.
    pub fn fd(&self) -> RawFd {
        match self {
            Listening::Tcp(l) => l.as_raw_fd(),
            Listening::Unix(l) => l.as_raw_fd(),
        }
    }

    /// Another descriptor of the same socket.
    pub fn try_clone(&self) -> io::Result<Listening> {
        Ok(match self {
            Listening::Tcp(l) => Listening::Tcp(l.try_clone()?),
            Listening::Unix(l) => Listening::Unix(l.try_clone()?),
        })
    }

    /// What it is bound to.
    pub fn bind(&self) -> Option<Bind> {
        match crate::sys::net::kind(self.fd())? {
            Kind::Tcp(a) => Some(Bind::Tcp(a)),
            Kind::Unix(path) => Some(Bind::Unix(path.unwrap_or_default())),
        }
    }
}

/// Why the server cannot listen.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// The address cannot be had.
    #[error("cannot listen on {bind}: {source}")]
    Bind {
        /// Which address.
        bind: Bind,
        /// Why.
        source: io::Error,
    },
    /// Someone serves it already.
    #[error("cannot listen on {0}: Address already in use (another process serves it)")]
    Taken(Bind),
    /// An inherited descriptor is not a listening TCP or unix socket.
    #[error("descriptor {0} handed over is not a TCP or unix socket")]
    NotASocket(RawFd),
}

/// The sockets this process bound, and what ends with it: the claims on the addresses, and the
/// unix socket files, removed when dropped.
#[derive(Debug, Default)]
pub struct Bound {
    /// Every socket, each TCP address's group together.
    pub sockets: Vec<Listening>,
    claims: Vec<OwnedFd>,
    files: Vec<(PathBuf, u64, u64)>,
}

impl Bound {
    /// Sockets handed to this process: nothing to claim or remove.
    pub fn inherited(sockets: Vec<Listening>) -> Bound {
        Bound { sockets, claims: Vec::new(), files: Vec::new() }
    }

    /// Removes the unix socket files bound here (at shutdown: new clients find no server,
    /// while the connections already queued are still accepted).
    pub fn remove_files(&mut self) {
        use std::os::unix::fs::MetadataExt;
        for (path, dev, ino) in self.files.drain(..) {
            // Only our own socket file: a successor may have bound the path meanwhile.
            if std::fs::symlink_metadata(&path).is_ok_and(|m| m.dev() == dev && m.ino() == ino) {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

impl Drop for Bound {
    fn drop(&mut self) {
        self.remove_files();
    }
}

/// Binds every address of `config`: `copies` SO_REUSEPORT sockets per TCP address (port 0
/// resolved once, the others join it), one socket per unix path.
pub fn bind(config: &Config, copies: usize) -> Result<Bound, ListenError> {
    use std::os::unix::fs::MetadataExt;
    let mut bound = Bound::default();
    for bind in &config.binds {
        match bind {
            Bind::Tcp(addr) => {
                let mut addr = *addr;
                if addr.port() != 0 {
                    let claim = crate::sys::net::claim(&format!("wsgo-listen:{addr}"))
                        .map_err(|_| ListenError::Taken(bind.clone()))?;
                    if crate::sys::net::address_taken(addr) {
                        return Err(ListenError::Taken(bind.clone()));
                    }
                    bound.claims.push(claim);
                }
                for _ in 0..copies.max(1) {
                    let l = crate::sys::net::listen(addr, config.defer_accept)
                        .map_err(|source| ListenError::Bind { bind: Bind::Tcp(addr), source })?;
                    if addr.port() == 0
                        && let Ok(a) = l.local_addr()
                    {
                        addr.set_port(a.port());
                    }
                    bound.sockets.push(Listening::Tcp(l));
                }
            }
            Bind::Unix(path) => {
                let l = crate::sys::net::listen_unix(path, config.socket_mode).map_err(|source| {
                    if source.kind() == io::ErrorKind::AddrInUse {
                        ListenError::Taken(bind.clone())
                    } else {
                        ListenError::Bind { bind: bind.clone(), source }
                    }
                })?;
                if let Ok(m) = std::fs::symlink_metadata(path) {
                    bound.files.push((path.clone(), m.dev(), m.ino()));
                }
                bound.sockets.push(Listening::Unix(l));
            }
        }
    }
    Ok(bound)
}

/// Takes over listening sockets handed to this process (by the supervisor, or by systemd).
pub fn inherit(fds: &[RawFd]) -> Result<Vec<Listening>, ListenError> {
    let mut out = Vec::with_capacity(fds.len());
    for &fd in fds {
        // Not to be inherited by what the app starts.
        let _ = crate::sys::net::set_cloexec(fd);
        let kind = crate::sys::net::kind(fd).ok_or(ListenError::NotASocket(fd))?;
        // SAFETY: the descriptor was handed to this process for it to own (the supervisor's
        // `WSGO_LISTEN_FDS`, systemd's `LISTEN_FDS`) and nothing else in it uses the number.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        out.push(match kind {
            Kind::Tcp(_) => Listening::Tcp(TcpListener::from(owned)),
            Kind::Unix(_) => Listening::Unix(UnixListener::from(owned)),
        });
    }
    for l in &out {
        // The core threads wait for readiness and accept without blocking.
        match l {
            Listening::Tcp(t) => t.set_nonblocking(true),
            Listening::Unix(u) => u.set_nonblocking(true),
        }
        .map_err(|source| ListenError::Bind {
            bind: l.bind().unwrap_or(Bind::Unix(PathBuf::new())),
            source,
        })?;
    }
    Ok(out)
}

/// The sockets of each core thread: one or more for each address. A TCP address's own sockets
/// (its SO_REUSEPORT group) are dealt out in turn, so every socket of the group has a core that
/// accepts from it whatever the numbers (a process given fewer cores than the supervisor bound
/// sockets takes several on a core); a core left without one gets a copy. A unix socket is
/// copied to every core.
pub fn per_core(sockets: &[&Listening], cores: usize) -> io::Result<Vec<Vec<Listening>>> {
    let cores = cores.max(1);
    let mut out: Vec<Vec<Listening>> = (0..cores).map(|_| Vec::new()).collect();
    for (_, members) in by_address(sockets.iter().copied()) {
        for i in 0..members.len().max(cores) {
            out[i % cores].push(sockets[members[i % members.len()]].try_clone()?);
        }
    }
    Ok(out)
}

/// The sockets grouped by what they are bound to (an SO_REUSEPORT group is one address), in
/// their order: each group's address and its members' indices.
fn by_address<'a>(sockets: impl Iterator<Item = &'a Listening>) -> Vec<(Option<Bind>, Vec<usize>)> {
    let mut groups: Vec<(Option<Bind>, Vec<usize>)> = Vec::new();
    for (i, l) in sockets.enumerate() {
        let b = l.bind();
        match groups.iter_mut().find(|(g, _)| *g == b) {
            Some((_, members)) => members.push(i),
            None => groups.push((b, vec![i])),
        }
    }
    groups
}

/// `sockets` dealt out to `cores` cores in turn, each socket to one core (the other processes'
/// sockets, which a core only rescues from).
pub fn deal(sockets: &[&Listening], cores: usize) -> io::Result<Vec<Vec<Listening>>> {
    let cores = cores.max(1);
    let mut out: Vec<Vec<Listening>> = (0..cores).map(|_| Vec::new()).collect();
    for (i, l) in sockets.iter().enumerate() {
        out[i % cores].push(l.try_clone()?);
    }
    Ok(out)
}

/// Which of `sockets` each of `processes` processes owns (their indices): of each address's
/// SO_REUSEPORT group an even slice, when the group divides evenly; every socket of a group that
/// does not (a unix socket, systemd's single socket) to every process.
///
/// A process accepts from its own sockets as they become readable, and from the others only
/// what waits there too long ([`RESCUE_EVERY`](super::core_thread::RESCUE_EVERY)). The kernel
/// spreads a group's connections over its sockets by their addresses, so each process gets its
/// share whichever runs first. When every process accepted from every socket, the first one
/// woken took a whole burst (up to 64 in a row), and keep-alive kept it there: Django on
/// `--processes 2` ran at one process's speed in 5 of 12 starts.
pub fn owned_by_process(sockets: &[Listening], processes: usize) -> Vec<Vec<usize>> {
    let processes = processes.max(1);
    let mut out = vec![Vec::new(); processes];
    for (bind, members) in &by_address(sockets.iter()) {
        let tcp = matches!(bind, Some(Bind::Tcp(_)));
        if tcp && members.len() >= processes && members.len() % processes == 0 {
            let each = members.len() / processes;
            for (k, own) in out.iter_mut().enumerate() {
                own.extend_from_slice(&members[k * each..(k + 1) * each]);
            }
        } else {
            for own in &mut out {
                own.extend_from_slice(members);
            }
        }
    }
    out
}

/// What the addresses are, for the start-up line: the TCP ones as `http://ADDR` first.
pub fn describe(sockets: &[Listening]) -> String {
    let mut binds: Vec<Bind> = Vec::new();
    for b in sockets.iter().filter_map(Listening::bind) {
        if !binds.contains(&b) {
            binds.push(b);
        }
    }
    binds.sort_by_key(|b| matches!(b, Bind::Unix(_)));
    binds.iter().map(ToString::to_string).collect::<Vec<_>>().join(" and ")
}

/// The sockets systemd hands over (`LISTEN_FDS`, `LISTEN_PID`; sd_listen_fds(3)), taken out of
/// the environment so the app's processes do not see them. `None` when there are none for this
/// process.
pub fn from_systemd() -> Option<Vec<RawFd>> {
    const FIRST: RawFd = 3;
    let pid = std::env::var("LISTEN_PID").ok()?.parse::<u32>().ok()?;
    let n = std::env::var("LISTEN_FDS").ok()?.parse::<RawFd>().ok()?;
    // SAFETY: called at the start of the process, before any other thread exists, so nothing
    // reads the environment concurrently.
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    (pid == std::process::id() && n > 0).then(|| (FIRST..FIRST + n).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` sockets of one SO_REUSEPORT group on a free loopback port.
    fn group(n: usize) -> Vec<Listening> {
        let first = crate::sys::net::listen("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let addr = first.local_addr().unwrap();
        let mut out = vec![Listening::Tcp(first)];
        for _ in 1..n {
            out.push(Listening::Tcp(crate::sys::net::listen(addr, false).unwrap()));
        }
        out
    }

    fn inode(l: &Listening) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(format!("/proc/self/fd/{}", l.fd())).unwrap().ino()
    }

    #[test]
    fn each_process_owns_an_even_slice_of_each_group() {
        // (TCP sockets of one address, processes) -> how many each owns; every socket owned once.
        for (n, processes, each) in [(4, 2, 2), (2, 2, 1), (6, 3, 2), (2, 1, 2), (1, 2, 1), (3, 2, 3)] {
            let g = group(n);
            let owned = owned_by_process(&g, processes);
            assert_eq!(owned.len(), processes);
            assert!(owned.iter().all(|o| o.len() == each), "{n} sockets, {processes} processes: {owned:?}");
            let mut all: Vec<usize> = owned.concat();
            all.sort_unstable();
            all.dedup();
            assert_eq!(all, (0..n).collect::<Vec<_>>(), "{n} sockets, {processes} processes: each owned");
        }
        // Two addresses and a unix socket: a slice of each group, the unix socket to both.
        let dir = std::env::temp_dir().join(format!("wsgo-own-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let mut sockets = group(2);
        sockets.push(Listening::Unix(std::os::unix::net::UnixListener::bind(&dir).unwrap()));
        sockets.extend(group(2));
        let owned = owned_by_process(&sockets, 2);
        let _ = std::fs::remove_file(&dir);
        assert_eq!(owned, vec![vec![0, 2, 3], vec![1, 2, 4]]);
    }

    #[test]
    fn every_socket_gets_a_core_and_every_core_a_socket() {
        for (sockets, cores) in [(2, 2), (2, 1), (1, 2), (4, 2), (2, 3), (1, 1)] {
            let g = group(sockets);
            let all: Vec<u64> = g.iter().map(inode).collect();
            let shares = per_core(&g.iter().collect::<Vec<_>>(), cores).unwrap();
            assert_eq!(shares.len(), cores);
            assert!(shares.iter().all(|s| !s.is_empty()), "{sockets} sockets, {cores} cores");
            let mut served: Vec<u64> = shares.iter().flatten().map(inode).collect();
            served.sort_unstable();
            served.dedup();
            let mut want = all.clone();
            want.sort_unstable();
            assert_eq!(served, want, "{sockets} sockets, {cores} cores: each accepted from");
        }
    }
}
