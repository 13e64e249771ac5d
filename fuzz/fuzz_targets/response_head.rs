//! Fuzz target: see `wsgo::fuzzing::response_head` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wsgo::fuzzing::response_head(data));
