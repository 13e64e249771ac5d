"""Performance-regression check on instruction counts (valgrind's callgrind), not wall time.

Wall-clock figures are noisy on shared 2-core machines and hardware counters are unavailable here,
but instruction counts repeat. For each scenario the release server runs under callgrind twice,
serving N1 and then N2 requests on one keep-alive connection; the difference divided by N2 - N1 is
the cost of one request with start-up and shutdown cancelled out. The result is compared with the
committed baseline (`benches/baseline.json`): more than TOLERANCE above it fails.

The micro benchmarks' workloads (request-head parsing, chunked decoding, response-head encoding,
a cache lookup, a static-file reply plan) are counted the same way, per iteration, through
`examples/instr_count.rs`.

Usage: python3 scripts/perf_check.py [--update] [--binary target/release/wsgo]
(build first: cargo build --release --bin wsgo --example instr_count)
"""

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APPS = ROOT / "loadtest" / "apps"
BASELINE = ROOT / "benches" / "baseline.json"
TOLERANCE = 0.10
N1, N2 = 1000, 3000

POST_BODY = bytes(range(256)) * 64  # 16 KiB
MICRO = ["parse_curl", "parse_browser", "chunked_64k", "encode_head", "cache_hit", "static_plan"]

SCENARIOS = {
    "hello": (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"Hello, World!"),
    # The same with a control channel, as under the supervisor: the sharing between processes
    # is on (its thread, the outbox), with no message in flight.
    "hello_shared": (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"Hello, World!"),
    "post_16k": (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(POST_BODY) + POST_BODY, POST_BODY),
}


def wait_port(stderr_path, proc, deadline=120):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        text = Path(stderr_path).read_text(errors="replace")
        m = re.search(r" on http://127\.0\.0\.1:(\d+)", text)
        if m:
            return int(m.group(1))
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {text}")
        time.sleep(0.1)
    raise RuntimeError("server did not start under valgrind")


def read_response(sock, expect):
    data = b""
    while not data.endswith(expect):
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError(f"connection closed after {data[:200]!r}")
        data += chunk
    if not data.startswith(b"HTTP/1.1 200 "):
        raise RuntimeError(f"unexpected response {data[:200]!r}")


def instructions(binary, request, expect, n, shared=False):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        err = os.path.join(tmp, "stderr")
        env = dict(os.environ, MONOIO_FORCE_LEGACY_DRIVER="1")
        fds = ()
        if shared:
            # The supervisor's end stays here, unread (the process sends only "ready").
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            env["WSGO_CONTROL_FD"] = str(theirs.fileno())
            fds = (theirs.fileno(),)
        with open(err, "wb") as e:
            proc = subprocess.Popen(
                ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", binary, "--module", "hello",
                 "--io-threads", "1", "--workers", "2", "--http-socket", "127.0.0.1:0",
                 # One unsupervised process: under valgrind a re-executed child would not be this binary.
                 "--process", "1"],
                cwd=APPS, env=env, stdout=subprocess.DEVNULL, stderr=e, pass_fds=fds)
        if shared:
            theirs.close()
        try:
            port = wait_port(err, proc)
            with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
                for _ in range(n):
                    s.sendall(request)
                    read_response(s, expect)
        finally:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(120)
            if shared:
                ours.close()
        text = Path(err).read_text(errors="replace")
        m = re.search(r"Collected : (\d+)", text)
        if not m:
            raise RuntimeError(f"no instruction count: {text[-2000:]}")
        return int(m.group(1))


def micro_instructions(binary, workload, n):
    out = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", binary, workload, str(n)],
                         capture_output=True, text=True, timeout=600)
    m = re.search(r"Collected : (\d+)", out.stderr)
    if out.returncode != 0 or not m:
        raise RuntimeError(f"{workload}: {out.stderr[-2000:]}")
    return int(m.group(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--update", action="store_true", help="write the measured counts as the new baseline")
    ap.add_argument("--binary", default=str(ROOT / "target" / "release" / "wsgo"))
    ap.add_argument("--micro-binary", default=str(ROOT / "target" / "release" / "examples" / "instr_count"))
    args = ap.parse_args()
    measured = {}
    for name, (request, expect) in SCENARIOS.items():
        low = instructions(args.binary, request, expect, N1, shared=name.endswith("_shared"))
        high = instructions(args.binary, request, expect, N2, shared=name.endswith("_shared"))
        measured[name] = round((high - low) / (N2 - N1))
    for workload in MICRO:
        low = micro_instructions(args.micro_binary, workload, N1)
        high = micro_instructions(args.micro_binary, workload, N2)
        measured[f"micro/{workload}"] = round((high - low) / (N2 - N1))
    baseline = json.loads(BASELINE.read_text()) if BASELINE.exists() else {}
    failed = []
    print(f"instructions per request or iteration (callgrind, epoll driver, {N2}-{N1} runs, "
          f"tolerance {TOLERANCE:.0%})")
    for name, value in measured.items():
        base = baseline.get(name)
        if base:
            change = value / base - 1
            verdict = "ok" if change <= TOLERANCE else "SLOWER"
            if change > TOLERANCE:
                failed.append(name)
            print(f"  {name:20} {value:>9,}  baseline {base:>9,}  {change:+.1%}  {verdict}")
        else:
            print(f"  {name:20} {value:>9,}  (no baseline)")
    if args.update:
        BASELINE.write_text(json.dumps(measured, indent=2) + "\n")
        print(f"baseline written to {BASELINE.relative_to(ROOT)}")
        return 0
    if failed:
        print(f"perf check: FAILED ({', '.join(failed)} slower than the baseline allows)")
        return 1
    print(f"perf check: {len(measured)} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
