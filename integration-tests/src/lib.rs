//! The test kit every tillstream crate's tests and benches depend on (the folder keeps the name the
//! repository layout gives it): every test gets its own real servers, started through the project's
//! own `scripts/stack` (same configs as the local stack) in a private folder on free loopback ports,
//! and stopped (by PID, through the script) when the test ends. The schema registry runs in-process.
//!
//! Nothing here is mocked: tansu, mosquitto and PostgreSQL are the real binaries.
//!
//! # Layout
//! - this file: [`Stack`] (private servers; stop, kill, pause/resume for fault injection),
//!   [`TestRegistry`], [`apply_topology`], [`stack_with_topics`], [`read_all`], [`decode_event`],
//!   [`SmallDisk`] (a full disk on purpose), [`eventually`], [`wait_for_file`], [`ExitOnPanic`],
//!   [`free_port`], [`test_logs`].
//! - [`pipeline`]: the services as real processes (kill -9, SIGTERM, SIGSTOP, restart with another
//!   configuration, a second instance, their metrics).
//! - [`bench`]: CPU readers and a tansu `memory://` broker for benches.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tillstream_runtime::CancellationToken;
use tillstream_runtime::kafka::{Assignment, BrokerProfile, KafkaConfig};

pub mod bench;
pub mod pipeline;

pub use tillstream_contracts as contracts;

/// Sends the in-process services' `tracing` logs (and librdkafka's, through `log`) to the test's
/// captured output, so a failing component test shows what the service did; a passing one prints
/// nothing. `RUST_LOG` chooses the level (default `info`). Safe to call from every test.
pub fn test_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// Repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("repo root")
}

/// A free TCP port on 127.0.0.1 for a server a test starts.
///
/// Picked below Linux's ephemeral range (32768-60999): a port the kernel hands out for `bind(0)`
/// can, once released, become the source port of any outgoing connection (librdkafka and MQTT
/// clients open many) before the server binds it. Never the same port twice in one process, and
/// probed by binding it; the start offset is spread by the process id so parallel test processes
/// rarely probe the same ports.
pub fn free_port() -> u16 {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id().wrapping_mul(7919)) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if given.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
    panic!("no free port in {LOW}..{}", LOW + SPAN)
}

/// mosquitto's port and, with TLS, the stack's PKI folder.
#[derive(Debug, Clone)]
pub struct MqttEndpoint {
    pub port: u16,
    pub tls_dir: Option<PathBuf>,
}

impl MqttEndpoint {
    /// How a test client logs in as `user` (a device id, `bridge`, `admin`): TLS with that
    /// identity's certificate, or plaintext; and the password plaintext needs.
    pub fn login(&self, user: &str) -> (rumqttc::Transport, String) {
        let password = match user {
            "admin" => "admin-dev",
            "bridge" => "bridge-dev",
            _ => "device-dev",
        };
        let transport = tillstream_runtime::mqtt::transport_in(self.tls_dir.as_deref(), user)
            .expect("the stack's certificate for a test client");
        (transport, password.to_string())
    }
}

/// How mosquitto authenticates its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MqttSecurity {
    /// TLS only; each client presents its own certificate, whose CN is its user name.
    Tls,
    /// Plaintext with passwords (benches comparing the two).
    Plaintext,
}

/// Services of the local stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Svc {
    Tansu,
    Mosquitto,
    Postgres,
}

impl Svc {
    fn name(self) -> &'static str {
        match self {
            Svc::Tansu => "tansu",
            Svc::Mosquitto => "mosquitto",
            Svc::Postgres => "postgres",
        }
    }
}

/// A private instance of the local stack for one test.
pub struct Stack {
    dir: tempfile::TempDir,
    env: BTreeMap<&'static str, String>,
    started: Vec<Svc>,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack").field("env", &self.env).finish()
    }
}

impl Stack {
    /// Starts `services` on fresh ports in a fresh folder. `fleet` is the device CSV for mosquitto
    /// (default: `config/fleet/devices.csv`). mosquitto serves TLS only, every client with its
    /// own certificate (`scripts/stack`'s default).
    pub fn start(services: &[Svc], fleet: Option<&Path>) -> anyhow::Result<Stack> {
        Stack::start_with(services, fleet, MqttSecurity::Tls)
    }

