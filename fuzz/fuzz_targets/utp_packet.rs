//! Fuzz target: `crust::fuzzing::utp_packet` (see its docs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| crust::fuzzing::utp_packet(data));
