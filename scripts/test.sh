#!/usr/bin/env bash
# The whole test suite: formatting, lints, the layering of the modules, unit and integration
# tests on both io drivers, the
# instruction-count regression check, the end-to-end pytest suite (Flask, Django, a validated
# plain app) on both drivers, a short run of every fuzz target, and the pip wheel.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo fmt --check
cargo clippy --all-targets -- -D warnings
python3 scripts/check_layers.py
cargo build
echo "== cargo test (io_uring driver)"
cargo test
echo "== integration tests (epoll driver)"
MONOIO_FORCE_LEGACY_DRIVER=1 cargo test --test '*'
echo "== a panic costs one connection (a fault-injection build, both drivers)"
cargo test --features fault-injection --target-dir target/fault --test panic
MONOIO_FORCE_LEGACY_DRIVER=1 cargo test --features fault-injection --target-dir target/fault --test panic
echo "== performance regression check (instructions per request)"
cargo build --release --bin wsgo --example instr_count
.venv/bin/python scripts/perf_check.py
echo "== end-to-end (both drivers)"
VIRTUAL_ENV="$PWD/.venv" PATH="$PWD/.venv/bin:$PATH" .venv/bin/python -m pytest -q tests/e2e
echo "== fuzz smoke (10 s per target) and the corpus replay"
scripts/fuzz.sh 10
cargo test --test fuzz_corpus
echo "== the pip-installable wheel"
scripts/wheel_check.sh
