//! The published device JSON contract (`schemas/json/`) stays in step with the Avro schemas: each
//! committed JSON Schema equals the one generated from its `.avsc`, each example validates against
//! its schema, parses with `DeviceEvent::from_json`, passes the bridge's value rules and is forwarded
//! on its route. `UPDATE_JSON_SCHEMAS=1 cargo test -p tillstream-store-bridge --test json_contract`
//! regenerates the files after a schema change (then review the diff).

use std::path::PathBuf;

use tillstream_contracts::{DeviceEvent, EventKind, samples};
use tillstream_store_bridge::config::default_routes;
use tillstream_store_bridge::fleet::Fleet;
use tillstream_store_bridge::json_schema::{CONTRACT_KINDS, json_schema_text};
use tillstream_store_bridge::routes::Routes;
use tillstream_store_bridge::validate::{Classifier, Verdict, validate_values};

fn json_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schemas/json")
}

fn update() -> bool {
    std::env::var("UPDATE_JSON_SCHEMAS").is_ok_and(|v| v == "1")
}

/// The example payload for `kind` v`version` (a sample event declaring that version).
fn example(kind: EventKind, version: u32) -> String {
    let e = samples::sample(kind, "s001", "s001-d01", 3).expect("sample");
    let mut v = e.to_json();
    v["schema_version"] = serde_json::json!(version);
    if kind == EventKind::OrderCreated && version == 1 {
        v.as_object_mut().unwrap().remove("loyalty_member_id");
    }
    let mut s = serde_json::to_string_pretty(&v).unwrap();
    s.push('\n');
    s
}

#[test]
fn committed_json_schemas_equal_the_ones_generated_from_avro() {
    let mut stale = Vec::new();
    for kind in CONTRACT_KINDS {
        for version in kind.versions() {
            let want = json_schema_text(kind, version).unwrap();
            let path = json_dir()
                .join(kind.dir())
                .join(format!("v{version}.schema.json"));
            if update() {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, &want).unwrap();
                let ex = path.with_file_name(format!("v{version}.example.json"));
                std::fs::write(&ex, example(kind, version)).unwrap();
            }
            match std::fs::read_to_string(&path) {
                Ok(have) if have == want => {}
                Ok(_) => stale.push(format!("{} differs", path.display())),
                Err(_) => stale.push(format!("{} missing", path.display())),
            }
        }
    }
    assert!(
        stale.is_empty(),
        "JSON contract out of step with schemas/avro (rerun with UPDATE_JSON_SCHEMAS=1 and review): {stale:#?}"
    );
}

#[test]
fn every_example_validates_parses_and_is_forwarded() {
    let routes = Routes::new(&default_routes()).unwrap();
    let classifier = Classifier {
        routes: routes.clone(),
        fleet: Fleet::parse("s001-d01,s001\n").unwrap().into(),
        ignore: vec![],
        limits: tillstream_store_bridge::config::LimitsConfig {
            max_payload_bytes: 1 << 20,
            ..Default::default()
        },
    };
    let mut checked = 0;
    for kind in CONTRACT_KINDS {
        for version in kind.versions() {
            let dir = json_dir().join(kind.dir());
            let schema: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(dir.join(format!("v{version}.schema.json"))).unwrap(),
            )
            .unwrap();
            let text = std::fs::read_to_string(dir.join(format!("v{version}.example.json")))
                .unwrap_or_else(|e| panic!("{} v{version} example: {e}", kind.dir()));
            let instance: serde_json::Value = serde_json::from_str(&text).unwrap();
            let validator = jsonschema::draft202012::options()
                .should_validate_formats(true)
                .build(&schema)
                .unwrap();
            let errors: Vec<String> = validator
                .iter_errors(&instance)
                .map(|e| e.to_string())
                .collect();
            assert!(errors.is_empty(), "{} v{version}: {errors:?}", kind.dir());

            let event = DeviceEvent::from_json(kind, text.as_bytes()).unwrap();
            assert_eq!(event.schema_version(), version as i32);
            assert_eq!(validate_values(&event), Ok(()), "{} v{version}", kind.dir());
            // Encodes with the version it declares.
            event.encode().unwrap();

            if let Some(route) = routes.iter().find(|r| r.kind == kind) {
                let topic = route
                    .pattern
                    .replace("{store}", "s001")
                    .replace("{device}", "s001-d01");
                let v = classifier.classify(&topic, text.as_bytes());
                assert!(matches!(v, Verdict::Forward { .. }), "{topic}: {v:?}");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 11, "10 kinds, OrderCreated twice");
}

#[test]
fn the_schemas_reject_what_the_bridge_rejects() {
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(json_dir().join("order_created/v2.schema.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap();
    let good: serde_json::Value =
        serde_json::from_str(&example(EventKind::OrderCreated, 2)).unwrap();
    assert!(validator.is_valid(&good));
    let bad = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v = good.clone();
        f(&mut v);
        !validator.is_valid(&v)
    };
    assert!(bad(&|v| {
        v.as_object_mut().unwrap().remove("order_id");
    }));
    assert!(bad(&|v| v["seq"] = serde_json::json!("7")));
    assert!(bad(&|v| v["seq"] = serde_json::json!(0)));
    assert!(bad(&|v| v["event_id"] = serde_json::json!("nope")));
    assert!(bad(&|v| v["schema_version"] = serde_json::json!(3)));
    assert!(bad(
        &|v| v["totals"]["net"]["currency"] = serde_json::json!("euro")
    ));
    assert!(bad(
        &|v| v["tenders"][0]["method"] = serde_json::json!("BITCOIN")
    ));
}
