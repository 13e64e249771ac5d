//! Fuzz target: see `wsgo::fuzzing::cache_rules` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wsgo::fuzzing::cache_rules(data));
