//! The device JSON contract published to POS vendors (`schemas/json/<event>/v<N>.schema.json`),
//! generated from the Avro schemas so the two cannot drift: same field names, same required fields
//! (an Avro field without a default is required), enums as string enums, money as
//! `{"amount_minor": integer, "currency": "EUR"}`, timestamps as epoch-millisecond integers,
//! `business_date` as days since the epoch, `schema_version` fixed to the file's version. The value
//! rules the bridge enforces beyond types (UUID `event_id`, `seq` ≥ 1, ISO 4217 codes) are stated as
//! `format`/`minimum`/`pattern`. Pure; no I/O.

use serde_json::{Map, Value, json};
use tillstream_contracts::EventKind;

/// Kinds whose JSON is part of the device contract (what devices send, and the downlink document).
pub const CONTRACT_KINDS: [EventKind; 10] = [
    EventKind::OrderCreated,
    EventKind::OrderRefunded,
    EventKind::InventoryAdjusted,
    EventKind::StockReservationRequested,
    EventKind::StockReservationGranted,
    EventKind::StockReservationReleased,
    EventKind::LoyaltyRedeemed,
    EventKind::DeviceHealth,
    EventKind::StoreDayClosed,
    EventKind::PriceListApproved,
];

/// The JSON Schema (draft 2020-12) of `kind` v`version`, or `None` if that version is not shipped.
pub fn json_schema(kind: EventKind, version: u32) -> Option<Value> {
    let avsc: Value = serde_json::from_str(kind.schema_text(version)?).ok()?;
    let mut g = Gen {
        defs: Map::new(),
        version,
    };
    let body = g.record_body(&avsc, true);
    let mut root = Map::new();
    root.insert(
        "$schema".into(),
        json!("https://json-schema.org/draft/2020-12/schema"),
    );
    root.insert(
        "$id".into(),
        json!(format!("urn:tillstream:json:{}:v{version}", kind.dir())),
    );
    root.insert("title".into(), json!(format!("{} v{version}", kind.name())));
    if let Value::Object(b) = body {
        root.extend(b);
    }
    if !g.defs.is_empty() {
        root.insert("$defs".into(), Value::Object(g.defs));
    }
    Some(Value::Object(root))
}

/// Pretty text as committed (trailing newline).
pub fn json_schema_text(kind: EventKind, version: u32) -> Option<String> {
    json_schema(kind, version).map(|v| {
        let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
        s.push('\n');
        s
    })
}

struct Gen {
    defs: Map<String, Value>,
    version: u32,
}

fn short(name: &str) -> &str {
    name.rsplit('.').next().unwrap_or(name)
}

impl Gen {
    fn record_body(&mut self, rec: &Value, top: bool) -> Value {
        let mut props = Map::new();
        let mut required = Vec::new();
        for f in rec["fields"].as_array().into_iter().flatten() {
            let name = f["name"].as_str().unwrap_or_default();
            let mut t = self.ty(&f["type"]);
            refine(name, &mut t, top, self.version);
            if let (Some(doc), Value::Object(o)) = (f["doc"].as_str(), &mut t) {
                o.insert("description".into(), json!(doc));
            }
            if f.get("default").is_none() {
                required.push(json!(name));
            }
            props.insert(name.to_string(), t);
        }
        let mut o = Map::new();
        o.insert("type".into(), json!("object"));
        if let Some(doc) = rec["doc"].as_str() {
            o.insert("description".into(), json!(doc));
        }
        o.insert("properties".into(), Value::Object(props));
        o.insert("required".into(), Value::Array(required));
        Value::Object(o)
    }

    fn reference(name: &str) -> Value {
        json!({ "$ref": format!("#/$defs/{}", short(name)) })
    }

    fn ty(&mut self, t: &Value) -> Value {
        match t {
            Value::String(s) => match s.as_str() {
                "string" => json!({"type": "string"}),
                "int" => json!({"type": "integer", "minimum": i32::MIN, "maximum": i32::MAX}),
                "long" => json!({"type": "integer"}),
                "boolean" => json!({"type": "boolean"}),
                "float" | "double" => json!({"type": "number"}),
                "bytes" => json!({"type": "string"}),
                "null" => json!({"type": "null"}),
                named => Self::reference(named),
            },
            Value::Array(branches) => {
                let any: Vec<Value> = branches.iter().map(|b| self.ty(b)).collect();
                json!({ "anyOf": any })
            }
            Value::Object(o) => {
                let logical = o.get("logicalType").and_then(Value::as_str);
                match (o.get("type").and_then(Value::as_str), logical) {
                    (Some("long"), Some("timestamp-millis")) => json!({
                        "type": "integer",
                        "$comment": "UTC milliseconds since 1970-01-01T00:00:00Z"
                    }),
                    (Some("int"), Some("date")) => json!({
                        "type": "integer",
                        "$comment": "days since 1970-01-01"
                    }),
                    (Some("array"), _) => json!({"type": "array", "items": self.ty(&o["items"])}),
                    (Some("map"), _) => {
                        json!({"type": "object", "additionalProperties": self.ty(&o["values"])})
                    }
                    (Some("enum"), _) => {
                        let name = short(o["name"].as_str().unwrap_or_default()).to_string();
                        let mut d = Map::new();
                        d.insert("type".into(), json!("string"));
                        if let Some(doc) = o.get("doc") {
                            d.insert("description".into(), doc.clone());
                        }
                        d.insert("enum".into(), o["symbols"].clone());
                        self.defs.insert(name.clone(), Value::Object(d));
                        Self::reference(&name)
                    }
                    (Some("record"), _) => {
                        let name = short(o["name"].as_str().unwrap_or_default()).to_string();
                        let body = self.record_body(t, false);
                        self.defs.insert(name.clone(), body);
                        Self::reference(&name)
                    }
                    (Some(prim), _) => self.ty(&json!(prim)),
                    (None, _) => json!({}),
                }
            }
            _ => json!({}),
        }
    }
}

/// Value rules the bridge enforces, stated in the schema.
fn refine(field: &str, t: &mut Value, top: bool, version: u32) {
    let Value::Object(o) = t else { return };
    match field {
        "event_id" if top => {
            o.insert("format".into(), json!("uuid"));
            o.insert(
                "pattern".into(),
                json!(
                    "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
                ),
            );
        }
        "seq" if top => {
            o.insert("minimum".into(), json!(1));
        }
        "schema_version" if top => {
            o.insert("const".into(), json!(version));
        }
        "currency" => {
            o.insert("pattern".into(), json!("^[A-Z]{3}$"));
        }
        "device_id" | "store_id" if top => {
            o.insert("minLength".into(), json!(1));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_v2_has_the_loyalty_field_and_v1_does_not() {
        let v1 = json_schema(EventKind::OrderCreated, 1).unwrap();
        let v2 = json_schema(EventKind::OrderCreated, 2).unwrap();
        assert!(v1["properties"].get("loyalty_member_id").is_none());
        assert!(v2["properties"].get("loyalty_member_id").is_some());
        assert_eq!(v2["properties"]["schema_version"]["const"], 2);
        let req = v2["required"].as_array().unwrap();
        assert!(req.contains(&json!("event_id")));
        assert!(!req.contains(&json!("loyalty_member_id")));
        assert_eq!(
            v2["$defs"]["Money"]["properties"]["currency"]["pattern"],
            "^[A-Z]{3}$"
        );
        assert_eq!(
            v2["$defs"]["TenderMethod"]["enum"][0], "CASH",
            "{}",
            v2["$defs"]["TenderMethod"]
        );
        assert!(json_schema(EventKind::OrderCreated, 3).is_none());
    }
}
