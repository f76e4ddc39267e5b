//! The projection as a pure function: a batch of new (not yet applied) events in stream order in,
//! row deltas for every table out. No I/O, no clock: the same events always give the same deltas.
//!
//! Guarantee: applying the deltas of a stream split into batches at any boundaries gives the same
//! tables as applying the whole stream at once. Every delta composes associatively with the row it
//! lands on (sums, maxima, "latest in stream order", first-wins coalesce, and for stock an
//! add-or-set operation), and `db/sql/*.sql` mirror each composition rule in their upserts. Every
//! sum is checked: a batch whose figures would leave 64 bits is refused ([`Overflow`]), never
//! wrapped or clamped.
//!
//! Why one file (~600 lines): each delta type sits next to the composition rule its SQL mirrors;
//! splitting by table would separate rules that must be read together (stock add-or-set with the
//! ledger).

use rustc_hash::{FxHashMap as HashMap, FxHashSet};

use tillstream_contracts::{AdjustmentKind, DeviceEvent, ReleaseReason};

/// One decoded event with its Kafka coordinates.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// The record's partition of the store-event topic.
    pub partition: i32,
    /// The record's offset in that partition.
    pub offset: i64,
    /// Kafka record timestamp (ms); the event's `occurred_at` when the record has none.
    pub record_ts: i64,
    /// The decoded store event.
    pub event: DeviceEvent,
}

/// Settings the projection function depends on. Changing one changes the tables: rebuild after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProjectionParams {
    /// An event whose record timestamp is more than this after `occurred_at` was buffered offline.
    pub offline_threshold_ms: i64,
}

impl Default for ProjectionParams {
    fn default() -> Self {
        ProjectionParams {
            offline_threshold_ms: 300_000,
        }
    }
}

pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 86_400_000;

/// Row of the idempotency gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateRow<'a> {
    /// The gate's key: an event id is applied once.
    pub event_id: &'a str,
    pub store_id: &'a str,
    /// Short record name of the event type.
    pub event_type: &'static str,
    /// Kafka coordinates of the copy that was applied.
    pub partition: i64,
    pub offset: i64,
}

/// Row of the stock movement ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovementRow<'a> {
    /// With `line_no`, the ledger's key: one row per stock-moving event line.
    pub event_id: &'a str,
    pub line_no: i64,
    pub store_id: &'a str,
    pub sku: &'a str,
    /// SALE, RETURN, RECEIPT, TRANSFER_IN, SHRINK, TRANSFER_OUT, COUNT_VARIANCE or COUNT_SET.
    pub movement: &'static str,
    /// `None` for COUNT_SET (a count that overwrites on-hand).
    pub qty_delta: Option<i64>,
    /// What a count found (counts only).
    pub counted_qty: Option<i64>,
    /// The event's `occurred_at` (device clock).
    pub occurred_at: i64,
    /// Kafka coordinates of the event (the ledger's stream order).
    pub partition: i64,
    pub offset: i64,
}

/// What a batch does to one (store, sku) stock row: optionally overwrite (a blind count), then add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockDelta<'a> {
    pub store_id: &'a str,
    pub sku: &'a str,
    /// On-hand set by the last blind count of the batch, if any (`add` counts from there).
    pub set: Option<i64>,
    /// Quantity added (negative: removed) after `set`, or to the stored on-hand without one.
    pub add: i64,
    /// Movements applied to the row (added to `version`).
    pub moves: i64,
    /// The batch's latest (stream order) event that moved the row, and when it occurred.
    pub last_event_id: &'a str,
    pub last_occurred_at: i64,
}

/// What a batch adds to one `sales_hourly` row (every field is a sum; money in minor units).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SalesDelta {
    pub qty_sold: i64,
    /// Quantity x unit price.
    pub gross: i64,
    pub discounts: i64,
    pub tax: i64,
    /// Gross - discounts + tax.
    pub net: i64,
    pub qty_returned: i64,
    pub refunded: i64,
    pub refunded_tax: i64,
    /// Order lines and refund lines counted.
    pub sale_lines: i64,
    pub refund_lines: i64,
}

/// One `sales_hourly` row's key and what the batch adds to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SalesRow<'a> {
    pub store_id: &'a str,
    pub sku: &'a str,
    /// Start of the UTC hour of `occurred_at` (epoch ms).
    pub hour_start: i64,
    pub currency: &'a str,
    /// The sums to add.
    pub d: SalesDelta,
}

