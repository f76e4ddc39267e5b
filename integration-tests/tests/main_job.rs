//! The main job, `scripts/run`, as an operator meets it: the live view comes up while the fleet
//! plays, and Ctrl-C stops everything the run started — the fleet, the five services (each through
//! its own clean shutdown), tansu, mosquitto and the registry — then says where the results are.
//!
//! The run uses the debug binaries this test suite was built with (`TILLSTREAM_RUN_NO_BUILD`), a
//! private stack folder and free ports, and a fleet slowed down so that it is still playing when the
//! interrupt comes: the interrupt is sent once a frame shows events through the bridge and the
//! fleet's line says it is still publishing.

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tillstream_integration_tests::pipeline::binary_path;
use tillstream_integration_tests::{free_port, repo};

/// A port where BASE..=BASE+6 are all free (scripts/run's ops ports and the review queue API).
fn free_port_base() -> u16 {
    loop {
        let base = free_port();
        if base > u16::MAX - 8 {
            continue;
        }
        let all_free = (1..=6).all(|k| TcpListener::bind(("127.0.0.1", base + k)).is_ok());
        if all_free {
            return base;
        }
    }
}

/// Processes whose environment names this run's stack folder: whatever scripts/run started (and
/// anything those started) inherits it.
fn processes_of_run(stack_dir: &Path) -> Vec<String> {
    let marker = format!("TILLSTREAM_STACK_DIR={}", stack_dir.display());
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").expect("reading /proc") {
        let Ok(entry) = entry else { continue };
        let pid = entry.file_name().to_string_lossy().to_string();
        if !pid.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        // A process that ended between the listing and the read is not one left behind.
        let Ok(environ) = fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ
            .split(|b| *b == 0)
            .any(|var| var == marker.as_bytes())
        {
            let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            found.push(format!("{pid}: {cmdline}"));
        }
    }
    found
}

fn signal_group(pgid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, "--", &format!("-{pgid}")])
        .status();
}

/// When the test fails before the run has stopped by itself: kills the run's process group and
/// every process it started (the stack's servers and the services run in sessions of their own).
struct RunGuard {
    run: Child,
    stack_dir: std::path::PathBuf,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        if self.run.try_wait().ok().flatten().is_none() {
            signal_group(self.run.id(), "-KILL");
            let _ = self.run.wait();
        }
        for process in processes_of_run(&self.stack_dir) {
            if let Some(pid) = process.split(':').next() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
    }
}

