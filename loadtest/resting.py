"""Idle connections resting and waking, checked request by request: 2,000 keep-alive connections
on one core thread (past the 1,000 from which idle ones rest), each sending its next request
after a random pause of 0-2.5 s (so most pauses outlast the 1 s rest time), some as two
pipelined requests and some with the head split in two writes. Every response must come, be a
200 with the app's body, and no connection may be closed by the server.

Usage: loadtest/.venv/bin/python loadtest/resting.py [--connections 2000] [--seconds 30]
  [--driver uring|epoll]
Only 127.0.0.1; the server is started here and stopped by its process id. Exits 1 on any error.
"""

import argparse
import os
import random
import resource
import selectors
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (the server's command line, readiness, stop)

BODY = b"Hello, World!"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--driver", choices=["uring", "epoll"], default="uring")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    port = run.free_port()
    cmd = run.server_command("wsgo", port, 1, str(run.RESULTS / "webroot"), app="hello:application")
    cmd += ["--io-threads", "1", "--workers", "4", "--process", "1", "--access-log", "off"]
    env = dict(os.environ, VIRTUAL_ENV=str(run.VENV), PATH=f"{run.VENV}/bin:{os.environ['PATH']}",
               LD_LIBRARY_PATH=run.python_libdir())
    if args.driver == "epoll":
        env["MONOIO_FORCE_LEGACY_DRIVER"] = "1"
    (run.RESULTS / "webroot").mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(cmd, cwd=run.APPS, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        run.wait_ready(port, "/", proc)
        errors, sent, answered = exercise(port, args.connections, args.seconds)
    finally:
        run.stop(proc)
    print(f"{args.driver}: {args.connections} connections, {sent} requests, {answered} answered, "
          f"{errors} errors")
    sys.exit(1 if errors or answered != sent else 0)


def exercise(port, n, seconds):
    sel = selectors.DefaultSelector()
    conns = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.setblocking(False)
        c = {"sock": s, "i": i, "next": 0.0, "want": 0, "buf": b""}
        conns.append(c)
        sel.register(s, selectors.EVENT_READ, c)
    end = time.monotonic() + seconds
    errors = sent = answered = 0

    def send(c):
        nonlocal sent
        count = random.choice([1, 1, 1, 2])
        data = b"".join(f"GET /?c={c['i']}&k={sent + j} HTTP/1.1\r\nHost: t\r\n\r\n".encode() for j in range(count))
        s = c["sock"]
        s.setblocking(True)
        if count == 1 and random.random() < 0.2:
            s.sendall(data[:7])
            time.sleep(0.001)
            s.sendall(data[7:])
        else:
            s.sendall(data)
        s.setblocking(False)
        c["want"] += count
        sent += count

    while True:
        now = time.monotonic()
        waiting = sum(c["want"] for c in conns)
        if now >= end and not waiting:
            break
        if now >= end + 10:
            print(f"{waiting} responses never came", file=sys.stderr)
            errors += waiting
            break
        for c in conns:
            if not c["want"] and now >= c["next"] and now < end:
                send(c)
        for key, _ in sel.select(0.01):
            c = key.data
            try:
                data = c["sock"].recv(65536)
            except BlockingIOError:
                continue
            if not data:
                print(f"connection {c['i']} closed by the server ({c['want']} responses due)", file=sys.stderr)
                errors += 1
                sel.unregister(c["sock"])
                c["want"], c["next"] = 0, float("inf")
                continue
            c["buf"] += data
            while c["want"] and BODY in c["buf"]:
                cut = c["buf"].index(BODY) + len(BODY)
                response, c["buf"] = c["buf"][:cut], c["buf"][cut:]
                if not response.startswith(b"HTTP/1.1 200 "):
                    print(f"connection {c['i']}: {response[:80]!r}", file=sys.stderr)
                    errors += 1
                c["want"] -= 1
                answered += 1
                if not c["want"]:
                    c["next"] = time.monotonic() + random.uniform(0, 2.5)
    for c in conns:
        c["sock"].close()
    return errors, sent, answered


if __name__ == "__main__":
    main()
