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
/// threads in each of --processes server processes. The embedded interpreter uses the active
/// virtualenv (VIRTUAL_ENV, else a venv wsgo is installed in or first on PATH); the start-up
/// line and --version say which.
#[derive(Debug, Parser)]
#[command(
    name = "wsgo",
    disable_version_flag = true,
    about,
    long_about = None,
    max_term_width = 100,
    args_override_self = true,
    after_help = AFTER_HELP,
)]
pub struct Args {
    /// WSGI app to serve: `pkg.mod` (callable `application`), `pkg.mod:callable`, or a factory
    /// called once at start, `pkg.mod:create_app()` (literal arguments allowed).
    #[arg(long, default_value = "wsgi_app", value_name = "MODULE", env = "WSGO_MODULE")]
    pub module: String,

    /// Address to listen on: `host:port`, `:port` (all interfaces, IPv4 and IPv6: the default
    /// is reachable from other hosts; `127.0.0.1:8000` serves this host only), `[::1]:port` or
    /// `unix:PATH`; repeatable. An address another process serves is refused at start.
    #[arg(long = "http-socket", default_value = ":8000", value_name = "ADDR", action = clap::ArgAction::Append,
          env = "WSGO_HTTP_SOCKET", value_delimiter = ',')]
    pub http_socket: Vec<String>,

    /// Permissions of a unix socket file, in octal.
    #[arg(long = "socket-mode", default_value = "660", value_name = "OCTAL", value_parser = parse_mode,
          env = "WSGO_SOCKET_MODE")]
    pub socket_mode: u32,

    /// Python worker threads per process.
    #[arg(long, default_value_t = 16, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4096),
          env = "WSGO_WORKERS")]
    pub workers: u32,

    /// Seconds a request may take: waiting for a worker past it gets a 504, running past it
    /// raises wsgo.RequestTimeoutException in the app (a 504 if nothing was sent yet); also
    /// the longest wait for in-flight requests at shutdown. 0 disables the limit.
    #[arg(long = "request-timeout", default_value_t = 60, value_name = "SECONDS", value_parser = seconds(),
          env = "WSGO_REQUEST_TIMEOUT")]
    pub request_timeout: u64,

    /// Network threads (one runtime each, pinned to a CPU). Default: the CPUs this process may
    /// run on.
    #[arg(long = "io-threads", value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024),
          env = "WSGO_IO_THREADS")]
    pub io_threads: Option<u32>,

    /// A peer whose X-Forwarded-For and X-Forwarded-Proto are believed (CIDR or address;
    /// repeatable). Default: loopback and private ranges, as the original trusts; a unix
    /// socket's peers are always trusted.
    #[arg(long = "trusted-proxy", value_name = "CIDR", value_parser = parse_cidr, env = "WSGO_TRUSTED_PROXY",
          value_delimiter = ',')]
    pub trusted_proxy: Vec<Cidr>,

    /// Serve files under URL prefix PATH from folder DIR (repeatable, tried in order). The prefix
    /// matches whole path segments; files are served for GET and HEAD, and a path with no file
    /// behind it goes on to the cache and the app.
    #[arg(long = "static-map", value_name = "PATH=DIR", value_parser = parse_static_map, env = "WSGO_STATIC_MAP")]
    pub static_map: Vec<StaticMap>,

    /// Seconds clients may cache static files (Cache-Control and Expires). 0 sends
    /// `Cache-Control: no-cache`.
    #[arg(long = "static-max-age", default_value_t = 86400, value_name = "SECONDS", value_parser = seconds(),
          env = "WSGO_STATIC_MAX_AGE")]
    pub static_max_age: u64,

    /// Upper bound in seconds on how long a response is kept in the response cache; 0 turns the
    /// cache off. Responses opt in with `Cache-Control: max-age=N`.
    #[arg(long = "max-age", default_value_t = 0, value_name = "SECONDS", value_parser = seconds(), env = "WSGO_MAX_AGE")]
    pub max_age: u64,

    /// Size limit of the response cache in bytes (each entry counts its body, head and 1000
    /// bytes of bookkeeping). 0 turns the cache off.
    #[arg(long = "cache-size", default_value_t = 64 << 20, value_name = "BYTES", env = "WSGO_CACHE_SIZE")]
    pub cache_size: u64,

    /// Most connections one process keeps open; beyond it new connections wait in the kernel's
    /// backlog until one closes (and the open-file limit is raised to its hard maximum at start).
    #[arg(long = "max-connections", default_value_t = 10_000, value_name = "N", value_parser = clap::value_parser!(u32).range(1..),
          env = "WSGO_MAX_CONNECTIONS")]
    pub max_connections: u32,

    /// Accept connections as soon as the handshake completes. By default a connection is
    /// accepted when its first bytes arrive (TCP_DEFER_ACCEPT, as uWSGI does): one wake-up less
    /// per connection, and a client that connects and sends nothing costs no descriptor until
    /// the kernel hands it over after about a second (the 2 s head timeout runs from then).
    #[arg(long = "no-defer-accept", env = "WSGO_NO_DEFER_ACCEPT")]
    pub no_defer_accept: bool,

    /// Diagnostics on stderr up to this level: `error` (faults of the server), `warn` (what an
    /// operator should look at: stuck workers, app errors), `info` (start, signals, shutdown),
    /// `debug` (what clients do: malformed requests, disconnects, missed deadlines).
    #[arg(long = "log-level", default_value = "info", value_name = "LEVEL", env = "WSGO_LOG_LEVEL")]
    pub log_level: crate::log::Level,

    /// Where the access log goes: `-` (stdout), a file (appended to, reopened on SIGHUP for
    /// logrotate) or `off`. Timestamps are UTC.
    #[arg(long = "access-log", default_value = "-", value_name = "off|-|PATH", env = "WSGO_ACCESS_LOG")]
    pub access_log: crate::log::Target,

    /// Access-log lines in Combined Log Format (plus the duration) or as JSON objects.
    #[arg(
        long = "access-log-format",
        default_value = "combined",
        value_name = "FORMAT",
        env = "WSGO_ACCESS_LOG_FORMAT"
    )]
    pub access_log_format: crate::log::Format,

    /// Replace a process after it has served this many requests (plus up to
    /// --max-requests-jitter): a new one serves before the old one drains. 0: never.
    #[arg(long = "max-requests", default_value_t = 0, value_name = "N", env = "WSGO_MAX_REQUESTS")]
    pub max_requests: u64,

    /// Up to this many requests more, drawn per process, so processes are not replaced together.
    #[arg(
        long = "max-requests-jitter",
        default_value_t = 0,
        value_name = "N",
        env = "WSGO_MAX_REQUESTS_JITTER"
    )]
    pub max_requests_jitter: u64,

    /// Replace a process whose resident memory passes this many MiB (checked every 100 ms).
    /// 0: no limit.
    #[arg(long = "max-rss", default_value_t = 0, value_name = "MB", env = "WSGO_MAX_RSS")]
    pub max_rss: u64,

    /// Development: replace the processes when a `.py` file of the app changes (its package and
    /// the working directory are watched). A file that does not load keeps the old code serving.
    #[arg(long, env = "WSGO_RELOAD")]
    pub reload: bool,

    /// Read a PROXY protocol header (v1 or v2, as HAProxy and cloud TCP load balancers send)
    /// at the start of connections from --trusted-proxy peers: its client address becomes the
    /// connection's. From other peers such a header is refused (400).
    #[arg(long = "proxy-protocol", env = "WSGO_PROXY_PROTOCOL")]
    pub proxy_protocol: bool,

    /// Share parking notifications and blocks with every wsgo host that names the same Redis
    /// (`redis://HOST[:PORT][/DB]`) and --redis-channel, through pub/sub. Off by default.
    #[arg(long, value_name = "URL", value_parser = parse_redis, env = "WSGO_REDIS")]
    pub redis: Option<String>,

    /// The Redis pub/sub channel of --redis: hosts naming the same one are one fleet.
    #[arg(long = "redis-channel", value_name = "NAME", default_value = "wsgo", env = "WSGO_REDIS_CHANNEL")]
    pub redis_channel: String,

    /// Serve Prometheus metrics at `http://ADDR/metrics` (every process's, labelled `process`).
    #[arg(long, value_name = "ADDR", value_parser = parse_bind, env = "WSGO_METRICS")]
    pub metrics: Option<SocketAddr>,

    /// Server processes, run by a supervisor that restarts them and replaces them one at a time
    /// on SIGHUP. 0: start nothing.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=256),
          env = "WSGO_PROCESSES")]
    pub processes: u32,

    /// With several processes, restrict each to its own share of the CPUs (its core threads
    /// pinned there, its Python threads on the same CPUs, `--io-threads` defaulting to the
    /// share's size), so a request never crosses CPUs between its core thread and the app (with
    /// `--incoming-cpu`, nor between the network and its core thread): less CPU
    /// per request (JSON: -10%) on a host the server has to itself, but a longer tail when other
    /// busy processes share those CPUs (a process cannot move off a busy one).
    #[arg(long = "cpu-share", env = "WSGO_CPU_SHARE")]
    pub cpu_share: bool,

    /// Each core thread asks the kernel for the connections whose packets arrive on its own CPU
    /// (SO_INCOMING_CPU on its listening sockets; Linux 6.2 or later): a connection is then
    /// served where the kernel took it in. For clients on the same host, and for network cards
    /// that spread their receive queues over the CPUs; with one receive queue, every connection
    /// would go to the CPU that takes its interrupts.
    #[arg(long = "incoming-cpu", env = "WSGO_INCOMING_CPU")]
    pub incoming_cpu: bool,

    /// Internal: run as server process N without a supervisor (the supervisor starts its
    /// processes so; `--process 1` alone runs one unsupervised process, as the original).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub process: u32,

    /// Print the version and the Python interpreter that would run the app, then exit.
    #[arg(short = 'V', long)]
    pub version: bool,

    /// Arguments without a flag are not taken: `wsgo app:app` is `wsgo --module app:app`.
    #[arg(hide = true, value_name = "ARG")]
    pub stray: Vec<String>,

    /// `--http-socket` was neither given nor set in the environment.
    #[arg(skip)]
    pub bind_defaulted: bool,
}

