//! The store bridge's configuration: MQTT connection and session, Kafka, registry, the fleet file,
//! the topic→Kafka routes (configuration, not code), validation limits, the outbox, dead letters,
//! the downlink and the ops endpoint. Loaded with `tillstream_runtime::config::load("store-bridge", ..)`.
//! Owns only parsing and defaults; gives no delivery guarantee.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tillstream_contracts::RegistryConfig;
use tillstream_runtime::config::OpsConfig;
use tillstream_runtime::kafka::KafkaConfig;

/// Everything the bridge reads at start.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub mqtt: MqttConfig,
    pub kafka: KafkaConfig,
    pub registry: RegistryConfig,
    /// CSV `device_id,store_id`: the store each device is registered to.
    pub fleet_file: PathBuf,
    /// MQTT topic pattern → event kind → Kafka topic. First match wins.
    pub routes: Vec<RouteConfig>,
    /// Contract v2 device-level topics only, or also the v1 store-level ones while tills migrate.
    pub topic_levels: TopicLevels,
    pub limits: LimitsConfig,
    pub outbox: OutboxConfig,
    pub dead_letter: DeadLetterConfig,
    pub downlink: DownlinkConfig,
    pub ops: OpsConfig,
}

/// MQTT connection of the uplink (MQTT v5, persistent session).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct MqttConfig {
    /// `mqtt://host:port`, or `mqtts://host:port` for TLS with the bridge's own certificate (the
    /// `TILLSTREAM_MQTT_URL` shortcut sets it).
    pub url: String,
    /// CA, certificate and key for `mqtts://` (`TILLSTREAM_MQTT_TLS_DIR` sets `tls.dir`, a PKI
    /// folder of `tillctl fleet`; the certificate is the one of `username`).
    pub tls: tillstream_runtime::mqtt::MqttTlsConfig,
    /// Client id of the uplink session. Must be stable across restarts: the broker keeps the
    /// session (subscriptions + queued messages) under this id.
    pub client_id: String,
    pub username: String,
    /// The bridge's MQTT password (printed as `<redacted>`).
    pub password: tillstream_runtime::config::Secret,
    /// Session expiry (v5) in seconds: how long the broker keeps our queue while we are away.
    pub session_expiry_s: u32,
    pub keep_alive_s: u64,
    /// Receive Maximum (v5): unacked QoS 1 messages the broker may have in flight to us. This is the
    /// bridge's unacked window, and with the outbox full, the most it holds in memory.
    pub receive_maximum: u16,
    /// Largest MQTT packet we accept. Keep it at least the broker's `max_packet_size`: a v5 broker
    /// silently skips messages larger than the client's limit, and they must reach us to be
    /// dead-lettered instead.
    pub max_packet_bytes: u32,
    /// Topic filters subscribed at QoS 1. Wider than the routes on purpose: a message on a topic no
    /// route knows is dead-lettered (`unknown_topic`) rather than never seen.
    pub subscriptions: Vec<String>,
    /// Topic filters that match `subscriptions` but are not input (our own catalog downlink):
    /// acked and skipped.
    pub ignore: Vec<String>,
    /// Delay between reconnect attempts after a connection error.
    pub reconnect_delay_ms: u64,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            url: "mqtts://127.0.0.1:11883".into(),
            // The local stack's PKI (`scripts/stack`), relative to the checkout like `fleet_file`.
            tls: tillstream_runtime::mqtt::MqttTlsConfig {
                dir: ".stack/pki".into(),
                ..Default::default()
            },
            client_id: "tillstream-store-bridge".into(),
            username: "bridge".into(),
            password: "bridge-dev".into(),
            session_expiry_s: 14 * 24 * 3600,
            keep_alive_s: 30,
            receive_maximum: 10_000,
            max_packet_bytes: 16 * 1024 * 1024,
            subscriptions: vec!["store/+/#".into(), "fleet/+/#".into()],
            ignore: vec!["store/+/catalog/#".into()],
            reconnect_delay_ms: 500,
        }
    }
}

