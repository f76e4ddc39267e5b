//! The reorder-point file people maintain: CSV `store_id,sku,reorder_point[,reorder_qty]` (a header
//! line starting with `store_id`, blank lines and `#` comments are skipped; store `*` is the default
//! for every store). Pure parsing; no I/O, no delivery guarantee (`db::reorder` writes the rows).

/// One row of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReorderPoint {
    /// The store, or `*` for every store without a row of its own.
    pub store_id: String,
    /// The SKU the point applies to.
    pub sku: String,
    /// On-hand at or below this shows up in `stock_below_reorder_point`.
    pub reorder_point: i64,
    /// How much to order then, if the file says.
    pub reorder_qty: Option<i64>,
}

/// A line of the file that is not a reorder point.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {text:?}")]
pub struct CsvError {
    /// 1-based line number.
    pub line: usize,
    /// The line as written.
    pub text: String,
}

/// Parses the whole file; the first bad line fails it (nothing is written then).
pub fn parse(csv: &str) -> Result<Vec<ReorderPoint>, CsvError> {
    let mut rows = Vec::new();
    for (i, line) in csv.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with("store_id") {
            continue;
        }
        let bad = || CsvError {
            line: i + 1,
            text: line.to_string(),
        };
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if f.len() < 3 || f[0].is_empty() || f[1].is_empty() {
            return Err(bad());
        }
        let reorder_point: i64 = f[2].parse().map_err(|_| bad())?;
        let reorder_qty: Option<i64> = match f.get(3) {
            Some(s) if !s.is_empty() => Some(s.parse().map_err(|_| bad())?),
            _ => None,
        };
        rows.push(ReorderPoint {
            store_id: f[0].to_string(),
            sku: f[1].to_string(),
            reorder_point,
            reorder_qty,
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_header_comments_and_an_optional_quantity() {
        let rows = parse(
            "store_id,sku,reorder_point,reorder_qty\n# note\n\n*,SKU-A,2,10\ns1, SKU-B ,5,\n",
        )
        .unwrap();
        assert_eq!(
            rows,
            vec![
                ReorderPoint {
                    store_id: "*".into(),
                    sku: "SKU-A".into(),
                    reorder_point: 2,
                    reorder_qty: Some(10),
                },
                ReorderPoint {
                    store_id: "s1".into(),
                    sku: "SKU-B".into(),
                    reorder_point: 5,
                    reorder_qty: None,
                },
            ]
        );
    }

    #[test]
    fn a_bad_line_names_its_number() {
        for (csv, line) in [("s1,SKU-A\n", 1), ("# c\ns1,SKU-A,x\n", 2), (",SKU,1\n", 1)] {
            let e = parse(csv).unwrap_err();
            assert_eq!(e.line, line, "{csv:?}");
        }
        assert_eq!(
            parse("s1,SKU-A,1,many").unwrap_err().to_string(),
            "line 1: \"s1,SKU-A,1,many\""
        );
    }
}
