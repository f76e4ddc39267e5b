//! The schema catalog: every Avro schema in `schemas/avro/`, embedded at build time, with the
//! record kind, subject and version each belongs to. Pure lookup; no I/O, no delivery guarantee.
//!
//! Subjects follow Confluent's RecordNameStrategy (subject = record full name), because one topic
//! carries several record types (a store's events share a topic so they keep one order per store).

use std::sync::OnceLock;

use apache_avro::Schema;

/// Every record type the pipeline writes to Kafka.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
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
    ConflictDetected,
    ConflictResolved,
    SequenceGap,
    DeadLetter,
    DeviceReceipt,
    Compensation,
}

/// (kind, version, schema text) for every `.avsc` in the repository.
const SCHEMA_FILES: &[(EventKind, u32, &str)] = &[
    (
        EventKind::OrderCreated,
        1,
        include_str!("../../../schemas/avro/order_created/v1.avsc"),
    ),
    (
        EventKind::OrderCreated,
        2,
        include_str!("../../../schemas/avro/order_created/v2.avsc"),
    ),
    (
        EventKind::OrderRefunded,
        1,
        include_str!("../../../schemas/avro/order_refunded/v1.avsc"),
    ),
    (
        EventKind::InventoryAdjusted,
        1,
        include_str!("../../../schemas/avro/inventory_adjusted/v1.avsc"),
    ),
    (
        EventKind::StockReservationRequested,
        1,
        include_str!("../../../schemas/avro/stock_reservation_requested/v1.avsc"),
    ),
    (
        EventKind::StockReservationGranted,
        1,
        include_str!("../../../schemas/avro/stock_reservation_granted/v1.avsc"),
    ),
    (
        EventKind::StockReservationReleased,
        1,
        include_str!("../../../schemas/avro/stock_reservation_released/v1.avsc"),
    ),
    (
        EventKind::PriceListApproved,
        1,
        include_str!("../../../schemas/avro/price_list_approved/v1.avsc"),
    ),
    (
        EventKind::LoyaltyRedeemed,
        1,
        include_str!("../../../schemas/avro/loyalty_redeemed/v1.avsc"),
    ),
    (
        EventKind::DeviceHealth,
        1,
        include_str!("../../../schemas/avro/device_health/v1.avsc"),
    ),
    (
        EventKind::StoreDayClosed,
        1,
        include_str!("../../../schemas/avro/store_day_closed/v1.avsc"),
    ),
    (
        EventKind::ConflictDetected,
        1,
        include_str!("../../../schemas/avro/conflict_detected/v1.avsc"),
    ),
    (
        EventKind::ConflictDetected,
        2,
        include_str!("../../../schemas/avro/conflict_detected/v2.avsc"),
    ),
    (
        EventKind::ConflictResolved,
        1,
        include_str!("../../../schemas/avro/conflict_resolved/v1.avsc"),
    ),
    (
        EventKind::SequenceGap,
        1,
        include_str!("../../../schemas/avro/sequence_gap/v1.avsc"),
    ),
    (
        EventKind::DeadLetter,
        1,
        include_str!("../../../schemas/avro/dead_letter/v1.avsc"),
    ),
    (
        EventKind::DeviceReceipt,
        1,
        include_str!("../../../schemas/avro/device_receipt/v1.avsc"),
    ),
    (
        EventKind::Compensation,
        1,
        include_str!("../../../schemas/avro/compensation/v1.avsc"),
    ),
];

impl EventKind {
    pub const ALL: [EventKind; 16] = [
        EventKind::OrderCreated,
        EventKind::OrderRefunded,
        EventKind::InventoryAdjusted,
        EventKind::StockReservationRequested,
        EventKind::StockReservationGranted,
        EventKind::StockReservationReleased,
        EventKind::PriceListApproved,
        EventKind::LoyaltyRedeemed,
        EventKind::DeviceHealth,
        EventKind::StoreDayClosed,
        EventKind::ConflictDetected,
        EventKind::ConflictResolved,
        EventKind::SequenceGap,
        EventKind::DeadLetter,
        EventKind::DeviceReceipt,
        EventKind::Compensation,
    ];

