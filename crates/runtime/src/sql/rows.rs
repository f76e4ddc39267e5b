//! Multi-row statements: a statement with a `VALUES` list ([`RowsStatement`], written in code or
//! read from a `sql/*.sql` template beside the code that runs it) becomes one
//! `head VALUES (...), (...) tail` per chunk of rows, with as many rows per statement as the
//! configuration and the driver's bind-parameter limit allow ([`RowsStatement::run`]).
//!
//! Delivery guarantee: none of its own; the statements run on the caller's connection, inside the
//! caller's transaction.

use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, AnyConnection, AssertSqlSafe};

use super::{Backend, SqlError};

/// A query being bound.
pub type AnyQuery<'q> = Query<'q, Any, AnyArguments>;

/// Where a template's rows go: the one line of a template that reads exactly this.
const ROWS_MARKER: &str = "VALUES {rows}";

/// A statement run over many rows: `head` (`INSERT INTO ... (columns)`), the rows, then `tail`
/// (the conflict rule, optionally `RETURNING`).
#[derive(Debug, Clone)]
pub struct RowsStatement {
    /// `INSERT INTO <table> (<columns>)`.
    head: String,
    /// What follows the rows: `ON CONFLICT ...` and an optional `RETURNING` clause.
    tail: String,
    /// Columns per row (= bind parameters per row).
    ncols: usize,
}

impl RowsStatement {
    /// `head VALUES ... tail` with `ncols` values a row.
    pub fn new(head: impl Into<String>, ncols: usize, tail: impl Into<String>) -> Self {
        RowsStatement {
            head: head.into(),
            tail: tail.into(),
            ncols: ncols.max(1),
        }
    }

    /// Reads a template: the head (`INSERT INTO t (a, b, c)`, `--` comment lines dropped), a line
    /// `VALUES {rows}`, then the tail. The columns are counted from the head's column list. The
    /// templates are part of the program (`include_str!`), so a malformed one panics.
    pub fn from_template(template: &str) -> Self {
        let (head, tail) = template
            .split_once(ROWS_MARKER)
            .unwrap_or_else(|| panic!("a rows template has a `{ROWS_MARKER}` line: {template}"));
        let head = head
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        let ncols = head
            .split_once('(')
            .and_then(|(_, cols)| cols.split_once(')'))
            .map(|(cols, _)| cols.split(',').count())
            .unwrap_or_else(|| panic!("a rows template names its columns: {head}"));
        RowsStatement::new(head.trim(), ncols, tail.trim())
    }

    /// Columns per row.
    pub fn ncols(&self) -> usize {
        self.ncols
    }

    /// Whether the statement returns rows (a `RETURNING` clause in its tail).
    pub fn returning(&self) -> bool {
        self.tail.contains("RETURNING")
    }

    /// Rows per statement: `configured`, capped by `backend`'s bind-parameter limit.
    pub fn rows_per_statement(&self, backend: Backend, configured: usize) -> usize {
        configured.min(backend.max_params() / self.ncols).max(1)
    }

    /// Runs the statement over `rows` in chunks of [`rows_per_statement`](Self::rows_per_statement);
    /// returns the rows the statements returned (when the tail has a `RETURNING` clause). `bind`
    /// binds one row's [`ncols`](Self::ncols) values in column order.
    pub async fn run<R>(
        &self,
        conn: &mut AnyConnection,
        backend: Backend,
        rows_per_statement: usize,
        rows: &[R],
        bind: impl for<'q> Fn(AnyQuery<'q>, &R) -> AnyQuery<'q>,
    ) -> Result<Vec<AnyRow>, SqlError> {
        let returning = self.returning();
        let mut out = Vec::new();
        for chunk in rows.chunks(self.rows_per_statement(backend, rows_per_statement)) {
            let sql = values_sql(backend, &self.head, self.ncols, chunk.len(), &self.tail);
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
/// `sqlite3_bind_parameter_name` for each index, which walks the statement's name list: quadratic
/// per execution (it dominated the inventory projection's apply time at thousands of parameters).
/// Anonymous `?` parameters have no names, so binding is linear. PostgreSQL only knows `$N`.
/// Everything else is one dialect.
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
        let stmt = RowsStatement::from_template(
            "-- a comment (with, commas)\nINSERT INTO t AS t (a, b,\n  c)\nVALUES {rows}\nON CONFLICT (a) DO NOTHING RETURNING a\n",
        );
        assert_eq!(stmt.head, "INSERT INTO t AS t (a, b,\n  c)");
        assert_eq!(stmt.ncols(), 3);
        assert_eq!(stmt.tail, "ON CONFLICT (a) DO NOTHING RETURNING a");
        assert!(stmt.returning());
    }

    #[test]
    fn rows_per_statement_stays_under_the_bind_parameter_limit() {
        let stmt = RowsStatement::new("INSERT INTO t (a, b, c, d)", 4, "");
        assert_eq!(stmt.rows_per_statement(Backend::Postgres, 1000), 1000);
        assert_eq!(
            stmt.rows_per_statement(Backend::Sqlite, 100_000),
            32_766 / 4
        );
        assert_eq!(stmt.rows_per_statement(Backend::Sqlite, 0), 1);
    }
}
