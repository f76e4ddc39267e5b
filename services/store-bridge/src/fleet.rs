//! The fleet registry: which store each device is registered to, read from the same CSV that
//! generates the MQTT users and ACL (`device_id,store_id`). Pure parsing plus one file read at start;
//! no delivery guarantee.

use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("fleet file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("fleet file line {line}: {detail}")]
    Parse { line: usize, detail: String },
}

impl tillstream_runtime::Classify for FleetError {
    fn class(&self) -> tillstream_runtime::ErrorClass {
        tillstream_runtime::ErrorClass::Fatal
    }
}

/// device id → registered store id.
#[derive(Debug, Clone, Default)]
pub struct Fleet {
    stores: HashMap<String, String>,
}

impl Fleet {
    pub fn load(path: &Path) -> Result<Fleet, FleetError> {
        let text = std::fs::read_to_string(path).map_err(|source| FleetError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Fleet::parse(&text)
    }

    /// Parses the CSV: optional `device_id,store_id` header, blank lines and `#` comments allowed,
    /// spaces and CRLF tolerated, duplicates refused.
    pub fn parse(text: &str) -> Result<Fleet, FleetError> {
        let mut stores = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |detail: String| FleetError::Parse {
                line: i + 1,
                detail,
            };
            let (device, store) = line
                .split_once(',')
                .ok_or_else(|| err(format!("expected device_id,store_id, got {line:?}")))?;
            let (device, store) = (device.trim(), store.trim());
            if device == "device_id" && store == "store_id" {
                continue;
            }
            let ok = |s: &str| {
                !s.is_empty()
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            };
            if !ok(device) || !ok(store) {
                return Err(err(format!("bad id in {line:?}")));
            }
            if stores
                .insert(device.to_string(), store.to_string())
                .is_some()
            {
                return Err(err(format!("device {device} listed twice")));
            }
        }
        Ok(Fleet { stores })
    }

    pub fn store_of(&self, device: &str) -> Option<&str> {
        self.stores.get(device).map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.stores.len()
    }

    pub fn is_empty(&self) -> bool {
        self.stores.is_empty()
    }

    pub fn devices(&self) -> impl Iterator<Item = (&str, &str)> {
        self.stores.iter().map(|(d, s)| (d.as_str(), s.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_dev_fleet_format() {
        let f = Fleet::parse("device_id,store_id\r\n# c\n\n s001-d01 , s001 \ns002-d01,s002\n")
            .unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(f.store_of("s001-d01"), Some("s001"));
        assert_eq!(f.store_of("nope"), None);
    }

    #[test]
    fn refuses_duplicates_and_garbage() {
        assert!(Fleet::parse("a,s\na,t\n").is_err());
        assert!(Fleet::parse("a s\n").is_err());
        assert!(Fleet::parse("a/b,s\n").is_err());
    }

    #[test]
    fn the_repository_fleet_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/fleet/devices.csv");
        let f = Fleet::load(&path).unwrap();
        assert_eq!(f.store_of("s003-d02"), Some("s003"));
    }
}
