//! One scenario per rule through the real topics (tansu, the registry, the detector in process):
//! store events on `tillstream.store-events`, price lists on the history topic, a dedup collision
//! on `tillstream.conflicts`; the expected records on `tillstream.conflicts` and
//! `tillstream.compensations` are hand-computed in each step. Then a late event supersedes a
//! verdict, bad input is dead-lettered, and the review queue API lists, shows and resolves.

mod common;

use std::time::Duration;

use common::*;
use tillstream_conflict_detector::fixtures::*;
use tillstream_contracts::{
    AdjustmentKind, CompensationKind, ConflictKind, DeadLetter, Severity, codec, samples,
};
use tillstream_integration_tests::{Svc, read_all};

const DONE: Duration = Duration::from_secs(120);

/// Two days before now at 06:00 UTC: recent (inside the horizon), fixed within a run.
fn base() -> i64 {
    let now = tillstream_runtime::clock::now_ms();
    (now / 86_400_000 - 2) * 86_400_000 + 6 * H
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_rule_through_the_real_topics() {
    let _exit = ExitOnPanic;
    let env = Env::start(&[Svc::Tansu]).await;
    let db_url = env.sqlite("detector.db");
    scenario(&env, &db_url).await;
}

/// The same on PostgreSQL, in a database another service already migrated with sqlx's default
/// `_sqlx_migrations` table (the projection's): the detector's own namespace must not collide.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_rule_on_postgres_beside_another_service() {
    use sqlx::Connection;
    let _exit = ExitOnPanic;
    let env = Env::start(&[Svc::Tansu, Svc::Postgres]).await;
    let url = env.stack.pg_url();
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    for stmt in [
        "CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL, installed_on TIMESTAMPTZ NOT NULL DEFAULT now(), success BOOLEAN NOT NULL, checksum BYTEA NOT NULL, execution_time BIGINT NOT NULL)",
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (1, 'projection', true, '\\x00', 1)",
        "CREATE TABLE applied_event (event_id TEXT PRIMARY KEY)",
    ] {
        sqlx::raw_sql(stmt).execute(&mut conn).await.unwrap();
    }
    scenario(&env, &url).await;
    let other: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        other, 1,
        "the other service's migrations table is untouched"
    );
    let ours: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _conflict_detector_migrations")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(ours, 2, "the schema and the held-verdict counts");
}

