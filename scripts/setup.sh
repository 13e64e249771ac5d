#!/usr/bin/env bash
# Installs what building, running and testing wsgo needs on a fresh Debian 12 machine:
# Debian packages, and a Python venv (.venv) with the end-to-end test dependencies.
# Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# The interpreter the server is built for and embeds (see .cargo/config.toml).
PYTHON="${PYO3_PYTHON:-$(sed -n 's/^PYO3_PYTHON = { value = "\(.*\)", .*/\1/p' .cargo/config.toml)}"
if [ ! -x "$PYTHON" ]; then
    PYTHON="$(command -v python3)"
fi

# command:package (systemd-socket-activate: the socket-activation tests; redis-server: the
# fleet tests, started by them on a free loopback port, never as a service).
need=()
for pair in wrk:wrk curl:curl valgrind:valgrind systemd-socket-activate:systemd redis-server:redis-server; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    else
        sudo apt-get update -qq
        sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    fi
fi

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import pytest, flask, django, requests" 2>/dev/null \
    || ! cmp -s tests/e2e/requirements.txt .venv/.requirements 2>/dev/null; then
    .venv/bin/pip install -q -r tests/e2e/requirements.txt
    cp tests/e2e/requirements.txt .venv/.requirements
fi
# The fuzzer driver for scripts/fuzz.sh (the smoke run in the test command).
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install --quiet --locked cargo-fuzz --version 0.13.2
fi
echo "setup: ok (python: $PYTHON, venv: .venv)"
