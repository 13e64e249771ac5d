"""Requests in progress at once. GET /burn computes ~2 ms in Python without letting the GIL go;
GET /wait sleeps 20 ms with the GIL free; both count how many requests are in progress when they
start. GET /in_progress answers those counts since the last time as JSON ({"1": 812, ...}).
GET /slow computes for ~1 s (counted nowhere); anything else answers at once."""

import json
import threading
import time

lock = threading.Lock()
now = 0
seen = {}


def burn():
    x = 0
    for i in range(40000):
        x += i * i
    return x


def application(environ, start_response):
    global now
    path = environ["PATH_INFO"]
    if path == "/in_progress":
        with lock:
            body = json.dumps(seen).encode()
            seen.clear()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
    if path == "/slow":
        for _ in range(500):
            burn()
        start_response("200 OK", [("Content-Length", "4")])
        return [b"slow"]
    if path not in ("/burn", "/wait"):
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]
    with lock:
        now += 1
        seen[now] = seen.get(now, 0) + 1
    try:
        if path == "/burn":
            burn()
        else:
            time.sleep(0.02)
    finally:
        with lock:
            now -= 1
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]
