//! Multi-row statements: one `INSERT ... VALUES (...), (...)` per chunk of rows, the chunk capped
//! by the driver's bind-parameter limit. No delivery guarantee of its own (runs inside the
//! caller's transaction).

use sqlx::{AnyConnection, AssertSqlSafe};

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

/// `(?, ?, ?), (?, ?, ?)` for SQLite, `($1, $2, $3), ($4, $5, $6)` for PostgreSQL.
pub(crate) fn values_sql(backend: Backend, rows: usize, cols: usize) -> String {
    let mut s = String::with_capacity(rows * cols * 4);
    let mut n = 0;
    for r in 0..rows {
        if r > 0 {
            s.push_str(", ");
        }
        s.push('(');
        for c in 0..cols {
            if c > 0 {
                s.push_str(", ");
            }
            n += 1;
            match backend {
                Backend::Sqlite => s.push('?'),
                Backend::Postgres => {
                    s.push('$');
                    s.push_str(&n.to_string());
                }
            }
        }
        s.push(')');
    }
    s
}

/// Runs `head VALUES ... tail` over `rows` (each `cols` values) in chunks.
pub(crate) async fn insert_rows(
    conn: &mut AnyConnection,
    backend: Backend,
    rows_per_statement: usize,
    head: &str,
    tail: &str,
    cols: usize,
    rows: &[Vec<V>],
) -> Result<(), DbError> {
    let per = rows_per_statement.min(backend.max_params() / cols).max(1);
    for chunk in rows.chunks(per) {
        let sql = format!(
            "{head} VALUES {} {tail}",
            values_sql(backend, chunk.len(), cols)
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for row in chunk {
            debug_assert_eq!(row.len(), cols);
            for v in row {
                q = match v {
                    V::T(s) => q.bind(s.clone()),
                    V::I(i) => q.bind(*i),
                };
            }
        }
        q.execute(&mut *conn).await?;
    }
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
        assert_eq!(values_sql(Backend::Sqlite, 2, 2), "(?, ?), (?, ?)");
        assert_eq!(values_sql(Backend::Postgres, 2, 2), "($1, $2), ($3, $4)");
        assert_eq!(in_list(Backend::Postgres, 3, 2), "($3, $4)");
    }
}
