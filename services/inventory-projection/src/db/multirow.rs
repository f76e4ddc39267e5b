//! Multi-row statements: an upsert template from `sql/*.sql` ([`Upsert`]) becomes one
//! `INSERT ... VALUES (...), (...) ...` per chunk of rows, with as many rows per statement as the
//! configuration and the driver's bind-parameter limit allow ([`Db::exec_rows`]).
//!
//! Delivery guarantee: none of its own; the statements run inside the caller's transaction.

use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, AnyConnection, AssertSqlSafe};

use super::sets::Color;
use super::{Backend, Db, DbError};

/// A query being bound.
pub(crate) type AnyQuery<'q> = Query<'q, Any, AnyArguments>;

/// Where a template's rows go: the one line of a `sql/*.sql` file that reads exactly this.
const ROWS_MARKER: &str = "VALUES {rows}";

/// An upsert statement read from a `sql/*.sql` template: `head` (`INSERT INTO ... (columns)`), the
/// line `VALUES {rows}`, then `tail` (the conflict rule, optionally `RETURNING`). `{color}` in the
/// head names the table set.
#[derive(Debug, Clone)]
pub(crate) struct Upsert {
    /// `INSERT INTO <table> (<columns>)` with the table set filled in.
    head: String,
    /// What follows the rows: `ON CONFLICT ...` and an optional `RETURNING` clause.
    tail: &'static str,
    /// Columns per row (= bind parameters per row), counted from the head's column list.
    ncols: usize,
}

impl Upsert {
    /// The template for table set `color` (templates without `{color}` ignore it).
    pub(crate) fn new(template: &'static str, color: Option<Color>) -> Upsert {
        let (head, tail) = template
            .split_once(ROWS_MARKER)
            .unwrap_or_else(|| panic!("an upsert template has a `{ROWS_MARKER}` line"));
        let head = head
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        let head = match color {
            Some(c) => head.replace("{color}", c.name()),
            None => head,
        };
        let ncols = head
            .split_once('(')
            .and_then(|(_, cols)| cols.split_once(')'))
            .map(|(cols, _)| cols.split(',').count())
            .unwrap_or_else(|| panic!("an upsert template names its columns: {head}"));
        Upsert {
            head: head.trim().to_string(),
            tail: tail.trim(),
            ncols,
        }
    }

    /// Columns per row.
    #[cfg(test)]
    pub(crate) fn ncols(&self) -> usize {
        self.ncols
    }

    fn returning(&self) -> bool {
        self.tail.contains("RETURNING")
    }
}

impl Db {
    /// Rows per statement for `ncols` columns.
    fn chunk(&self, ncols: usize) -> usize {
        self.rows_per_statement
            .min(self.backend.max_params() / ncols)
            .max(1)
    }

    /// Runs `stmt` over `rows`, chunked; returns the rows the statements returned (when its tail
    /// has a RETURNING clause). `bind` binds one row's `ncols` values in column order.
    pub(crate) async fn exec_rows<R>(
        &self,
        conn: &mut AnyConnection,
        stmt: &Upsert,
        rows: &[R],
        bind: impl for<'q> Fn(AnyQuery<'q>, &R) -> AnyQuery<'q>,
    ) -> Result<Vec<AnyRow>, DbError> {
        let returning = stmt.returning();
        let mut out = Vec::new();
        for chunk in rows.chunks(self.chunk(stmt.ncols)) {
            let sql = values_sql(self.backend, &stmt.head, stmt.ncols, chunk.len(), stmt.tail);
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for r in chunk {
                q = bind(q, r);
            }
            if returning {
                out.extend(q.fetch_all(&mut *conn).await?);
            } else {
                q.execute(&mut *conn).await?;
            }
        }
        Ok(out)
    }
}

/// `head VALUES ($1, ..., $ncols), (...) tail` for `nrows` rows (`?` placeholders on SQLite).
///
/// Why two placeholder styles: SQLite treats `$N` as a *named* parameter, and sqlx binds by asking
/// `sqlite3_bind_parameter_name` for each index, which walks the statement's name list: O(n²) per
/// execution (it dominated the apply time in the bench at 10k parameters). Anonymous `?` parameters
/// have no names, so binding is O(n). PostgreSQL only knows `$N`. Everything else is one dialect.
pub fn values_sql(backend: Backend, head: &str, ncols: usize, nrows: usize, tail: &str) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(head.len() + tail.len() + nrows * ncols * 7 + 16);
    s.push_str(head);
    s.push_str(" VALUES ");
    let mut n = 0;
    for r in 0..nrows {
        if r > 0 {
            s.push(',');
        }
        s.push('(');
        for c in 0..ncols {
            if c > 0 {
                s.push(',');
            }
            n += 1;
            match backend {
                Backend::Sqlite => s.push('?'),
                Backend::Postgres => {
                    let _ = write!(s, "${n}");
                }
            }
        }
        s.push(')');
    }
    s.push(' ');
    s.push_str(tail);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_sql_numbers_placeholders_row_by_row() {
        assert_eq!(
            values_sql(
                Backend::Postgres,
                "INSERT INTO t (a, b)",
                2,
                2,
                "ON CONFLICT DO NOTHING"
            ),
            "INSERT INTO t (a, b) VALUES ($1,$2),($3,$4) ON CONFLICT DO NOTHING"
        );
        assert_eq!(
            values_sql(Backend::Sqlite, "INSERT INTO t (a)", 1, 2, ""),
            "INSERT INTO t (a) VALUES (?),(?) "
        );
    }

    #[test]
    fn a_template_splits_into_head_rows_and_tail() {
        let stmt = Upsert::new(
            "-- a comment (with, commas)\nINSERT INTO {color}_t AS t (a, b,\n  c)\nVALUES {rows}\nON CONFLICT (a) DO NOTHING RETURNING a\n",
            Some(Color::Green),
        );
        assert_eq!(stmt.head, "INSERT INTO green_t AS t (a, b,\n  c)");
        assert_eq!(stmt.ncols, 3);
        assert_eq!(stmt.tail, "ON CONFLICT (a) DO NOTHING RETURNING a");
        assert!(stmt.returning());
    }
}
