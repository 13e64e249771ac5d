"""Hardening seen from inside the app (issue 12): what the app and the processes it starts
inherit from the server, with other clients' connections open at the same time."""

import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from conftest import start_server

SIGPIPE_BIT = 1 << (signal.SIGPIPE - 1)


@pytest.mark.parametrize("mode", [[], ["--processes", "2"]], ids=["process", "supervised"])
def test_children_inherit_nothing_of_the_server(request, driver_env, mode):
    server = start_server(request, driver_env, "probe_app", args=["--workers", "2", *mode])
    host, port = server.url.split("//")[1].rsplit(":", 1)
    # Other clients' connections, open (and idle) while the app starts its processes.
    others = []
    for _ in range(8):
        s = socket.create_connection((host, int(port)))
        s.sendall(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n")
        s.recv(4096)
        others.append(s)
    try:
        probe = requests.get(server.url + "/probe", timeout=30).json()
    finally:
        for s in others:
            s.close()
    assert probe["inheritable_sockets"] == [], "every socket of the server is close-on-exec"
    assert probe["wsgo_env"] == [], "no internal variable reaches the app"
    for how, child in probe["children"].items():
        assert child["sockets"] == [], f"{how}: a child inherits no connection"
        assert child["sigblk"] == 0, f"{how}: blocked signals {child['sigblk']:#x}"
        assert not child["sigign"] & SIGPIPE_BIT, f"{how}: SIGPIPE ignored ({child['sigign']:#x})"
        assert child["policy"] == 0, f"{how}: scheduling policy {child['policy']} (SCHED_OTHER is 0)"
        assert child["wsgo_env"] == [], how
    assert probe["forked_policy"] == 0, "a child of os.fork runs under SCHED_OTHER"


def test_a_worker_alone_runs_the_app_under_sched_batch_and_its_children_do_not(request, driver_env):
    """A worker that runs the only job runs it under SCHED_BATCH (its wake-ups do not preempt the
    core thread); a job that starts a process is put under the normal policy first."""
    server = start_server(request, driver_env, "probe_app", args=["--workers", "1"])
    policy = lambda: requests.get(server.url + "/policy", timeout=10).json()
    assert policy() == 3, "SCHED_BATCH is 3"
    probe = requests.get(server.url + "/probe", timeout=30).json()
    assert {how: c["policy"] for how, c in probe["children"].items()} == {
        "subprocess": 0,
        "os.system": 0,
        "os.posix_spawn": 0,
        "popen": 0,
    }
    assert probe["forked_policy"] == 0
    assert policy() == 3, "the one worker is back under SCHED_BATCH after the job that spawned"


def test_a_worker_beside_other_jobs_runs_under_the_normal_policy(request, driver_env):
    """Beside a running job a worker runs under the normal policy, so that workers waiting for
    the GIL take it when the holder lets it go."""
    server = start_server(request, driver_env, "probe_app", args=["--workers", "2"])
    policy = lambda: requests.get(server.url + "/policy", timeout=10).json()
    assert policy() == 3, "alone: SCHED_BATCH"
    with ThreadPoolExecutor(1) as pool:
        sleeping = pool.submit(requests.get, server.url + "/sleep", timeout=10)
        deadline = time.monotonic() + 5
        while not requests.get(server.url + "/sleeping", timeout=10).json():
            assert time.monotonic() < deadline, "the sleeping job never started"
            time.sleep(0.02)
        assert policy() == 0, "beside the sleeping job: SCHED_OTHER"
        assert sleeping.result().text == "slept"
    # The sleeping job counts as running until its worker has finished with it, a moment after
    # its response reached us.
    deadline = time.monotonic() + 2
    while policy() != 3:
        assert time.monotonic() < deadline, "alone again: SCHED_BATCH"
        time.sleep(0.02)
