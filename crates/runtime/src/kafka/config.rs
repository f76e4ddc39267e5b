//! Kafka client settings shared by every consumer and producer of a service, and how a consumer gets
//! its partitions ([`Assignment`]). Pure configuration; no delivery guarantee of its own.

use std::collections::BTreeMap;

use rdkafka::config::ClientConfig;
use serde::{Deserialize, Serialize};

/// How a consumer gets its partitions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Assignment {
    /// Apache Kafka's consumer group: the coordinator spreads partitions over the members and moves
    /// them when a member comes or goes. The default, for a broker whose coordinator is reliable.
    #[default]
    Group,
    /// The instance assigns itself its share of the topic's partitions (`static_index` of
    /// `static_count`, by partition number modulo the count) and starts each from the position the
    /// service owns (the projection's database offsets, the dedup's changelog), like Flink's Kafka
    /// source. No group coordinator is involved, so nothing a coordinator does after a fault can
    /// leave a live instance without partitions. For the embedded tansu stack, whose coordinator can
    /// settle a group with nothing assigned to its only live member.
    Static,
}

impl Assignment {
    pub fn as_str(self) -> &'static str {
        match self {
            Assignment::Group => "group",
            Assignment::Static => "static",
        }
    }
}

/// The broker the clients talk to, for the few settings that must differ (modes as types: one
/// switch, not a property list to copy between services).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BrokerProfile {
    /// Apache Kafka (or a compatible broker that answers a fetch as soon as it has data):
    /// librdkafka's defaults.
    #[default]
    Kafka,
    /// tansu 0.6, the embedded stack's broker: its fetch handler sleeps about half of the
    /// remaining `fetch.wait.max.ms` even when it already holds data, so the wait is shorter:
    /// 100 ms (a consumer hop costs ~50 ms instead of ~250 ms). Shorter waits cost tansu CPU while
    /// idle, about linearly (one idle consumer: 1% at 500 ms, 5% at 100, 10% at 50, 20% at 20;
    /// BENCHMARKS.md), and the embedded pipeline runs about six consumers.
    Tansu,
}

impl BrokerProfile {
    pub fn as_str(self) -> &'static str {
        match self {
            BrokerProfile::Kafka => "kafka",
            BrokerProfile::Tansu => "tansu",
        }
    }

    /// `fetch.wait.max.ms` of every consumer (a pass-through property overrides it).
    pub fn fetch_wait_max_ms(self) -> u32 {
        match self {
            BrokerProfile::Kafka => 500,
            BrokerProfile::Tansu => 100,
        }
    }
}

/// Which headers a device event's record carries in Kafka (modes as types: one switch for the
/// bridge, whose records the dedup copies as they are).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordHeaders {
    /// None: the framed Avro value already says everything (the schema id names the event type;
    /// event id, device and seq are fields of the value), and no tillstream consumer reads an
    /// event's headers. The default, because a broker may pay per header: tansu's SQLite storage
    /// writes one row per header, and the five descriptive headers cut its produce rate from 43.5k
    /// to 7.8k records/s (BENCHMARKS.md, "Record headers").
    #[default]
    PayloadOnly,
    /// `tillstream-event-type`, `-event-id`, `-device-id`, `-seq` and `-producer` on every event,
    /// for tools outside tillstream that route or filter on headers without decoding Avro (Kafka
    /// Connect SMTs, ksqlDB `HEADERS`). Costs little on Apache Kafka.
    Descriptive,
}

