"""Hardening seen from inside the app (issue 12): what the app and the processes it starts
inherit from the server, with other clients' connections open at the same time."""

import signal
import socket

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