/// The end of `--help`: signals, output, environment.
const AFTER_HELP: &str = "\
Every flag can also be set as WSGO_<FLAG> (WSGO_HTTP_SOCKET, WSGO_WORKERS, ...); the command
line wins. With LISTEN_FDS/LISTEN_PID set (systemd socket activation), the sockets handed over
are served instead of --http-socket.

Signals (to the supervisor): SIGTERM/SIGINT drain and stop; SIGHUP replaces the processes one
at a time (each new one serves before the old one drains; a log file is reopened); SIGUSR1
prints every thread's stack, SIGUSR2 the counters, on stderr.

Output: the access log on stdout (--access-log), diagnostics on stderr (--log-level).
Exit status: 0 after a drain, 1 on a server error, 2 on a bad flag or VIRTUAL_ENV, 27 when the
app cannot be loaded. README.md has the whole story.";

/// `--version`: ours, and the Python we would run.
pub fn version() -> String {
    let python = match crate::interpreter::choose() {
        Ok(choice) => choice.to_string(),
        Err(e) => format!("error: {e}"),
    };
    format!("wsgo {}\n{python}\n", env!("CARGO_PKG_VERSION"))
}

/// Rewrites `-name` and `-name=value` into their `--` forms, as Go's flag package accepts both.
pub fn normalise_args<I: IntoIterator<Item = OsString>>(args: I) -> Vec<OsString> {
    let command = <Args as clap::CommandFactory>::command();
    let long_flags: Vec<&str> =
        command.get_arguments().filter_map(clap::Arg::get_long).chain(["help", "version"]).collect();
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
            long_flags.contains(&name).then(|| format!("-{s}"))
        });
        out.push(rewritten.map(OsString::from).unwrap_or(arg));
    }
    out
}

