//! `tillstream-conflict-detector`: parses flags, loads config, and runs the conflict detector until SIGTERM
//! ([`tillstream_runtime::service_main!`]). Owns nothing else; the guarantees are the library's.

tillstream_runtime::service_main! {
    /// Evaluates the retail rules in event time, writes conflicts and compensations, serves the review
    /// queue.
    tillstream_conflict_detector
}
