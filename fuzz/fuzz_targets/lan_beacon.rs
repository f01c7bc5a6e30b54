//! Fuzz target: LAN discovery beacons (UDP broadcasts anyone on the
//! network can send), through `crust::fuzzing::lan_beacon`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| crust::fuzzing::lan_beacon(data));
