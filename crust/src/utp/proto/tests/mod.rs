//! Simulated-pair tests.
