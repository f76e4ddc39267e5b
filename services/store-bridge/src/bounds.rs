//! Input bounds: the largest amount, quantity, number of lines and string a device may send
//! ([`LimitsConfig`]). Checked before any arithmetic on the event, so every sum the bridge and the
//! consumers compute over bounded values stays far inside `i64` (a line count times the largest
//! amount times the largest quantity is checked, not assumed). Pure; no I/O.
//!
//! The walk is over the event's JSON form, so every event kind and every field a new contract
//! version adds is bounded without a rule per kind: money is any `amount_minor`, a quantity any
//! `qty` / `quantity` / `points`, a list of lines any array, a string any string.

use serde_json::Value;
use tillstream_contracts::DeviceEvent;

use crate::config::LimitsConfig;

/// Keys whose integer values are quantities.
const QUANTITY_KEYS: [&str; 3] = ["qty", "quantity", "points"];

/// The first value of `event` beyond `limits`, described for the dead letter; `None` when every
/// value is within them.
pub fn first_out_of_bounds(event: &DeviceEvent, limits: &LimitsConfig) -> Option<String> {
    walk(&event.to_json(), limits).map(|v| v.describe())
}

/// A value beyond a bound, and where: the path is collected on the way back up, so an event
/// within its bounds allocates nothing here.
struct Violation {
    /// Path segments from the value up to the root (reversed).
    path_rev: Vec<String>,
    what: String,
}

impl Violation {
    fn at(mut self, segment: String) -> Self {
        self.path_rev.push(segment);
        self
    }

    fn describe(&self) -> String {
        let mut path = String::new();
        for seg in self.path_rev.iter().rev() {
            if !path.is_empty() && !seg.starts_with('[') {
                path.push('.');
            }
            path.push_str(seg);
        }
        format!("{path}: {}", self.what)
    }
}

fn violation(what: String) -> Option<Violation> {
    Some(Violation {
        path_rev: Vec::new(),
        what,
    })
}

fn walk(v: &Value, limits: &LimitsConfig) -> Option<Violation> {
    match v {
        Value::String(s) if s.len() > limits.max_string_bytes => violation(format!(
            "a string of {} bytes > limits.max_string_bytes {}",
            s.len(),
            limits.max_string_bytes
        )),
        Value::Array(items) => {
            if items.len() > limits.max_lines {
                return violation(format!(
                    "{} entries > limits.max_lines {}",
                    items.len(),
                    limits.max_lines
                ));
            }
            items
                .iter()
                .enumerate()
                .find_map(|(i, item)| walk(item, limits).map(|found| found.at(format!("[{i}]"))))
        }
        Value::Object(fields) => fields.iter().find_map(|(k, field)| {
            number_out_of_bounds(k, field, limits)
                .or_else(|| walk(field, limits))
                .map(|found| found.at(k.clone()))
        }),
        _ => None,
    }
}

fn number_out_of_bounds(key: &str, v: &Value, limits: &LimitsConfig) -> Option<Violation> {
    let (max, name) = if key == "amount_minor" {
        (limits.max_amount_minor, "limits.max_amount_minor")
    } else if QUANTITY_KEYS.contains(&key) {
        (limits.max_quantity, "limits.max_quantity")
    } else {
        return None;
    };
    let n = v.as_i64().map(i128::from).or_else(|| {
        // Out of i64 (serde_json keeps it as u64 or f64): beyond any bound.
        v.is_number().then_some(i128::MAX)
    })?;
    if n.abs() > i128::from(max) {
        violation(format!("{n} beyond {name} {max}"))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tillstream_contracts::{EventKind, samples};

    fn limits() -> LimitsConfig {
        LimitsConfig::default()
    }

    fn order() -> tillstream_contracts::OrderCreated {
        samples::order("s001", "s001-d01", 1, 2)
    }

    #[test]
    fn the_samples_are_within_the_default_bounds() {
        for kind in EventKind::ALL {
            for seq in [1, 2] {
                if let Some(e) = samples::sample(kind, "s001", "s001-d01", seq) {
                    assert_eq!(first_out_of_bounds(&e, &limits()), None, "{e:?}");
                }
            }
        }
    }

    #[test]
    fn each_bound_names_the_value_that_breaks_it() {
        let mut o = order();
        o.lines[0].unit_price.amount_minor = 5_000_000_000_000_000_000;
        let why = first_out_of_bounds(&o.into(), &limits()).unwrap();
        assert!(why.contains("lines[0].unit_price.amount_minor"), "{why}");
        assert!(why.contains("limits.max_amount_minor"), "{why}");

        let mut o = order();
        o.lines[0].qty = i32::MAX;
        let why = first_out_of_bounds(&o.into(), &limits()).unwrap();
        assert!(
            why.contains("lines[0].qty") && why.contains("max_quantity"),
            "{why}"
        );

        let mut o = order();
        let line = o.lines[0].clone();
        o.lines = vec![line; limits().max_lines + 1];
        let why = first_out_of_bounds(&o.into(), &limits()).unwrap();
        assert!(
            why.contains("lines: ") && why.contains("max_lines"),
            "{why}"
        );

        let mut o = order();
        o.lines[0].sku = "x".repeat(limits().max_string_bytes + 1);
        let why = first_out_of_bounds(&o.into(), &limits()).unwrap();
        assert!(
            why.contains("lines[0].sku") && why.contains("max_string_bytes"),
            "{why}"
        );
    }

    #[test]
    fn the_largest_values_within_bounds_cannot_overflow_an_events_sums() {
        // What validate_values sums per event: lines x (amount x qty), discounts, tax, tenders.
        let l = limits();
        let per_line = i128::from(l.max_amount_minor) * i128::from(l.max_quantity);
        let per_event = per_line * l.max_lines as i128 * 3;
        assert!(
            per_event < i128::from(i64::MAX),
            "the default bounds let one event's sums reach {per_event}"
        );
    }
}
