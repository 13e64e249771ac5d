"""Server behaviour seen from a WSGI app: environ, wsgi.input, the wsgo module, lifecycle."""

import json
import os
import signal
import socket
import threading
import time

import pytest
import requests

from conftest import APPS, ROOT, WsgoServer, start_server

TESTAPP_DIR = ROOT / "tests" / "apps"


@pytest.fixture(scope="module")
def server(request, driver_env):
    return start_server(request, driver_env, "testapp", cwd=TESTAPP_DIR, args=["--workers", "1"])


def test_environ(server):
    env = requests.get(server.url + "/env?x=1&y=%20z", headers={"Cookie": "a=1", "X-Dup": "1"}).json()
    assert env["QUERY_STRING"] == "x=1&y=%20z"
    assert env["REQUEST_METHOD"] == "GET"
    assert env["SCRIPT_NAME"] == ""
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["CONTENT_LENGTH"] == "" and env["CONTENT_TYPE"] == ""
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.version"] == [1, 0]
    assert env["wsgi.multithread"] is True and env["wsgi.multiprocess"] is False
    assert env["wsgi.input_terminated"] is True
    assert env["wsgi.errors_is_stderr"] is True
    assert env["sys.path0"] == str(TESTAPP_DIR)


def test_latin1_path_info(server):
    summary = requests.get(server.url + "/echo/Bo%C5%BEja").json()
    assert summary["path"].encode("latin-1").decode("utf-8") == "/echo/Božja"


def test_untrusted_forwarded_proto_is_ignored(request, driver_env):
    s = start_server(request, driver_env, "testapp", cwd=TESTAPP_DIR, args=["--trusted-proxy", "10.9.9.9"])
    env = requests.get(s.url + "/env", headers={"X-Forwarded-Proto": "https"}).json()
    assert env["wsgi.url_scheme"] == "http"


def test_input_semantics(server):
    body = b"line1\nline2\r\nline3"
    assert requests.post(server.url + "/lines?mode=readline", data=body).json() == ["line1\n", "line2\r\n", "line3", "", ""]
    assert requests.post(server.url + "/lines?mode=readline-size&size=3&n=3", data=body).json() == ["lin", "e1\n", "lin"]
    assert requests.post(server.url + "/read0", data=b"abc").json() == ["", "abc"]


def test_chunked_upload_of_3mb(server):
    payload = os.urandom(3_000_000)

    def gen():
        for i in range(0, len(payload), 100_000):
            yield payload[i:i + 100_000]

    r = requests.post(server.url + "/md5?chunk=1000000", data=gen())
    import hashlib

    assert r.text == f"{len(payload)} {hashlib.md5(payload).hexdigest()}"


def test_thread_local_state_survives_between_requests(server):
    # One worker: the same Python thread state serves every request.
    counts = [int(requests.get(server.url + "/thread-local").text) for _ in range(3)]
    assert counts == [counts[0], counts[0] + 1, counts[0] + 2]


def test_close_is_called_once_per_response(server):
    first = int(requests.get(server.url + "/close").text)
    assert [int(requests.get(server.url + "/close").text) for _ in range(2)] == [first + 1, first + 2]


def test_exc_info_replaces_the_headers_before_the_first_byte(server):
    r = requests.get(server.url + "/exc-info")
    assert r.status_code == 500 and r.reason == "Oops"
    assert "X-Second" in r.headers and "X-First" not in r.headers


def test_reason_phrase_and_headers_are_kept(server):
    r = requests.get(server.url + "/status?s=299 Weird")
    assert r.status_code == 299 and r.reason == "Weird"
    r = requests.get(server.url + "/headers")
    assert r.headers["x-lower"] == "a"
    assert r.raw.headers.getlist("Set-Cookie") == ["a=1", "b=2"]


def test_wsgo_module(server):
    data = requests.get(server.url + "/wsgo").json()
    assert data["consts"] == [0, 1, 2, 3]
    public = {n for n in data["names"] if not n.startswith("_")}
    assert public == {"DISCONNECT", "RETRY", "HTTP_204", "HTTP_504", "RequestTimeoutException", "add_cron", "cron",
                      "notify_parked", "timer"}
    assert data["exc_module"] == "wsgo"


def test_concurrent_slow_requests_run_in_parallel(request, driver_env):
    s = start_server(request, driver_env, "testapp", cwd=TESTAPP_DIR, args=["--workers", "8"])
    results = []

    def hit():
        results.append(requests.get(s.url + "/sleep?t=0.5").text)

    started = time.monotonic()
    threads = [threading.Thread(target=hit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - started
    assert results == ["slept"] * 8
    assert took < 1.5, f"8 sleeps of 0.5s on 8 workers took {took:.2f}s"


def test_sigterm_drains_and_runs_atexit(driver_env, tmp_path):
    app = tmp_path / "atexit_app.py"
    marker = tmp_path / "atexit-ran"
    app.write_text(
        "import atexit, time\n"
        f"atexit.register(lambda: open({str(marker)!r}, 'w').write('yes'))\n"
        "def application(environ, start_response):\n"
        "    time.sleep(float(environ['QUERY_STRING'] or 0))\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [b'done']\n"
    )
    s = WsgoServer("atexit_app", cwd=tmp_path, env=driver_env)
    result = {}

    def slow():
        result["r"] = requests.get(s.url + "/?1.5")

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.3)
    os.kill(s.proc.pid, signal.SIGTERM)
    t.join(10)
    assert result["r"].status_code == 200 and result["r"].text == "done"
    assert s.proc.wait(20) == 0
    assert marker.read_text() == "yes"
    assert "shut down gracefully" in s.stderr()
    host, port = s.url.split("//")[1].split(":")
    with pytest.raises(OSError):
        socket.create_connection((host, int(port)), timeout=1)


def test_module_with_callable_and_virtualenv(driver_env, tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "web.py").write_text(
        "import sys\n"
        "def make(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [sys.prefix.encode()]\n"
    )
    venv = os.environ.get("VIRTUAL_ENV")
    s = WsgoServer("pkg.web:make", cwd=tmp_path, env=driver_env)
    try:
        prefix = requests.get(s.url + "/").text
        if venv:
            assert os.path.realpath(prefix) == os.path.realpath(venv)
    finally:
        assert s.stop() == 0
