//! Turns one MQTT message (topic + payload bytes) into a decision: forward the parsed event to its
//! Kafka topic, reject it with a machine-readable reason (it becomes a dead letter), or ignore it
//! (our own downlink echo). Size, route, JSON shape, schema version, identity (topic store = payload
//! store = the device's registered store) and values (UUID, seq, ISO 4217, quantities, totals) are
//! checked here. Pure; no I/O, no delivery guarantee.
//!
//! Why one file (~630 lines): one check after another in the order a message meets them, each with
//! the reason it dead-letters; about half the file is the table of reasons and their unit tests'
//! helpers.

use tillstream_contracts::{DeviceEvent, EventKind, Money};

use crate::bounds::first_out_of_bounds;
use crate::config::LimitsConfig;
use crate::fleet::SharedFleet;
use crate::routes::{Routes, filter_matches};

/// Why an input was dead-lettered (the `reason` of the record and the metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    PayloadTooLarge,
    UnknownTopic,
    BadJson,
    MissingField,
    WrongType,
    UnknownSchemaVersion,
    StoreMismatch,
    DeviceMismatch,
    UnknownDevice,
    InvalidValue,
    /// A value beyond the configured input bounds (`limits.*`).
    OutOfBounds,
    /// Kafka refused the converted record for good (e.g. larger than the broker accepts).
    KafkaRejected,
}

impl Reason {
    pub const ALL: [Reason; 12] = [
        Reason::PayloadTooLarge,
        Reason::UnknownTopic,
        Reason::BadJson,
        Reason::MissingField,
        Reason::WrongType,
        Reason::UnknownSchemaVersion,
        Reason::StoreMismatch,
        Reason::DeviceMismatch,
        Reason::UnknownDevice,
        Reason::InvalidValue,
        Reason::OutOfBounds,
        Reason::KafkaRejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::PayloadTooLarge => "payload_too_large",
            Reason::UnknownTopic => "unknown_topic",
            Reason::BadJson => "bad_json",
            Reason::MissingField => "missing_field",
            Reason::WrongType => "wrong_type",
            Reason::UnknownSchemaVersion => "unknown_schema_version",
            Reason::StoreMismatch => "store_mismatch",
            Reason::DeviceMismatch => "device_mismatch",
            Reason::UnknownDevice => "unknown_device",
            Reason::InvalidValue => "invalid_value",
            Reason::OutOfBounds => "out_of_bounds",
            Reason::KafkaRejected => "kafka_rejected",
        }
    }
}

/// A rejected input, with what could be learnt about where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: Reason,
    pub detail: String,
    pub store_id: Option<String>,
    pub device_id: Option<String>,
    pub event_id: Option<String>,
}

impl Rejection {
    fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Rejection {
            reason,
            detail: detail.into(),
            store_id: None,
            device_id: None,
            event_id: None,
        }
    }

    fn about(mut self, store: Option<&str>, device: Option<&str>, event: Option<&str>) -> Self {
        self.store_id = self.store_id.or(store.map(str::to_string));
        self.device_id = self.device_id.or(device.map(str::to_string));
        self.event_id = self.event_id.or(event.map(str::to_string));
        self
    }
}

/// The decision for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Forward {
        kind: EventKind,
        kafka_topic: std::sync::Arc<str>,
        event: Box<DeviceEvent>,
        /// Taken on a v1 store-level topic (no device level; migration only).
        store_level_topic: bool,
    },
    Reject(Box<Rejection>),
    /// Not input (matches an ignore filter): ack and skip.
    Ignore,
}

/// Everything `classify` needs; built once at start.
#[derive(Debug, Clone)]
pub struct Classifier {
    pub routes: Routes,
    /// Which store each device is registered to (reloaded while the bridge runs).
    pub fleet: SharedFleet,
    pub ignore: Vec<String>,
    /// Payload size and input bounds.
    pub limits: LimitsConfig,
}

