"""What the priority rules do for a well-behaved client while a greedy one floods.

One server (pinned to CPU 0) runs the Flask endpoint that waits 2 ms (loadtest/apps/flask_io.py)
with 16 workers. A greedy client (wrk, 64 connections: four times the workers) and a polite one
(one request at a time) both come through a proxy on this host, which names them in
X-Forwarded-For (203.0.113.7 and 198.51.100.9: public addresses, so wsgo ranks them). Reported:
the greedy client's requests/s and the polite client's latency, p50 and p99.

Usage: loadtest/.venv/bin/python loadtest/priority.py [--servers wsgo,gunicorn,granian,uwsgi]
Prints a markdown table. Only 127.0.0.1; servers are stopped by process id.
"""

import argparse
import http.client
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402

APP = "flask_io:application"
PATH = "/api/orders"
SECONDS = 6


def polite(port, stop, out):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    while not stop.is_set():
        t0 = time.perf_counter()
        conn.request("GET", PATH, headers={"X-Forwarded-For": "198.51.100.9"})
        r = conn.getresponse()
        r.read()
        out.append((time.perf_counter() - t0, r.status))
        time.sleep(0.01)


def measure(server, libdir):
    port = run.free_port()
    with tempfile.TemporaryDirectory() as tmp:
        cmd = run.server_command(server, port, 1, str(run.RESULTS / "webroot"), APP)
        env = dict(os.environ, VIRTUAL_ENV=str(run.VENV), PATH=f"{run.VENV}/bin:{os.environ['PATH']}",
                   LD_LIBRARY_PATH=libdir)
        proc = subprocess.Popen(["taskset", "-c", "0"] + cmd, cwd=run.APPS, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            run.wait_ready(port, PATH, proc)
            script = run.lua_script(tmp, "GET", b"", None, ["X-Forwarded-For: 203.0.113.7"])
            stop, lat = threading.Event(), []
            t = threading.Thread(target=polite, args=(port, stop, lat))
            time.sleep(0.2)
            t.start()
            out = run.run_wrk(port, PATH, script, 64, SECONDS, "1")
            stop.set()
            t.join()
        finally:
            run.stop(proc)
    times = sorted(x for x, _ in lat)
    bad = sum(1 for _, s in lat if s != 200)
    return {
        "server": server,
        "greedy_rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "greedy_p99": run.wrk_p99_ms(out),
        "greedy_bad": int(re.search(r"BAD (\d+)", out).group(1)),
        "polite_n": len(times),
        "polite_p50": statistics.median(times) * 1000,
        "polite_p99": times[min(len(times) - 1, int(len(times) * 0.99))] * 1000,
        "polite_bad": bad,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--servers", default="wsgo,gunicorn,granian,uwsgi")
    args = ap.parse_args()
    os.sched_setaffinity(0, {1})
    (run.RESULTS / "webroot").mkdir(parents=True, exist_ok=True)
    libdir = run.python_libdir()
    print("| server | greedy client: requests/s · p99 ms | polite client: requests · p50 ms · p99 ms | errors |")
    print("|---|---|---|---|")
    for server in args.servers.split(","):
        r = measure(server, libdir)
        print(f"| {server} | {r['greedy_rps']:,.0f} · {r['greedy_p99']:.1f} | {r['polite_n']} · {r['polite_p50']:.1f} · "
              f"{r['polite_p99']:.1f} | {r['greedy_bad'] + r['polite_bad']} |", flush=True)


if __name__ == "__main__":
    main()
