//! Starting the real `wsgo` binary on a free loopback port, and a small raw HTTP/1.1 client.
//!
//! The server is started with `--http-socket 127.0.0.1:0`; it reports the port it bound on
//! stderr, which we poll for with a deadline. Servers are stopped by their process id.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub fn apps_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("apps")
}

fn log_path(kind: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    std::env::temp_dir().join(format!("wsgo-test-{}-{n}.{kind}", std::process::id()))
}

pub struct Server {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

/// The binary under test: this build's, or `WSGO_TEST_BIN` (to show that a test fails against
/// an older build).
pub fn binary() -> PathBuf {
    std::env::var_os("WSGO_TEST_BIN").map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_wsgo")), PathBuf::from)
}

/// Starts `wsgo` in `tests/apps` with `args`; does not wait for readiness.
pub fn spawn(args: &[&str]) -> (Child, PathBuf, PathBuf) {
    spawn_with_env(args, &[])
}

/// [`spawn`] with variables added to the environment.
pub fn spawn_with_env(args: &[&str], env: &[(&str, &str)]) -> (Child, PathBuf, PathBuf) {
    let stdout = log_path("out");
    let stderr = log_path("err");
    let child = Command::new(binary())
        .args(args)
        .envs(env.iter().copied())
        .current_dir(apps_dir())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr).expect("stderr file"))
        .spawn()
        .expect("start wsgo");
    (child, stdout, stderr)
}

impl Server {
    /// The /proc folders of the server's processes (the supervisor and its children).
    fn processes(&self) -> Vec<PathBuf> {
        let root = self.pid();
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            let ppid = stat.rsplit(')').next().and_then(|r| r.split_whitespace().nth(1)?.parse::<u32>().ok());
            if pid == root || ppid == Some(root) {
                found.push(entry.path());
            }
        }
        found
    }

    /// Resident memory of the server's processes, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let kib = |dir: &PathBuf| {
            let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?.trim().parse().ok())
        };
        self.processes().iter().map(|d| kib(d).unwrap_or(0)).sum()
    }

    /// Minor page faults of the server's processes so far (every thread): memory they touched
    /// afresh.
    pub fn minor_faults(&self) -> u64 {
        let faults = |dir: &PathBuf| {
            let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
            stat.rsplit(')').next()?.split_whitespace().nth(7)?.parse::<u64>().ok()
        };
        self.processes().iter().map(|d| faults(d).unwrap_or(0)).sum()
    }

    /// Starts the test app with extra flags and waits until it serves.
    pub fn start(extra: &[&str]) -> Server {
        Server::start_with_env(extra, &[])
    }

    /// [`Server::start`] with variables added to the server's environment.
    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut args = vec!["--module", "testapp", "--http-socket", "127.0.0.1:0", "--workers", "4"];
        args.extend_from_slice(extra);
        let (mut child, stdout, stderr) = spawn_with_env(&args, env);
        let deadline = Instant::now() + Duration::from_secs(20);
        let addr = loop {
            let text = std::fs::read_to_string(&stderr).unwrap_or_default();
            if let Some(addr) = text
                .lines()
                .find_map(|l| l.split(" on http://").nth(1))
                .and_then(|rest| rest.split(' ').next())
                .and_then(|a| a.parse().ok())
            {
                break addr;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("wsgo exited early ({status}): {text}");
            }
            assert!(Instant::now() < deadline, "wsgo did not start: {text}");
            std::thread::sleep(Duration::from_millis(20));
        };
        // The line is printed once everything runs; a connection confirms the listener accepts.
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "wsgo does not accept on {addr}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Server { child: Some(child), addr, stdout, stderr }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn stdout_text(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Sends a signal to the server by process id.
    pub fn signal(&self, sig: i32) {
        let pid = self.pid() as i32;
        // SAFETY: kill(2) on the pid of a child we started and have not reaped yet.
        unsafe {
            libc::kill(pid, sig);
        }
    }

    /// SIGTERM, then wait (with a deadline) for the exit.
    pub fn stop(mut self) -> ExitStatus {
        self.signal(15);
        let mut child = self.child.take().expect("running");
        wait_with_deadline(&mut child, Duration::from_secs(20))
    }
}

pub fn wait_with_deadline(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process {} did not exit in {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.stdout);
        let _ = std::fs::remove_file(&self.stderr);
    }
}

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The body ended with a proper terminator / full length.
    pub complete: bool,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads one response from `r`; `head_only` for responses to HEAD.
pub fn read_response<R: BufRead>(r: &mut R, head_only: bool) -> Option<Response> {
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if !line.trim().is_empty() {
            break;
        }
    }
    let mut parts = line.trim_end().splitn(3, ' ');
    assert_eq!(parts.next(), Some("HTTP/1.1"), "status line {line:?}");
    let status: u16 = parts.next()?.parse().ok()?;
    let reason = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).ok()?;
        assert!(line.ends_with("\r\n"), "header line without CRLF: {line:?}");
        let l = line.trim_end_matches("\r\n");
        if l.is_empty() {
            break;
        }
        let (n, v) = l.split_once(':').expect("header colon");
        headers.push((n.to_string(), v.trim().to_string()));
    }
    let mut resp = Response { status, reason, headers, body: Vec::new(), complete: true };
    if head_only || status < 200 || status == 204 || status == 304 {
        return Some(resp);
    }
    if resp.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        resp.complete = false;
        loop {
            line.clear();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return Some(resp);
            }
            let size = usize::from_str_radix(line.trim_end(), 16).expect("chunk size");
            if size == 0 {
                line.clear();
                let _ = r.read_line(&mut line);
                resp.complete = line == "\r\n";
                return Some(resp);
            }
            let mut chunk = vec![0; size + 2];
            if r.read_exact(&mut chunk).is_err() {
                return Some(resp);
            }
            resp.body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(len) = resp.header("content-length") {
        let len: usize = len.parse().expect("content-length");
        let mut body = vec![0; len];
        let mut got = 0;
        while got < len {
            match r.read(&mut body[got..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        body.truncate(got);
        resp.complete = got == len;
        resp.body = body;
    } else {
        let _ = r.read_to_end(&mut resp.body);
    }
    Some(resp)
}

/// Sends `raw` on a new connection and reads one response.
pub fn roundtrip(server: &Server, raw: &[u8]) -> Response {
    let mut s = server.connect();
    s.write_all(raw).unwrap();
    let mut r = BufReader::new(s);
    read_response(&mut r, raw.starts_with(b"HEAD ")).expect("a response")
}

/// GET `path` on a new connection.
pub fn get(server: &Server, path: &str) -> Response {
    roundtrip(server, format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes())
}

/// Whether the peer has closed: a read returns EOF (or a reset) within `wait`.
pub fn closed_within<R: Read>(r: &mut R, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 256];
    while Instant::now() < deadline {
        match r.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                continue;
            }
            Err(_) => return true,
        }
    }
    false
}

/// A deterministic pseudo-random sequence (xorshift64*), for split points.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}