    /// As [`start`](Self::start), with mosquitto's security chosen (plaintext only for benches
    /// that compare the two).
    pub fn start_with(
        services: &[Svc],
        fleet: Option<&Path>,
        mqtt: MqttSecurity,
    ) -> anyhow::Result<Stack> {
        let dir = tempfile::Builder::new()
            .prefix("tillstream-it-")
            .tempdir()?;
        let mut env = BTreeMap::new();
        env.insert("TILLSTREAM_STACK_DIR", dir.path().display().to_string());
        env.insert("TILLSTREAM_KAFKA_PORT", free_port().to_string());
        env.insert("TILLSTREAM_MQTT_PORT", free_port().to_string());
        env.insert("TILLSTREAM_PG_PORT", free_port().to_string());
        env.insert("TILLSTREAM_REGISTRY_PORT", free_port().to_string());
        env.insert("TILLSTREAM_STACK_NO_BUILD", "1".into());
        env.insert(
            "TILLSTREAM_MQTT_TLS",
            if mqtt == MqttSecurity::Tls { "1" } else { "0" }.into(),
        );
        let mut stack = Stack {
            dir,
            env,
            started: Vec::new(),
        };
        if let Some(csv) = fleet {
            stack.script(&["devices", &csv.display().to_string()])?;
        }
        for s in services {
            stack.script(&["up", s.name()])?;
            stack.started.push(*s);
        }
        Ok(stack)
    }

