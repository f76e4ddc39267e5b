//! Configuration loading: built-in defaults, then an optional TOML file, then environment variables.
//! Owns only parsing; gives no delivery guarantee.
//!
//! Precedence (later wins):
//! 1. the service's `Default` impl,
//! 2. the TOML file given with `--config`,
//! 3. stack-wide shortcuts (`TILLSTREAM_KAFKA_BROKERS`, `TILLSTREAM_REGISTRY_URL`, `TILLSTREAM_PG_URL`,
//!    `TILLSTREAM_MQTT_URL`, `TILLSTREAM_MQTT_TLS_DIR`) written by `scripts/stack env`,
//! 4. service-scoped variables `TILLSTREAM_<SERVICE>__<SECTION>__<KEY>` (double underscore nests),
//!    e.g. `TILLSTREAM_DEDUP__KAFKA__BROKERS`.

use std::net::SocketAddr;
use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

pub use tillstream_contracts::Secret;

/// Stack-wide environment shortcuts and the config key each one sets.
pub const SHORTCUTS: &[(&str, &str)] = &[
    ("TILLSTREAM_KAFKA_BROKERS", "kafka.brokers"),
    ("TILLSTREAM_REGISTRY_URL", "registry.url"),
    ("TILLSTREAM_PG_URL", "database.url"),
    ("TILLSTREAM_MQTT_URL", "mqtt.url"),
    ("TILLSTREAM_MQTT_TLS_DIR", "mqtt.tls.dir"),
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    Missing(String),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl crate::Classify for ConfigError {
    fn class(&self) -> crate::ErrorClass {
        crate::ErrorClass::Fatal
    }
}

/// Loads `T` for the service named `service` (e.g. `dedup`, `store-bridge`).
///
/// Shortcut variables only apply to keys the service's config actually has.
pub fn load<T>(service: &str, file: Option<&Path>) -> Result<T, ConfigError>
where
    T: Serialize + for<'de> Deserialize<'de> + Default,
{
    // The defaults with their secrets' values (printing redacts them; merged redacted, a default
    // password would become "<redacted>"). Figment serializes a provider when it merges it.
    let mut fig = tillstream_contracts::secret::serialized_exposed(|| {
        Figment::from(Serialized::defaults(T::default()))
    });
    if let Some(path) = file {
        if !path.exists() {
            return Err(ConfigError::Missing(path.display().to_string()));
        }
        fig = fig.merge(Toml::file(path));
    }
    let defaults = serde_json::to_value(T::default()).unwrap_or_default();
    for (var, key) in SHORTCUTS {
        if has_key(&defaults, key) {
            let key = *key;
            fig = fig.merge(Env::raw().only(&[var]).map(move |_| key.into()).split("."));
        }
    }
    let prefix = format!(
        "TILLSTREAM_{}__",
        service.to_ascii_uppercase().replace('-', "_")
    );
    fig = fig.merge(Env::prefixed(&prefix).split("__"));
    fig.extract()
        .map_err(|e| ConfigError::Invalid(e.to_string().replace('\n', "; ")))
}

/// A config as the text of a TOML file a service can `--config`, secrets included (printing
/// redacts them): for a harness or bench that hands a config to a child process. Never for output.
pub fn to_config_file<T: Serialize>(config: &T) -> Result<String, ConfigError> {
    tillstream_contracts::secret::serialized_exposed(|| toml::to_string(config))
        .map_err(|e| ConfigError::Invalid(e.to_string()))
}

fn has_key(value: &serde_json::Value, dotted: &str) -> bool {
    let mut cur = value;
    for part in dotted.split('.') {
        match cur.get(part) {
            Some(v) => cur = v,
            None => return false,
        }
    }
    true
}

/// The config flags every service binary takes: `--config FILE`, `--print-config` and
/// `--config-format toml|json` (print the effective configuration and exit: what an operator checks,
/// and what `scripts/validate-deploy` reads to check the manifests' environment variables).
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArgs {
    /// TOML config file; environment variables override it (see the service's README).
    #[arg(long, global = true)]
    pub config: Option<std::path::PathBuf>,
    /// Print the effective configuration and exit.
    #[arg(long, global = true)]
    pub print_config: bool,
    /// Format of --print-config.
    #[arg(long, global = true, value_parser = ["toml", "json"], default_value = "toml")]
    pub config_format: String,
}

impl ConfigArgs {
    /// Loads the service's config; with `--print-config` prints it and returns `None`.
    pub fn load<T>(&self, service: &str) -> Result<Option<T>, ConfigError>
    where
        T: Serialize + for<'de> Deserialize<'de> + Default,
    {
        let cfg: T = load(service, self.config.as_deref())?;
        if !self.print_config {
            return Ok(Some(cfg));
        }
        let text = if self.config_format == "json" {
            serde_json::to_string_pretty(&cfg).map_err(|e| ConfigError::Invalid(e.to_string()))?
        } else {
            toml::to_string_pretty(&cfg).map_err(|e| ConfigError::Invalid(e.to_string()))?
        };
        println!("{text}");
        Ok(None)
    }
}

/// Where a service serves `/metrics`, `/healthz` and `/readyz`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct OpsConfig {
    pub listen: SocketAddr,
}

