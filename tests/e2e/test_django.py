"""An unchanged Django project behind wsgo (`--module djproject.wsgi`)."""

import hashlib
import os
import re
import time

import pytest
import requests

from conftest import start_server, wait_for


@pytest.fixture(scope="module")
def server(request, driver_env):
    return start_server(request, driver_env, "djproject.wsgi")


def test_routes(server):
    r = requests.get(server.url + "/")
    assert r.status_code == 200 and "Hello from Django" in r.text
    assert r.headers["Content-Type"].startswith("text/html")
    # A body from an in-memory iterable gets a Content-Length, not chunking.
    assert r.headers.get("Content-Length") == str(len(r.content))
    assert requests.get(server.url + "/nope").status_code == 404


def test_json_and_request_metadata(server):
    r = requests.get(server.url + "/json", params={"q": "x y"})
    host = server.url.split("//", 1)[1]
    assert r.json() == {"message": "hi", "q": "x y", "scheme": "http", "host": host}
    r = requests.post(server.url + "/json", json={"numbers": [1, 2, 3]})
    assert r.json() == {"received": {"numbers": [1, 2, 3]}, "sum": 6}


def test_https_from_a_trusted_proxy(server):
    r = requests.get(server.url + "/json", headers={"X-Forwarded-Proto": "https"})
    assert r.json()["scheme"] == "https"


def test_form_post(server):
    r = requests.post(server.url + "/form", data=[("name", "Ada"), ("tag", "x"), ("tag", "y")])
    assert r.json() == {"name": "Ada", "tags": ["x", "y"]}


def test_5mb_multipart_upload_arrives_intact(server):
    payload = os.urandom(5 * 1024 * 1024)
    r = requests.post(server.url + "/upload", files={"file": ("big.bin", payload)})
    assert r.status_code == 200
    assert r.json() == {"filename": "big.bin", "size": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}


def test_streaming_response(server):
    started = time.monotonic()
    with requests.get(server.url + "/stream", stream=True) as r:
        lines = r.iter_lines()
        first = next(lines)
        first_at = time.monotonic() - started
        rest = list(lines)
    assert [first] + rest == [f"line {i}".encode() for i in range(5)]
    assert first_at < 0.2


def test_cookies_and_sessions(server):
    s = requests.Session()
    assert "flavour=chocolate" in s.get(server.url + "/cookies/set").headers["Set-Cookie"]
    assert s.get(server.url + "/cookies/get").json() == {"flavour": "chocolate"}
    assert [s.get(server.url + "/session").json()["n"] for _ in range(3)] == [1, 2, 3]


def test_csrf_protection_still_applies(server):
    # The project's own middleware runs: an unsafe request to a protected view is refused.
    r = requests.post(server.url + "/cookies/get")
    assert r.status_code == 403


def test_a_failing_view_gives_500(server):
    assert requests.get(server.url + "/boom").status_code == 500
    assert requests.get(server.url + "/").status_code == 200


def test_access_log_timestamps_stay_utc_under_time_zone(server):
    # TIME_ZONE = "Asia/Tokyo" made Django call tzset() at start; the lines stay in UTC.
    requests.get(server.url + "/")
    wait_for(lambda: "GET / " in server.stdout(), what="the access line")
    stamps = re.findall(r"\[(\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4})\]", server.stdout())
    assert stamps and all(s.endswith("+0000") for s in stamps), stamps


def test_the_request_timeout_is_a_504_not_djangos_500(request, driver_env):
    server = start_server(request, driver_env, "djproject.wsgi", args=["--request-timeout", "1"])
    t0 = time.monotonic()
    r = requests.get(server.url + "/spin", timeout=20)
    assert r.status_code == 504 and time.monotonic() - t0 < 10
    assert "Task timed out!" in server.stderr()
    assert requests.get(server.url + "/").status_code == 200