impl MqttConfig {
    /// Options of one MQTT connection of the bridge (`client_id`: the uplink's or the downlink's
    /// session): address, TLS with the bridge's certificate for `mqtts://`, credentials.
    pub fn connection_options(&self, client_id: &str) -> Result<rumqttc::v5::MqttOptions, String> {
        use tillstream_runtime::mqtt::BrokerAddress;
        let a = BrokerAddress::parse(&self.url).map_err(|e| e.to_string())?;
        let transport = a
            .transport(&self.url, &self.tls, &self.username)
            .map_err(|e| e.to_string())?;
        let mut o = rumqttc::v5::MqttOptions::new(client_id, a.host, a.port);
        o.set_transport(transport)
            .set_credentials(self.username.clone(), self.password.expose());
        Ok(o)
    }
}

/// One route: which MQTT topics carry which event, and where it goes in Kafka.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RouteConfig {
    /// Topic pattern with `{store}` and/or `{device}` placeholders (each one whole level).
    pub topic: String,
    /// Event kind (short record name, e.g. `OrderCreated`).
    pub kind: String,
    /// Kafka topic.
    pub kafka_topic: String,
}

impl RouteConfig {
    fn new(topic: &str, kind: &str, kafka_topic: &str) -> Self {
        RouteConfig {
            topic: topic.into(),
            kind: kind.into(),
            kafka_topic: kafka_topic.into(),
        }
    }
}

/// Raw store events topic.
pub const RAW_TOPIC: &str = "tillstream.store-events.raw";
/// Device health topic.
pub const HEALTH_TOPIC: &str = "tillstream.device-health.raw";

/// Which topic shapes of the device contract (`schemas/json/README.md`) the bridge accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TopicLevels {
    /// Contract v2 only: `store/{store}/{device}/...`. The broker's ACL lets a device write only
    /// under its own id, so the topic names the connection's device and the payload must agree.
    #[default]
    Device,
    /// Migration: v2 and the v1 store-level topics (`store/{store}/pos/...`), which carry no
    /// device level: their device identity rests on the payload alone. Every event taken on one is
    /// counted (`tillstream_store_bridge_store_level_topic_events_total{store}`) so the operator
    /// sees when the last till has moved and can switch back to `device`.
    DeviceAndStore,
}

/// Kind and path below the identity levels of each store event route (the same in v1 and v2).
const STORE_EVENT_ROUTES: [(&str, &str); 8] = [
    ("pos/order.created", "OrderCreated"),
    ("pos/order.refunded", "OrderRefunded"),
    ("inventory/adjusted", "InventoryAdjusted"),
    (
        "inventory/reservation.requested",
        "StockReservationRequested",
    ),
    ("inventory/reservation.granted", "StockReservationGranted"),
    ("inventory/reservation.released", "StockReservationReleased"),
    ("loyalty/redeemed", "LoyaltyRedeemed"),
    ("day/closed", "StoreDayClosed"),
];

/// The routes of the semantic topics documented for POS vendors (contract v2: a device level
/// under the store).
pub fn default_routes() -> Vec<RouteConfig> {
    let mut routes: Vec<RouteConfig> = STORE_EVENT_ROUTES
        .iter()
        .map(|(path, kind)| {
            RouteConfig::new(
                &format!("store/{{store}}/{{device}}/{path}"),
                kind,
                RAW_TOPIC,
            )
        })
        .collect();
    routes.push(RouteConfig::new(
        "fleet/{device}/health.status",
        "DeviceHealth",
        HEALTH_TOPIC,
    ));
    routes
}

/// The v1 store-level routes (`store/{store}/pos/order.created`, ...), accepted after the
/// configured routes while [`TopicLevels::DeviceAndStore`] is set.
pub fn store_level_routes() -> Vec<RouteConfig> {
    STORE_EVENT_ROUTES
        .iter()
        .map(|(path, kind)| RouteConfig::new(&format!("store/{{store}}/{path}"), kind, RAW_TOPIC))
        .collect()
}

