//! What the benchmarks share: process CPU time from /proc, one measured phase ([`Sample`]) and its
//! printed line, the plain-consumer baseline, and a throw-away tansu with `memory://` storage (the
//! fast broker some figures are measured against). Measurement helpers only: nothing
//! here asserts, and the broker holds nothing durable.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};

use tillstream_runtime::kafka::{BrokerProfile, KafkaConfig};

use crate::{apply_topology, free_port};

/// User + system CPU seconds a process has used so far (`std::process::id()` for this one), from
/// `/proc/<pid>/stat`: the same as getrusage, threads included. 0 when the process is gone.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may contain spaces: the fields that follow start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 11 and 12 after the ')'; USER_HZ = 100.
    (ticks(11) + ticks(12)) / 100.0
}

/// Busy CPU seconds of the whole machine so far (all cores; `/proc/stat` minus idle and iowait):
/// what every process together used, to see whether a run was short of cores.
pub fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: f64 = f.iter().take(8).sum();
    let idle = f.get(3).copied().unwrap_or(0.0) + f.get(4).copied().unwrap_or(0.0);
    (total - idle) / 100.0
}

/// One measured phase of a bench.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Wall-clock time of the phase.
    pub wall: Duration,
    /// CPU seconds this process used in it.
    pub cpu: f64,
    /// CPU seconds the broker process used in it (0 when it runs in this process or is unknown).
    pub broker_cpu: f64,
}

impl Sample {
    /// Prints one aligned line: `n` `unit`s (e.g. "ev", "rec") over this phase, per second of wall
    /// time and per core-second of this process's CPU.
    pub fn print(&self, name: &str, n: usize, unit: &str) {
        println!(
            "{name:<46} {n:>8} {unit}  wall {:>7.2}s  {:>9.0} {unit}/s  cpu {:>6.2}s  {:>9.0} {unit}/s/core  {:>6.2} us/{unit}  broker cpu {:>6.2}s",
            self.wall.as_secs_f64(),
            n as f64 / self.wall.as_secs_f64(),
            self.cpu,
            n as f64 / self.cpu.max(1e-9),
            self.cpu * 1e6 / n as f64,
            self.broker_cpu
        );
    }
}

/// Runs `f` (blocking), measuring its wall time, this process's CPU and the broker's.
pub fn measure<R>(broker_pid: Option<u32>, f: impl FnOnce() -> R) -> (R, Sample) {
    let me = std::process::id();
    let (c0, b0) = (cpu_seconds(me), broker_pid.map(cpu_seconds).unwrap_or(0.0));
    let t = Instant::now();
    let r = f();
    let s = Sample {
        wall: t.elapsed(),
        cpu: cpu_seconds(me) - c0,
        broker_cpu: broker_pid.map(cpu_seconds).unwrap_or(0.0) - b0,
    };
    (r, s)
}

/// The baseline a consuming service is compared with: a plain group consumer that reads `n`
/// records of `topic` from the start and touches each payload, nothing else. Returns how many it
/// read (fewer than `n` when 600 s were not enough).
pub fn consume_all(kafka: &KafkaConfig, topic: &str, n: usize) -> usize {
    let mut cfg = kafka.client_config("bench-baseline");
    cfg.set("group.id", "bench-baseline")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false");
    let c: BaseConsumer = cfg.create().expect("baseline consumer");
    c.subscribe(&[topic]).expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(600);
    let (mut got, mut bytes) = (0usize, 0usize);
    while got < n && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            bytes += m.payload().map_or(0, <[u8]>::len);
            got += 1;
        }
    }
    std::hint::black_box(bytes);
    got
}

