//! The command line: wsgo's flag names and defaults (README.md, "Flags"), validated into a [`Config`].
//!
//! The clap struct is the one source of the flags: `--help` and the README table come from its doc
//! comments. The original parsed flags with Go's `flag` package, which also accepts `-name`; we
//! rewrite single-dash long flags before clap sees them so existing command lines keep working.

use std::ffi::OsString;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use clap::Parser;

use crate::config::{Cidr, Config, StaticMap, default_trusted_proxies};

/// A fast, dependable Python WSGI server: a drop-in replacement for wsgo.
///
/// Network I/O runs on one io_uring runtime per core (the epoll driver when the kernel refuses
/// io_uring, or with MONOIO_FORCE_LEGACY_DRIVER=1); the application runs on a pool of Python
/// threads. The embedded interpreter uses the active virtualenv (VIRTUAL_ENV).
#[derive(Debug, Parser)]
#[command(name = "wsgo", version, about, long_about = None, max_term_width = 100, args_override_self = true)]
pub struct Args {
    /// WSGI module to serve: `pkg.mod` (callable `application`) or `pkg.mod:callable`.
    #[arg(long, default_value = "wsgi_app", value_name = "MODULE")]
    pub module: String,

    /// Address to listen on: `host:port`, `:port` (all interfaces, IPv4 and IPv6) or `[::1]:port`.
    #[arg(long = "http-socket", default_value = ":8000", value_name = "ADDR")]
    pub http_socket: String,

    /// Python worker threads per process.
    #[arg(long, default_value_t = 16, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub workers: u32,

    /// Seconds a request may wait for a worker, and the longest wait for in-flight requests at
    /// shutdown. 0 disables the limit.
    #[arg(long = "request-timeout", default_value_t = 60, value_name = "SECONDS", value_parser = seconds())]
    pub request_timeout: u64,

    /// Network threads (one runtime each, pinned to a CPU). Default: the CPUs this process may
    /// run on.
    #[arg(long = "io-threads", value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub io_threads: Option<u32>,

    /// A peer whose X-Forwarded-For and X-Forwarded-Proto are believed (CIDR or address;
    /// repeatable). Default: loopback and private ranges, as the original trusts.
    #[arg(long = "trusted-proxy", value_name = "CIDR", value_parser = parse_cidr)]
    pub trusted_proxy: Vec<Cidr>,

    /// Serve files under URL prefix PATH from folder DIR (repeatable, tried in order). The prefix
    /// matches whole path segments; files are served for GET and HEAD, and a path with no file
    /// behind it goes on to the cache and the app.
    #[arg(long = "static-map", value_name = "PATH=DIR", value_parser = parse_static_map)]
    pub static_map: Vec<StaticMap>,

    /// Seconds clients may cache static files (Cache-Control and Expires). 0 sends
    /// `Cache-Control: no-cache`.
    #[arg(long = "static-max-age", default_value_t = 86400, value_name = "SECONDS", value_parser = seconds())]
    pub static_max_age: u64,

    /// Upper bound in seconds on how long a response is kept in the response cache; 0 turns the
    /// cache off. Responses opt in with `Cache-Control: max-age=N`.
    #[arg(long = "max-age", default_value_t = 0, value_name = "SECONDS", value_parser = seconds())]
    pub max_age: u64,

    /// Size limit of the response cache in bytes (each entry counts its body, head and 1000
    /// bytes of bookkeeping). 0 turns the cache off.
    #[arg(long = "cache-size", default_value_t = 64 << 20, value_name = "BYTES")]
    pub cache_size: u64,

    /// Most connections one process keeps open; beyond it new connections wait in the kernel's
    /// backlog until one closes (and the open-file limit is raised to its hard maximum at start).
    #[arg(long = "max-connections", default_value_t = 10_000, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Accept connections as soon as the handshake completes. By default a connection is
    /// accepted when its first bytes arrive (TCP_DEFER_ACCEPT, as uWSGI does): one wake-up less
    /// per connection, and a client that connects and sends nothing costs no descriptor until
    /// the kernel hands it over after about a second (the 2 s head timeout runs from then).
    #[arg(long = "no-defer-accept")]
    pub no_defer_accept: bool,

    /// Diagnostics on stderr up to this level: `error` (faults of the server), `warn` (what an
    /// operator should look at: stuck workers, app errors), `info` (start, signals, shutdown),
    /// `debug` (what clients do: malformed requests, disconnects, missed deadlines).
    #[arg(long = "log-level", default_value = "info", value_name = "LEVEL")]
    pub log_level: crate::log::Level,

    /// Server processes, run by a supervisor that restarts them and replaces them one at a time
    /// on SIGHUP. 0: start nothing.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=256))]
    pub processes: u32,

    /// Internal: run as server process N without a supervisor (the supervisor starts its
    /// processes so; `--process 1` alone runs one unsupervised process, as the original).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub process: u32,
}

