//! Fuzz target: see `wsgo::fuzzing::static_path` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wsgo::fuzzing::static_path(data));
