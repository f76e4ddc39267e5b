//! tillctl as an operator runs it: bad input gives one clear line on stderr and a non-zero exit,
//! never a panic; the schema gate fails on an incompatible schema, locally and at the registry.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn tillctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tillctl"))
        .args(args)
        .env_remove("TILLSTREAM_REGISTRY_URL")
        .env_remove("TILLSTREAM_KAFKA_BROKERS")
        .env_remove("TILLSTREAM_LOG")
        .output()
        .expect("tillctl runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_clean_failure(o: &Output, needle: &str) {
    let err = stderr(o);
    assert!(!o.status.success(), "expected failure, got success: {err}");
    assert!(!err.contains("panicked"), "panicked: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(err.contains(needle), "expected {needle:?} in {err}");
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A copy of the shipped schemas folder to break.
fn schemas_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = repo().join("schemas");
    copy_dir(&src, dir.path());
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[test]
fn shipped_schemas_pass_the_gate() {
    let dir = repo().join("schemas");
    let o = tillctl(&[
        "schemas",
        "check",
        "--offline",
        "--dir",
        dir.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("schema gate passed"));
}

#[test]
fn incompatible_schema_fails_the_gate() {
    let dir = schemas_copy();
    // v3 of OrderCreated turns `order_id` into an int: no reader can bridge that.
    let v2 = std::fs::read_to_string(dir.path().join("avro/order_created/v2.avsc")).unwrap();
    let v3 = v2.replacen(
        "\"name\": \"order_id\",\n      \"type\": \"string\"",
        "\"name\": \"order_id\",\n      \"type\": \"int\"",
        1,
    );
    assert_ne!(v2, v3, "the edit must change the schema");
    std::fs::write(dir.path().join("avro/order_created/v3.avsc"), v3).unwrap();
    let o = tillctl(&[
        "schemas",
        "check",
        "--offline",
        "--dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_clean_failure(&o, "schema gate failed: 1 incompatible subject");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("FAIL com.tillstream.events.OrderCreated"),
        "{out}"
    );
    assert!(
        out.contains("v3: BACKWARD: the new schema cannot read data written with version 1"),
        "{out}"
    );
}

#[test]
fn new_required_field_fails_but_optional_with_default_passes() {
    let dir = schemas_copy();
    let v1 = std::fs::read_to_string(dir.path().join("avro/device_health/v1.avsc")).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&v1).unwrap();
    json["fields"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "firmware", "type": ["null", "string"], "default": null}));
    std::fs::write(
        dir.path().join("avro/device_health/v2.avsc"),
        serde_json::to_string_pretty(&json).unwrap(),
    )
    .unwrap();
    let ok = tillctl(&[
        "schemas",
        "check",
        "--offline",
        "--dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(ok.status.success(), "{}", stderr(&ok));

    json["fields"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "serial", "type": "string"}));
    std::fs::write(
        dir.path().join("avro/device_health/v3.avsc"),
        serde_json::to_string_pretty(&json).unwrap(),
    )
    .unwrap();
    let bad = tillctl(&[
        "schemas",
        "check",
        "--offline",
        "--dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_clean_failure(&bad, "schema gate failed");
}

#[test]
fn malformed_schema_file_is_one_clear_line() {
    let dir = schemas_copy();
    std::fs::write(
        dir.path().join("avro/order_created/v3.avsc"),
        "{ \"type\": \"record\", ",
    )
    .unwrap();
    let o = tillctl(&[
        "schemas",
        "check",
        "--offline",
        "--dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_clean_failure(&o, "v3.avsc: not a valid Avro schema");

    std::fs::write(dir.path().join("avro/order_created/v3.avsc"), "{}").unwrap();
    std::fs::rename(
        dir.path().join("avro/order_created/v3.avsc"),
        dir.path().join("avro/order_created/v5.avsc"),
    )
    .unwrap();
    let o = tillctl(&[
        "schemas",
        "check",
        "--offline",
        "--dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_clean_failure(&o, "versions must run 1, 2, 3");
}

#[test]
fn unreachable_broker_is_one_clear_line() {
    let topo = repo().join("topology/topology.toml");
    let o = tillctl(&[
        "topology",
        "plan",
        "--file",
        topo.to_str().unwrap(),
        "--brokers",
        "127.0.0.1:1",
        "--timeout-ms",
        "2000",
    ]);
    assert_clean_failure(&o, "cannot reach Kafka at 127.0.0.1:1");
}

#[test]
fn invalid_topology_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo().join("topology/topology.toml"))
        .unwrap()
        .replacen(
            "\"com.tillstream.events.DeviceHealth\"",
            "\"com.tillstream.events.Nope\"",
            1,
        );
    let path = dir.path().join("t.toml");
    std::fs::write(&path, text).unwrap();
    let o = tillctl(&["topology", "validate", "--file", path.to_str().unwrap()]);
    assert_clean_failure(
        &o,
        "value subject com.tillstream.events.Nope is not a shipped schema",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_subject_and_unreachable_registry_are_one_clear_line() {
    let data = tempfile::tempdir().unwrap();
    let token = tillstream_runtime::CancellationToken::new();
    let cfg = tillstream_schema_registry::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: data.path().to_path_buf(),
        ..Default::default()
    };
    let running = tillstream_schema_registry::start(cfg, token.clone())
        .await
        .unwrap();
    let url = running.state.url();
    let o = tokio::task::spawn_blocking({
        let url = url.clone();
        move || tillctl(&["schemas", "show", "com.example.Nope", "--registry", &url])
    })
    .await
    .unwrap();
    assert_clean_failure(&o, "subject com.example.Nope is not registered");

    // The gate registers with the registry, and the registry itself refuses an incompatible v3
    // even when the local files are edited to pass (simulated: the registry already holds a
    // version the repository never had).
    let dir = repo().join("schemas");
    let o = tokio::task::spawn_blocking({
        let url = url.clone();
        let dir = dir.clone();
        move || {
            tillctl(&[
                "schemas",
                "check",
                "--dir",
                dir.to_str().unwrap(),
                "--registry",
                &url,
            ])
        }
    })
    .await
    .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let client = reqwest_register(&url).await;
    assert!(client, "foreign version registered");
    let o = tokio::task::spawn_blocking({
        let url = url.clone();
        move || {
            tillctl(&[
                "schemas",
                "check",
                "--dir",
                dir.to_str().unwrap(),
                "--registry",
                &url,
            ])
        }
    })
    .await
    .unwrap();
    assert_clean_failure(&o, "schema gate failed");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("incompatible"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );

    token.cancel();
    running.wait().await.unwrap();
    let o = tokio::task::spawn_blocking(move || {
        tillctl(&[
            "schemas",
            "show",
            "com.example.Nope",
            "--registry",
            "http://127.0.0.1:1",
        ])
    })
    .await
    .unwrap();
    assert_clean_failure(&o, "schema registry unreachable");
}

/// Registers, behind the gate's back, a DeviceHealth v2 that drops the required `app_version`
/// (allowed only with level NONE), then restores the subject's level: the repository's v1 can no
/// longer read everything the subject holds, and the next gate run must notice.
async fn reqwest_register(url: &str) -> bool {
    let client = tillstream_contracts::Registry::new(tillstream_contracts::RegistryConfig {
        url: url.to_string(),
        ..Default::default()
    })
    .unwrap();
    let subject = "com.tillstream.events.DeviceHealth";
    let v1 = std::fs::read_to_string(repo().join("schemas/avro/device_health/v1.avsc")).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&v1).unwrap();
    json["fields"]
        .as_array_mut()
        .unwrap()
        .retain(|f| f["name"] != "app_version");
    client.set_compatibility(subject, "NONE").await.unwrap();
    let ok = client.register(subject, &json.to_string()).await.is_ok();
    client
        .set_compatibility(subject, "BACKWARD_TRANSITIVE")
        .await
        .unwrap();
    ok
}
