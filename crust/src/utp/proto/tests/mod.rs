//! Simulated-pair tests: two endpoints, impaired links, a virtual clock.

mod sim;
mod transfer;
