"""The example app served by scripts/serve-example.sh: a few routes in plain WSGI."""

import json
import time


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/json":
        body = json.dumps({"path": path, "query": environ["QUERY_STRING"]}).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
    if path == "/cached":
        # Kept in wsgo's response cache for 30 s (with --max-age): the time stays the same.
        body = ("rendered at %.3f\n" % time.time()).encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Cache-Control", "public, max-age=30")])
        return [body]
    if path == "/echo" and environ["REQUEST_METHOD"] == "POST":
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return [body]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"Hello, World!"]
