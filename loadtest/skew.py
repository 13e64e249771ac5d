"""Every client's packets coming in on one CPU: what `--incoming-cpu` and its guard do.

A network card with one receive queue and no RPS takes in every packet on one CPU; on loopback
the CPU of the connecting thread does. With `--incoming-cpu` the kernel then hands every new
connection to that CPU's process, and the guard (README.md, "Connections served where they come
in") takes that process off steering once it is busy and far busier than the others, so that the
connections its CPU takes in are spread by the hash again. This script stands for such a card:
wrk runs pinned to CPU 0, one thread, and opens a connection per request (`Connection: close`, so
new connections keep coming; `--keep-alive`: made once at the start, which no guard can move).
The default scenario is run.py's JSON page, whose server work (about 40 µs a request) is more than
wrk's, so the server, not wrk, bounds the throughput. Each run starts the server afresh, the servers alternating; per run:
requests/s, server CPU per request, and the share of the server's CPU time its busiest process
used over the whole run and over its second half (after the guard had time to act).

Usage:
    WSGO_BASE_BIN=/path/to/other/wsgo loadtest/.venv/bin/python loadtest/skew.py
        [--servers wsgo-steer,wsgo-steer-base,wsgo-share,bjoern] [--runs 3] [--duration 10]
        [--scenario json] [--keep-alive]
Only 127.0.0.1; servers are stopped by process id; every load is bounded by wrk's duration.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (the load test's server commands and measurements)


def each_cpu(pids):
    return {p: run.cpu_seconds([p]) for p in pids}


def top_share(before, after):
    used = [after[p] - before.get(p, 0) for p in after]
    return max(used) / sum(used) if sum(used) > 0 else None


def one_run(server, scenario, duration, libdir, webroot, close):
    path, method, body, expected, conns, headers, _, app = run.SCENARIOS[scenario]
    if close and "Connection: close" not in headers:
        headers = [*headers, "Connection: close"]
    port = run.free_port()
    with tempfile.TemporaryDirectory() as tmp:
        cmd = run.server_command(server, port, run.NCPU, webroot, app)
        env = dict(os.environ, VIRTUAL_ENV=str(run.VENV), PATH=f"{run.VENV}/bin:{os.environ['PATH']}",
                   LD_LIBRARY_PATH=libdir)
        proc = subprocess.Popen(cmd, cwd=run.APPS, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            run.wait_ready(port, path, proc)
            script = run.lua_script(tmp, method, body, expected, headers)
            pids = run.children(proc.pid)
            start = each_cpu(pids)
            stolen = run.machine_seconds()
            wrk = subprocess.Popen(["taskset", "-c", "0", "wrk", "-t1", f"-c{conns}", f"-d{duration}s",
                                    "--timeout", "5s", "-s", script, f"http://127.0.0.1:{port}{path}"],
                                   stdout=subprocess.PIPE, text=True)
            time.sleep(duration / 2)
            half = each_cpu(pids)
            out, _ = wrk.communicate(timeout=duration + 30)
            end = each_cpu(pids)
            stolen = run.stolen_since(stolen)
        finally:
            run.stop(proc)
    total = int(re.search(r"(\d+) requests in", out).group(1))
    bad = int(re.search(r"BAD (\d+)", out).group(1))
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    cpu = sum(end.values()) - sum(start.values())
    return {"server": server, "rps": total / duration, "cpu_us": cpu / total * 1e6,
            "top": top_share(start, end), "top_late": top_share(half, end), "stolen": stolen,
            "errors": bad + (sum(map(int, sock.groups())) if sock else 0)}


def pct(x):
    return "-" if x is None else f"{x:.0%}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--servers", default="wsgo-steer,wsgo-steer-base,wsgo-share,bjoern")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--scenario", default="json")
    ap.add_argument("--keep-alive", action="store_true", help="keep the connections (default: one per request)")
    args = ap.parse_args()
    if run.NCPU < 2:
        sys.exit("needs two or more CPUs")
    libdir = run.python_libdir()
    webroot = run.RESULTS / "webroot"
    webroot.mkdir(parents=True, exist_ok=True)
    servers = args.servers.split(",")
    rows = []
    how = "keep-alive connections" if args.keep_alive else "a connection per request"
    print(f"{args.scenario}, {how}, all cores ({run.NCPU} CPUs), wrk -t1 pinned to CPU 0, {args.duration} s per run\n")
    print("| run | server | requests/s | server CPU µs per request | busiest process: whole run | "
          "second half | host took | errors |")
    print("|---|---|---|---|---|---|---|---|")
    for i in range(args.runs):
        # Alternating, so that a drift of the machine falls on every server alike.
        for server in servers if i % 2 == 0 else servers[::-1]:
            r = one_run(server, args.scenario, args.duration, libdir, str(webroot), not args.keep_alive)
            rows.append(r)
            print(f"| {i + 1} | {server} | {r['rps']:,.0f} | {r['cpu_us']:.1f} | {pct(r['top'])} | "
                  f"{pct(r['top_late'])} | {pct(r['stolen'])} | {r['errors']} |", flush=True)
    print("\n| server | requests/s, median | server CPU µs per request, median | busiest process, second half, "
          "median |")
    print("|---|---|---|---|")
    for server in servers:
        mine = [r for r in rows if r["server"] == server]
        late = [r["top_late"] for r in mine if r["top_late"] is not None]
        print(f"| {server} | {statistics.median(r['rps'] for r in mine):,.0f} | "
              f"{statistics.median(r['cpu_us'] for r in mine):.1f} | {pct(statistics.median(late) if late else None)} |")


if __name__ == "__main__":
    main()
