//! tillctl: the operator's command line. The schema evolution gate (`schemas`), topology as code
//! (`topology`), topic inspection (`inspect`) and the store bridge's outbox quarantine (`outbox`). Every command is a library function so tests drive
//! it directly; `main.rs` only parses arguments and prints.

pub mod inspect;
pub mod outbox;
pub mod schemas;
pub mod topology;
