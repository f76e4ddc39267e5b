//! The Rust side of the event contracts: one struct per Avro record in `schemas/avro/`, the shared
//! event header, money, and `DeviceEvent` (every event a store device or the cloud emits about a store).
//! Pure data and validation; no I/O, no delivery guarantee.
//!
//! Field order and names match the `.avsc` files exactly (checked by `tests/schema_conformance.rs`).

use serde::{Deserialize, Serialize};

/// An amount of money: integer minor units of an ISO 4217 currency. Never a float.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    pub amount_minor: i64,
    pub currency: String,
}

impl Money {
    pub fn new(amount_minor: i64, currency: &str) -> Self {
        Money {
            amount_minor,
            currency: currency.to_string(),
        }
    }

    pub fn zero(currency: &str) -> Self {
        Money::new(0, currency)
    }

    /// Checked addition; `None` on currency mismatch or overflow.
    pub fn checked_add(&self, other: &Money) -> Option<Money> {
        if self.currency != other.currency {
            return None;
        }
        Some(Money::new(
            self.amount_minor.checked_add(other.amount_minor)?,
            &self.currency,
        ))
    }

    /// Checked subtraction; `None` on currency mismatch or overflow.
    pub fn checked_sub(&self, other: &Money) -> Option<Money> {
        if self.currency != other.currency {
            return None;
        }
        Some(Money::new(
            self.amount_minor.checked_sub(other.amount_minor)?,
            &self.currency,
        ))
    }

    /// The ISO 4217 currency, if the code is a known one.
    pub fn iso_currency(&self) -> Option<iso_currency::Currency> {
        iso_currency::Currency::from_code(&self.currency)
    }

    /// Decimal text in major units (e.g. `12.99`), using the currency's own exponent.
    /// Exact: integer arithmetic only.
    pub fn to_decimal_string(&self) -> String {
        let exp = self.iso_currency().and_then(|c| c.exponent()).unwrap_or(2) as u32;
        let sign = if self.amount_minor < 0 { "-" } else { "" };
        let abs = self.amount_minor.unsigned_abs();
        if exp == 0 {
            return format!("{sign}{abs}");
        }
        let scale = 10u64.pow(exp);
        format!(
            "{sign}{}.{:0width$}",
            abs / scale,
            abs % scale,
            width = exp as usize
        )
    }
}

/// The identity and ordering fields every store event carries, in this order, first in the record.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Header {
    pub event_id: String,
    pub device_id: String,
    pub store_id: String,
    pub seq: i64,
    pub occurred_at: i64,
    pub schema_version: i32,
}

