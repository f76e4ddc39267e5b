//! The conflict detector (work in progress: the pure core is in place, the service around it
//! follows). See [`core`] for the rules, event time and verdict identity.
//!
//! Delivery guarantee: none yet (no I/O).

pub mod core;
