"""wsgo against the servers our users would pick instead: same app, same pinning, same load.

Servers: wsgo (ours), the original wsgo 0.0.25, granian (WSGI), gunicorn (gthread), uWSGI
(pyuwsgi), bjoern, and nginx for the static scenarios. Every server runs loadtest/apps/bench_app.py
on the same CPython. Layouts: `one-core` (server on CPU 0, wrk on CPU 1) and `all-cores` (server on
every CPU, each multi-process server with one process per CPU; wrk unpinned).

Per cell (the median of --runs runs): requests/s, p50/p99, errors, peak RSS of the server's
processes, and server CPU time per request, the headline: one wrk core saturates near 185k
requests/s here, so requests/s alone hides a faster server. Every response is checked by a wrk Lua
script (status 200 and the exact body length): a server that fails fast does not win.

Usage:
    loadtest/setup.sh                       # peers into loadtest/.venv, wrk/nginx/libev from Debian
    cargo build --release --features rust-hello --target-dir target/bench
    loadtest/.venv/bin/python loadtest/run.py [--quick] [--layouts one-core,all-cores]
        [--scenarios hello,json,...] [--servers wsgo,granian,...] [--runs 3] [--duration 3]
Writes loadtest/results/<timestamp>.json and .md, and prints the markdown. Only 127.0.0.1; servers
are stopped by process id; every run is bounded by wrk's duration.
"""

