"""Scheduling and protection end to end: priorities, the queue and running timeouts, stuck
workers, blocking, parking, background jobs, SIGUSR1/SIGUSR2 (README.md, "What the server does")."""

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from conftest import WsgoServer, start_server, wait_for


def timed_get(url, **kw):
    t0 = time.monotonic()
    r = requests.get(url, timeout=30, **kw)
    return r, time.monotonic() - t0




@pytest.fixture(scope="module")
def server(request, driver_env):
    return start_server(request, driver_env, "protect_app", args=["--workers", "16"])


# ---------- priorities ----------

def test_one_public_client_gets_three_workers_at_a_time(server):
    def run(headers):
        with ThreadPoolExecutor(8) as ex:
            return sorted(ex.map(lambda _: timed_get(server.url + "/sleep?t=1", headers=headers)[1], range(8)))

    local = run({})
    assert max(local) < 1.8, f"local clients are not limited: {local}"
    public = run({"X-Forwarded-For": "8.8.8.8"})
    assert sum(1 for t in public if t < 1.5) <= 3, f"at most three at once from one public client: {public}"
    assert max(public) < 12


def test_robots_run_only_when_nothing_else_runs(server):
    slow = ThreadPoolExecutor(1).submit(timed_get, server.url + "/sleep?t=2")
    time.sleep(0.3)
    bot = {"User-Agent": "Googlebot/2.1", "X-Forwarded-For": "66.249.66.1"}
    r, took = timed_get(server.url + "/", headers=bot)
    assert r.status_code == 200 and took > 1.2, took
    slow.result()
    r, took = timed_get(server.url + "/", headers={"User-Agent": "Googlebot/2.1"})
    assert took < 0.5, "the same robot from a local address is not held back"


# ---------- timeouts ----------

def test_queue_timeout_gives_504_at_the_deadline(request, driver_env):
    s = start_server(request, driver_env, "protect_app", args=["--workers", "1", "--request-timeout", "2"])
    slow = ThreadPoolExecutor(1).submit(timed_get, s.url + "/sleep?t=3.5")
    time.sleep(0.3)
    r, took = timed_get(s.url + "/")
    assert r.status_code == 504 and 1.5 < took < 3.0, (r.status_code, took)
    # The sleeper itself ran past the timeout: the exception fires when the sleep returns.
    r, took = slow.result()
    assert r.status_code == 504 and took >= 3.5


def test_a_running_request_is_interrupted(request, driver_env):
    s = start_server(request, driver_env, "protect_app", args=["--request-timeout", "2"])
    r, took = timed_get(s.url + "/spin?t=5")
    assert r.status_code == 504 and 1.8 < took < 3.5, (r.status_code, took)
    r, took = timed_get(s.url + "/spin-catch?t=5")
    assert (r.status_code, r.text) == (200, "caught") and took < 3.5
    err = s.stderr()
    assert "Task timed out!" in err and "RequestTimeoutException" in err and "protect_app.py" in err
    # A blocking C call is not interrupted: the exception surfaces when the sleep returns.
    r, took = timed_get(s.url + "/sleep?t=2.5")
    assert r.status_code == 504 and took >= 2.5
    assert requests.get(s.url + "/").text == "ok"


def test_interrupted_logging_does_not_deadlock(request, driver_env):
    s = start_server(request, driver_env, "protect_app", args=["--request-timeout", "1"])
    with ThreadPoolExecutor(5) as ex:
        statuses = sorted(r.status_code for r in ex.map(lambda _: requests.get(s.url + "/log-spin?t=3", timeout=30), range(5)))
    assert set(statuses) <= {200, 504} and 504 in statuses, statuses
    # Logging still works in every worker afterwards.
    with ThreadPoolExecutor(16) as ex:
        assert all(r.status_code == 200 for r in ex.map(lambda _: requests.get(s.url + "/log-spin?t=0.05", timeout=10), range(32)))


