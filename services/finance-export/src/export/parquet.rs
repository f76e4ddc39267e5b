//! The ledger rows as Parquet (Arrow arrays, Snappy pages, one row group per million rows). The
//! writer's `created_by` is fixed and nothing time-dependent is written, so the same rows always
//! encode to the same bytes. Pure.

use std::sync::Arc;

use arrow_array::builder::{Date32Builder, Int64Builder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use tillstream_contracts::Money;

use super::ExportError;
use super::render::{LEDGER_COLUMNS, Row};
use crate::db::ExportMeta;

fn schema() -> Schema {
    let fields: Vec<Field> = LEDGER_COLUMNS
        .iter()
        .map(|name| {
            let ty = match *name {
                "business_date" | "export_date" => DataType::Date32,
                "line_no" | "seq" | "debit_minor" | "credit_minor" => DataType::Int64,
                _ => DataType::Utf8,
            };
            Field::new(*name, ty, false)
        })
        .collect();
    Schema::new(fields)
}

/// Encodes the rows (in file order).
pub(super) fn encode(
    export_id: &str,
    meta: &ExportMeta,
    legal_entity: &str,
    rows: &[Row<'_>],
) -> Result<Vec<u8>, ExportError> {
    let n = rows.len();
    let text = |f: &dyn Fn(&Row<'_>) -> String| -> ArrayRef {
        let mut b = StringBuilder::with_capacity(n, n * 16);
        for r in rows {
            b.append_value(f(r));
        }
        Arc::new(b.finish())
    };
    let int = |f: &dyn Fn(&Row<'_>) -> i64| -> ArrayRef {
        let mut b = Int64Builder::with_capacity(n);
        for r in rows {
            b.append_value(f(r));
        }
        Arc::new(b.finish())
    };
    let date = |f: &dyn Fn(&Row<'_>) -> i32| -> ArrayRef {
        let mut b = Date32Builder::with_capacity(n);
        for r in rows {
            b.append_value(f(r));
        }
        Arc::new(b.finish())
    };
    let columns: Vec<ArrayRef> = vec![
        text(&|_| export_id.to_string()),
        text(&|r| {
            if r.adjustment {
                "adjustment"
            } else {
                "regular"
            }
            .to_string()
        }),
        date(&|r| r.line.business_date),
        date(&|_| meta.business_date),
        text(&|_| meta.store_id.clone()),
        text(&|_| legal_entity.to_string()),
        text(&|r| r.line.event_id.clone()),
        int(&|r| r.line.line_no),
        text(&|r| r.line.device_id.clone()),
        int(&|r| r.line.seq),
        text(&|r| r.line.source.clone()),
        text(&|r| r.line.reference.clone()),
        text(&|r| r.line.sku.clone()),
        text(&|r| r.line.tender.clone()),
        text(&|r| r.line.account_role.clone()),
        text(&|r| r.line.account_code.clone()),
        text(&|r| r.account_name.to_string()),
        int(&|r| r.line.debit_minor),
        int(&|r| r.line.credit_minor),
        text(&|r| r.line.currency.clone()),
        text(&|r| Money::new(r.line.debit_minor, &r.line.currency).to_decimal_string()),
        text(&|r| Money::new(r.line.credit_minor, &r.line.currency).to_decimal_string()),
    ];
    let schema = Arc::new(schema());
    let batch = RecordBatch::try_new(schema.clone(), columns)
        .map_err(|e| ExportError::Parquet(e.to_string()))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_created_by(format!(
            "tillstream-finance-export (files schema v{})",
            super::SCHEMA_VERSION
        ))
        .set_max_row_group_size(1_000_000)
        .build();
    let mut out = Vec::with_capacity(n * 64 + 4096);
    let mut writer = ArrowWriter::try_new(&mut out, schema, Some(props))
        .map_err(|e| ExportError::Parquet(e.to_string()))?;
    writer
        .write(&batch)
        .map_err(|e| ExportError::Parquet(e.to_string()))?;
    writer
        .close()
        .map_err(|e| ExportError::Parquet(e.to_string()))?;
    Ok(out)
}
