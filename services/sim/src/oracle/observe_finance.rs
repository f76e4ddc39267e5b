//! What the finance export delivered, read from its export folder by an independent reader: the
//! finance export's `scripts/read_exports.py` (pyarrow for the Parquet ledgers, made importable by
//! `scripts/ensure-pyarrow`; the standard library for CSV and manifests), not the writer's code.
//! And waiting until every store-day of the truth is exported. Read-only. A read that fails (no
//! folder, no pyarrow, an unreadable file) is an error, never "nothing there".

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::finance::iso_date;
use super::{FinanceObserved, ObservedExport, ObservedRecon, OracleError};
use crate::truth::Truth;

/// Where the files are and the reader that reads them.
#[derive(Debug, Clone)]
pub struct FinanceAccess {
    /// The export folder (`destination.dir` of the finance export).
    pub dir: PathBuf,
    /// The finance export's `scripts/` folder (`read_exports.py`, `ensure-pyarrow`).
    pub scripts: PathBuf,
}

impl FinanceAccess {
    /// `dir` read with the scripts of the repository at `repo`.
    pub fn new(dir: impl Into<PathBuf>, repo: &Path) -> Self {
        FinanceAccess {
            dir: dir.into(),
            scripts: repo.join("services/finance-export/scripts"),
        }
    }
}

fn fail(what: impl std::fmt::Display) -> OracleError {
    OracleError::Finance(what.to_string())
}

/// Runs the reader over the folder and parses what it prints.
pub async fn observe_finance(access: &FinanceAccess) -> Result<FinanceObserved, OracleError> {
    if !access.dir.is_dir() {
        return Err(fail(format!("{} is not a folder", access.dir.display())));
    }
    let ensure = tokio::process::Command::new(access.scripts.join("ensure-pyarrow"))
        .output()
        .await
        .map_err(|e| fail(format!("ensure-pyarrow: {e}")))?;
    if !ensure.status.success() {
        return Err(fail(format!(
            "pyarrow cannot be had: {}",
            String::from_utf8_lossy(&ensure.stderr).trim()
        )));
    }
    let pythonpath = String::from_utf8_lossy(&ensure.stdout).trim().to_string();
    let out = tokio::process::Command::new("python3")
        .arg(access.scripts.join("read_exports.py"))
        .arg(&access.dir)
        .env("PYTHONPATH", pythonpath)
        .output()
        .await
        .map_err(|e| fail(format!("python3: {e}")))?;
    if !out.status.success() {
        return Err(fail(format!(
            "read_exports.py failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let v: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| fail(format!("read_exports.py printed no JSON: {e}")))?;
    parse(&v)
}

fn int(v: &Value, what: &str) -> Result<i64, OracleError> {
    v.as_i64()
        .ok_or_else(|| fail(format!("{what}: not an integer: {v}")))
}

fn object<'a>(v: &'a Value, key: &str) -> Result<&'a serde_json::Map<String, Value>, OracleError> {
    v[key]
        .as_object()
        .ok_or_else(|| fail(format!("the reader's output has no {key:?}")))
}

/// The reader's JSON as [`FinanceObserved`].
fn parse(v: &Value) -> Result<FinanceObserved, OracleError> {
    let mut f = FinanceObserved::default();
    for (id, e) in object(v, "files")? {
        let mut totals = BTreeMap::new();
        for (currency, t) in e["totals"].as_object().into_iter().flatten() {
            totals.insert(currency.clone(), (int(&t[0], id)?, int(&t[1], id)?));
        }
        f.exports.insert(
            id.clone(),
            ObservedExport {
                kind: e["kind"].as_str().unwrap_or_default().to_string(),
                rows: u64::try_from(int(&e["rows"], id)?).unwrap_or(0),
                totals,
            },
        );
    }
    for (key, t) in object(v, "devices")? {
        f.lines
            .insert(key.clone(), (int(&t[0], key)?, int(&t[1], key)?));
    }
    for (key, n) in object(v, "device_events")? {
        f.events
            .insert(key.clone(), u64::try_from(int(n, key)?).unwrap_or(0));
    }
    for (key, r) in object(v, "recon")? {
        f.recon.insert(
            key.clone(),
            ObservedRecon {
                status: r["status"].as_str().unwrap_or_default().to_string(),
                differences: r["differences"].as_str().unwrap_or_default().to_string(),
            },
        );
    }
    for (id, types) in object(v, "event_types")? {
        let set: BTreeSet<String> = types
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str().map(str::to_string))
            .collect();
        f.event_types.insert(id.clone(), set);
    }
    f.duplicate_lines = v["duplicate_lines"]
        .as_array()
        .ok_or_else(|| fail("the reader's output has no \"duplicate_lines\""))?
        .iter()
        .filter_map(|l| l.as_str().map(str::to_string))
        .collect();
    Ok(f)
}

/// The delivered exports under `dir` (`{store}/{name}` with a manifest), with the business dates
/// their manifests list as adjusted.
fn delivered(dir: &Path) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    let Ok(stores) = std::fs::read_dir(dir) else {
        return out;
    };
    for store in stores.flatten() {
        let name = store.file_name().to_string_lossy().to_string();
        if name.starts_with('.') {
            continue;
        }
        for export in std::fs::read_dir(store.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let Ok(bytes) = std::fs::read(export.path().join("manifest.json")) else {
                continue;
            };
            let adjusted = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|m| m["adjusted_business_dates"].as_array().cloned())
                .unwrap_or_default()
                .iter()
                .filter_map(|d| d.as_str().map(str::to_string))
                .collect();
            out.insert(
                format!("{name}/{}", export.file_name().to_string_lossy()),
                adjusted,
            );
        }
    }
    out
}

