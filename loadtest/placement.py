"""All cores with an unpinned load generator: how a server's CPU per request depends on where the
kernel puts wrk's threads.

In the all-cores layout wrk runs on the server's CPUs, unpinned, and the kernel places its
threads. Sometimes they share one CPU, and a server process pinned to the other CPU
(`--cpu-share`) then gets its requests one at a time, while the process beside wrk gets them in
batches. A server that hands requests between threads (ours) pays more per request when they come
one at a time; a single-threaded one (bjoern) pays the same either way. This script measures it:
each run starts the server afresh (the kernel places wrk anew, and the connections are split among
the processes anew), samples every 50 ms which CPU each wrk thread is on, and reports requests/s,
server CPU time and context switches per request, and the share of samples in which wrk's threads
were on different CPUs ("apart").

Usage:
    loadtest/.venv/bin/python loadtest/placement.py [--servers wsgo-share,bjoern] [--runs 8]
        [--duration 5] [--scenario hello]
Prints a markdown table per run and a summary per server: the median and range of CPU time and
of context switches per request, and how CPU time follows the switches across runs (a least-squares
line and the correlation). Only 127.0.0.1; servers are stopped by process id; every load is bounded by wrk's duration.
"""

import argparse
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (the load test's server commands and measurements)


def thread_cpus(pid):
    """The CPU each thread of `pid` but its main thread (wrk's sleeps while the others load) last
    ran on (field 39 of its stat)."""
    cpus = []
    for task in (Path("/proc") / str(pid) / "task").glob("*"):
        if task.name == str(pid):
            continue
        try:
            cpus.append(int((task / "stat").read_text().rsplit(")", 1)[1].split()[36]))
        except (OSError, IndexError, ValueError):
            pass
    return cpus


def one_run(server, scenario, duration, libdir, webroot):
    path, conns = run.SCENARIOS[scenario][0], run.SCENARIOS[scenario][4]
    with run.all_cores_server(server, scenario, libdir, webroot) as (port, proc, script):
        run.run_wrk(port, path, script, conns, 1, None)  # warm-up
        pids = run.children(proc.pid)
        cpu0, sw0 = run.cpu_seconds(pids), run.switches(pids)
        wrk = subprocess.Popen(["wrk", f"-t{run.NCPU}", f"-c{conns}", f"-d{duration}s", "--timeout", "5s",
                                "-s", script, f"http://127.0.0.1:{port}{path}"],
                               stdout=subprocess.PIPE, text=True)
        samples = []

        def sample():
            while wrk.poll() is None:
                cpus = thread_cpus(wrk.pid)
                if len(cpus) > 1:
                    samples.append(len(set(cpus)) == len(cpus))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample)
        sampler.start()
        out, _ = wrk.communicate(timeout=duration + 30)
        sampler.join()
        pids = run.children(proc.pid)
        cpu, sw = run.cpu_seconds(pids) - cpu0, run.switches(pids) - sw0
    total = int(re.search(r"(\d+) requests in", out).group(1))
    bad = int(re.search(r"BAD (\d+)", out).group(1))
    return {"server": server, "rps": total / duration, "cpu_us": cpu / total * 1e6, "switches": sw / total,
            "apart": sum(samples) / len(samples) if samples else None, "errors": bad}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--servers", default="wsgo-share,bjoern")
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--scenario", default="hello")
    args = ap.parse_args()
    libdir, webroot = run.all_cores_setup()
    servers = args.servers.split(",")
    rows = []
    print(f"{args.scenario}, all cores ({run.NCPU} CPUs), wrk -t{run.NCPU} unpinned, {args.duration} s per run\n")
    print("| run | server | requests/s | server CPU µs per request | switches per request | wrk's threads apart | errors |")
    print("|---|---|---|---|---|---|---|")
    for i, server in run.alternating(servers, args.runs):
        r = one_run(server, args.scenario, args.duration, libdir, webroot)
        rows.append(r)
        apart = "-" if r["apart"] is None else f"{r['apart']:.0%}"
        print(f"| {i} | {server} | {r['rps']:,.0f} | {r['cpu_us']:.1f} | {r['switches']:.3f} | {apart} | "
              f"{r['errors']} |", flush=True)
    print("\n| server | CPU µs per request: median (range) | switches per request: median (range) | "
          "CPU against switches, least squares |")
    print("|---|---|---|---|")
    for server in servers:
        cpu = [r["cpu_us"] for r in rows if r["server"] == server]
        sw = [r["switches"] for r in rows if r["server"] == server]
        fit = "-"
        if len(cpu) > 2 and max(sw) - min(sw) > 0.1:
            slope, intercept = statistics.linear_regression(sw, cpu)
            fit = f"{intercept:.1f} + {slope:.1f} x switches (r = {statistics.correlation(sw, cpu):.2f})"
        print(f"| {server} | {statistics.median(cpu):.1f} ({min(cpu):.1f}-{max(cpu):.1f}) | "
              f"{statistics.median(sw):.3f} ({min(sw):.3f}-{max(sw):.3f}) | {fit} |")


if __name__ == "__main__":
    main()
