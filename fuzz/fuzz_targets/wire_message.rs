//! Fuzz target: `crust::fuzzing::wire_message` (see its docs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| crust::fuzzing::wire_message(data));
