//! Placeholder created by the crust engineer so the workspace loads; replace.
fn main() {}
