"""Soak test: a mixed load for a while, with the server's memory and descriptors sampled.

Load (threads in this process, all on 127.0.0.1): keep-alive and new-connection GETs, 100 KB
uploads, streamed responses, static files, cache hits, app errors, clients that disconnect
mid-upload and mid-download. Every 10 s: the resident memory (sum over the server's processes) and
open descriptors of the server processes. Passes when RSS grows less than 5% after the warm-up
(the mean of the last minute against the mean of the first minute after the warm-up: single
samples swing by several MB with the 5 MB responses in flight), and the descriptors are back to
their starting count once the load stops.

Usage: python3 loadtest/soak.py [--seconds 600] [--warmup 60] [--binary target/release/wsgo]
Writes loadtest/results/soak-<timestamp>.json and prints a summary. Stops the server by pid.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from run import children  # noqa: E402


def rss_kb(pids):
    total = 0
    for pid in pids:
        try:
            for line in open(f"/proc/{pid}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def fds(pids, exclude):
    n = 0
    for pid in pids:
        if pid in exclude:
            continue
        try:
            n += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            pass
    return n


def rss_growth(samples, warmup, window=60):
    """Mean RSS of the last `window` seconds against the first `window` seconds after warm-up."""
    after = [s for s in samples if s["t"] >= warmup]
    if not after:
        return 0.0, 0, 0, 0
    end = after[-1]["t"]
    head = [s["rss_kb"] for s in after if s["t"] < after[0]["t"] + window]
    tail = [s["rss_kb"] for s in after if s["t"] > end - window]
    first, last = sum(head) / len(head), sum(tail) / len(tail)
    return last / first - 1, first, last, max(s["rss_kb"] for s in after)


def request(port, raw, read_all=True, limit=None):
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(raw)
        got = 0
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += len(chunk)
            if limit and got >= limit:
                return got  # leave mid-download
        return got


def worker(port, kind, stop, counts, lock):
    session = None
    while not stop.is_set():
        try:
            if kind == "keepalive":
                import http.client
                if session is None:
                    session = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                for path in ("/", "/cached", "/static/4k.txt", "/stream", "/error"):
                    session.request("GET", path)
                    r = session.getresponse()
                    r.read()
            elif kind == "new":
                request(port, b"GET / HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n")
            elif kind == "upload":
                body = b"u" * 100_000
                request(port, b"POST /upload HTTP/1.1\r\nHost: s\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            elif kind == "abort-upload":
                with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
                    s.sendall(b"POST /upload HTTP/1.1\r\nHost: s\r\nContent-Length: 3000000\r\n\r\n" + b"a" * 500_000)
            elif kind == "abort-download":
                request(port, b"GET /big HTTP/1.1\r\nHost: s\r\n\r\n", limit=100_000)
            with lock:
                counts[kind] = counts.get(kind, 0) + 1
        except Exception as e:  # noqa: BLE001
            session = None
            with lock:
                counts["errors"] = counts.get("errors", 0) + 1
                counts.setdefault("last_error", repr(e))
            time.sleep(0.05)
    if session is not None:
        session.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=600)
    ap.add_argument("--warmup", type=int, default=60)
    ap.add_argument("--binary", default=str(ROOT / "target" / "release" / "wsgo"))
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="wsgo-soak-")
    webroot = Path(tmp) / "webroot"
    webroot.mkdir()
    (webroot / "4k.txt").write_bytes(b"s" * 4096)
    err = open(Path(tmp) / "stderr", "wb")
    env = dict(os.environ, VIRTUAL_ENV=str(ROOT / ".venv"))
    proc = subprocess.Popen([args.binary, "--module", "soak_app", "--http-socket", "127.0.0.1:0", "--max-age", "30",
                             "--static-map", f"/static={webroot}", "--processes", "2", "--workers", "8"],
                            cwd=HERE / "apps", env=env, stdout=subprocess.DEVNULL, stderr=err)
    port = None
    for _ in range(300):
        text = (Path(tmp) / "stderr").read_text(errors="replace")
        if " on http://127.0.0.1:" in text:
            port = int(text.split(" on http://127.0.0.1:", 1)[1].split()[0].strip("()"))
            break
        time.sleep(0.1)
    assert port, "server did not start"
    time.sleep(1)
    pids = children(proc.pid)
    base_fds = fds(pids, {proc.pid})
    stop = threading.Event()
    counts, lock = {}, threading.Lock()
    kinds = ["keepalive", "keepalive", "new", "new", "upload", "abort-upload", "abort-download"]
    threads = [threading.Thread(target=worker, args=(port, k, stop, counts, lock), daemon=True) for k in kinds]
    for t in threads:
        t.start()
    samples = []
    start = time.monotonic()
    while time.monotonic() - start < args.seconds:
        time.sleep(10)
        pids = children(proc.pid)
        samples.append({"t": round(time.monotonic() - start), "rss_kb": rss_kb(pids), "fds": fds(pids, {proc.pid})})
        print(f"[{samples[-1]['t']:4d}s] rss {samples[-1]['rss_kb'] / 1024:.1f} MB, fds {samples[-1]['fds']}, "
              f"requests {sum(v for k, v in counts.items() if isinstance(v, int) and k != 'errors')}", flush=True)
    stop.set()
    for t in threads:
        t.join(60)
    time.sleep(3)
    pids = children(proc.pid)
    end_fds = fds(pids, {proc.pid})
    os.kill(proc.pid, signal.SIGTERM)
    proc.wait(60)
    growth, first, last, peak = rss_growth(samples, args.warmup)
    result = {"seconds": args.seconds, "counts": counts, "samples": samples, "rss_growth_after_warmup": growth,
              "fds_start": base_fds, "fds_end": end_fds, "exit": proc.returncode}
    out = HERE / "results" / f"soak-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    ok = growth < 0.05 and end_fds == base_fds and proc.returncode == 0
    print(f"soak: {sum(v for k, v in counts.items() if isinstance(v, int) and k != 'errors')} operations, "
          f"{counts.get('errors', 0)} client-side errors; RSS first minute after warm-up {first / 1024:.1f} MB, "
          f"last minute {last / 1024:.1f} MB ({growth:+.1%}), peak {peak / 1024:.1f} MB; descriptors {base_fds} -> "
          f"{end_fds}; exit {proc.returncode}; "
          f"{'PASS' if ok else 'FAIL'} ({out.relative_to(ROOT)})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
