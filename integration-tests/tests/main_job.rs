//! The main job, `scripts/run`, as an operator meets it: the live view comes up while the fleet
//! plays, and Ctrl-C stops everything the run started — the fleet, the five services (each through
//! its own clean shutdown), tansu, mosquitto, the registry and Prometheus — then says where the
//! results are; `scripts/run --serve` serves real tills and onboards one while it runs.
//!
//! Each run uses the debug binaries this test suite was built with (`TILLSTREAM_RUN_NO_BUILD`), a
//! private stack folder and free ports. The simulated fleet is slowed down so that it is still
//! playing when the interrupt comes: the interrupt is sent once a frame shows events through the
//! bridge and the fleet's line says it is still publishing.

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

/// One `scripts/run` in its own process group on a private stack, its output read line by line.
struct MainJob {
    guard: RunGuard,
    stack_dir: std::path::PathBuf,
    /// Keeps the private stack folder until the test ends.
    _stack: tempfile::TempDir,
    lines: mpsc::Receiver<String>,
    transcript: Vec<String>,
    stderr_path: std::path::PathBuf,
    mqtt: u16,
    kafka: u16,
    registry: u16,
    prometheus: u16,
    port_base: u16,
}

impl MainJob {
    fn start(args: &[&str], env: &[(&str, &str)]) -> MainJob {
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
        let mut child = Command::new(repo().join("scripts/run"))
            .args(args)
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
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&stderr_path).unwrap())
            // Its own process group, as a terminal's foreground job: Ctrl-C is SIGINT to the group.
            .process_group(0)
            .spawn()
            .expect("starting scripts/run");
        let (lines_tx, lines) = mpsc::channel::<String>();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        MainJob {
            guard: RunGuard {
                run: child,
                stack_dir: stack_dir.clone(),
            },
            stack_dir,
            _stack: stack,
            lines,
            transcript: Vec::new(),
            stderr_path,
            mqtt,
            kafka,
            registry,
            prometheus,
            port_base,
        }
    }

    /// Its output so far, for failure messages.
    fn context(&self) -> String {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            self.transcript.join("\n"),
            fs::read_to_string(&self.stderr_path).unwrap_or_default()
        )
    }

    /// Reads output lines until `done` says so (it sees each line), within `within`.
    fn read_until(&mut self, within: Duration, what: &str, mut done: impl FnMut(&str) -> bool) {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.lines.recv_timeout(left) {
                Ok(line) => line,
                Err(e) => panic!("{what}: not seen ({e}); {}", self.context()),
            };
            self.transcript.push(line.clone());
            if done(&line) {
                return;
            }
        }
    }

    /// Every part of the stack and the pipeline runs, and the local Prometheus scrapes the five
    /// services (the alerts can be watched on this machine).
    fn assert_all_running(&self, also: &[&str]) {
        let running = processes_of_run(&self.stack_dir).join("\n");
        let programs = [
            "tansu",
            "mosquitto",
            "tillstream-schema-registry",
            "prometheus",
            "tillstream-store-bridge",
            "tillstream-dedup",
            "tillstream-inventory-projection",
            "tillstream-conflict-detector",
            "tillstream-finance-export",
            "tillctl top",
        ];
        for program in programs.iter().chain(also) {
            assert!(
                running.contains(program),
                "{program} is not running:\n{running}"
            );
        }
        let targets_up = || {
            let out = Command::new("curl")
                .args(["-s", "-m", "2"])
                .arg(format!(
                    "http://127.0.0.1:{}/api/v1/targets?state=active",
                    self.prometheus
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
    }

    /// Ctrl-C (SIGINT to the process group), then its exit status and whole output.
    fn interrupt(&mut self) -> (std::process::ExitStatus, String) {
        signal_group(self.guard.run.id(), "-INT");
        let stop_deadline = Instant::now() + Duration::from_secs(120);
        let status = loop {
            if let Some(status) = self.guard.run.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < stop_deadline,
                "scripts/run did not stop within 120 s of Ctrl-C"
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        // The rest of its output (the reader thread ends at EOF).
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.transcript.push(line);
        }
        (status, self.context())
    }

    /// Nothing it started runs or listens, and each service stopped once, through its own shutdown.
    fn assert_nothing_left(&self, text: &str) {
        assert!(
            text.contains("nothing this run started is running"),
            "{text}"
        );
        assert!(
            text.contains("projection database:"),
            "where the results are: {text}"
        );
        assert_eq!(
            processes_of_run(&self.stack_dir),
            Vec::<String>::new(),
            "left behind; {text}"
        );
        let ports = [0u16, 1, 2, 3, 4, 6].map(|k| self.port_base + k);
        for port in ports
            .into_iter()
            .chain([self.kafka, self.mqtt, self.registry, self.prometheus])
        {
            assert!(
                TcpStream::connect(("127.0.0.1", port)).is_err(),
                "something still listens on {port}; {text}"
            );
        }
        for service in [
            "store-bridge",
            "dedup",
            "inventory-projection",
            "conflict-detector",
            "finance-export",
        ] {
            let log =
                fs::read_to_string(self.stack_dir.join(format!("pipeline/{service}.log"))).unwrap();
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
}

/// The total of a frame's `bridge  mqtt in` row.
fn bridge_total(line: &str) -> Option<u64> {
    line.strip_prefix("bridge  mqtt in")?
        .split_whitespace()
        .nth(1)
        .map(|t| t.replace(',', ""))
        .and_then(|t| t.parse().ok())
}

#[test]
fn ctrl_c_in_the_live_view_stops_everything_the_run_started() {
    let mut job = MainJob::start(
        &[],
        &[
            ("TILLSTREAM_RUN_STORES", "2"),
            ("TILLSTREAM_RUN_DEVICES", "2"),
            // Slow enough to be still publishing when the interrupt comes (~50 s of fleet).
            ("TILLSTREAM_RUN_EVENTS", "10000"),
            ("TILLSTREAM_RUN_RATE", "200"),
        ],
    );
    // A frame with events through the bridge while the fleet still publishes.
    let mut fleet_publishing = false;
    job.read_until(
        Duration::from_secs(240),
        "a frame with work in flight",
        |line| {
            fleet_publishing |= line.starts_with("fleet: publishing:");
            fleet_publishing && bridge_total(line).is_some_and(|t| t > 0)
        },
    );
    job.assert_all_running(&["tillstream-sim"]);

    let (status, text) = job.interrupt();
    assert_eq!(
        status.code(),
        Some(130),
        "stopped before the oracle finished: exit 130; {text}"
    );
    assert!(
        text.contains("stopped before the oracle finished"),
        "{text}"
    );
    job.assert_nothing_left(&text);
}

/// `scripts/run --serve`: no simulator; a device added to the fleet file while it runs (then
/// `scripts/stack devices`, as the runbook says) logs in and its event goes through the bridge
/// without a dead letter; Ctrl-C stops everything.
#[test]
fn serve_onboards_a_till_while_it_runs_and_stops_on_ctrl_c() {
    let mut job = MainJob::start(&["--serve"], &[]);
    job.read_until(
        Duration::from_secs(240),
        "the live view serving tills",
        |line| line.starts_with("fleet: serving real tills"),
    );
    job.assert_all_running(&[]);
    let running = processes_of_run(&job.stack_dir).join("\n");
    assert!(
        !running.contains("tillstream-sim"),
        "--serve runs no simulator:\n{running}"
    );

    // Onboard s001-d07, a new till of store s001, as the status line says: `tillctl fleet add`
    // puts its line in the fleet file and writes its certificate and key once (a new store would
    // also need its line in the stores file for the finance export).
    let fleet_file = job.stack_dir.join("fleet/devices.csv");
    assert!(
        !fs::read_to_string(&fleet_file)
            .unwrap()
            .contains("s001-d07")
    );
    let till = job.stack_dir.join("till-s001-d07");
    let added = Command::new(binary_path("tillctl"))
        .args(["fleet", "add", "s001-d07", "s001", "--fleet"])
        .arg(&fleet_file)
        .arg("--out")
        .arg(&till)
        .env("TILLSTREAM_PKI_DIR", job.stack_dir.join("pki"))
        .env(
            "TILLSTREAM_MQTT_ACL_FILE",
            job.stack_dir.join("mosquitto/acl"),
        )
        .env(
            "TILLSTREAM_MQTT_PID_FILE",
            job.stack_dir.join("mosquitto/mosquitto.pid"),
        )
        .output()
        .unwrap();
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    assert!(
        fs::read_to_string(&fleet_file)
            .unwrap()
            .contains("s001-d07,s001")
    );

    // Its first order, once the bridge has reloaded the fleet file (its gauge counts the device).
    let ops = format!("http://127.0.0.1:{}/metrics", job.port_base);
    let devices_in_fleet = fs::read_to_string(&fleet_file)
        .unwrap()
        .lines()
        .filter(|l| l.contains(',') && !l.starts_with("device_id"))
        .count();
    let reloaded = Instant::now() + Duration::from_secs(30);
    loop {
        let out = Command::new("curl")
            .args(["-s", "-m", "2", &ops])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        if text
            .lines()
            .any(|l| l == format!("tillstream_store_bridge_fleet_devices {devices_in_fleet}"))
        {
            break;
        }
        assert!(
            Instant::now() < reloaded,
            "the bridge did not reload the fleet file; {}",
            job.context()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let order: tillstream_contracts::DeviceEvent =
        tillstream_contracts::samples::order("s001", "s001-d07", 1, 2).into();
    let published = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &job.mqtt.to_string(), "-q", "1"])
        .arg("--cafile")
        .arg(till.join("ca.crt"))
        .arg("--cert")
        .arg(till.join("s001-d07.crt"))
        .arg("--key")
        .arg(till.join("s001-d07.key"))
        .args(["-i", "s001-d07"])
        .args(["-t", "store/s001/s001-d07/pos/order.created"])
        .args(["-m", &order.to_json().to_string()])
        .output()
        .unwrap();
    assert!(
        published.status.success(),
        "{}",
        String::from_utf8_lossy(&published.stderr)
    );
    job.read_until(
        Duration::from_secs(60),
        "the order through the bridge",
        |line| bridge_total(line).is_some_and(|t| t >= 1),
    );
    job.read_until(
        Duration::from_secs(10),
        "the frame's dead letters",
        |line| line.starts_with("DEAD LETTERS"),
    );
    let last = job.transcript.last().unwrap().clone();
    assert_eq!(
        last.split_whitespace().collect::<Vec<_>>().join(" "),
        "DEAD LETTERS 0 in all",
        "{}",
        job.context()
    );

    let (status, text) = job.interrupt();
    assert_eq!(status.code(), Some(0), "{text}");
    job.assert_nothing_left(&text);
}
