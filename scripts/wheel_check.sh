#!/usr/bin/env bash
# Builds the wheel, installs it into a fresh venv and serves a request with the installed `wsgo`:
# what `pip install` gives a user. Uses the project's .venv for maturin (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
work="$(mktemp -d)"
pid=""
cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
rm -rf target/wheels
.venv/bin/maturin build --release --out target/wheels >"$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
wheel="$(ls target/wheels/wsgo-*.whl)"
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --no-index "$wheel"
mkdir "$work/site"
cat >"$work/site/hello_app.py" <<'PY'
import sys

def application(environ, start_response):
    body = ("hello from " + sys.prefix).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
PY
cd "$work/site"
# Not activated: the installed command finds its venv by itself.
env -u VIRTUAL_ENV "$work/venv/bin/wsgo" --module hello_app --http-socket 127.0.0.1:0 >"$work/stdout" 2>"$work/stderr" &
pid=$!
port=""
for _ in $(seq 1 100); do
    port="$(grep -o ' on http://127.0.0.1:[0-9]*' "$work/stderr" | head -1 | grep -o '[0-9]*$' || true)"
    [ -n "$port" ] && break
    sleep 0.1
done
[ -n "$port" ] || { echo "wheel check: the installed wsgo did not start"; cat "$work/stderr"; exit 1; }
body=""
for _ in $(seq 1 50); do
    body="$(curl -s "http://127.0.0.1:$port/" || true)"
    [ -n "$body" ] && break
    sleep 0.1
done
echo "wheel check: GET / -> $body"
[ "$body" = "hello from $work/venv" ] || { echo "wheel check: FAILED"; cat "$work/stderr"; exit 1; }
echo "wheel check: ok ($(basename "$wheel"))"
