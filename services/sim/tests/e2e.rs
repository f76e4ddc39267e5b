//! End to end on the real stack: a simulated fleet publishes over mosquitto, the bridge, dedup and the
//! projection run as real processes against tansu and the registry, and the oracle must find zero
//! differences; then one projected row is corrupted in the database and the oracle must report it.
//! The fault scenarios of the matrix live in `fault_matrix.rs`.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn heavy_clean_run_passes_the_oracle_and_a_corrupted_row_fails_it() {
    let spec = with_poison(small_fleet(11, 3_000));
    let run = E2e::start(&spec, Backend::Sqlite).await;
    run.publish().await;
    run.assert_oracle_passes().await;

    // Corrupt one output row: the first stock row gets one unit more, behind the pipeline's back.
    let db = run.pipeline.database_url();
    sqlx::any::install_default_drivers();
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(&db)
        .await
        .unwrap();
    use sqlx::Row;
    let row = sqlx::query("SELECT store_id, sku FROM stock_on_hand ORDER BY store_id, sku LIMIT 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    let (store, sku): (String, String) = (row.try_get(0).unwrap(), row.try_get(1).unwrap());
    let color: String = sqlx::query("SELECT active_color FROM projection_state WHERE id = 1")
        .fetch_one(&pool)
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    let updated = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE {color}_stock SET on_hand = on_hand + 1 WHERE store_id = $1 AND sku = $2"
    )))
    .bind(&store)
    .bind(&sku)
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(updated.rows_affected(), 1);
    pool.close().await;

    let report = run.oracle().await;
    let text = report.render(10);
    println!("{text}");
    assert!(
        !report.passed(),
        "the oracle must notice the corrupted row:\n{text}"
    );
    assert_eq!(report.differences(), 1, "{text}");
    assert!(text.contains(&format!("stock {store}/{sku}")), "{text}");
}
