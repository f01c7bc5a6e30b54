//! Fuzz target: `crust::fuzzing::utp_endpoint` (see its docs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| crust::fuzzing::utp_endpoint(data));
