//! What the benchmarks share: process CPU time from /proc, and a throw-away tansu with `memory://`
//! storage (the fast broker some figures are measured against). Measurement helpers only: nothing
//! here asserts, and the broker holds nothing durable.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tillstream_runtime::kafka::KafkaConfig;

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
