"""How fast a request body reaches the app: 64 MiB sent on loopback and read by the app in one
`wsgi.input.read()` (and as `read(CONTENT_LENGTH)`, 64 KiB reads, and `readline()` over 1 KiB
lines), next to the same bytes received by a plain socket reader (the ceiling on this machine).

The server runs pinned to CPU 0, the client on CPU 1. Each case is run --runs times, alternating
between the binaries named (ours, and optionally --baseline BIN, an older build), and the median
MB/s is reported. Only 127.0.0.1; servers are stopped by process id.

Usage:
    cargo build --release
    python3 loadtest/body_read.py [--runs 5] [--mib 64] [--baseline /path/to/old/wsgo]
"""

import argparse
import os
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APPS = Path(__file__).resolve().parent / "apps"


def start_wsgo(binary):
    err = tempfile.NamedTemporaryFile(prefix="wsgo-body-", suffix=".err", delete=False)
    proc = subprocess.Popen(
        ["taskset", "-c", "0", str(binary), "--module", "body_app", "--http-socket", "127.0.0.1:0",
         "--process", "1", "--workers", "4", "--request-timeout", "300"],
        cwd=APPS, stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = Path(err.name).read_text(errors="replace")
        if " on http://" in text:
            host, port = text.split(" on http://", 1)[1].split(" ", 1)[0].rsplit(":", 1)
            return proc, (host, int(port))
        if proc.poll() is not None:
            raise RuntimeError(text)
        time.sleep(0.05)
    raise RuntimeError("wsgo did not start")


def stop(proc):
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def send(addr, head, body):
    """Sends head+body, reads the whole response; returns (seconds, response bytes)."""
    s = socket.create_connection(addr)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    t0 = time.perf_counter()
    s.sendall(head)
    view = memoryview(body)
    for i in range(0, len(body), 1 << 20):
        s.sendall(view[i:i + (1 << 20)])
    out = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    took = time.perf_counter() - t0
    s.close()
    return took, out


def socket_ceiling(size):
    """A reader on CPU 0 that receives `size` bytes into one buffer and answers."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    code = (
        "import socket,sys\n"
        "srv=socket.socket(fileno=int(sys.argv[1]))\n"
        "while True:\n"
        "  c,_=srv.accept(); buf=bytearray(%d); v=memoryview(buf); n=0\n"
        "  while n<%d:\n"
        "    k=c.recv_into(v[n:])\n"
        "    if not k: break\n"
        "    n+=k\n"
        "  c.sendall(str(n).encode()); c.close()\n" % (size, size))
    proc = subprocess.Popen(["taskset", "-c", "0", "python3", "-c", code, str(srv.fileno())],
                            pass_fds=[srv.fileno()])
    srv.close()
    return proc, ("127.0.0.1", port)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--binary", default=str(ROOT / "target" / "release" / "wsgo"))
    ap.add_argument("--baseline", help="an older wsgo binary, measured in the same run")
    args = ap.parse_args()
    os.sched_setaffinity(0, {1})
    size = args.mib << 20
    body = bytes(range(256)) * (size // 256)
    lines = (b"x" * 1023 + b"\n") * (size // 1024)
    servers = {"ours": args.binary}
    if args.baseline:
        servers["baseline"] = args.baseline
    cases = ["read", "read-n", "chunks", "readline"]
    results = {}
    procs = {name: start_wsgo(b) for name, b in servers.items()}
    ceiling, caddr = socket_ceiling(size)
    time.sleep(0.3)
    try:
        for _ in range(args.runs):
            took, out = send(caddr, b"", body)
            assert out == str(size).encode(), out
            results.setdefault(("socket", "recv_into"), []).append(size / took / 1e6)
            for case in cases:
                data = lines if case == "readline" else body
                head = (f"POST /?{case} HTTP/1.1\r\nHost: b\r\nContent-Length: {len(data)}\r\n"
                        "Connection: close\r\n\r\n").encode()
                for name, (proc, addr) in procs.items():
                    took, out = send(addr, head, data)
                    assert out.endswith(str(len(data)).encode()), (name, case, out[-200:])
                    results.setdefault((name, case), []).append(len(data) / took / 1e6)
    finally:
        for proc, _ in procs.values():
            stop(proc)
        stop(ceiling)
    print(f"{args.mib} MiB request body, server on CPU 0, client on CPU 1, median of {args.runs} (MB/s):")
    print("| reader | how the app reads | MB/s |")
    print("|---|---|---|")
    for (name, case), vals in results.items():
        print(f"| {name} | {case} | {statistics.median(vals):.0f} |")


if __name__ == "__main__":
    main()
