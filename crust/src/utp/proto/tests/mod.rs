//! Simulated-pair tests: two endpoints, impaired links, a virtual clock.

// Configs are `#[non_exhaustive]`; tests change them the way users must.
#![allow(clippy::field_reassign_with_default)]

mod congestion;
mod hello;
mod interop;
mod reliability;
mod sim;
mod stall;
mod transfer;
