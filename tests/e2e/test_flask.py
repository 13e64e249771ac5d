"""An unchanged Flask app behind wsgo."""

import hashlib
import os
import time

import pytest
import requests

from conftest import start_server


@pytest.fixture(scope="module")
def server(request, driver_env):
    return start_server(request, driver_env, "flask_app:app")


def test_routes_and_status_codes(server):
    r = requests.get(server.url + "/")
    assert r.status_code == 200 and r.text == "Hello from Flask"
    assert r.headers["Content-Length"] == str(len("Hello from Flask"))
    assert requests.get(server.url + "/status/418").status_code == 418
    assert requests.get(server.url + "/missing").status_code == 404
    r = requests.get(server.url + "/redirect", allow_redirects=False)
    assert r.status_code == 302 and r.headers["Location"].endswith("/json")


def test_json_both_ways(server):
    r = requests.get(server.url + "/json", params={"a": "1", "b": "two words"})
    assert r.json() == {"message": "hi", "args": {"a": "1", "b": "two words"}}
    r = requests.post(server.url + "/json", json={"numbers": [1, 2, 3]})
    assert r.json() == {"received": {"numbers": [1, 2, 3]}, "doubled": [2, 4, 6]}


def test_form_post(server):
    r = requests.post(server.url + "/form", data=[("name", "Zoë & co"), ("tag", "a"), ("tag", "b")])
    assert r.json() == {"name": "Zoë & co", "tags": ["a", "b"]}


def test_5mb_multipart_upload_arrives_intact(server):
    payload = os.urandom(5 * 1024 * 1024)
    r = requests.post(server.url + "/upload", files={"file": ("big.bin", payload)}, data={"note": "n"})
    assert r.status_code == 200
    assert r.json() == {"filename": "big.bin", "size": len(payload), "sha256": hashlib.sha256(payload).hexdigest(), "note": "n"}


def test_streaming_arrives_incrementally(server):
    started = time.monotonic()
    with requests.get(server.url + "/stream", stream=True) as r:
        assert r.headers.get("Transfer-Encoding") == "chunked"
        lines = r.iter_lines()
        first = next(lines)
        first_at = time.monotonic() - started
        rest = list(lines)
    assert first == b"line 0"
    assert rest == [b"line 1", b"line 2", b"line 3", b"line 4"]
    assert first_at < 0.2, f"first line took {first_at:.3f}s: not flushed promptly"


def test_cookies_round_trip(server):
    s = requests.Session()
    r = s.get(server.url + "/cookies/set")
    assert r.headers.get("Set-Cookie", "").count("flavour=oatmeal") == 1
    assert "session=abc123" in r.headers["Set-Cookie"]
    assert s.get(server.url + "/cookies/get").json() == {"flavour": "oatmeal", "session": "abc123"}


def test_a_failing_view_gives_500_and_the_server_goes_on(server):
    assert requests.get(server.url + "/boom").status_code == 500
    assert "flask view failed" in server.stderr()
    assert requests.get(server.url + "/").status_code == 200


def test_keep_alive_session_reuses_the_connection(server):
    s = requests.Session()
    for _ in range(20):
        assert s.get(server.url + "/json").status_code == 200
