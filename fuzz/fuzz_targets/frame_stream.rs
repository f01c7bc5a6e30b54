//! Fuzz target: `crust::fuzzing::frame_stream` (see its docs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| crust::fuzzing::frame_stream(data));
