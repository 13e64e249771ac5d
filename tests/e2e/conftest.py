"""Runs the real wsgo binary for the end-to-end tests, on both io drivers.

Servers listen on 127.0.0.1 port 0 and report the port on stderr; readiness is polled with a
deadline; servers are stopped by process id.
"""

import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
APPS = Path(__file__).resolve().parent / "apps"
BINARY = Path(os.environ.get("WSGO_BIN", ROOT / "target" / "debug" / "wsgo"))
DRIVERS = {"io_uring": {}, "epoll": {"MONOIO_FORCE_LEGACY_DRIVER": "1"}}


class WsgoServer:
    def __init__(self, module, cwd=APPS, args=(), env=None):
        self.logdir = tempfile.mkdtemp(prefix="wsgo-e2e-")
        self.stdout_path = os.path.join(self.logdir, "stdout")
        self.stderr_path = os.path.join(self.logdir, "stderr")
        full_env = dict(os.environ)
        full_env.update(env or {})
        cmd = [str(BINARY), "--module", module, "--http-socket", "127.0.0.1:0", *args]
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=full_env)
        self.url = self._wait_ready()

    def _wait_ready(self, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.stderr()
            for line in text.splitlines():
                if " on http://" in line:
                    addr = line.split(" on http://", 1)[1].split(" ", 1)[0]
                    url = f"http://{addr}"
                    while time.monotonic() < deadline:
                        try:
                            requests.get(url + "/__ready__", timeout=2)
                            return url
                        except requests.ConnectionError:
                            time.sleep(0.05)
            if self.proc.poll() is not None:
                raise RuntimeError(f"wsgo exited with {self.proc.returncode}: {text}")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"wsgo did not become ready: {self.stderr()}")

    def stderr(self):
        with open(self.stderr_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def stdout(self):
        with open(self.stdout_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def stop(self, timeout=20):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        return self.proc.returncode


@pytest.fixture(scope="module", params=sorted(DRIVERS))
def driver_env(request):
    return DRIVERS[request.param]


def start_server(request, driver_env, module, **kw):
    server = WsgoServer(module, env=driver_env, **kw)
    request.addfinalizer(server.stop)
    return server


def wait_for(predicate, timeout=15, what="condition"):
    """Polls `predicate` until it holds, failing after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
