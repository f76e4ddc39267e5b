//! Fault injection for tests and drills: a service holds still at a named point so a test can kill
//! it there.
//!
//! A test sets a hold (milliseconds) and a marker file in the service's `[fault]` config; when the
//! service reaches the point it creates the marker (so the test knows the process is inside the
//! window, not merely started), logs a warning and sleeps. Production leaves every hold at 0.

use std::path::PathBuf;
use std::time::Duration;

/// One fault-injection point: how long to hold and which file says "holding now".
#[derive(Debug, Clone, Default)]
pub struct Hold {
    /// How long the service stays at the point; 0 = never hold.
    pub ms: u64,
    /// Created (empty) when the hold starts.
    pub marker: Option<PathBuf>,
}

impl Hold {
    /// A hold from a `[fault]` section's two fields.
    pub fn new(ms: u64, marker: Option<&PathBuf>) -> Self {
        Hold {
            ms,
            marker: marker.cloned(),
        }
    }

    /// Whether a hold is set at all.
    pub fn is_set(&self) -> bool {
        self.ms > 0
    }

    /// Holds (asynchronously) if set; `what` names the point in the warning.
    pub async fn hold(&self, what: &str) {
        if self.start(what) {
            tokio::time::sleep(Duration::from_millis(self.ms)).await;
        }
    }

    /// Holds on a blocking thread (the same as [`Hold::hold`] for synchronous code).
    pub fn hold_blocking(&self, what: &str) {
        if self.start(what) {
            std::thread::sleep(Duration::from_millis(self.ms));
        }
    }

    fn start(&self, what: &str) -> bool {
        if !self.is_set() {
            return false;
        }
        if let Some(marker) = &self.marker {
            // The marker only tells the test when to strike; a failure to write it shows up there
            // as a test that never kills, so it needs no error path here.
            let _ = std::fs::write(marker, b"");
        }
        tracing::warn!(ms = self.ms, "fault injection: {what}");
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_set_hold_creates_its_marker_and_an_unset_one_does_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("holding");
        Hold::new(0, Some(&marker)).hold("never").await;
        assert!(!marker.exists(), "an unset hold must not create its marker");
        Hold::new(1, Some(&marker)).hold("now").await;
        assert!(marker.exists());
    }
}
