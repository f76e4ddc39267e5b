//! `tillctl finance` on a real ledger (SQLite) built by the finance export's own booking and
//! exporter, no broker needed: a store-day of two tills (one declares a wrong gross) is exported by
//! the service's exporter into the delivery folder; `export` renders the range again into another
//! folder and must write byte-identical files (and find them already there a second time);
//! `ledger` shows the day's lines balanced; `reconciliation` counts one matched and names the one
//! mismatch.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use tillctl::finance::{self, ReExported, Source};
use tillstream_contracts::{DeviceEvent, EventKind, Money, OrderCreated, TenderTotal, samples};
use tillstream_finance_export::config::{CloseConfig, DatabaseConfig};
use tillstream_finance_export::core::{Chart, Stores};
use tillstream_finance_export::decode::Input;
use tillstream_finance_export::export::{Delivery, Sink};
use tillstream_finance_export::exporter::Exporter;
use tillstream_finance_export::processor::book;
use tillstream_finance_export::{Db, FaultConfig};

/// 2026-11-02.
const DAY: i32 = 20_759;
const TOPIC: &str = "tillstream.store-events";

fn sale(device: &str, seq: i64) -> OrderCreated {
    let mut o = samples::order("s1", device, seq, 2);
    o.event_id = format!("{device}-sale-{seq}");
    o.business_date = DAY;
    o
}

/// The till's own day close of `sales`, its gross raised by `gross_error`.
fn close_of(device: &str, seq: i64, sales: &[&OrderCreated], gross_error: i64) -> DeviceEvent {
    let DeviceEvent::StoreDayClosed(mut c) =
        samples::sample(EventKind::StoreDayClosed, "s1", device, seq).unwrap()
    else {
        unreachable!()
    };
    let sum = |f: &dyn Fn(&OrderCreated) -> i64| sales.iter().map(|o| f(o)).sum::<i64>();
    let eur = |m| Money::new(m, "EUR");
    c.event_id = format!("{device}-close");
    c.business_date = DAY;
    c.order_count = sales.len() as i32;
    c.refund_count = 0;
    c.gross = eur(sum(&|o| o.totals.gross.amount_minor) + gross_error);
    c.discounts = eur(sum(&|o| o.totals.discounts.amount_minor));
    c.tax = eur(sum(&|o| o.totals.tax.amount_minor));
    c.net = eur(sum(&|o| o.totals.net.amount_minor));
    c.refunds = eur(0);
    let mut tenders: BTreeMap<String, TenderTotal> = BTreeMap::new();
    for t in sales.iter().flat_map(|o| &o.tenders) {
        let e = tenders
            .entry(format!("{:?}", t.method))
            .or_insert(TenderTotal {
                method: t.method,
                amount: eur(0),
            });
        e.amount = eur(e.amount.amount_minor + t.amount.amount_minor);
    }
    c.tender_totals = tenders.into_values().collect();
    c.first_seq = 1;
    c.last_seq = seq - 1;
    c.into()
}

fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for export in std::fs::read_dir(dir.join("s1")).unwrap().flatten() {
        for f in std::fs::read_dir(export.path()).unwrap().flatten() {
            let name = format!(
                "{}/{}",
                export.file_name().to_string_lossy(),
                f.file_name().to_string_lossy()
            );
            out.insert(name, std::fs::read(f.path()).unwrap());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_again_ledger_and_reconciliation() {
    let dir = tempfile::tempdir().unwrap();
    let stores_file = dir.path().join("stores.csv");
    std::fs::write(
        &stores_file,
        "store_id,time_zone,currency,legal_entity\ns1,Europe/Berlin,EUR,TS-DE-01\n",
    )
    .unwrap();
    let db_url = format!("sqlite://{}", dir.path().join("finance.db").display());
    let db = Db::connect(&DatabaseConfig {
        url: db_url.clone(),
        ..DatabaseConfig::default()
    })
    .await
    .unwrap();
    let chart = Arc::new(Chart::embedded());
    let stores = Arc::new(Stores::parse(&std::fs::read_to_string(&stores_file).unwrap()).unwrap());

    // d1 sells twice and closes right; d2 sells once and declares 1.00 more gross than it sold.
    let (a, b, c) = (sale("s1-d1", 1), sale("s1-d1", 2), sale("s1-d2", 1));
    let events: Vec<DeviceEvent> = vec![
        a.clone().into(),
        b.clone().into(),
        close_of("s1-d1", 3, &[&a, &b], 0),
        c.clone().into(),
        close_of("s1-d2", 2, &[&c], 100),
    ];
    let booked: Vec<_> = events
        .into_iter()
        .enumerate()
        .filter_map(|(i, e)| {
            book(
                &Input::Event(Box::new(e)),
                TOPIC,
                0,
                i as i64,
                &chart,
                &stores,
            )
        })
        .map(|(row, refusal)| {
            assert!(refusal.is_none(), "{refusal:?}");
            row
        })
        .collect();
    assert_eq!(booked.len(), 5);
    let next = [((TOPIC.to_string(), 0), 5)].into();
    db.apply(&booked, &next, 0).await.unwrap();

    // The service's exporter delivers the day (every till closed it).
    let delivered = dir.path().join("delivered");
    let exporter = Exporter {
        db: db.clone(),
        sink: Sink::Local(delivered.clone()),
        chart,
        stores,
        close: CloseConfig::default(),
        barrier: None,
        fault: FaultConfig::default(),
    };
    exporter
        .pass(tillstream_runtime::clock::now_ms())
        .await
        .unwrap();
    let want = snapshot(&delivered);
    assert!(
        want.contains_key("2026-11-02/ledger.parquet"),
        "{:?}",
        want.keys()
    );

    let src = Source {
        db: Some(db_url),
        stores: Some(stores_file),
        ..Source::default()
    };
    // Export the range again into another folder: the same bytes; a second time: already there.
    let again = dir.path().join("again");
    let done = finance::export(&src, "2026-11-01", "2026-11-03", None, &again)
        .await
        .unwrap();
    assert_eq!(
        done,
        vec![ReExported {
            export_id: "s1/2026-11-02".into(),
            delivery: Delivery::Written
        }]
    );
    let got = snapshot(&again);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (name, bytes) in &want {
        assert!(
            got[name] == *bytes,
            "{name} differs from the delivered file"
        );
    }
    let done = finance::export(&src, "2026-11-02", "2026-11-02", Some("s1"), &again)
        .await
        .unwrap();
    assert_eq!(done[0].delivery, Delivery::AlreadyThere);
    // A range without exports exports nothing; a reversed range is refused.
    let none = finance::export(&src, "2026-11-03", "2026-11-05", None, &again)
        .await
        .unwrap();
    assert!(none.is_empty());
    assert!(
        finance::export(&src, "2026-11-05", "2026-11-03", None, &again)
            .await
            .is_err()
    );

    // The store-day's ledger: every sale's lines and the closes', balanced.
    let text = finance::ledger(&src, "s1", "2026-11-02").await.unwrap();
    for id in [
        "s1-d1-sale-1",
        "s1-d1-sale-2",
        "s1-d2-sale-1",
        "s1-d1-close",
    ] {
        assert!(text.contains(id), "{id} missing:\n{text}");
    }
    let totals = text.lines().find(|l| l.starts_with("EUR: ")).unwrap();
    let figures: Vec<&str> = totals.split_whitespace().collect();
    assert_eq!(figures[2], figures[4], "{totals}");
    assert!(!totals.contains("UNBALANCED"));
    assert!(
        text.contains("#1"),
        "lines name the export that delivered them"
    );
    let empty = finance::ledger(&src, "s1", "2026-11-03").await.unwrap();
    assert!(empty.starts_with("ledger of store s1 for 2026-11-03: 0 lines"));

    // Reconciliation across the fleet: d1 matched, d2 mismatched on gross.
    let text = finance::reconciliation(&src, None).await.unwrap();
    assert!(
        text.starts_with("reconciliation: 2 device-days in 1 stores"),
        "{text}"
    );
    assert!(
        text.contains("s1 2026-11-02 s1-d2: mismatched (gross till"),
        "{text}"
    );
    assert!(!text.contains("s1-d1:"), "{text}");
}