/// A reservation's fields as known from the batch; merged first-wins per field (except
/// `expires_at`: the latest known value wins, so a grant's expiry replaces the request's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationRow<'a> {
    pub store_id: &'a str,
    pub reservation_id: &'a str,
    pub sku: &'a str,
    pub requested_qty: Option<i64>,
    pub granted_qty: Option<i64>,
    pub released_qty: Option<i64>,
    pub requested_at: Option<i64>,
    pub granted_at: Option<i64>,
    pub granted_by: Option<&'a str>,
    pub expires_at: Option<i64>,
    pub released_at: Option<i64>,
    pub release_reason: Option<&'static str>,
    pub order_ref: Option<&'a str>,
}

impl<'a> ReservationRow<'a> {
    /// `self` then `later` (stream order).
    fn merge(&mut self, later: ReservationRow<'a>) {
        self.requested_qty = self.requested_qty.or(later.requested_qty);
        self.granted_qty = self.granted_qty.or(later.granted_qty);
        self.released_qty = self.released_qty.or(later.released_qty);
        self.requested_at = self.requested_at.or(later.requested_at);
        self.granted_at = self.granted_at.or(later.granted_at);
        self.granted_by = self.granted_by.or(later.granted_by);
        self.expires_at = later.expires_at.or(self.expires_at);
        self.released_at = self.released_at.or(later.released_at);
        self.release_reason = self.release_reason.or(later.release_reason);
        self.order_ref = self.order_ref.or(later.order_ref);
    }

    /// Same rule as the SQL upsert: EXPIRED > RELEASED > GRANTED > REQUESTED.
    pub fn status(&self) -> &'static str {
        reservation_status(
            self.release_reason,
            self.released_at.is_some(),
            self.granted_at.is_some(),
        )
    }
}

pub fn reservation_status(
    release_reason: Option<&str>,
    released: bool,
    granted: bool,
) -> &'static str {
    if release_reason == Some("EXPIRED") {
        "EXPIRED"
    } else if released {
        "RELEASED"
    } else if granted {
        "GRANTED"
    } else {
        "REQUESTED"
    }
}

/// What a batch tells about one store's sync status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRow<'a> {
    pub store_id: &'a str,
    /// Latest `occurred_at` (device clock) and latest record timestamp (maxima).
    pub last_event_at: i64,
    pub last_seen_at: i64,
    /// Record timestamp minus `occurred_at` of the batch's last event, and the largest such lag.
    pub last_lag_ms: i64,
    pub max_lag_ms: i64,
    /// Latest business date seen (maximum).
    pub last_business_date: i64,
    /// Events, and events received later than the offline threshold (sums).
    pub events: i64,
    pub offline_events: i64,
    /// The batch's last event of the store (stream order).
    pub last_event_id: &'a str,
}

/// What a batch adds to one store's business day (every field is a count).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DayDelta {
    pub events: i64,
    pub offline_events: i64,
    pub orders: i64,
    pub refunds: i64,
    pub adjustments: i64,
}

/// One `store_day` row's key and what the batch adds to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayRow<'a> {
    pub store_id: &'a str,
    /// See [`business_date`].
    pub business_date: i64,
    /// The counts to add.
    pub d: DayDelta,
}

/// Everything a batch of new events changes. Rows are sorted by key (deterministic statements, and
/// concurrent writers lock rows in the same order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delta<'a> {
    /// One per table (stock rows split into adds and blind-count sets only when written).
    pub movements: Vec<MovementRow<'a>>,
    pub stock: Vec<StockDelta<'a>>,
    pub sales: Vec<SalesRow<'a>>,
    pub reservations: Vec<ReservationRow<'a>>,
    pub sync: Vec<SyncRow<'a>>,
    pub days: Vec<DayRow<'a>>,
}

impl Delta<'_> {
    /// Rows the delta writes (for metrics and benchmarks).
    pub fn rows(&self) -> usize {
        self.movements.len()
            + self.stock.len()
            + self.sales.len()
            + self.reservations.len()
            + self.sync.len()
            + self.days.len()
    }
}

/// The gate rows of a batch, first occurrence of each event id only (a duplicate within one batch is
/// dropped here; across batches the gate's primary key drops it).
pub fn gate_rows(batch: &[Envelope]) -> Vec<GateRow<'_>> {
    let mut seen = FxHashSet::with_capacity_and_hasher(batch.len(), Default::default());
    batch
        .iter()
        .filter(|e| seen.insert(e.event.event_id()))
        .map(|e| GateRow {
            event_id: e.event.event_id(),
            store_id: e.event.store_id(),
            event_type: e.event.kind().name(),
            partition: i64::from(e.partition),
            offset: e.offset,
        })
        .collect()
}

