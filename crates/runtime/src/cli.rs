//! Arguments the command-line tools (`tillctl`, `tillstream-sim`) share, so a flag means the same
//! thing, reads the same environment variable and has the same default wherever it appears.

/// `--brokers`: the Kafka bootstrap servers a command talks to.
#[derive(clap::Args, Debug, Clone)]
pub struct BrokersArg {
    /// Kafka bootstrap servers.
    #[arg(
        long,
        env = "TILLSTREAM_KAFKA_BROKERS",
        default_value = "127.0.0.1:19092"
    )]
    pub brokers: String,
}

/// `--registry`: the schema registry a command talks to.
#[derive(clap::Args, Debug, Clone)]
pub struct RegistryArg {
    /// Schema registry URL.
    #[arg(
        long,
        env = "TILLSTREAM_REGISTRY_URL",
        default_value = "http://127.0.0.1:18081"
    )]
    pub registry: String,
}

impl BrokersArg {
    /// Kafka settings for these brokers, the rest defaulted.
    pub fn kafka_config(&self) -> crate::kafka::KafkaConfig {
        crate::kafka::KafkaConfig {
            brokers: self.brokers.clone(),
            ..crate::kafka::KafkaConfig::default()
        }
    }
}

impl RegistryArg {
    /// A registry client configuration for this URL that only reads (never registers a schema).
    pub fn read_only(&self) -> tillstream_contracts::RegistryConfig {
        tillstream_contracts::RegistryConfig {
            url: self.registry.clone(),
            auto_register: false,
            ..tillstream_contracts::RegistryConfig::default()
        }
    }
}
