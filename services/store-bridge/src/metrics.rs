//! Every metric the store bridge emits, by name. Owns no data; guarantee: names and labels are
//! defined here only, so dashboards and alerts have one place to look.

/// Counter: MQTT messages received, labelled `kind` (event kind, `unknown` or `ignored`) and `store`.
pub const MESSAGES_IN_TOTAL: &str = "tillstream_store_bridge_messages_in_total";
/// Counter: records confirmed by Kafka, labelled `kind` (incl. `DeadLetter`) and `store`.
pub const MESSAGES_OUT_TOTAL: &str = "tillstream_store_bridge_messages_out_total";
/// Counter: inputs dead-lettered, labelled `reason` (also written by `DeadLetters`' naming rule).
pub const DEAD_LETTERS_TOTAL: &str = "tillstream_store_bridge_dead_letters_total";
/// Gauge: records in the outbox (stored, not yet confirmed by Kafka).
pub const OUTBOX_DEPTH: &str = "tillstream_store_bridge_outbox_depth";
/// Gauge: bytes the outbox's records count against `outbox.max_bytes`.
pub const OUTBOX_BYTES: &str = "tillstream_store_bridge_outbox_bytes";
/// Gauge: age of the oldest record in the outbox (0 when empty).
pub const OUTBOX_OLDEST_AGE_SECONDS: &str = "tillstream_store_bridge_outbox_oldest_age_seconds";
/// Gauge, the alarm: 1 while the outbox is full and MQTT messages are not acked.
pub const OUTBOX_FULL: &str = "tillstream_store_bridge_outbox_full";
/// Gauge: 1 while the outbox's disk cannot take a commit (full or failing): nothing is acked, the
/// broker keeps the messages, deliveries still drain; 0 once it has room again.
pub const OUTBOX_DISK_STALLED: &str = "tillstream_store_bridge_outbox_disk_stalled";
/// Gauge: free bytes on the outbox's filesystem.
pub const OUTBOX_DISK_FREE_BYTES: &str = "tillstream_store_bridge_outbox_disk_free_bytes";
/// Histogram: duration of one outbox group commit (fsync included).
pub const OUTBOX_COMMIT_SECONDS: &str = "tillstream_store_bridge_outbox_commit_seconds";
/// Histogram: records per outbox group commit.
pub const OUTBOX_COMMIT_BATCH_EVENTS: &str = "tillstream_store_bridge_outbox_commit_batch_events";
/// Histogram: produce call to Kafka delivery report.
pub const KAFKA_DELIVERY_SECONDS: &str = "tillstream_store_bridge_kafka_delivery_seconds";
/// Histogram: MQTT receive to Kafka delivery report (time spent inside the bridge).
pub const BRIDGE_LATENCY_SECONDS: &str = "tillstream_store_bridge_latency_seconds";
/// Gauge: now − `occurred_at` of the last event received from a store, labelled `store`.
pub const SYNC_LAG_SECONDS: &str = "tillstream_store_bridge_sync_lag_seconds";
/// Gauge: when a store was last heard from (epoch seconds), labelled `store`.
pub const LAST_SEEN_STORE_TIMESTAMP_SECONDS: &str =
    "tillstream_store_bridge_store_last_seen_timestamp_seconds";
/// Gauge: when a device was last heard from (epoch seconds), labelled `device` and `store`.
pub const LAST_SEEN_DEVICE_TIMESTAMP_SECONDS: &str =
    "tillstream_store_bridge_device_last_seen_timestamp_seconds";
/// Gauge: 1 while the uplink MQTT session is connected.
pub const MQTT_CONNECTED: &str = "tillstream_store_bridge_mqtt_connected";
/// Counter: MQTT connection errors (each is followed by a reconnect).
pub const MQTT_RECONNECTS_TOTAL: &str = "tillstream_store_bridge_mqtt_reconnects_total";
/// Gauge: 1 while Kafka answers metadata requests.
pub const KAFKA_REACHABLE: &str = "tillstream_store_bridge_kafka_reachable";
/// Counter: records set aside in the outbox quarantine, by `reason` (`topic_unknown`,
/// `not_authorized`, `topic_invalid`).
pub const QUARANTINED_TOTAL: &str = "tillstream_store_bridge_quarantined_total";
/// Gauge: records in the outbox quarantine (set aside, waiting for `tillctl outbox redrive`).
pub const QUARANTINE_DEPTH: &str = "tillstream_store_bridge_quarantine_depth";
/// Counter: drainer resets (producer rebuilt, undelivered records re-sent in order).
pub const DRAINER_RESETS_TOTAL: &str = "tillstream_store_bridge_drainer_resets_total";
/// Counter: downlink messages published (retained), labelled `store` and `document`
/// (`catalog`: a store document; `receipt`: a device's sync receipt).
pub const DOWNLINK_PUBLISHED_TOTAL: &str = "tillstream_store_bridge_downlink_published_total";
/// Counter: downlink records that could not be delivered to a store (dead-lettered), by `reason`.
pub const DOWNLINK_REJECTED_TOTAL: &str = "tillstream_store_bridge_downlink_rejected_total";
/// Counter: store events taken on a v1 store-level topic (`topic_levels = "device_and_store"`,
/// a migration), labelled `store`; flat once every till publishes on its device-level topics.
pub const STORE_LEVEL_TOPIC_EVENTS_TOTAL: &str =
    "tillstream_store_bridge_store_level_topic_events_total";