    fn script(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(repo().join("scripts/stack"))
            .args(args)
            .envs(&self.env)
            .output()
            .context("running scripts/stack")?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            bail!("scripts/stack {} failed: {text}", args.join(" "));
        }
        Ok(text)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.env["TILLSTREAM_KAFKA_PORT"])
    }

    pub fn kafka(&self) -> KafkaConfig {
        KafkaConfig {
            brokers: self.brokers(),
            session_timeout_ms: 6_000,
            broker: BrokerProfile::Tansu,
            max_poll_interval_ms: 20_000,
            ..KafkaConfig::default()
        }
    }

    pub fn mqtt_port(&self) -> u16 {
        self.env["TILLSTREAM_MQTT_PORT"].parse().unwrap_or(0)
    }

    /// Whether mosquitto serves TLS with client certificates (the default) or plaintext.
    pub fn mqtt_security(&self) -> MqttSecurity {
        if self.env["TILLSTREAM_MQTT_TLS"] == "1" {
            MqttSecurity::Tls
        } else {
            MqttSecurity::Plaintext
        }
    }

    /// The broker's URL as a service's `mqtt.url` takes it.
    pub fn mqtt_url(&self) -> String {
        match self.mqtt_security() {
            MqttSecurity::Tls => format!("mqtts://127.0.0.1:{}", self.mqtt_port()),
            MqttSecurity::Plaintext => format!("mqtt://127.0.0.1:{}", self.mqtt_port()),
        }
    }

    /// The stack's PKI folder (`tillctl fleet`: CA, broker, and a kept certificate per service and
    /// fleet device) when mosquitto serves TLS.
    pub fn mqtt_tls_dir(&self) -> Option<PathBuf> {
        (self.mqtt_security() == MqttSecurity::Tls).then(|| self.dir().join("pki"))
    }

    /// Where test clients reach mosquitto (cheap to clone into tasks).
    pub fn mqtt_endpoint(&self) -> MqttEndpoint {
        MqttEndpoint {
            port: self.mqtt_port(),
            tls_dir: self.mqtt_tls_dir(),
        }
    }

    /// How a test client logs in as `user`; see [`MqttEndpoint::login`].
    pub fn mqtt_login(&self, user: &str) -> (rumqttc::Transport, String) {
        self.mqtt_endpoint().login(user)
    }

    /// Runs `tillctl` with this stack's PKI folder, broker pid file and `fleet` file, returning its
    /// output (for tests of device onboarding, rotation and revocation).
    pub fn tillctl(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        let bin = pipeline::binary_path("tillctl");
        Command::new(&bin)
            .args(args)
            .env("TILLSTREAM_PKI_DIR", self.dir().join("pki"))
            .env(
                "TILLSTREAM_MQTT_PID_FILE",
                self.dir().join("mosquitto/mosquitto.pid"),
            )
            .env("TILLSTREAM_MQTT_ACL_FILE", self.dir().join("mosquitto/acl"))
            .output()
            .with_context(|| format!("running {}", bin.display()))
    }

    pub fn pg_url(&self) -> String {
        format!(
            "postgres://tillstream:tillstream@127.0.0.1:{}/tillstream",
            self.env["TILLSTREAM_PG_PORT"]
        )
    }

    /// The pid of a running service of this stack (from its pid file), for CPU figures in benches.
    pub fn pid(&self, svc: Svc) -> Option<u32> {
        let file = match svc {
            Svc::Tansu => self.dir().join("tansu/tansu.pid"),
            Svc::Mosquitto => self.dir().join("mosquitto/mosquitto.pid"),
            Svc::Postgres => self.dir().join("postgres/data/postmaster.pid"),
        };
        std::fs::read_to_string(file)
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// `scripts/stack stop <svc>` (SIGTERM, wait).
    pub fn stop(&self, svc: Svc) -> anyhow::Result<()> {
        self.script(&["stop", svc.name()]).map(|_| ())
    }

    /// `scripts/stack stop --kill <svc>` (SIGKILL).
    pub fn kill(&self, svc: Svc) -> anyhow::Result<()> {
        self.script(&["stop", "--kill", svc.name()]).map(|_| ())
    }

    pub fn start_svc(&self, svc: Svc) -> anyhow::Result<()> {
        self.script(&["start", svc.name()]).map(|_| ())
    }

    pub fn restart(&self, svc: Svc) -> anyhow::Result<()> {
        self.script(&["restart", svc.name()]).map(|_| ())
    }

    /// Freezes a service (SIGSTOP; PostgreSQL: the postmaster and every backend): it keeps its
    /// sockets open and answers nothing, like a hung process or a stalled VM.
    pub fn pause(&self, svc: Svc) -> anyhow::Result<()> {
        self.signal(svc, "STOP")
    }

    /// Thaws a service frozen by [`pause`](Self::pause) (SIGCONT).
    pub fn resume(&self, svc: Svc) -> anyhow::Result<()> {
        self.signal(svc, "CONT")
    }

    fn signal(&self, svc: Svc, sig: &str) -> anyhow::Result<()> {
        let pid = self
            .pid(svc)
            .with_context(|| format!("{} has no pid", svc.name()))?;
        let pid = pid.to_string();
        // Children first on SIGSTOP, parent first on SIGCONT: no backend runs unsupervised.
        let children = || {
            Command::new("pkill")
                .args([&format!("-{sig}"), "-P", &pid])
                .status()
        };
        let parent = || {
            Command::new("kill")
                .args([&format!("-{sig}"), &pid])
                .status()
        };
        let ok = if sig == "STOP" {
            let _ = children();
            parent()?.success()
        } else {
            let ok = parent()?.success();
            let _ = children();
            ok
        };
        if !ok {
            bail!("kill -{sig} {pid} ({}) failed", svc.name());
        }
        Ok(())
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if !self.started.is_empty()
            && let Err(e) = self.script(&["down"])
        {
            eprintln!("stack down failed: {e}");
        }
        // A failing test keeps its folder (logs, databases) for the post-mortem.
        if std::thread::panicking() || std::env::var_os("TILLSTREAM_KEEP_TEST_DIRS").is_some() {
            let dir = std::mem::replace(
                &mut self.dir,
                tempfile::Builder::new()
                    .prefix("tillstream-it-empty-")
                    .tempdir()
                    .expect("tempdir"),
            );
            eprintln!("test folder kept: {}", dir.keep().display());
        }
    }
}

/// The project's schema registry, in-process on a free port with a private data folder.
pub struct TestRegistry {
    pub url: String,
    token: CancellationToken,
    _dir: tempfile::TempDir,
}

