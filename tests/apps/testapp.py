"""The WSGI app the raw-byte tests (tests/*.rs) and the pytest suite run against.

Each route exercises one behaviour of the server; unknown paths answer a JSON summary of the
request, which the request-corpus test compares with its expectations.
"""

import hashlib
import io
import json
import os
import sys
import threading
import time
from urllib.parse import parse_qs

CLOSE_COUNT = [0]
CALLS = [0]
LOCAL = threading.local()
# What /record and /read-record saw, for tests that look whether a request ran and how it ended.
RECORDED = []
KEPT = []


def qs(environ):
    return {k: v[-1] for k, v in parse_qs(environ["QUERY_STRING"]).items()}


def respond(start_response, body, status="200 OK", ctype="text/plain", extra=()):
    start_response(status, [("Content-Type", ctype)] + list(extra))
    return [body]


class Closing:
    """An iterable with close(), counting how often close() is called."""

    def __init__(self, chunks):
        self.chunks = chunks

    def __iter__(self):
        return iter(self.chunks)

    def close(self):
        CLOSE_COUNT[0] += 1


def application(environ, start_response):
    CALLS[0] += 1
    path = environ["PATH_INFO"]
    q = qs(environ)

    if path == "/not-iterable":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return 42
    if path == "/start-twice":
        start_response("200 OK", [("Content-Type", "text/plain")])
        start_response("500 Oops", [("Content-Type", "text/plain")])
        return [b"unreachable"]
    if path == "/spin-gen":
        def gen():
            yield b"started;"
            while True:
                pass
        start_response("200 OK", [("Content-Type", "text/plain")])
        return gen()
    if path == "/huge-headers":
        n = int(q.get("n", "5000"))
        start_response("200 OK", [("X-H-%d" % i, "v" * 100) for i in range(n)])
        return [b"many headers"]
    if path == "/record":
        RECORDED.append(q.get("id", ""))
        return respond(start_response, b"recorded")
    if path == "/recorded":
        return respond(start_response, json.dumps(RECORDED).encode(), ctype="application/json")
    if path == "/read-record":
        # Reads the whole body; records how that ended and how long it took.
        t0 = time.monotonic()
        try:
            n = len(environ["wsgi.input"].read())
            RECORDED.append("%s read %d" % (q.get("id", ""), n))
        except OSError as e:
            RECORDED.append("%s OSError after %.1f s: %s" % (q.get("id", ""), time.monotonic() - t0, e))
            raise
        return respond(start_response, b"read")
    if path == "/sleep-then-write":
        # Sleeps, then writes: records whether the write was refused (the client left meanwhile).
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"started;")
        time.sleep(float(q.get("t", "1")))
        try:
            write(b"late;")
            RECORDED.append("%s write ok" % q.get("id", ""))
        except OSError:
            RECORDED.append("%s write failed" % q.get("id", ""))
            raise
        return [b"done"]
    if path == "/park-forever":
        # Durations no clock can add: must be clamped, not overflow.
        start_response("200 OK", [("X-WSGo-Park", q.get("channel", "forever")),
                                  ("X-WSGo-Park-Timeout", "18446744073709551615 retry")])
        return [b""]
    if path == "/block-forever":
        start_response("200 OK", [("X-WSGo-Block", q.get("secs", "9223372036854775807"))])
        return [b"blocked"]
    if path == "/notify":
        import wsgo

        n = wsgo.notify_parked(q.get("channel", ""), int(q.get("action", "2")), q.get("arg", ""))
        return respond(start_response, str(n).encode())
    if path == "/generate":
        # A large streamed body: n bytes in pieces of `piece`; counts close() calls.
        n, piece = int(q.get("n", "50000000")), int(q.get("piece", "65536"))
        start_response("200 OK", [("Content-Type", "application/octet-stream")])

        def gen():
            try:
                sent = 0
                block = b"g" * piece
                while sent < n:
                    yield block[: n - sent]
                    sent += piece
            finally:
                CLOSE_COUNT[0] += 1

        return gen()
    if path == "/write-then-read":
        # PEP 3333: the body may be read after the response has started.
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"started;")
        body = environ["wsgi.input"].read()
        return [("%d %s" % (len(body), hashlib.md5(body).hexdigest())).encode()]
    if path == "/calls":
        return respond(start_response, str(CALLS[0]).encode())
    if path == "/close-count":
        return respond(start_response, str(CLOSE_COUNT[0]).encode())
    if path.startswith("/cache"):
        # A response whose caching headers come from the query: cc, vary, vc (X-WSGo-Vary-Cookies),
        # s (status), cookie (Set-Cookie), n (body size), stream (generator body).
        body = ("call=%d method=%s cookie=%s" % (CALLS[0], environ["REQUEST_METHOD"], environ.get("HTTP_COOKIE", ""))).encode()
        if "n" in q:
            body = body + b"x" * (int(q["n"]) - len(body))
        headers = [("Content-Type", "text/plain")]
        if "cc" in q:
            headers.append(("Cache-Control", q["cc"]))
        if "vary" in q:
            headers.append(("Vary", q["vary"]))
        if "vc" in q:
            headers.append(("X-WSGo-Vary-Cookies", q["vc"]))
        if "cookie" in q:
            headers.append(("Set-Cookie", "a=1"))
        start_response(q.get("s", "200 OK"), headers)
        if "stream" in q:
            return (c for c in [body[:5], body[5:]])
        return [body]
    if path == "/sendfile":
        headers = [(q.get("h", "X-Sendfile"), q.get("f", "")), ("X-Extra", "kept")]
        if "ct" in q:
            headers.append(("Content-Type", q["ct"]))
        if "ce" in q:
            headers.append(("Content-Encoding", q["ce"]))
        start_response(q.get("s", "404 Not Found"), headers)
        return Closing([b"ignored body"])

    if path == "/":
        return respond(start_response, b"Hello, World!")
    if path == "/keep":
        # An app may keep start_response, its write and wsgi.input past its request.
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        KEPT[:] = [start_response, environ["wsgi.input"], write]
        return [b"kept"]
    if path == "/use-kept":
        old_start_response, old_input, old_write = KEPT
        # This request's start_response first: a kept write must not become this request's.
        start_response("200 OK", [("Content-Type", "text/plain")])
        for call in (lambda: old_start_response("599 Kept", []), lambda: old_write(b"late")):
            try:
                call()
            except Exception as e:  # noqa: BLE001 - whatever it raises, this request goes on
                print("calling a kept start_response or write:", e, file=sys.stderr)
        return [old_input.read()]
    if path == "/env-mutate":
        # An app may change its environ: the next request's must not see it.
        for key in ("SERVER_NAME", "SERVER_PORT", "HTTP_HOST", "REMOTE_ADDR", "SERVER_PROTOCOL", "QUERY_STRING"):
            environ[key] = "mutated"
        environ["HTTP_X_ADDED"] = "added"
        del environ["wsgi.url_scheme"]
        return respond(start_response, b"mutated")
    if path == "/swap-stderr":
        sys.stderr = io.TextIOWrapper(io.BytesIO(), write_through=True) if q.get("to") == "new" else sys.__stderr__
        return respond(start_response, b"swapped")
    if path == "/env":
        env = {k: v for k, v in environ.items() if isinstance(v, str)}
        env["wsgi.url_scheme"] = environ["wsgi.url_scheme"]
        env["wsgi.multithread"] = environ["wsgi.multithread"]
        env["wsgi.multiprocess"] = environ["wsgi.multiprocess"]
        env["wsgi.input_terminated"] = environ.get("wsgi.input_terminated")
        env["wsgi.version"] = list(environ["wsgi.version"])
        env["wsgi.errors_is_stderr"] = environ["wsgi.errors"] is sys.stderr
        env["sys.path0"] = sys.path[0]
        env["cwd"] = os.getcwd()
        env["sys.prefix"] = sys.prefix
        return respond(start_response, json.dumps(env).encode(), ctype="application/json")
    if path == "/echo":
        body = environ["wsgi.input"].read()
        return respond(start_response, body, ctype="application/octet-stream")
    if path == "/md5":
        inp = environ["wsgi.input"]
        h = hashlib.md5()
        n = 0
        size = int(q.get("chunk", "0"))
        while True:
            data = inp.read(size) if size else inp.read()
            if not data:
                break
            h.update(data)
            n += len(data)
            if not size:
                break
        return respond(start_response, f"{n} {h.hexdigest()}".encode())
    if path == "/lines":
        inp = environ["wsgi.input"]
        mode = q.get("mode", "readline")
        if mode == "readline":
            lines = [inp.readline() for _ in range(int(q.get("n", "5")))]
        elif mode == "readline-size":
            lines = [inp.readline(int(q["size"])) for _ in range(int(q.get("n", "5")))]
        elif mode == "readlines":
            lines = inp.readlines()
        else:
            lines = list(inp)
        return respond(start_response, json.dumps([l.decode("latin-1") for l in lines]).encode())
    if path == "/read0":
        inp = environ["wsgi.input"]
        first = inp.read(0)
        rest = inp.read()
        return respond(start_response, json.dumps([first.decode(), rest.decode()]).encode())
    if path == "/ignore-body":
        return respond(start_response, b"ignored")
    if path == "/stream":
        n, delay = int(q.get("n", "3")), float(q.get("delay", "0"))
        start_response("200 OK", [("Content-Type", "text/plain")])

        def gen():
            for i in range(n):
                if i and delay:
                    time.sleep(delay)
                yield f"chunk{i};".encode()

        return gen()
    if path == "/short-cl":
        # Shorter than it says: the core thread warns on stderr and closes the connection.
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "10")])
        return iter([b"01234"])
    if path == "/stream-cl":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "10")])
        return iter([b"01234", b"56789"])
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written;")
        return [b"returned"]
    if path == "/pieces":
        # Pieces of distinct bytes ("A" * n0, "B" * n1, ...), returned as `how` says.
        sizes = [int(n) for n in q.get("sizes", "5000").split(",")]
        pieces = [bytes([65 + i % 26]) * n for i, n in enumerate(sizes)]
        how = q.get("how", "gen")
        headers = [("Content-Type", "application/octet-stream")]
        if how == "gen-cl":
            headers.append(("Content-Length", str(sum(sizes))))
        write = start_response("200 OK", headers)
        if how == "list":
            return pieces
        if how == "write":
            for piece in pieces[:-1]:
                write(piece)
            return pieces[-1:]
        return (piece for piece in pieces)
    if path == "/big":
        n = int(q.get("n", "100000"))
        return respond(start_response, b"x" * n)
    if path == "/status":
        start_response(q.get("s", "200 OK"), [("Content-Type", "text/plain")])
        return [b"body"]
    if path == "/headers":
        start_response("200 OK", [("Content-Type", "text/plain"), ("x-lower", "a"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")])
        return [b"ok"]
    if path == "/raise":
        raise RuntimeError("boom before start_response")
    if path == "/raise-after-start":
        start_response("200 OK", [("Content-Type", "text/plain")])
        raise RuntimeError("boom after start_response")
    if path == "/raise-in-iter":
        start_response("200 OK", [("Content-Type", "text/plain")])

        def gen():
            yield b"first;"
            time.sleep(0.05)
            raise RuntimeError("boom mid-stream")

        return gen()
    if path == "/raise-in-close":
        start_response("200 OK", [("Content-Type", "text/plain")])

        class Bad:
            def __iter__(self):
                return iter([b"x"])

            def close(self):
                raise RuntimeError("boom in close")

        return Bad()
    if path == "/bad-header":
        start_response("200 OK", [("Bad Name", "x")])
        return [b"unreachable"]
    if path == "/bad-header-value":
        start_response("200 OK", [("X-Inj", "a\r\nInjected: yes")])
        return [b"unreachable"]
    if path == "/bytes-header":
        start_response("200 OK", [(b"X-Bytes", b"x")])
        return [b"unreachable"]
    if path == "/bad-status":
        start_response("050 Low", [])
        return [b"unreachable"]
    if path == "/no-start":
        return [b"never started"]
    if path == "/none":
        start_response("200 OK", [])
        return None
    if path == "/str-body":
        start_response("200 OK", [])
        return ["a str"]
    if path == "/close":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Closing([str(CLOSE_COUNT[0]).encode()])
    if path == "/cl-short":
        start_response("200 OK", [("Content-Length", "100")])
        return [b"short"]
    if path == "/cl-long":
        start_response("200 OK", [("Content-Length", "3")])
        return [b"toolong"]
    if path == "/pid":
        return respond(start_response, str(os.getpid()).encode())
    if path == "/sleep":
        time.sleep(float(q.get("t", "1")))
        return respond(start_response, b"slept")
    if path == "/thread-local":
        LOCAL.n = getattr(LOCAL, "n", 0) + 1
        return respond(start_response, str(LOCAL.n).encode())
    if path == "/exc-info":
        start_response("200 OK", [("X-First", "1")])
        try:
            raise ValueError("replaced")
        except ValueError:
            start_response("500 Oops", [("X-Second", "1")], sys.exc_info())
        return [b"after exc_info"]
    if path == "/connection-close":
        start_response("200 OK", [("Connection", "close")])
        return [b"bye"]
    if path == "/wsgo":
        import wsgo

        names = sorted(n for n in dir(wsgo) if not n.startswith("__"))
        body = json.dumps({"names": names, "consts": [wsgo.DISCONNECT, wsgo.RETRY, wsgo.HTTP_204, wsgo.HTTP_504],
                           "exc_module": wsgo.RequestTimeoutException.__module__})
        return respond(start_response, body.encode())

    # The corpus summary: what the server made of the request.
    body = environ["wsgi.input"].read()
    summary = {
        "method": environ["REQUEST_METHOD"],
        "path": environ["PATH_INFO"],
        "query": environ["QUERY_STRING"],
        "protocol": environ["SERVER_PROTOCOL"],
        "host": environ["HTTP_HOST"],
        "body": body.decode("latin-1"),
        "headers": sorted(k for k in environ if k.startswith("HTTP_")),
    }
    return respond(start_response, json.dumps(summary).encode(), ctype="application/json")
