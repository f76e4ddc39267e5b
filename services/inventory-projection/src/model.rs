//! The projection as a pure function: a batch of new (not yet applied) events in stream order in,
//! row deltas for every table out. No I/O, no clock: the same events always give the same deltas.
//!
//! Guarantee: applying the deltas of a stream split into batches at any boundaries gives the same
//! tables as applying the whole stream at once. Every delta composes associatively with the row it
//! lands on (sums, maxima, "latest in stream order", first-wins coalesce, and for stock an
//! add-or-set operation), and `db.rs` mirrors each composition rule in its upsert SQL.

use rustc_hash::{FxHashMap as HashMap, FxHashSet};

use tillstream_contracts::{AdjustmentKind, DeviceEvent, ReleaseReason};

/// One decoded event with its Kafka coordinates.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub partition: i32,
    pub offset: i64,
    /// Kafka record timestamp (ms); the event's `occurred_at` when the record has none.
    pub record_ts: i64,
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
    pub event_id: &'a str,
    pub store_id: &'a str,
    pub event_type: &'static str,
    pub partition: i64,
    pub offset: i64,
}

/// Row of the stock movement ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovementRow<'a> {
    pub event_id: &'a str,
    pub line_no: i64,
    pub store_id: &'a str,
    pub sku: &'a str,
    pub movement: &'static str,
    /// `None` for COUNT_SET (a count that overwrites on-hand).
    pub qty_delta: Option<i64>,
    pub counted_qty: Option<i64>,
    pub occurred_at: i64,
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
    pub add: i64,
    pub moves: i64,
    pub last_event_id: &'a str,
    pub last_occurred_at: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SalesDelta {
    pub qty_sold: i64,
    pub gross: i64,
    pub discounts: i64,
    pub tax: i64,
    pub net: i64,
    pub qty_returned: i64,
    pub refunded: i64,
    pub refunded_tax: i64,
    pub sale_lines: i64,
    pub refund_lines: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SalesRow<'a> {
    pub store_id: &'a str,
    pub sku: &'a str,
    pub hour_start: i64,
    pub currency: &'a str,
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRow<'a> {
    pub store_id: &'a str,
    pub last_event_at: i64,
    pub last_seen_at: i64,
    pub last_lag_ms: i64,
    pub max_lag_ms: i64,
    pub last_business_date: i64,
    pub events: i64,
    pub offline_events: i64,
    pub last_event_id: &'a str,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DayDelta {
    pub events: i64,
    pub offline_events: i64,
    pub orders: i64,
    pub refunds: i64,
    pub adjustments: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayRow<'a> {
    pub store_id: &'a str,
    pub business_date: i64,
    pub d: DayDelta,
}

/// Everything a batch of new events changes. Rows are sorted by key (deterministic statements, and
/// concurrent writers lock rows in the same order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delta<'a> {
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

