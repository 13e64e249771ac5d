"""A plain app wrapped in wsgiref.validate.validator: the server keeps PEP 3333 to the letter."""

import pytest
import requests

from conftest import start_server


@pytest.fixture(scope="module")
def server(request, driver_env):
    return start_server(request, driver_env, "validated_app")


def no_violations(server):
    err = server.stderr()
    assert "AssertionError" not in err and "WSGIWarning" not in err, err


def test_environ_passes_the_validator(server):
    r = requests.get(server.url + "/env?x=1", headers={"X-Custom": "v", "Cookie": "a=1"})
    assert r.status_code == 200, r.text
    env = r.json()
    assert env["QUERY_STRING"] == "x=1"
    assert env["HTTP_X_CUSTOM"] == "v"
    assert env["SERVER_PORT"] == server.url.rsplit(":", 1)[1]
    assert env["SERVER_NAME"] == "127.0.0.1"
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env
    no_violations(server)


def test_input_read_and_readline(server):
    r = requests.post(server.url + "/post", data=b"line one\nthe rest\nand more")
    assert r.json() == {"first": "line one\n", "rest": "the rest\nand more"}
    no_violations(server)


def test_input_readlines_and_iteration(server):
    body = b"a\nbb\r\nccc"
    assert requests.post(server.url + "/lines", data=body).json() == ["a\n", "bb\r\n", "ccc"]
    assert requests.post(server.url + "/iter", data=body).json() == ["a\n", "bb\r\n", "ccc"]
    no_violations(server)


def test_streaming_write_and_empty_responses(server):
    assert requests.get(server.url + "/stream").text == "part0;part1;part2;"
    assert requests.get(server.url + "/write").text == "written;returned"
    r = requests.get(server.url + "/empty")
    assert r.status_code == 204 and r.content == b""
    no_violations(server)