macro_rules! header_accessors {
    ($($ty:ident),* $(,)?) => {$(
        impl $ty {
            pub fn header(&self) -> Header {
                Header {
                    event_id: self.event_id.clone(),
                    device_id: self.device_id.clone(),
                    store_id: self.store_id.clone(),
                    seq: self.seq,
                    occurred_at: self.occurred_at,
                    schema_version: self.schema_version,
                }
            }
        }
    )*};
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TenderMethod {
    Cash,
    Card,
    Mobile,
    Voucher,
    LoyaltyPoints,
    StoreCredit,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Tender {
    pub method: TenderMethod,
    pub amount: Money,
    #[serde(default)]
    pub reference: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Discount {
    pub code: String,
    pub amount: Money,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OrderLine {
    pub line_no: i32,
    pub sku: String,
    pub qty: i32,
    pub unit_price: Money,
    pub discounts: Vec<Discount>,
    pub tax: Money,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OrderTotals {
    pub gross: Money,
    pub discounts: Money,
    pub tax: Money,
    pub net: Money,
}

/// A sale. The Rust type is the latest schema version (v2); v1 data reads with `loyalty_member_id = None`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OrderCreated {
    pub event_id: String,
    pub device_id: String,
    pub store_id: String,
    pub seq: i64,
    pub occurred_at: i64,
    pub schema_version: i32,
    pub order_id: String,
    pub business_date: i32,
    pub lines: Vec<OrderLine>,
    pub tenders: Vec<Tender>,
    pub totals: OrderTotals,
    /// v2 only.
    #[serde(default)]
    pub loyalty_member_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RefundLine {
    pub line_no: i32,
    pub sku: String,
    pub qty: i32,
    pub amount: Money,
    pub tax: Money,
    pub restock: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OrderRefunded {
    pub event_id: String,
    pub device_id: String,
    pub store_id: String,
    pub seq: i64,
    pub occurred_at: i64,
    pub schema_version: i32,
    pub refund_id: String,
    pub order_id: String,
    pub business_date: i32,
    pub lines: Vec<RefundLine>,
    pub tenders: Vec<Tender>,
    pub total: Money,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AdjustmentKind {
    Receipt,
    Count,
    Shrink,
    TransferIn,
    TransferOut,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AdjustmentLine {
    pub sku: String,
    pub quantity: i32,
    #[serde(default)]
    pub expected_on_hand: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InventoryAdjusted {
    pub event_id: String,
    pub device_id: String,
    pub store_id: String,
    pub seq: i64,
    pub occurred_at: i64,
    pub schema_version: i32,
    pub adjustment_id: String,
    pub kind: AdjustmentKind,
    pub lines: Vec<AdjustmentLine>,
    #[serde(default)]
    pub reference: Option<String>,
    #[serde(default)]
    pub counterparty_store_id: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StockReservationRequested {
    pub event_id: String,
    pub device_id: String,
    pub store_id: String,
    pub seq: i64,
    pub occurred_at: i64,
    pub schema_version: i32,
    pub reservation_id: String,
    pub sku: String,
    pub qty: i32,
    #[serde(default)]
    pub order_ref: Option<String>,
    pub expires_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StockReservationGranted {
    pub event_id: String,
    pub device_id: String,
    pub store_id: String,
    pub seq: i64,
    pub occurred_at: i64,
    pub schema_version: i32,
    pub reservation_id: String,
    pub sku: String,
    pub qty: i32,
    pub granted_by: String,
    pub expires_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReleaseReason {
    Fulfilled,
    Cancelled,
    Expired,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StockReservationReleased {
    pub event_id: String,
    pub device_id: String,
    pub store_id: String,
    pub seq: i64,
    pub occurred_at: i64,
    pub schema_version: i32,
    pub reservation_id: String,
    pub sku: String,
    pub qty: i32,
    pub reason: ReleaseReason,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PriceItem {
    pub sku: String,
    pub price: Money,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PriceListApproved {
    pub event_id: String,
    pub device_id: String,
    pub store_id: String,
    pub seq: i64,
    pub occurred_at: i64,
    pub schema_version: i32,
    pub price_list_id: String,
    pub effective_from: i64,
    pub approved_by: String,
    pub items: Vec<PriceItem>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LoyaltyRedeemed {
    pub event_id: String,
    pub device_id: String,
    pub store_id: String,
    pub seq: i64,
    pub occurred_at: i64,
    pub schema_version: i32,
    pub redemption_id: String,
    pub member_id: String,
    pub points: i64,
    pub reward_code: String,
    pub value: Money,
    #[serde(default)]
    pub order_id: Option<String>,
    pub business_date: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeviceStatus {
    Ok,
    Degraded,
    OfflineBuffering,
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DeviceHealth {
    pub event_id: String,
    pub device_id: String,
    pub store_id: String,
    pub seq: i64,
    pub occurred_at: i64,
    pub schema_version: i32,
    pub status: DeviceStatus,
    pub app_version: String,
    pub uptime_s: i64,
    pub outbox_depth: i64,
    #[serde(default)]
    pub battery_pct: Option<i32>,
    #[serde(default)]
    pub last_sync_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TenderTotal {
    pub method: TenderMethod,
    pub amount: Money,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StoreDayClosed {
    pub event_id: String,
    pub device_id: String,
    pub store_id: String,
    pub seq: i64,
    pub occurred_at: i64,
    pub schema_version: i32,
    pub business_date: i32,
    pub order_count: i32,
    pub refund_count: i32,
    pub gross: Money,
    pub discounts: Money,
    pub tax: Money,
    pub net: Money,
    pub refunds: Money,
    pub tender_totals: Vec<TenderTotal>,
    pub first_seq: i64,
    pub last_seq: i64,
}

header_accessors!(
    OrderCreated,
    OrderRefunded,
    InventoryAdjusted,
    StockReservationRequested,
    StockReservationGranted,
    StockReservationReleased,
    PriceListApproved,
    LoyaltyRedeemed,
    DeviceHealth,
    StoreDayClosed,
);

// ---------------------------------------------------------------------------------------------
// Pipeline outputs (namespace com.tillstream.pipeline): no device header.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConflictKind {
    IdentityCollision,
    Oversold,
    NegativeStock,
    PriceMismatch,
    DoubleRedemption,
    DayCloseMismatch,
    Other,
    /// v2: a sale took stock a granted reservation held for another order.
    ReservationBreach,
    /// v2: two different events carry the same order, refund or redemption number in one store.
    DuplicateBusinessKey,
    /// v2: a COUNT's expected on-hand differs from the event-time on-hand.
    StaleCount,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictDetected {
    pub conflict_id: String,
    pub kind: ConflictKind,
    pub severity: Severity,
    pub store_id: String,
    #[serde(default)]
    pub sku: Option<String>,
    pub event_ids: Vec<String>,
    pub detail: std::collections::BTreeMap<String, String>,
    pub detected_at: i64,
    pub detector: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictResolved {
    pub conflict_id: String,
    pub store_id: String,
    pub rule: String,
    pub resolution: String,
    pub compensating_event_ids: Vec<String>,
    pub resolved_at: i64,
    pub resolved_by: String,
}

/// What a [`Compensation`] does (see `schemas/avro/compensation/v1.avsc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CompensationKind {
    Backorder,
    Substitute,
    Void,
    PriceAdjustment,
    PointsClawback,
    Other,
}

/// A compensating action for a conflict (topic `tillstream.compensations`, keyed by store).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compensation {
    pub compensation_id: String,
    pub conflict_id: String,
    pub kind: CompensationKind,
    pub store_id: String,
    #[serde(default)]
    pub sku: Option<String>,
    /// Units, or points for a clawback; negative in a reversal.
    pub qty: i64,
    #[serde(default)]
    pub money: Option<Money>,
    pub evidence_event_ids: Vec<String>,
    pub reason: String,
    /// For a reversal: the compensation it undoes.
    #[serde(default)]
    pub reverses: Option<String>,
    pub effective_at: i64,
    pub issued_by: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum GapStatus {
    Opened,
    PartiallyFilled,
    Filled,
    DeviceReset,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequenceGap {
    pub gap_id: String,
    pub device_id: String,
    pub store_id: String,
    pub from_seq: i64,
    pub to_seq: i64,
    pub status: GapStatus,
    pub still_missing: i64,
    pub observed_at: i64,
}

/// A seq range, both ends inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SeqRange {
    pub from_seq: i64,
    pub to_seq: i64,
}

/// End-to-end sync receipt for one device (see `schemas/avro/device_receipt/v1.avsc`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceReceipt {
    pub device_id: String,
    pub store_id: String,
    /// The cloud's sequence epoch for the device (a numbering restart starts a new one).
    pub epoch: i32,
    /// `occurred_at` of the epoch's first event (device clock).
    pub epoch_started_at: i64,
    /// Lowest seq accounted in the epoch.
    pub from_seq: i64,
    /// Highest seq the log holds.
    pub acked_through_seq: i64,
    /// Ranges inside `from_seq..=acked_through_seq` the log does not hold, ascending.
    pub missing: Vec<SeqRange>,
    pub issued_at: i64,
}

impl DeviceReceipt {
    /// Whether the log holds `seq` of this epoch (the device may forget it).
    pub fn covers(&self, seq: i64) -> bool {
        seq >= self.from_seq
            && seq <= self.acked_through_seq
            && !self
                .missing
                .iter()
                .any(|r| seq >= r.from_seq && seq <= r.to_seq)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SourceKind {
    Mqtt,
    Kafka,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub dead_letter_id: String,
    pub service: String,
    pub reason: String,
    pub detail: String,
    pub source_kind: SourceKind,
    pub source_topic: String,
    #[serde(default)]
    pub source_partition: Option<i32>,
    #[serde(default)]
    pub source_offset: Option<i64>,
    #[serde(default, with = "apache_avro::serde::bytes_opt")]
    pub key: Option<Vec<u8>>,
    #[serde(with = "apache_avro::serde::bytes")]
    pub payload: Vec<u8>,
    pub headers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub store_id: Option<String>,
    #[serde(default)]
    pub device_id: Option<String>,
    #[serde(default)]
    pub event_id: Option<String>,
    pub failed_at: i64,
}
