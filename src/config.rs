//! The validated, immutable configuration of one server process, and the trusted-proxy ranges.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

/// Everything the server needs to know from the command line.
#[derive(Debug, Clone)]
pub struct Config {
    /// The module to import.
    pub module: String,
    /// The WSGI callable's name in that module.
    pub callable: String,
    /// `Some(args)`: the callable is a factory, called with these literal arguments (Python
    /// source, possibly empty) to make the app: `--module 'pkg.mod:create_app()'`.
    pub factory_args: Option<String>,
    /// The addresses to listen on (in order; a TCP port 0 is resolved once bound).
    pub binds: Vec<Bind>,
    /// No address was given: the default, all interfaces (worth a warning at start).
    pub default_bind: bool,
    /// Permissions of unix socket files.
    pub socket_mode: u32,
    /// Python worker threads.
    pub workers: usize,
    /// Longest wait for a worker and for in-flight requests at shutdown; `None`: no limit.
    pub request_timeout: Option<Duration>,
    /// Network threads.
    pub io_threads: usize,
    /// Peers whose forwarding headers are believed.
    pub trusted_proxies: Vec<Cidr>,
    /// `--static-map` entries, in command-line order.
    pub static_maps: Vec<StaticMap>,
    /// Seconds clients may cache static files.
    pub static_max_age: u64,
    /// Longest lifetime of a cached response in seconds; 0: no response cache.
    pub cache_max_age: u64,
    /// Byte limit of the response cache; 0: no response cache.
    pub cache_size: u64,
    /// Most open connections per process.
    pub max_connections: usize,
    /// Listeners hand over a connection once its first bytes arrived (TCP_DEFER_ACCEPT).
    pub defer_accept: bool,
    /// The most verbose diagnostics shown.
    pub log_level: crate::log::Level,
    /// Where access lines go.
    pub access_log: crate::log::Target,
    /// How they are written.
    pub access_log_format: crate::log::Format,
    /// Requests after which a process asks to be replaced; 0: never.
    pub max_requests: u64,
    /// Up to this many more, drawn at random per process (so processes do not leave together).
    pub max_requests_jitter: u64,
    /// Resident memory in bytes past which a process asks to be replaced; 0: no limit.
    pub max_rss: u64,
    /// Replace the processes when the app's source changes (development).
    pub reload: bool,
    /// Where Prometheus metrics are served.
    pub metrics: Option<SocketAddr>,
    /// Each server process runs on its own share of the CPUs.
    pub cpu_share: bool,
    /// Each core thread's listening sockets ask for the connections its CPU takes in.
    pub incoming_cpu: bool,
    /// Connections from trusted peers may start with a PROXY protocol header.
    pub proxy_protocol: bool,
    /// `--redis`: the Redis the fleet's hosts share notifications and blocks through.
    pub redis: Option<String>,
    /// `--redis-channel`.
    pub redis_channel: String,
    /// Server processes the supervisor runs.
    pub processes: usize,
    /// This process's number (1..=processes); 0: this is the supervisor.
    pub process: usize,
}

impl Config {
    /// The app as `--module` names it: `pkg.mod:callable`, with a factory's call.
    pub fn module_spec(&self) -> String {
        match &self.factory_args {
            Some(args) => format!("{}:{}({args})", self.module, self.callable),
            None => format!("{}:{}", self.module, self.callable),
        }
    }
}

/// An address to serve on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bind {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A unix socket's path.
    Unix(std::path::PathBuf),
}

impl std::fmt::Display for Bind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bind::Tcp(a) => write!(f, "http://{a}"),
            Bind::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// URL prefix -> folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticMap {
    /// Without a trailing slash: `/` is stored empty.
    pub prefix: Vec<u8>,
    /// Canonical (absolute, links resolved).
    pub dir: std::path::PathBuf,
}

/// An address range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network's address.
    pub addr: IpAddr,
    /// The prefix length in bits.
    pub prefix: u8,
}

impl Cidr {
    /// Whether `ip` lies in this range (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 addresses as IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// A `--trusted-proxy` value that is not an address or a range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CIDR {0:?}: expected ADDRESS or ADDRESS/PREFIX")]
pub struct CidrError(pub String);

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let bad = || CidrError(s.to_string());
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr = canonical(addr.parse::<IpAddr>().map_err(|_| bad())?);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(Cidr { addr, prefix })
    }
}

/// Loopback and private ranges: the peers the original trusted.
pub fn default_trusted_proxies() -> Vec<Cidr> {
    ["127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"]
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_membership() {
        let table: &[(&str, &str, bool)] = &[
            ("127.0.0.0/8", "127.1.2.3", true),
            ("127.0.0.0/8", "128.0.0.1", false),
            ("10.0.0.0/8", "::ffff:10.1.1.1", true),
            ("172.16.0.0/12", "172.31.255.255", true),
            ("172.16.0.0/12", "172.32.0.0", false),
            ("fc00::/7", "fd12::1", true),
            ("fc00::/7", "fe80::1", false),
            ("::1", "::1", true),
            ("0.0.0.0/0", "8.8.8.8", true),
            ("1.2.3.4", "1.2.3.5", false),
            ("10.0.0.0/8", "fd00::1", false),
        ];
        for (net, ip, want) in table {
            let net: Cidr = net.parse().unwrap();
            assert_eq!(net.contains(ip.parse().unwrap()), *want, "{net:?} {ip}");
        }
        for bad in ["", "1.2.3.4/33", "::/129", "abc", "1.2.3.4/x"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }
}
