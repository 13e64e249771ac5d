"""Hello on one core: wsgo (ours), granian and the original wsgo, same app, same run.

Each server is pinned to CPU 0 (`taskset -c 0`), wrk to CPU 1, 64 connections. Reported per
server: requests/s, p99 latency, and server CPU time per request (user+system of the server's
processes over the run / requests), plus ours as a ratio to each peer. Every response is checked
by wrk's non-2xx/socket-error counters: a server that fails fast does not win.

Usage: loadtest/.venv/bin/python loadtest/hello_one_core.py [--duration 10] [--json out.json]
(loadtest/setup.sh creates that venv with the peers.) Servers are stopped by process id.
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import APPS, ROOT, VENV, children, cpu_seconds, free_port, python_libdir, wait_ready  # noqa: E402


def servers(port, python_lib):
    ours = os.environ.get("WSGO_BIN", str(ROOT / "target" / "release" / "wsgo"))
    return {
        "wsgo-rs": [ours, "--module", "hello", "--http-socket", f"127.0.0.1:{port}", "--io-threads", "1", "--workers", "16"],
        "granian": [str(VENV / "bin" / "granian"), "--interface", "wsgi", "--workers", "1", "--host", "127.0.0.1",
                    "--port", str(port), "--no-ws", "hello:application"],
        "wsgo-go-0.0.25": [str(VENV / "bin" / "wsgo"), "--module", "hello", "--http-socket", f"127.0.0.1:{port}",
                           "--process", "1", "--workers", "16"],
    }


def run_one(name, cmd, port, duration, python_lib):
    env = dict(os.environ, VIRTUAL_ENV=str(VENV), PATH=f"{VENV}/bin:{os.environ['PATH']}",
               LD_LIBRARY_PATH=python_lib)
    proc = subprocess.Popen(["taskset", "-c", "0", *cmd], cwd=APPS, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(port, "/", proc)
        subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c64", "-d2s", f"http://127.0.0.1:{port}/"],
                       capture_output=True, check=True)
        pids = children(proc.pid)
        before = cpu_seconds(pids)
        out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c64", f"-d{duration}s", "--latency",
                              f"http://127.0.0.1:{port}/"], capture_output=True, text=True, check=True).stdout
        cpu = cpu_seconds(pids) - before
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    total = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"^\s*99%\s+(\S+)", out, re.M).group(1)  # at a line's start: not a `9.99%`
    errors = re.search(r"Socket errors: (.*)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "server": name, "requests": total, "rps": rps, "p99": p99,
        "cpu_us_per_req": cpu / total * 1e6 if total else None,
        "errors": (errors.group(1) if errors else "") + (f" non2xx={non2xx.group(1)}" if non2xx else ""),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--json")
    args = ap.parse_args()
    python_lib = python_libdir()
    results = []
    for name, cmd in servers(0, python_lib).items():
        port = free_port()
        cmd = servers(port, python_lib)[name]
        results.append(run_one(name, cmd, port, args.duration, python_lib))
    ours = results[0]
    print(f"hello, one core (server on cpu 0, wrk -c64 on cpu 1, {args.duration}s), python {sys.version.split()[0]}")
    print("| server | requests/s | p99 | server CPU µs/request | ours vs it (req per CPU-second) | errors |")
    print("|---|---|---|---|---|---|")
    for r in results:
        ratio = r["cpu_us_per_req"] / ours["cpu_us_per_req"] if r["cpu_us_per_req"] and ours["cpu_us_per_req"] else float("nan")
        print(f"| {r['server']} | {r['rps']:.0f} | {r['p99']} | {r['cpu_us_per_req']:.2f} | {ratio:.2f}x | {r['errors'] or '-'} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
