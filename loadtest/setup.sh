#!/usr/bin/env bash
# Installs the load-test peers into loadtest/.venv (the interpreter the server embeds), and from
# Debian: wrk, nginx (static scenarios), libev-dev (to build bjoern); oha from crates.io.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
need=()
command -v nginx >/dev/null 2>&1 || need+=(nginx-light)
[ -f /usr/include/ev.h ] || need+=(libev-dev)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
PYTHON="$(sed -n 's/^PYO3_PYTHON = { value = "\(.*\)", .*/\1/p' .cargo/config.toml)"
[ -x loadtest/.venv/bin/python ] || "$PYTHON" -m venv loadtest/.venv
loadtest/.venv/bin/pip install -q granian==2.8.7 wsgo==0.0.25 gunicorn==27.0.1 pyuwsgi==2.0.30.post1 bjoern==3.2.2 Django==5.1.4 Flask==3.1.0
# oha (the second load generator, open-loop rates): built from crates.io at a pinned version into
# loadtest/tools (a few minutes, once).
OHA_VERSION=1.16.0
if ! loadtest/tools/bin/oha --version 2>/dev/null | grep -q " $OHA_VERSION\$"; then
    cargo install oha --version "$OHA_VERSION" --locked --root loadtest/tools --quiet
fi
echo "loadtest setup: ok"
