"""The app of the soak test (loadtest/soak.py): a little of everything a site does."""

import time


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/upload":
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(len(body)).encode()]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (b"x" * 1024 for _ in range(64))
    if path == "/big":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return [b"b" * (5 << 20)]
    if path == "/error":
        raise RuntimeError("soak: an app error on purpose")
    if path == "/cached":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Cache-Control", "public, max-age=1")])
        return [("cached at %f" % time.time()).encode()]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"Hello, World!"]
