"""A plain WSGI app wrapped in wsgiref.validate.validator: any PEP 3333 violation by the server
(environ types, wsgi.input, start_response, write, close) raises inside the app and shows up as a
500 and a traceback on stderr."""

import json
import warnings
from wsgiref.validate import WSGIWarning, validator

warnings.simplefilter("error", WSGIWarning)


def raw_app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/post":
        # The validator only allows read() with a size, as PEP 3333 requires of apps.
        inp = environ["wsgi.input"]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        first = inp.readline()
        rest = inp.read(length - len(first))
        body = json.dumps({"first": first.decode(), "rest": rest.decode()}).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
    if path == "/lines":
        lines = environ["wsgi.input"].readlines()
        body = json.dumps([l.decode() for l in lines]).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
    if path == "/iter":
        lines = [l.decode() for l in environ["wsgi.input"]]
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(lines).encode()]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (f"part{i};".encode() for i in range(3))
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written;")
        return [b"returned"]
    if path == "/empty":
        start_response("204 No Content", [])
        return []
    keys = sorted(k for k in environ if not k.startswith("wsgi."))
    body = json.dumps({k: environ[k] for k in keys}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


application = validator(raw_app)
