//! The projection's upsert templates (`sql/*.sql`, [`upsert`]) for a table set, run as chunked
//! multi-row statements ([`Db::exec_rows`]) through the runtime's `RowsStatement` (template format,
//! `?`/`$N` placeholders, bind-parameter cap).
//!
//! Delivery guarantee: none of its own; the statements run inside the caller's transaction.

use sqlx::AnyConnection;
use sqlx::any::AnyRow;
use tillstream_runtime::sql::{AnyQuery, RowsStatement};

use super::sets::Color;
use super::{Db, DbError};

/// An upsert template of `sql/*.sql` for table set `color` (`{color}` in a template names the set;
/// templates without it ignore `color`).
pub(crate) fn upsert(template: &'static str, color: Option<Color>) -> RowsStatement {
    match color {
        Some(c) => RowsStatement::from_template(&template.replace("{color}", c.name())),
        None => RowsStatement::from_template(template),
    }
}

impl Db {
    /// Runs `stmt` over `rows`, chunked (at most the configured rows per statement); returns the
    /// rows the statements returned (when its tail has a RETURNING clause). `bind` binds one row's
    /// values in column order.
    pub(crate) async fn exec_rows<R>(
        &self,
        conn: &mut AnyConnection,
        stmt: &RowsStatement,
        rows: &[R],
        bind: impl for<'q> Fn(AnyQuery<'q>, &R) -> AnyQuery<'q>,
    ) -> Result<Vec<AnyRow>, DbError> {
        Ok(stmt
            .run(conn, self.backend(), self.rows_per_statement, rows, bind)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_names_the_table_set() {
        let stmt = upsert(
            "INSERT INTO {color}_t AS t (a, b)\nVALUES {rows}\nON CONFLICT (a) DO NOTHING\n",
            Some(Color::Green),
        );
        assert!(format!("{stmt:?}").contains("INSERT INTO green_t AS t (a, b)"));
        assert_eq!(stmt.ncols(), 2);
        assert!(!stmt.returning());
    }
}
