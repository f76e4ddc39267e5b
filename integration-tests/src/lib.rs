//! Helpers for the integration tests: where the local stack is (from `scripts/stack env`) and small
//! Kafka utilities. The tests themselves live in `tests/`.
