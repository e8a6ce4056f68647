//! Install and boot benchmarks (written below).
fn main() {}
