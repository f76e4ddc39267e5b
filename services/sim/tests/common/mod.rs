//! Shared setup of the end-to-end tests: a private stack, the in-process registry, topics, the
//! pipeline as processes, the simulator's plan, and the oracle.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use tillstream_integration_tests::pipeline::{Pipeline, PipelineOptions, Service};
use tillstream_integration_tests::{Stack, Svc, TestRegistry, apply_topology};
use tillstream_runtime::kafka::KafkaConfig;
use tillstream_sim::oracle::{self, Report, Topics};
use tillstream_sim::plan::{FleetSpec, Plan, PoisonSpec, generate};
use tillstream_sim::publish::{PublishConfig, PublishReport, publish, publish_price_lists};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub fn small_fleet(seed: u64, events: u64) -> FleetSpec {
    FleetSpec {
        seed,
        stores: 4,
        devices_per_store: 2,
        events,
        start_ms: Some(tillstream_sim::plan::recent_start(
            tillstream_runtime::clock::now_ms(),
            2,
        )),
        ..FleetSpec::default()
    }
}

pub fn with_poison(mut spec: FleetSpec) -> FleetSpec {
    spec.poison = PoisonSpec {
        bad_json: 2,
        missing_field: 1,
        wrong_type: 1,
        oversize: 1,
        spoofed_store: 2,
        unknown_schema_version: 2,
    };
    spec
}

pub struct E2e {
    pub plan: Plan,
    pub stack: Stack,
    pub registry: TestRegistry,
    pub pipeline: Pipeline,
    pub kafka: KafkaConfig,
    pub fleet_csv: PathBuf,
    _dir: tempfile::TempDir,
}

impl E2e {
    pub async fn start(spec: &FleetSpec, backend: Backend) -> E2e {
        Self::start_with(spec, backend, BTreeMap::new()).await
    }

    pub async fn start_with(
        spec: &FleetSpec,
        backend: Backend,
        extra_env: BTreeMap<Service, Vec<(String, String)>>,
    ) -> E2e {
        let plan = generate(spec);
        let dir = tempfile::tempdir().unwrap();
        let fleet_csv = dir.path().join("devices.csv");
        std::fs::write(&fleet_csv, plan.fleet_csv()).unwrap();
        let mut svcs = vec![Svc::Tansu, Svc::Mosquitto];
        if backend == Backend::Postgres {
            svcs.push(Svc::Postgres);
        }
        let stack = Stack::start(&svcs, Some(&fleet_csv)).unwrap();
        let registry = TestRegistry::start().await.unwrap();
        let kafka = stack.kafka();
        apply_topology(&kafka).await.unwrap();
        let opts = PipelineOptions {
            registry_url: registry.url.clone(),
            fleet_csv: fleet_csv.clone(),
            database_url: (backend == Backend::Postgres).then(|| stack.pg_url()),
            extra_env,
        };
        let pipeline = Pipeline::start(&stack, opts).await.unwrap();
        E2e {
            plan,
            stack,
            registry,
            pipeline,
            kafka,
            fleet_csv,
            _dir: dir,
        }
    }

    pub fn publish_config(&self) -> PublishConfig {
        PublishConfig {
            port: self.stack.mqtt_port(),
            offline_for: Duration::from_millis(200),
            timeout: Duration::from_secs(600),
            ..Default::default()
        }
    }

    /// The cloud side: the plan's approved price lists onto the downlink topic.
    pub async fn publish_price_lists(&self) {
        let n = publish_price_lists(
            &self.plan,
            &self.kafka,
            &self.registry.client(),
            &Topics::default().downlink,
        )
        .await
        .unwrap();
        assert_eq!(n, self.plan.price_lists.len());
    }

    /// Publishes the price lists, then every device's events.
    pub async fn publish(&self) -> PublishReport {
        self.publish_price_lists().await;
        publish(&self.plan, &self.publish_config()).await.unwrap()
    }

    /// Publishes the price lists, then the devices' events at `rate` events/s in the background
    /// (so faults can be injected meanwhile).
    pub async fn publish_in_background(&self, rate: u64) -> tokio::task::JoinHandle<PublishReport> {
        self.publish_price_lists().await;
        let plan = self.plan.clone();
        let cfg = PublishConfig {
            rate,
            ..self.publish_config()
        };
        tokio::spawn(async move { publish(&plan, &cfg).await.unwrap() })
    }

    /// Waits for the pipeline to drain, then runs the full oracle.
    pub async fn oracle(&self) -> Report {
        self.oracle_with(oracle::Allowances::default()).await
    }

    pub async fn oracle_with(&self, allow: oracle::Allowances) -> Report {
        let topics = Topics::default();
        let db = self.pipeline.database_url();
        let drained = oracle::wait_drained(
            &self.kafka,
            &topics,
            Some(&db),
            &self.plan.truth,
            Duration::from_secs(240),
            Duration::from_secs(3),
        )
        .await;
        if let Err(p) = &drained {
            eprintln!("pipeline did not drain: {p:?}\n{}", self.pipeline.logs(40));
        }
        let client = self.registry.client();
        let k = oracle::observe_kafka(&self.kafka, &client, &topics)
            .await
            .unwrap();
        let d = oracle::observe_db(&db, &oracle::DbQueries::default())
            .await
            .unwrap();
        let access = oracle::MqttAccess {
            host: "127.0.0.1".into(),
            port: self.stack.mqtt_port(),
            user: "admin".into(),
            password: "admin-dev".into(),
        };
        let c = oracle::observe_catalog(
            &access,
            &self.plan.truth.price_lists,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
        let observed = oracle::Observed {
            kafka: Some(&k),
            db: Some(&d),
            catalog: Some(&c),
        };
        oracle::compare_with(&self.plan.truth, observed, allow)
    }

    pub async fn assert_oracle_passes(&self) {
        self.assert_oracle_passes_with(oracle::Allowances::default())
            .await
    }

    pub async fn assert_oracle_passes_with(&self, allow: oracle::Allowances) {
        let report = self.oracle_with(allow).await;
        let t = &self.plan.truth;
        let text = format!(
            "published: {} events ({} duplicates, {} collision variants, {} poison) from {} devices\n{}",
            t.published.get("event").copied().unwrap_or(0),
            t.published.get("duplicate").copied().unwrap_or(0),
            t.published.get("collision").copied().unwrap_or(0),
            t.published.get("poison").copied().unwrap_or(0),
            self.plan.devices.len(),
            report.render(30)
        );
        println!("{text}");
        assert!(
            report.passed(),
            "oracle failed:\n{text}\n{}",
            self.pipeline.logs(40)
        );
    }
}