/// Connection settings shared by every Kafka client of a service.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct KafkaConfig {
    /// Bootstrap servers, e.g. `127.0.0.1:19092`.
    pub brokers: String,
    /// Which broker that is (`kafka` or `tansu`): sets the consumers' fetch wait.
    pub broker: BrokerProfile,
    /// How this instance's consumers get their partitions: `group` or `static`.
    pub assignment: Assignment,
    /// With `assignment = "static"`: this instance's number, from 0.
    pub static_index: u32,
    /// With `assignment = "static"`: how many instances share the partitions (1 = this one reads
    /// them all). Instance `i` reads every partition `p` with `p % count == i`.
    pub static_count: u32,
    /// Consumer group session timeout. Short in tests; a crashed member's partitions move after this.
    pub session_timeout_ms: u32,
    /// Longest pause between two polls before the member is considered stuck; librdkafka also sends
    /// it as the JoinGroup rebalance timeout, i.e. how long a rejoin waits for members that are gone.
    /// After a broker restart tansu still lists the old members, so a rejoin waits this long.
    pub max_poll_interval_ms: u32,
    /// Idempotent producer (no duplicates from producer retries, per-partition order kept with
    /// several requests in flight). Turn it off only for a broker whose idempotence is broken: tansu
    /// 0.6 panics in its storage task on the first produce after it restarts and then fails every
    /// request. Off, producers keep one request in flight (order kept) and a retry may duplicate a
    /// record, which every tillstream sink absorbs (they are idempotent on the event id).
    pub idempotence: bool,
    /// Headers on the device events this service writes (the store bridge): `payload_only` (the
    /// default) or `descriptive`. Side records (dead letters, gaps, receipts, compensations) keep
    /// their headers whatever this says: they are few per batch.
    pub record_headers: RecordHeaders,
    /// Group mode only: self-healing for a group that settled with nothing assigned to this member.
    /// After this long with an empty assignment the member leaves and rejoins the group, which makes
    /// the coordinator rebalance; after `rejoins_before_recreate` rejoins that brought nothing, the
    /// consumer is closed and created again (a new member). 0 = off. Off for Apache Kafka, where an
    /// empty assignment only means more members than partitions.
    pub empty_assignment_rejoin_ms: u64,
    /// Group mode only: fruitless rejoins before the consumer is re-created (see above).
    pub rejoins_before_recreate: u32,
    /// Extra librdkafka properties passed through verbatim (security.protocol, sasl.*, ...).
    /// Credentials among them (`sasl.password`, `ssl.key.password`, ...) print as `<redacted>`.
    #[serde(serialize_with = "serialize_properties")]
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:19092".into(),
            broker: BrokerProfile::Kafka,
            assignment: Assignment::Group,
            static_index: 0,
            static_count: 1,
            session_timeout_ms: 10_000,
            max_poll_interval_ms: 60_000,
            idempotence: true,
            record_headers: RecordHeaders::PayloadOnly,
            empty_assignment_rejoin_ms: 0,
            rejoins_before_recreate: 2,
            properties: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    /// A librdkafka config with the brokers, the client id and the pass-through properties.
    pub fn client_config(&self, client_id: &str) -> ClientConfig {
        self.config_with(client_id, &[])
    }

    /// [`client_config`](Self::client_config) for a consumer: also the broker profile's fetch wait
    /// (the pass-through properties still override it).
    pub fn consumer_config(&self, client_id: &str) -> ClientConfig {
        let wait = self.broker.fetch_wait_max_ms().to_string();
        self.config_with(client_id, &[("fetch.wait.max.ms", wait.as_str())])
    }

    fn config_with(&self, client_id: &str, profile: &[(&str, &str)]) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", client_id)
            // Fail fast on a wrong address instead of hanging metadata requests forever.
            .set("socket.connection.setup.timeout.ms", "10000");
        for (k, v) in profile {
            c.set(*k, *v);
        }
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }

    /// Checks the assignment settings (a wrong static share would silently skip partitions).
    pub fn validate(&self) -> Result<(), String> {
        if self.assignment == Assignment::Static
            && (self.static_count == 0 || self.static_index >= self.static_count)
        {
            return Err(format!(
                "kafka.static_index ({}) must be below kafka.static_count ({}), which must be at least 1",
                self.static_index, self.static_count
            ));
        }
        Ok(())
    }

    /// The partitions of a topic with `partitions` partitions this instance reads in static mode.
    pub fn static_share(&self, partitions: usize) -> Vec<i32> {
        let count = self.static_count.max(1) as usize;
        (0..partitions)
            .filter(|p| p % count == self.static_index as usize)
            .map(|p| p as i32)
            .collect()
    }
}