/// Parses the process's command line; prints the error and exits 2 on a bad one.
pub fn parse() -> Config {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Args::command().get_matches_from(normalise_args(std::env::args_os()));
    let mut args = Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    args.bind_defaulted =
        matches.value_source("http_socket") == Some(clap::parser::ValueSource::DefaultValue);
    if args.version {
        print!("{}", version());
        std::process::exit(0);
    }
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
    #[error("invalid --module {0:?}: expected `pkg.mod`, `pkg.mod:callable` or `pkg.mod:factory(args)`")]
    Module(String),
    /// An argument without a flag (`wsgo app:app`).
    #[error("unexpected argument {0:?}: flags start with --; to serve it, give --module {0}")]
    Stray(String),
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
        if let Some(first) = self.stray.first() {
            return Err(FlagError::Stray(first.clone()));
        }
        let (module, callable, factory_args) = parse_module(&self.module)?;
        let binds = self.http_socket.iter().map(|s| parse_socket(s)).collect::<Result<Vec<_>, _>>()?;
        let io_threads = match self.io_threads {
            Some(n) => n as usize,
            None => core_affinity::get_core_ids().map_or(1, |c| c.len().max(1)),
        };
        let trusted_proxies =
            if self.trusted_proxy.is_empty() { default_trusted_proxies() } else { self.trusted_proxy };
        Ok(Config {
            module,
            callable,
            factory_args,
            binds,
            default_bind: self.bind_defaulted,
            socket_mode: self.socket_mode,
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
            access_log: self.access_log,
            access_log_format: self.access_log_format,
            max_requests: self.max_requests,
            max_requests_jitter: self.max_requests_jitter,
            max_rss: self.max_rss.saturating_mul(1 << 20),
            reload: self.reload,
            metrics: self.metrics,
            cpu_share: self.processes > 1 && self.cpu_share,
            incoming_cpu: self.incoming_cpu,
            proxy_protocol: self.proxy_protocol,
            redis: self.redis,
            redis_channel: self.redis_channel,
            processes: self.processes as usize,
            process: self.process as usize,
        })
    }
}

