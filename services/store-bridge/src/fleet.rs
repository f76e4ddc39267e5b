//! The fleet registry: which store each device is registered to, read from the same CSV that
//! generates the MQTT users and ACL (`device_id,store_id`). Pure parsing, plus [`SharedFleet`] (the
//! registry validation reads, replaced whole while the bridge runs) and [`watch`] (reloads the file
//! when it changes or on SIGHUP, so a device added to the fleet is accepted without a restart).
//! No delivery guarantee.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use tillstream_runtime::CancellationToken;

use crate::metrics;

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

/// Ids no device may have: `catalog` is the level of the store's downlink documents beside the
/// device level (`store/{store}/catalog/...` vs `store/{store}/{device}/...`).
pub const RESERVED_DEVICE_IDS: [&str; 1] = ["catalog"];

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
            if RESERVED_DEVICE_IDS.contains(&device) {
                return Err(err(format!(
                    "device id {device:?} is reserved (a topic level of the contract)"
                )));
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

    /// Devices added and removed (or moved to another store) from `self` to `next`.
    pub fn changes_to(&self, next: &Fleet) -> (usize, usize) {
        let added = next
            .stores
            .iter()
            .filter(|(d, s)| self.stores.get(*d) != Some(*s))
            .count();
        let removed = self
            .stores
            .iter()
            .filter(|(d, s)| next.stores.get(*d) != Some(*s))
            .count();
        (added, removed)
    }
}

/// The fleet validation reads: replaced whole when the file is reloaded, so a message is checked
/// against one version of the file, never half of two.
#[derive(Debug, Clone, Default)]
pub struct SharedFleet(Arc<RwLock<Arc<Fleet>>>);

impl SharedFleet {
    pub fn new(fleet: Fleet) -> SharedFleet {
        SharedFleet(Arc::new(RwLock::new(Arc::new(fleet))))
    }

    /// The fleet as it is now.
    pub fn current(&self) -> Arc<Fleet> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn replace(&self, fleet: Fleet) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(fleet);
    }
}

impl From<Fleet> for SharedFleet {
    fn from(fleet: Fleet) -> SharedFleet {
        SharedFleet::new(fleet)
    }
}

/// How often [`watch`] looks at the file's modification time and size.
pub const WATCH_EVERY: Duration = Duration::from_secs(2);

/// Reloads the fleet file into `fleet` when its modification time or size changes, and at once on
/// SIGHUP (what `tillctl`-style tools and operators send after editing it). A file that does not
/// parse (or cannot be read) leaves the fleet as it was: logged, counted
/// (`fleet_reloads_total{outcome="refused"}`), and tried again at its next change.
pub async fn watch(path: PathBuf, fleet: SharedFleet, token: CancellationToken) {
    let stamp = |p: &Path| -> Option<(SystemTime, u64)> {
        let m = std::fs::metadata(p).ok()?;
        Some((m.modified().ok()?, m.len()))
    };
    // Nothing seen yet: the first look reloads, so an edit between the bridge's start-up load and
    // this task's first look is not missed.
    let mut seen = None;
    metrics::fleet_devices(fleet.current().len());
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let hangup_received = async {
            match hangup.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hangup_received = std::future::pending::<Option<()>>();
        let forced = tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(WATCH_EVERY) => false,
            _ = hangup_received => true,
        };
        let now = stamp(&path);
        if !forced && now == seen {
            continue;
        }
        seen = now;
        match Fleet::load(&path) {
            Ok(next) => {
                let (added, removed) = fleet.current().changes_to(&next);
                if added + removed > 0 || forced {
                    tracing::info!(
                        file = %path.display(),
                        devices = next.len(),
                        added,
                        removed,
                        on_signal = forced,
                        "fleet file reloaded"
                    );
                }
                metrics::fleet_devices(next.len());
                metrics::fleet_reload("applied");
                fleet.replace(next);
            }
            Err(e) => {
                tracing::error!(error = %e, "fleet file not reloaded: keeping the fleet as it was");
                metrics::fleet_reload("refused");
            }
        }
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
        assert!(Fleet::parse("catalog,s\n").is_err());
    }

    #[test]
    fn changes_count_added_moved_and_removed_devices() {
        let before = Fleet::parse("a,s1\nb,s1\nc,s2\n").unwrap();
        let after = Fleet::parse("a,s1\nb,s2\nd,s2\n").unwrap();
        // b moved (counts as added to s2 and removed from s1), d added, c removed.
        assert_eq!(before.changes_to(&after), (2, 2));
        assert_eq!(before.changes_to(&before), (0, 0));
    }

    #[tokio::test]
    async fn an_edited_file_is_picked_up_and_a_broken_one_keeps_the_old_fleet() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("devices.csv");
        std::fs::write(&path, "a,s1\n").unwrap();
        let fleet = SharedFleet::new(Fleet::load(&path).unwrap());
        let token = CancellationToken::new();
        let task = tokio::spawn(watch(path.clone(), fleet.clone(), token.clone()));
        let wait_for = |want: Option<&'static str>| {
            let fleet = fleet.clone();
            async move {
                for _ in 0..100 {
                    if fleet.current().store_of("b") == want {
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                false
            }
        };
        std::fs::write(&path, "a,s1\nb,s2\n").unwrap();
        assert!(
            wait_for(Some("s2")).await,
            "the added device was not picked up"
        );
        std::fs::write(&path, "a,s1\nb,s2\nb,s3 is not an id\n").unwrap();
        tokio::time::sleep(WATCH_EVERY * 2).await;
        assert_eq!(
            fleet.current().store_of("b"),
            Some("s2"),
            "a broken file replaced the fleet"
        );
        assert_eq!(fleet.current().len(), 2);
        token.cancel();
        task.await.unwrap();
    }

    #[test]
    fn the_repository_fleet_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/fleet/devices.csv");
        let f = Fleet::load(&path).unwrap();
        assert_eq!(f.store_of("s003-d02"), Some("s003"));
    }
}
