"""Long polling, as a chat or live-update page does it: `/wait` parks until a notification;
`/notify?round=N` wakes every waiting request (on every process, and with --redis every host),
which is retried and answers the round it was woken by and the process that ran it."""

import os

import wsgo


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/wait":
        arg = environ.get("HTTP_X_WSGO_PARK_ARG")
        if arg is None:
            start_response("200 OK", [("X-WSGo-Park", "updates"), ("X-WSGo-Park-Timeout", "60 http-504"),
                                      ("Content-Length", "0")])
            return [b""]
        body = f"{arg} {os.getpid()}".encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
    if path == "/notify":
        n = wsgo.notify_parked("updates", wsgo.RETRY, environ["QUERY_STRING"].partition("round=")[2])
        body = f"{n} {os.getpid()}".encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]