/// The long flags, for rewriting Go-style `-name` into `--name`.
const LONG_FLAGS: &[&str] = &[
    "module",
    "http-socket",
    "workers",
    "request-timeout",
    "io-threads",
    "trusted-proxy",
    "static-map",
    "static-max-age",
    "max-age",
    "cache-size",
    "max-connections",
    "no-defer-accept",
    "processes",
    "process",
    "help",
    "version",
];

/// Rewrites `-name` and `-name=value` into their `--` forms, as Go's flag package accepts both.
pub fn normalise_args<I: IntoIterator<Item = OsString>>(args: I) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut flags_done = false;
    for (i, arg) in args.into_iter().enumerate() {
        if i == 0 || flags_done {
            out.push(arg);
            continue;
        }
        if arg == "--" {
            flags_done = true;
            out.push(arg);
            continue;
        }
        let rewritten = arg.to_str().and_then(|s| {
            let rest = s.strip_prefix('-')?;
            if rest.starts_with('-') {
                return None;
            }
            let name = rest.split('=').next()?;
            LONG_FLAGS.contains(&name).then(|| format!("-{s}"))
        });
        out.push(rewritten.map(OsString::from).unwrap_or(arg));
    }
    out
}

/// Parses the process's command line; prints the error and exits 2 on a bad one.
pub fn parse() -> Config {
    let args = Args::parse_from(normalise_args(std::env::args_os()));
    match args.into_config() {
        Ok(c) => c,
        Err(e) => {
            let mut cmd = <Args as clap::CommandFactory>::command();
            cmd.error(clap::error::ErrorKind::ValueValidation, e).exit()
        }
    }
}

/// A flag whose value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlagError {
    /// `--module` is not `pkg.mod` or `pkg.mod:callable`.
    #[error("invalid --module {0:?}: expected `pkg.mod` or `pkg.mod:callable`")]
    Module(String),
    /// `--http-socket` is not an address to listen on.
    #[error("invalid --http-socket {given:?}: {why}")]
    Bind {
        /// What was given.
        given: String,
        /// What is wrong with it.
        why: String,
    },
    /// `--static-map` is not `PATH=DIR` with an existing folder.
    #[error("invalid value {given:?}: {why} (Usage: --static-map /path=./localpath)")]
    StaticMap {
        /// What was given.
        given: String,
        /// What is wrong with it.
        why: String,
    },
}

impl Args {
    /// Validates the flags into the immutable configuration.
    pub fn into_config(self) -> Result<Config, FlagError> {
        let (module, callable) = match self.module.split_once(':') {
            Some((m, c)) => (m.to_string(), c.to_string()),
            None => (self.module.clone(), "application".to_string()),
        };
        let valid_name = |s: &str| {
            !s.is_empty()
                && s.split('.').all(|p| !p.is_empty() && p.chars().all(|c| c.is_alphanumeric() || c == '_'))
        };
        if !valid_name(&module) || !valid_name(&callable) {
            return Err(FlagError::Module(self.module));
        }
        let bind = parse_bind(&self.http_socket)?;
        let io_threads = match self.io_threads {
            Some(n) => n as usize,
            None => core_affinity::get_core_ids().map_or(1, |c| c.len().max(1)),
        };
        let trusted_proxies =
            if self.trusted_proxy.is_empty() { default_trusted_proxies() } else { self.trusted_proxy };
        Ok(Config {
            module,
            callable,
            bind,
            workers: self.workers as usize,
            request_timeout: (self.request_timeout > 0).then(|| Duration::from_secs(self.request_timeout)),
            io_threads,
            trusted_proxies,
            static_maps: self.static_map,
            static_max_age: self.static_max_age,
            cache_max_age: self.max_age,
            cache_size: if self.max_age == 0 { 0 } else { self.cache_size },
            max_connections: self.max_connections as usize,
            defer_accept: !self.no_defer_accept,
            log_level: self.log_level,
            processes: self.processes as usize,
            process: self.process as usize,
        })
    }
}

/// Longest duration a flag may give, in seconds (a year): every duration reaches time arithmetic,
/// which must not overflow.
pub const MAX_SECONDS: u64 = 365 * 24 * 3600;

fn seconds() -> clap::builder::RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(0..=MAX_SECONDS)
}

/// Parses a Go-style listen address: `host:port`, `:port`, `[v6]:port`.
pub fn parse_bind(s: &str) -> Result<SocketAddr, FlagError> {
    let bad =
        || FlagError::Bind { given: s.to_string(), why: "expected host:port, :port or [::1]:port".into() };
    if let Some(port) = s.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| bad())?;
        return Ok(SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)));
    }
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || host.contains(':') {
        return Err(bad());
    }
    (host, port)
        .to_socket_addrs()
        .map_err(|e| FlagError::Bind { given: s.to_string(), why: e.to_string() })?
        .next()
        .ok_or_else(bad)
}

fn parse_cidr(s: &str) -> Result<Cidr, crate::config::CidrError> {
    s.parse()
}

