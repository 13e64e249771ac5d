"""wsgo against the servers our users would pick instead: same app, same pinning, same load.

Servers: wsgo (ours), the original wsgo 0.0.25, granian (WSGI), gunicorn (gthread), uWSGI
(pyuwsgi), bjoern, and nginx for the static scenarios. Every server runs loadtest/apps/bench_app.py
on the same CPython. Layouts: `one-core` (server on CPU 0, wrk on CPU 1) and `all-cores` (server on
every CPU, each multi-process server with one process per CPU; wrk unpinned).

Per cell (the median of --runs runs): requests/s, p50/p99, errors, peak RSS of the server's
processes, and server CPU time per request, the headline: one wrk core saturates near 185k
requests/s here, so requests/s alone hides a faster server. Every response is checked by a wrk Lua
script (status 200 and the exact body length): a server that fails fast does not win.

Load generators (--loadgen): wrk (the default) and oha (loadtest/tools/bin/oha, installed by
setup.sh; its JSON output; status and total length of the responses checked), or both, each cell
measured by each, with the cells where they disagree on throughput by more than 10% listed. Both
are closed loops: a connection sends its next request only after the last response, so a server
that stalls is sent less and its stall hides from the percentiles. Open loop: --rate R sends R
requests/s (oha -q R with its latency correction: a request's latency counts from when it was due,
not from when a free connection sent it); --at-load 0.5,0.8 measures each server at those fractions
of the best peer's saturation throughput measured in the same run (the same rates for every server)
and writes the "latency at load" table: p50/p99/p99.9 and errors.

Usage:
    loadtest/setup.sh                       # peers into loadtest/.venv, wrk/nginx/libev from Debian, oha
    cargo build --release --features rust-hello --target-dir target/bench
    loadtest/.venv/bin/python loadtest/run.py [--quick] [--layouts one-core,all-cores]
        [--scenarios hello,json,...] [--servers wsgo,granian,...] [--runs 3] [--duration 3]
        [--loadgen wrk|oha|wrk,oha] [--rate R | --at-load 0.5,0.8]
Writes loadtest/results/<timestamp>.json and .md, and prints the markdown. Only 127.0.0.1; servers
are stopped by process id; every run is bounded by the load generator's duration.
"""

import argparse
import contextlib
import json
import os
import re
import resource
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
APPS = HERE / "apps"
VENV = HERE / ".venv"
RESULTS = HERE / "results"
OHA = HERE / "tools" / "bin" / "oha"
TICK = os.sysconf("SC_CLK_TCK")
NCPU = len(os.sched_getaffinity(0))

POST_BODY = b"p" * 16384

# name: (path, method, body, expected length, connections, extra wrk headers, needs, app)
APP = "bench_app:application"
SCENARIOS = {
    "hello": ("/", "GET", b"", 13, 64, [], "wsgi", APP),
    "json": ("/json", "GET", b"", None, 64, [], "wsgi", APP),
    "body_64k": ("/64k", "GET", b"", 65536, 64, [], "wsgi", APP),
    "post_16k": ("/echo", "POST", POST_BODY, len(POST_BODY), 64, [], "wsgi", APP),
    "slow_io": ("/sleep", "GET", b"", 13, 64, [], "wsgi", APP),
    "conn_close": ("/", "GET", b"", 13, 64, ["Connection: close"], "wsgi", APP),
    "hello_256": ("/", "GET", b"", 13, 256, [], "wsgi", APP),
    "hello_1k": ("/", "GET", b"", 13, 1024, [], "wsgi", APP),
    # What our users run: a Django page rendered from a SQLite query, and a Flask JSON endpoint
    # that waits 2 ms as if for a database, with as many clients as workers (16 per process)
    # and with four times as many (overload).
    "django": ("/products", "GET", b"", None, 64, [], "wsgi", "realsite.wsgi:application"),
    "flask_io": ("/api/orders", "GET", b"", None, 16, [], "wsgi", "flask_io:application"),
    "flask_io_4x": ("/api/orders", "GET", b"", None, 64, [], "wsgi", "flask_io:application"),
    # The ceiling: the same reply from a core thread without Python (a `rust-hello` build only).
    "rust_hello": ("/__rust_hello", "GET", b"", 13, 64, [], "rust", APP),
    "static_4k": ("/static/4k.txt", "GET", b"", 4096, 64, [], "static", APP),
    "static_1m": ("/static/1m.txt", "GET", b"", 1 << 20, 64, [], "static", APP),
    # A 4 KB app response with Cache-Control: max-age, answered from the response cache (nginx
    # serves the same bytes as a file: what a cache in front could do at best).
    "cache_4k": ("/cached4k", "GET", b"", 4096, 64, [], "cache", APP),
}
QUICK_SCENARIOS = ["hello", "post_16k", "slow_io", "rust_hello", "static_4k", "cache_4k"]
QUICK_SERVERS = ["wsgo", "granian", "bjoern", "nginx"]


