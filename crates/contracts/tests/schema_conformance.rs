//! Every Rust event type serializes to exactly its `.avsc` (same fields, same order, same types,
//! recursively), every shipped version round-trips, money stays exact, and v1/v2 interoperate.

use std::collections::HashMap;

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::schema::{Name, ResolvedSchema};
use apache_avro::types::Value;
use tillstream_contracts::samples::{self, sample};
use tillstream_contracts::*;

fn conforms(
    value: &Value,
    schema: &Schema,
    names: &HashMap<Name, &Schema>,
    path: &str,
) -> Result<(), String> {
    match (value, schema) {
        (_, Schema::Ref { name }) => {
            let target = names
                .get(name)
                .ok_or_else(|| format!("{path}: unresolved ref {name:?}"))?;
            conforms(value, target, names, path)
        }
        (Value::Record(fields), Schema::Record(rs)) => {
            let got: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
            let want: Vec<&str> = rs.fields.iter().map(|f| f.name.as_str()).collect();
            if got != want {
                return Err(format!("{path}: fields {got:?} != schema {want:?}"));
            }
            for ((n, v), f) in fields.iter().zip(&rs.fields) {
                conforms(v, &f.schema, names, &format!("{path}.{n}"))?;
            }
            Ok(())
        }
        (Value::Array(items), Schema::Array(a)) => {
            for (i, item) in items.iter().enumerate() {
                conforms(item, &a.items, names, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        (Value::Map(m), Schema::Map(ms)) => {
            for (k, v) in m {
                conforms(v, &ms.types, names, &format!("{path}{{{k}}}"))?;
            }
            Ok(())
        }
        (Value::Union(_, inner), Schema::Union(_)) => conforms(inner, schema, names, path),
        (v, Schema::Union(u)) => {
            if u.variants()
                .iter()
                .any(|s| conforms(v, s, names, path).is_ok())
            {
                Ok(())
            } else {
                Err(format!("{path}: {v:?} matches no branch of {schema:?}"))
            }
        }
        (Value::Enum(_, sym) | Value::String(sym), Schema::Enum(e)) => {
            if e.symbols.contains(sym) {
                Ok(())
            } else {
                Err(format!("{path}: symbol {sym} not in {:?}", e.symbols))
            }
        }
        (Value::Null, Schema::Null)
        | (Value::Boolean(_), Schema::Boolean)
        | (Value::Int(_), Schema::Int | Schema::Date)
        | (Value::Long(_), Schema::Long | Schema::TimestampMillis)
        | (Value::String(_), Schema::String)
        | (Value::Bytes(_), Schema::Bytes) => Ok(()),
        (v, s) => Err(format!("{path}: value {v:?} does not match schema {s:?}")),
    }
}

fn check_exact<T: serde::Serialize>(kind: EventKind, value: &T) {
    let schema = kind.latest_schema();
    let resolved = ResolvedSchema::try_from(schema).unwrap();
    let names: HashMap<Name, &Schema> = resolved
        .get_names()
        .iter()
        .map(|(n, s)| (n.clone(), *s))
        .collect();
    let v = apache_avro::to_value(value).unwrap();
    if let Err(e) = conforms(&v, schema, &names, kind.name()) {
        panic!("{kind} does not match its schema: {e}");
    }
}

#[test]
fn every_rust_type_matches_its_latest_schema_exactly() {
    for kind in EventKind::ALL {
        // Both the "all optionals set" and "all optionals empty" variants.
        for seq in [1, 2] {
            match sample(kind, "s001", "s001-d01", seq) {
                Some(e) => match &e {
                    DeviceEvent::OrderCreated(x) => check_exact(kind, x),
                    DeviceEvent::OrderRefunded(x) => check_exact(kind, x),
                    DeviceEvent::InventoryAdjusted(x) => check_exact(kind, x),
                    DeviceEvent::StockReservationRequested(x) => check_exact(kind, x),
                    DeviceEvent::StockReservationGranted(x) => check_exact(kind, x),
                    DeviceEvent::StockReservationReleased(x) => check_exact(kind, x),
                    DeviceEvent::PriceListApproved(x) => check_exact(kind, x),
                    DeviceEvent::LoyaltyRedeemed(x) => check_exact(kind, x),
                    DeviceEvent::DeviceHealth(x) => check_exact(kind, x),
                    DeviceEvent::StoreDayClosed(x) => check_exact(kind, x),
                },
                None => match kind {
                    EventKind::DeadLetter => check_exact(kind, &samples::dead_letter()),
                    EventKind::ConflictDetected => check_exact(kind, &samples::conflict()),
                    EventKind::ConflictResolved => check_exact(kind, &samples::conflict_resolved()),
                    EventKind::SequenceGap => check_exact(kind, &samples::gap()),
                    EventKind::DeviceReceipt => check_exact(kind, &samples::receipt()),
                    EventKind::Compensation => check_exact(kind, &samples::compensation()),
                    other => panic!("no sample for {other}"),
                },
            }
        }
    }
}

#[test]
fn the_conformance_check_rejects_a_mismatch() {
    // A struct with one field renamed must fail, or the test above proves nothing.
    #[derive(serde::Serialize)]
    struct Wrong {
        amount_minor: i64,
        currency_code: String,
    }
    let schema = Schema::parse_str(
        r#"{"type":"record","name":"Money","fields":[{"name":"amount_minor","type":"long"},{"name":"currency","type":"string"}]}"#,
    )
    .unwrap();
    let v = apache_avro::to_value(Wrong {
        amount_minor: 1,
        currency_code: "EUR".into(),
    })
    .unwrap();
    assert!(conforms(&v, &schema, &HashMap::new(), "Money").is_err());
    // And an i32 where the schema says long.
    #[derive(serde::Serialize)]
    struct Narrow {
        amount_minor: i32,
        currency: String,
    }
    let v = apache_avro::to_value(Narrow {
        amount_minor: 1,
        currency: "EUR".into(),
    })
    .unwrap();
    assert!(conforms(&v, &schema, &HashMap::new(), "Money").is_err());
}

#[test]
fn every_device_event_round_trips_through_every_version() {
    for kind in EventKind::ALL.into_iter().filter(|k| k.is_store_event()) {
        for version in kind.versions() {
            let writer = WriterSchema::shipped(1, kind, version).unwrap();
            for seq in [1, 2, 3] {
                let mut event = sample(kind, "s001", "s001-d01", seq).unwrap();
                let datum = event.encode_as(version).unwrap();
                let back = DeviceEvent::decode(&writer, &datum).unwrap();
                if version < kind.latest_version() {
                    // Fields added after `version` come back as their defaults.
                    if let DeviceEvent::OrderCreated(o) = &mut event {
                        o.loyalty_member_id = None;
                    }
                }
                assert_eq!(back, event, "{kind} v{version} seq {seq}");
            }
        }
    }
}

#[test]
fn pipeline_records_round_trip() {
    let dl = samples::dead_letter();
    let bytes = codec::encode_record(EventKind::DeadLetter, &dl).unwrap();
    let w = WriterSchema::shipped(9, EventKind::DeadLetter, 1).unwrap();
    let back: DeadLetter = w.decode(&bytes).unwrap();
    assert_eq!(back, dl);
    let gap = samples::gap();
    let bytes = codec::encode_record(EventKind::SequenceGap, &gap).unwrap();
    let w = WriterSchema::shipped(9, EventKind::SequenceGap, 1).unwrap();
    assert_eq!(w.decode::<SequenceGap>(&bytes).unwrap(), gap);
    let receipt = samples::receipt();
    let bytes = codec::encode_record(EventKind::DeviceReceipt, &receipt).unwrap();
    let w = WriterSchema::shipped(9, EventKind::DeviceReceipt, 1).unwrap();
    assert_eq!(w.decode::<DeviceReceipt>(&bytes).unwrap(), receipt);
    let c = samples::conflict();
    let bytes = codec::encode_record(EventKind::ConflictDetected, &c).unwrap();
    let w = WriterSchema::shipped(9, EventKind::ConflictDetected, 1).unwrap();
    assert_eq!(w.decode::<ConflictDetected>(&bytes).unwrap(), c);
    let comp = samples::compensation();
    let bytes = codec::encode_record(EventKind::Compensation, &comp).unwrap();
    let w = WriterSchema::shipped(9, EventKind::Compensation, 1).unwrap();
    assert_eq!(w.decode::<Compensation>(&bytes).unwrap(), comp);
}

/// ConflictDetected v2 (the conflict detector's rule kinds, an enum default) against v1 readers:
/// a record of a v1 symbol is the same bytes under both versions (what the dedup writes, and the
/// detector's OVERSOLD / PRICE_MISMATCH / DOUBLE_REDEMPTION), so a v1 reader decodes it; a v1
/// reader has no enum default, so it cannot read the three new symbols (Avro applies the default
/// of the *reader*); a v2 reader reads any symbol added after v2 as OTHER.
#[test]
fn conflict_kinds_evolve_compatibly() {
    let v1 = EventKind::ConflictDetected.schema(1).unwrap();
    let v2 = EventKind::ConflictDetected.schema(2).unwrap();
    let read_with = |writer: &Schema, reader: &Schema, bytes: &[u8]| {
        GenericDatumReader::builder(writer)
            .reader_schema(reader)
            .build()
            .unwrap()
            .read_value(&mut &bytes[..])
    };
    let kind_of = |v: Value| match v {
        Value::Record(fields) => fields
            .into_iter()
            .find(|(n, _)| n == "kind")
            .map(|(_, k)| k)
            .unwrap(),
        other => panic!("not a record: {other:?}"),
    };
    let mut c = samples::conflict();
    for kind in [
        ConflictKind::IdentityCollision,
        ConflictKind::Oversold,
        ConflictKind::PriceMismatch,
        ConflictKind::DoubleRedemption,
        ConflictKind::Other,
    ] {
        c.kind = kind;
        let v2_bytes = codec::encode(EventKind::ConflictDetected, 2, &c).unwrap();
        let v1_bytes = codec::encode(EventKind::ConflictDetected, 1, &c).unwrap();
        assert_eq!(v1_bytes, v2_bytes, "{kind:?}: same bytes under v1 and v2");
        let old = read_with(v2, v1, &v2_bytes).unwrap();
        assert!(matches!(kind_of(old), Value::Enum(_, _)), "{kind:?}");
        // The dedup frames with v1's schema id: a v2 reader decodes that into the Rust type.
        let w1 = WriterSchema::shipped(1, EventKind::ConflictDetected, 1).unwrap();
        assert_eq!(w1.decode::<ConflictDetected>(&v2_bytes).unwrap(), c);
    }
    for kind in [
        ConflictKind::ReservationBreach,
        ConflictKind::DuplicateBusinessKey,
        ConflictKind::StaleCount,
    ] {
        c.kind = kind;
        let bytes = codec::encode(EventKind::ConflictDetected, 2, &c).unwrap();
        let w2 = WriterSchema::shipped(2, EventKind::ConflictDetected, 2).unwrap();
        assert_eq!(w2.decode::<ConflictDetected>(&bytes).unwrap(), c);
        assert!(
            read_with(v2, v1, &bytes).is_err(),
            "{kind:?}: a v1 reader has no default for a symbol it does not know"
        );
    }
    // A later version with one more symbol: v2 readers take the default.
    let v3_text = EventKind::ConflictDetected
        .schema_text(2)
        .unwrap()
        .replace("\"STALE_COUNT\"", "\"STALE_COUNT\", \"FUTURE_RULE\"");
    let v3 = Schema::parse_str(&v3_text).unwrap();
    let future = apache_avro::to_value(&c)
        .unwrap()
        .resolve(&v3)
        .map(|v| match v {
            Value::Record(mut fields) => {
                for (n, k) in fields.iter_mut() {
                    if n == "kind" {
                        *k = Value::Enum(10, "FUTURE_RULE".into());
                    }
                }
                Value::Record(fields)
            }
            other => other,
        })
        .unwrap();
    let bytes = apache_avro::writer::datum::GenericDatumWriter::builder(&v3)
        .build()
        .unwrap()
        .write_value_to_vec(future)
        .unwrap();
    let read = read_with(&v3, v2, &bytes).unwrap();
    assert_eq!(kind_of(read), Value::Enum(6, "OTHER".into()));
    use apache_avro::schema_compatibility::SchemaCompatibility;
    assert!(SchemaCompatibility::can_read(&v3, v2).is_ok());
    assert!(SchemaCompatibility::can_read(v1, v2).is_ok());
}

#[test]
fn money_is_exact_in_avro_and_json() {
    let cases = [
        Money::new(0, "EUR"),
        Money::new(1, "EUR"),
        Money::new(-1299, "EUR"),
        Money::new(i64::MAX, "USD"),
        Money::new(i64::MIN, "USD"),
        Money::new(9_007_199_254_740_993, "JPY"), // 2^53 + 1: a float would round it
        Money::new(1_234_567, "BHD"),
    ];
    let schema = Schema::parse_str(
        r#"{"type":"record","name":"Money","fields":[{"name":"amount_minor","type":"long"},{"name":"currency","type":"string"}]}"#,
    )
    .unwrap();
    for m in cases {
        let writer = apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
            .build()
            .unwrap();
        let bytes = writer.write_ser_to_vec(&m).unwrap();
        let reader = GenericDatumReader::builder(&schema).build().unwrap();
        let back: Money = reader.read_deser(&mut &bytes[..]).unwrap();
        assert_eq!(back, m);
        let json = serde_json::to_string(&m).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert!(
            parsed["amount_minor"].is_i64(),
            "amount must be a JSON integer: {json}"
        );
        let back: Money = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
    }
    // A float in JSON is rejected, never rounded.
    assert!(
        serde_json::from_str::<Money>(r#"{"amount_minor": 12.99, "currency": "EUR"}"#).is_err()
    );
    assert_eq!(Money::new(-1299, "EUR").to_decimal_string(), "-12.99");
    assert_eq!(Money::new(5, "JPY").to_decimal_string(), "5");
    assert_eq!(Money::new(1_234_567, "BHD").to_decimal_string(), "1234.567");
    assert_eq!(
        Money::new(1, "EUR").checked_add(&Money::new(1, "USD")),
        None,
        "currencies never mix"
    );
}

#[test]
fn v1_producer_and_v2_consumer_interoperate_both_ways() {
    let v1 = EventKind::OrderCreated.schema(1).unwrap();
    let v2 = EventKind::OrderCreated.schema(2).unwrap();
    let mut event = samples::order("s001", "s001-d01", 3, 2);
    assert!(event.loyalty_member_id.is_some());

    // v1 producer -> v2 consumer: the new optional field takes its default.
    event.schema_version = 1;
    let v1_bytes = DeviceEvent::from(event.clone()).encode_as(1).unwrap();
    let w1 = WriterSchema::shipped(1, EventKind::OrderCreated, 1).unwrap();
    let DeviceEvent::OrderCreated(read) = DeviceEvent::decode(&w1, &v1_bytes).unwrap() else {
        panic!("wrong kind")
    };
    assert_eq!(read.loyalty_member_id, None);
    assert_eq!(read.lines, event.lines);

    // v2 producer -> v1 consumer (reader schema v1): the extra field is skipped.
    event.schema_version = 2;
    let v2_bytes = DeviceEvent::from(event.clone()).encode_as(2).unwrap();
    let reader = GenericDatumReader::builder(v2)
        .reader_schema(v1)
        .build()
        .unwrap();
    let value = reader.read_value(&mut &v2_bytes[..]).unwrap();
    let Value::Record(fields) = value else {
        panic!("not a record")
    };
    assert!(fields.iter().all(|(n, _)| n != "loyalty_member_id"));
    assert!(
        fields
            .iter()
            .any(|(n, v)| n == "order_id" && *v == Value::String(event.order_id.clone()))
    );

    // And the schemas themselves agree: v2 reads v1 and v1 reads v2.
    use apache_avro::schema_compatibility::SchemaCompatibility;
    assert!(SchemaCompatibility::can_read(v1, v2).is_ok());
    assert!(SchemaCompatibility::can_read(v2, v1).is_ok());
}

#[test]
fn fingerprint_ignores_schema_version_but_not_content() {
    let a = samples::order("s001", "s001-d01", 4, 2);
    let mut v1 = a.clone();
    v1.schema_version = 1;
    v1.loyalty_member_id = None;
    let mut a_no_loyalty = a.clone();
    a_no_loyalty.loyalty_member_id = None;
    let fa = DeviceEvent::from(a_no_loyalty).fingerprint().unwrap();
    let fv1 = DeviceEvent::from(v1).fingerprint().unwrap();
    assert_eq!(fa, fv1);
    let mut changed = a.clone();
    changed.lines[0].qty += 1;
    assert_ne!(
        DeviceEvent::from(a).fingerprint().unwrap(),
        DeviceEvent::from(changed).fingerprint().unwrap()
    );
}
