#!/usr/bin/env bash
# Builds wsgo and serves examples/wsgi_app.py on http://127.0.0.1:8000/ (Ctrl-C stops it).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release
cd examples
exec env VIRTUAL_ENV="$PWD/../.venv" ../target/release/wsgo --module wsgi_app --http-socket "${WSGO_ADDR:-127.0.0.1:8000}" \
    --static-map /static=webroot --max-age 60 "$@"
