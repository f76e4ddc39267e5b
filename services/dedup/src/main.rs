//! `tillstream-dedup`: parses flags, loads config, and runs the dedup service until SIGTERM
//! ([`tillstream_runtime::service_main!`]). Owns nothing else; the guarantees are the library's.

tillstream_runtime::service_main! {
    /// Deduplicates raw store events and accounts for per-device sequence gaps.
    tillstream_dedup
}
