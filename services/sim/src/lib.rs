//! tillstream-sim: a seeded, deterministic fleet of POS devices (`plan`), the ground truth of what it
//! sold and moved (`truth`, an independent reference implementation of the event semantics), the MQTT
//! publisher that plays a plan against a real broker like POS apps would (`publish`; the cloud's
//! price-list history: `history`; the late tills held back until their store-days are exported:
//! `late`), and the oracle
//! that compares the pipeline's outputs with the truth (`oracle`).

pub mod device;
pub mod late;
pub mod oracle;
pub mod plan;
pub mod pricing;
pub mod publish;
pub mod truth;
