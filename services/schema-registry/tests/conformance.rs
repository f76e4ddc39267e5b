//! Conformance suite: checks this registry behaves like Confluent's where tillstream relies on it.
//!
//! Runs against the registry at `TILLSTREAM_CONFORMANCE_REGISTRY_URL` when that is set (so the same
//! suite can be pointed at a real Confluent registry); otherwise each test starts this registry
//! in-process on 127.0.0.1:0 with a temporary data directory. Subject names carry a random suffix
//! so tests can share one registry; tests that change the global config or restart the server run
//! only in-process.
//!
//! Client-facing behaviour goes through `schema_registry_converter` (the client tillstream uses);
//! the rest of the REST surface through plain `reqwest`.

use std::path::Path;

use apache_avro::types::Value as Avro;
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::{
    SrSettings, get_all_subjects, get_all_versions, get_schema_by_id,
    get_schema_by_subject_and_version, is_compatible_schema,
};
use schema_registry_converter::schema_registry_common::{
    SchemaType, SubjectNameStrategy, SuppliedReference, SuppliedSchema,
};
use serde_json::{Value, json};
use tillstream_runtime::CancellationToken;
use tillstream_schema_registry::{Config, Level, Running};

const URL_VAR: &str = "TILLSTREAM_CONFORMANCE_REGISTRY_URL";
const CT: &str = "application/vnd.schemaregistry.v1+json";

struct Reg {
    url: String,
    http: reqwest::Client,
    server: Option<(Running, CancellationToken)>,
    dir: Option<tempfile::TempDir>,
}

fn config(dir: &Path) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        default_compatibility: Level::Backward,
        allow_deletes: true,
        ..Config::default()
    }
}

impl Reg {
    async fn new() -> Reg {
        let http = reqwest::Client::new();
        if let Ok(url) = std::env::var(URL_VAR)
            && !url.trim().is_empty()
        {
            return Reg {
                url: url.trim().trim_end_matches('/').to_string(),
                http,
                server: None,
                dir: None,
            };
        }
        let dir = tempfile::tempdir().unwrap();
        let token = CancellationToken::new();
        let running = tillstream_schema_registry::start(config(dir.path()), token.clone())
            .await
            .unwrap();
        Reg {
            url: running.state.url(),
            http,
            server: Some((running, token)),
            dir: Some(dir),
        }
    }

    fn in_process(&self) -> bool {
        self.server.is_some()
    }

    /// Stops the in-process registry and starts a new one on the same data directory.
    async fn restart(&mut self) {
        let (running, token) = self.server.take().expect("in-process only");
        token.cancel();
        running.wait().await.unwrap();
        let dir = self.dir.as_ref().unwrap().path().to_path_buf();
        let token = CancellationToken::new();
        let running = tillstream_schema_registry::start(config(&dir), token.clone())
            .await
            .unwrap();
        self.url = running.state.url();
        self.server = Some((running, token));
        // A fresh client: the old one's pooled connections point at the stopped server.
        self.http = reqwest::Client::new();
    }