impl TestRegistry {
    pub async fn start() -> anyhow::Result<TestRegistry> {
        let dir = tempfile::tempdir()?;
        let token = CancellationToken::new();
        let cfg = tillstream_schema_registry::Config {
            listen: "127.0.0.1:0".parse()?,
            data_dir: dir.path().to_path_buf(),
            ..Default::default()
        };
        let running = tillstream_schema_registry::start(cfg, token.clone()).await?;
        Ok(TestRegistry {
            url: running.state.url(),
            token,
            _dir: dir,
        })
    }

    pub fn config(&self) -> contracts::RegistryConfig {
        contracts::RegistryConfig {
            url: self.url.clone(),
            ..Default::default()
        }
    }

    pub fn client(&self) -> contracts::Registry {
        contracts::Registry::new(self.config()).expect("registry client")
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// Creates every topic of `topology/topology.toml` (local profile) on `brokers`.
pub async fn apply_topology(kafka: &KafkaConfig) -> anyhow::Result<()> {
    use tillctl::topology;
    let file = topology::load(&repo().join("topology/topology.toml"))?;
    let desired = topology::desired(&file, "local")?;
    let timeout = Duration::from_secs(15);
    let live = topology::live(kafka, &topology::managed_keys(&desired), timeout).await?;
    let changes: Vec<_> = topology::plan(&desired, &live, false)
        .into_iter()
        .filter(|c| c.is_actionable())
        .collect();
    topology::apply(kafka, &changes, timeout).await?;
    Ok(())
}

/// One record read back from a topic.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub timestamp: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: BTreeMap<String, String>,
}

impl Record {
    /// A copy of a consumed message.
    pub fn of<M: rdkafka::Message>(m: &M) -> Record {
        Record {
            partition: m.partition(),
            offset: m.offset(),
            timestamp: m.timestamp().to_millis(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec),
            headers: tillstream_runtime::kafka::header_map(m),
        }
    }

    pub fn key_str(&self) -> String {
        self.key
            .as_deref()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// A private stack with the project's topics created, and the client settings of its tansu with
/// `assignment` (what a service test starts from).
pub async fn stack_with_topics(services: &[Svc], assignment: Assignment) -> (Stack, KafkaConfig) {
    let stack = Stack::start(services, None).expect("stack");
    let kafka = KafkaConfig {
        assignment,
        ..stack.kafka()
    };
    apply_topology(&kafka).await.expect("topology");
    (stack, kafka)
}

/// Reads every record currently in `topic` (see `tillstream_runtime::kafka::read_topic_to_end`).
pub fn read_all(
    kafka: &KafkaConfig,
    topic: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<Record>> {
    Ok(
        tillstream_runtime::kafka::read_topic_to_end(kafka, topic, timeout)?
            .iter()
            .map(Record::of)
            .collect(),
    )
}

/// Decodes a Confluent-framed store event through the registry.
pub async fn decode_event(
    registry: &contracts::Registry,
    payload: &[u8],
) -> anyhow::Result<contracts::DeviceEvent> {
    let (id, datum) = contracts::codec::unframe(payload)?;
    let writer = registry.writer_schema(id).await?;
    Ok(contracts::DeviceEvent::decode(&writer, datum)?)
}

/// A small tmpfs mounted for one test, to fill a disk on purpose (root only: CI and sessions run
/// as root); unmounted when dropped.
#[derive(Debug)]
pub struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` (e.g. `"3m"`), panicking when it cannot (a test that needs a full
    /// disk must not pass without one).
    pub fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().expect("tempdir");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            ok,
            "mounting a {size} tmpfs needs root (CI and sessions run as root)"
        );
        SmallDisk { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Waits until `path` exists (a service's fault-injection marker), panicking after `timeout`.
pub async fn wait_for_file(path: &Path, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Ends the test process when a test panics while a live consumer still runs in it. Without this
/// the failure would hang: the runtime's shutdown drops the consumer after the test's servers are
/// gone, and librdkafka's close (with the shared commit-on-revoke) waits for a broker that never
/// answers. Declare it before the [`Stack`], so the servers are stopped first.
pub struct ExitOnPanic;

impl Drop for ExitOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test failed with a live consumer running: exiting the test process");
            std::process::exit(101);
        }
    }
}

/// Polls `check` every 100 ms until it returns true or `timeout` passes.
pub async fn eventually<F>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> bool,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
