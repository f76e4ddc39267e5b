//! End to end on the real stack: a simulated fleet publishes over mosquitto, the bridge, dedup and the
//! projection run as real processes against tansu and the registry, and the oracle must find zero
//! differences. The fault scenarios of the matrix live in `fault_matrix.rs`.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn heavy_clean_run_passes_the_oracle() {
    let spec = small_fleet(11, 3_000);
    let run = E2e::start(&spec, Backend::Sqlite).await;
    run.publish().await;
    run.assert_oracle_passes().await;
}
