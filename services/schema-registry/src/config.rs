//! The service's configuration (defaults, TOML file, environment; see `tillstream_runtime::config`).
//! Owns only parsing; no delivery guarantee.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tillstream_runtime::config::OpsConfig;

use crate::compat::Level;

/// Port Confluent's registry uses is 8081; ours defaults to 18081 so both can run side by side.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 18081);

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Where the REST API listens.
    pub listen: SocketAddr,
    /// Directory holding the registry's log (created if missing).
    pub data_dir: PathBuf,
    /// Global compatibility level until one is set with `PUT /config`.
    pub default_compatibility: Level,
    /// `/metrics`, `/healthz`, `/readyz`.
    pub ops: OpsConfig,
    /// Serve the DELETE routes (subjects, versions, compatibility settings). Off by default: a
    /// deleted schema breaks every reader of records written with it, so a registry that serves
    /// real traffic turns them on only for a planned clean-up (tests and the schema gate's
    /// scratch registries turn them on).
    pub allow_deletes: bool,
    /// HTTP basic auth every API request must carry (Confluent's `authentication.method=BASIC`);
    /// absent: none. The ops endpoints stay open. Clients set `registry.basic_auth_user` and
    /// `registry.basic_auth_password`.
    pub basic_auth: Option<BasicAuth>,
}

/// The one account of a registry behind basic auth.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BasicAuth {
    pub username: String,
    /// Printed as `<redacted>`.
    pub password: tillstream_runtime::config::Secret,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: DEFAULT_LISTEN,
            data_dir: PathBuf::from("data/schema-registry"),
            default_compatibility: Level::Backward,
            ops: OpsConfig::default(),
            allow_deletes: false,
            basic_auth: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_config_keeps_defaults_and_levels_are_case_insensitive() {
        let cfg: Config = serde_json::from_value(serde_json::json!({
            "default_compatibility": "full",
            "data_dir": "/tmp/x",
        }))
        .unwrap();
        assert_eq!(cfg.default_compatibility, Level::Full);
        assert_eq!(cfg.listen, DEFAULT_LISTEN);
        assert_eq!(cfg.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(Config::default().default_compatibility, Level::Backward);
        assert_eq!(Config::default().listen.to_string(), "127.0.0.1:18081");
    }
}
