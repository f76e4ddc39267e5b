//! Rows of dynamically typed values for the runtime's multi-row statements, and placeholders for
//! hand-written statements. No delivery guarantee of its own (runs inside the caller's
//! transaction).

use sqlx::AnyConnection;
use tillstream_runtime::sql::RowsStatement;

use super::{Backend, DbError};

/// One bound value.
#[derive(Debug, Clone)]
pub(crate) enum V {
    T(String),
    I(i64),
}

impl From<&str> for V {
    fn from(s: &str) -> V {
        V::T(s.to_string())
    }
}
impl From<String> for V {
    fn from(s: String) -> V {
        V::T(s)
    }
}
impl From<i64> for V {
    fn from(i: i64) -> V {
        V::I(i)
    }
}
impl From<i32> for V {
    fn from(i: i32) -> V {
        V::I(i64::from(i))
    }
}

/// Runs `head VALUES ... tail` over `rows` (each `cols` values) in chunks under the driver's
/// bind-parameter limit (the runtime's [`RowsStatement`]).
pub(crate) async fn insert_rows(
    conn: &mut AnyConnection,
    backend: Backend,
    rows_per_statement: usize,
    head: &str,
    tail: &str,
    cols: usize,
    rows: &[Vec<V>],
) -> Result<(), DbError> {
    RowsStatement::new(head, cols, tail)
        .run(conn, backend, rows_per_statement, rows, |mut q, row| {
            debug_assert_eq!(row.len(), cols);
            for v in row {
                q = match v {
                    V::T(s) => q.bind(s.clone()),
                    V::I(i) => q.bind(*i),
                };
            }
            q
        })
        .await?;
    Ok(())
}

/// `?` or `$n` for a statement with one placeholder per position.
pub(crate) fn ph(backend: Backend, n: usize) -> String {
    match backend {
        Backend::Sqlite => "?".into(),
        Backend::Postgres => format!("${n}"),
    }
}

/// `(?, ?, ...)` / `($k, $k+1, ...)`: an IN list of `count` placeholders starting at `first`.
pub(crate) fn in_list(backend: Backend, first: usize, count: usize) -> String {
    let items: Vec<String> = (0..count).map(|i| ph(backend, first + i)).collect();
    format!("({})", items.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_per_backend() {
        assert_eq!(in_list(Backend::Postgres, 3, 2), "($3, $4)");
    }
}
