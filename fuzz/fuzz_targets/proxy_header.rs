//! Fuzz target: see `proxy_header` in `fuzz/checks.rs` for what it checks.
#![no_main]

#[path = "../checks.rs"]
#[allow(dead_code)]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::proxy_header(data));
