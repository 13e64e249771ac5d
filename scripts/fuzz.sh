#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 10: the CI smoke; the closing runs used 600),
# one after the other, pinned to the last CPU. cargo-fuzz needs nightly flags: RUSTC_BOOTSTRAP
# lets the stable toolchain accept them. New corpus entries stay in fuzz/corpus (replayed by
# tests/fuzz_corpus.rs); a crash leaves its input in fuzz/artifacts and fails the script.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-10}"
cpu=$(( $(nproc) - 1 ))
export RUSTC_BOOTSTRAP=1
cargo fuzz build -O
for target in request_head response_head chunked static_path cache_rules wsgo_headers cron proxy_header; do
    mkdir -p "corpus/$target"
    echo "== fuzz $target for ${seconds}s"
    taskset -c "$cpu" cargo fuzz run -O "$target" -- -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 2>&1 \
        | grep -E '^(Done|#[0-9]+ *DONE)|SUMMARY|panicked|ERROR' || true
    # Any failing input libFuzzer left (crash, timeout, leak, out of memory) fails the run.
    found=$(find "artifacts/$target" -maxdepth 1 -type f 2>/dev/null | head -1)
    if [ -n "$found" ]; then
        echo "fuzz: $target found a failing input: fuzz/$found"
        exit 1
    fi
done
echo "fuzz: all targets ran ${seconds}s without a failure"
