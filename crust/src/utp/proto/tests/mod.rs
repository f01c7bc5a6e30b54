//! Simulated-pair tests: two endpoints, impaired links, a virtual clock.

mod interop;
mod reliability;
mod sim;
mod transfer;