impl Config {
    /// The routes in force: the configured ones, then the v1 store-level ones during a migration.
    pub fn effective_routes(&self) -> Vec<RouteConfig> {
        let mut routes = self.routes.clone();
        if self.topic_levels == TopicLevels::DeviceAndStore {
            routes.extend(store_level_routes());
        }
        routes
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LimitsConfig {
    /// Larger payloads are dead-lettered (`payload_too_large`).
    pub max_payload_bytes: usize,
    /// Largest amount of money (any `amount_minor`, minor units, either sign) an event may carry;
    /// beyond it the event is dead-lettered `out_of_bounds`.
    pub max_amount_minor: i64,
    /// Largest quantity (`qty`, `quantity`, loyalty `points`, either sign).
    pub max_quantity: i64,
    /// Most entries in any list of an event (order and refund lines, discounts, tenders, counts).
    pub max_lines: usize,
    /// Longest string (ids, skus, codes), in bytes.
    pub max_string_bytes: usize,
}

impl Default for LimitsConfig {
    /// Generous for retail and chosen so that one event's sums cannot overflow `i64` (amount x
    /// quantity x lines, tested in `bounds`).
    fn default() -> Self {
        LimitsConfig {
            max_payload_bytes: 256 * 1024,
            max_amount_minor: 100_000_000_000,
            max_quantity: 100_000,
            max_lines: 250,
            max_string_bytes: 256,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct OutboxConfig {
    /// Folder of the SQLite outbox (`outbox.db`).
    pub dir: PathBuf,
    /// Full when the stored records exceed this many bytes: the bridge stops acking MQTT.
    pub max_bytes: u64,
    /// Full when the oldest stored record is older than this: the bridge stops acking MQTT.
    pub max_age_s: u64,
    /// A file of this size is kept beside the outbox and given back when the disk fills up, so
    /// deletes of delivered records (and WAL checkpoints) can still be written; appends resume
    /// once the disk has twice this free again. The WAL is checkpointed whenever it holds half this
    /// much, so a checkpoint always fits into what the reserve gives back. 0 = none.
    pub disk_reserve_bytes: u64,
    /// Largest group commit (records).
    pub max_batch: usize,
    /// Records kept in memory for the drainer after their commit (the rest are re-read from disk).
    pub hot_bytes: usize,
    /// Records produced to Kafka and not yet confirmed, at most.
    pub max_in_flight: usize,
    /// The drainer keeps about this long's worth of deliveries (at Kafka's measured pace) in
    /// flight, between 1,000 records and `max_in_flight`.
    pub in_flight_window_ms: u64,
    /// Failed deliveries in a row that name a topic as the problem (it vanished, or the bridge may
    /// not write it) before that topic's records are set aside in the outbox's quarantine table,
    /// so the rest drains (`tillctl outbox redrive` puts them back).
    pub quarantine_after_failures: u32,
    /// How long a quarantined topic's records are set aside before one is tried again.
    pub quarantine_recheck_ms: u64,
    /// On shutdown, how long to wait for in-flight deliveries (the rest stay in the outbox).
    pub shutdown_drain_ms: u64,
    /// `linger.ms` of the drainer's producer. Fewer, larger batches: tansu 0.6 (SQLite) serves a
    /// partition made of many small batches very slowly to consumers (see the README).
    pub producer_linger_ms: u32,
    /// A record without a delivery report after this long fails in the producer, and the drainer
    /// resets (new producer, everything unconfirmed re-sent in order from the outbox). Bounds how
    /// long one stuck request can hold the drain (e.g. a broker that lost it across a restart).
    pub delivery_timeout_ms: u32,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            dir: PathBuf::from("data/store-bridge"),
            max_bytes: 2 * 1024 * 1024 * 1024,
            max_age_s: 7 * 24 * 3600,
            disk_reserve_bytes: 8 * 1024 * 1024,
            max_batch: 5_000,
            hot_bytes: 64 * 1024 * 1024,
            max_in_flight: 10_000,
            in_flight_window_ms: 1_000,
            quarantine_after_failures: 5,
            quarantine_recheck_ms: 60_000,
            shutdown_drain_ms: 10_000,
            producer_linger_ms: 20,
            delivery_timeout_ms: 60_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DeadLetterConfig {
    pub topic: String,
    /// Raw payload bytes kept in a dead letter (an oversize payload is cut to this, and says so).
    pub max_payload_bytes: usize,
}

impl Default for DeadLetterConfig {
    fn default() -> Self {
        DeadLetterConfig {
            topic: "tillstream.dead-letter".into(),
            max_payload_bytes: 256 * 1024,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DownlinkConfig {
    pub enabled: bool,
    /// Cloud-to-store documents (key `{store}/{document}`).
    pub topic: String,
    pub group_id: String,
    /// MQTT client id of the downlink connection (its own session, separate from the uplink's).
    pub client_id: String,
    /// MQTT topic per document: `{store}` and `{document}` are filled from the Kafka key.
    pub mqtt_topic: String,
    /// Sync receipts written by the dedup (key = device id); empty = not delivered.
    pub receipts_topic: String,
    /// MQTT topic of a device's receipt (`{device}` filled from the key): retained, and readable
    /// only by that device (the broker's ACL).
    pub receipt_mqtt_topic: String,
    /// Documents published per batch before waiting for the broker's PUBACKs.
    pub batch: usize,
}

impl Default for DownlinkConfig {
    fn default() -> Self {
        DownlinkConfig {
            enabled: true,
            topic: "tillstream.catalog.downlink".into(),
            group_id: "tillstream-store-bridge-downlink".into(),
            client_id: "tillstream-store-bridge-downlink".into(),
            mqtt_topic: "store/{store}/catalog/{document}".into(),
            receipts_topic: "tillstream.device-receipts".into(),
            receipt_mqtt_topic: "device/{device}/receipt".into(),
            batch: 500,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mqtt: MqttConfig::default(),
            kafka: KafkaConfig::default(),
            registry: RegistryConfig::default(),
            fleet_file: PathBuf::from("config/fleet/devices.csv"),
            routes: default_routes(),
            topic_levels: TopicLevels::default(),
            limits: LimitsConfig::default(),
            outbox: OutboxConfig::default(),
            dead_letter: DeadLetterConfig::default(),
            downlink: DownlinkConfig::default(),
            ops: OpsConfig::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_is_the_defaults() {
        let file =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("store-bridge.example.toml");
        let text = std::fs::read_to_string(&file).unwrap();
        let from_file: Config = toml::from_str(&text).unwrap();
        assert_eq!(
            toml::to_string(&from_file).unwrap(),
            toml::to_string(&Config::default()).unwrap(),
            "store-bridge.example.toml is stale: regenerate it with --print-config"
        );
    }

    #[test]
    fn a_bad_url_is_refused_before_connecting() {
        let mut m = MqttConfig {
            url: "mqtt://nohost".into(),
            ..Default::default()
        };
        assert!(m.connection_options("x").is_err());
        m.url = "mqtt://127.0.0.1:1883".into();
        assert!(m.connection_options("x").is_ok());
    }

    #[test]
    fn defaults_load_and_routes_come_from_toml() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("b.toml");
        std::fs::write(
            &file,
            "[[routes]]\ntopic = \"s/{store}/x\"\nkind = \"OrderCreated\"\nkafka_topic = \"t\"\n",
        )
        .unwrap();
        let cfg: Config = tillstream_runtime::config::load("store-bridge", Some(&file)).unwrap();
        assert_eq!(
            cfg.routes,
            vec![RouteConfig::new("s/{store}/x", "OrderCreated", "t")]
        );
        assert_eq!(cfg.mqtt.receive_maximum, 10_000);
        let cfg: Config = tillstream_runtime::config::load("store-bridge", None).unwrap();
        assert_eq!(cfg.routes.len(), 9);
    }
}
