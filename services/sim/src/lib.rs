//! tillstream-sim: a seeded, deterministic fleet of POS devices and the oracle that checks the
//! pipeline against it.
//!
//! # Layout
//! - `plan`: the fleet plan (pure, seeded) and `truth`, the ground truth of what it sold and moved
//!   (an independent reference implementation of the event semantics).
//! - `device`: a device's local event store, kept until a sync receipt covers it (pure).
//! - `publish`: plays a plan against a real MQTT broker like POS apps would; `late`: the late tills
//!   held back until their store-days are exported; `pricing`: the cloud's pricing service.
//! - `oracle`: reads the pipeline's outputs and compares them with the truth.

pub mod device;
pub mod late;
pub mod oracle;
pub mod plan;
pub mod pricing;
pub mod publish;
pub mod truth;
