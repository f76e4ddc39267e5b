//! Publishing with late tills: the fleet without its late tills first, then — once the finance
//! export has delivered every store-day the late tills traded on (a manifest in its folder) — the
//! late tills, whose events the exporter must then book as adjustment lines of a later export.
//! Waits are bounded; a day that never appears is an error naming it.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::plan::Plan;
use crate::publish::{PublishConfig, PublishError, PublishReport, publish};

/// Days since 1970-01-01 as the export's folder name (`2026-11-02`).
fn iso_date(days: i32) -> String {
    crate::oracle::iso_date(days)
}

/// Waits until `dir/{store}/{date}/manifest.json` exists for every (store, date) of `days`.
pub async fn wait_exported(
    dir: &Path,
    days: &BTreeSet<(String, i32)>,
    timeout: Duration,
) -> Result<(), PublishError> {
    let deadline = Instant::now() + timeout;
    loop {
        let missing: Vec<String> = days
            .iter()
            .map(|(store, date)| format!("{store}/{}", iso_date(*date)))
            .filter(|e| !dir.join(e).join("manifest.json").exists())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(PublishError::Device {
                device: "late tills".into(),
                detail: format!(
                    "store-days {} not exported to {} within {timeout:?}",
                    missing.join(", "),
                    dir.display()
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Publishes the plan's on-time devices, waits (up to `wait`) for the late tills' store-days to be
/// exported to `dir`, then publishes the late tills.
pub async fn publish_late_after_export(
    plan: &Plan,
    cfg: &PublishConfig,
    dir: &Path,
    wait: Duration,
) -> Result<PublishReport, PublishError> {
    let (on_time, late) = plan.split_late();
    let mut report = publish(&on_time, cfg).await?;
    if !late.devices.is_empty() {
        wait_exported(dir, plan.late_store_days(), wait).await?;
        report.absorb(&publish(&late, cfg).await?);
    }
    Ok(report)
}
