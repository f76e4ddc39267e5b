//! Conflict detector throughput: not written yet.

fn main() {}
