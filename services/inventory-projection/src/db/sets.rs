//! Blue/green table sets: the two identical sets ([`Color`], [`TABLES`]), the state row that says
//! which one is live (locked by every live batch), the analyst views over it (`sql/views.sql`),
//! emptying a set, and the switch of the views to a rebuilt set ([`Db::try_switch`]).
//!
//! Delivery guarantee: a switch is one transaction under the state-row lock: the rebuilt set is
//! compared with the live one (same offsets, byte-identical canonical dump) and the views and the
//! active colour change together, so no live batch interleaves and none is lost across it.

use sqlx::{AnyConnection, AssertSqlSafe, Row};

use super::dump::{dump_on, first_difference};
use super::offsets::offsets_on;
use super::{Backend, Db, DbError};
use std::collections::BTreeMap;

/// The analyst views (template over the active colour).
pub const VIEWS_SQL: &str = include_str!("sql/views.sql");

/// A table set. The live consumer writes the active one; `rebuild` fills the other, then switches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Color {
    Blue,
    Green,
}

impl Color {
    /// The set's table-name prefix and its value in `projection_state.active_color`.
    pub fn name(self) -> &'static str {
        match self {
            Color::Blue => "blue",
            Color::Green => "green",
        }
    }

    pub fn other(self) -> Color {
        match self {
            Color::Blue => Color::Green,
            Color::Green => Color::Blue,
        }
    }

    pub fn parse(s: &str) -> Option<Color> {
        match s {
            "blue" => Some(Color::Blue),
            "green" => Some(Color::Green),
            _ => None,
        }
    }
}

impl std::fmt::Display for Color {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How the canonical dump renders a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColType {
    Int,
    Text,
}

/// A projected table (per colour), for the canonical dump and for clearing a set.
#[derive(Debug)]
pub struct TableSpec {
    /// The table's name without the colour prefix.
    pub name: &'static str,
    /// Every column, in dump order.
    pub columns: &'static [(&'static str, ColType)],
}

use ColType::{Int, Text};

/// Every table of a colour set, in dump order.
pub const TABLES: &[TableSpec] = &[
    TableSpec {
        name: "applied_event",
        columns: &[
            ("event_id", Text),
            ("store_id", Text),
            ("event_type", Text),
            ("kafka_partition", Int),
            ("kafka_offset", Int),
        ],
    },
    TableSpec {
        name: "consumer_offset",
        columns: &[
            ("topic", Text),
            ("kafka_partition", Int),
            ("next_offset", Int),
        ],
    },
    TableSpec {
        name: "stock",
        columns: &[
            ("store_id", Text),
            ("sku", Text),
            ("on_hand", Int),
            ("version", Int),
            ("last_event_id", Text),
            ("last_occurred_at", Int),
            ("below_zero", Int),
        ],
    },
    TableSpec {
        name: "stock_movement",
        columns: &[
            ("event_id", Text),
            ("line_no", Int),
            ("store_id", Text),
            ("sku", Text),
            ("movement", Text),
            ("qty_delta", Int),
            ("counted_qty", Int),
            ("occurred_at", Int),
            ("kafka_partition", Int),
            ("kafka_offset", Int),
        ],
    },
    TableSpec {
        name: "sales_hourly",
        columns: &[
            ("store_id", Text),
            ("sku", Text),
            ("hour_start", Int),
            ("currency", Text),
            ("qty_sold", Int),
            ("gross_minor", Int),
            ("discounts_minor", Int),
            ("tax_minor", Int),
            ("net_minor", Int),
            ("qty_returned", Int),
            ("refunded_minor", Int),
            ("refunded_tax_minor", Int),
            ("sale_lines", Int),
            ("refund_lines", Int),
        ],
    },
    TableSpec {
        name: "reservation",
        columns: &[
            ("store_id", Text),
            ("reservation_id", Text),
            ("sku", Text),
            ("status", Text),
            ("requested_qty", Int),
            ("granted_qty", Int),
            ("released_qty", Int),
            ("requested_at", Int),
            ("granted_at", Int),
            ("granted_by", Text),
            ("expires_at", Int),
            ("released_at", Int),
            ("release_reason", Text),
            ("order_ref", Text),
        ],
    },
    TableSpec {
        name: "store_sync",
        columns: &[
            ("store_id", Text),
            ("last_event_at", Int),
            ("last_seen_at", Int),
            ("last_lag_ms", Int),
            ("max_lag_ms", Int),
            ("last_business_date", Int),
            ("events_total", Int),
            ("offline_events_total", Int),
            ("last_event_id", Text),
        ],
    },
    TableSpec {
        name: "store_day",
        columns: &[
            ("store_id", Text),
            ("business_date", Int),
            ("events", Int),
            ("offline_events", Int),
            ("orders", Int),
            ("refunds", Int),
            ("adjustments", Int),
        ],
    },
];

