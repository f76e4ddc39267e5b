//! The finance scenario on the real stack (tansu, registry, the service in process): known sales
//! and refunds over two days, one deliberately wrong device total, a late device (its sale and
//! close arrive after its day was exported), and the bad inputs (a tender in another currency, a
//! refund of an unknown order, a close without events, a close sent twice with different
//! figures). Checks the files through the independent reader (pyarrow), the manifests' sha256
//! (sha256sum), the dead letters, and that a second run from scratch writes byte-identical files.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use serde_json::Value;
use tillstream_contracts::{DeviceEvent, Money, TenderMethod};
use tillstream_integration_tests::read_all;
use tillstream_runtime::CancellationToken;

const DAY2: i32 = DAY1 + 1;
const WAIT: Duration = Duration::from_secs(60);

/// Store s1, day 1: two tills; d2's close claims 1.00 more gross than it sold.
fn s1_day1() -> Vec<DeviceEvent> {
    use TenderMethod::*;
    let a = sale(
        "s1-d1-1",
        "s1",
        "d1",
        1,
        DAY1,
        &[("A", 2, 1000, 200), ("B", 1, 500, 0)],
        Card,
    );
    let b = sale("s1-d1-2", "s1", "d1", 2, DAY1, &[("C", 1, 800, 0)], Cash);
    let r = refund("s1-d1-3", "s1", "d1", 3, DAY1, "o-s1-d1-1", 1080, 180);
    let c1 = close_of("s1-d1-c1", "s1", "d1", 4, DAY1, 1, &[&a, &b, &r]);
    let x = sale("s1-d2-1", "s1", "d2", 1, DAY1, &[("A", 1, 1000, 0)], Mobile);
    let y = sale("s1-d2-2", "s1", "d2", 2, DAY1, &[("B", 3, 500, 100)], Card);
    let mut wrong = close_of("s1-d2-c1", "s1", "d2", 3, DAY1, 1, &[&x, &y]);
    wrong.gross = Money::new(wrong.gross.amount_minor + 100, "EUR");
    vec![a, b, r, c1.into(), x, y, wrong.into()]
}

/// Store s1 after day 1 was exported: d3's day-1 sale and close (late), then day 2.
fn s1_late_and_day2() -> Vec<DeviceEvent> {
    use TenderMethod::*;
    let late = sale("s1-d3-1", "s1", "d3", 1, DAY1, &[("C", 2, 800, 0)], Cash);
    let late_close = close_of("s1-d3-c1", "s1", "d3", 2, DAY1, 1, &[&late]);
    let d = sale("s1-d1-5", "s1", "d1", 5, DAY2, &[("A", 1, 1000, 0)], Card);
    let c = close_of("s1-d1-c2", "s1", "d1", 6, DAY2, 5, &[&d]);
    let empty = close_of("s1-d2-c2", "s1", "d2", 4, DAY2, 4, &[]);
    vec![late, late_close.into(), d, c.into(), empty.into()]
}

/// Store s2, day 1: the bad inputs. d3 closes last, so the day cannot close before d1's second
/// close is in.
fn s2_day1() -> Vec<DeviceEvent> {
    use TenderMethod::*;
    let hold = sale("s2-d3-1", "s2", "d3", 1, DAY1, &[("A", 1, 1000, 0)], Card);
    let ok = sale("s2-d1-1", "s2", "d1", 1, DAY1, &[("A", 1, 1000, 0)], Cash);
    let mut usd = match sale("s2-d1-2", "s2", "d1", 2, DAY1, &[("B", 1, 500, 0)], Card) {
        DeviceEvent::OrderCreated(o) => o,
        _ => unreachable!(),
    };
    usd.tenders[0].amount = Money::new(600, "USD");
    let unknown = refund("s2-d1-3", "s2", "d1", 3, DAY1, "o-nope", 1200, 200);
    let first = close_of("s2-d1-c1", "s2", "d1", 4, DAY1, 1, &[&ok, &unknown]);
    let mut second = close_of("s2-d1-c2", "s2", "d1", 5, DAY1, 1, &[&ok, &unknown]);
    second.net = Money::new(second.net.amount_minor - 50, "EUR");
    let no_events = close_of("s2-d2-c1", "s2", "d2", 1, DAY1, 1, &[]);
    let hold_close = close_of("s2-d3-c1", "s2", "d3", 2, DAY1, 1, &[&hold]);
    vec![
        hold,
        ok,
        usd.into(),
        unknown,
        first.into(),
        second.into(),
        no_events.into(),
        hold_close.into(),
    ]
}

