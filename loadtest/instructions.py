"""User-space instructions per hello request, ours against bjoern and against our Rust-only reply
(valgrind's callgrind, as `scripts/perf_check.py` counts ours): each server answers N1 and then N2
requests on one keep-alive connection; the difference over N2 - N1 cancels start-up and shutdown.

Usage (build first: cargo build --release --features rust-hello --target-dir target/bench):
    python3 loadtest/instructions.py
Only 127.0.0.1; servers are stopped by process id. Takes ~2 minutes.
"""

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
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "loadtest"))
import perf_check  # noqa: E402  (the request loop and response check)
import run  # noqa: E402  (a free port)

VENV = ROOT / "loadtest" / ".venv"
N1, N2 = 1000, 3000
HELLO = b"Hello, World!"


def count(cmd, path, n):
    """Instructions of the server `cmd` (with {port}) answering `n` GETs of `path`."""
    port = run.free_port()
    with tempfile.TemporaryDirectory() as tmp:
        out, err = os.path.join(tmp, "callgrind.out"), os.path.join(tmp, "stderr")
        env = dict(os.environ, MONOIO_FORCE_LEGACY_DRIVER="1", PATH=f"{VENV}/bin:{os.environ['PATH']}")
        with open(err, "wb") as e:
            proc = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
                                    + [c.format(port=port) for c in cmd],
                                    cwd=perf_check.APPS, env=env, stdout=subprocess.DEVNULL, stderr=e)
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError(Path(err).read_text(errors="replace")[-2000:])
                    time.sleep(0.2)
            with sock:
                request = f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
                for _ in range(n):
                    sock.sendall(request)
                    perf_check.read_response(sock, HELLO)
        finally:
            # bjoern stops on SIGINT (KeyboardInterrupt), ours on SIGTERM.
            os.kill(proc.pid, signal.SIGINT if "bjoern_run.py" in cmd else signal.SIGTERM)
            proc.wait(120)
        m = re.search(r"Collected : (\d+)", Path(err).read_text(errors="replace"))
        if not m:
            raise RuntimeError(f"no count for {cmd[0]}")
        return int(m.group(1))


def main():
    ours = str(ROOT / "target" / "bench" / "release" / "wsgo")
    wsgo = [ours, "--module", "hello", "--io-threads", "1", "--workers", "2",
            "--http-socket", "127.0.0.1:{port}", "--process", "1"]
    bjoern = [str(VENV / "bin" / "python"), "bjoern_run.py", "{port}", "1", "hello:application"]
    rows = [("wsgo, hello", wsgo, "/"), ("wsgo, Rust-only reply", wsgo, "/__rust_hello"),
            ("bjoern, hello", bjoern, "/")]
    print("| server, request | instructions per request |")
    print("|---|---|")
    for name, cmd, path in rows:
        per = (count(cmd, path, N2) - count(cmd, path, N1)) / (N2 - N1)
        print(f"| {name} | {per:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