impl Classifier {
    /// Decides what to do with one MQTT message.
    pub fn classify(&self, topic: &str, payload: &[u8]) -> Verdict {
        if self.ignore.iter().any(|f| filter_matches(f, topic)) {
            return Verdict::Ignore;
        }
        match self.check(topic, payload) {
            Ok((kind, kafka_topic, event, store_level_topic)) => Verdict::Forward {
                kind,
                kafka_topic,
                event: Box::new(event),
                store_level_topic,
            },
            Err(r) => Verdict::Reject(Box::new(r)),
        }
    }

    fn check(
        &self,
        topic: &str,
        payload: &[u8],
    ) -> Result<(EventKind, std::sync::Arc<str>, DeviceEvent, bool), Rejection> {
        let route = self.routes.matches(topic);
        let (t_store, t_device) = route
            .as_ref()
            .map(|m| (m.store, m.device))
            .unwrap_or_default();
        if payload.len() > self.limits.max_payload_bytes {
            return Err(Rejection::new(
                Reason::PayloadTooLarge,
                format!(
                    "{} bytes > limit {}",
                    payload.len(),
                    self.limits.max_payload_bytes
                ),
            )
            .about(t_store, t_device, None));
        }
        let Some(m) = route else {
            return Err(Rejection::new(
                Reason::UnknownTopic,
                format!("no route for topic {topic:?}"),
            ));
        };
        let event = match DeviceEvent::from_json(m.kind, payload) {
            Ok(e) => e,
            Err(e) => {
                return Err(json_rejection(m.kind, payload, &e).about(t_store, t_device, None));
            }
        };
        let (store, device, eid) = (event.store_id(), event.device_id(), event.event_id());
        let about = |r: Rejection| r.about(Some(store), Some(device), Some(eid));
        let version = event.schema_version();
        if !u32::try_from(version).is_ok_and(|v| m.kind.versions().contains(&v)) {
            return Err(about(Rejection::new(
                Reason::UnknownSchemaVersion,
                format!(
                    "{} schema_version {version}; shipped: {:?}",
                    m.kind,
                    m.kind.versions()
                ),
            )));
        }
        if let Some(ts) = t_store
            && ts != store
        {
            return Err(about(Rejection::new(
                Reason::StoreMismatch,
                format!("topic store {ts:?} != payload store_id {store:?}"),
            )));
        }
        if let Some(td) = t_device
            && td != device
        {
            return Err(about(Rejection::new(
                Reason::DeviceMismatch,
                format!("topic device {td:?} != payload device_id {device:?}"),
            )));
        }
        match self.fleet.current().store_of(device) {
            None => {
                return Err(about(Rejection::new(
                    Reason::UnknownDevice,
                    format!("device {device:?} is not in the fleet registry"),
                )));
            }
            Some(registered) if registered != store => {
                return Err(about(Rejection::new(
                    Reason::StoreMismatch,
                    format!(
                        "device {device:?} is registered to store {registered:?}, payload says {store:?}"
                    ),
                )));
            }
            Some(_) => {}
        }
        // Before any arithmetic on the event's values: bounded values cannot overflow its sums.
        if let Some(detail) = first_out_of_bounds(&event, &self.limits) {
            return Err(about(Rejection::new(Reason::OutOfBounds, detail)));
        }
        if let Err(detail) = validate_values(&event) {
            return Err(about(Rejection::new(Reason::InvalidValue, detail)));
        }
        Ok((m.kind, m.kafka_topic.clone(), event, m.is_store_level()))
    }
}