/// What is exported so far: (store-days of the truth with a day export, late store-days with an
/// export that adjusts them, exports in all).
fn progress(dir: &Path, truth: &Truth) -> (usize, usize, usize) {
    let exports = delivered(dir);
    let days = truth
        .days
        .iter()
        .flat_map(|(s, m)| m.keys().map(move |d| format!("{s}/{}", iso_date(*d))))
        .filter(|e| exports.contains_key(e))
        .count();
    let adjusted = late_store_days(truth)
        .iter()
        .filter(|(store, date)| {
            exports
                .iter()
                .any(|(id, dates)| id.starts_with(&format!("{store}/")) && dates.contains(date))
        })
        .count();
    (days, adjusted, exports.len())
}

/// (store, ISO date) of the late tills' days.
fn late_store_days(truth: &Truth) -> BTreeSet<(String, String)> {
    if !truth.late_held_back {
        return BTreeSet::new();
    }
    truth
        .late_days
        .iter()
        .map(|(store, date)| (store.clone(), iso_date(*date)))
        .collect()
}

/// Waits until every store-day of the truth has its day export, every late till's day is adjusted
/// by a later export, and no new export appeared for `settle`. `Err` with the progress on timeout.
pub async fn wait_finance_exported(
    dir: &Path,
    truth: &Truth,
    timeout: Duration,
    settle: Duration,
) -> Result<String, String> {
    let want_days: usize = truth.days.values().map(BTreeMap::len).sum();
    let want_late = late_store_days(truth).len();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = (usize::MAX, 0, 0);
    let mut stable_since = tokio::time::Instant::now();
    loop {
        let now = tokio::time::Instant::now();
        let p = progress(dir, truth);
        let text = format!(
            "{}/{want_days} store-days exported, {}/{want_late} late days adjusted, {} exports",
            p.0, p.1, p.2
        );
        if p != last {
            last = p;
            stable_since = now;
        } else if p.0 == want_days && p.1 == want_late && now - stable_since >= settle {
            return Ok(text);
        }
        if now > deadline {
            return Err(text);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
