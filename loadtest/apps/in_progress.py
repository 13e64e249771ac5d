"""Counts how many requests an app has in progress at once, for `loadtest/in_progress.py`.

Wraps the app named by `IN_PROGRESS_APP` (`module:callable`), or with `cpu` a view that computes
~0.6 ms in Python without letting the GIL go (a page rendered from memory), or with `cpu_io` the
same with one short release of the GIL halfway (a query to a local database). At the start of
each request it notes how many are in progress, that one included. `GET /__in_progress` answers
the counts since the last such request as JSON (`{"1": 812, "2": 40, ...}`) and starts them again.
"""

import importlib
import json
import os
import threading
import time

_lock = threading.Lock()
_now = 0
_seen = {}


def _burn(n):
    x = 0
    for i in range(n):
        x += i * i
    return x


def _cpu(environ, start_response):
    _burn(12000)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


def _cpu_io(environ, start_response):
    _burn(6000)
    time.sleep(0)  # the GIL let go, as around a database call
    _burn(6000)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


def _load(name):
    if name == "cpu":
        return _cpu
    if name == "cpu_io":
        return _cpu_io
    module, _, attr = name.partition(":")
    return getattr(importlib.import_module(module), attr or "application")


_inner = _load(os.environ.get("IN_PROGRESS_APP", "cpu"))


def application(environ, start_response):
    global _now
    if environ.get("PATH_INFO") == "/__in_progress":
        with _lock:
            body = json.dumps(_seen).encode()
            _seen.clear()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
    with _lock:
        _now += 1
        _seen[_now] = _seen.get(_now, 0) + 1
    try:
        # The body is produced here, so that the request counts until its response is complete.
        return [b"".join(_inner(environ, start_response))]
    finally:
        with _lock:
            _now -= 1