/// A `--redis` URL the client library accepts.
fn parse_redis(s: &str) -> Result<String, String> {
    redis::Client::open(s)
        .map(|_| s.to_string())
        .map_err(|e| format!("not a Redis URL (redis://HOST[:PORT][/DB] or redis+unix:///PATH): {e}"))
}

/// Splits `--module` into the module, the callable, and a factory's arguments (the source text
/// between the parentheses; checked as Python literals when the app is loaded).
pub fn parse_module(given: &str) -> Result<(String, String, Option<String>), FlagError> {
    let bad = || FlagError::Module(given.to_string());
    let (module, rest) = given.split_once(':').unwrap_or((given, "application"));
    let (callable, args) = match rest.split_once('(') {
        Some((name, args)) => (name, Some(args.strip_suffix(')').ok_or_else(bad)?.trim().to_string())),
        None => (rest, None),
    };
    let valid_name = |s: &str| {
        !s.is_empty()
            && s.split('.').all(|p| !p.is_empty() && p.chars().all(|c| c.is_alphanumeric() || c == '_'))
    };
    if !valid_name(module) || !valid_name(callable) {
        return Err(bad());
    }
    Ok((module.to_string(), callable.to_string(), args))
}

/// Longest duration a flag may give, in seconds (a year): every duration reaches time arithmetic,
/// which must not overflow.
pub const MAX_SECONDS: u64 = 365 * 24 * 3600;

fn seconds() -> clap::builder::RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(0..=MAX_SECONDS)
}

/// Parses an `--http-socket` value: `unix:PATH` or a TCP address ([`parse_bind`]).
pub fn parse_socket(s: &str) -> Result<crate::config::Bind, FlagError> {
    match s.strip_prefix("unix:") {
        Some("") => Err(FlagError::Bind { given: s.to_string(), why: "no path after `unix:`".into() }),
        Some(path) => Ok(crate::config::Bind::Unix(std::path::PathBuf::from(path))),
        None => parse_bind(s).map(crate::config::Bind::Tcp),
    }
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("invalid --socket-mode {s:?}: expected octal permissions such as 660"))
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
        assert_eq!(c.binds, [crate::config::Bind::Tcp("[::]:8000".parse().unwrap())]);
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
        // A stray argument: what the user probably meant.
        let err = Args::parse_from(["wsgo", "app:app"]).into_config().unwrap_err().to_string();
        assert!(err.contains("give --module app:app"), "{err}");
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