/// A tansu broker with `memory://` storage on a free loopback port, with the project's topics,
/// stopped (SIGTERM to the child started here) on drop.
///
/// The binary is `TILLSTREAM_TANSU_MEMORY_BIN`, else `tansu` from the PATH. The project's own tansu
/// (`--features libsql`) has no memory storage; a build with it:
/// `cargo install tansu --version 0.6.0 --locked --features libsql,dynostore --root DIR`.
pub struct TansuMemory {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl TansuMemory {
    /// Starts the broker and creates the topics; `Err` says in one line why it is unavailable.
    pub async fn start() -> Result<TansuMemory, String> {
        let bin =
            std::env::var("TILLSTREAM_TANSU_MEMORY_BIN").unwrap_or_else(|_| "tansu".to_string());
        let port = free_port();
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let log = dir.path().join("tansu.log");
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(&bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "memory://tansu/",
            ])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).map_err(|e| e.to_string())?)
            .spawn()
            .map_err(|e| format!("cannot start {bin}: {e}"))?;
        let mut t = TansuMemory {
            child,
            port,
            _dir: dir,
        };
        tokio::time::sleep(Duration::from_secs(2)).await;
        if let Ok(Some(status)) = t.child.try_wait() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(format!(
                "{bin} exited at start ({status}; no memory storage in this build?): {}",
                text.lines().last().unwrap_or("")
            ));
        }
        match tokio::time::timeout(Duration::from_secs(60), apply_topology(&t.kafka())).await {
            Ok(Ok(())) => Ok(t),
            Ok(Err(e)) => Err(format!("topics could not be created: {e}")),
            Err(_) => Err("topics could not be created within 60 s".into()),
        }
    }

    pub fn kafka(&self) -> KafkaConfig {
        KafkaConfig {
            brokers: format!("127.0.0.1:{}", self.port),
            session_timeout_ms: 6_000,
            broker: BrokerProfile::Tansu,
            ..KafkaConfig::default()
        }
    }

    /// The broker's process id (for its CPU time).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for TansuMemory {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_grows_with_work_and_is_zero_for_no_process() {
        let me = std::process::id();
        let before = cpu_seconds(me);
        // Busy until /proc shows 50 ms more CPU (bounded: a clock that never moves fails).
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut x = 0u64;
        while cpu_seconds(me) < before + 0.05 && std::time::Instant::now() < deadline {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        }
        assert!(
            cpu_seconds(me) >= before + 0.05,
            "{before} -> {}",
            cpu_seconds(me)
        );
        assert_eq!(cpu_seconds(u32::MAX), 0.0);
    }
}

/// The environment variable that puts a bench binary in [`MockBroker`] child mode.
const MOCK_CHILD_ENV: &str = "TILLSTREAM_BENCH_MOCK_BROKER_CHILD";

/// librdkafka's MockCluster in a child process (the bench binary itself, re-run), so the broker's
/// CPU is not counted as the service's. The child serves until the parent drops this handle.
///
/// A bench's `main` starts with `if MockBroker::serve_if_child(&topics) { return; }`.
#[derive(Debug)]
pub struct MockBroker {
    /// The re-run bench binary hosting the cluster; its stdin closing ends it.
    child: Child,
    /// The cluster's bootstrap servers, as the child printed them.
    brokers: String,
}

impl MockBroker {
    /// Starts the child; it creates `topics` (12 partitions each, see [`serve_if_child`]) before it
    /// prints its address.
    ///
    /// [`serve_if_child`]: MockBroker::serve_if_child
    pub fn spawn() -> MockBroker {
        use std::io::BufRead;
        let mut child = Command::new(std::env::current_exe().expect("own binary"))
            .env(MOCK_CHILD_ENV, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("mock broker child");
        let mut first = String::new();
        std::io::BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut first)
            .expect("mock broker address");
        MockBroker {
            child,
            brokers: first.trim().to_string(),
        }
    }

    /// Child mode: when this process is a [`MockBroker`] child, serves a MockCluster with `topics`
    /// (12 partitions each; MockCluster times admin requests out, so they are created here) until
    /// stdin closes, and returns true (the bench's `main` then returns). False in the parent.
    pub fn serve_if_child<S: AsRef<str>>(topics: &[S]) -> bool {
        if std::env::var_os(MOCK_CHILD_ENV).is_none() {
            return false;
        }
        let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
        for t in topics {
            cluster.create_topic(t.as_ref(), 12, 1).expect("topic");
        }
        println!("{}", cluster.bootstrap_servers());
        let mut sink = String::new();
        while std::io::stdin()
            .read_line(&mut sink)
            .map(|n| n > 0)
            .unwrap_or(false)
        {}
        true
    }

    /// Client settings for the cluster.
    pub fn kafka(&self) -> KafkaConfig {
        KafkaConfig {
            brokers: self.brokers.clone(),
            session_timeout_ms: 6_000,
            ..KafkaConfig::default()
        }
    }

    /// The child's pid (its CPU is the broker's).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for MockBroker {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}