async fn scenario(env: &Env, db_url: &str) {
    let t0 = base();
    let cfg = env.config(db_url);
    let (running, token) = start(cfg).await;
    let db = running.state.db.clone();
    let api = running.state.api_addr.expect("api served");

    // Price lists first, approved with `tillctl prices approve` (history and downlink topics),
    // then every rule's events.
    for (version, effective, a) in [(1, t0, 500), (2, t0 + 10 * H, 450)] {
        let file = env.dir.path().join(format!("pl-{version}.json"));
        let body = serde_json::json!({
            "store_id": "pv1", "price_list_id": format!("pl-pv1-v{version}"),
            "effective_from": effective, "approved_by": "pricing@hq", "version": version,
            "items": [{"sku": "A", "price": {"amount_minor": a, "currency": "EUR"}},
                      {"sku": "B", "price": {"amount_minor": 500, "currency": "EUR"}}]
        });
        std::fs::write(&file, body.to_string()).unwrap();
        tillctl::prices::approve(
            &env.kafka,
            &env.client,
            &file,
            "tillstream.catalog.downlink",
            HISTORY,
        )
        .await
        .expect("prices approve");
    }
    let mut events = vec![
        // 1 oversell, the seed story: receipt 5, counted 1 (expected 5: nothing stale), both
        // devices sell that unit at the same moment, restock 60.
        receipt("ov1", "ov1-d1", 1, t0, "SKU-7", 5),
        adjust(
            "ov1",
            "ov1-d1",
            2,
            t0 + 1000,
            AdjustmentKind::Count,
            "SKU-7",
            1,
            Some(5),
        ),
        sale(
            "ov1",
            "ov1-d1",
            3,
            t0 + 2000,
            "o-1",
            &[Line("SKU-7", 1, 499)],
        ),
        sale(
            "ov1",
            "ov1-d2",
            1,
            t0 + 2000,
            "o-2",
            &[Line("SKU-7", 1, 499)],
        ),
        receipt("ov1", "ov1-d1", 4, t0 + 3000, "SKU-7", 60),
        // 2 reservation breach: 3 on hand, 2 held for o-web, a walk-in sale of 2.
        receipt("rb1", "rb1-d1", 1, t0, "A", 3),
    ];
    events.extend(reserve("rb1", "rb1-d9", 1, t0 + H, "r-1", "A", 2, "o-web"));
    events.extend([
        sale(
            "rb1",
            "rb1-d1",
            2,
            t0 + 4 * H,
            "o-walkin",
            &[Line("A", 2, 100)],
        ),
        // 3 price variance: 5.03 (within 5 minor units) and 4.50 (beyond) against 5.00.
        receipt("pv1", "pv1-d1", 1, t0, "A", 10),
        sale("pv1", "pv1-d1", 2, t0 + 3 * H, "o-1", &[Line("A", 2, 503)]),
        sale("pv1", "pv1-d1", 3, t0 + 4 * H, "o-2", &[Line("A", 2, 450)]),
        // 4 loyalty: one redemption on two devices 3 h apart.
        redeem("ly1", "ly1-d1", 1, t0 + 5 * H, "rd-1", "M1", "FREECOFFEE"),
        redeem("ly1", "ly1-d2", 1, t0 + 8 * H, "rd-1", "M1", "FREECOFFEE"),
        // 5 duplicate business key: order o-42 twice from one device.
        receipt("dk1", "dk1-d1", 1, t0, "A", 10),
        sale("dk1", "dk1-d1", 2, t0 + H, "o-42", &[Line("A", 1, 100)]),
        sale("dk1", "dk1-d1", 9, t0 + 9 * H, "o-42", &[Line("A", 1, 100)]),
        // 6 stale count: 10 received, 1 sold by d2, d1 counts 8 expecting 10 five hours later.
        receipt("sc1", "sc1-d1", 1, t0, "A", 10),
        sale("sc1", "sc1-d2", 1, t0 + H, "o-1", &[Line("A", 1, 100)]),
        adjust(
            "sc1",
            "sc1-d1",
            2,
            t0 + 6 * H,
            AdjustmentKind::Count,
            "A",
            8,
            Some(10),
        ),
    ]);
    produce(env, &events).await;
    // 7 identity collision, as the dedup writes it.
    let mut collision = samples::conflict();
    collision.store_id = "ic1".into();
    produce_dedup_conflict(env, &collision).await;
    wait_done(env, &db, DONE).await;
    let out = outputs(env).await;

    // 1: one conflict in the queue (same-moment sales on two devices: the order is the clocks'
    // guess, so review), one backorder for the later (tie: device ov1-d2) sale, both sales kept.
    let c = out.conflicts_of("ov1");
    assert_eq!(c.len(), 1, "{c:#?}");
    assert_eq!(c[0].kind, ConflictKind::Oversold);
    assert_eq!(c[0].severity, Severity::Warning);
    assert_eq!(c[0].detail["triage"], "needs-review");
    assert_eq!(c[0].event_ids[0], id("ov1-d2", 1));
    let comp = out.compensations_of("ov1");
    assert_eq!(comp.len(), 1);
    assert_eq!(
        (comp[0].kind, comp[0].qty),
        (CompensationKind::Backorder, 1)
    );
    assert_eq!(comp[0].money, Some(eur(499)));
    assert_eq!(comp[0].conflict_id, c[0].conflict_id);
    assert!(
        out.resolved_of("ov1").is_empty(),
        "needs review: not auto-resolved"
    );
    let oversell_id = c[0].conflict_id.clone();

    // 2: one unit of held stock sold to another order: review, no compensation.
    let c = out.conflicts_of("rb1");
    assert_eq!(c.len(), 1, "{c:#?}");
    assert_eq!(c[0].kind, ConflictKind::ReservationBreach);
    assert_eq!(c[0].detail["held_units_taken"], "1");
    assert!(out.compensations_of("rb1").is_empty());

    // 3: (500 - 503) x 2 = -6 auto-accepted for finance; (500 - 450) x 2 = +100 to review.
    let c = out.conflicts_of("pv1");
    assert_eq!(c.len(), 2, "{c:#?}");
    assert!(c.iter().all(|c| c.kind == ConflictKind::PriceMismatch));
    assert_eq!(c[0].detail["triage"], "auto-resolved");
    assert_eq!(c[0].detail["owner"], "finance");
    assert_eq!(c[1].detail["triage"], "needs-review");
    let money: Vec<i64> = out
        .compensations_of("pv1")
        .iter()
        .map(|c| {
            assert_eq!(c.kind, CompensationKind::PriceAdjustment);
            c.money.as_ref().unwrap().amount_minor
        })
        .collect();
    assert_eq!(money, vec![-6, 100]);
    let r = out.resolved_of("pv1");
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].conflict_id, c[0].conflict_id);
    assert_eq!(r[0].resolution, "auto: price adjustment on 2 x A");

    // 4: the second redemption is clawed back, auto-resolved.
    let c = out.conflicts_of("ly1");
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].kind, ConflictKind::DoubleRedemption);
    assert_eq!(c[0].event_ids[0], id("ly1-d2", 1));
    let comp = out.compensations_of("ly1");
    assert_eq!(
        (comp[0].kind, comp[0].qty, comp[0].money.clone()),
        (CompensationKind::PointsClawback, 500, Some(eur(500)))
    );
    assert_eq!(out.resolved_of("ly1").len(), 1);

    // 5: o-42 twice: review, nothing compensated.
    let c = out.conflicts_of("dk1");
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].kind, ConflictKind::DuplicateBusinessKey);
    assert_eq!(c[0].detail["key"], "o-42");
    assert!(out.compensations_of("dk1").is_empty());

    // 6: event-time on-hand 9, expected 10: difference -1 (within 2: info), delta 8 - 10 = -2.
    let c = out.conflicts_of("sc1");
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].kind, ConflictKind::StaleCount);
    assert_eq!(c[0].severity, Severity::Info);
    assert_eq!(
        (
            c[0].detail["difference"].as_str(),
            c[0].detail["applied_delta"].as_str()
        ),
        ("-1", "-2")
    );

    // 7: the dedup's collision is in the queue as it is, and not written again.
    let row = db
        .get(&collision.conflict_id)
        .await
        .unwrap()
        .expect("queued");
    assert_eq!(
        (row.row.rule.as_str(), row.row.status.as_str()),
        ("identity-collision", "open")
    );
    assert_eq!(out.conflicts_of("ic1").len(), 0);

    // A late event supersedes a verdict. One unit; a sale at +6 h; then an offline sale from +1 h
    // arrives: it happened first, so the +6 h sale is the oversold one (5 h apart: auto).
    produce(
        env,
        &[
            receipt("ls1", "ls1-d0", 1, t0, "A", 1),
            sale(
                "ls1",
                "ls1-d1",
                1,
                t0 + 6 * H,
                "o-late",
                &[Line("A", 1, 100)],
            ),
        ],
    )
    .await;
    wait_done(env, &db, DONE).await;
    produce(
        env,
        &[sale(
            "ls1",
            "ls1-d2",
            1,
            t0 + H,
            "o-early",
            &[Line("A", 1, 100)],
        )],
    )
    .await;
    wait_done(env, &db, DONE).await;
    let out = outputs(env).await;
    let c = out.conflicts_of("ls1");
    assert_eq!(c.len(), 1, "{c:#?}");
    assert_eq!(c[0].event_ids[0], id("ls1-d1", 1));
    let superseded_id = c[0].conflict_id.clone();
    // A receipt from +3 h arrives late too: the +6 h sale had stock: superseded, backorder reversed.
    produce(env, &[receipt("ls1", "ls1-d0", 2, t0 + 3 * H, "A", 4)]).await;
    wait_done(env, &db, DONE).await;
    let out = outputs(env).await;
    let r = out.resolved_of("ls1");
    assert_eq!(r.len(), 2, "auto resolution, then the supersede: {r:#?}");
    assert_eq!(r[1].conflict_id, superseded_id);
    assert_eq!(
        r[1].resolution,
        format!("auto: superseded by {}", id("ls1-d0", 2))
    );
    let comp = out.compensations_of("ls1");
    assert_eq!(comp.len(), 2);
    assert_eq!((comp[1].qty, comp[1].money.clone()), (-1, Some(eur(-100))));
    assert_eq!(
        comp[1].reverses.as_deref(),
        Some(comp[0].compensation_id.as_str())
    );
    assert_eq!(
        out.conflicts_of("ls1").len(),
        1,
        "nothing deleted, nothing re-raised"
    );

    // A verdict that a later input supersedes while it waits is withdrawn unwritten: the +6 h
    // sale is oversold once the +1 h one arrives, then a +3 h receipt arrives within the hold
    // (one produce call: well within a second of record time) and it holds no more. Nothing of
    // it reaches the topics.
    let withdrawn_before = running
        .state
        .counters
        .withdrawn
        .load(std::sync::atomic::Ordering::Relaxed);
    produce(
        env,
        &[
            receipt("wd1", "wd1-d0", 1, t0, "A", 1),
            sale(
                "wd1",
                "wd1-d1",
                1,
                t0 + 6 * H,
                "o-wd-late",
                &[Line("A", 1, 100)],
            ),
            sale(
                "wd1",
                "wd1-d2",
                1,
                t0 + H,
                "o-wd-early",
                &[Line("A", 1, 100)],
            ),
            receipt("wd1", "wd1-d0", 2, t0 + 3 * H, "A", 4),
        ],
    )
    .await;
    wait_done(env, &db, DONE).await;
    let out = outputs(env).await;
    assert!(
        out.conflicts_of("wd1").is_empty(),
        "{:#?}",
        out.conflicts_of("wd1")
    );
    assert!(out.compensations_of("wd1").is_empty());
    assert_eq!(
        running
            .state
            .counters
            .withdrawn
            .load(std::sync::atomic::Ordering::Relaxed)
            - withdrawn_before,
        1
    );

    // Bad input never vanishes: garbage and an amount beyond the bound are dead-lettered.
    produce_raw(env, "bad1", b"{not avro").await;
    produce(
        env,
        &[sale(
            "bad1",
            "bad1-d1",
            1,
            t0,
            "o-1",
            &[Line("A", 3, i64::MAX / 2)],
        )],
    )
    .await;
    wait_done(env, &db, DONE).await;
    let k = env.kafka.clone();
    let dlq = tokio::task::spawn_blocking(move || read_all(&k, DLQ, Duration::from_secs(60)))
        .await
        .unwrap()
        .unwrap();
    let mut reasons = Vec::new();
    for r in &dlq {
        let (id, datum) = codec::unframe(r.payload.as_deref().unwrap()).unwrap();
        let d: DeadLetter = env
            .client
            .writer_schema(id)
            .await
            .unwrap()
            .decode(datum)
            .unwrap();
        if d.service == "conflict-detector" {
            reasons.push(d.reason);
        }
    }
    reasons.sort();
    assert_eq!(reasons, vec!["money_out_of_range", "not_framed"]);

    // The review queue over HTTP: refused without the token; lists open conflicts by store.
    let http = reqwest::Client::new();
    let base_url = format!("http://{api}");
    let no_token = http
        .get(format!("{base_url}/conflicts"))
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status(), 401);
    let auth = |rb: reqwest::RequestBuilder| rb.bearer_auth(TOKEN);
    let open: Vec<serde_json::Value> = auth(http.get(format!("{base_url}/conflicts?store=ov1")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0]["conflict_id"], oversell_id.as_str());
    let all_open: Vec<serde_json::Value> = auth(http.get(format!(
        "{base_url}/conflicts?severity=needs-review&limit=100"
    )))
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let rules: std::collections::BTreeSet<String> = all_open
        .iter()
        .map(|c| c["rule"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        rules,
        [
            "duplicate-business-key",
            "identity-collision",
            "oversell",
            "price-variance",
            "reservation-breach"
        ]
        .map(String::from)
        .into()
    );
    // Show: the evidence and the compensation.
    let shown: serde_json::Value = auth(http.get(format!("{base_url}/conflicts/{oversell_id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shown["compensations"].as_array().unwrap().len(), 1);
    assert!(
        shown["verdict"]["explanation"]
            .as_str()
            .unwrap()
            .contains(&id("ov1-d2", 1))
    );
    // Resolve (reject): ConflictResolved + the backorder reversed + an audit row.
    let body = serde_json::json!({"action": "reject", "who": "alice", "why": "the unit was found in the back room"});
    let res = auth(http.post(format!("{base_url}/conflicts/{oversell_id}/resolve")))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res: serde_json::Value = res.json().await.unwrap();
    assert_eq!(res["outcome"], "resolved");
    assert_eq!(res["conflict"]["audit"][0]["who"], "alice");
    // Twice: a no-op.
    let again: serde_json::Value =
        auth(http.post(format!("{base_url}/conflicts/{oversell_id}/resolve")))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(again["outcome"], "already-resolved");
    // A superseded conflict: refused, saying why.
    let refused = auth(http.post(format!("{base_url}/conflicts/{superseded_id}/resolve")))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 409);
    let msg: serde_json::Value = refused.json().await.unwrap();
    assert!(
        msg["error"].as_str().unwrap().contains("superseded"),
        "{msg}"
    );
    wait_done(env, &db, DONE).await;
    let out = outputs(env).await;
    let r = out.resolved_of("ov1");
    assert_eq!(
        r.len(),
        1,
        "one resolution, the second attempt wrote nothing"
    );
    assert_eq!(
        r[0].resolution,
        "rejected by alice: the unit was found in the back room"
    );
    assert_eq!(r[0].resolved_by, "alice");
    let comp = out.compensations_of("ov1");
    assert_eq!(comp.len(), 2);
    assert_eq!(
        (comp[1].qty, comp[1].issued_by.as_str()),
        (-1, "review:alice")
    );

    // The same queue through `tillctl conflicts`.
    let cli = tillctl::conflicts::Api {
        url: base_url.clone(),
        token: TOKEN.into(),
    };
    let listed = cli
        .list(&tillctl::conflicts::ListFilter {
            rule: Some("reservation-breach".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["store_id"], "rb1");
    let shown = cli
        .show(listed[0]["conflict_id"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(shown["verdict"]["rule"], "reservation-breach");
    let refused = cli
        .resolve(&superseded_id, "accept", "bob", "ok")
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("HTTP 409"), "{refused}");
    let wrong = tillctl::conflicts::Api {
        url: base_url.clone(),
        token: "nope".into(),
    };
    assert!(
        wrong
            .list(&Default::default())
            .await
            .unwrap_err()
            .to_string()
            .contains("401")
    );
    // Both lists are on the compacted downlink too (the store's latest is what the bridge sends).
    let k = env.kafka.clone();
    let downlink = tokio::task::spawn_blocking(move || {
        read_all(&k, "tillstream.catalog.downlink", Duration::from_secs(60))
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        downlink
            .iter()
            .filter(|r| r.key_str() == "pv1/price-list")
            .count(),
        2
    );

    // Metrics: conflicts by rule/severity/store, the queue, the horizon counter.
    let text = reqwest::get(format!("http://{}/metrics", running.ops_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "tillstream_conflict_detector_conflicts_total{rule=\"oversell\",severity=\"needs-review\",store=\"ov1\"} 1",
        "tillstream_conflict_detector_queue_open_conflicts{owner=\"store-ops\"}",
        "tillstream_conflict_detector_queue_oldest_open_age_seconds",
    ] {
        assert!(text.contains(needle), "missing {needle}");
    }
    token.cancel();
    running.wait().await.unwrap();
}