impl Default for OpsConfig {
    fn default() -> Self {
        OpsConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closure signature, not ours
mod tests {
    use super::*;

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(default)]
    struct Kafka {
        brokers: String,
        batch: u32,
    }

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(default)]
    struct Cfg {
        kafka: Kafka,
        name: String,
    }

    #[derive(Debug, Serialize, Deserialize)]
    #[serde(default)]
    struct WithSecrets {
        password: Secret,
        kafka: crate::kafka::KafkaConfig,
    }

    impl Default for WithSecrets {
        fn default() -> Self {
            WithSecrets {
                password: Secret::new("default-pw"),
                kafka: crate::kafka::KafkaConfig::default(),
            }
        }
    }

    #[test]
    fn secrets_load_with_their_values_and_print_redacted() {
        figment::Jail::expect_with(|jail| {
            // A default secret stays its value through loading (not the printed "<redacted>").
            let cfg: WithSecrets = load("sec-svc", None).unwrap();
            assert_eq!(cfg.password.expose(), "default-pw");
            jail.set_env("TILLSTREAM_SEC_SVC__PASSWORD", "from-env");
            jail.create_file(
                "sec.toml",
                "[kafka.properties]\n\"sasl.password\" = \"kafka-pw\"\n",
            )?;
            let cfg: WithSecrets = load("sec-svc", Some(Path::new("sec.toml"))).unwrap();
            assert_eq!(cfg.kafka.properties["sasl.password"], "kafka-pw");
            assert_eq!(cfg.password.expose(), "from-env");
            let printed = toml::to_string_pretty(&cfg).unwrap();
            assert!(!printed.contains("from-env"), "{printed}");
            assert!(!printed.contains("kafka-pw"), "{printed}");
            assert!(printed.contains("<redacted>"), "{printed}");
            assert!(!format!("{cfg:?}").contains("from-env"));
            // A config file written for a child process keeps the values.
            jail.create_file("child.toml", &to_config_file(&cfg).unwrap())?;
            let child: WithSecrets = load("sec-svc", Some(Path::new("child.toml"))).unwrap();
            assert_eq!(child.kafka.properties["sasl.password"], "kafka-pw");
            Ok(())
        });
    }

    #[test]
    fn file_then_shortcut_then_service_env() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "svc.toml",
                "name = \"from-file\"\n[kafka]\nbrokers = \"file:1\"\nbatch = 7\n",
            )?;
            let cfg: Cfg = load("my-svc", Some(Path::new("svc.toml"))).unwrap();
            assert_eq!(cfg.kafka.brokers, "file:1");
            assert_eq!(cfg.kafka.batch, 7);

            jail.set_env("TILLSTREAM_KAFKA_BROKERS", "shortcut:2");
            let cfg: Cfg = load("my-svc", Some(Path::new("svc.toml"))).unwrap();
            assert_eq!(cfg.kafka.brokers, "shortcut:2");

            jail.set_env("TILLSTREAM_MY_SVC__KAFKA__BROKERS", "scoped:3");
            jail.set_env("TILLSTREAM_MY_SVC__KAFKA__BATCH", "9");
            let cfg: Cfg = load("my-svc", Some(Path::new("svc.toml"))).unwrap();
            assert_eq!(cfg.kafka.brokers, "scoped:3");
            assert_eq!(cfg.kafka.batch, 9);
            assert_eq!(cfg.name, "from-file");
            Ok(())
        });
    }

    #[test]
    fn missing_file_and_bad_types_are_errors() {
        figment::Jail::expect_with(|jail| {
            let err = load::<Cfg>("x", Some(Path::new("nope.toml"))).unwrap_err();
            assert!(matches!(err, ConfigError::Missing(_)));
            jail.create_file("bad.toml", "[kafka]\nbatch = \"many\"\n")?;
            let err = load::<Cfg>("x", Some(Path::new("bad.toml"))).unwrap_err();
            assert!(err.to_string().contains("batch"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn shortcut_ignored_when_service_lacks_key() {
        #[derive(Debug, Default, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        struct NoKafka {
            name: String,
        }
        figment::Jail::expect_with(|jail| {
            jail.set_env("TILLSTREAM_KAFKA_BROKERS", "x:1");
            let cfg: NoKafka = load("y", None).unwrap();
            assert_eq!(cfg.name, "");
            Ok(())
        });
    }
}
