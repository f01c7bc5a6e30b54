//! Fuzz target: `crust::fuzzing::datagram` (see its docs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| crust::fuzzing::datagram(data));
