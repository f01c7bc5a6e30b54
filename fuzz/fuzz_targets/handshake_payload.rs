//! Fuzz target: `crust::fuzzing::handshake_payload` (see its docs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| crust::fuzzing::handshake_payload(data));
