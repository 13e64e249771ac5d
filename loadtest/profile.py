"""Where each microsecond of a request goes: server CPU per request split by where the CPU ran
(the kernel, our code, CPython, libc, the peer's own C code), for several servers in one run.

For each layout, scenario and server: the server is started as `run.py` starts it, warmed up for
1 s, then loaded by wrk (with the same checking script) for `--duration` seconds while
`perf record -e cpu-clock` samples the server's CPUs (CPU 0 on one core, every CPU on all cores).
The server's CPU time per request comes from /proc (as in `run.py`); it is split by the share of
the server's own samples in each part. The kernel's part is split again by the name of the
function sampled: scheduling and wake-ups, TCP/IP and sockets, io_uring, and the rest (system
call entry, memory, timers). Context switches per request are counted from /proc too.

Usage:
    loadtest/.venv/bin/python loadtest/profile.py [--layouts one-core,all-cores]
        [--scenarios hello,json,post_16k,rust_hello] [--servers wsgo,wsgo-share,bjoern]
        [--duration 5] [--runs 2]
Needs `perf` (linux-perf) and root (or perf_event_paranoid <= 0). Only 127.0.0.1; servers are
stopped by process id; perf stops with wrk.
"""

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (the load test's server commands and measurements)

PARTS = ["kernel: scheduling", "kernel: TCP/IP", "kernel: io_uring", "kernel: other", "ours", "CPython",
         "server's own C", "libc", "other"]

# Kernel work by the first function on the sample's stack (from the sampled one outwards) whose
# name says what it is for: a sample in a lock or a copy counts for the path that took it, so
# waking a thread is scheduling wherever its lock was released. On this VM the sampling timer
# fires when interrupts are enabled again, so many samples land in `_raw_spin_unlock_irqrestore`;
# its caller is what they belong to.
KERNEL = [
    ("kernel: scheduling", re.compile(r"schedule|switch_to|pick_next|enqueue_|dequeue_|update_curr|ttwu|"
                                      r"try_to_wake|wake_up|futex|finish_task|select_task|place_entity")),
    ("kernel: io_uring", re.compile(r"^io_|^__io_|uring")),
    ("kernel: TCP/IP", re.compile(r"tcp|^ip_|^__ip|skb|sock|^sk_|^__sk|^dev_|^__dev|loopback|napi|inet|"
                                  r"^__sys_(send|recv|accept)|softirq|netif|^net_|^__net")),
]


def part_of(frames, server):
    """The part of a sample with these (symbol, dso) frames, the sampled function first."""
    sym, dso = frames[0]
    if dso == "[kernel.kallsyms]":
        for f_sym, f_dso in frames:
            if f_dso != "[kernel.kallsyms]":
                break
            for name, pattern in KERNEL:
                if pattern.search(f_sym):
                    return name
        return "kernel: other"
    base = os.path.basename(dso)
    if base == "wsgo" and server.startswith("wsgo") and server != "wsgo-go":
        return "ours"
    if base.startswith(("_bjoern", "libev", "_granian", "libuwsgi", "pyuwsgi")) or base in ("wsgo", "nginx"):
        return "server's own C"
    if base.startswith("libpython") or ".cpython-" in base:
        return "CPython"
    if base.startswith(("libc.so", "libc-", "ld-linux", "libm.so", "libpthread")) or base == "[vdso]":
        return "libc"
    return "other"


def thread_kind(comm):
    """Our threads by name: the core threads, the Python threads, the rest."""
    if comm.startswith("wsgo-core"):
        return "core threads"
    if comm.startswith("wsgo-py"):
        return "Python threads"
    return "other threads"


def samples(data, pids, server):
    """Samples of `pids` in perf.data, counted by part and by thread kind."""
    out = subprocess.run(["perf", "script", "-i", data, "-F", "pid,comm,ip,sym,dso", "--pid",
                          ",".join(map(str, pids))], capture_output=True, text=True, check=True).stdout
    parts = dict.fromkeys(PARTS, 0)
    threads = {}
    for block in out.split("\n\n"):
        lines = block.strip("\n").splitlines()
        if len(lines) < 2:
            continue
        comm = lines[0].strip().rsplit(None, 1)[0]
        frames = []
        for line in lines[1:]:
            m = re.match(r"\s*[0-9a-f]+ (.*) \((.*)\)$", line)
            if m:
                frames.append((re.sub(r"\+0x[0-9a-f]+$", "", m.group(1)), m.group(2)))
        if frames:
            parts[part_of(frames, server)] += 1
            kind = thread_kind(comm)
            threads[kind] = threads.get(kind, 0) + 1
    return parts, threads


def one_cell(server, scenario, layout, duration, libdir, webroot):
    path, method, body, expected, conns, headers, _, app = run.SCENARIOS[scenario]
    one = layout == "one-core"
    port = run.free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = run.launch(run.server_command(server, port, 1 if one else run.NCPU, webroot, app), libdir, one)
        try:
            run.wait_ready(port, path if method == "GET" else "/", proc)
            script = run.lua_script(tmp, method, body, expected, headers)
            pin = "1" if one else None
            run.run_wrk(port, path, script, conns, 1, pin)  # warm-up
            pids = run.children(proc.pid)
            data = str(Path(tmp) / "perf.data")
            perf = subprocess.Popen(["perf", "record", "-q", "-g", "-e", "cpu-clock", "-F", "4999", "-o", data]
                                    + (["-C", "0"] if one else ["-a"]), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            cpu0, sw0 = run.cpu_seconds(pids), run.switches(pids)
            out = run.run_wrk(port, path, script, conns, duration, pin)
            cpu, sw = run.cpu_seconds(pids) - cpu0, run.switches(pids) - sw0
            perf.send_signal(signal.SIGINT)
            perf.wait(30)
            counts, threads = samples(data, pids, server)
        finally:
            run.stop(proc)
    total = int(re.search(r"(\d+) requests in", out).group(1))
    bad = int(re.search(r"BAD (\d+)", out).group(1))
    us = cpu / total * 1e6
    n = sum(counts.values()) or 1
    return {"server": server, "scenario": scenario, "layout": layout, "rps": total / duration, "cpu_us": us,
            "switches": sw / total, "errors": bad, "parts": {k: us * v / n for k, v in counts.items()},
            "threads": {k: us * v / n for k, v in threads.items()},
            "samples": n}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layouts", default="one-core,all-cores")
    ap.add_argument("--scenarios", default="hello,json,post_16k,rust_hello")
    ap.add_argument("--servers", default="wsgo,wsgo-share,bjoern")
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args()
    libdir = run.python_libdir()
    webroot = run.RESULTS / "webroot"
    webroot.mkdir(parents=True, exist_ok=True)
    servers = args.servers.split(",")
    for layout in args.layouts.split(","):
        for scenario in args.scenarios.split(","):
            need = run.SCENARIOS[scenario][6]
            cells = [s for s in servers if need in run.SUPPORTS[s]
                     and not (layout == "one-core" and s in run.MULTI)]
            if not cells:
                continue
            rows = []
            for i in range(args.runs):
                # Alternating, so that a drift of the machine falls on every server alike.
                for server in cells if i % 2 == 0 else cells[::-1]:
                    rows.append(one_cell(server, scenario, layout, args.duration, libdir, str(webroot)))
                    print(f"{layout} {scenario} {server}: {rows[-1]['cpu_us']:.2f} µs, "
                          f"{rows[-1]['switches']:.3f} switches, {rows[-1]['errors']} errors", file=sys.stderr)
            print(f"\n{scenario}, {layout}: server CPU µs per request, the median of {args.runs} runs of "
                  f"{args.duration} s, split by perf's samples of the server\n")
            print("| part | " + " | ".join(cells) + " |")
            print("|---|" + "---|" * len(cells))
            med = {s: {k: statistics.median([r["parts"][k] for r in rows if r["server"] == s]) for k in PARTS}
                   for s in cells}
            for k in PARTS:
                if any(med[s][k] >= 0.05 for s in cells):
                    print(f"| {k} | " + " | ".join(f"{med[s][k]:.2f}" for s in cells) + " |")
            for kind in ("core threads", "Python threads", "other threads"):
                cols = [f"{statistics.median([r['threads'].get(kind, 0) for r in rows if r['server'] == s]):.2f}"
                        if run.is_ours(s) else "-" for s in cells]
                if any(c != "-" for c in cols):
                    print(f"| of which on our {kind} | " + " | ".join(cols) + " |")
            for label, key, spec in (("total (/proc)", "cpu_us", ".2f"), ("context switches", "switches", ".3f"),
                                     ("requests/s", "rps", ",.0f")):
                vals = [statistics.median([r[key] for r in rows if r["server"] == s]) for s in cells]
                print(f"| {label} | " + " | ".join(format(v, spec) for v in vals) + " |")
            print("| errors, all runs | " + " | ".join(str(sum(r["errors"] for r in rows if r["server"] == s))
                                                     for s in cells) + " |")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