def test_all_workers_stuck_stops_the_process(request, driver_env):
    # Unsupervised (`--process 1`), the process exits 1; supervised, it is replaced.
    s = WsgoServer("protect_app", env=driver_env, args=["--workers", "1", "--request-timeout", "1", "--process", "1"])
    request.addfinalizer(s.stop)
    def stuck_request():
        try:
            requests.get(s.url + "/sleep?t=30", timeout=60)
        except requests.ConnectionError:
            pass  # the process gives up on it
    threading.Thread(target=stuck_request, daemon=True).start()
    s.proc.wait(20)
    assert s.proc.returncode == 1
    assert "All worker threads are stuck, quitting!" in s.stderr()

    sup = start_server(request, driver_env, "protect_app", args=["--workers", "1", "--request-timeout", "1"])
    def stuck_on_sup():
        try:
            requests.get(sup.url + "/sleep?t=30", timeout=60)
        except requests.ConnectionError:
            pass
    threading.Thread(target=stuck_on_sup, daemon=True).start()
    wait_for(lambda: "process 1 exited with status 1; restarting" in sup.stderr(), timeout=20, what="a restart")
    wait_for(lambda: requests.get(sup.url + "/", timeout=5).text == "ok", what="serving again")


# ---------- blocking ----------

def test_blocking(server):
    r = requests.get(server.url + "/block?t=3", headers={"X-Forwarded-For": "8.8.8.8"})
    assert r.status_code == 200 and "X-WSGo-Block" not in r.headers
    other = ThreadPoolExecutor(1).submit(timed_get, server.url + "/", headers={"X-Forwarded-For": "8.8.4.4"})
    r, took = timed_get(server.url + "/", headers={"X-Forwarded-For": "8.8.8.8"})
    assert r.status_code == 429 and r.content == b"" and 1.5 < took < 3.2, (r.status_code, took)
    r2, took2 = other.result()
    assert r2.status_code == 200 and took2 < 1.0, "another client is not held up"
    time.sleep(max(0, 3.2 - took))
    r = requests.get(server.url + "/", headers={"X-Forwarded-For": "8.8.8.8"})
    assert r.status_code == 200
    wait_for(lambda: "unblocked 8.8.8.8 after 1 blocked requests" in server.stderr(), what="the unblock line")
    # Private addresses are never blocked.
    requests.get(server.url + "/block?t=30", headers={"X-Forwarded-For": "10.1.2.3"})
    assert requests.get(server.url + "/", headers={"X-Forwarded-For": "10.1.2.3"}).status_code == 200


def send_on_new_connections(server, n, raw):
    """Opens n connections to the server and sends `raw` on each: the sockets."""
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    socks = []
    for _ in range(n):
        s = socket.create_connection((host, int(port)))
        s.sendall(raw)
        socks.append(s)
    return socks


def test_a_stop_does_not_wait_for_held_blocked_requests(request, driver_env):
    """A blocked client's held requests (up to 25 s each) end when the server drains: it
    answers them 429 and stops at once instead of after the longest hold."""
    own = start_server(request, driver_env, "protect_app", args=["--workers", "4"])
    assert requests.get(own.url + "/block?t=600", headers={"X-Forwarded-For": "8.8.8.8"}).status_code == 200
    held = send_on_new_connections(own, 3, b"GET / HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 8.8.8.8\r\n\r\n")
    time.sleep(0.5)
    for s in held:
        s.settimeout(0.1)
        with pytest.raises(socket.timeout):
            s.recv(1)
    started = time.monotonic()
    os.kill(own.proc.pid, signal.SIGTERM)
    own.proc.wait(20)
    took = time.monotonic() - started
    assert took < 3, f"the stop waited {took:.1f} s for held requests"
    for s in held:
        s.settimeout(5)
        assert s.recv(4096).startswith(b"HTTP/1.1 429 "), "a held request is answered, not dropped"
        s.close()


# ---------- parking ----------

def park(server, query, method="GET", data=None):
    return ThreadPoolExecutor(1).submit(
        lambda: requests.request(method, server.url + "/park?" + query, data=data, timeout=30))


def notify(server, ch, action, arg=""):
    return int(requests.get(server.url + "/notify", params={"ch": ch, "action": action, "arg": arg}).text)


def test_parking_notify_and_actions(server):
    p = park(server, "ch=12345,%2012346&timeout=6%20http-504")
    wait_for(lambda: notify(server, "555", 3) == 0 and "parked request 12345, 12346" in server.stderr(), what="parking")
    time.sleep(0.1)
    assert not p.done()
    assert notify(server, "12345", 2) == 1
    assert p.result().status_code == 204

    p = park(server, "ch=r1")
    wait_for(lambda: "parked request r1" in server.stderr(), what="parking r1")
    assert notify(server, "r1", 1, "retry_arg") == 1
    r = p.result()
    assert r.status_code == 200 and r.json() == {"arg": "retry_arg", "body": "", "method": "GET"}

    p = park(server, "ch=x,y", method="POST", data=b"postbody123")
    wait_for(lambda: "parked request x,y" in server.stderr(), what="parking x,y")
    assert notify(server, "z, y", 1, "hello world") == 1
    assert p.result().json() == {"arg": "hello world", "body": "postbody123", "method": "POST"}

    both = [park(server, "ch=m") for _ in range(2)]
    wait_for(lambda: server.stderr().count("parked request m\n") >= 2, what="two parked on m")
    assert notify(server, "m", 2) == 2
    assert [f.result().status_code for f in both] == [204, 204]


