//! `tillstream-store-bridge`: parses flags, loads config, and runs the bridge until SIGTERM
//! ([`tillstream_runtime::service_main!`]). Owns nothing else; the guarantees are the library's.

tillstream_runtime::service_main! {
    /// Store bridge: MQTT (store devices) to Kafka through a durable outbox, and the catalog downlink.
    tillstream_store_bridge
}