/// Outcome of trying to switch the views to a rebuilt set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Switch {
    /// Switched; `compared` = the rebuilt set was compared with the live one and was equal.
    Done { compared: bool },
    /// The live set consumed further meanwhile: replay up to these offsets, then try again.
    LiveAhead(BTreeMap<i32, i64>),
    /// The live set is behind the rebuild (its consumer is lagging or stopped).
    LiveBehind(BTreeMap<i32, i64>),
    /// Same offsets, different content: not switched. The first differing line of each dump.
    Differs { live: String, rebuilt: String },
}

impl Db {
    /// The colour the views point at.
    pub async fn active_color(&self) -> Result<Color, DbError> {
        let row = sqlx::query("SELECT active_color FROM projection_state WHERE id = 1")
            .fetch_one(self.pool())
            .await?;
        parse_color(&row)
    }

    /// Locks the state row for the rest of the transaction and returns the active colour.
    pub(crate) async fn lock_state(conn: &mut AnyConnection) -> Result<Color, DbError> {
        let row = sqlx::query(
            "UPDATE projection_state SET active_color = active_color WHERE id = 1 RETURNING active_color",
        )
        .fetch_one(&mut *conn)
        .await?;
        parse_color(&row)
    }

    /// (Re)creates the analyst views over the active set.
    pub async fn ensure_views(&self) -> Result<Color, DbError> {
        let mut tx = self.pool().begin().await?;
        let color = Self::lock_state(&mut tx).await?;
        self.create_views(&mut tx, color).await?;
        tx.commit().await?;
        Ok(color)
    }

    async fn create_views(&self, conn: &mut AnyConnection, color: Color) -> Result<(), DbError> {
        let stmts: Vec<String> = view_statements(color, self.backend());
        for name in view_names().iter().rev() {
            sqlx::query(AssertSqlSafe(format!("DROP VIEW IF EXISTS {name}")))
                .execute(&mut *conn)
                .await?;
        }
        for s in stmts {
            sqlx::query(AssertSqlSafe(s)).execute(&mut *conn).await?;
        }
        Ok(())
    }

