//! The tillstream services as real processes for end-to-end tests: the store bridge, dedup and the
//! inventory projection (and, added by the scenarios that need them, the conflict detector and the
//! finance export), each
//! started from its built binary with its configuration in environment variables, logging to a file
//! in the test's folder. Tests kill -9, SIGTERM, restart, or add a second instance of any of them.
//! Processes are killed (by PID) when the `Pipeline` is dropped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::{Stack, free_port, repo};

/// The services of the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Service {
    Bridge,
    Dedup,
    Projection,
    /// Not in [`Service::ALL`]: a scenario that needs it starts it with [`Pipeline::add`].
    ConflictDetector,
    /// Not in [`Service::ALL`] either; its store master data is `stores.csv` beside the fleet
    /// registry (the simulator writes both).
    FinanceExport,
}

impl Service {
    pub const ALL: [Service; 3] = [Service::Bridge, Service::Dedup, Service::Projection];

    pub fn binary(self) -> &'static str {
        match self {
            Service::Bridge => "tillstream-store-bridge",
            Service::Dedup => "tillstream-dedup",
            Service::Projection => "tillstream-inventory-projection",
            Service::ConflictDetector => "tillstream-conflict-detector",
            Service::FinanceExport => "tillstream-finance-export",
        }
    }

    fn env_prefix(self) -> &'static str {
        match self {
            Service::Bridge => "TILLSTREAM_STORE_BRIDGE__",
            Service::Dedup => "TILLSTREAM_DEDUP__",
            Service::Projection => "TILLSTREAM_INVENTORY_PROJECTION__",
            Service::ConflictDetector => "TILLSTREAM_CONFLICT_DETECTOR__",
            Service::FinanceExport => "TILLSTREAM_FINANCE_EXPORT__",
        }
    }
}

/// Where a binary of this workspace is: `TILLSTREAM_BIN_DIR` (as for scripts/stack; benchmarks
/// point it at the release build), else `target/debug` (`CARGO_TARGET_DIR` respected).
pub fn binary_path(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("TILLSTREAM_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"));
    target.join("debug").join(name)
}

/// How the pipeline is wired.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    pub registry_url: String,
    pub fleet_csv: PathBuf,
    /// Projection database URL; default: a SQLite file in the test folder.
    pub database_url: Option<String>,
    /// Extra environment per service (e.g. batch sizes).
    pub extra_env: BTreeMap<Service, Vec<(String, String)>>,
}

/// One running (or stopped) instance of a service.
#[derive(Debug)]
pub struct Instance {
    pub service: Service,
    pub index: usize,
    pub ops_port: u16,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
}

impl Instance {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let bin = binary_path(self.service.binary());
        if !bin.exists() {
            bail!(
                "{} is not built (run `cargo build --workspace` first)",
                bin.display()
            );
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(&bin)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("TILLSTREAM_LOG", "info,rdkafka=warn,rumqttc=warn,sqlx=warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait up to `timeout` for a clean exit (SIGKILL after). Returns the exit status
    /// code when it exited by itself.
    pub fn terminate(&mut self, timeout: Duration) -> Option<i32> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Freezes the process (SIGSTOP): it holds its connections and does nothing.
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal("STOP")
    }

    /// Thaws a paused process (SIGCONT).
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal("CONT")
    }

    fn signal(&self, sig: &str) -> anyhow::Result<()> {
        let pid = self.pid().context("instance is not running")?;
        if !Command::new("kill")
            .args([&format!("-{sig}"), &pid.to_string()])
            .status()?
            .success()
        {
            bail!("kill -{sig} {pid} failed");
        }
        Ok(())
    }

    /// Sets (or replaces) an environment variable for the next start.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
    }

    /// The sum of every sample of metric `name` on the instance's `/metrics` (0 if absent).
    pub async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        Ok(metric_sum(&self.metrics().await?, name))
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let url = format!("http://127.0.0.1:{}/readyz", self.ops_port);
        let client = reqwest::Client::new();
        let deadline = Instant::now() + timeout;
        loop {
            if !self.is_running() {
                bail!(
                    "{:?}#{} exited during start-up; log {}:\n{}",
                    self.service,
                    self.index,
                    self.log.display(),
                    tail(&self.log, 30)
                );
            }
            if let Ok(r) = client.get(&url).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{:?}#{} not ready after {timeout:?}; log {}:\n{}",
                    self.service,
                    self.index,
                    self.log.display(),
                    tail(&self.log, 30)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The service's Prometheus text.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        Ok(
            reqwest::get(format!("http://127.0.0.1:{}/metrics", self.ops_port))
                .await?
                .text()
                .await?,
        )
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The sum of every sample of metric `name` in Prometheus text (0 if absent).
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The last `n` lines of a log file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The running pipeline of one test.
#[derive(Debug)]
pub struct Pipeline {
    dir: PathBuf,
    opts: PipelineOptions,
    common: Vec<(String, String)>,
    pub instances: Vec<Instance>,
}

