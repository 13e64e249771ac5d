"""The app every server runs in the load tests (loadtest/run.py). Same code, same interpreter."""

import json
import time

HELLO = b"Hello, World!"
BODY_64K = b"x" * 65536
BODY_4K = b"c" * 4096
ROWS = [{"id": i, "name": f"item-{i}", "price": i * 1.25, "tags": ["a", "b"]} for i in range(14)]


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/json":
        # Built per request: ~1 KB.
        body = json.dumps({"items": ROWS, "count": len(ROWS), "path": path}).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
    if path == "/64k":
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", "65536")])
        return [BODY_64K]
    if path == "/echo":
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(body)))])
        return [body]
    if path == "/cached4k":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "4096"),
                                  ("Cache-Control", "public, max-age=60")])
        return [BODY_4K]
    if path == "/sleep":
        time.sleep(0.01)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(HELLO)))])
    return [HELLO]
