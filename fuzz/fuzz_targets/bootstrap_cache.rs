//! Fuzz target: `crust::fuzzing::bootstrap_cache` (see its docs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| crust::fuzzing::bootstrap_cache(data));