/// Classifies a serde_json failure; an unshipped `schema_version` wins over shape errors (a newer
/// app version's payload is "unknown version", not "missing field").
fn json_rejection(kind: EventKind, payload: &[u8], e: &serde_json::Error) -> Rejection {
    use serde_json::error::Category;
    if e.classify() == Category::Data
        && let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload)
        && let Some(version) = v.get("schema_version").and_then(serde_json::Value::as_i64)
        && !u32::try_from(version).is_ok_and(|v| kind.versions().contains(&v))
    {
        return Rejection::new(
            Reason::UnknownSchemaVersion,
            format!(
                "{kind} schema_version {version}; shipped: {:?}",
                kind.versions()
            ),
        );
    }
    let msg = e.to_string();
    let reason = match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => Reason::BadJson,
        Category::Data if msg.starts_with("missing field") => Reason::MissingField,
        Category::Data if msg.starts_with("unknown variant") => Reason::InvalidValue,
        Category::Data => Reason::WrongType,
    };
    Rejection::new(reason, format!("{kind}: {msg}"))
}

fn money_ok(m: &Money, what: &str, currency: &mut Option<String>) -> Result<(), String> {
    if m.iso_currency().is_none() {
        return Err(format!(
            "{what}: {:?} is not an ISO 4217 currency",
            m.currency
        ));
    }
    if m.amount_minor < 0 {
        return Err(format!("{what}: negative amount {}", m.amount_minor));
    }
    match currency {
        Some(c) if *c != m.currency => Err(format!(
            "{what}: currency {} differs from {c} elsewhere in the event",
            m.currency
        )),
        Some(_) => Ok(()),
        None => {
            *currency = Some(m.currency.clone());
            Ok(())
        }
    }
}

fn positive(v: i64, what: &str) -> Result<(), String> {
    if v > 0 {
        Ok(())
    } else {
        Err(format!("{what} must be > 0, got {v}"))
    }
}

fn equal(what: &str, got: i64, want: i64) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what} is {got}, expected {want}"))
    }
}

fn non_empty(s: &str, what: &str) -> Result<(), String> {
    if s.trim().is_empty() {
        Err(format!("{what} is empty"))
    } else {
        Ok(())
    }
}