struct Builder<'a> {
    movements: Vec<MovementRow<'a>>,
    stock: HashMap<(&'a str, &'a str), StockDelta<'a>>,
    sales: HashMap<(&'a str, &'a str, i64, &'a str), SalesDelta>,
    reservations: HashMap<(&'a str, &'a str), ReservationRow<'a>>,
    sync: HashMap<&'a str, SyncRow<'a>>,
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
    ) {
        let ev = &env.event;
        // A malformed event repeating a line number moves stock once, like the ledger row.
        if self.lines_of_event.contains(&line_no) {
            return;
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
            (Some(d), _) => s.add = s.add.saturating_add(d),
            (None, Some(c)) => {
                s.set = Some(c);
                s.add = 0;
            }
            (None, None) => {}
        }
        s.moves += 1;
        s.last_event_id = ev.event_id();
        s.last_occurred_at = ev.occurred_at();
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

/// Projects a batch of new events (already filtered by the gate, in stream order) into row deltas.
pub fn project<'a>(batch: &[&'a Envelope], params: &ProjectionParams) -> Delta<'a> {
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
                    b.movement(env, i64::from(l.line_no), &l.sku, "SALE", Some(-qty), None);
                    let gross = l.unit_price.amount_minor.saturating_mul(qty);
                    let disc: i64 = l.discounts.iter().map(|d| d.amount.amount_minor).sum();
                    let tax = l.tax.amount_minor;
                    let s = b.sale(store, &l.sku, hour, &l.unit_price.currency);
                    s.qty_sold += qty;
                    s.gross += gross;
                    s.discounts += disc;
                    s.tax += tax;
                    s.net += gross - disc + tax;
                    s.sale_lines += 1;
                }
            }
            DeviceEvent::OrderRefunded(r) => {
                day.refunds = 1;
                for l in &r.lines {
                    let qty = i64::from(l.qty);
                    if l.restock {
                        b.movement(env, i64::from(l.line_no), &l.sku, "RETURN", Some(qty), None);
                    }
                    let s = b.sale(store, &l.sku, hour, &l.amount.currency);
                    s.qty_returned += qty;
                    s.refunded += l.amount.amount_minor;
                    s.refunded_tax += l.tax.amount_minor;
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
                            ),
                            None => b.movement(env, line_no, &l.sku, "COUNT_SET", None, Some(q)),
                        }
                    } else {
                        b.movement(env, line_no, &l.sku, name, Some(sign * q), None);
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

        let lag = env.record_ts - ev.occurred_at();
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
    Delta {
        movements: b.movements,
        stock,
        sales,
        reservations,
        sync,
        days,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tillstream_contracts::samples;
    use tillstream_contracts::*;

    fn env(event: impl Into<DeviceEvent>, offset: i64, lag: i64) -> Envelope {
        let event = event.into();
        Envelope {
            partition: 0,
            offset,
            record_ts: event.occurred_at() + lag,
            event,
        }
    }

    fn adjust(seq: i64, kind: AdjustmentKind, qty: i32, expected: Option<i32>) -> DeviceEvent {
        let Some(DeviceEvent::InventoryAdjusted(mut a)) =
            samples::sample(EventKind::InventoryAdjusted, "s1", "s1-d1", seq)
        else {
            unreachable!()
        };
        a.kind = kind;
        a.lines = vec![AdjustmentLine {
            sku: "SKU-A".into(),
            quantity: qty,
            expected_on_hand: expected,
        }];
        a.into()
    }

    fn sale(seq: i64, sku: &str, qty: i32) -> DeviceEvent {
        let mut o = samples::order("s1", "s1-d1", seq, 1);
        o.lines[0].sku = sku.into();
        o.lines[0].qty = qty;
        o.into()
    }

    #[test]
    fn sale_moves_stock_down_and_books_sales_in_its_hour() {
        let o = samples::order("s1", "s1-d1", 4, 3);
        let e = env(o.clone(), 10, 5);
        let d = project(&[&e], &ProjectionParams::default());
        assert_eq!(d.movements.len(), 3);
        assert!(
            d.movements
                .iter()
                .zip(&o.lines)
                .all(|(m, l)| m.qty_delta == Some(-i64::from(l.qty)) && m.movement == "SALE")
        );
        let gross: i64 = d.sales.iter().map(|s| s.d.gross).sum();
        let net: i64 = d.sales.iter().map(|s| s.d.net).sum();
        assert_eq!(gross, o.totals.gross.amount_minor);
        assert_eq!(net, o.totals.net.amount_minor);
        assert!(d.sales.iter().all(|s| s.hour_start % HOUR_MS == 0));
        assert!(d.sales.iter().all(|s| s.hour_start <= o.occurred_at));
        assert_eq!(d.sync.len(), 1);
        assert_eq!(d.sync[0].last_lag_ms, 5);
        assert_eq!(d.sync[0].offline_events, 0);
        assert_eq!(d.days[0].d.orders, 1);
    }

    #[test]
    fn refunds_restock_only_when_flagged() {
        let mut r = match samples::sample(EventKind::OrderRefunded, "s1", "s1-d1", 3) {
            Some(DeviceEvent::OrderRefunded(r)) => r,
            _ => unreachable!(),
        };
        r.lines[0].restock = true;
        let mut r2 = r.clone();
        r2.event_id = "other".into();
        r2.lines[0].restock = false;
        let (a, b) = (env(r, 1, 0), env(r2, 2, 0));
        let d = project(&[&a, &b], &ProjectionParams::default());
        assert_eq!(d.movements.len(), 1);
        assert_eq!(d.movements[0].movement, "RETURN");
        assert_eq!(d.movements[0].qty_delta, Some(1));
        assert_eq!(d.sales[0].d.qty_returned, 2);
        assert_eq!(d.sales[0].d.refund_lines, 2);
    }

    #[test]
    fn count_with_expected_is_a_variance_and_blind_count_overwrites() {
        let evs = [
            env(adjust(1, AdjustmentKind::Receipt, 10, None), 1, 0),
            env(sale(2, "SKU-A", 2), 2, 0),
            env(adjust(3, AdjustmentKind::Count, 7, Some(8)), 3, 0),
        ];
        let refs: Vec<_> = evs.iter().collect();
        let d = project(&refs, &ProjectionParams::default());
        let s = d.stock.iter().find(|s| s.sku == "SKU-A").unwrap();
        assert_eq!((s.set, s.add, s.moves), (None, 10 - 2 - 1, 3));
        assert_eq!(d.movements[2].movement, "COUNT_VARIANCE");
        assert_eq!(d.movements[2].counted_qty, Some(7));

        let evs = [
            env(adjust(1, AdjustmentKind::Receipt, 10, None), 1, 0),
            env(adjust(2, AdjustmentKind::Count, 4, None), 2, 0),
            env(adjust(3, AdjustmentKind::Shrink, 1, None), 3, 0),
        ];
        let refs: Vec<_> = evs.iter().collect();
        let d = project(&refs, &ProjectionParams::default());
        let s = &d.stock[0];
        assert_eq!((s.set, s.add, s.moves), (Some(4), -1, 3));
        assert_eq!(s.last_event_id, evs[2].event.event_id());
        assert_eq!(d.movements[1].qty_delta, None);
    }

    #[test]
    fn reservations_merge_across_kinds_and_expire() {
        let mk = |kind, seq| env(samples::sample(kind, "s1", "s1-d1", seq).unwrap(), seq, 0);
        let mut granted = mk(EventKind::StockReservationGranted, 2);
        let mut released = mk(EventKind::StockReservationReleased, 3);
        // Same reservation id for all three.
        for e in [&mut granted, &mut released] {
            match &mut e.event {
                DeviceEvent::StockReservationGranted(g) => g.reservation_id = "res1".into(),
                DeviceEvent::StockReservationReleased(r) => {
                    r.reservation_id = "res1".into();
                    r.reason = ReleaseReason::Expired;
                }
                _ => unreachable!(),
            }
        }
        let requested = mk(EventKind::StockReservationRequested, 1);
        let d = project(&[&requested, &granted], &ProjectionParams::default());
        assert_eq!(d.reservations.len(), 1);
        assert_eq!(d.reservations[0].status(), "GRANTED");
        assert_eq!(d.reservations[0].requested_qty, Some(1));
        assert_eq!(
            d.reservations[0].expires_at,
            Some(granted.event.occurred_at() + 900_000)
        );
        let d = project(
            &[&requested, &granted, &released],
            &ProjectionParams::default(),
        );
        assert_eq!(d.reservations[0].status(), "EXPIRED");
    }

    #[test]
    fn offline_events_and_lag_follow_the_threshold() {
        let p = ProjectionParams {
            offline_threshold_ms: 1000,
        };
        let a = env(sale(1, "X", 1), 1, 5000);
        let b = env(sale(2, "X", 1), 2, 10);
        let d = project(&[&a, &b], &p);
        let s = &d.sync[0];
        assert_eq!((s.events, s.offline_events), (2, 1));
        assert_eq!((s.last_lag_ms, s.max_lag_ms), (10, 5000));
        assert_eq!(s.last_seen_at, b.record_ts.max(a.record_ts));
    }

    #[test]
    fn gate_rows_keep_the_first_copy_of_an_event_id() {
        let a = env(sale(1, "X", 1), 1, 0);
        let mut b = a.clone();
        b.offset = 9;
        let batch = vec![a, b];
        let rows: Vec<i64> = gate_rows(&batch).iter().map(|r| r.offset).collect();
        assert_eq!(rows, vec![1]);
    }
}
