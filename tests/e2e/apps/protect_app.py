"""The app of the scheduling and protection tests: priorities, timeouts, blocking, parking,
background jobs and the signals (tests/e2e/test_protection.py)."""

import json
import logging
import os
import threading
import time
from urllib.parse import parse_qs

import wsgo

TICKS = []
FAILS = [0]
LOG = logging.getLogger("protect")
logging.basicConfig(level=logging.INFO)


@wsgo.timer(0.3)
def tick():
    TICKS.append(time.time())


@wsgo.timer(0.3)
def failing():
    FAILS[0] += 1
    raise RuntimeError("background job failure (expected by the tests)")


@wsgo.cron(-1, -1, -1, -1, -1)
def every_minute():
    pass


def respond(start_response, body, status="200 OK", headers=()):
    if isinstance(body, str):
        body = body.encode()
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))] + list(headers))
    return [body]


def application(environ, start_response):
    path = environ["PATH_INFO"]
    q = {k: v[-1] for k, v in parse_qs(environ["QUERY_STRING"]).items()}
    if path == "/sleep":
        time.sleep(float(q.get("t", "1")))
        return respond(start_response, "slept")
    if path == "/spin":
        end = time.time() + float(q.get("t", "1"))
        while time.time() < end:
            pass
        return respond(start_response, "spun")
    if path == "/spin-catch":
        try:
            end = time.time() + float(q.get("t", "1"))
            while time.time() < end:
                pass
        except wsgo.RequestTimeoutException:
            return respond(start_response, "caught")
        return respond(start_response, "not interrupted")
    if path == "/log-spin":
        end = time.time() + float(q.get("t", "3"))
        while time.time() < end:
            LOG.info("spinning %s", "x" * 100)
        return respond(start_response, "logged")
    if path == "/block":
        return respond(start_response, "blocking you", headers=[("X-WSGo-Block", q.get("t", "3"))])
    if path == "/park":
        arg = environ.get("HTTP_X_WSGO_PARK_ARG")
        body = environ["wsgi.input"].read()
        if arg is not None:
            return respond(start_response, json.dumps({"arg": arg, "body": body.decode(), "method": environ["REQUEST_METHOD"]}))
        headers = [("X-WSGo-Park", q.get("ch", "c1"))]
        if "timeout" in q:
            headers.append(("X-WSGo-Park-Timeout", q["timeout"]))
        return respond(start_response, "parked body (never sent)", headers=headers)
    if path == "/park-pid":
        # Parks; retried on a notification, says which process woke it and with what.
        arg = environ.get("HTTP_X_WSGO_PARK_ARG")
        if arg is not None:
            return respond(start_response, json.dumps({"pid": os.getpid(), "arg": arg}))
        return respond(start_response, "parked", headers=[("X-WSGo-Park", q.get("ch", "c1")),
                                                          ("X-WSGo-Park-Timeout", q.get("timeout", "30 http-504"))])
    if path == "/conc":
        # Runs for t seconds and appends when it ran and where to a file (the processes'
        # requests together show how many of one client's ran at once).
        start = time.time()
        time.sleep(float(q.get("t", "1")))
        with open(q["log"], "a") as f:
            f.write(f"{start} {time.time()} {os.getpid()}\n")
        return respond(start_response, "ran")
    if path == "/notify":
        n = wsgo.notify_parked(q.get("ch", "c1"), int(q.get("action", "1")), q.get("arg", ""))
        return respond(start_response, str(n))
    if path == "/notify-later":
        # From an app thread, after the response: parked requests are woken from any thread.
        def later():
            time.sleep(float(q.get("after", "0.2")))
            wsgo.notify_parked(q.get("ch", "c1"), int(q.get("action", "1")), q.get("arg", ""))
        threading.Thread(target=later).start()
        return respond(start_response, "scheduled")
    if path == "/ticks":
        return respond(start_response, json.dumps({"ticks": len(TICKS), "fails": FAILS[0]}))
    if path == "/bad-jobs":
        errors = []
        for make in (lambda: wsgo.cron(60, -1, -1, -1, -1), lambda: wsgo.cron(-1, 24, -1, -1, -1),
                     lambda: wsgo.cron("5", -1, -1, -1, -1), lambda: wsgo.cron(1, 2, 3),
                     lambda: wsgo.timer(0), lambda: wsgo.timer(-1), lambda: wsgo.timer("x"),
                     lambda: wsgo.notify_parked("c", "not an int", "")):
            try:
                make()
                errors.append("accepted")
            except (TypeError, ValueError) as e:
                errors.append(type(e).__name__)
        return respond(start_response, json.dumps(errors))
    if path == "/headers":
        return respond(start_response, json.dumps(sorted(k for k in environ if k.startswith("HTTP_"))))
    if path == "/pid":
        return respond(start_response, str(os.getpid()))
    return respond(start_response, "ok")