/// The business date an event belongs to: the POS business date when the event has one, else the
/// UTC day of `occurred_at`.
pub fn business_date(event: &DeviceEvent) -> i64 {
    match event {
        DeviceEvent::OrderCreated(e) => i64::from(e.business_date),
        DeviceEvent::OrderRefunded(e) => i64::from(e.business_date),
        DeviceEvent::LoyaltyRedeemed(e) => i64::from(e.business_date),
        DeviceEvent::StoreDayClosed(e) => i64::from(e.business_date),
        other => other.occurred_at().div_euclid(DAY_MS),
    }
}

/// The deltas of a batch while its events are folded in, keyed like the tables they go to.
struct Builder<'a> {
    /// Ledger lines in stream order.
    movements: Vec<MovementRow<'a>>,
    /// By (store, sku).
    stock: HashMap<(&'a str, &'a str), StockDelta<'a>>,
    /// By (store, sku, hour start, currency).
    sales: HashMap<(&'a str, &'a str, i64, &'a str), SalesDelta>,
    /// By (store, reservation id).
    reservations: HashMap<(&'a str, &'a str), ReservationRow<'a>>,
    /// By store.
    sync: HashMap<&'a str, SyncRow<'a>>,
    /// By (store, business date).
    days: HashMap<(&'a str, i64), DayDelta>,
    /// Line numbers of the current event's movements (events are unique in a batch, so a repeated
    /// (event_id, line_no) can only come from within one event).
    lines_of_event: Vec<i64>,
}

impl<'a> Builder<'a> {
    #[allow(clippy::too_many_arguments)]
    fn movement(
        &mut self,
        env: &'a Envelope,
        line_no: i64,
        sku: &'a str,
        movement: &'static str,
        qty_delta: Option<i64>,
        counted_qty: Option<i64>,
    ) -> Result<(), &'static str> {
        let ev = &env.event;
        // A malformed event repeating a line number moves stock once, like the ledger row.
        if self.lines_of_event.contains(&line_no) {
            return Ok(());
        }
        self.lines_of_event.push(line_no);
        let store_id = ev.store_id();
        self.movements.push(MovementRow {
            event_id: ev.event_id(),
            line_no,
            store_id,
            sku,
            movement,
            qty_delta,
            counted_qty,
            occurred_at: ev.occurred_at(),
            partition: i64::from(env.partition),
            offset: env.offset,
        });
        let s = self
            .stock
            .entry((store_id, sku))
            .or_insert_with(|| StockDelta {
                store_id,
                sku,
                set: None,
                add: 0,
                moves: 0,
                last_event_id: "",
                last_occurred_at: 0,
            });
        match (qty_delta, counted_qty) {
            (Some(d), _) => s.add = sum(s.add, d, "stock on hand")?,
            (None, Some(c)) => {
                s.set = Some(c);
                s.add = 0;
            }
            (None, None) => {}
        }
        s.moves += 1;
        s.last_event_id = ev.event_id();
        s.last_occurred_at = ev.occurred_at();
        Ok(())
    }

    fn sale(
        &mut self,
        store: &'a str,
        sku: &'a str,
        hour: i64,
        currency: &'a str,
    ) -> &mut SalesDelta {
        self.sales.entry((store, sku, hour, currency)).or_default()
    }

    fn reservation(&mut self, row: ReservationRow<'a>) {
        match self.reservations.entry((row.store_id, row.reservation_id)) {
            std::collections::hash_map::Entry::Occupied(mut o) => o.get_mut().merge(row),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(row);
            }
        }
    }
}

fn adjustment_movement(kind: AdjustmentKind) -> (&'static str, i64) {
    match kind {
        AdjustmentKind::Receipt => ("RECEIPT", 1),
        AdjustmentKind::TransferIn => ("TRANSFER_IN", 1),
        AdjustmentKind::Shrink => ("SHRINK", -1),
        AdjustmentKind::TransferOut => ("TRANSFER_OUT", -1),
        AdjustmentKind::Count => ("COUNT", 0),
    }
}

fn release_reason(r: ReleaseReason) -> &'static str {
    match r {
        ReleaseReason::Fulfilled => "FULFILLED",
        ReleaseReason::Cancelled => "CANCELLED",
        ReleaseReason::Expired => "EXPIRED",
    }
}

/// An event the projection refuses: one of its figures, or a sum of the batch it joins, does not fit
/// in 64 bits. Never wrapped, never clamped: the batch is refused and the live loop isolates the
/// event and dead-letters it (reason [`OVERFLOW_REASON`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{OVERFLOW_REASON}: event {event_id}: {what} does not fit in 64 bits")]
pub struct Overflow {
    /// The event that overflowed.
    pub event_id: String,
    /// Which figure (e.g. "gross", "net", "stock on hand").
    pub what: &'static str,
}