    fn settings(&self) -> SrSettings {
        SrSettings::new(self.url.clone())
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let text = resp.text().await.unwrap();
        assert!(
            ct.starts_with(CT) || ct.starts_with("application/json"),
            "content type {ct:?} for {text}"
        );
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.http.get(format!("{}{path}", self.url)))
            .await
    }

    async fn delete(&self, path: &str) -> (u16, Value) {
        self.send(self.http.delete(format!("{}{path}", self.url)))
            .await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(
            self.http
                .post(format!("{}{path}", self.url))
                .header("content-type", CT)
                .body(body.to_string()),
        )
        .await
    }

    async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(
            self.http
                .put(format!("{}{path}", self.url))
                .header("content-type", CT)
                .body(body.to_string()),
        )
        .await
    }

    async fn register(&self, subject: &str, schema: &str) -> u32 {
        let (status, body) = self
            .post(
                &format!("/subjects/{subject}/versions"),
                json!({ "schema": schema }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        id_of(&body)
    }

    async fn set_level(&self, subject: &str, level: &str) {
        let (status, body) = self
            .put(
                &format!("/config/{subject}"),
                json!({ "compatibility": level }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["compatibility"], level);
    }
}

impl Drop for Reg {
    fn drop(&mut self) {
        if let Some((_, token)) = &self.server {
            token.cancel();
        }
    }
}

fn id_of(body: &Value) -> u32 {
    let id = body["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("id must be a JSON integer: {body}"));
    u32::try_from(id).unwrap()
}

fn assert_error(status: u16, body: &Value, want_status: u16, want_code: u64) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error_code"].as_u64(), Some(want_code), "{body}");
    assert!(body["message"].is_string(), "{body}");
}

/// A unique suffix usable in subject names and Avro names.
fn uniq() -> String {
    format!("x{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

fn record(ns: &str, fields: &str) -> String {
    format!(r#"{{"type":"record","name":"Sale","namespace":"{ns}","fields":[{fields}]}}"#)
}

const STORE: &str = r#"{"name":"store","type":"string"}"#;
const AMOUNT: &str = r#"{"name":"amount","type":"long"}"#;
const QTY_DEF: &str = r#"{"name":"qty","type":"int","default":1}"#;
const QTY_DEF2: &str = r#"{"name":"qty","type":"int","default":2}"#;
const QTY: &str = r#"{"name":"qty","type":"int"}"#;

// ------------------------------------------------------------------------------------------------
// Through schema_registry_converter
// ------------------------------------------------------------------------------------------------

#[tokio::test]
async fn converter_encodes_registers_and_decodes() {
    let reg = Reg::new().await;
    let u = uniq();
    let ns = format!("conf.{u}");
    let schema = record(&ns, &format!("{STORE},{AMOUNT}"));
    let topic = format!("conf-enc-{u}");
    let encoder = AvroEncoder::new(reg.settings());
    let supplied =
        SuppliedSchema::new(Some(format!("{ns}.Sale")), SchemaType::Avro, schema.clone());

    // TopicNameStrategy with a supplied schema registers it under "<topic>-value".
    let bytes = encoder
        .encode(
            vec![
                ("store", Avro::String("s42".into())),
                ("amount", Avro::Long(1999)),
            ],
            SubjectNameStrategy::TopicNameStrategyWithSchema(
                topic.clone(),
                false,
                supplied.clone(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(bytes[0], 0, "Confluent magic byte");
    let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    let (status, latest) = reg
        .get(&format!("/subjects/{topic}-value/versions/latest"))
        .await;
    assert_eq!(status, 200, "{latest}");
    assert_eq!(id_of(&latest), id);
    assert_eq!(latest["version"], 1);
    assert_eq!(latest["subject"], format!("{topic}-value"));

    // RecordNameStrategy registers the same schema under its full name: same global id.
    let by_record = encoder
        .encode(
            vec![
                ("store", Avro::String("s1".into())),
                ("amount", Avro::Long(5)),
            ],
            SubjectNameStrategy::RecordNameStrategyWithSchema(supplied.clone()),
        )
        .await
        .unwrap();
    assert_eq!(by_record[1..5], bytes[1..5]);
    let (status, versions) = reg.get(&format!("/subjects/{ns}.Sale/versions")).await;
    assert_eq!((status, versions), (200, json!([1])));

    // encode_struct with the plain TopicNameStrategy uses the latest registered schema.
    #[derive(serde::Serialize)]
    struct Sale {
        store: String,
        amount: i64,
    }
    let from_struct = AvroEncoder::new(reg.settings())
        .encode_struct(
            Sale {
                store: "s7".into(),
                amount: -3,
            },
            &SubjectNameStrategy::TopicNameStrategy(topic.clone(), false),
        )
        .await
        .unwrap();
    assert_eq!(from_struct[1..5], bytes[1..5]);

    // A decoder fetches the writer schema by id and gets the record back.
    let decoder = AvroDecoder::new(reg.settings());
    let decoded = decoder.decode(Some(&bytes)).await.unwrap();
    assert_eq!(
        decoded.value,
        Avro::Record(vec![
            ("store".into(), Avro::String("s42".into())),
            ("amount".into(), Avro::Long(1999)),
        ])
    );
    let decoded = decoder.decode(Some(&from_struct)).await.unwrap();
    assert_eq!(
        decoded.value,
        Avro::Record(vec![
            ("store".into(), Avro::String("s7".into())),
            ("amount".into(), Avro::Long(-3)),
        ])
    );

    // The converter's own lookups.
    let fetched = get_schema_by_id(id, &reg.settings()).await.unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&fetched.schema).unwrap(),
        serde_json::from_str::<Value>(&schema).unwrap()
    );
    let v1 = get_schema_by_subject_and_version(&reg.settings(), &format!("{topic}-value"), Some(1))
        .await
        .unwrap();
    assert_eq!(v1.id, id);
    let subjects = get_all_subjects(&reg.settings()).await.unwrap();
    assert!(subjects.contains(&format!("{topic}-value")), "{subjects:?}");
    assert!(subjects.contains(&format!("{ns}.Sale")), "{subjects:?}");
    let versions = get_all_versions(&reg.settings(), format!("{topic}-value"))
        .await
        .unwrap();
    assert_eq!(versions, vec![1]);
}

#[tokio::test]
async fn converter_compatibility_check() {
    let reg = Reg::new().await;
    let u = uniq();
    let ns = format!("conf.{u}");
    let subject = format!("conf-cc-{u}");
    let supplied = |fields: &str| SuppliedSchema::new(None, SchemaType::Avro, record(&ns, fields));

    // Nothing registered yet: compatible.
    assert!(
        is_compatible_schema(&reg.settings(), subject.clone(), supplied(STORE))
            .await
            .unwrap()
    );
    reg.set_level(&subject, "BACKWARD").await;
    reg.register(&subject, &record(&ns, STORE)).await;
    assert!(
        is_compatible_schema(
            &reg.settings(),
            subject.clone(),
            supplied(&format!("{STORE},{QTY_DEF}"))
        )
        .await
        .unwrap()
    );
    assert!(
        !is_compatible_schema(
            &reg.settings(),
            subject.clone(),
            supplied(&format!("{STORE},{QTY}"))
        )
        .await
        .unwrap()
    );
}

#[tokio::test]
async fn converter_registers_and_resolves_references() {
    let reg = Reg::new().await;
    let u = uniq();
    let ns = format!("conf.{u}");
    let address = format!(
        r#"{{"type":"record","name":"Address","namespace":"{ns}","fields":[{{"name":"street","type":"string"}}]}}"#
    );
    let customer = format!(
        r#"{{"type":"record","name":"Customer","namespace":"{ns}","fields":[{{"name":"name","type":"string"}},{{"name":"home","type":"Address"}}]}}"#
    );
    // (The converter inlines a reference it finds by short name in the same namespace, or by
    // ".namespace.Name"; a plain full name is left as is and its own parser then fails.)
    let addr_subject = format!("conf-ref-addr-{u}");
    let supplied = SuppliedSchema::new(
        Some(format!("{ns}.Customer")),
        SchemaType::Avro,
        customer.clone(),
    )
    .with_references(vec![SuppliedReference::new(
        format!("{ns}.Address"),
        addr_subject.clone(),
        address.clone(),
    )]);
    let topic = format!("conf-ref-{u}");
    let value = Avro::Record(vec![
        ("name".into(), Avro::String("Ada".into())),
        (
            "home".into(),
            Avro::Record(vec![("street".into(), Avro::String("Main St".into()))]),
        ),
    ]);
    let bytes = AvroEncoder::new(reg.settings())
        .encode_value(
            value.clone(),
            &SubjectNameStrategy::TopicNameStrategyWithSchema(topic.clone(), false, supplied),
        )
        .await
        .unwrap();
    let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);

    let (s, b) = reg.get(&format!("/schemas/ids/{id}")).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b["references"],
        json!([{ "name": format!("{ns}.Address"), "subject": addr_subject, "version": 1 }])
    );
    let (s, b) = reg
        .get(&format!("/subjects/{addr_subject}/versions/1/referencedby"))
        .await;
    assert_eq!((s, b), (200, json!([id])));
    // A referenced version cannot be deleted.
    let (s, b) = reg
        .delete(&format!("/subjects/{addr_subject}/versions/1"))
        .await;
    assert_error(s, &b, 422, 42206);

    let decoded = AvroDecoder::new(reg.settings())
        .decode(Some(&bytes))
        .await
        .unwrap();
    assert_eq!(decoded.value, value);
}

#[tokio::test]
async fn concurrent_registrations_of_one_schema_make_one_version() {
    let reg = Reg::new().await;
    let u = uniq();
    let subject = format!("conf-race-{u}");
    let schema = record(&format!("conf.{u}"), STORE);
    let calls = (0..16).map(|_| reg.register(&subject, &schema));
    let ids = futures::future::join_all(calls).await;
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    let (_, versions) = reg.get(&format!("/subjects/{subject}/versions")).await;
    assert_eq!(versions, json!([1]));
}

// ------------------------------------------------------------------------------------------------
// Registering and reading back
// ------------------------------------------------------------------------------------------------

#[tokio::test]
async fn register_is_idempotent_and_ids_are_global() {
    let reg = Reg::new().await;
    let u = uniq();
    let ns = format!("conf.{u}");
    let s1 = format!("conf-idem-{u}");
    let s2 = format!("conf-idem2-{u}");
    reg.set_level(&s1, "BACKWARD").await;
    let schema = record(&ns, &format!("{STORE},{QTY_DEF}"));
    let id = reg.register(&s1, &schema).await;
    assert_eq!(reg.register(&s1, &schema).await, id);
    // Whitespace differences are the same schema.
    let pretty =
        serde_json::to_string_pretty(&serde_json::from_str::<Value>(&schema).unwrap()).unwrap();
    assert_eq!(reg.register(&s1, &pretty).await, id);
    let (_, versions) = reg.get(&format!("/subjects/{s1}/versions")).await;
    assert_eq!(versions, json!([1]));
    // Same schema under another subject: same id.
    assert_eq!(reg.register(&s2, &schema).await, id);
    // A changed default is a different schema: new id, new version.
    let changed = record(&ns, &format!("{STORE},{QTY_DEF2}"));
    let id2 = reg.register(&s1, &changed).await;
    assert_ne!(id2, id);
    let (_, versions) = reg.get(&format!("/subjects/{s1}/versions")).await;
    assert_eq!(versions, json!([1, 2]));
    // Register with an explicit schemaType and empty references.
    let (status, body) = reg
        .post(
            &format!("/subjects/{s1}/versions"),
            json!({ "schema": changed, "schemaType": "AVRO", "references": [] }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(id_of(&body), id2);
}

#[tokio::test]
async fn read_endpoints() {
    let reg = Reg::new().await;
    let u = uniq();
    let ns = format!("conf.{u}");
    let subject = format!("conf-read-{u}");
    reg.set_level(&subject, "BACKWARD").await;
    let v1 = record(&ns, STORE);
    let v2 = record(&ns, &format!("{STORE},{QTY_DEF}"));
    let id1 = reg.register(&subject, &v1).await;
    let id2 = reg.register(&subject, &v2).await;
    let parsed = |s: &str| serde_json::from_str::<Value>(s).unwrap();

    let (status, body) = reg.get(&format!("/schemas/ids/{id1}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(parsed(body["schema"].as_str().unwrap()), parsed(&v1));
    if let Some(t) = body.get("schemaType") {
        assert_eq!(t, "AVRO");
    }

    let (status, body) = reg.get(&format!("/schemas/ids/{id2}/versions")).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.as_array()
            .unwrap()
            .contains(&json!({ "subject": subject, "version": 2 })),
        "{body}"
    );

    let (status, body) = reg.get("/subjects").await;
    assert_eq!(status, 200);
    assert!(body.as_array().unwrap().contains(&json!(subject)));

    let (status, body) = reg.get(&format!("/subjects/{subject}/versions")).await;
    assert_eq!((status, body), (200, json!([1, 2])));

    for (path, version, id, text) in [
        ("1", 1, id1, &v1),
        ("2", 2, id2, &v2),
        ("latest", 2, id2, &v2),
    ] {
        let (status, body) = reg
            .get(&format!("/subjects/{subject}/versions/{path}"))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["subject"], subject.as_str());
        assert_eq!(body["version"], version);
        assert_eq!(id_of(&body), id);
        assert_eq!(parsed(body["schema"].as_str().unwrap()), parsed(text));

        let (status, raw) = reg
            .get(&format!("/subjects/{subject}/versions/{path}/schema"))
            .await;
        assert_eq!(status, 200);
        assert_eq!(raw, parsed(text));
    }

    // Lookup: is this schema registered under the subject?
    let (status, body) = reg
        .post(&format!("/subjects/{subject}"), json!({ "schema": v1 }))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["subject"], subject.as_str());
    assert_eq!(body["version"], 1);
    assert_eq!(id_of(&body), id1);
    assert!(body["schema"].is_string());
}

// ------------------------------------------------------------------------------------------------
// Errors
// ------------------------------------------------------------------------------------------------

#[tokio::test]
async fn error_codes() {
    let reg = Reg::new().await;
    let u = uniq();
    let ns = format!("conf.{u}");
    let subject = format!("conf-err-{u}");
    let missing = format!("conf-missing-{u}");
    reg.set_level(&subject, "BACKWARD").await;
    reg.register(&subject, &record(&ns, STORE)).await;

    // 40401 subject not found
    let (s, b) = reg.get(&format!("/subjects/{missing}/versions")).await;
    assert_error(s, &b, 404, 40401);
    let (s, b) = reg.get(&format!("/subjects/{missing}/versions/1")).await;
    assert_error(s, &b, 404, 40401);
    let (s, b) = reg
        .post(
            &format!("/subjects/{missing}"),
            json!({ "schema": record(&ns, STORE) }),
        )
        .await;
    assert_error(s, &b, 404, 40401);
    let (s, b) = reg.delete(&format!("/subjects/{missing}")).await;
    assert_error(s, &b, 404, 40401);

    // 40402 version not found
    let (s, b) = reg.get(&format!("/subjects/{subject}/versions/99")).await;
    assert_error(s, &b, 404, 40402);

    // 40403 schema not found
    let (s, b) = reg.get("/schemas/ids/2147483647").await;
    assert_error(s, &b, 404, 40403);
    let (s, b) = reg
        .post(
            &format!("/subjects/{subject}"),
            json!({ "schema": record(&ns, AMOUNT) }),
        )
        .await;
    assert_error(s, &b, 404, 40403);

    // 40408 no subject-level compatibility
    let (s, b) = reg.get(&format!("/config/{missing}")).await;
    assert_error(s, &b, 404, 40408);

    // 42201 invalid schema
    for bad in [
        json!({ "schema": "not json at all" }),
        json!({ "schema": r#"{"type":"record","name":"NoFields"}"# }),
        json!({ "schema": r#"{"type":"nonsense"}"# }),
        json!({ "schema": "" }),
    ] {
        let (s, b) = reg
            .post(&format!("/subjects/{subject}/versions"), bad.clone())
            .await;
        assert_error(s, &b, 422, 42201);
    }
    // A non-AVRO schemaType (here an Avro text, which is not valid Protobuf either).
    let (s, b) = reg
        .post(
            &format!("/subjects/{subject}/versions"),
            json!({ "schema": record(&ns, STORE), "schemaType": "PROTOBUF" }),
        )
        .await;
    assert_error(s, &b, 422, 42201);

    // 42202 invalid version
    for v in ["abc", "0", "1.5"] {
        let (s, b) = reg.get(&format!("/subjects/{subject}/versions/{v}")).await;
        assert_error(s, &b, 422, 42202);
    }

    // 409 incompatible
    let (s, b) = reg
        .post(
            &format!("/subjects/{subject}/versions"),
            json!({ "schema": record(&ns, &format!("{STORE},{QTY}")) }),
        )
        .await;
    assert_error(s, &b, 409, 409);

    // Unknown routes answer JSON too.
    let (s, b) = reg.get(&format!("/no/such/route/{u}")).await;
    assert_eq!(s, 404, "{b}");
    assert!(b["error_code"].is_u64(), "{b}");
}

// ------------------------------------------------------------------------------------------------
// Config
// ------------------------------------------------------------------------------------------------

#[tokio::test]
async fn subject_config() {
    let reg = Reg::new().await;
    let subject = format!("conf-cfg-{}", uniq());
    let (s, global) = reg.get("/config").await;
    assert_eq!(s, 200);
    let global_level = global["compatibilityLevel"].as_str().unwrap().to_string();

    let (s, b) = reg.get(&format!("/config/{subject}")).await;
    assert_error(s, &b, 404, 40408);
    let (s, b) = reg
        .get(&format!("/config/{subject}?defaultToGlobal=true"))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["compatibilityLevel"], global_level.as_str());

    reg.set_level(&subject, "FULL_TRANSITIVE").await;
    let (s, b) = reg.get(&format!("/config/{subject}")).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["compatibilityLevel"], "FULL_TRANSITIVE");

    let (s, b) = reg
        .put(
            &format!("/config/{subject}"),
            json!({ "compatibility": "SIDEWAYS" }),
        )
        .await;
    assert_error(s, &b, 422, 42203);

    let (s, b) = reg.delete(&format!("/config/{subject}")).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = reg.get(&format!("/config/{subject}")).await;
    assert_error(s, &b, 404, 40408);
}

#[tokio::test]
async fn global_config() {
    let reg = Reg::new().await;
    if !reg.in_process() {
        eprintln!("skipped: changes the global level of a shared registry");
        return;
    }
    let (s, b) = reg.get("/config").await;
    assert_eq!((s, b), (200, json!({ "compatibilityLevel": "BACKWARD" })));
    let (s, b) = reg.put("/config", json!({ "compatibility": "FULL" })).await;
    assert_eq!((s, b), (200, json!({ "compatibility": "FULL" })));
    let (s, b) = reg.get("/config").await;
    assert_eq!((s, b), (200, json!({ "compatibilityLevel": "FULL" })));

    // The global level governs subjects without their own.
    let u = uniq();
    let ns = format!("conf.{u}");
    let subject = format!("conf-glob-{u}");
    reg.register(&subject, &record(&ns, STORE)).await;
    // Forward-only change (new field without default): rejected under FULL.
    let (s, b) = reg
        .post(
            &format!("/subjects/{subject}/versions"),
            json!({ "schema": record(&ns, &format!("{STORE},{QTY}")) }),
        )
        .await;
    assert_error(s, &b, 409, 409);
    let (s, _) = reg
        .put("/config", json!({ "compatibility": "FORWARD" }))
        .await;
    assert_eq!(s, 200);
    reg.register(&subject, &record(&ns, &format!("{STORE},{QTY}")))
        .await;
}

// ------------------------------------------------------------------------------------------------
// Compatibility endpoints
// ------------------------------------------------------------------------------------------------

#[tokio::test]
async fn compatibility_endpoints() {
    let reg = Reg::new().await;
    let u = uniq();
    let ns = format!("conf.{u}");
    let subject = format!("conf-compat-{u}");
    let missing = format!("conf-compat-missing-{u}");
    let good = json!({ "schema": record(&ns, &format!("{STORE},{QTY_DEF}")) });
    let bad = json!({ "schema": record(&ns, &format!("{STORE},{QTY}")) });

    // Unknown subject: compatible for the no-version and `latest` forms...
    let (s, b) = reg
        .post(
            &format!("/compatibility/subjects/{missing}/versions"),
            good.clone(),
        )
        .await;
    assert_eq!((s, &b["is_compatible"]), (200, &json!(true)), "{b}");
    // ...not found for a numbered version (Confluent versions differ on 40401/40402 here).
    let (s, b) = reg
        .post(
            &format!("/compatibility/subjects/{missing}/versions/1"),
            good.clone(),
        )
        .await;
    assert_eq!(s, 404, "{b}");
    assert!(
        matches!(b["error_code"].as_u64(), Some(40401 | 40402)),
        "{b}"
    );

    reg.set_level(&subject, "BACKWARD").await;
    reg.register(&subject, &record(&ns, STORE)).await;
    for path in ["versions", "versions/latest", "versions/1"] {
        let url = format!("/compatibility/subjects/{subject}/{path}");
        let (s, b) = reg.post(&url, good.clone()).await;
        assert_eq!((s, &b["is_compatible"]), (200, &json!(true)), "{path}: {b}");
        let (s, b) = reg.post(&url, bad.clone()).await;
        assert_eq!(
            (s, &b["is_compatible"]),
            (200, &json!(false)),
            "{path}: {b}"
        );
        let (s, b) = reg.post(&format!("{url}?verbose=true"), bad.clone()).await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(b["is_compatible"], false);
        assert!(
            !b["messages"].as_array().unwrap().is_empty(),
            "{path}: verbose must explain: {b}"
        );
    }
    let (s, b) = reg
        .post(
            &format!("/compatibility/subjects/{subject}/versions/7"),
            good.clone(),
        )
        .await;
    assert_error(s, &b, 404, 40402);
    let (s, b) = reg
        .post(
            &format!("/compatibility/subjects/{subject}/versions/x"),
            good.clone(),
        )
        .await;
    assert_error(s, &b, 422, 42202);
    let (s, b) = reg
        .post(
            &format!("/compatibility/subjects/{subject}/versions"),
            json!({ "schema": "{" }),
        )
        .await;
    assert_error(s, &b, 422, 42201);
}

#[tokio::test]
async fn transitive_levels_check_every_version() {
    let reg = Reg::new().await;
    let u = uniq();
    let ns = format!("conf.{u}");
    let plain = format!("conf-bw-{u}");
    let transitive = format!("conf-bwt-{u}");
    reg.set_level(&plain, "BACKWARD").await;
    reg.set_level(&transitive, "BACKWARD_TRANSITIVE").await;
    let v1 = record(&ns, STORE);
    let v2 = record(&ns, &format!("{STORE},{QTY_DEF}"));
    let v3 = record(&ns, &format!("{STORE},{QTY}")); // reads v2 data, not v1 data
    for s in [&plain, &transitive] {
        reg.register(s, &v1).await;
        reg.register(s, &v2).await;
    }
    reg.register(&plain, &v3).await;
    let (s, b) = reg
        .post(
            &format!("/subjects/{transitive}/versions"),
            json!({ "schema": v3 }),
        )
        .await;
    assert_error(s, &b, 409, 409);
    let (s, b) = reg
        .post(
            &format!("/compatibility/subjects/{transitive}/versions"),
            json!({ "schema": v3 }),
        )
        .await;
    assert_eq!((s, &b["is_compatible"]), (200, &json!(false)), "{b}");

    // FORWARD: removing a field the old schema needs is rejected; NONE lets anything through.
    let fw = format!("conf-fw-{u}");
    reg.set_level(&fw, "FORWARD").await;
    reg.register(&fw, &record(&ns, &format!("{STORE},{QTY}")))
        .await;
    let (s, b) = reg
        .post(&format!("/subjects/{fw}/versions"), json!({ "schema": v1 }))
        .await;
    assert_error(s, &b, 409, 409);
    reg.set_level(&fw, "NONE").await;
    reg.register(&fw, &v1).await;
}

// ------------------------------------------------------------------------------------------------
// Deletes
// ------------------------------------------------------------------------------------------------

#[tokio::test]
async fn deletes() {
    let reg = Reg::new().await;
    let u = uniq();
    let ns = format!("conf.{u}");
    let subject = format!("conf-del-{u}");
    reg.set_level(&subject, "BACKWARD").await;
    let v1 = record(&ns, STORE);
    let id1 = reg.register(&subject, &v1).await;
    reg.register(&subject, &record(&ns, &format!("{STORE},{QTY_DEF}")))
        .await;

    let (s, b) = reg.delete(&format!("/subjects/{subject}/versions/1")).await;
    assert_eq!((s, b), (200, json!(1)));
    let (s, b) = reg.get(&format!("/subjects/{subject}/versions/1")).await;
    assert_error(s, &b, 404, 40402);
    let (s, b) = reg
        .get(&format!("/subjects/{subject}/versions/1?deleted=true"))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(id_of(&b), id1);
    let (s, b) = reg.get(&format!("/subjects/{subject}/versions")).await;
    assert_eq!((s, b), (200, json!([2])));
    let (s, b) = reg.delete(&format!("/subjects/{subject}/versions/1")).await;
    assert_error(s, &b, 404, 40406);
    let (s, b) = reg
        .delete(&format!("/subjects/{subject}/versions/2?permanent=true"))
        .await;
    assert_error(s, &b, 404, 40407);
    let (s, b) = reg
        .delete(&format!("/subjects/{subject}/versions/1?permanent=true"))
        .await;
    assert_eq!((s, b), (200, json!(1)));

    let (s, b) = reg.delete(&format!("/subjects/{subject}")).await;
    assert_eq!((s, b), (200, json!([2])));
    let (s, b) = reg.get(&format!("/subjects/{subject}/versions")).await;
    assert_error(s, &b, 404, 40401);
    let (_, b) = reg.get("/subjects").await;
    assert!(!b.as_array().unwrap().contains(&json!(subject)));
    let (_, b) = reg.get("/subjects?deleted=true").await;
    assert!(b.as_array().unwrap().contains(&json!(subject)));
    let (s, b) = reg
        .delete(&format!("/subjects/{subject}?permanent=true"))
        .await;
    assert_eq!((s, b), (200, json!([2])));
    let (_, b) = reg.get("/subjects?deleted=true").await;
    assert!(!b.as_array().unwrap().contains(&json!(subject)));

    // The id still resolves (consumers may hold old messages) and is reused for the same schema.
    let (s, _) = reg.get(&format!("/schemas/ids/{id1}")).await;
    assert_eq!(s, 200);
    assert_eq!(reg.register(&subject, &v1).await, id1);
}

// ------------------------------------------------------------------------------------------------
// Transport details
// ------------------------------------------------------------------------------------------------

#[tokio::test]
async fn accepts_plain_json_content_type() {
    let reg = Reg::new().await;
    let u = uniq();
    let subject = format!("conf-ct-{u}");
    let schema = record(&format!("conf.{u}"), STORE);
    for ct in [
        "application/json",
        CT,
        "application/vnd.schemaregistry+json",
    ] {
        let (s, b) = reg
            .send(
                reg.http
                    .post(format!("{}/subjects/{subject}/versions", reg.url))
                    .header("content-type", ct)
                    .header("accept", CT)
                    .body(json!({ "schema": schema }).to_string()),
            )
            .await;
        assert_eq!(s, 200, "{ct}: {b}");
        assert!(b["id"].is_u64());
    }
}

#[tokio::test]
async fn restart_keeps_subjects_versions_ids_and_configs() {
    let mut reg = Reg::new().await;
    if !reg.in_process() {
        eprintln!("skipped: needs an in-process registry to restart");
        return;
    }
    let u = uniq();
    let ns = format!("conf.{u}");
    let subject = format!("conf-restart-{u}");
    reg.set_level(&subject, "FULL").await;
    let (s, _) = reg.put("/config", json!({ "compatibility": "NONE" })).await;
    assert_eq!(s, 200);
    let id1 = reg.register(&subject, &record(&ns, STORE)).await;
    let id2 = reg
        .register(&subject, &record(&ns, &format!("{STORE},{QTY_DEF}")))
        .await;
    let other = reg
        .register(&format!("{subject}-b"), &record(&ns, AMOUNT))
        .await;
    reg.delete(&format!("/subjects/{subject}-b")).await;

    reg.restart().await;

    let (_, b) = reg.get(&format!("/subjects/{subject}/versions")).await;
    assert_eq!(b, json!([1, 2]));
    let (_, b) = reg.get(&format!("/subjects/{subject}/versions/1")).await;
    assert_eq!(id_of(&b), id1);
    let (_, b) = reg
        .get(&format!("/subjects/{subject}/versions/latest"))
        .await;
    assert_eq!(id_of(&b), id2);
    let (_, b) = reg.get(&format!("/config/{subject}")).await;
    assert_eq!(b["compatibilityLevel"], "FULL");
    let (_, b) = reg.get("/config").await;
    assert_eq!(b["compatibilityLevel"], "NONE");
    let (s, b) = reg.get(&format!("/subjects/{subject}-b/versions")).await;
    assert_error(s, &b, 404, 40401);
    let (s, _) = reg.get(&format!("/schemas/ids/{other}")).await;
    assert_eq!(s, 200);
    // Same schema, same id; a new schema gets an id never handed out before.
    assert_eq!(reg.register(&subject, &record(&ns, STORE)).await, id1);
    let id3 = reg
        .register(
            &subject,
            &record(
                &ns,
                &format!(
                    "{STORE},{QTY_DEF},{}",
                    r#"{"name":"n","type":"string","default":""}"#
                ),
            ),
        )
        .await;
    assert!(id3 > id1.max(id2).max(other), "{id3}");
}

#[tokio::test]
async fn ops_endpoint_reports_ready_and_metrics() {
    let reg = Reg::new().await;
    let Some((running, _)) = &reg.server else {
        eprintln!("skipped: needs an in-process registry");
        return;
    };
    let ops = format!("http://{}", running.ops_addr);
    reg.get("/subjects").await;
    let ready = reg.http.get(format!("{ops}/readyz")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    let text = reg
        .http
        .get(format!("{ops}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("tillstream_schema_registry_requests_total"),
        "{text}"
    );
    assert!(
        text.contains("tillstream_schema_registry_schemas"),
        "{text}"
    );
}

/// Without `allow_deletes` (the default) every DELETE is refused and nothing is deleted.
#[tokio::test]
async fn deletes_are_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let token = CancellationToken::new();
    let cfg = Config {
        allow_deletes: false,
        ..config(dir.path())
    };
    let running = tillstream_schema_registry::start(cfg, token.clone())
        .await
        .unwrap();
    let reg = Reg {
        url: running.state.url(),
        http: reqwest::Client::new(),
        server: None,
        dir: None,
    };
    let ns = uniq();
    let subject = format!("{ns}-value");
    let (s, b) = reg
        .post(
            &format!("/subjects/{subject}/versions"),
            json!({ "schema": record(&ns, STORE) }),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    for path in [
        format!("/subjects/{subject}/versions/1"),
        format!("/subjects/{subject}?permanent=true"),
        format!("/config/{subject}"),
        "/config".to_string(),
    ] {
        let (s, b) = reg.delete(&path).await;
        assert_error(s, &b, 405, 405);
        assert!(
            b["message"].as_str().unwrap().contains("allow_deletes"),
            "{b}"
        );
    }
    let (s, b) = reg.get(&format!("/subjects/{subject}/versions/1")).await;
    assert_eq!(s, 200, "still there: {b}");
    token.cancel();
    running.wait().await.unwrap();
}

/// Behind basic auth every request without the credentials is refused (401), and the project's
/// registry client, configured with them, registers and reads.
#[tokio::test]
async fn basic_auth_refuses_requests_without_the_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let token = CancellationToken::new();
    let cfg = Config {
        basic_auth: Some(tillstream_schema_registry::config::BasicAuth {
            username: "gate".into(),
            password: "s3cret".into(),
        }),
        ..config(dir.path())
    };
    let running = tillstream_schema_registry::start(cfg, token.clone())
        .await
        .unwrap();
    let http = reqwest::Client::new();
    for auth in [None, Some(("gate", "wrong")), Some(("other", "s3cret"))] {
        let mut req = http.get(format!("{}/subjects", running.state.url()));
        if let Some((u, p)) = auth {
            req = req.basic_auth(u, Some(p));
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401, "{auth:?}");
        assert_eq!(
            r.headers()["www-authenticate"],
            "Basic realm=\"tillstream-registry\"",
            "a client is told to authenticate"
        );
        let b: serde_json::Value = r.json().await.unwrap();
        assert_eq!(b["error_code"], 401, "{b}");
    }
    let client = tillstream_contracts::Registry::new(tillstream_contracts::RegistryConfig {
        url: running.state.url(),
        auto_register: true,
        basic_auth_user: Some("gate".into()),
        basic_auth_password: Some("s3cret".into()),
        ..Default::default()
    })
    .unwrap();
    client
        .warm_up(&[tillstream_contracts::EventKind::OrderCreated])
        .await
        .unwrap();
    let r = http
        .get(format!("{}/subjects", running.state.url()))
        .basic_auth("gate", Some("s3cret"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let subjects: Vec<String> = r.json().await.unwrap();
    assert!(
        !subjects.is_empty(),
        "the client registered through the auth"
    );
    token.cancel();
    running.wait().await.unwrap();
}
