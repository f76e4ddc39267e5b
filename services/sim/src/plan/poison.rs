//! Poison publishes: payloads the bridge must refuse, each ending up as exactly one dead letter
//! with its reason — broken JSON, a missing field, a wrong type, an oversize payload, a spoofed
//! store or device, an unknown schema version — inserted at random points of random devices' steps. Pure.

use rand::Rng;
use serde_json::Value;
use tillstream_contracts::samples;

use super::fleet::{FleetGenerator, random_uuid};
use super::{DevicePlan, Publish, Purpose, Step};

impl FleetGenerator {
    /// Inserts `spec.poison`'s publishes, reason by reason, and counts each expected dead letter in
    /// the truth.
    pub(super) fn add_poison(&mut self, plans: &mut [DevicePlan]) {
        let spec = self.spec.poison.clone();
        let mut reasons: Vec<&str> = Vec::new();
        for (n, r) in [
            (spec.bad_json, "bad_json"),
            (spec.missing_field, "missing_field"),
            (spec.wrong_type, "wrong_type"),
            (spec.oversize, "payload_too_large"),
            (spec.spoofed_store, "store_mismatch"),
            (spec.spoofed_device, "device_mismatch"),
            (spec.unknown_schema_version, "unknown_schema_version"),
        ] {
            reasons.extend(std::iter::repeat_n(r, n as usize));
        }
        for reason in reasons {
            let d = self.rng.random_range(0..plans.len());
            let store = plans[d].store_id.clone();
            let device = plans[d].device_id.clone();
            let sample = samples::order(&store, &device, 1, 1);
            let mut json = serde_json::to_value(&sample).unwrap_or_default();
            json["event_id"] = Value::String(random_uuid(&mut self.rng));
            json["seq"] = serde_json::json!(0);
            let payload = self.poison_payload(reason, json);
            *self
                .truth
                .dead_letters
                .entry(reason.to_string())
                .or_default() += 1;
            let at = self.rng.random_range(0..=plans[d].steps.len());
            plans[d].steps.insert(
                at,
                Step::Publish(Publish {
                    topic: format!("store/{store}/{device}/pos/order.created"),
                    payload,
                    purpose: Purpose::Poison(reason.to_string()),
                }),
            );
        }
    }

    /// A valid order's JSON spoiled so the bridge dead-letters it with `reason`.
    fn poison_payload(&self, reason: &str, mut json: Value) -> Vec<u8> {
        match reason {
            "bad_json" => return b"{\"event_id\": \"oops\", \"lines\": [".to_vec(),
            "missing_field" => {
                json.as_object_mut().map(|o| o.remove("totals"));
            }
            "wrong_type" => json["lines"][0]["qty"] = serde_json::json!("three"),
            "payload_too_large" => {
                json["order_id"] = Value::String("x".repeat(self.spec.oversize_bytes));
            }
            "store_mismatch" => json["store_id"] = Value::String("s999".into()),
            // Published on its own device level, in another device's name.
            "device_mismatch" => {
                let own = json["device_id"].as_str().unwrap_or_default().to_string();
                json["device_id"] = Value::String(format!("{own}-spoofed"));
            }
            _ => json["schema_version"] = serde_json::json!(99),
        }
        serde_json::to_vec(&json).unwrap_or_default()
    }
}