/// Gauge: devices in the fleet file the bridge validates against.
pub const FLEET_DEVICES: &str = "tillstream_store_bridge_fleet_devices";
/// Counter: fleet file reloads, by `outcome` (`applied`; `refused`: the file did not parse, the
/// fleet stays as it was).
pub const FLEET_RELOADS_TOTAL: &str = "tillstream_store_bridge_fleet_reloads_total";

// Emit functions: the only places metrics are recorded (the rest of the crate calls these).

/// An MQTT message the uplink took: `kind` is the event kind, `ignored` or `rejected`.
pub fn message_in(kind: &'static str, store: &str) {
    metrics::counter!(MESSAGES_IN_TOTAL, "kind" => kind, "store" => store.to_string()).increment(1);
}

/// A bad input became a dead letter.
pub fn dead_lettered(reason: &'static str) {
    metrics::counter!(DEAD_LETTERS_TOTAL, "reason" => reason).increment(1);
}

/// A store event came in on a v1 store-level topic (migration).
pub fn store_level_topic_event(store: &str) {
    metrics::counter!(STORE_LEVEL_TOPIC_EVENTS_TOTAL, "store" => store.to_string()).increment(1);
}

/// A store event was accepted: the store's and device's last sight, and its sync lag.
pub fn event_seen(store: &str, device: &str, seen_at_s: f64, lag_s: f64) {
    metrics::gauge!(LAST_SEEN_STORE_TIMESTAMP_SECONDS, "store" => store.to_string()).set(seen_at_s);
    metrics::gauge!(LAST_SEEN_DEVICE_TIMESTAMP_SECONDS,
        "device" => device.to_string(), "store" => store.to_string())
    .set(seen_at_s);
    metrics::gauge!(SYNC_LAG_SECONDS, "store" => store.to_string()).set(lag_s);
}

/// The fleet the bridge validates against now has `n` devices.
pub fn fleet_devices(n: usize) {
    metrics::gauge!(FLEET_DEVICES).set(n as f64);
}

/// A fleet file reload: `applied` or `refused`.
pub fn fleet_reload(outcome: &'static str) {
    metrics::counter!(FLEET_RELOADS_TOTAL, "outcome" => outcome).increment(1);
}

pub fn mqtt_connected(up: bool) {
    metrics::gauge!(MQTT_CONNECTED).set(if up { 1.0 } else { 0.0 });
}

pub fn mqtt_reconnect() {
    metrics::counter!(MQTT_RECONNECTS_TOTAL).increment(1);
}

pub fn kafka_reachable(up: bool) {
    metrics::gauge!(KAFKA_REACHABLE).set(if up { 1.0 } else { 0.0 });
}

/// Kafka confirmed a record: its delivery time, its time inside the bridge, and the count.
pub fn delivered(kind: &str, store: &str, delivery_s: f64, inside_s: f64) {
    metrics::histogram!(KAFKA_DELIVERY_SECONDS).record(delivery_s);
    metrics::histogram!(BRIDGE_LATENCY_SECONDS).record(inside_s);
    metrics::counter!(MESSAGES_OUT_TOTAL, "kind" => kind.to_string(), "store" => store.to_string())
        .increment(1);
}

pub fn quarantined(reason: &'static str) {
    metrics::counter!(QUARANTINED_TOTAL, "reason" => reason).increment(1);
}

pub fn drainer_reset() {
    metrics::counter!(DRAINER_RESETS_TOTAL).increment(1);
}

pub fn downlink_published(store: String, document: &'static str) {
    metrics::counter!(DOWNLINK_PUBLISHED_TOTAL, "store" => store, "document" => document)
        .increment(1);
}

pub fn downlink_rejected(reason: &'static str) {
    metrics::counter!(DOWNLINK_REJECTED_TOTAL, "reason" => reason).increment(1);
}

/// One outbox group commit: its duration and how many records it appended.
pub fn outbox_commit(seconds: f64, records: usize) {
    metrics::histogram!(OUTBOX_COMMIT_SECONDS).record(seconds);
    metrics::histogram!(OUTBOX_COMMIT_BATCH_EVENTS).record(records as f64);
}

pub fn outbox_disk_stalled(stalled: bool) {
    metrics::gauge!(OUTBOX_DISK_STALLED).set(if stalled { 1.0 } else { 0.0 });
}

pub fn outbox_full(full: bool) {
    metrics::gauge!(OUTBOX_FULL).set(if full { 1.0 } else { 0.0 });
}

/// The outbox's size gauges (`free_bytes` / `quarantined` when known).
pub fn outbox_size(
    depth: u64,
    bytes: u64,
    oldest_age_s: f64,
    free_bytes: Option<u64>,
    quarantined: Option<i64>,
) {
    metrics::gauge!(OUTBOX_DEPTH).set(depth as f64);
    metrics::gauge!(OUTBOX_BYTES).set(bytes as f64);
    metrics::gauge!(OUTBOX_OLDEST_AGE_SECONDS).set(oldest_age_s);
    if let Some(free) = free_bytes {
        metrics::gauge!(OUTBOX_DISK_FREE_BYTES).set(free as f64);
    }
    if let Some(n) = quarantined {
        metrics::gauge!(QUARANTINE_DEPTH).set(n as f64);
    }
}
