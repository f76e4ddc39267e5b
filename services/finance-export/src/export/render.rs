//! Rendering an export into its files (pure: ledger rows in, bytes out). Row order, column order
//! and every byte are a function of the rows: rendering again gives identical files.

use std::collections::{BTreeMap, BTreeSet};

/// (first offset, last offset, distinct event ids) of a partition's events in an export.
type OffsetSpan = (i64, i64, BTreeSet<String>);
use std::fmt::Write as _;

use serde::Serialize;
use sha2::{Digest, Sha256};
use tillstream_contracts::Money;

use super::ExportError;
use crate::core::{Chart, ReconRecord, ReconStatus, Role, Store, iso_date};
use crate::db::{ExportMeta, LedgerLine};

/// Version of the files' layout (columns, manifest fields).
pub const SCHEMA_VERSION: u32 = 1;

/// The ledger files' columns, in order.
pub const LEDGER_COLUMNS: [&str; 22] = [
    "export_id",
    "line_type",
    "business_date",
    "export_date",
    "store_id",
    "legal_entity",
    "event_id",
    "line_no",
    "device_id",
    "seq",
    "source",
    "reference",
    "sku",
    "tender",
    "account_role",
    "account_code",
    "account_name",
    "debit_minor",
    "credit_minor",
    "currency",
    "debit",
    "credit",
];

/// One ledger row as the files carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Row<'a> {
    pub line: &'a LedgerLine,
    pub adjustment: bool,
    pub account_name: &'a str,
}

/// An export's files, in delivery order (the manifest last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// `{store}/{name}`.
    pub export_id: String,
    pub files: Vec<(String, Vec<u8>)>,
    pub rows: usize,
    pub adjustments: usize,
}

#[derive(Serialize)]
struct FileEntry {
    name: String,
    rows: usize,
    bytes: usize,
    sha256: String,
}

#[derive(Serialize)]
struct Totals {
    debit_minor: i64,
    credit_minor: i64,
    debit: String,
    credit: String,
}

#[derive(Serialize)]
struct OffsetRange {
    topic: String,
    partition: i64,
    first: i64,
    last: i64,
    events: usize,
}

#[derive(Serialize)]
struct Manifest {
    schema_version: u32,
    export_id: String,
    store_id: String,
    legal_entity: String,
    time_zone: String,
    kind: String,
    export_seq: i64,
    business_date: String,
    close_reason: String,
    missing_close_devices: Vec<String>,
    row_count: usize,
    adjustment_rows: usize,
    adjusted_business_dates: Vec<String>,
    totals: BTreeMap<String, Totals>,
    reconciliation: BTreeMap<String, usize>,
    offset_ranges: Vec<OffsetRange>,
    files: Vec<FileEntry>,
}

fn csv_field(out: &mut String, v: &str) {
    if v.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&v.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(v);
    }
}

fn csv_row(out: &mut String, fields: &[&str]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        csv_field(out, f);
    }
    out.push('\n');
}

fn decimal(minor: i64, currency: &str) -> String {
    Money::new(minor, currency).to_decimal_string()
}

fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut s = String::with_capacity(64);
    for b in digest {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn role_of(name: &str, tender: &str) -> Option<Role> {
    use tillstream_contracts::TenderMethod as M;
    Some(match name {
        "revenue" => Role::Revenue,
        "discounts" => Role::Discounts,
        "refunds" => Role::Refunds,
        "price_variance" => Role::PriceVariance,
        "tax_payable" => Role::TaxPayable,
        "loyalty_liability" => Role::LoyaltyLiability,
        "backorders" => Role::Backorders,
        "receivables" => Role::Receivables,
        "tender_clearing" => Role::TenderClearing(match tender {
            "CASH" => M::Cash,
            "CARD" => M::Card,
            "MOBILE" => M::Mobile,
            "VOUCHER" => M::Voucher,
            "LOYALTY_POINTS" => M::LoyaltyPoints,
            "STORE_CREDIT" => M::StoreCredit,
            "OTHER" => M::Other,
            _ => return None,
        }),
        _ => return None,
    })
}

/// The reconciliation report's columns.
const RECON_COLUMNS: [&str; 11] = [
    "store_id",
    "business_date",
    "device_id",
    "status",
    "revised",
    "differences",
    "gaps",
    "unexplained_event_ids",
    "close_event_ids",
    "notes",
    "export_id",
];

fn recon_csv(records: &[(ReconRecord, bool)], export_id: &str) -> String {
    let mut out = String::new();
    csv_row(&mut out, &RECON_COLUMNS);
    for (r, revised) in records {
        let differences: Vec<String> = r
            .differences
            .iter()
            .map(|d| format!("{} device={} ledger={}", d.figure, d.device, d.ledger))
            .collect();
        let gaps: Vec<String> = r.gaps.iter().map(|(a, b)| format!("{a}-{b}")).collect();
        csv_row(
            &mut out,
            &[
                &r.store_id,
                &iso_date(r.business_date),
                &r.device_id,
                r.status.name(),
                if *revised { "true" } else { "false" },
                &differences.join("; "),
                &gaps.join(" "),
                &r.unexplained_event_ids.join(" "),
                &r.close_event_ids.join(" "),
                &r.notes.join("; "),
                export_id,
            ],
        );
    }
    out
}

fn summary(
    meta: &ExportMeta,
    export_id: &str,
    rows: usize,
    adjustments: &BTreeMap<i32, usize>,
    totals: &BTreeMap<String, (i64, i64)>,
    records: &[(ReconRecord, bool)],
) -> String {
    let mut s = format!(
        "{export_id}: {} export of store {} for {} ({}), {rows} ledger lines\n",
        meta.kind,
        meta.store_id,
        iso_date(meta.business_date),
        meta.reason.replace('_', " "),
    );
    for (currency, (d, c)) in totals {
        let _ = writeln!(
            s,
            "  {currency}: debit {} = credit {}{}",
            decimal(*d, currency),
            decimal(*c, currency),
            if d == c { "" } else { "  UNBALANCED" }
        );
    }
    for (date, n) in adjustments {
        let _ = writeln!(s, "  {n} adjustment lines for {}", iso_date(*date));
    }
    if !meta.missing_close.is_empty() {
        let _ = writeln!(s, "  missing close: {}", meta.missing_close.join(", "));
    }
    let mut counts: BTreeMap<ReconStatus, usize> = BTreeMap::new();
    for (r, _) in records {
        *counts.entry(r.status).or_default() += 1;
    }
    let parts: Vec<String> = ReconStatus::ALL
        .iter()
        .map(|st| format!("{} {}", counts.get(st).copied().unwrap_or(0), st.name()))
        .collect();
    let _ = writeln!(
        s,
        "  reconciliation: {} device-days: {}",
        records.len(),
        parts.join(", ")
    );
    for (r, revised) in records
        .iter()
        .filter(|(r, _)| r.status != ReconStatus::Matched)
    {
        let diffs: Vec<String> = r
            .differences
            .iter()
            .map(|d| format!("{} {} vs {}", d.figure, d.device, d.ledger))
            .collect();
        let _ = writeln!(
            s,
            "    {} {} {}{}: {}{}",
            iso_date(r.business_date),
            r.device_id,
            r.status.name(),
            if *revised { " (revised)" } else { "" },
            if diffs.is_empty() {
                "-".to_string()
            } else {
                diffs.join(", ")
            },
            if r.gaps.is_empty() {
                String::new()
            } else {
                let g: Vec<String> = r.gaps.iter().map(|(a, b)| format!("{a}-{b}")).collect();
                format!("; seq gaps {}", g.join(" "))
            }
        );
    }
    s
}

/// Renders one export. `lines` are the export's lines in file order; `records` its
/// reconciliation records.
pub fn render(
    meta: &ExportMeta,
    lines: &[LedgerLine],
    records: &[(ReconRecord, bool)],
    store: &Store,
    chart: &Chart,
) -> Result<Rendered, ExportError> {
    let export_id = format!("{}/{}", meta.store_id, meta.name);
    let export_date = iso_date(meta.business_date);
    let mut rows = Vec::with_capacity(lines.len());
    let mut totals: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    let mut adjustments: BTreeMap<i32, usize> = BTreeMap::new();
    let mut ranges: BTreeMap<(String, i64), OffsetSpan> = BTreeMap::new();
    for line in lines {
        let role = role_of(&line.account_role, &line.tender).ok_or_else(|| {
            ExportError::Invalid(format!("unknown account role {}", line.account_role))
        })?;
        let adjustment = meta.kind == "supplement" || line.business_date < meta.business_date;
        if adjustment {
            *adjustments.entry(line.business_date).or_default() += 1;
        }
        let t = totals.entry(line.currency.clone()).or_default();
        let overflow = || ExportError::Invalid(format!("{export_id}: the file total overflows"));
        t.0 = t.0.checked_add(line.debit_minor).ok_or_else(overflow)?;
        t.1 = t.1.checked_add(line.credit_minor).ok_or_else(overflow)?;
        let r = ranges
            .entry((line.topic.clone(), line.partition))
            .or_insert((line.offset, line.offset, BTreeSet::new()));
        r.0 = r.0.min(line.offset);
        r.1 = r.1.max(line.offset);
        r.2.insert(line.event_id.clone());
        rows.push(Row {
            line,
            adjustment,
            account_name: &chart.account(role).name,
        });
    }

    let mut csv = String::with_capacity(lines.len() * 200);
    csv_row(&mut csv, &LEDGER_COLUMNS);
    for r in &rows {
        let l = r.line;
        csv_row(
            &mut csv,
            &[
                &export_id,
                if r.adjustment {
                    "adjustment"
                } else {
                    "regular"
                },
                &iso_date(l.business_date),
                &export_date,
                &meta.store_id,
                &store.legal_entity,
                &l.event_id,
                &l.line_no.to_string(),
                &l.device_id,
                &l.seq.to_string(),
                &l.source,
                &l.reference,
                &l.sku,
                &l.tender,
                &l.account_role,
                &l.account_code,
                r.account_name,
                &l.debit_minor.to_string(),
                &l.credit_minor.to_string(),
                &l.currency,
                &decimal(l.debit_minor, &l.currency),
                &decimal(l.credit_minor, &l.currency),
            ],
        );
    }
    let parquet = super::parquet::encode(&export_id, meta, &store.legal_entity, &rows)?;
    let recon = recon_csv(records, &export_id);
    let summary = summary(meta, &export_id, rows.len(), &adjustments, &totals, records);

    let mut files = vec![
        ("ledger.csv".to_string(), csv.into_bytes(), rows.len()),
        ("ledger.parquet".to_string(), parquet, rows.len()),
        (
            "reconciliation.csv".to_string(),
            recon.into_bytes(),
            records.len(),
        ),
        ("summary.txt".to_string(), summary.into_bytes(), 0),
    ];
    let mut reconciliation: BTreeMap<String, usize> = ReconStatus::ALL
        .iter()
        .map(|s| (s.name().to_string(), 0))
        .collect();
    for (r, _) in records {
        *reconciliation
            .entry(r.status.name().to_string())
            .or_default() += 1;
    }
    let manifest = Manifest {
        schema_version: SCHEMA_VERSION,
        export_id: export_id.clone(),
        store_id: meta.store_id.clone(),
        legal_entity: store.legal_entity.clone(),
        time_zone: store.time_zone.clone(),
        kind: meta.kind.clone(),
        export_seq: meta.export_seq,
        business_date: export_date,
        close_reason: meta.reason.clone(),
        missing_close_devices: meta.missing_close.clone(),
        row_count: rows.len(),
        adjustment_rows: adjustments.values().sum(),
        adjusted_business_dates: adjustments.keys().map(|d| iso_date(*d)).collect(),
        totals: totals
            .iter()
            .map(|(c, (d, k))| {
                (
                    c.clone(),
                    Totals {
                        debit_minor: *d,
                        credit_minor: *k,
                        debit: decimal(*d, c),
                        credit: decimal(*k, c),
                    },
                )
            })
            .collect(),
        reconciliation,
        offset_ranges: ranges
            .into_iter()
            .map(|((topic, partition), (first, last, events))| OffsetRange {
                topic,
                partition,
                first,
                last,
                events: events.len(),
            })
            .collect(),
        files: files
            .iter()
            .map(|(name, bytes, rows)| FileEntry {
                name: name.clone(),
                rows: *rows,
                bytes: bytes.len(),
                sha256: sha256_hex(bytes),
            })
            .collect(),
    };
    let mut manifest_bytes = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| ExportError::Invalid(format!("manifest: {e}")))?;
    manifest_bytes.push(b'\n');
    files.push(("manifest.json".to_string(), manifest_bytes, 0));
    let adjustments = adjustments.values().sum();
    Ok(Rendered {
        export_id,
        files: files.into_iter().map(|(n, b, _)| (n, b)).collect(),
        rows: rows.len(),
        adjustments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        let mut s = String::new();
        csv_row(&mut s, &["a", "b,c", "say \"hi\""]);
        assert_eq!(s, "a,\"b,c\",\"say \"\"hi\"\"\"\n");
    }

    #[test]
    fn sha256_is_lowercase_hex() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
