//! Compatibility levels and checks: the shared implementation in `tillstream_contracts::compat`
//! (the `tillctl` schema gate uses the same code, so the gate and the registry decide alike).

pub use tillstream_contracts::compat::*;
