#!/usr/bin/env bash
# Installs the peers for the load tests into loadtest/.venv (same interpreter as the server
# embeds), and Debian's wrk.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
PYTHON="$(sed -n 's/^PYO3_PYTHON = { value = "\(.*\)", .*/\1/p' .cargo/config.toml)"
[ -x loadtest/.venv/bin/python ] || "$PYTHON" -m venv loadtest/.venv
loadtest/.venv/bin/pip install -q granian==2.8.7 wsgo==0.0.25
echo "loadtest setup: ok"
