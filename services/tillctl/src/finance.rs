//! `tillctl finance`: the finance export's ledger and day files from the operator's side, through
//! the finance export's own library (its config, ledger queries and renderer; nothing here
//! re-implements them):
//! - `export`: the exports of a range of business dates rendered again from the ledger into another
//!   folder — byte-identical with the delivered files, because the same code renders the same rows;
//! - `ledger`: a store-day's ledger lines and their totals per currency;
//! - `reconciliation`: the latest reconciliation record of every device-day, per store.
//!
//! Reads the ledger database (migrating it like the service would when it is new); writes only into
//! the folder given to `export`, and never over a file that differs (the sink refuses).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use tillstream_finance_export::core::{ReconRecord, ReconStatus, iso_date, parse_iso_date};
pub use tillstream_finance_export::export::Delivery;
use tillstream_finance_export::export::Sink;
use tillstream_finance_export::exporter::deliver_to;
use tillstream_finance_export::{Config, Db, DbError, SERVICE, load_master_data};

#[derive(Debug, thiserror::Error)]
pub enum FinanceError {
    #[error("{0}")]
    Usage(String),
    #[error("config: {0}")]
    Config(String),
    #[error(transparent)]
    Finance(#[from] tillstream_finance_export::Error),
    #[error("ledger database: {0}")]
    Db(#[from] DbError),
}

/// Where the ledger and the master data are: the finance export's config (`--config`, then its
/// `TILLSTREAM_FINANCE_EXPORT__*` / `TILLSTREAM_PG_URL` variables), with the flags on top.
#[derive(Debug, Clone, Default)]
pub struct Source {
    pub config: Option<PathBuf>,
    /// The ledger database URL (`sqlite://...`, `postgres://...`).
    pub db: Option<String>,
    pub stores: Option<PathBuf>,
    pub chart: Option<PathBuf>,
}

impl Source {
    /// The finance export's effective config with the flags applied.
    pub fn config(&self) -> Result<Config, FinanceError> {
        let mut cfg: Config = tillstream_runtime::config::load(SERVICE, self.config.as_deref())
            .map_err(|e| FinanceError::Config(e.to_string()))?;
        if let Some(url) = &self.db {
            cfg.database.url = url.clone();
        }
        if let Some(p) = &self.stores {
            cfg.stores_file = p.clone();
        }
        if let Some(p) = &self.chart {
            cfg.chart_file = Some(p.clone());
        }
        Ok(cfg)
    }

    async fn db(&self, cfg: &Config) -> Result<Db, FinanceError> {
        Ok(Db::connect(&cfg.database).await?)
    }
}

/// An ISO date (`2026-11-02`) as days since the epoch.
fn date(text: &str) -> Result<i32, FinanceError> {
    parse_iso_date(text).ok_or_else(|| FinanceError::Usage(format!("{text:?} is not YYYY-MM-DD")))
}

/// What `export` did with one export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReExported {
    /// `{store}/{name}`.
    pub export_id: String,
    pub delivery: Delivery,
}

/// Renders every delivered export whose business date is in `from..=to` (of `store`, or every
/// store) again from the ledger into `out/{store}/{name}/`.
pub async fn export(
    src: &Source,
    from: &str,
    to: &str,
    store: Option<&str>,
    out: &Path,
) -> Result<Vec<ReExported>, FinanceError> {
    let (from, to) = (date(from)?, date(to)?);
    if from > to {
        return Err(FinanceError::Usage(format!(
            "--from {} is after --to {}",
            iso_date(from),
            iso_date(to)
        )));
    }
    let cfg = src.config()?;
    let (chart, stores) = load_master_data(&cfg)?;
    let db = src.db(&cfg).await?;
    let sink = Sink::Local(out.to_path_buf());
    let mut done = Vec::new();
    for meta in db.exports(store, from, to).await? {
        // An export not yet delivered is the service's to deliver first.
        if !meta.delivered {
            continue;
        }
        let delivery = deliver_to(&db, &sink, &chart, &stores, &meta).await?;
        done.push(ReExported {
            export_id: format!("{}/{}", meta.store_id, meta.name),
            delivery,
        });
    }
    Ok(done)
}

/// The header of [`ledger`]'s table (the widths of its rows).
const LEDGER_HEADER: &str = "event                                  line device            seq source       tender   account            code          debit       credit cur  export\n";

/// A store-day's ledger lines (regular and late ones, with the export that delivered each) and the
/// totals per currency, as a table.
pub async fn ledger(src: &Source, store: &str, day: &str) -> Result<String, FinanceError> {
    let d = date(day)?;
    let cfg = src.config()?;
    let db = src.db(&cfg).await?;
    let lines = db.day_lines(store, d).await?;
    let mut s = format!("ledger of store {store} for {day}: {} lines\n", lines.len());
    s.push_str(LEDGER_HEADER);
    let mut totals: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for l in &lines {
        let t = totals.entry(l.currency.as_str()).or_default();
        t.0 += l.debit_minor;
        t.1 += l.credit_minor;
        let _ = writeln!(
            s,
            "{:<38} {:>4} {:<14} {:>6} {:<12} {:<8} {:<18} {:<6} {:>12} {:>12} {:<4} {}",
            l.event_id,
            l.line_no,
            l.device_id,
            l.seq,
            l.source,
            l.tender,
            l.account_role,
            l.account_code,
            l.debit_minor,
            l.credit_minor,
            l.currency,
            l.export_seq
                .map_or_else(|| "not yet exported".to_string(), |e| format!("#{e}"))
        );
    }
    for (currency, (debit, credit)) in totals {
        let _ = writeln!(
            s,
            "{currency}: debit {debit} credit {credit} (minor units){}",
            if debit == credit { "" } else { "  UNBALANCED" }
        );
    }
    Ok(s)
}

/// The reconciliation status across the fleet: per store, the latest record of each device-day
/// counted by status, then every device-day that did not match with what differs.
pub async fn reconciliation(src: &Source, store: Option<&str>) -> Result<String, FinanceError> {
    let cfg = src.config()?;
    let db = src.db(&cfg).await?;
    let records = db.latest_reported(store).await?;
    Ok(render_reconciliation(&records))
}

/// The text of [`reconciliation`] (pure).
pub fn render_reconciliation(records: &[ReconRecord]) -> String {
    let mut by_store: BTreeMap<&str, BTreeMap<ReconStatus, usize>> = BTreeMap::new();
    for r in records {
        *by_store
            .entry(r.store_id.as_str())
            .or_default()
            .entry(r.status)
            .or_default() += 1;
    }
    let mut s = format!(
        "reconciliation: {} device-days in {} stores\n",
        records.len(),
        by_store.len()
    );
    let _ = writeln!(
        s,
        "{:<10} {:>8} {:>11} {:>14} {:>18}",
        "store", "matched", "mismatched", "missing_close", "conflicting_close"
    );
    for (store, counts) in &by_store {
        let n = |st| counts.get(&st).copied().unwrap_or(0);
        let _ = writeln!(
            s,
            "{store:<10} {:>8} {:>11} {:>14} {:>18}",
            n(ReconStatus::Matched),
            n(ReconStatus::Mismatched),
            n(ReconStatus::MissingClose),
            n(ReconStatus::ConflictingClose)
        );
    }
    for r in records.iter().filter(|r| r.status != ReconStatus::Matched) {
        let diffs: Vec<String> = r
            .differences
            .iter()
            .map(|d| format!("{} till {} ledger {}", d.figure, d.device, d.ledger))
            .collect();
        let gaps: Vec<String> = r.gaps.iter().map(|(a, b)| format!("{a}-{b}")).collect();
        let _ = writeln!(
            s,
            "  {} {} {}: {}{}{}",
            r.store_id,
            iso_date(r.business_date),
            r.device_id,
            r.status.name(),
            if diffs.is_empty() {
                String::new()
            } else {
                format!(" ({})", diffs.join(", "))
            },
            if gaps.is_empty() {
                String::new()
            } else {
                format!("; seq gaps {}", gaps.join(" "))
            }
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use tillstream_finance_export::core::Difference;

    fn record(store: &str, device: &str, status: ReconStatus) -> ReconRecord {
        ReconRecord {
            store_id: store.into(),
            business_date: 20_759,
            device_id: device.into(),
            status,
            differences: Vec::new(),
            gaps: Vec::new(),
            unexplained_event_ids: Vec::new(),
            close_event_ids: Vec::new(),
            notes: Vec::new(),
        }
    }

    #[test]
    fn the_summary_counts_per_store_and_lists_what_did_not_match() {
        let mut bad = record("s2", "d9", ReconStatus::Mismatched);
        bad.differences.push(Difference {
            figure: "gross".into(),
            device: 1000,
            ledger: 900,
        });
        bad.gaps.push((4, 4));
        let text = render_reconciliation(&[
            record("s1", "d1", ReconStatus::Matched),
            record("s1", "d2", ReconStatus::Matched),
            bad,
        ]);
        assert!(
            text.starts_with("reconciliation: 3 device-days in 2 stores\n"),
            "{text}"
        );
        assert!(text.contains("\ns1                2           0"), "{text}");
        assert!(text.contains("\ns2                0           1"), "{text}");
        assert!(
            text.contains(
                "  s2 2026-11-02 d9: mismatched (gross till 1000 ledger 900); seq gaps 4-4"
            ),
            "{text}"
        );
        assert!(
            !text.contains("s1 2026-11-02 d1"),
            "matched days are only counted"
        );
    }

    #[test]
    fn dates_are_iso() {
        assert_eq!(date("2026-11-02").unwrap(), 20_759);
        assert!(matches!(date("02.11.2026"), Err(FinanceError::Usage(_))));
    }
}
