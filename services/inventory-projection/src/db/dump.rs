//! The canonical dump of a table set: every table, every row rendered as tab-separated text (`\N`
//! for NULL), rows sorted bytewise in Rust (independent of the database's collation), tables in a
//! fixed order. Two sets hold the same data iff their dumps are byte-identical, on either backend.
//!
//! Delivery guarantee: none (read-only); the switch reads both dumps inside its locked transaction.

use sqlx::{AnyConnection, AssertSqlSafe, Row};

use super::sets::{ColType, Color, TABLES};
use super::{Db, DbError};

impl Db {
    /// The canonical dump of `color` (see the module doc).
    pub async fn dump(&self, color: Color) -> Result<String, DbError> {
        let mut conn = self.pool().acquire().await?;
        dump_on(&mut conn, color).await
    }
}

/// [`Db::dump`] on a given connection (inside a transaction).
pub(crate) async fn dump_on(conn: &mut AnyConnection, color: Color) -> Result<String, DbError> {
    use std::fmt::Write;
    let mut out = String::new();
    for t in TABLES {
        let cols: Vec<&str> = t.columns.iter().map(|c| c.0).collect();
        let sql = format!("SELECT {} FROM {color}_{}", cols.join(", "), t.name);
        let rows = sqlx::query(AssertSqlSafe(sql))
            .fetch_all(&mut *conn)
            .await?;
        let mut lines = Vec::with_capacity(rows.len());
        for r in &rows {
            let mut line = String::new();
            for (i, (_, ty)) in t.columns.iter().enumerate() {
                if i > 0 {
                    line.push('\t');
                }
                match ty {
                    ColType::Int => match r.try_get::<Option<i64>, _>(i)? {
                        Some(v) => {
                            let _ = write!(line, "{v}");
                        }
                        None => line.push_str("\\N"),
                    },
                    ColType::Text => match r.try_get::<Option<String>, _>(i)? {
                        Some(v) => render_text(&v, &mut line),
                        None => line.push_str("\\N"),
                    },
                }
            }
            lines.push(line);
        }
        lines.sort_unstable();
        let _ = writeln!(out, "## {} ({} rows)", t.name, lines.len());
        for l in lines {
            out.push_str(&l);
            out.push('\n');
        }
    }
    Ok(out)
}

fn render_text(s: &str, out: &mut String) {
    for ch in s.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

/// The first line where two dumps differ (for error messages).
pub fn first_difference(a: &str, b: &str) -> (String, String) {
    let mut la = a.lines();
    let mut lb = b.lines();
    loop {
        match (la.next(), lb.next()) {
            (Some(x), Some(y)) if x == y => continue,
            (x, y) => {
                return (
                    x.unwrap_or("<end>").to_string(),
                    y.unwrap_or("<end>").to_string(),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_so_a_row_stays_one_line() {
        let mut out = String::new();
        render_text("a\tb\nc\\d\r", &mut out);
        assert_eq!(out, "a\\tb\\nc\\\\d\\r");
        assert_eq!(
            first_difference("x\ny\nz", "x\nY"),
            ("y".to_string(), "Y".to_string())
        );
        assert_eq!(
            first_difference("x", "x\nmore"),
            ("<end>".to_string(), "more".to_string())
        );
    }
}