/// Value rules of the JSON contract (beyond what the types enforce).
pub fn validate_values(event: &DeviceEvent) -> Result<(), String> {
    let h = event.header();
    if uuid::Uuid::try_parse(&h.event_id).is_err() {
        return Err(format!("event_id {:?} is not a UUID", h.event_id));
    }
    positive(h.seq, "seq")?;
    positive(h.occurred_at, "occurred_at")?;
    non_empty(&h.device_id, "device_id")?;
    non_empty(&h.store_id, "store_id")?;
    let mut cur = None;
    let c = &mut cur;
    match event {
        DeviceEvent::OrderCreated(o) => {
            non_empty(&o.order_id, "order_id")?;
            if o.lines.is_empty() {
                return Err("an order needs at least one line".into());
            }
            let (mut gross, mut disc, mut tax) = (0i64, 0i64, 0i64);
            for l in &o.lines {
                let at = format!("line {}", l.line_no);
                positive(l.qty.into(), &format!("{at} qty"))?;
                non_empty(&l.sku, &format!("{at} sku"))?;
                money_ok(&l.unit_price, &format!("{at} unit_price"), c)?;
                money_ok(&l.tax, &format!("{at} tax"), c)?;
                gross = l
                    .unit_price
                    .amount_minor
                    .checked_mul(l.qty.into())
                    .and_then(|x| x.checked_add(gross))
                    .ok_or("gross overflows")?;
                tax = tax.checked_add(l.tax.amount_minor).ok_or("tax overflows")?;
                for d in &l.discounts {
                    money_ok(&d.amount, &format!("{at} discount {}", d.code), c)?;
                    disc = disc
                        .checked_add(d.amount.amount_minor)
                        .ok_or("discounts overflow")?;
                }
            }
            let t = &o.totals;
            for (m, w) in [
                (&t.gross, "totals.gross"),
                (&t.discounts, "totals.discounts"),
                (&t.tax, "totals.tax"),
                (&t.net, "totals.net"),
            ] {
                money_ok(m, w, c)?;
            }
            equal("totals.gross", t.gross.amount_minor, gross)?;
            equal("totals.discounts", t.discounts.amount_minor, disc)?;
            equal("totals.tax", t.tax.amount_minor, tax)?;
            equal("totals.net", t.net.amount_minor, gross - disc + tax)?;
            let mut paid = 0i64;
            for tn in &o.tenders {
                money_ok(&tn.amount, "tender", c)?;
                paid = paid
                    .checked_add(tn.amount.amount_minor)
                    .ok_or("tenders overflow")?;
            }
            equal("sum of tenders", paid, t.net.amount_minor)?;
        }
        DeviceEvent::OrderRefunded(r) => {
            non_empty(&r.refund_id, "refund_id")?;
            non_empty(&r.order_id, "order_id")?;
            if r.lines.is_empty() {
                return Err("a refund needs at least one line".into());
            }
            let mut sum = 0i64;
            for l in &r.lines {
                let at = format!("line {}", l.line_no);
                positive(l.qty.into(), &format!("{at} qty"))?;
                money_ok(&l.amount, &format!("{at} amount"), c)?;
                money_ok(&l.tax, &format!("{at} tax"), c)?;
                sum = sum
                    .checked_add(l.amount.amount_minor)
                    .ok_or("total overflows")?;
            }
            money_ok(&r.total, "total", c)?;
            equal("total", r.total.amount_minor, sum)?;
            let mut paid = 0i64;
            for tn in &r.tenders {
                money_ok(&tn.amount, "tender", c)?;
                paid = paid
                    .checked_add(tn.amount.amount_minor)
                    .ok_or("tenders overflow")?;
            }
            equal("sum of tenders", paid, r.total.amount_minor)?;
        }
        DeviceEvent::InventoryAdjusted(a) => {
            non_empty(&a.adjustment_id, "adjustment_id")?;
            if a.lines.is_empty() {
                return Err("an adjustment needs at least one line".into());
            }
            for l in &a.lines {
                non_empty(&l.sku, "line sku")?;
                let count = a.kind == tillstream_contracts::AdjustmentKind::Count;
                if count && l.quantity < 0 {
                    return Err(format!("{}: counted quantity {} < 0", l.sku, l.quantity));
                }
                if !count {
                    positive(l.quantity.into(), &format!("{} quantity", l.sku))?;
                }
            }
        }
        DeviceEvent::StockReservationRequested(r) => {
            non_empty(&r.reservation_id, "reservation_id")?;
            positive(r.qty.into(), "qty")?;
        }
        DeviceEvent::StockReservationGranted(r) => {
            non_empty(&r.reservation_id, "reservation_id")?;
            positive(r.qty.into(), "qty")?;
        }
        DeviceEvent::StockReservationReleased(r) => {
            non_empty(&r.reservation_id, "reservation_id")?;
            positive(r.qty.into(), "qty")?;
        }
        DeviceEvent::LoyaltyRedeemed(l) => {
            positive(l.points, "points")?;
            money_ok(&l.value, "value", c)?;
        }
        DeviceEvent::DeviceHealth(d) => {
            if let Some(b) = d.battery_pct
                && !(0..=100).contains(&b)
            {
                return Err(format!("battery_pct {b} not in 0..=100"));
            }
            if d.uptime_s < 0 || d.outbox_depth < 0 {
                return Err("uptime_s and outbox_depth must be >= 0".into());
            }
        }
        DeviceEvent::StoreDayClosed(d) => {
            for (m, w) in [
                (&d.gross, "gross"),
                (&d.discounts, "discounts"),
                (&d.tax, "tax"),
                (&d.net, "net"),
                (&d.refunds, "refunds"),
            ] {
                money_ok(m, w, c)?;
            }
            for t in &d.tender_totals {
                money_ok(&t.amount, "tender_totals", c)?;
            }
            equal(
                "net",
                d.net.amount_minor,
                d.gross.amount_minor - d.discounts.amount_minor + d.tax.amount_minor,
            )?;
            if d.order_count < 0 || d.refund_count < 0 {
                return Err("counts must be >= 0".into());
            }
            if d.last_seq >= d.seq {
                return Err(format!(
                    "last_seq {} must be < the closing event's seq {}",
                    d.last_seq, d.seq
                ));
            }
        }
        DeviceEvent::PriceListApproved(p) => {
            for i in &p.items {
                money_ok(&i.price, &i.sku, c)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::default_routes;
    use crate::fleet::Fleet;
    use tillstream_contracts::samples;

    fn classifier() -> Classifier {
        Classifier {
            routes: Routes::new(&default_routes()).unwrap(),
            fleet: Fleet::parse("s001-d01,s001\ns002-d01,s002\n")
                .unwrap()
                .into(),
            ignore: vec!["store/+/catalog/#".into()],
            limits: LimitsConfig {
                max_payload_bytes: 4096,
                ..LimitsConfig::default()
            },
        }
    }

    fn json(e: &DeviceEvent) -> Vec<u8> {
        serde_json::to_vec(&e.to_json()).unwrap()
    }

    fn reason(v: Verdict) -> Reason {
        match v {
            Verdict::Reject(r) => r.reason,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn every_sample_kind_is_forwarded_on_its_topic() {
        let c = classifier();
        for r in default_routes() {
            let kind = EventKind::from_full_name(&r.kind).unwrap();
            let e = samples::sample(kind, "s001", "s001-d01", 3).unwrap();
            let topic = r
                .topic
                .replace("{store}", "s001")
                .replace("{device}", "s001-d01");
            match c.classify(&topic, &json(&e)) {
                Verdict::Forward {
                    kind: k,
                    kafka_topic,
                    event,
                    store_level_topic,
                } => {
                    assert!(!store_level_topic);
                    assert_eq!(k, kind);
                    assert_eq!(&*kafka_topic, r.kafka_topic);
                    assert_eq!(*event, e);
                }
                other => panic!("{topic}: {other:?}"),
            }
        }
    }

    #[test]
    fn v1_and_v2_orders_are_both_accepted_and_v3_is_not() {
        let c = classifier();
        let t = "store/s001/s001-d01/pos/order.created";
        let mut o = samples::order("s001", "s001-d01", 3, 2);
        assert!(matches!(
            c.classify(t, &json(&o.clone().into())),
            Verdict::Forward { .. }
        ));
        o.schema_version = 1;
        o.loyalty_member_id = None;
        assert!(matches!(
            c.classify(t, &json(&o.clone().into())),
            Verdict::Forward { .. }
        ));
        o.schema_version = 3;
        assert_eq!(
            reason(c.classify(t, &json(&o.clone().into()))),
            Reason::UnknownSchemaVersion
        );
        // A future version with a field we do not know and one we require missing: still "version".
        let mut v = serde_json::to_value(&o).unwrap();
        v.as_object_mut().unwrap().remove("totals");
        let bytes = serde_json::to_vec(&v).unwrap();
        assert_eq!(reason(c.classify(t, &bytes)), Reason::UnknownSchemaVersion);
    }

    #[test]
    fn bad_inputs_get_their_reason() {
        let c = classifier();
        let t = "store/s001/s001-d01/pos/order.created";
        let good = samples::order("s001", "s001-d01", 3, 2);
        let mut v = serde_json::to_value(&good).unwrap();
        assert_eq!(
            reason(c.classify(t, &[b'x'; 5000])),
            Reason::PayloadTooLarge
        );
        assert_eq!(reason(c.classify(t, b"{not json")), Reason::BadJson);
        assert_eq!(reason(c.classify(t, &[0xff, 0xfe])), Reason::BadJson);
        assert_eq!(reason(c.classify(t, b"")), Reason::BadJson);
        assert_eq!(reason(c.classify(t, b"[1,2]")), Reason::WrongType);
        assert_eq!(
            reason(c.classify("store/s001/s001-d01/pos/order.voided", b"{}")),
            Reason::UnknownTopic
        );
        v.as_object_mut().unwrap().remove("order_id");
        assert_eq!(
            reason(c.classify(t, &serde_json::to_vec(&v).unwrap())),
            Reason::MissingField
        );
        let mut v = serde_json::to_value(&good).unwrap();
        v["seq"] = serde_json::json!("seven");
        assert_eq!(
            reason(c.classify(t, &serde_json::to_vec(&v).unwrap())),
            Reason::WrongType
        );
        let mut v = serde_json::to_value(&good).unwrap();
        v["tenders"][0]["method"] = serde_json::json!("BITCOIN");
        assert_eq!(
            reason(c.classify(t, &serde_json::to_vec(&v).unwrap())),
            Reason::InvalidValue
        );
    }

    #[test]
    fn extreme_amounts_are_dead_lettered_before_any_sum() {
        // The case: an order of 5 * 10^18 minor units whose own totals are consistent
        // (it passed every value rule), then summed with another downstream and wrapped.
        let c = classifier();
        let mut o = samples::order("s001", "s001-d01", 3, 1);
        let huge = 5_000_000_000_000_000_000i64;
        o.lines[0].qty = 1;
        o.lines[0].unit_price.amount_minor = huge;
        o.lines[0].discounts.clear();
        o.lines[0].tax.amount_minor = 0;
        o.totals.gross.amount_minor = huge;
        o.totals.discounts.amount_minor = 0;
        o.totals.tax.amount_minor = 0;
        o.totals.net.amount_minor = huge;
        o.tenders.truncate(1);
        o.tenders[0].amount.amount_minor = huge;
        let e: DeviceEvent = o.into();
        assert_eq!(
            validate_values(&e),
            Ok(()),
            "the values alone are consistent"
        );
        match c.classify("store/s001/s001-d01/pos/order.created", &json(&e)) {
            Verdict::Reject(r) => {
                assert_eq!(r.reason, Reason::OutOfBounds);
                assert!(r.detail.contains("max_amount_minor"), "{}", r.detail);
                assert_eq!(r.event_id.as_deref(), Some(e.event_id()));
            }
            other => panic!("forwarded: {other:?}"),
        }
        // A day close whose net would overflow `gross - discounts + tax` is refused, not a panic.
        let mut d = samples::sample(EventKind::StoreDayClosed, "s001", "s001-d01", 9).unwrap();
        if let DeviceEvent::StoreDayClosed(dc) = &mut d {
            dc.gross.amount_minor = i64::MAX;
            dc.tax.amount_minor = i64::MAX;
        }
        assert_eq!(
            reason(c.classify("store/s001/s001-d01/day/closed", &json(&d))),
            Reason::OutOfBounds
        );
    }

    #[test]
    fn identity_must_agree() {
        let c = classifier();
        let e: DeviceEvent = samples::order("s001", "s001-d01", 3, 2).into();
        // Topic says s002, payload says s001.
        let r = c.classify("store/s002/s001-d01/pos/order.created", &json(&e));
        assert_eq!(reason(r), Reason::StoreMismatch);
        // The topic (the connection's device, bound by the broker's ACL) names s002-d01 and the
        // payload speaks for s001-d01: a device publishing in another device's name.
        let r = c.classify("store/s001/s002-d01/pos/order.created", &json(&e));
        match r {
            Verdict::Reject(r) => {
                assert_eq!(r.reason, Reason::DeviceMismatch);
                assert!(r.detail.contains("s002-d01"), "{}", r.detail);
            }
            other => panic!("{other:?}"),
        }
        // Topic and payload agree on s002, but the device is registered to s001.
        let e2: DeviceEvent = samples::order("s002", "s001-d01", 3, 2).into();
        let r = c.classify("store/s002/s001-d01/pos/order.created", &json(&e2));
        match r {
            Verdict::Reject(r) => {
                assert_eq!(r.reason, Reason::StoreMismatch);
                assert_eq!(r.store_id.as_deref(), Some("s002"));
                assert_eq!(r.device_id.as_deref(), Some("s001-d01"));
                assert!(r.event_id.is_some());
            }
            other => panic!("{other:?}"),
        }
        let e3: DeviceEvent = samples::order("s001", "s001-d99", 3, 2).into();
        let r = c.classify("store/s001/s001-d99/pos/order.created", &json(&e3));
        assert_eq!(reason(r), Reason::UnknownDevice);
        // Health: the topic names the device.
        let h = samples::sample(EventKind::DeviceHealth, "s001", "s001-d01", 2).unwrap();
        let r = c.classify("fleet/s002-d01/health.status", &json(&h));
        assert_eq!(reason(r), Reason::DeviceMismatch);
        let h = samples::sample(EventKind::DeviceHealth, "s002", "s001-d01", 2).unwrap();
        let r = c.classify("fleet/s001-d01/health.status", &json(&h));
        assert_eq!(reason(r), Reason::StoreMismatch);
    }

    #[test]
    fn value_rules() {
        let base = samples::order("s001", "s001-d01", 3, 3);
        let check = |f: &dyn Fn(&mut tillstream_contracts::OrderCreated)| {
            let mut o = base.clone();
            f(&mut o);
            validate_values(&o.into())
        };
        assert!(check(&|_| {}).is_ok());
        assert!(check(&|o| o.event_id = "not-a-uuid".into()).is_err());
        assert!(check(&|o| o.seq = 0).is_err());
        assert!(check(&|o| o.lines[0].qty = 0).is_err());
        assert!(check(&|o| o.lines[0].unit_price.currency = "EUX".into()).is_err());
        assert!(check(&|o| o.totals.net.amount_minor += 1).is_err());
        assert!(check(&|o| o.tenders[0].amount.amount_minor -= 1).is_err());
        assert!(check(&|o| o.totals.tax.currency = "USD".into()).is_err());
        for kind in EventKind::ALL {
            for seq in [1, 2, 3] {
                if let Some(e) = samples::sample(kind, "s001", "s001-d01", seq) {
                    assert_eq!(validate_values(&e), Ok(()), "{kind} seq {seq}");
                }
            }
        }
    }

    #[test]
    fn store_level_topics_are_unknown_unless_a_migration_accepts_them() {
        let e: DeviceEvent = samples::order("s001", "s001-d01", 3, 2).into();
        let v1 = "store/s001/pos/order.created";
        assert_eq!(
            reason(classifier().classify(v1, &json(&e))),
            Reason::UnknownTopic
        );
        let mut c = classifier();
        let mut routes = default_routes();
        routes.extend(crate::config::store_level_routes());
        c.routes = Routes::new(&routes).unwrap();
        match c.classify(v1, &json(&e)) {
            Verdict::Forward {
                store_level_topic, ..
            } => assert!(store_level_topic),
            other => panic!("{other:?}"),
        }
        match c.classify("store/s001/s001-d01/pos/order.created", &json(&e)) {
            Verdict::Forward {
                store_level_topic, ..
            } => assert!(!store_level_topic),
            other => panic!("{other:?}"),
        }
        // The payload's identity is still checked on a v1 topic.
        let e3: DeviceEvent = samples::order("s001", "s001-d99", 3, 2).into();
        assert_eq!(reason(c.classify(v1, &json(&e3))), Reason::UnknownDevice);
    }

    #[test]
    fn catalog_echo_is_ignored() {
        assert_eq!(
            classifier().classify("store/s001/catalog/prices", b"{}"),
            Verdict::Ignore
        );
    }
}
