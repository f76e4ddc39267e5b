//! `tillstream-finance-export`: parses flags, loads config, and runs the finance export until SIGTERM
//! ([`tillstream_runtime::service_main!`]). Owns nothing else; the guarantees are the library's.

tillstream_runtime::service_main! {
    /// Books the store-event stream into a double-entry ledger and exports immutable day files.
    tillstream_finance_export
}