def test_parking_timeouts(server):
    for timeout, status in [("1%20http-504", 504), ("1%20http-204", 204)]:
        t0 = time.monotonic()
        r = park(server, f"ch=t-{status}&timeout={timeout}").result()
        assert r.status_code == status and 0.9 < time.monotonic() - t0 < 3, timeout
    r = park(server, "ch=t-retry&timeout=1%20retry").result()
    assert r.json()["arg"] == ""
    # disconnect: the connection is closed without a response.
    with pytest.raises(requests.ConnectionError):
        park(server, "ch=t-dc&timeout=1%20disconnect").result()


def test_parked_requests_cost_no_threads_and_wake_from_any_thread(server):
    pid = int(requests.get(server.url + "/pid").text)
    threads_before = len(os.listdir(f"/proc/{pid}/task"))
    socks = send_on_new_connections(server, 300, b"GET /park?ch=many HTTP/1.1\r\nHost: t\r\n\r\n")
    wait_for(lambda: server.stderr().count("parked request many\n") >= 300, what="300 parked")
    assert len(os.listdir(f"/proc/{pid}/task")) == threads_before
    assert requests.get(server.url + "/notify-later", params={"ch": "many", "action": 2}).text == "scheduled"
    for s in socks:
        s.settimeout(10)
        assert s.recv(100).startswith(b"HTTP/1.1 204 ")
        s.close()


def test_clients_cannot_set_internal_headers(server):
    r = requests.get(server.url + "/headers", headers={"X-WSGo-Park-Arg": "spoof", "X-Other": "1"})
    assert "HTTP_X_OTHER" in r.json() and "HTTP_X_WSGO_PARK_ARG" not in r.json()


# ---------- background jobs ----------

def test_timers_run_and_survive_failures(server):
    wait_for(lambda: requests.get(server.url + "/ticks").json()["ticks"] >= 3, what="three ticks")
    assert requests.get(server.url + "/ticks").json()["fails"] >= 3
    err = server.stderr()
    assert "Added cron job <function every_minute" in err and "background job failure (expected" in err


def test_bad_job_arguments_raise(server):
    assert requests.get(server.url + "/bad-jobs").json() == ["ValueError", "ValueError", "TypeError", "TypeError",
                                                              "ValueError", "ValueError", "TypeError", "TypeError"]


# ---------- signals ----------

def test_sigusr2_reports_and_sigusr1_dumps_stacks_under_load(server):
    slow = ThreadPoolExecutor(1).submit(requests.get, server.url + "/sleep?t=2", headers={"X-Forwarded-For": "9.9.9.9"})
    time.sleep(0.5)
    os.kill(server.proc.pid, signal.SIGUSR2)
    wait_for(lambda: "1:   9.9.9.9: 1" in server.stderr(), what="the SIGUSR2 report")
    out = server.stderr()
    assert "1: Active requests: 1" in out and "1: Request count:" in out and "1: Cache: off" in out
    os.kill(server.proc.pid, signal.SIGUSR1)
    wait_for(lambda: "GET /sleep?t=2 for" in server.stderr(), what="the SIGUSR1 dump")
    assert 'protect_app.py", line' in server.stderr()
    # Each thread with its CPU time, which tells a computing request from a waiting one.
    assert re.search(r"GET /sleep\?t=2 for \d+\.\d{3} s, thread CPU \d+\.\d{3} s\n", server.stderr())
    assert re.search(r": idle, thread CPU \d+\.\d{3} s\n", server.stderr())
    slow.result()
    stop = time.monotonic() + 2
    errors = []

    def hammer():
        while time.monotonic() < stop:
            try:
                assert requests.get(server.url + "/", timeout=5).text == "ok"
            except Exception as e:  # noqa: BLE001
                errors.append(e)
    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    while time.monotonic() < stop:
        os.kill(server.proc.pid, signal.SIGUSR1)
        os.kill(server.proc.pid, signal.SIGUSR2)
        time.sleep(0.1)
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert server.proc.poll() is None
