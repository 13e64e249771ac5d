//! Fuzz target: see `wsgo::fuzzing::chunked` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wsgo::fuzzing::chunked(data));
