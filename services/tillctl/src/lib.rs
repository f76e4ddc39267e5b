//! tillctl: the operator's command line. The schema evolution gate (`schemas`), topology as code
//! (`topology`, rendered as Strimzi `KafkaTopic` resources by `strimzi`), topic inspection
//! (`inspect`), the dead-letter topic and its re-drive (`dead_letters`), the store bridge's outbox
//! quarantine (`outbox`), the
//! conflict detector's review queue (`conflicts`), price-list approval (`prices`) and the finance
//! export's day files, ledger and reconciliation (`finance`), the live view of a running
//! pipeline from its services' metrics (`top`), and the devices' certificates (`fleet`). Every command
//! is a library function so tests drive it directly; `main.rs` only parses arguments and prints.

pub mod conflicts;
pub mod dead_letters;
pub mod finance;
pub mod fleet;
pub mod inspect;
pub mod outbox;
pub mod prices;
pub mod schemas;
pub mod strimzi;
pub mod top;
pub mod topology;