/// The dead-letter reason of an event whose figures would overflow a sum.
pub const OVERFLOW_REASON: &str = "aggregate_overflow";

/// `a + b`, or the name of the figure that would overflow.
fn sum(a: i64, b: i64, what: &'static str) -> Result<i64, &'static str> {
    a.checked_add(b).ok_or(what)
}

/// Projects a batch of new events (already filtered by the gate, in stream order) into row deltas,
/// or names the first event whose figures overflow (alone or added to the batch's sums).
pub fn project<'a>(
    batch: &[&'a Envelope],
    params: &ProjectionParams,
) -> Result<Delta<'a>, Overflow> {
    let mut b = Builder {
        movements: Vec::with_capacity(batch.len() * 3),
        stock: HashMap::default(),
        sales: HashMap::default(),
        reservations: HashMap::default(),
        sync: HashMap::default(),
        days: HashMap::default(),
        lines_of_event: Vec::new(),
    };
    for env in batch {
        let env: &'a Envelope = env;
        fold(&mut b, env, params).map_err(|what| Overflow {
            event_id: env.event.event_id().to_string(),
            what,
        })?;
    }

    let mut stock: Vec<_> = b.stock.into_values().collect();
    stock.sort_unstable_by(|a, b| (a.store_id, a.sku).cmp(&(b.store_id, b.sku)));
    let mut sales: Vec<_> = b
        .sales
        .into_iter()
        .map(|((store_id, sku, hour_start, currency), d)| SalesRow {
            store_id,
            sku,
            hour_start,
            currency,
            d,
        })
        .collect();
    sales.sort_unstable_by(|a, b| {
        (a.store_id, a.sku, a.hour_start, a.currency).cmp(&(
            b.store_id,
            b.sku,
            b.hour_start,
            b.currency,
        ))
    });
    let mut reservations: Vec<_> = b.reservations.into_values().collect();
    reservations.sort_unstable_by(|a, b| {
        (a.store_id, a.reservation_id).cmp(&(b.store_id, b.reservation_id))
    });
    let mut sync: Vec<_> = b.sync.into_values().collect();
    sync.sort_unstable_by(|a, b| a.store_id.cmp(b.store_id));
    let mut days: Vec<_> = b
        .days
        .into_iter()
        .map(|((store_id, business_date), d)| DayRow {
            store_id,
            business_date,
            d,
        })
        .collect();
    days.sort_unstable_by(|a, b| (a.store_id, a.business_date).cmp(&(b.store_id, b.business_date)));
    Ok(Delta {
        movements: b.movements,
        stock,
        sales,
        reservations,
        sync,
        days,
    })
}