/// Whether a librdkafka property's value is a credential (passwords, secrets, a private key, an
/// OAUTHBEARER config that may carry a client secret).
fn is_credential(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("password")
        || k.contains("secret")
        || k == "ssl.key.pem"
        || k == "sasl.oauthbearer.config"
}

/// Prints the pass-through properties with credentials as `<redacted>` (`--print-config`).
fn serialize_properties<S: serde::Serializer>(
    properties: &BTreeMap<String, String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(properties.len()))?;
    for (k, v) in properties {
        if is_credential(k) && !v.is_empty() && !tillstream_contracts::secret::exposing() {
            map.serialize_entry(k, tillstream_contracts::secret::REDACTED)?;
        } else {
            map.serialize_entry(k, v)?;
        }
    }
    map.end()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_properties_hide_credentials_and_keep_the_rest() {
        let mut k = KafkaConfig::default();
        for (key, value) in [
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "dedup"),
            ("sasl.password", "hunter2"),
            ("ssl.key.password", "keypass"),
            ("ssl.key.pem", "-----BEGIN PRIVATE KEY-----"),
        ] {
            k.properties.insert(key.into(), value.into());
        }
        let printed = toml::to_string(&k).unwrap();
        for hidden in ["hunter2", "keypass", "BEGIN PRIVATE KEY"] {
            assert!(!printed.contains(hidden), "{hidden} printed:\n{printed}");
        }
        for shown in ["SASL_SSL", "SCRAM-SHA-512", "\"dedup\""] {
            assert!(printed.contains(shown), "{shown} missing:\n{printed}");
        }
        // The values still reach librdkafka.
        assert_eq!(k.properties["sasl.password"], "hunter2");
    }

    /// A production cluster behind SASL over TLS: the properties reach librdkafka, which was built
    /// with TLS and SCRAM support (the `ssl` feature) and takes them; a misspelt one is refused at
    /// creation, so the properties are not silently dropped on the way.
    #[tokio::test]
    async fn sasl_over_tls_properties_make_a_client_librdkafka_accepts() {
        let mut k = KafkaConfig {
            brokers: "127.0.0.1:1".into(),
            ..KafkaConfig::default()
        };
        for (key, value) in [
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "dedup"),
            ("sasl.password", "hunter2"),
            ("ssl.endpoint.identification.algorithm", "https"),
        ] {
            k.properties.insert(key.into(), value.into());
        }
        let _accepted =
            crate::kafka::producer(&k, "sasl-ssl-test").expect("SASL_SSL with SCRAM accepted");
        k.properties
            .insert("security.protocol".into(), "SSL".into());
        k.properties
            .insert("ssl.key.password".into(), "keypass".into());
        let _accepted = crate::kafka::producer(&k, "ssl-test").expect("SSL accepted");
        k.properties
            .insert("sasl.mechanismz".into(), "PLAIN".into());
        assert!(crate::kafka::producer(&k, "misspelt").is_err());
    }

    #[test]
    fn static_shares_cover_every_partition_exactly_once() {
        for count in 1..=5u32 {
            let mut seen = vec![0; 12];
            for index in 0..count {
                let k = KafkaConfig {
                    assignment: Assignment::Static,
                    static_index: index,
                    static_count: count,
                    ..Default::default()
                };
                k.validate().unwrap();
                for p in k.static_share(12) {
                    seen[p as usize] += 1;
                }
            }
            assert!(seen.iter().all(|n| *n == 1), "count {count}: {seen:?}");
        }
        let bad = KafkaConfig {
            assignment: Assignment::Static,
            static_index: 2,
            static_count: 2,
            ..Default::default()
        };
        assert!(bad.validate().is_err());
    }
}
