"""How a server grows with its connections: CPU and context switches per request, and p99, of a
hello load (wrk -c64, or each count of --busy) while 0, 1,000 and 10,000 more keep-alive
connections sit idle, and the memory each idle connection costs. "Host took": the share of the
VM's CPU time its host ran something else during the load (steal, /proc/stat); on a shared VM p99
follows it.

The idle connections are held by this script: each sends one request, reads the response and
stays open (keep-alive). The server is pinned to CPU 0, wrk and this script to CPU 1. wrk checks
every response with a Lua script; --plain runs it without (its error counters only), as it is
usually run: it then sends faster, and a core thread's batches are larger. The server runs in a
session of its own, so the kernel schedules it as a group of its own (autogroup); --shared-group
starts it in this script's session, with wrk: a server that shares its group with busy tasks on
other CPUs, as in a container beside nginx, or started from a terminal that also runs the load.

--burst 256,1024 measures instead how long a fresh server takes to answer that many connections
that each send one request at once (time to the first, median and last response), the same again
on the same server right after, and once more after a 2 s pause, with the server's minor page
faults during each rush (memory it touched afresh): what the first rush of connections to a new
process costs, and a rush after the allocators returned their free memory.

Usage:
    loadtest/.venv/bin/python loadtest/scaling.py [--servers wsgo,bjoern,granian] [--idle 0,1000,10000]
        [--busy 64] [--plain] [--shared-group] [--burst 256,1024]
Prints a markdown table. Only 127.0.0.1; servers are stopped by process id.
"""