    /// Empties every table of a set (the rebuild's target).
    pub async fn clear(&self, color: Color) -> Result<(), DbError> {
        let mut tx = self.pool().begin().await?;
        for t in TABLES {
            sqlx::query(AssertSqlSafe(format!("DELETE FROM {color}_{}", t.name)))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Compares a rebuilt set with the live one under the state lock and, when they match (or when
    /// `force`), points the views at it. See [`Switch`].
    pub async fn try_switch(
        &self,
        rebuilt: Color,
        topic: &str,
        force: bool,
    ) -> Result<Switch, DbError> {
        let mut tx = self.pool().begin().await?;
        let live = Self::lock_state(&mut tx).await?;
        if live == rebuilt {
            return Err(DbError::Invalid(format!(
                "{rebuilt} is already the live set"
            )));
        }
        let live_off = offsets_on(&mut tx, live, topic).await?;
        let new_off = offsets_on(&mut tx, rebuilt, topic).await?;
        let compared = !live_off.is_empty();
        if compared && !force {
            if live_off != new_off {
                tx.rollback().await?;
                return Ok(offsets_differ(live_off, &new_off));
            }
            let a = dump_on(&mut tx, live).await?;
            let b = dump_on(&mut tx, rebuilt).await?;
            if a != b {
                let (la, lb) = first_difference(&a, &b);
                tx.rollback().await?;
                return Ok(Switch::Differs {
                    live: la,
                    rebuilt: lb,
                });
            }
        }
        sqlx::query(
            "UPDATE projection_state SET active_color = $1, switches = switches + 1 WHERE id = 1",
        )
        .bind(rebuilt.name())
        .execute(&mut *tx)
        .await?;
        self.create_views(&mut tx, rebuilt).await?;
        tx.commit().await?;
        Ok(Switch::Done {
            compared: compared && !force,
        })
    }
}

/// The verdict when the live set stands at `live` and the rebuilt one at `rebuilt` (they differ):
/// the live set is ahead if any of its partitions is past the rebuild's.
pub fn offsets_differ(live: BTreeMap<i32, i64>, rebuilt: &BTreeMap<i32, i64>) -> Switch {
    let ahead = live
        .iter()
        .any(|(p, o)| rebuilt.get(p).is_none_or(|n| o > n));
    if ahead {
        Switch::LiveAhead(live)
    } else {
        Switch::LiveBehind(live)
    }
}

fn parse_color(row: &sqlx::any::AnyRow) -> Result<Color, DbError> {
    let c: String = row.try_get(0)?;
    Color::parse(&c).ok_or_else(|| DbError::Invalid(format!("unknown colour {c:?}")))
}

/// "Now" in epoch milliseconds, for the one view that compares with the clock.
fn now_ms_sql(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "(CAST(strftime('%s','now') AS INTEGER) * 1000)",
        Backend::Postgres => "CAST(EXTRACT(EPOCH FROM CURRENT_TIMESTAMP) * 1000 AS BIGINT)",
    }
}

/// The view statements for `color` on `backend`.
pub fn view_statements(color: Color, backend: Backend) -> Vec<String> {
    VIEWS_SQL
        .split("\n;;\n")
        .map(|s| {
            s.replace("{c}", color.name())
                .replace("{now_ms}", now_ms_sql(backend))
        })
        .filter(|s| s.contains("CREATE VIEW"))
        .collect()
}

/// Names of the analyst views, in creation order.
pub fn view_names() -> Vec<&'static str> {
    VIEWS_SQL
        .lines()
        .filter_map(|l| l.strip_prefix("CREATE VIEW "))
        .filter_map(|l| l.split_whitespace().next())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::MIGRATION_0001;

    #[test]
    fn blue_and_green_sets_are_the_same_ddl() {
        let (head, rest) = MIGRATION_0001.split_once("-- Table set \"blue\"").unwrap();
        assert!(head.contains("projection_state"));
        let (blue, green) = rest.split_once("-- Table set \"green\"").unwrap();
        let norm = |s: &str| {
            s.lines()
                .skip(1)
                .filter(|l| !l.starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n")
                .replace("green_", "X_")
                .replace("blue_", "X_")
                .trim()
                .to_string()
        };
        assert_eq!(norm(blue), norm(green));
        for t in TABLES {
            for c in ["blue", "green"] {
                assert!(
                    MIGRATION_0001.contains(&format!("CREATE TABLE {c}_{} (", t.name)),
                    "{c}_{} missing",
                    t.name
                );
            }
        }
    }

    #[test]
    fn every_view_is_created_for_the_colour() {
        let stmts = view_statements(Color::Green, Backend::Sqlite);
        assert_eq!(stmts.len(), view_names().len());
        assert!(
            stmts
                .iter()
                .all(|s| !s.contains("{c}") && !s.contains("blue_"))
        );
        assert!(view_names().contains(&"stock_below_reorder_point"));
    }
}