/// Folds one event into the batch's deltas (every sum checked; on overflow the batch's deltas are
/// discarded, so a half-folded event never reaches a table).
fn fold<'a>(
    b: &mut Builder<'a>,
    env: &'a Envelope,
    params: &ProjectionParams,
) -> Result<(), &'static str> {
    b.lines_of_event.clear();
    let ev = &env.event;
    let store = ev.store_id();
    let hour = ev.occurred_at().div_euclid(HOUR_MS) * HOUR_MS;
    let mut day = DayDelta {
        events: 1,
        ..DayDelta::default()
    };
    match ev {
        DeviceEvent::OrderCreated(o) => {
            day.orders = 1;
            for l in &o.lines {
                let qty = i64::from(l.qty);
                b.movement(env, i64::from(l.line_no), &l.sku, "SALE", Some(-qty), None)?;
                let gross = l.unit_price.amount_minor.checked_mul(qty).ok_or("gross")?;
                let disc = l
                    .discounts
                    .iter()
                    .try_fold(0i64, |a, d| sum(a, d.amount.amount_minor, "discounts"))?;
                let tax = l.tax.amount_minor;
                let net = gross
                    .checked_sub(disc)
                    .and_then(|x| x.checked_add(tax))
                    .ok_or("net")?;
                let s = b.sale(store, &l.sku, hour, &l.unit_price.currency);
                s.qty_sold = sum(s.qty_sold, qty, "qty_sold")?;
                s.gross = sum(s.gross, gross, "gross")?;
                s.discounts = sum(s.discounts, disc, "discounts")?;
                s.tax = sum(s.tax, tax, "tax")?;
                s.net = sum(s.net, net, "net")?;
                s.sale_lines += 1;
            }
        }
        DeviceEvent::OrderRefunded(r) => {
            day.refunds = 1;
            for l in &r.lines {
                let qty = i64::from(l.qty);
                if l.restock {
                    b.movement(env, i64::from(l.line_no), &l.sku, "RETURN", Some(qty), None)?;
                }
                let s = b.sale(store, &l.sku, hour, &l.amount.currency);
                s.qty_returned = sum(s.qty_returned, qty, "qty_returned")?;
                s.refunded = sum(s.refunded, l.amount.amount_minor, "refunded")?;
                s.refunded_tax = sum(s.refunded_tax, l.tax.amount_minor, "refunded_tax")?;
                s.refund_lines += 1;
            }
        }
        DeviceEvent::InventoryAdjusted(a) => {
            day.adjustments = 1;
            let (name, sign) = adjustment_movement(a.kind);
            for (i, l) in a.lines.iter().enumerate() {
                let line_no = i as i64 + 1;
                let q = i64::from(l.quantity);
                if a.kind == AdjustmentKind::Count {
                    match l.expected_on_hand {
                        Some(exp) => b.movement(
                            env,
                            line_no,
                            &l.sku,
                            "COUNT_VARIANCE",
                            Some(q - i64::from(exp)),
                            Some(q),
                        )?,
                        None => b.movement(env, line_no, &l.sku, "COUNT_SET", None, Some(q))?,
                    }
                } else {
                    b.movement(env, line_no, &l.sku, name, Some(sign * q), None)?;
                }
            }
        }
        DeviceEvent::StockReservationRequested(r) => b.reservation(ReservationRow {
            store_id: store,
            reservation_id: &r.reservation_id,
            sku: &r.sku,
            requested_qty: Some(i64::from(r.qty)),
            granted_qty: None,
            released_qty: None,
            requested_at: Some(r.occurred_at),
            granted_at: None,
            granted_by: None,
            expires_at: Some(r.expires_at),
            released_at: None,
            release_reason: None,
            order_ref: r.order_ref.as_deref(),
        }),
        DeviceEvent::StockReservationGranted(r) => b.reservation(ReservationRow {
            store_id: store,
            reservation_id: &r.reservation_id,
            sku: &r.sku,
            requested_qty: None,
            granted_qty: Some(i64::from(r.qty)),
            released_qty: None,
            requested_at: None,
            granted_at: Some(r.occurred_at),
            granted_by: Some(&r.granted_by),
            expires_at: Some(r.expires_at),
            released_at: None,
            release_reason: None,
            order_ref: None,
        }),
        DeviceEvent::StockReservationReleased(r) => b.reservation(ReservationRow {
            store_id: store,
            reservation_id: &r.reservation_id,
            sku: &r.sku,
            requested_qty: None,
            granted_qty: None,
            released_qty: Some(i64::from(r.qty)),
            requested_at: None,
            granted_at: None,
            granted_by: None,
            expires_at: None,
            released_at: Some(r.occurred_at),
            release_reason: Some(release_reason(r.reason)),
            order_ref: None,
        }),
        // Counted in the sync status only: loyalty, day close, and kinds that do not belong on
        // this topic (price lists, device health) move no stock and no sales.
        DeviceEvent::LoyaltyRedeemed(_)
        | DeviceEvent::StoreDayClosed(_)
        | DeviceEvent::PriceListApproved(_)
        | DeviceEvent::DeviceHealth(_) => {}
    }

    let lag = env.record_ts.checked_sub(ev.occurred_at()).ok_or("lag")?;
    let offline = i64::from(lag > params.offline_threshold_ms);
    day.offline_events = offline;
    let bdate = business_date(ev);
    let d = b.days.entry((store, bdate)).or_default();
    d.events += day.events;
    d.offline_events += day.offline_events;
    d.orders += day.orders;
    d.refunds += day.refunds;
    d.adjustments += day.adjustments;
    b.sync
        .entry(store)
        .and_modify(|s| {
            s.last_event_at = s.last_event_at.max(ev.occurred_at());
            s.last_seen_at = s.last_seen_at.max(env.record_ts);
            s.last_lag_ms = lag;
            s.max_lag_ms = s.max_lag_ms.max(lag);
            s.last_business_date = s.last_business_date.max(bdate);
            s.events += 1;
            s.offline_events += offline;
            s.last_event_id = ev.event_id();
        })
        .or_insert(SyncRow {
            store_id: store,
            last_event_at: ev.occurred_at(),
            last_seen_at: env.record_ts,
            last_lag_ms: lag,
            max_lag_ms: lag,
            last_business_date: bdate,
            events: 1,
            offline_events: offline,
            last_event_id: ev.event_id(),
        });
    Ok(())
}

#[cfg(test)]
mod tests;