import argparse
import json
import os
import re
import select
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
    return {
        "wsgo": [ours, "--module", app, "--http-socket", addr, "--workers", "16",
                 "--static-map", f"/static={webroot}", "--max-age", "60"],
        "wsgo-base": [base, "--module", app, "--http-socket", addr, "--workers", "16",
                      "--static-map", f"/static={webroot}", "--max-age", "60"],
        # All cores only: one process per CPU, as the multi-process peers run.
        "wsgo-multi": [ours, "--module", app, "--http-socket", addr, "--workers", "16",
                       "--processes", str(procs), "--static-map", f"/static={webroot}", "--max-age", "60"],
        # The same with each process on its own share of the CPUs (`--cpu-share`).
        "wsgo-share": [ours, "--module", app, "--http-socket", addr, "--workers", "16",
                       "--processes", str(procs), "--cpu-share", "--static-map", f"/static={webroot}",
                       "--max-age", "60"],
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
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("not ready")


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
        answered, pending = 0, list(socks)
        deadline = time.monotonic() + wait
        while pending and time.monotonic() < deadline:
            ready, _, _ = select.select(pending, [], [], 0.05)
            for s in ready:
                pending.remove(s)
                try:
                    answered += bool(s.recv(4096))
                except OSError:
                    pass
        return answered
    except OSError:
        return None
    finally:
        for s in socks:
            s.close()


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


def run_wrk(port, path, script, conns, duration, pin):
    threads = 1 if pin else max(1, NCPU)
    cmd = (["taskset", "-c", pin] if pin else []) + [
        "wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}s", "--latency", "--timeout", "5s", "-s", script,
        f"http://127.0.0.1:{port}{path}"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30).stdout


def measure(server, scenario, layout, args, webroot, libdir):
    path, method, body, expected, conns, headers, _, app = SCENARIOS[scenario]
    one = layout == "one-core"
    procs = 1 if one else NCPU
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        cmd = nginx_command(port, procs, webroot, tmp) if server == "nginx" else server_command(server, port, procs, webroot, app)
        env = dict(os.environ, VIRTUAL_ENV=str(VENV), PATH=f"{VENV}/bin:{os.environ['PATH']}", LD_LIBRARY_PATH=libdir)
        prefix = ["taskset", "-c", "0"] if one else []
        proc = subprocess.Popen(prefix + cmd, cwd=APPS, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        runs = []
        try:
            wait_ready(port, path if method == "GET" else "/", proc)
            answered = answered_at_once(port, conns)
            script = lua_script(tmp, method, body, expected, headers)
            run_wrk(port, path, script, conns, 1, "1" if one else None)  # warm-up
            for _ in range(args.runs):
                pids = children(proc.pid)
                before = cpu_seconds(pids)
                out = run_wrk(port, path, script, conns, args.duration, "1" if one else None)
                cpu = cpu_seconds(children(proc.pid)) - before
                total = int(re.search(r"(\d+) requests in", out).group(1))
                bad = int(re.search(r"BAD (\d+)", out).group(1))
                sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
                errors = bad + (sum(map(int, sock.groups())) if sock else 0)
                runs.append({
                    "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
                    "p50_ms": parse_latency(re.search(r"50%\s+(\S+)", out).group(1)),
                    "p99_ms": parse_latency(re.search(r"99%\s+(\S+)", out).group(1)),
                    "errors": errors,
                    "cpu_us_per_req": cpu / total * 1e6 if total else None,
                })
            rss = peak_rss_mb(children(proc.pid))
        except Exception as e:  # a server that cannot run a cell is reported, not fatal
            return {"server": server, "scenario": scenario, "layout": layout, "failed": str(e)}
        finally:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(15)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
    def median(key):
        values = [r[key] for r in runs if r[key] is not None]
        return statistics.median(values) if values else None

    med = {k: median(k) for k in ("rps", "p50_ms", "p99_ms", "cpu_us_per_req")}
    return {"server": server, "scenario": scenario, "layout": layout, **med,
            "errors": sum(r["errors"] for r in runs), "peak_rss_mb": rss, "runs": runs, "answered": answered}


def table(results, layout):
    rows = [r for r in results if r["layout"] == layout]
    scenarios = [s for s in SCENARIOS if any(r["scenario"] == s for r in rows)]
    servers = [s for s in SUPPORTS if any(r["server"] == s for r in rows)]
    out = [f"### {layout}", "",
           "Each cell: requests/s · server CPU µs per request · p99 ms · peak RSS MB (errors if any). "
           "Ratio: ours vs the best peer in requests per server CPU-second. \"Answers N of C "
           "connections\": with C keep-alive connections each sending one request at once, only N "
           "were answered within 2 s; the others wait while the load runs, and its latency figures "
           "leave them out.",
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
            fmt = lambda v, spec: "?" if v is None else format(v, spec)  # noqa: E731
            cells.append(f"{fmt(r['rps'], ',.0f')} · {fmt(r['cpu_us_per_req'], '.1f')} · {fmt(r['p99_ms'], '.2f')} · "
                         f"{r['peak_rss_mb']:.0f}{err}")
            if r["errors"] or not r["cpu_us_per_req"]:
                continue
            if sv.startswith("wsgo") and sv not in ("wsgo-go", "wsgo-base"):
                if ours is None or r["cpu_us_per_req"] < ours["cpu_us_per_req"]:
                    ours = r
            elif best_peer is None or r["cpu_us_per_req"] < best_peer["cpu_us_per_req"]:
                best_peer = r
        ratio = (f"{best_peer['cpu_us_per_req'] / ours['cpu_us_per_req']:.2f}x vs {best_peer['server']}"
                 if ours and best_peer else "-")
        out.append(f"| {sc} | " + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 run of 2 s, hello/post/slow-io, wsgo/granian/bjoern")
    ap.add_argument("--layouts", default="one-core,all-cores")
    ap.add_argument("--scenarios")
    ap.add_argument("--servers")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=int, default=3)
    args = ap.parse_args()
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
    for layout in args.layouts.split(","):
        for sc in scenarios:
            for sv in servers:
                if SCENARIOS[sc][6] not in SUPPORTS[sv] or (sv in ("wsgo-multi", "wsgo-share") and layout == "one-core"):
                    continue
                r = measure(sv, sc, layout, args, str(webroot), libdir)
                results.append(r)
                brief = r.get("failed") or f"{r['rps']:,.0f} req/s, {r['cpu_us_per_req'] or 0:.1f} µs CPU/req, {r['errors']} errors"
                print(f"[{time.monotonic() - started:6.0f}s] {layout:9} {sc:10} {sv:9} {brief}", file=sys.stderr)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    md = "\n\n".join(table(results, layout) for layout in args.layouts.split(","))
    header = (f"python {sys.version.split()[0]}, {NCPU} CPUs, runs={args.runs} x {args.duration}s (median), "
              f"wrk -c64 (hello_256: -c256), generated by loadtest/run.py\n\n")
    (RESULTS / f"{stamp}.json").write_text(json.dumps(results, indent=2))
    (RESULTS / f"{stamp}.md").write_text(header + md + "\n")
    print(header + md)


if __name__ == "__main__":
    main()