    /// Folder under `schemas/avro/` (snake_case).
    pub fn dir(self) -> &'static str {
        match self {
            EventKind::OrderCreated => "order_created",
            EventKind::OrderRefunded => "order_refunded",
            EventKind::InventoryAdjusted => "inventory_adjusted",
            EventKind::StockReservationRequested => "stock_reservation_requested",
            EventKind::StockReservationGranted => "stock_reservation_granted",
            EventKind::StockReservationReleased => "stock_reservation_released",
            EventKind::PriceListApproved => "price_list_approved",
            EventKind::LoyaltyRedeemed => "loyalty_redeemed",
            EventKind::DeviceHealth => "device_health",
            EventKind::StoreDayClosed => "store_day_closed",
            EventKind::ConflictDetected => "conflict_detected",
            EventKind::ConflictResolved => "conflict_resolved",
            EventKind::SequenceGap => "sequence_gap",
            EventKind::DeadLetter => "dead_letter",
            EventKind::DeviceReceipt => "device_receipt",
            EventKind::Compensation => "compensation",
        }
    }

    /// Record full name, which is also the registry subject (RecordNameStrategy).
    pub fn full_name(self) -> &'static str {
        match self {
            EventKind::OrderCreated => "com.tillstream.events.OrderCreated",
            EventKind::OrderRefunded => "com.tillstream.events.OrderRefunded",
            EventKind::InventoryAdjusted => "com.tillstream.events.InventoryAdjusted",
            EventKind::StockReservationRequested => {
                "com.tillstream.events.StockReservationRequested"
            }
            EventKind::StockReservationGranted => "com.tillstream.events.StockReservationGranted",
            EventKind::StockReservationReleased => "com.tillstream.events.StockReservationReleased",
            EventKind::PriceListApproved => "com.tillstream.events.PriceListApproved",
            EventKind::LoyaltyRedeemed => "com.tillstream.events.LoyaltyRedeemed",
            EventKind::DeviceHealth => "com.tillstream.events.DeviceHealth",
            EventKind::StoreDayClosed => "com.tillstream.events.StoreDayClosed",
            EventKind::ConflictDetected => "com.tillstream.pipeline.ConflictDetected",
            EventKind::ConflictResolved => "com.tillstream.pipeline.ConflictResolved",
            EventKind::SequenceGap => "com.tillstream.pipeline.SequenceGap",
            EventKind::DeadLetter => "com.tillstream.pipeline.DeadLetter",
            EventKind::DeviceReceipt => "com.tillstream.pipeline.DeviceReceipt",
            EventKind::Compensation => "com.tillstream.pipeline.Compensation",
        }
    }

    /// Short record name (`OrderCreated`), used in the `tillstream-event-type` Kafka header.
    pub fn name(self) -> &'static str {
        let full = self.full_name();
        full.rsplit('.').next().unwrap_or(full)
    }

    pub fn subject(self) -> &'static str {
        self.full_name()
    }

    pub fn from_full_name(name: &str) -> Option<EventKind> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.full_name() == name || k.name() == name)
    }

    pub fn from_dir(dir: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.dir() == dir)
    }

    /// True for events emitted by (or for) a store: they carry the device header.
    pub fn is_store_event(self) -> bool {
        self.full_name().starts_with("com.tillstream.events.")
    }

    /// Every version shipped, ascending.
    pub fn versions(self) -> Vec<u32> {
        SCHEMA_FILES
            .iter()
            .filter(|(k, _, _)| *k == self)
            .map(|(_, v, _)| *v)
            .collect()
    }

    pub fn latest_version(self) -> u32 {
        self.versions().into_iter().max().unwrap_or(1)
    }

    pub fn schema_text(self, version: u32) -> Option<&'static str> {
        SCHEMA_FILES
            .iter()
            .find(|(k, v, _)| *k == self && *v == version)
            .map(|(_, _, t)| *t)
    }

    /// The parsed schema of `version` (cached for the life of the process).
    pub fn schema(self, version: u32) -> Option<&'static Schema> {
        static PARSED: OnceLock<Vec<(EventKind, u32, Schema)>> = OnceLock::new();
        let parsed = PARSED.get_or_init(|| {
            SCHEMA_FILES
                .iter()
                .map(|(k, v, text)| {
                    let schema = Schema::parse_str(text).unwrap_or_else(|e| {
                        panic!("embedded schema {}/v{v} does not parse: {e}", k.dir())
                    });
                    (*k, *v, schema)
                })
                .collect()
        });
        parsed
            .iter()
            .find(|(k, v, _)| *k == self && *v == version)
            .map(|(_, _, s)| s)
    }

    pub fn latest_schema(self) -> &'static Schema {
        self.schema(self.latest_version())
            .expect("every kind ships at least one schema")
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_schema_parses_and_is_named_for_its_kind() {
        for (kind, version, _) in SCHEMA_FILES {
            let schema = kind.schema(*version).unwrap();
            match schema {
                Schema::Record(r) => assert_eq!(r.name.fullname(None), kind.full_name()),
                other => panic!("{kind} v{version} is not a record: {other:?}"),
            }
        }
    }

    #[test]
    fn versions_are_contiguous_from_one() {
        for kind in EventKind::ALL {
            let v = kind.versions();
            assert_eq!(v, (1..=v.len() as u32).collect::<Vec<_>>(), "{kind}");
        }
        assert_eq!(EventKind::OrderCreated.latest_version(), 2);
    }

    #[test]
    fn names_round_trip() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::from_full_name(kind.full_name()), Some(kind));
            assert_eq!(EventKind::from_full_name(kind.name()), Some(kind));
            assert_eq!(EventKind::from_dir(kind.dir()), Some(kind));
        }
        assert_eq!(EventKind::from_full_name("com.example.Nope"), None);
    }
}
