"""How many requests a process has in progress at once under a saturating load, and what that
does to latency: one process on one CPU, 16 workers unless told, wrk's 64 connections.

A worker that waits for the GIL while another computes takes it by force after CPython's switch
interval (5 ms), in the middle of the other's request, and an app that lets the GIL go around its
database calls lets a waiting worker in there as well: with a CPU-bound app every worker can end
up holding a request in progress, each waiting for the GIL to come round. This script shows it:
the server runs `loadtest/apps/in_progress.py` (which wraps the app and counts the requests in
progress at each request's start) pinned to CPU 0, wrk runs on CPU 1, and each row gives
requests/s, p50/p99 and the counts' median, 90th percentile and maximum.

Usage:
    loadtest/.venv/bin/python loadtest/in_progress.py [--apps cpu,cpu_io,django,flask_io]
        [--servers wsgo,wsgo-base] [--workers 16,4] [--rounds 2] [--duration 5]
        [--all-cores] [--flags '--processes 2']
`--all-cores` leaves the server and wrk (one thread per CPU) unpinned; `--flags` adds server
flags (with `--processes 2` the counts are those of whichever process answers `/__in_progress`).
`wsgo` is $WSGO_BIN (default target/bench/release/wsgo), `wsgo-base` $WSGO_BASE_BIN. Only
127.0.0.1; servers are stopped by process id; every load is bounded by wrk's duration.
"""

import argparse
import json
import os
import re
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (free ports, start and stop, wrk and its output)

APPS = {
    "cpu": ("cpu", "/"),
    "cpu_io": ("cpu_io", "/"),
    "django": ("realsite.wsgi:application", "/products"),
    "flask_io": ("flask_io:application", "/api/orders"),
}


def percentile(counts, q):
    """The q-quantile of a histogram {value: times}."""
    total = sum(counts.values())
    seen = 0
    for value in sorted(counts):
        seen += counts[value]
        if seen >= q * total:
            return value
    return 0


def measure(server, app, workers, duration, libdir, all_cores=False, extra=()):
    module, path = APPS[app]
    root = Path(__file__).resolve().parents[1]
    ours = os.environ.get("WSGO_BIN", str(root / "target" / "bench" / "release" / "wsgo"))
    binary = os.environ.get("WSGO_BASE_BIN", ours) if server == "wsgo-base" else ours
    port = run.free_port()
    os.environ["IN_PROGRESS_APP"] = module
    cmd = [binary, "--module", "in_progress:application", "--http-socket", f"127.0.0.1:{port}",
           "--workers", str(workers), *extra]
    proc = run.launch(cmd, libdir, one_core=not all_cores)
    cpu = None if all_cores else "1"
    try:
        run.wait_ready(port, path, proc)
        run.run_wrk(port, path, None, 64, 2, cpu)  # warm-up
        stats = f"http://127.0.0.1:{port}/__in_progress"
        urllib.request.urlopen(stats, timeout=10).read()
        out = run.run_wrk(port, path, None, 64, duration, cpu)
        counts = {int(k): v for k, v in json.loads(urllib.request.urlopen(stats, timeout=10).read()).items()}
    finally:
        run.stop(proc)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50": run.parse_latency(re.search(r"^\s*50%\s+(\S+)", out, re.M).group(1)),
        "p99": run.wrk_p99_ms(out),
        "errors": int(errors.group(1)) if errors else 0,
        "median": percentile(counts, 0.5),
        "p90": percentile(counts, 0.9),
        "max": max(counts) if counts else 0,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--apps", default="cpu,cpu_io,django,flask_io")
    ap.add_argument("--servers", default="wsgo")
    ap.add_argument("--workers", default="16,4")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--flags", default="", help="more flags for the server, e.g. '--processes 2'")
    ap.add_argument("--all-cores", action="store_true",
                    help="the process and wrk (one thread per CPU) on every CPU, not pinned apart")
    args = ap.parse_args()
    libdir = run.python_libdir()
    where = ("unpinned, wrk -c64 with a thread per CPU" if args.all_cores
             else "on CPU 0, wrk -t1 -c64 on CPU 1")
    print(f"wsgo {args.flags or '(one process)'} {where}, {args.duration} s per cell, "
          f"{time.strftime('%Y-%m-%d %H:%M')}\n")
    print("| app | server | workers | requests/s | p50 / p99 ms | in progress: median · p90 · max |")
    print("|---|---|---|---|---|---|")
    for app in args.apps.split(","):
        for _ in range(args.rounds):
            for server in args.servers.split(","):
                for workers in map(int, args.workers.split(",")):
                    r = measure(server, app, workers, args.duration, libdir, args.all_cores,
                                args.flags.split())
                    errors = f" ({r['errors']} errors)" if r["errors"] else ""
                    print(f"| {app} | {server} | {workers} | {r['rps']:,.0f}{errors} | {r['p50']:.1f} / "
                          f"{r['p99']:.1f} | {r['median']} · {r['p90']} · {r['max']} |", flush=True)


if __name__ == "__main__":
    main()
