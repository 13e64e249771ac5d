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
import statistics
import subprocess
import sys
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
    path, conns = run.SCENARIOS[scenario][0], run.SCENARIOS[scenario][4]
    with run.all_cores_server(server, scenario, libdir, webroot, ["Connection: close"] if close else []) as (
            port, proc, script):
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
    total, errors = run.wrk_counts(out)
    cpu = sum(end.values()) - sum(start.values())
    return {"server": server, "rps": total / duration, "cpu_us": cpu / total * 1e6,
            "top": top_share(start, end), "top_late": top_share(half, end), "stolen": stolen, "errors": errors}


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
    libdir, webroot = run.all_cores_setup()
    servers = args.servers.split(",")
    rows = []
    how = "keep-alive connections" if args.keep_alive else "a connection per request"
    print(f"{args.scenario}, {how}, all cores ({run.NCPU} CPUs), wrk -t1 pinned to CPU 0, {args.duration} s per run\n")
    print("| run | server | requests/s | server CPU µs per request | busiest process: whole run | "
          "second half | host took | errors |")
    print("|---|---|---|---|---|---|---|---|")
    for i, server in run.alternating(servers, args.runs):
        r = one_run(server, args.scenario, args.duration, libdir, webroot, not args.keep_alive)
        rows.append(r)
        print(f"| {i} | {server} | {r['rps']:,.0f} | {r['cpu_us']:.1f} | {pct(r['top'])} | "
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