impl Pipeline {
    /// Starts one instance of each service against `stack` and waits until all are ready.
    pub async fn start(stack: &Stack, opts: PipelineOptions) -> anyhow::Result<Pipeline> {
        let dir = stack.dir().join("pipeline");
        std::fs::create_dir_all(&dir)?;
        let common = vec![
            ("TILLSTREAM_KAFKA_BROKERS".to_string(), stack.brokers()),
            (
                "TILLSTREAM_REGISTRY_URL".to_string(),
                opts.registry_url.clone(),
            ),
            ("TILLSTREAM_MQTT_URL".to_string(), stack.mqtt_url()),
            (
                "TILLSTREAM_MQTT_TLS_DIR".to_string(),
                stack
                    .mqtt_tls_dir()
                    .map(|d| d.display().to_string())
                    .unwrap_or_default(),
            ),
        ];
        let mut p = Pipeline {
            dir,
            opts,
            common,
            instances: Vec::new(),
        };
        for s in Service::ALL {
            p.add(s)?;
        }
        for i in &mut p.instances {
            i.wait_ready(Duration::from_secs(60)).await?;
        }
        Ok(p)
    }

    pub fn database_url(&self) -> String {
        self.opts
            .database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.dir.join("projection.db").display()))
    }

    /// The conflict detector's database (a SQLite file in the test folder, shared by its
    /// instances like the projection's).
    pub fn conflicts_database_url(&self) -> String {
        format!(
            "sqlite://{}",
            self.dir.join("conflict-detector.db").display()
        )
    }

    /// The finance export's ledger (a SQLite file in the test folder).
    pub fn finance_database_url(&self) -> String {
        format!("sqlite://{}", self.dir.join("finance-export.db").display())
    }

    /// Where the finance export delivers its day files.
    pub fn finance_exports_dir(&self) -> PathBuf {
        self.dir.join("finance-exports")
    }

    /// The store master data the finance export reads: `stores.csv` beside the fleet registry.
    pub fn stores_csv(&self) -> PathBuf {
        self.opts.fleet_csv.with_file_name("stores.csv")
    }

    fn env_for(&self, service: Service, index: usize, ops_port: u16) -> Vec<(String, String)> {
        let pre = service.env_prefix();
        let mut env = self.common.clone();
        let mut set = |k: &str, v: String| env.push((format!("{pre}{k}"), v));
        set("OPS__LISTEN", format!("127.0.0.1:{ops_port}"));
        set("KAFKA__SESSION_TIMEOUT_MS", "6000".into());
        set("KAFKA__MAX_POLL_INTERVAL_MS", "20000".into());
        // tansu 0.6's idempotent-producer support breaks after a broker restart (see KafkaConfig).
        set("KAFKA__IDEMPOTENCE", "false".into());
        // tansu 0.6's fetches sleep about half of their allowed wait even with data at hand.
        set("KAFKA__BROKER", "tansu".into());
        // tansu 0.6's group coordinator can leave a live member with nothing assigned: each
        // instance assigns itself its share (`Assignment::Static`). A second instance of a service
        // (`add`) takes the second share; tests that exercise a consumer group ask for it in
        // `extra_env`, which comes last.
        set("KAFKA__ASSIGNMENT", "static".into());
        set("KAFKA__EMPTY_ASSIGNMENT_REJOIN_MS", "15000".into());
        match service {
            Service::Bridge => {
                set("FLEET_FILE", self.opts.fleet_csv.display().to_string());
                set(
                    "OUTBOX__DIR",
                    self.dir
                        .join(format!("outbox-{index}"))
                        .display()
                        .to_string(),
                );
                set(
                    "MQTT__CLIENT_ID",
                    format!("tillstream-store-bridge-{index}"),
                );
                set(
                    "DOWNLINK__CLIENT_ID",
                    format!("tillstream-downlink-{index}"),
                );
            }
            Service::Dedup => {
                set("DEDUP__CLIENT_ID", format!("tillstream-dedup-{index}"));
            }
            Service::Projection => {
                set("DATABASE__URL", self.database_url());
            }
            Service::ConflictDetector => {
                set("DATABASE__URL", self.conflicts_database_url());
                set(
                    "DETECTOR__CLIENT_ID",
                    format!("tillstream-conflict-detector-{index}"),
                );
            }
            Service::FinanceExport => {
                set("DATABASE__URL", self.finance_database_url());
                set("STORES_FILE", self.stores_csv().display().to_string());
                set(
                    "DESTINATION__DIR",
                    self.finance_exports_dir().display().to_string(),
                );
                // The fleet trades on past days: they close when every till closed them, never
                // by the clock (a grace longer than any test's run of past days).
                set("CLOSE__GRACE_MS", (3_650 * 86_400_000i64).to_string());
                set("CLOSE__CHECK_EVERY_MS", "200".into());
                // Late lines wait at most this long for the store's next day export.
                set("CLOSE__LATE_FLUSH_MS", "1000".into());
            }
        }
        if let Some(extra) = self.opts.extra_env.get(&service) {
            env.extend(extra.iter().cloned());
        }
        env
    }

    /// Starts another instance of `service` (a second consumer joins its group); returns its index.
    pub fn add(&mut self, service: Service) -> anyhow::Result<usize> {
        let index = self
            .instances
            .iter()
            .filter(|i| i.service == service)
            .count();
        let ops_port = free_port();
        let mut inst = Instance {
            service,
            index,
            ops_port,
            env: self.env_for(service, index, ops_port),
            log: self.dir.join(format!("{}-{index}.log", service.binary())),
            child: None,
        };
        inst.spawn()?;
        self.instances.push(inst);
        Ok(index)
    }

    pub fn instance(&mut self, service: Service, index: usize) -> &mut Instance {
        self.instances
            .iter_mut()
            .find(|i| i.service == service && i.index == index)
            .expect("instance exists")
    }

    /// kill -9 then start again (same identity, same outbox, same database).
    pub async fn crash_and_restart(
        &mut self,
        service: Service,
        index: usize,
    ) -> anyhow::Result<()> {
        let inst = self.instance(service, index);
        inst.kill();
        inst.spawn()?;
        inst.wait_ready(Duration::from_secs(60)).await
    }

    /// kill -9 only.
    pub fn kill(&mut self, service: Service, index: usize) {
        self.instance(service, index).kill();
    }

    /// kill -9, then start again with `env` set on top of its environment (a changed
    /// configuration, e.g. another client id or route map).
    pub async fn crash_and_restart_with(
        &mut self,
        service: Service,
        index: usize,
        env: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        let inst = self.instance(service, index);
        inst.kill();
        for (k, v) in env {
            inst.set_env(k, v);
        }
        inst.spawn()?;
        inst.wait_ready(Duration::from_secs(60)).await
    }

    /// Start an instance that was killed or terminated.
    pub async fn restart(&mut self, service: Service, index: usize) -> anyhow::Result<()> {
        let inst = self.instance(service, index);
        inst.spawn()?;
        inst.wait_ready(Duration::from_secs(60)).await
    }

    /// SIGTERM every instance (clean shutdown).
    pub fn terminate_all(&mut self, timeout: Duration) -> Vec<(Service, Option<i32>)> {
        self.instances
            .iter_mut()
            .map(|i| (i.service, i.terminate(timeout)))
            .collect()
    }

    /// The last lines of every log (for a failing test's message).
    pub fn logs(&self, n: usize) -> String {
        self.instances
            .iter()
            .map(|i| format!("--- {} ---\n{}", i.log.display(), tail(&i.log, n)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::metric_sum;

    #[test]
    fn metric_sums_every_labelled_sample_of_that_name_only() {
        let text = "# TYPE x_total counter\nx_total{a=\"1\"} 2\nx_total{a=\"2\"} 3.5\nx_total_other 9\nx_total 1\n";
        assert_eq!(metric_sum(text, "x_total"), 6.5);
        assert_eq!(metric_sum(text, "absent"), 0.0);
    }
}
