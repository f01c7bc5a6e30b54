//! Shared test helpers: prerequisite checks that skip, or fail under CI=true.

#![allow(dead_code, unreachable_pub)]

/// True if the test can run (see [`netsim::prerequisites`]); the `ip`
/// program is always needed.
pub fn prerequisites(tools: &[&str]) -> bool {
    netsim::prerequisites(&[&["ip"], tools].concat())
}