/// Runs the scenario on a fresh stack and returns (env, every file written).
async fn run_scenario() -> (Env, std::collections::BTreeMap<String, Vec<u8>>) {
    let env = Env::start().await;
    let token = CancellationToken::new();
    // Late lines wait for the next day export (longer than this test runs).
    let running = tillstream_finance_export::start(env.config(600_000), token.clone())
        .await
        .unwrap();
    let dir = env.exports_dir();
    let mut first = s1_day1();
    first.extend(s2_day1());
    produce(&env, &first).await;
    wait_export(&dir, "s1", "2026-11-02", WAIT).await;
    wait_export(&dir, "s2", "2026-11-02", WAIT).await;
    produce(&env, &s1_late_and_day2()).await;
    wait_export(&dir, "s1", "2026-11-03", WAIT).await;
    token.cancel();
    running.wait().await.unwrap();
    let files = snapshot(&dir);
    (env, files)
}

fn recon_row<'a>(read: &'a Value, store: &str, date: &str, device: &str) -> &'a Value {
    &read["recon"][format!("{store}|{date}|{device}")]
}

fn line_sum(read: &Value, key: &str) -> (i64, i64, i64) {
    let v = &read["lines"][key];
    (
        v[0].as_i64().unwrap_or(0),
        v[1].as_i64().unwrap_or(0),
        v[2].as_i64().unwrap_or(0),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scenario_files_totals_adjustments_and_the_one_mismatch() {
    let (env, files) = run_scenario().await;
    let dir = env.exports_dir();
    let read = read_exports(&dir);

    // Exactly the three exports, each with the five files.
    let exports: BTreeSet<&str> = read["files"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(
        exports,
        BTreeSet::from(["s1/2026-11-02", "s1/2026-11-03", "s2/2026-11-02"])
    );

    // Every file's sha256 (hashlib and sha256sum, not the writer's code) is the manifest's.
    for export in &exports {
        let manifest: Value =
            serde_json::from_slice(&files[&format!("{export}/manifest.json")]).unwrap();
        for f in manifest["files"].as_array().unwrap() {
            let name = f["name"].as_str().unwrap();
            let sum = std::process::Command::new("sha256sum")
                .arg(dir.join(export).join(name))
                .output()
                .unwrap();
            let sum = String::from_utf8_lossy(&sum.stdout);
            assert_eq!(
                Some(f["sha256"].as_str().unwrap()),
                sum.split_whitespace().next()
            );
            assert_eq!(read["files"][export]["sha256"][name], f["sha256"]);
        }
        // Debits = credits per currency, as read back from Parquet, and as the manifest says.
        let totals = &read["files"][export]["totals"]["EUR"];
        assert_eq!(totals[0], totals[1], "{export} balanced");
        assert_eq!(manifest["totals"]["EUR"]["debit_minor"], totals[0]);
        assert_eq!(manifest["row_count"], read["files"][export]["rows"]);
    }

    // Day 1 of s1 as read back from Parquet (hand-computed figures): gross 2000+500+800 (d1) +
    // 1000+1500 (d2) regular, 1600 (d3, late) as adjustment lines of day 2's export.
    assert_eq!(
        line_sum(&read, "s1|2026-11-02|regular|sale|revenue|").1,
        5800
    );
    assert_eq!(
        line_sum(&read, "s1|2026-11-02|regular|sale|discounts|").0,
        300
    );
    assert_eq!(
        line_sum(&read, "s1|2026-11-02|regular|sale|tax_payable|").1,
        360 + 100 + 160 + 200 + 280
    );
    assert_eq!(
        line_sum(&read, "s1|2026-11-02|regular|refund|tender_clearing|CASH").1,
        1080
    );
    assert_eq!(
        line_sum(&read, "s1|2026-11-02|adjustment|sale|revenue|").1,
        1600
    );
    assert_eq!(
        line_sum(&read, "s1|2026-11-03|regular|sale|revenue|").1,
        1000
    );

    // The late events are in day 2's export only, as adjustment lines dated day 1: one set of
    // adjustment lines per late event, none of them anywhere else.
    let adjusted: Vec<&str> = read["events"]["s1|2026-11-02|adjustment"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(adjusted, vec!["s1-d3-1", "s1-d3-c1"]);
    let regular_day1: Vec<&str> = read["events"]["s1|2026-11-02|regular"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(!regular_day1.contains(&"s1-d3-1"));
    let day2_manifest: Value =
        serde_json::from_slice(&files["s1/2026-11-03/manifest.json"]).unwrap();
    assert_eq!(
        day2_manifest["adjusted_business_dates"],
        serde_json::json!(["2026-11-02"])
    );
    let ledger_csv = String::from_utf8_lossy(&files["s1/2026-11-03/ledger.csv"]);
    for line in ledger_csv.lines().filter(|l| l.contains("s1-d3-")) {
        assert!(
            line.contains(",adjustment,2026-11-02,2026-11-03,"),
            "{line}"
        );
    }

    // Exactly one mismatch: s1's d2 on day 1, on gross, as the day's report said; d3 (late) was
    // reported matched in day 2's export as a revision.
    let statuses: Vec<(String, String)> = read["recon"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v["status"].as_str().unwrap().to_string()))
        .collect();
    let mismatched: Vec<&String> = statuses
        .iter()
        .filter(|(_, s)| s == "mismatched")
        .map(|(k, _)| k)
        .collect();
    assert_eq!(mismatched, vec!["s1|2026-11-02|d2"], "{statuses:?}");
    let d2 = recon_row(&read, "s1", "2026-11-02", "d2");
    assert_eq!(d2["differences"], "gross device=2600 ledger=2500");
    assert_eq!(
        recon_row(&read, "s1", "2026-11-02", "d1")["status"],
        "matched"
    );
    let d3 = recon_row(&read, "s1", "2026-11-02", "d3");
    assert_eq!(
        (d3["status"].as_str(), d3["revised"].as_str()),
        (Some("matched"), Some("true"))
    );
    let day1_recon = String::from_utf8_lossy(&files["s1/2026-11-02/reconciliation.csv"]);
    assert_eq!(
        day1_recon.matches(",mismatched,").count(),
        1,
        "{day1_recon}"
    );

    // Bad input: the USD tender is a dead letter with its reason; the refund of an unknown order,
    // the close without events and the conflicting closes are reconciliation records saying so.
    let s2d1 = recon_row(&read, "s2", "2026-11-02", "d1");
    assert_eq!(s2d1["status"], "conflicting_close");
    let notes = s2d1["notes"].as_str().unwrap();
    assert!(
        notes.contains("s2-d1-2 (seq 2) not booked: mixed_currency"),
        "{notes}"
    );
    assert!(notes.contains("refers to order o-nope"), "{notes}");
    assert!(
        notes.contains("closed 2 times with different figures"),
        "{notes}"
    );
    let s2d2 = recon_row(&read, "s2", "2026-11-02", "d2");
    assert_eq!(s2d2["status"], "matched");
    assert_eq!(s2d2["notes"], "day close without events");
    let kafka = env.kafka.clone();
    let dead = tokio::task::spawn_blocking(move || read_all(&kafka, DLQ, Duration::from_secs(30)))
        .await
        .unwrap()
        .unwrap();
    let reasons: Vec<(String, String)> = dead
        .iter()
        .filter(|r| r.header("tillstream-producer") == Some("finance-export"))
        .map(|r| {
            (
                r.header("tillstream-dead-letter-reason")
                    .unwrap_or("")
                    .to_string(),
                r.key_str(),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        vec![("mixed_currency".to_string(), "s2".to_string())]
    );

    // A second run from scratch writes byte-identical files.
    drop(env);
    let (_env2, again) = run_scenario().await;
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        again.keys().collect::<Vec<_>>()
    );
    for (name, bytes) in &files {
        assert!(again[name] == *bytes, "{name} differs between two runs");
    }
}
