"""What deployers coming from gunicorn expect, end to end with a Flask app: one instance per
address, unix sockets, socket activation, the access log, the interpreter shown and checked,
recycling, --reload, metrics, WSGO_* variables and app factories, --help."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from conftest import APPS, BINARY, ROOT, WsgoServer, start_server, wait_for

FACTORY = "deploy_app:create_app()"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(args, env=None, cwd=APPS, timeout=30):
    """Runs wsgo to its exit; (status, stdout, stderr, seconds)."""
    t0 = time.monotonic()
    p = subprocess.run([str(BINARY), *args], cwd=cwd, env=dict(os.environ, **(env or {})), capture_output=True,
                       timeout=timeout, text=True)
    return p.returncode, p.stdout, p.stderr, time.monotonic() - t0


def children(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return {int(p) for p in f.read().split()}


def scrape(url):
    r = requests.get(url, timeout=5)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return r.text


def sample(page, name, **labels):
    """The sum of the sample lines with these labels (over the processes, unless one is named),
    or None when there is none."""
    found = [float(line.rsplit(" ", 1)[1]) for line in page.splitlines()
             if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items())]
    return sum(found) if found else None


# 1. One instance per address.

def test_a_second_instance_fails_fast_and_the_first_keeps_every_request(request, driver_env):
    first = start_server(request, driver_env, FACTORY, args=["--processes", "2"])
    addr = first.url.removeprefix("http://")
    results = []
    stop = threading.Event()

    def load():
        while not stop.is_set():
            results.append(requests.get(first.url + "/greeting", headers={"Connection": "close"}, timeout=10).status_code)

    t = threading.Thread(target=load)
    t.start()
    code, _, err, took = run(["--module", FACTORY, "--http-socket", addr], env=driver_env)
    time.sleep(0.5)
    stop.set()
    t.join()
    assert code == 1 and took < 2, (code, took, err)
    assert f"cannot listen on http://{addr}: Address already in use" in err
    assert len(results) > 5 and set(results) == {200}, results[:10]


# 2. Unix sockets and socket activation.

def test_a_unix_socket_with_curl(request, driver_env, tmp_path):
    sock = tmp_path / "app.sock"
    server = start_server(request, driver_env, FACTORY, args=["--http-socket", f"unix:{sock}", "--processes", "2"])
    assert oct(sock.stat().st_mode & 0o777) == "0o660"
    out = subprocess.run(["curl", "-s", "--unix-socket", str(sock), "http://app.example:8080/environ"],
                         capture_output=True, text=True, timeout=10).stdout
    env = json.loads(out)
    assert env == {"REMOTE_ADDR": "", "REMOTE_PORT": None, "SERVER_NAME": "app.example", "SERVER_PORT": "8080"}
    # TCP and the unix socket at once.
    assert requests.get(server.url + "/greeting").text == "deploy:False"
    assert server.stop() == 0
    assert not sock.exists()


def test_systemd_socket_activation(driver_env):
    port = free_port()
    env = {"PATH": os.environ["PATH"], **driver_env}
    setenv = [f"--setenv={k}={v}" for k, v in env.items()]
    proc = subprocess.Popen(["systemd-socket-activate", "-l", f"127.0.0.1:{port}", *setenv, str(BINARY),
                             "--module", FACTORY, "--processes", "2", "--http-socket", "127.0.0.1:1"],
                            cwd=APPS, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline and proc.poll() is None, "systemd-socket-activate listens"
                time.sleep(0.02)
        # The socket is systemd-socket-activate's, listening before wsgo runs: a request waits
        # in its backlog until wsgo serves it.
        r = requests.get(f"http://127.0.0.1:{port}/greeting", timeout=30)
        assert r.status_code == 200 and r.text == "deploy:False"
        # Both processes serve the handed-over socket. The first request may be answered before
        # the second process has loaded the app (the socket listened before either ran): ask
        # until both have answered, within a deadline.
        pids, deadline = set(), time.monotonic() + 20
        while len(pids) < 2 and time.monotonic() < deadline:
            pids |= {requests.get(f"http://127.0.0.1:{port}/pid", headers={"Connection": "close"}).text
                     for _ in range(20)}
        assert len(pids) == 2
        # --http-socket was not bound: the handed-over socket is served instead.
        with pytest.raises(requests.ConnectionError):
            requests.get("http://127.0.0.1:1/", timeout=2)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"on http://127.0.0.1:{port}" in err and "LISTEN" not in err


# 3. The access log.

def test_json_access_log_lines(request, driver_env):
    server = start_server(request, driver_env, FACTORY, args=["--access-log-format", "json"])
    requests.get(server.url + "/greeting?a=1&b=%22", headers={"User-Agent": 'agent "x"\\', "Referer": "http://r/"})
    requests.get(server.url + "/nope")
    wait_for(lambda: server.stdout().count("\n") >= 2, what="two access lines")
    lines = [json.loads(line) for line in server.stdout().splitlines()]
    first = next(entry for entry in lines if entry["path"] == "/greeting")
    assert first["query"] == "a=1&b=%22" and first["method"] == "GET" and first["status"] == 200
    assert first["user_agent"] == 'agent "x"\\' and first["referer"] == "http://r/"
    assert first["client"] == "127.0.0.1" and first["protocol"] == "HTTP/1.1" and first["bytes"] == 12
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", first["time"]) and 0 <= first["duration"] < 5
    assert any(entry["path"] == "/nope" and entry["status"] == 404 and entry["referer"] is None for entry in lines)


def test_access_log_off_and_the_timestamps_stay_utc_when_the_app_changes_zone(request, driver_env, tmp_path):
    off = start_server(request, driver_env, FACTORY, args=["--access-log", "off"])
    requests.get(off.url + "/greeting")
    off.stop()
    assert off.stdout() == ""
    server = start_server(request, driver_env, FACTORY)
    assert requests.get(server.url + "/tz").text == "+0900"
    requests.get(server.url + "/greeting")
    wait_for(lambda: "GET /greeting" in server.stdout(), what="the access line")
    stamps = re.findall(r"\[(\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4})\]", server.stdout())
    assert len(stamps) >= 2 and all(s.endswith("+0000") for s in stamps), stamps


def test_a_log_file_is_reopened_on_sighup_to_the_supervisor(request, driver_env, tmp_path):
    log = tmp_path / "access.log"
    server = start_server(request, driver_env, FACTORY, args=["--access-log", str(log), "--processes", "2"])
    requests.get(server.url + "/greeting?before")
    wait_for(lambda: log.exists() and "before" in log.read_text(), what="the first line")
    log.rename(tmp_path / "access.log.1")
    os.kill(server.proc.pid, signal.SIGHUP)
    wait_for(lambda: server.stderr().count("replaced (pid") >= 2, what="both processes replaced")
    # The old processes drain into the old file: a request one of them had accepted is logged
    # there, rightly. Ask once they are gone.
    wait_for(lambda: len(children(server.proc.pid)) == 2, what="the old processes gone")
    requests.get(server.url + "/greeting?after")
    wait_for(lambda: log.exists() and "after" in log.read_text(), what="the line in the new file")
    assert "after" not in (tmp_path / "access.log.1").read_text()
    assert server.stdout() == ""


def test_sigusr2_stats_go_to_stderr_not_into_the_access_log(request, driver_env):
    server = start_server(request, driver_env, FACTORY)
    requests.get(server.url + "/greeting")
    os.kill(server.proc.pid, signal.SIGUSR2)
    wait_for(lambda: "Request count:" in server.stderr(), what="the report")
    time.sleep(0.3)
    assert "Request count" not in server.stdout()
    assert all(line.startswith("127.0.0.1 - - [") for line in server.stdout().splitlines())


# 4. The interpreter, shown and checked.

def test_a_virtual_env_that_is_not_a_venv_is_an_error(tmp_path):
    for bad in (tmp_path / "typo", tmp_path):
        code, _, err, _ = run(["--module", FACTORY, "--http-socket", "127.0.0.1:0"], env={"VIRTUAL_ENV": str(bad)})
        assert code == 2 and f"VIRTUAL_ENV={str(bad)!r}" in err.replace('"', "'") and "not a virtualenv" in err, err
        code, out, _, _ = run(["--version"], env={"VIRTUAL_ENV": str(bad)})
        assert code == 0 and "not a virtualenv" in out, out


def test_the_interpreter_and_its_venv_are_named(request, driver_env):
    venv = ROOT / ".venv"
    code, out, _, _ = run(["--version"], env={"VIRTUAL_ENV": str(venv)})
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert code == 0 and out.startswith("wsgo ") and f"python {version}, venv {venv} (from VIRTUAL_ENV)" in out, out
    server = WsgoServer(FACTORY, env={**driver_env, "VIRTUAL_ENV": str(venv)})
    request.addfinalizer(server.stop)
    line = next(line for line in server.stderr().splitlines() if " serving " in line)
    assert f"python {sys.version.split()[0]}, venv {venv} (from VIRTUAL_ENV)" in line, line


# 5. Recycling.

def test_max_requests_replaces_processes_without_refusing_a_request(request, driver_env):
    server = start_server(request, driver_env, "protect_app",
                          args=["--processes", "2", "--max-requests", "50", "--max-requests-jitter", "5"])
    statuses, pids = [], set()
    for _ in range(400):
        r = requests.get(server.url + "/pid", headers={"Connection": "close"}, timeout=10)
        statuses.append(r.status_code)
        pids.add(r.text)
        time.sleep(0.01)
    assert statuses == [200] * 400
    assert len(pids) >= 6, (len(pids), server.stderr()[-2000:])
    assert "asks to be replaced: served" in server.stderr()


def test_max_rss_replaces_a_leaking_process(request, driver_env):
    server = start_server(request, driver_env, FACTORY, args=["--max-rss", "150"])
    before = requests.get(server.url + "/pid").text
    for _ in range(4):
        assert requests.get(server.url + "/leak?mb=50").status_code == 200
    wait_for(lambda: requests.get(server.url + "/pid").text != before, timeout=20, what="a new process")
    assert "past --max-rss 150 MiB" in server.stderr()
    # The replaced process drains: until it is gone it may still take a new connection.
    wait_for(lambda: int(before) not in children(server.proc.pid), timeout=20, what="the old process gone")
    assert requests.get(server.url + "/leak?mb=1").text == "1"


# 6. --reload.

RELOAD_APP = '''
from lib.helper import suffix
VERSION = "{version}"
def application(environ, start_response):
    body = (VERSION + suffix()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''


def test_reload_serves_an_edit_and_keeps_the_old_code_on_a_syntax_error(request, driver_env, tmp_path):
    app = tmp_path / "reload_app.py"
    app.write_text(RELOAD_APP.format(version="one"))
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "__init__.py").write_text("")
    helper = tmp_path / "lib" / "helper.py"
    helper.write_text("def suffix():\n    return '.a'\n")
    server = start_server(request, driver_env, "reload_app", cwd=tmp_path, args=["--reload", "--processes", "2"])
    get = lambda: requests.get(server.url + "/", timeout=10).text  # noqa: E731
    assert get() == "one.a"

    def served_within(text, limit):
        # Served within the limit: ten requests in a row, each on a new connection; then every
        # process serves it (both replaced: until then an old one may still take a connection).
        t0 = time.monotonic()
        replaced = server.stderr().count(" replaced (pid ")
        wait_for(lambda: all(get() == text for _ in range(10)), timeout=limit + 3, what=text)
        took = time.monotonic() - t0
        wait_for(lambda: server.stderr().count(" replaced (pid ") >= replaced + 2, what="both processes replaced")
        return took

    app.write_text(RELOAD_APP.format(version="two"))
    took = served_within("two.a", 2)
    assert took < 2, took
    # A module of the app's package, reported by the processes.
    helper.write_text("def suffix():\n    return '.b'\n")
    assert served_within("two.b", 2) < 2
    # A syntax error: the old code keeps serving, the traceback is printed.
    app.write_text("def broken(:\n")
    wait_for(lambda: "could not load the application" in server.stderr(), what="the failed load")
    assert "SyntaxError" in server.stderr()
    for _ in range(20):
        assert get() == "two.b"
    app.write_text(RELOAD_APP.format(version="three"))
    assert served_within("three.b", 2) < 2
    print(f"--reload: an edit served in {took:.2f} s")


def test_reload_waits_for_a_fix_when_the_app_never_loaded(driver_env, tmp_path):
    app = tmp_path / "late_app.py"
    app.write_text("raise ImportError('not yet')\n")
    port = free_port()
    proc = subprocess.Popen([str(BINARY), "--module", "late_app", "--http-socket", f"127.0.0.1:{port}", "--reload"],
                            cwd=tmp_path, env=dict(os.environ, **driver_env), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        assert proc.poll() is None, "the supervisor waits for an edit"
        app.write_text(RELOAD_APP.replace("from lib.helper import suffix", "suffix = lambda: ''").format(version="ok"))
        wait_for(lambda: _get_or_none(f"http://127.0.0.1:{port}/") == "ok", timeout=10, what="the fixed app")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def _get_or_none(url):
    try:
        return requests.get(url, timeout=2).text
    except requests.ConnectionError:
        return None


# 7. Metrics.

def test_metrics_cover_every_process_and_keep_answering_across_sighup(request, driver_env):
    port = free_port()
    metrics = f"http://127.0.0.1:{port}/metrics"
    server = start_server(request, driver_env, FACTORY,
                          args=["--processes", "2", "--metrics", f"127.0.0.1:{port}", "--static-map", f"/s={APPS}"])
    for _ in range(40):
        requests.get(server.url + "/greeting", headers={"Connection": "close"})
    requests.get(server.url + "/nope")
    requests.get(server.url + "/s/deploy_app.py")

    def counted():
        page = scrape(metrics)
        ok = sample(page, "wsgo_requests_total", **{"class": "2xx"}) or 0
        return ok >= 41 and (sample(page, "wsgo_requests_total", **{"class": "4xx"}) or 0) >= 1

    wait_for(counted, timeout=10, what="the requests counted")

    def drained():
        # Each process sends a sample every second of its own: one taken while a request waited
        # for a worker may still be the latest (seen once in the full suite). A queue that never
        # empties fails here.
        page = scrape(metrics)
        return all(sample(page, "wsgo_queue_length", process=p) == 0 for p in (1, 2))

    wait_for(drained, timeout=5, what="both processes' queues empty")
    page = scrape(metrics)
    for p in (1, 2):
        assert sample(page, "wsgo_workers", process=p) == 16
        assert sample(page, "wsgo_resident_memory_bytes", process=p) > 10 << 20
    assert sample(page, "wsgo_static_files_total") == 1
    assert "# TYPE wsgo_requests_total counter" in page and "# TYPE wsgo_open_connections gauge" in page
    # Across a replacement every scrape answers.
    before = children(server.proc.pid)
    os.kill(server.proc.pid, signal.SIGHUP)
    answered = 0
    deadline = time.monotonic() + 30
    while children(server.proc.pid) & before and time.monotonic() < deadline:
        scrape(metrics)
        answered += 1
        time.sleep(0.05)
    assert answered > 3 and not children(server.proc.pid) & before
    wait_for(lambda: sample(scrape(metrics), "wsgo_workers", process=2) == 16, what="the new processes' samples")


# 8. WSGO_* variables and factories.

def test_environment_variables_and_a_factory_with_arguments(driver_env):
    port = free_port()
    env = dict(os.environ, **driver_env, WSGO_MODULE="deploy_app:create_app('env', debug=True)",
               WSGO_HTTP_SOCKET=f"127.0.0.1:{port}", WSGO_WORKERS="3", WSGO_ACCESS_LOG_FORMAT="json")
    # The command line wins over the environment.
    proc = subprocess.Popen([str(BINARY), "--access-log-format", "combined"], cwd=APPS, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: _get_or_none(f"http://127.0.0.1:{port}/greeting") == "env:True", what="the factory's app")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert "deploy_app:create_app('env', debug=True)" in err and "3 workers" in err, err
    assert out.startswith("127.0.0.1 - - [")


def test_factory_arguments_must_be_literals():
    code, _, err, _ = run(["--module", "deploy_app:create_app(__import__('os').getpid())", "--http-socket",
                           "127.0.0.1:0"])
    assert code == 27 and "factory arguments must be literals" in err, err
    code, _, err, _ = run(["--module", "deploy_app:create_app(", "--http-socket", "127.0.0.1:0"])
    assert code == 2 and "invalid --module" in err


# 9. --help and stray arguments; the timeout under Flask.

def test_help_and_a_stray_argument():
    code, out, _, _ = run(["--help"])
    assert code == 0
    for text in ("WSGO_<FLAG>", "SIGHUP", "SIGUSR2", "unix:PATH", "--access-log", "--max-requests", "--reload",
                 "--metrics", "RequestTimeoutException", "reachable from other hosts", "LISTEN_FDS"):
        assert text in out, text
    code, _, err, _ = run(["app:app"])
    assert code == 2 and "give --module app:app" in err, err


def test_the_request_timeout_is_a_504_under_flask(request, driver_env):
    server = start_server(request, driver_env, FACTORY, args=["--request-timeout", "1"])
    t0 = time.monotonic()
    r = requests.get(server.url + "/spin", timeout=20)
    assert r.status_code == 504 and time.monotonic() - t0 < 10
    assert requests.get(server.url + "/greeting").status_code == 200
