//! Shared setup of the end-to-end tests: a private stack, the in-process registry, topics, the
//! pipeline as processes, the simulator's plan, and the oracle.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tillstream_integration_tests::pipeline::{Pipeline, PipelineOptions, Service};
use tillstream_integration_tests::{Stack, Svc, TestRegistry, apply_topology};
use tillstream_runtime::kafka::KafkaConfig;
use tillstream_sim::late;
use tillstream_sim::oracle::{self, Report, Topics};
use tillstream_sim::plan::{FleetSpec, Plan, PoisonSpec, generate};
use tillstream_sim::pricing::{PriceListTopic, publish_price_lists};
use tillstream_sim::publish::{PublishConfig, PublishReport, Untracked, publish};

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
        spoofed_device: 2,
        unknown_schema_version: 2,
    };
    spec
}

/// The dedup's batch bound in these runs: its at-least-once window (the output set re-emitted after a
/// crash, or re-sent after a failed delivery) is at most this many records, so allowances derive
/// from it instead of from the size of the run.
pub const DEDUP_MAX_BATCH: u64 = 500;

/// How long the late tills wait for their store-days to be exported.
const LATE_WAIT: Duration = Duration::from_secs(300);

pub struct E2e {
    pub plan: Plan,
    /// PUBACKs of planned publishes so far (faults fire on the fleet's observed progress).
    pub acked: Arc<AtomicU64>,
    /// When the broker acknowledged each publish no receipt covers (see `lost_in_window`).
    pub untracked_acks: Arc<Mutex<Vec<(Instant, Untracked)>>>,
    /// When the injected fault ended (for the catch-up time).
    fault_ended: Mutex<Option<Instant>>,
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
        std::fs::write(dir.path().join("stores.csv"), plan.stores_csv()).unwrap();
        let mut svcs = vec![Svc::Tansu, Svc::Mosquitto];
        if backend == Backend::Postgres {
            svcs.push(Svc::Postgres);
        }
        let stack = Stack::start(&svcs, Some(&fleet_csv)).unwrap();
        let registry = TestRegistry::start().await.unwrap();
        let kafka = stack.kafka();
        apply_topology(&kafka).await.unwrap();
        let mut extra_env = extra_env;
        extra_env.entry(Service::Dedup).or_default().insert(
            0,
            (
                "TILLSTREAM_DEDUP__DEDUP__MAX_BATCH".to_string(),
                DEDUP_MAX_BATCH.to_string(),
            ),
        );
        let opts = PipelineOptions {
            registry_url: registry.url.clone(),
            fleet_csv: fleet_csv.clone(),
            database_url: (backend == Backend::Postgres).then(|| stack.pg_url()),
            extra_env,
        };
        let pipeline = Pipeline::start(&stack, opts).await.unwrap();
        E2e {
            plan,
            acked: Arc::new(AtomicU64::new(0)),
            untracked_acks: Default::default(),
            fault_ended: Mutex::new(None),
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
            tls_dir: self.stack.mqtt_tls_dir(),
            offline_for: Duration::from_millis(200),
            timeout: Duration::from_secs(600),
            acked_progress: self.acked.clone(),
            untracked_acks: self.untracked_acks.clone(),
            ..Default::default()
        }
    }

    /// Waits until the fleet has `n` planned publishes acknowledged (the condition faults fire on:
    /// work is in flight through the pipeline).
    pub async fn wait_acked(&self, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(300);
        while self.acked.load(Ordering::Relaxed) < n {
            assert!(
                Instant::now() < deadline,
                "the fleet did not reach {n} acknowledged publishes (at {})",
                self.acked.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `fraction` of the plan's publishes are acknowledged.
    pub async fn wait_progress(&self, fraction: f64) {
        self.wait_acked((self.plan.publishes() as f64 * fraction) as u64)
            .await
    }

    /// Waits until a metric of a pipeline instance satisfies `ok` (polled; fails after `timeout`).
    pub async fn wait_metric(
        &mut self,
        service: Service,
        index: usize,
        name: &str,
        timeout: Duration,
        ok: impl Fn(f64) -> bool,
    ) -> f64 {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self
                .pipeline
                .instance(service, index)
                .metric(name)
                .await
                .unwrap_or(f64::NAN);
            if ok(v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{service:?}#{index}: {name} = {v} did not reach the condition in {timeout:?}\n{}",
                self.pipeline.logs(30)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What a broker that lost everything it acknowledged between `from` and `to` may have lost
    /// for good: the heartbeats and collision variants acknowledged in that window (store events
    /// are covered by receipts and must all arrive).
    pub fn lost_in_window(&self, from: Instant, to: Instant) -> oracle::Allowances {
        let acks = self.untracked_acks.lock().unwrap();
        let mut allow = oracle::Allowances::default();
        for (at, what) in acks.iter().filter(|(at, _)| *at >= from && *at <= to) {
            let _ = at;
            match what {
                Untracked::Heartbeat => allow.heartbeats_lost += 1,
                Untracked::CollisionVariant(id) => {
                    allow.collisions_lost.insert(id.clone());
                }
                Untracked::Other => {}
            }
        }
        println!(
            "loss window of {:.1} s: {} heartbeat(s) and {} collision variant(s) acknowledged in it may be lost",
            (to - from).as_secs_f64(),
            allow.heartbeats_lost,
            allow.collisions_lost.len()
        );
        allow
    }

    /// Marks the end of the injected fault: the oracle reports how long the pipeline took from here
    /// to drain.
    pub fn fault_ended(&self) {
        *self.fault_ended.lock().unwrap() = Some(Instant::now());
    }

    /// The cloud side: the plan's approved price lists onto the history topic (the conflict
    /// detector replays it), then the downlink topic.
    pub async fn publish_price_lists(&self) {
        let history = publish_price_lists(
            &self.plan,
            &self.kafka,
            &self.registry.client(),
            "tillstream.price-lists.history",
            PriceListTopic::History,
        )
        .await
        .unwrap();
        assert_eq!(history, self.plan.price_lists.len());
        let n = publish_price_lists(
            &self.plan,
            &self.kafka,
            &self.registry.client(),
            &Topics::default().downlink,
            PriceListTopic::Downlink,
        )
        .await
        .unwrap();
        assert_eq!(n, self.plan.price_lists.len());
    }

    /// Publishes the price lists, then every device's events (the late tills once their
    /// store-days were exported, when the scenario started the finance export).
    pub async fn publish(&self) -> PublishReport {
        self.publish_price_lists().await;
        let cfg = self.publish_config();
        match self.late_held_back() {
            Some(dir) => late::publish_late_after_export(&self.plan, &cfg, &dir, LATE_WAIT)
                .await
                .unwrap(),
            None => publish(&self.plan, &cfg).await.unwrap(),
        }
    }

    /// The finance export's folder when the scenario started it (the late tills wait for it).
    fn late_held_back(&self) -> Option<PathBuf> {
        self.has(Service::FinanceExport)
            .then(|| self.pipeline.finance_exports_dir())
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
        let held_back = self.late_held_back();
        tokio::spawn(async move {
            match held_back {
                Some(dir) => late::publish_late_after_export(&plan, &cfg, &dir, LATE_WAIT)
                    .await
                    .unwrap(),
                None => publish(&plan, &cfg).await.unwrap(),
            }
        })
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
            oracle::DrainWait::Fixed(Duration::from_secs(240)),
            Duration::from_secs(3),
        )
        .await;
        if let Err(p) = &drained {
            eprintln!("pipeline did not drain: {p:?}\n{}", self.pipeline.logs(40));
        }
        if let Some(ended) = *self.fault_ended.lock().unwrap() {
            println!(
                "catch-up: drained {:.1} s after the fault ended (3 s of settling included; no process restarted by hand)",
                ended.elapsed().as_secs_f64()
            );
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
            tls_dir: self.stack.mqtt_tls_dir(),
        };
        let c = oracle::observe_catalog(
            &access,
            &self.plan.truth.price_lists,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
        // The conflict detector's rows when the scenario started one (else n/a).
        let conflicts = match self.has(Service::ConflictDetector) {
            true => Some(self.observe_conflicts().await),
            false => None,
        };
        // The finance export's rows when the scenario started one (else n/a).
        let mut truth = self.plan.truth.clone();
        truth.late_held_back = self.has(Service::FinanceExport);
        let finance = match self.has(Service::FinanceExport) {
            true => Some(self.observe_finance(&truth).await),
            false => None,
        };
        let observed = oracle::Observed {
            kafka: Some(&k),
            db: Some(&d),
            catalog: Some(&c),
            conflicts: conflicts.as_ref(),
            finance: finance.as_ref(),
        };
        oracle::compare_with(&truth, observed, allow)
    }

    /// Whether the scenario started `service` (the three core services always are).
    pub fn has(&self, service: Service) -> bool {
        self.pipeline.instances.iter().any(|i| i.service == service)
    }

    /// Starts the conflict detector (its `extra_env` from `start_with`) and waits until it is ready.
    pub async fn start_conflict_detector(&mut self) {
        let index = self.pipeline.add(Service::ConflictDetector).unwrap();
        self.pipeline
            .instance(Service::ConflictDetector, index)
            .wait_ready(Duration::from_secs(60))
            .await
            .unwrap();
    }

    /// Waits for the conflict detector to catch up with the deduplicated topic, then reads what it
    /// wrote.
    async fn observe_conflicts(&self) -> oracle::ConflictsObserved {
        let topics = Topics::default();
        let db = self.pipeline.conflicts_database_url();
        let caught_up = oracle::wait_conflicts_drained(
            &self.kafka,
            &topics,
            &db,
            Duration::from_secs(240),
            Duration::from_secs(3),
        )
        .await;
        if let Err(p) = &caught_up {
            eprintln!(
                "conflict detector did not catch up: {p:?}\n{}",
                self.pipeline.logs(40)
            );
        }
        let mut c = oracle::observe_conflicts(&self.kafka, &self.registry.client(), &topics)
            .await
            .unwrap();
        c.queued_collisions = Some(oracle::observe_conflict_queue(&db).await.unwrap());
        c
    }

    /// Starts the finance export and waits until it is ready.
    pub async fn start_finance_export(&mut self) {
        let index = self.pipeline.add(Service::FinanceExport).unwrap();
        self.pipeline
            .instance(Service::FinanceExport, index)
            .wait_ready(Duration::from_secs(60))
            .await
            .unwrap();
    }

    /// Waits until every store-day of the truth is exported (and the late tills' days adjusted),
    /// then reads the files back with the independent reader.
    async fn observe_finance(
        &self,
        truth: &tillstream_sim::truth::Truth,
    ) -> oracle::FinanceObserved {
        let dir = self.pipeline.finance_exports_dir();
        let done = oracle::wait_finance_exported(
            &dir,
            truth,
            Duration::from_secs(240),
            Duration::from_secs(3),
        )
        .await;
        match &done {
            Ok(p) => println!("finance export caught up: {p}"),
            Err(p) => eprintln!(
                "finance export did not catch up: {p}\n{}",
                self.pipeline.logs(40)
            ),
        }
        let access = oracle::FinanceAccess::new(&dir, &tillstream_integration_tests::repo());
        oracle::observe_finance(&access).await.unwrap()
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