import argparse
import os
import re
import resource
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (the load test's server commands and measurements)

REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def rss_kb(pids):
    total = 0
    for pid in pids:
        try:
            m = re.search(r"VmRSS:\s+(\d+) kB", (Path("/proc") / str(pid) / "status").read_text())
            total += int(m.group(1)) if m else 0
        except OSError:
            pass
    return total


def hold_idle(port, n, deadline=60):
    """Opens `n` keep-alive connections, each with one request answered; returns the sockets."""
    socks, sel = [], selectors.DefaultSelector()
    pending = {}
    end = time.monotonic() + deadline
    for i in range(n):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        socks.append(s)
        sel.register(s, selectors.EVENT_WRITE, i)
        pending[i] = b""
        # Keep the accept queue from overflowing: let the server catch up every 500.
        if i % 500 == 499:
            _pump(sel, socks, pending, end, until=100)
    _pump(sel, socks, pending, end, until=0)
    return socks


def _pump(sel, socks, pending, end, until):
    while len(pending) > until and time.monotonic() < end:
        for key, ev in sel.select(0.5):
            i, s = key.data, key.fileobj
            if ev & selectors.EVENT_WRITE:
                try:
                    s.send(REQUEST)
                except OSError:
                    continue
                sel.modify(s, selectors.EVENT_READ, i)
            else:
                try:
                    data = s.recv(4096)
                except OSError:
                    data = b""
                pending[i] += data
                if pending[i].endswith(b"Hello, World!") or not data:
                    del pending[i]
                    sel.unregister(s)
    if len(pending) > until:
        raise RuntimeError(f"{len(pending)} idle connections got no answer")


def burst(port, n, deadline=30):
    """`n` connections, one request each sent at once: ms to the first, median and last response."""
    socks = [socket.create_connection(("127.0.0.1", port), timeout=deadline) for _ in range(n)]
    try:
        start = time.monotonic()
        for s in socks:
            s.sendall(REQUEST)
        times = []
        with selectors.DefaultSelector() as sel:
            for s in socks:
                sel.register(s, selectors.EVENT_READ)
            while sel.get_map() and time.monotonic() < start + deadline:
                for key, _ in sel.select(0.5):
                    if key.fileobj.recv(4096):
                        times.append((time.monotonic() - start) * 1000)
                    sel.unregister(key.fileobj)
        if len(times) < n:
            raise RuntimeError(f"{n - len(times)} of {n} connections got no answer")
        times.sort()
        return times[0], times[n // 2], times[-1]
    finally:
        for s in socks:
            s.close()


def start(server, port, libdir, own_session=True):
    """The server pinned to CPU 0; in a session (and scheduling group) of its own unless not."""
    cmd = run.server_command(server, port, 1, str(run.RESULTS / "webroot"))
    if server in ("wsgo", "wsgo-base"):
        # Its default limit is 10,000 connections per process.
        cmd += ["--max-connections", "20000"]
    env = dict(os.environ, VIRTUAL_ENV=str(run.VENV), PATH=f"{run.VENV}/bin:{os.environ['PATH']}",
               LD_LIBRARY_PATH=libdir)
    return subprocess.Popen(["taskset", "-c", "0"] + cmd, cwd=run.APPS, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=own_session)


def minor_faults(pids):
    """Minor page faults of these processes so far (all their threads): memory touched afresh."""
    total = 0
    for pid in pids:
        try:
            total += int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[7])
        except (OSError, IndexError, ValueError):
            pass
    return total


# The pause before the third rush: past the allocators' delay before they return free memory
# (mimalloc's purge delay is 1 s).
REST_BEFORE_THIRD = 2.0


def measure_bursts(server, sizes, libdir):
    """Each size on a fresh server three times: at once, again right after, and again after
    REST_BEFORE_THIRD s. (size, [rush...]), each rush (first, p50, last ms, minor page faults)."""
    rows = []
    for n in sizes:
        port = run.free_port()
        proc = start(server, port, libdir)
        try:
            run.wait_ready(port, "/", proc)
            time.sleep(0.5)
            pids = run.children(proc.pid)
            rushes = []
            for pause in (0, 0, REST_BEFORE_THIRD):
                time.sleep(pause)
                before = minor_faults(pids)
                times = burst(port, n)
                rushes.append((*times, minor_faults(pids) - before))
            rows.append((n, rushes))
            print(f"{server} burst {n}: {rushes}", file=sys.stderr)
        finally:
            run.stop(proc)
    return rows


def measure(server, idle_counts, libdir, settle=2.0, busy_counts=(64,), plain=False, shared=False):
    port = run.free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = start(server, port, libdir, own_session=not shared)
        rows = []
        held = []
        try:
            run.wait_ready(port, "/", proc)
            script = None if plain else run.lua_script(tmp, "GET", b"", 13, [])
            run.run_wrk(port, "/", script, 64, 1, "1")  # warm-up
            for n in idle_counts:
                pids = run.children(proc.pid)
                before_kb = rss_kb(pids)
                new = n - len(held)
                try:
                    held += hold_idle(port, new) if new > 0 else []
                except RuntimeError as e:
                    # A server that cannot hold them is reported, and the next size not tried.
                    rows.append({"idle": n, "failed": str(e)})
                    print(f"{server} idle={n}: {e}", file=sys.stderr)
                    break
                time.sleep(settle)
                for i, busy in enumerate(busy_counts):
                    cpu0, sw0 = run.cpu_seconds(pids), run.switches(pids)
                    machine0 = run.machine_seconds()
                    out = run.run_wrk(port, "/", script, busy, 3, "1")
                    cpu = run.cpu_seconds(run.children(proc.pid)) - cpu0
                    sw = run.switches(run.children(proc.pid)) - sw0
                    stolen = run.stolen_since(machine0)
                    # Measured after the load: an allocator gives freed memory back to the system
                    # when its thread next allocates, not while the process sleeps.
                    per_conn = (rss_kb(pids) - before_kb) * 1024 / new if new > 0 and i == 0 else None
                    total = int(re.search(r"(\d+) requests in", out).group(1))
                    bad = int(m.group(1)) if (m := re.search(r"BAD (\d+)", out)) else 0
                    bad += int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
                    if sock := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
                        bad += sum(map(int, sock.groups()))
                    rows.append({"idle": n, "busy": busy, "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
                                 "cpu_us": cpu / total * 1e6, "switches": sw / total,
                                 "p99_ms": run.wrk_p99_ms(out),
                                 "errors": bad, "bytes_per_idle": per_conn, "rss_mb": rss_kb(pids) / 1024,
                                 "stolen": stolen})
                    print(f"{server} idle={n} busy={busy}: {rows[-1]}", file=sys.stderr)
        finally:
            for s in held:
                s.close()
            if shared:
                # Not in a group of its own: stopped by its process id (its processes follow).
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            else:
                run.stop(proc)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--servers", default="wsgo,bjoern,granian")
    ap.add_argument("--idle", default="0,1000,10000")
    ap.add_argument("--busy", default="64", help="connections of the load, one load per count (default 64)")
    ap.add_argument("--plain", action="store_true", help="wrk without the response-checking script")
    ap.add_argument("--shared-group", action="store_true", help="the server in this script's session, with wrk")
    ap.add_argument("--burst", help="connection counts: a fresh server answers each at once, twice")
    ap.add_argument("--settle", type=float, default=2.0,
                    help="seconds between opening the idle connections and the load (default 2: "
                         "ours rest after 1 s idle)")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.sched_setaffinity(0, {1})
    run.RESULTS.mkdir(exist_ok=True)
    (run.RESULTS / "webroot").mkdir(exist_ok=True)
    idle = [int(n) for n in args.idle.split(",")]
    libdir = run.python_libdir()
    if args.burst:
        print("| server | connections | first rush: first · median · last response, ms · page faults | again "
              f"| again after {REST_BEFORE_THIRD:.0f} s |")
        print("|---|---|---|---|---|")
        for server in args.servers.split(","):
            for n, rushes in measure_bursts(server, [int(n) for n in args.burst.split(",")], libdir):
                cells = " | ".join(" · ".join(f"{t:.1f}" for t in r[:3]) + f" · {r[3]:,}" for r in rushes)
                print(f"| {server} | {n:,} | {cells} |")
        return
    busy = [int(n) for n in args.busy.split(",")]
    print("| server | idle connections | busy connections | requests/s | CPU µs per request | switches per request "
          "| p99 ms | errors | RSS MB | bytes per idle connection | host took |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for server in args.servers.split(","):
        for r in measure(server, idle, libdir, args.settle, busy, args.plain, args.shared_group):
            if "failed" in r:
                print(f"| {server} | {r['idle']:,} | | failed: {r['failed']} | | | | | | | |")
                continue
            per = "-" if r["bytes_per_idle"] is None else f"{r['bytes_per_idle']:,.0f}"
            p99 = "-" if r["p99_ms"] is None else f"{r['p99_ms']:.2f}"
            print(f"| {server} | {r['idle']:,} | {r['busy']:,} | {r['rps']:,.0f} | {r['cpu_us']:.1f} | {r['switches']:.3f} | {p99} | "
                  f"{r['errors']} | {r['rss_mb']:.0f} | {per} | {r['stolen']:.1%} |")


if __name__ == "__main__":
    main()
