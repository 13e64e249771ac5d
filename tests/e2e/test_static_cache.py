"""Static files, X-Sendfile and the response cache end to end, with a real Flask app: hits and
files never reach Python."""

import gzip
import os
import shutil
import tempfile

import pytest
import requests

from conftest import APPS, start_server


@pytest.fixture(scope="module")
def webroot():
    d = tempfile.mkdtemp(prefix="wsgo-webroot-")
    with open(os.path.join(d, "app.css"), "w") as f:
        f.write("body { margin: 0 }\n" * 50)
    with open(os.path.join(d, "app.css"), "rb") as src, gzip.open(os.path.join(d, "app.css.gz"), "wb") as dst:
        dst.write(src.read())
    yield d
    shutil.rmtree(d)


@pytest.fixture(scope="module")
def server(request, driver_env, webroot):
    return start_server(request, driver_env, "flask_app:app",
                        args=["--static-map", f"/assets={webroot}", "--max-age", "30"])


def test_cache_hits_do_not_reach_flask(server):
    first = requests.get(server.url + "/counted")
    assert first.text.startswith("counted ")
    before = requests.get(server.url + "/calls").json()["counted"]
    for _ in range(50):
        r = requests.get(server.url + "/counted")
        assert r.text == first.text
        assert "Age" in r.headers
    assert requests.get(server.url + "/calls").json()["counted"] == before


def test_static_files_with_gzip(server, webroot):
    plain = open(os.path.join(webroot, "app.css"), "rb").read()
    r = requests.get(server.url + "/assets/app.css")  # requests asks for gzip and decodes it
    assert r.status_code == 200 and r.content == plain
    assert r.headers["Content-Encoding"] == "gzip" and r.headers["Vary"] == "Accept-Encoding"
    r = requests.get(server.url + "/assets/app.css", headers={"Accept-Encoding": "identity"})
    assert r.content == plain and "Content-Encoding" not in r.headers
    etag = r.headers["ETag"]
    r = requests.get(server.url + "/assets/app.css", headers={"Accept-Encoding": "identity", "If-None-Match": etag})
    assert r.status_code == 304
    # A missing file under the prefix is Flask's 404.
    assert requests.get(server.url + "/assets/missing.css").status_code == 404


def test_flask_send_file_with_x_sendfile(server):
    want = open(os.path.join(APPS, "flask_app.py"), "rb").read()
    r = requests.get(server.url + "/download")
    assert r.status_code == 200 and r.content == want
    assert "X-Sendfile" not in r.headers
    r = requests.get(server.url + "/download", headers={"Range": "bytes=0-9"})
    assert r.status_code == 206 and r.content == want[:10]