/// Parses `PATH=DIR`; the folder must exist. The prefix is kept without a trailing slash, so `/`
/// becomes the empty prefix that every path starts with.
pub fn parse_static_map(s: &str) -> Result<StaticMap, FlagError> {
    let bad = |why: String| FlagError::StaticMap { given: s.to_string(), why };
    let (prefix, dir) = s.split_once('=').ok_or_else(|| bad("no `=`".into()))?;
    if !prefix.starts_with('/') || dir.is_empty() {
        return Err(bad("the path must start with /".into()));
    }
    let dir = std::fs::canonicalize(dir).map_err(|e| bad(format!("folder {dir:?}: {e}")))?;
    if !dir.is_dir() {
        return Err(bad(format!("{dir:?} is not a folder")));
    }
    Ok(StaticMap { prefix: prefix.trim_end_matches('/').as_bytes().to_vec(), dir })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn rewrites_single_dash_long_flags() {
        let got = normalise_args(os(&[
            "wsgo",
            "-workers",
            "8",
            "-module=app:app",
            "-x",
            "--io-threads",
            "2",
            "-h",
        ]));
        assert_eq!(got, os(&["wsgo", "--workers", "8", "--module=app:app", "-x", "--io-threads", "2", "-h"]));
    }

    #[test]
    fn binds() {
        let table: &[(&str, Option<&str>)] = &[
            (":8000", Some("[::]:8000")),
            ("127.0.0.1:9", Some("127.0.0.1:9")),
            ("0.0.0.0:8000", Some("0.0.0.0:8000")),
            ("[::1]:8080", Some("[::1]:8080")),
            ("localhost:80", Some("127.0.0.1:80")),
            ("99999", None),
            (":99999", None),
            ("127.0.0.1", None),
            (":", None),
            ("::1:80", None),
        ];
        for (s, want) in table {
            let got = parse_bind(s).ok().map(|a| a.to_string());
            match (want, &got) {
                (Some(w), Some(g)) if *w == "127.0.0.1:80" => assert!(g == w || g == "[::1]:80", "{s}: {g}"),
                _ => assert_eq!(got.as_deref(), *want, "{s}"),
            }
        }
    }

    #[test]
    fn module_and_defaults() {
        let c = Args::parse_from(["wsgo"]).into_config().unwrap();
        assert_eq!((c.module.as_str(), c.callable.as_str()), ("wsgi_app", "application"));
        assert_eq!(c.workers, 16);
        assert_eq!(c.request_timeout, Some(Duration::from_secs(60)));
        assert_eq!(c.bind.port(), 8000);
        let c = Args::parse_from(["wsgo", "--module", "pkg.app:create", "--request-timeout", "0"])
            .into_config()
            .unwrap();
        assert_eq!((c.module.as_str(), c.callable.as_str()), ("pkg.app", "create"));
        assert_eq!(c.request_timeout, None);
        for bad in ["a:", ":b", "a..b", "a b", "a:b:c"] {
            assert!(Args::parse_from(["wsgo", "--module", bad]).into_config().is_err(), "{bad}");
        }
        assert!(Args::try_parse_from(["wsgo", "--workers", "0"]).is_err());
        assert!(Args::try_parse_from(["wsgo", "--workers", "abc"]).is_err());
        assert!(Args::try_parse_from(["wsgo", "--bogus"]).is_err());
        assert!(Args::try_parse_from(["wsgo", "stray"]).is_err());
        // As with Go's flag package, a repeated flag takes its last value...
        let c = Args::parse_from(["wsgo", "--workers", "4", "--workers", "1"]).into_config().unwrap();
        assert_eq!(c.workers, 1);
        // ...except the repeatable ones, which collect.
        let c = Args::parse_from(["wsgo", "--trusted-proxy", "10.0.0.1", "--trusted-proxy", "10.0.0.2"])
            .into_config()
            .unwrap();
        assert_eq!(c.trusted_proxies.len(), 2);
    }

    #[test]
    fn static_maps_and_cache_flags() {
        let tmp = std::env::temp_dir();
        let t = tmp.to_str().unwrap();
        let c = Args::parse_from([
            "wsgo",
            "--static-map",
            &format!("/static/={t}"),
            "--static-map",
            &format!("/={t}"),
        ])
        .into_config()
        .unwrap();
        let prefixes: Vec<&[u8]> = c.static_maps.iter().map(|m| m.prefix.as_slice()).collect();
        assert_eq!(prefixes, [b"/static".as_slice(), b""]);
        assert_eq!(c.static_maps[0].dir, std::fs::canonicalize(&tmp).unwrap());
        assert_eq!((c.static_max_age, c.cache_max_age, c.cache_size), (86400, 0, 0));
        for bad in ["/static", "static=/tmp", "/x=", "/x=/nonexistent-wsgo-dir"] {
            let err = Args::try_parse_from(["wsgo", "--static-map", bad]).unwrap_err().to_string();
            assert!(err.contains("invalid value"), "{bad}: {err}");
        }
        let err = Args::try_parse_from(["wsgo", "--static-map", "/static"]).unwrap_err().to_string();
        assert!(err.contains("Usage: --static-map /path=./localpath"), "{err}");
        let c = Args::parse_from(["wsgo", "--max-age", "60"]).into_config().unwrap();
        assert_eq!((c.cache_max_age, c.cache_size), (60, 64 << 20));
    }
}