def python_libdir():
    out = subprocess.run([str(VENV / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def server_command(name, port, procs, webroot, app=APP):
    """The command line of each server; None when it cannot run the layout or scenario kind."""
    module, callable_ = app.split(":")
    ours = os.environ.get("WSGO_BIN", str(ROOT / "target" / "bench" / "release" / "wsgo"))
    b = VENV / "bin"
    addr = f"127.0.0.1:{port}"
    # Before/after in one run: WSGO_BASE_BIN names another build of ours (`wsgo-base`).
    base = os.environ.get("WSGO_BASE_BIN", ours)
    def wsgo(binary, *layout):
        return [binary, "--module", app, "--http-socket", addr, "--workers", "16", *layout,
                "--static-map", f"/static={webroot}", "--max-age", "60"]

    # All cores only: one process per CPU, as the multi-process peers run (`multi`); each on its
    # own share of the CPUs (`share`); and each core thread taking the connections its CPU takes in
    # (`steer`).
    multi = ("--processes", str(procs))
    share = (*multi, "--cpu-share")
    steer = (*share, "--incoming-cpu")
    return {
        "wsgo": wsgo(ours),
        "wsgo-base": wsgo(base),
        "wsgo-multi": wsgo(ours, *multi),
        "wsgo-share": wsgo(ours, *share),
        "wsgo-steer": wsgo(ours, *steer),
        # The same layouts of the other build (WSGO_BASE_BIN), for before/after on all cores.
        "wsgo-multi-base": wsgo(base, *multi),
        "wsgo-share-base": wsgo(base, *share),
        "wsgo-steer-base": wsgo(base, *steer),
        "wsgo-go": [str(b / "wsgo"), "--module", module, "--http-socket", addr, "--workers", "16"]
        + (["--process", "1"] if procs == 1 else ["--processes", str(procs)])
        + ["--static-map", f"/static={webroot}", "--max-age", "60"],
        "granian": [str(b / "granian"), "--interface", "wsgi", "--workers", str(procs), "--host", "127.0.0.1",
                    "--port", str(port), "--no-ws", "--blocking-threads", "16", app],
        "gunicorn": [str(b / "gunicorn"), "-k", "gthread", "--threads", "16", "-w", str(procs), "-b", addr,
                     "--log-level", "warning", app],
        "uwsgi": [str(b / "uwsgi"), "--http11-socket", addr, "--module", app, "--master",
                  "--processes", str(procs), "--threads", "16", "--disable-logging", "--die-on-term",
                  "--static-map", f"/static={webroot}", "--lazy-apps"],
        "bjoern": [str(b / "python"), "bjoern_run.py", str(port), str(procs), app],
        "nginx": None,  # built in nginx_command()
    }[name]


SUPPORTS = {
    "wsgo": {"wsgi", "rust", "static", "cache"},
    "wsgo-base": {"wsgi", "rust", "static", "cache"},
    "wsgo-multi": {"wsgi"},
    "wsgo-share": {"wsgi"},
    "wsgo-steer": {"wsgi"},
    "wsgo-multi-base": {"wsgi"},
    "wsgo-share-base": {"wsgi"},
    "wsgo-steer-base": {"wsgi"},
    "wsgo-go": {"wsgi", "static", "cache"},
    "granian": {"wsgi"},
    "gunicorn": {"wsgi"},
    "uwsgi": {"wsgi", "static"},
    "bjoern": {"wsgi"},
    "nginx": {"static", "cache"},
}


def nginx_command(port, procs, webroot, tmp):
    conf = Path(tmp) / "nginx.conf"
    conf.write_text(f"""
worker_processes {procs};
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp};
    proxy_temp_path {tmp};
    fastcgi_temp_path {tmp};
    uwsgi_temp_path {tmp};
    scgi_temp_path {tmp};
    sendfile on;
    server {{
        listen 127.0.0.1:{port} reuseport;
        location /static/ {{ alias {webroot}/; }}
        location = /cached4k {{ alias {webroot}/4k.txt; default_type text/plain; }}
    }}
}}
""")
    return ["nginx", "-c", str(conf), "-p", tmp]


def stop(proc, timeout=15):
    """Stops a server started in its own session: SIGTERM to its group, SIGKILL after `timeout`."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid):
    out = [pid]
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            out.extend(children(int(p.name)))
    return out


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            f = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])
        except (OSError, IndexError):
            pass
    return total / TICK


def switches(pids):
    """Context switches (voluntary and involuntary) of every thread of these processes so far."""
    total = 0
    for pid in pids:
        for task in (Path("/proc") / str(pid) / "task").glob("*"):
            try:
                text = (task / "status").read_text()
            except OSError:
                continue
            total += sum(int(n) for n in re.findall(r"^(?:non)?voluntary_ctxt_switches:\s+(\d+)", text, re.M))
    return total


def loadgen_cpu_seconds():
    """CPU used so far by this script's finished children: the load generators (run to completion
    one at a time; the servers are still running while their cells are measured)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def machine_seconds():
    """(steal, total) seconds of all CPUs so far, from /proc/stat: steal is the time the host ran
    something else while this VM's CPUs wanted to run. On a shared VM a run's p99 follows it (one
    2-core VM, hello for 3 s: 0.9-1.3 ms with at most 20 ms stolen, up to 6.8 ms with 70-190 ms,
    for ours and bjoern's alike)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    return fields[7] / tick, sum(fields[:8]) / tick


def stolen_since(mark):
    """The share of the machine's CPU time the host took since `mark` (a `machine_seconds()`)."""
    steal, total = machine_seconds()
    return (steal - mark[0]) / max(total - mark[1], 1e-9)


def peak_rss_mb(pids):
    total = 0
    for pid in pids:
        try:
            m = re.search(r"VmHWM:\s+(\d+) kB", (Path("/proc") / str(pid) / "status").read_text())
            total += int(m.group(1)) if m else 0
        except OSError:
            pass
    return total / 1024


def wait_ready(port, path, proc, deadline=30):
    """Waits until the server answers, then until it has settled (see `wait_settled`)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    wait_settled(proc, end)
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("not ready")


def wait_settled(proc, end, window=0.5, busy=0.02):
    """Waits until the server's processes, all of them, are idle: less than `busy` CPU-seconds
    in `window` seconds, with no process started or ended. A server of several processes answers
    as soon as its first one does, while the others may still be loading the app (Django takes
    about a second here), and a load started then would find them busy loading. Past `end` it
    gives up waiting and says so."""
    while time.monotonic() < end:
        pids = children(proc.pid)
        before = cpu_seconds(pids)
        time.sleep(window)
        if set(children(proc.pid)) == set(pids) and cpu_seconds(pids) - before < busy:
            return
    print(f"  (pid {proc.pid} still busy at the deadline: measured anyway)", file=sys.stderr)


def answered_at_once(port, conns, wait=2.0):
    """How many of `conns` keep-alive connections, each sending one request at the same time, get
    an answer within `wait` seconds. A server that gives each thread one connection at a time
    (uWSGI) answers as many as it has threads; the rest wait, and wrk's latency figures then
    describe only the connections that are served."""
    socks = []
    try:
        for _ in range(conns):
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=2))
        for s in socks:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answered = 0
        deadline = time.monotonic() + wait
        # epoll, not select(): 1,024 connections have descriptors beyond select's limit.
        with selectors.DefaultSelector() as sel:
            for s in socks:
                sel.register(s, selectors.EVENT_READ)
            while sel.get_map() and time.monotonic() < deadline:
                for key, _ in sel.select(0.05):
                    sel.unregister(key.fileobj)
                    try:
                        answered += bool(key.fileobj.recv(4096))
                    except OSError:
                        pass
        return answered
    except OSError:
        return None
    finally:
        for s in socks:
            s.close()


# Bodies from this size are checked by wrk's totals rather than one by one in Lua.
LARGE_BODY = 64 * 1024


def lua_script(tmp, method, body, expected_len, headers):
    """A wrk script that sends the request and counts every response that is not a 200 of the
    expected length."""
    path = Path(tmp) / "check.lua"
    hdrs = "".join(f'wrk.headers["{h.split(":")[0]}"] = "{h.split(":", 1)[1].strip()}"\n' for h in headers)
    body_lua = ""
    if body:
        body_lua = f'wrk.body = string.rep("p", {len(body)})\nwrk.headers["Content-Type"] = "application/octet-stream"\n'
    check = f"#body ~= {expected_len}" if expected_len else "#body < 10"
    if any(h.lower().replace(" ", "") == "connection:close" for h in headers):
        # RFC 9112 §9.6: the server must close after answering `Connection: close` and should say
        # so. wrk reuses a connection unless the response says `close`, so a server that ignores
        # the request (uWSGI's --http11-socket does) would be measured on keep-alive: not counted.
        check += ' or not (headers["Connection"] or headers["connection"] or ""):lower():find("close")'
    if expected_len and expected_len >= LARGE_BODY:
        # Handing each response body to Lua copies it: for 1 MB bodies that copy, not the server,
        # would bound the run. wrk itself counts statuses other than 2xx/3xx, and a body cut short
        # breaks the framing of the next response (a read error); the bytes read must average at
        # least the body length per response.
        path.write_text(f"""
wrk.method = "{method}"
{body_lua}{hdrs}
function done(summary, latency, requests)
  local bad = summary.errors.status
  if summary.requests > 0 and summary.bytes / summary.requests < {expected_len} then bad = summary.requests end
  io.write(string.format("BAD %d\\n", bad))
end
""")
        return str(path)
    path.write_text(f"""
wrk.method = "{method}"
{body_lua}{hdrs}
local threads = {{}}
function setup(thread) table.insert(threads, thread) end
function init(args) bad = 0 end
function response(status, headers, body)
  if status ~= 200 or {check} then bad = bad + 1 end
end
function done(summary, latency, requests)
  local b = 0
  for _, t in ipairs(threads) do b = b + t:get("bad") end
  io.write(string.format("BAD %d\\n", b))
end
""")
    return str(path)


def parse_latency(text):
    """wrk's latency text (`812.00us`, `1.20ms`, `2.00s`, `1.00m`) in milliseconds."""
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    if not m:
        return None
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[m.group(2)]
    return float(m.group(1)) * scale


def wrk_p99_ms(out):
    """The 99th percentile of wrk's latency distribution (`--latency`) in milliseconds. Matched at
    the start of its line: a standard deviation such as `9.99%` also holds `99%`."""
    m = re.search(r"^\s*99%\s+(\S+)", out, re.M)
    return parse_latency(m.group(1)) if m else None


def run_wrk(port, path, script, conns, duration, pin):
    threads = 1 if pin else max(1, NCPU)
    cmd = (["taskset", "-c", pin] if pin else []) + [
        "wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}s", "--latency", "--timeout", "5s"] + (
        ["-s", script] if script else []) + [f"http://127.0.0.1:{port}{path}"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30).stdout


def wrk_cell(port, scenario, tmp, duration, pin):
    """One closed-loop wrk run: requests/s, p50/p99 (ms), errors, responses."""
    path, method, body, expected, conns, headers, _, _ = SCENARIOS[scenario]
    script = lua_script(tmp, method, body, expected, headers)
    out = run_wrk(port, path, script, conns, duration, pin)
    bad = int(re.search(r"BAD (\d+)", out).group(1))
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "responses": int(re.search(r"(\d+) requests in", out).group(1)),
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": parse_latency(re.search(r"50%\s+(\S+)", out).group(1)),
        "p99_ms": wrk_p99_ms(out),
        "p999_ms": None,
        "errors": bad + (sum(map(int, sock.groups())) if sock else 0),
    }


def oha_cell(port, scenario, tmp, duration, pin, rate=None):
    """One oha run, closed loop or (with `rate`) open loop with latency correction: requests/s,
    p50/p99/p99.9 (ms), errors (transport errors, statuses other than 200, and a total body size
    other than 200s x the expected length, or bodies under 10 bytes where the length varies)."""
    path, method, body, expected, conns, headers, _, _ = SCENARIOS[scenario]
    cmd = (["taskset", "-c", pin] if pin else []) + [
        str(OHA), "--no-tui", "--output-format", "json", "-z", f"{duration}s", "-c", str(conns),
        "-m", method, "--wait-ongoing-requests-after-deadline", "-t", "5s"] + (
        ["--worker-threads", "1"] if pin else [])
    for h in headers:
        cmd += ["-H", h]
    if body:
        body_file = Path(tmp) / "body.bin"
        body_file.write_bytes(body)
        cmd += ["-D", str(body_file), "-T", "application/octet-stream"]
    if any(h.lower().replace(" ", "") == "connection:close" for h in headers):
        cmd += ["--disable-keepalive"]
    if rate:
        cmd += ["-q", str(rate), "--latency-correction"]
    cmd.append(f"http://127.0.0.1:{port}{path}")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    data = json.loads(out.stdout)
    summary = data["summary"]
    statuses = {int(k): v for k, v in data.get("statusCodeDistribution", {}).items()}
    ok = statuses.get(200, 0)
    responses = sum(statuses.values())
    errors = sum(data.get("errorDistribution", {}).values()) + responses - ok
    total_data = summary.get("totalData") or 0
    if expected and total_data != ok * expected:
        errors += max(1, abs(total_data - ok * expected) // expected)
    elif not expected and ok and total_data / ok < 10:
        errors += ok
    pct = data.get("latencyPercentiles", {})
    ms = lambda key: pct[key] * 1000 if pct.get(key) is not None else None  # noqa: E731
    return {
        "responses": responses,
        "rps": responses / duration if rate else summary["requestsPerSec"],
        "p50_ms": ms("p50"),
        "p99_ms": ms("p99"),
        "p999_ms": ms("p99.9"),
        "errors": errors,
    }


def launch(cmd, libdir, one_core=False):
    """Starts a server command in the load test's venv, from its apps folder, in a session of its
    own (stopped by process id), its output discarded; on CPU 0 only with `one_core`."""
    env = dict(os.environ, VIRTUAL_ENV=str(VENV), PATH=f"{VENV}/bin:{os.environ['PATH']}", LD_LIBRARY_PATH=libdir)
    prefix = ["taskset", "-c", "0"] if one_core else []
    return subprocess.Popen(prefix + cmd, cwd=APPS, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


@contextlib.contextmanager
def all_cores_server(server, scenario, libdir, webroot, extra_headers=()):
    """`server` for `scenario` on every CPU, on a free port, answering: yields (port, proc, wrk's
    Lua script with `extra_headers` added); stopped by process id afterwards."""
    path, method, body, expected, _, headers, _, app = SCENARIOS[scenario]
    headers = [*headers, *(h for h in extra_headers if h not in headers)]
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = launch(server_command(server, port, NCPU, webroot, app), libdir)
        try:
            wait_ready(port, path if method == "GET" else "/", proc)
            yield port, proc, lua_script(tmp, method, body, expected, headers)
        finally:
            stop(proc)


def all_cores_setup():
    """For a script of all-cores runs: exits unless there are two CPUs or more; (libdir, webroot)."""
    if NCPU < 2:
        sys.exit("needs two or more CPUs")
    webroot = RESULTS / "webroot"
    webroot.mkdir(parents=True, exist_ok=True)
    return python_libdir(), str(webroot)


def alternating(servers, runs):
    """(run number from 1, server) for each run of each server, the order reversed every other run,
    so that a drift of the machine falls on every server alike."""
    return [(i + 1, s) for i in range(runs) for s in (servers if i % 2 == 0 else servers[::-1])]


def wrk_counts(out):
    """From wrk's output with the Lua check: (responses, errors), errors being the responses the
    check refused and the socket errors."""
    bad = int(re.search(r"BAD (\d+)", out).group(1))
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return int(re.search(r"(\d+) requests in", out).group(1)), bad + (sum(map(int, sock.groups())) if sock else 0)


def measure(server, scenario, layout, args, webroot, libdir, loadgen="wrk", rates=()):
    path, method, body, expected, conns, headers, _, app = SCENARIOS[scenario]
    one = layout == "one-core"
    procs = 1 if one else NCPU
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        cmd = nginx_command(port, procs, webroot, tmp) if server == "nginx" else server_command(server, port, procs, webroot, app)
        proc = launch(cmd, libdir, one)
        runs, at_load = [], []
        pin = "1" if one else None
        try:
            wait_ready(port, path if method == "GET" else "/", proc)
            answered = answered_at_once(port, conns)

            def cell(duration, rate=None):
                pids = children(proc.pid)
                before = cpu_seconds(pids)
                each_before = {p: cpu_seconds([p]) for p in pids}
                gen_before = loadgen_cpu_seconds()
                machine_before = machine_seconds()
                if rate or loadgen == "oha":
                    r = oha_cell(port, scenario, tmp, duration, pin, rate)
                else:
                    r = wrk_cell(port, scenario, tmp, duration, pin)
                cpu = cpu_seconds(children(proc.pid)) - before
                each = sorted((cpu_seconds([p]) - t for p, t in each_before.items()), reverse=True)
                # With one process per CPU, the share of the CPU time its busiest process used: near
                # 1/procs when the load is spread, near 1 when one process took every connection.
                # (`wsgo` and `wsgo-base` are one process under a supervisor on every layout.)
                several = procs > 1 and len(each) > 1 and server not in ("wsgo", "wsgo-base")
                r["top_share"] = each[0] / cpu if several and cpu > 0 else None
                gen = loadgen_cpu_seconds() - gen_before
                r["stolen"] = stolen_since(machine_before)
                r["cpu_us_per_req"] = cpu / r["responses"] * 1e6 if r["responses"] else None
                r["loadgen_us_per_req"] = gen / r["responses"] * 1e6 if r["responses"] else None
                return r

            cell(1)  # warm-up
            if not rates:
                runs = [cell(args.duration) for _ in range(args.runs)]
            for rate in rates:
                rs = [cell(args.duration, rate) for _ in range(args.runs)]
                at_load.append({"rate": rate, **{k: statistics.median([r[k] for r in rs if r[k] is not None] or [0])
                                                  for k in ("rps", "p50_ms", "p99_ms", "p999_ms", "cpu_us_per_req")},
                                "errors": sum(r["errors"] for r in rs), "runs": rs})
            rss = peak_rss_mb(children(proc.pid))
        except Exception as e:  # a server that cannot run a cell is reported, not fatal
            return {"server": server, "scenario": scenario, "layout": layout, "failed": str(e)}
        finally:
            stop(proc)

    def median(key):
        values = [r[key] for r in runs if r[key] is not None]
        return statistics.median(values) if values else None

    med = {k: median(k) for k in ("rps", "p50_ms", "p99_ms", "cpu_us_per_req", "loadgen_us_per_req")}
    # The most any run of the cell lost to the host (a shared VM's neighbours), and the largest
    # share one process did in any run: a median of three hides one load that ran on one process.
    med["stolen"] = max((r["stolen"] for r in runs), default=None)
    med["top_share"] = max((r["top_share"] for r in runs if r["top_share"] is not None), default=None)
    return {"server": server, "scenario": scenario, "layout": layout, "loadgen": loadgen, **med,
            "errors": sum(r["errors"] for r in runs), "peak_rss_mb": rss, "runs": runs, "answered": answered,
            "at_load": at_load}


# A cell is flagged when the host took more than this share of the VM's CPU time in one of its
# runs: its p99 (and less so its CPU per request) then says more about the neighbours than the server.
STOLEN_FLAG = 0.03

# Other builds of ours (WSGO_BASE_BIN, or the same one measured again): neither ours nor a peer.
BASES = ("wsgo-base", "wsgo-multi-base", "wsgo-share-base", "wsgo-steer-base")
# Layouts of several processes: all cores only.
MULTI = ("wsgo-multi", "wsgo-share", "wsgo-steer", "wsgo-multi-base", "wsgo-share-base", "wsgo-steer-base")


def is_ours(server):
    return server.startswith("wsgo") and server != "wsgo-go" and server not in BASES


def table(results, layout, loadgen="wrk"):
    rows = [r for r in results if r["layout"] == layout and r.get("loadgen", "wrk") == loadgen and not r.get("at_load")]
    if not rows:
        return ""
    scenarios = [s for s in SCENARIOS if any(r["scenario"] == s for r in rows)]
    servers = [s for s in SUPPORTS if any(r["server"] == s for r in rows)]
    out = [f"### {layout}" + (f" ({loadgen})" if loadgen != "wrk" else ""), "",
           "Each cell: requests/s · server CPU µs per request · p99 ms · peak RSS MB (errors if any). "
           "Ratio: ours vs the best peer in requests per server CPU-second. \"Answers N of C "
           "connections\": with C keep-alive connections each sending one request at once, only N "
           "were answered within 2 s; the others wait while the load runs, and its latency figures "
           "leave them out. \"Host took N%\": in one of the cell's runs the VM's host ran something "
           "else for that share of its CPU time (steal, /proc/stat). \"One process used N%\": in one "
           "of the cell's runs of a multi-process server, its busiest process did that share of the work.",
           "",
           "| scenario | " + " | ".join(servers) + " | ours / best peer |", "|---" * (len(servers) + 2) + "|"]
    for sc in scenarios:
        cells, best_peer, ours = [], None, None
        for sv in servers:
            r = next((x for x in rows if x["scenario"] == sc and x["server"] == sv), None)
            if r is None:
                cells.append("n/a")
                continue
            if "failed" in r:
                cells.append(f"failed: {r['failed'][:30]}")
                continue
            err = f" ({r['errors']} errors)" if r["errors"] else ""
            conns = SCENARIOS[sc][4]
            if r.get("answered") is not None and r["answered"] < conns:
                err += f" (answers {r['answered']} of {conns} connections)"
            if r.get("top_share") and r["top_share"] > 0.75:
                err += f" (one process used {r['top_share']:.0%} of the CPU in a run)"
            if r.get("stolen") and r["stolen"] > STOLEN_FLAG:
                err += f" (host took {r['stolen']:.0%})"
            fmt = lambda v, spec: "?" if v is None else format(v, spec)  # noqa: E731
            cells.append(f"{fmt(r['rps'], ',.0f')} · {fmt(r['cpu_us_per_req'], '.1f')} · {fmt(r['p99_ms'], '.2f')} · "
                         f"{r['peak_rss_mb']:.0f}{err}")
            if r["errors"] or not r["cpu_us_per_req"]:
                continue
            if is_ours(sv):
                if ours is None or r["cpu_us_per_req"] < ours["cpu_us_per_req"]:
                    ours = r
            elif sv not in BASES and (best_peer is None or r["cpu_us_per_req"] < best_peer["cpu_us_per_req"]):
                # Another build of ours (or the same one measured again) is no peer.
                best_peer = r
        ratio = (f"{best_peer['cpu_us_per_req'] / ours['cpu_us_per_req']:.2f}x vs {best_peer['server']}"
                 if ours and best_peer else "-")
        out.append(f"| {sc} | " + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(out)


def cpu_split_table(results, layout, loadgen="wrk"):
    """Server CPU and load-generator CPU per request, side by side. On one host the kernel charges
    TCP delivery to whichever process runs when it happens: a server that hands a 1 MB file to the
    socket in one call is charged its delivery to the client's socket, one whose data goes out as
    the client's acknowledgements open the window has it charged to the load generator. Their sum
    is the cost of a request to the machine."""
    rows = [r for r in results if r["layout"] == layout and r.get("loadgen", "wrk") == loadgen
            and not r.get("at_load") and "failed" not in r and r.get("loadgen_us_per_req")]
    if not rows:
        return ""
    scenarios = [s for s in SCENARIOS if any(r["scenario"] == s for r in rows)]
    servers = [s for s in SUPPORTS if any(r["server"] == s for r in rows)]
    out = [f"#### {layout}: server + load generator CPU per request ({loadgen})", "",
           "Each cell: server µs + load generator µs = total µs per request.", "",
           "| scenario | " + " | ".join(servers) + " |", "|---" * (len(servers) + 1) + "|"]
    for sc in scenarios:
        cells = []
        for sv in servers:
            r = next((x for x in rows if x["scenario"] == sc and x["server"] == sv), None)
            if r is None or not r["cpu_us_per_req"]:
                cells.append("n/a")
                continue
            s, g = r["cpu_us_per_req"], r["loadgen_us_per_req"]
            cells.append(f"{s:.1f} + {g:.1f} = {s + g:.1f}")
        out.append(f"| {sc} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def saturation(results, layout, scenario):
    """The best peer's closed-loop requests/s on a cell (the highest over the load generators)."""
    peers = [r["rps"] for r in results if r["layout"] == layout and r["scenario"] == scenario and not r.get("at_load")
             and not is_ours(r["server"]) and r["server"] not in BASES and "failed" not in r and not r["errors"]
             and r["rps"]]
    return max(peers) if peers else None


def at_load_table(results, layout):
    rows = [r for r in results if r["layout"] == layout and r.get("at_load") and "failed" not in r]
    failed = [r for r in results if r["layout"] == layout and r.get("at_load") and "failed" in r]
    if not rows and not failed:
        return ""
    servers = [s for s in SUPPORTS if any(r["server"] == s for r in rows + failed)]
    out = [f"### latency at load, {layout} (oha, open loop)", "",
           "Each cell: p50 · p99 · p99.9 ms at a fixed rate (oha -q with latency correction: latency "
           "counts from when a request was due) · server CPU µs per request, errors if any, and the "
           "rate achieved when it fell more than 5% short. Rates: the fraction of the best peer's saturation throughput in the "
           "same run; the same rate for every server.", "",
           "| scenario | rate | " + " | ".join(servers) + " |", "|---" * (len(servers) + 2) + "|"]
    for sc in SCENARIOS:
        cells = [r for r in rows if r["scenario"] == sc]
        if not cells:
            continue
        for i, point in enumerate(cells[0]["at_load"]):
            label = point.get("label") or f"{point['rate']:,}/s"
            line = []
            for sv in servers:
                r = next((x for x in cells if x["server"] == sv), None)
                if r is None:
                    f = next((x for x in failed if x["server"] == sv and x["scenario"] == sc), None)
                    line.append(f"failed: {f['failed'][:30]}" if f else "n/a")
                    continue
                p = r["at_load"][i]
                fmt = lambda v: "?" if v is None else f"{v:.2f}"  # noqa: E731
                cpu = p.get("cpu_us_per_req")
                cell = f"{fmt(p['p50_ms'])} · {fmt(p['p99_ms'])} · {fmt(p['p999_ms'])} · " + (f"{cpu:.1f}" if cpu else "?")
                if p["errors"]:
                    cell += f" ({p['errors']} errors)"
                if p["rps"] < 0.95 * p["rate"]:
                    cell += f" (only {p['rps']:,.0f}/s)"
                line.append(cell)
            out.append(f"| {sc} | {label} | " + " | ".join(line) + " |")
    return "\n".join(out)


def disagreements(results, layout):
    """Cells where wrk and oha, both closed loops, disagree on throughput by more than 10%."""
    out = []
    for r in results:
        if r["layout"] != layout or r.get("loadgen") != "wrk" or r.get("at_load") or "failed" in r or not r["rps"]:
            continue
        o = next((x for x in results if x["layout"] == layout and x.get("loadgen") == "oha" and not x.get("at_load")
                  and x["server"] == r["server"] and x["scenario"] == r["scenario"] and "failed" not in x), None)
        if o and o["rps"] and abs(o["rps"] / r["rps"] - 1) > 0.10:
            out.append(f"| {r['scenario']} | {r['server']} | {r['rps']:,.0f} | {o['rps']:,.0f} | "
                       f"{o['rps'] / r['rps']:.2f} | {r['cpu_us_per_req'] or 0:.1f} / {o['cpu_us_per_req'] or 0:.1f} |")
    if not out:
        return ""
    return "\n".join([f"### wrk and oha disagree by more than 10%, {layout}", "",
                      "| scenario | server | wrk req/s | oha req/s | oha / wrk | server CPU µs/req wrk / oha |",
                      "|---|---|---|---|---|---|", *out])


def main():
    # hello_1k holds 1,024 connections here and in wrk (each server raises its own limit or not).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 run of 2 s, hello/post/slow-io, wsgo/granian/bjoern")
    ap.add_argument("--layouts", default="one-core,all-cores")
    ap.add_argument("--scenarios")
    ap.add_argument("--servers")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=int, default=3)
    ap.add_argument("--loadgen", default="wrk", help="wrk, oha, or wrk,oha (each cell measured by each)")
    ap.add_argument("--rate", type=int, help="open loop at this many requests/s (oha), instead of saturation")
    ap.add_argument("--at-load", help="fractions of the best peer's saturation, e.g. 0.5,0.8: open-loop cells after "
                                      "the closed-loop ones")
    args = ap.parse_args()
    loadgens = args.loadgen.split(",")
    if any(lg not in ("wrk", "oha") for lg in loadgens):
        ap.error("--loadgen: wrk, oha or wrk,oha")
    if (args.rate or args.at_load or "oha" in loadgens) and not OHA.exists():
        ap.error(f"{OHA} is missing: run loadtest/setup.sh")
    scenarios = args.scenarios.split(",") if args.scenarios else list(SCENARIOS)
    servers = args.servers.split(",") if args.servers else list(SUPPORTS)
    if args.quick:
        args.runs, args.duration = 1, 2
        scenarios = args.scenarios.split(",") if args.scenarios else QUICK_SCENARIOS
        servers = args.servers.split(",") if args.servers else QUICK_SERVERS
    RESULTS.mkdir(exist_ok=True)
    webroot = RESULTS / "webroot"
    webroot.mkdir(exist_ok=True)
    (webroot / "4k.txt").write_bytes(b"s" * 4096)
    (webroot / "1m.txt").write_bytes(b"m" * (1 << 20))
    libdir = python_libdir()
    results = []
    started = time.monotonic()
    layouts = args.layouts.split(",")

    def cells():
        for layout in layouts:
            for sc in scenarios:
                for sv in servers:
                    if SCENARIOS[sc][6] in SUPPORTS[sv] and not (sv in MULTI and layout == "one-core"):
                        yield layout, sc, sv

    def log(r, what):
        brief = r.get("failed") or what
        print(f"[{time.monotonic() - started:6.0f}s] {r['layout']:9} {r['scenario']:10} {r['server']:9} {brief}",
              file=sys.stderr)

    if not args.rate:
        for layout, sc, sv in cells():
            for lg in loadgens:
                r = measure(sv, sc, layout, args, str(webroot), libdir, loadgen=lg)
                results.append(r)
                log(r, r.get("failed") or f"{lg}: {r['rps']:,.0f} req/s, {r['cpu_us_per_req'] or 0:.1f} µs CPU/req, "
                                          f"{r['errors']} errors")
    if args.rate or args.at_load:
        fractions = [float(f) for f in args.at_load.split(",")] if args.at_load else []
        for layout, sc, sv in cells():
            if args.rate:
                rates, labels = [args.rate], [f"{args.rate:,}/s"]
            else:
                sat = saturation(results, layout, sc)
                if not sat:
                    continue
                rates = [max(1, round(f * sat)) for f in fractions]
                labels = [f"{f:.0%} = {rate:,}/s" for f, rate in zip(fractions, rates)]
            r = measure(sv, sc, layout, args, str(webroot), libdir, loadgen="oha", rates=rates)
            r["at_load"] = [dict(p, label=lb) for p, lb in zip(r.get("at_load", []), labels)] or [{"rate": 0}]
            results.append(r)
            log(r, "; ".join(f"{p['rate']}/s: p99 {p.get('p99_ms') or 0:.2f} ms, {p.get('errors', 0)} errors"
                             for p in r["at_load"]))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    parts = []
    for layout in layouts:
        parts += [table(results, layout, lg) for lg in loadgens]
        parts += [cpu_split_table(results, layout, lg) for lg in loadgens]
        parts += [disagreements(results, layout), at_load_table(results, layout)]
    md = "\n\n".join(p for p in parts if p)
    header = (f"python {sys.version.split()[0]}, {NCPU} CPUs, runs={args.runs} x {args.duration}s (median), "
              f"load: {args.loadgen}{' + oha open loop' if args.rate or args.at_load else ''}, "
              f"64 connections (hello_256: 256, flask_io: 16), generated by loadtest/run.py\n\n")
    (RESULTS / f"{stamp}.json").write_text(json.dumps(results, indent=2))
    (RESULTS / f"{stamp}.md").write_text(header + md + "\n")
    print(header + md)


if __name__ == "__main__":
    main()
