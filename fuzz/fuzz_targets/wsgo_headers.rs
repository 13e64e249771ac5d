//! Fuzz target: see `wsgo::fuzzing::wsgo_headers` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wsgo::fuzzing::wsgo_headers(data));