#[test]
fn ctrl_c_in_the_live_view_stops_everything_the_run_started() {
    let stack = tempfile::Builder::new()
        .prefix("tillstream-run-")
        .tempdir()
        .unwrap();
    let stack_dir = stack.path().to_path_buf();
    let (kafka, mqtt, pg, registry, prometheus) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    // After the stack's ports: free_port never hands out a port twice, so none of them is in
    // BASE..=BASE+6.
    let port_base = free_port_base();
    let bin_dir = binary_path("tillctl").parent().unwrap().to_path_buf();
    let stderr_path = stack_dir.join("run.stderr");
    let child = Command::new(repo().join("scripts/run"))
        .env("TILLSTREAM_STACK_DIR", &stack_dir)
        .env("TILLSTREAM_KAFKA_PORT", kafka.to_string())
        .env("TILLSTREAM_MQTT_PORT", mqtt.to_string())
        .env("TILLSTREAM_PG_PORT", pg.to_string())
        .env("TILLSTREAM_REGISTRY_PORT", registry.to_string())
        .env("TILLSTREAM_PROMETHEUS_PORT", prometheus.to_string())
        .env("TILLSTREAM_STACK_NO_BUILD", "1")
        .env("TILLSTREAM_RUN_NO_BUILD", "1")
        .env("TILLSTREAM_RUN_BIN_DIR", &bin_dir)
        .env("TILLSTREAM_RUN_PORT_BASE", port_base.to_string())
        .env("TILLSTREAM_RUN_VIEW", "on")
        .env("TILLSTREAM_RUN_STORES", "2")
        .env("TILLSTREAM_RUN_DEVICES", "2")
        // Slow enough to be still publishing when the interrupt comes (~50 s of fleet).
        .env("TILLSTREAM_RUN_EVENTS", "10000")
        .env("TILLSTREAM_RUN_RATE", "200")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(fs::File::create(&stderr_path).unwrap())
        // Its own process group, as a terminal's foreground job: Ctrl-C is SIGINT to the group.
        .process_group(0)
        .spawn()
        .expect("starting scripts/run");
    let mut guard = RunGuard {
        run: child,
        stack_dir: stack_dir.clone(),
    };
    let run = &mut guard.run;
    let pgid = run.id();

    let (lines_tx, lines) = mpsc::channel::<String>();
    let stdout = run.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut transcript = Vec::<String>::new();
    let context = |transcript: &[String]| {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            transcript.join("\n"),
            fs::read_to_string(&stderr_path).unwrap_or_default()
        )
    };

    // Wait for a frame with events through the bridge while the fleet still publishes.
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut fleet_publishing = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match lines.recv_timeout(left) {
            Ok(line) => line,
            Err(e) => panic!(
                "no frame with work in flight ({e}); {}",
                context(&transcript)
            ),
        };
        transcript.push(line.clone());
        if line.starts_with("fleet: publishing:") {
            fleet_publishing = true;
        }
        if let Some(row) = line.strip_prefix("bridge  mqtt in") {
            let total: u64 = row
                .split_whitespace()
                .nth(1)
                .map(|t| t.replace(',', ""))
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            if fleet_publishing && total > 0 {
                break;
            }
        }
    }
    let running = processes_of_run(&stack_dir).join("\n");
    for program in [
        "tansu",
        "mosquitto",
        "tillstream-schema-registry",
        "prometheus",
        "tillstream-store-bridge",
        "tillstream-dedup",
        "tillstream-inventory-projection",
        "tillstream-conflict-detector",
        "tillstream-finance-export",
        "tillstream-sim",
        "tillctl top",
    ] {
        assert!(
            running.contains(program),
            "{program} is not running:\n{running}"
        );
    }
    // The local Prometheus scrapes the five services (the alerts can be watched on this machine).
    let targets_up = || {
        let out = Command::new("curl")
            .args(["-s", "-m", "2"])
            .arg(format!(
                "http://127.0.0.1:{prometheus}/api/v1/targets?state=active"
            ))
            .output()
            .expect("running curl");
        String::from_utf8_lossy(&out.stdout)
            .matches("\"health\":\"up\"")
            .count()
    };
    let scraped = Instant::now() + Duration::from_secs(30);
    while targets_up() < 5 {
        assert!(
            Instant::now() < scraped,
            "Prometheus does not scrape the five services within 30 s"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    signal_group(pgid, "-INT");
    let stop_deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = run.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < stop_deadline,
            "scripts/run did not stop within 120 s of Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // The rest of its output (the reader thread ends at EOF).
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(5)) {
        transcript.push(line);
    }
    let text = context(&transcript);

    assert_eq!(
        status.code(),
        Some(130),
        "stopped before the oracle finished: exit 130; {text}"
    );
    assert!(
        text.contains("stopped before the oracle finished"),
        "{text}"
    );
    assert!(
        text.contains("nothing this run started is running"),
        "{text}"
    );
    assert!(
        text.contains("projection database:"),
        "where the results are: {text}"
    );
    assert_eq!(
        processes_of_run(&stack_dir),
        Vec::<String>::new(),
        "left behind; {text}"
    );
    let ports = [0u16, 1, 2, 3, 4, 6].map(|k| port_base + k);
    for port in ports.into_iter().chain([kafka, mqtt, registry, prometheus]) {
        assert!(
            TcpStream::connect(("127.0.0.1", port)).is_err(),
            "something still listens on {port}; {text}"
        );
    }
    // Each service stopped through its own shutdown, once (a second signal would cut it short).
    for service in [
        "store-bridge",
        "dedup",
        "inventory-projection",
        "conflict-detector",
        "finance-export",
    ] {
        let log = fs::read_to_string(stack_dir.join(format!("pipeline/{service}.log"))).unwrap();
        assert!(
            log.contains("shutdown requested"),
            "{service} was not asked to stop:\n{log}"
        );
        assert!(
            !log.contains("second signal"),
            "{service} got two signals:\n{log}"
        );
        assert!(!log.contains("panicked"), "{service} panicked:\n{log}");
        assert!(
            text.contains(&format!("run: stopped {service} (pid")),
            "{service} not stopped by the run; {text}"
        );
    }
}
