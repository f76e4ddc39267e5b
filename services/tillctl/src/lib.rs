//! tillctl: the operator's command line. The schema evolution gate (`schemas`), topology as code
//! (`topology`), topic inspection (`inspect`), the store bridge's outbox quarantine (`outbox`), the
//! conflict detector's review queue (`conflicts`) and price-list approval (`prices`). Every command
//! is a library function so tests drive it directly; `main.rs` only parses arguments and prints.

pub mod conflicts;
pub mod inspect;
pub mod outbox;
pub mod prices;
pub mod schemas;
pub mod topology;
