//! Simulated-pair tests: two endpoints, impaired links, a virtual clock.

mod interop;
mod sim;
mod transfer;
