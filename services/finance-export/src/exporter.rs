//! The exporter: closes store-days (every trading device closed, or the cut-off plus grace
//! passed), assigns each closed day's lines (and any late lines of earlier days, as adjustments)
//! to the store's next export together with its reconciliation records, renders the files from the
//! ledger and delivers them; late lines that no day export picks up within `late_flush_ms` go out
//! in a supplementary export. It also finishes deliveries a crash interrupted.
//!
//! Delivery guarantee: each line is in exactly one export (assignment and the export's row commit
//! together), an export's files appear whole (see [`crate::export::Sink`]), and delivering again
//! renders the same bytes from the ledger.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tillstream_runtime::fault::Hold;
use tillstream_runtime::retry::Backoff;
use tillstream_runtime::{CancellationToken, Classify, ErrorClass, clock};

use crate::barrier::CloseBarrier;
use crate::config::{CloseConfig, FaultConfig};
use crate::core::{
    Chart, CloseDecision, CloseReason, DeviceDayInput, ReconRecord, ReconStatus, Stores,
    close_decision, cutoff_ms, iso_date, reconcile,
};
use crate::db::{Db, ExportMeta, NewExport};
use crate::export::{Delivery, Rendered, Sink, render};
use crate::{Error, metrics as m};

/// How far back (days) a new export looks for earlier device-days whose reconciliation changed.
const REVISION_WINDOW_DAYS: i32 = 35;

/// Everything the exporter needs.
#[derive(Clone)]
pub struct Exporter {
    pub db: Db,
    pub sink: Sink,
    pub chart: Arc<Chart>,
    pub stores: Arc<Stores>,
    pub close: CloseConfig,
    /// The service's close barrier (`None` for tools that export what the ledger holds: they close
    /// on the devices' closes alone).
    pub barrier: Option<Arc<CloseBarrier>>,
    /// Fault injection (tests and drills).
    pub fault: FaultConfig,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter")
            .field("sink", &self.sink)
            .finish_non_exhaustive()
    }
}

/// The reconciliation record of one device-day, as the ledger stands now.
pub async fn device_record(
    db: &Db,
    store: &str,
    date: i32,
    device: &str,
) -> Result<ReconRecord, Error> {
    let ledger = db.booked_figures(store, date, device).await?;
    let closes = db.closes(store, date, device).await?;
    let events = db.day_events(store, date, device).await?;
    let seen = match closes.iter().max_by_key(|c| c.seq) {
        Some(c) if c.last_seq >= c.first_seq => {
            db.seqs_seen(device, c.first_seq, c.last_seq).await?
        }
        _ => BTreeSet::new(),
    };
    let notes = db.day_notes(store, date, device).await?;
    Ok(reconcile(&DeviceDayInput {
        store_id: store,
        device_id: device,
        business_date: date,
        ledger: ledger.as_ref(),
        closes: &closes,
        day_events: &events,
        seqs_seen: &seen,
        notes: &notes,
    }))
}

impl Exporter {
    /// Runs until `token` is cancelled: a pass every `close.check_every_ms`.
    pub async fn run(self, token: CancellationToken) -> Result<(), Error> {
        let removed = self.sink.clean_interrupted()?;
        if removed > 0 {
            tracing::info!(removed, "removed what interrupted deliveries left in .tmp");
        }
        let every = Duration::from_millis(self.close.check_every_ms.max(10));
        let mut backoff = Backoff::new(Duration::from_millis(200));
        loop {
            match self.pass(clock::now_ms()).await {
                Ok(()) => backoff.reset(),
                Err(e) if e.class() == ErrorClass::Retryable => {
                    tracing::warn!(error = %e, "export pass failed; retrying");
                    if !backoff.wait(&token).await {
                        return Ok(());
                    }
                    continue;
                }
                Err(e) => return Err(e),
            }
            tokio::select! {
                biased;
                _ = token.cancelled() => return Ok(()),
                _ = tokio::time::sleep(every) => {}
            }
        }
    }

    /// One pass: finish interrupted deliveries, close and export what is due, flush late lines.
    pub async fn pass(&self, now_ms: i64) -> Result<(), Error> {
        for meta in self.db.undelivered().await? {
            self.deliver(&meta).await?;
        }
        let open = self.db.open_days().await?;
        m::open_store_days(open.len() as u64);
        let mut blocked: BTreeSet<String> = BTreeSet::new();
        for (store_id, date) in open {
            if blocked.contains(&store_id) {
                continue;
            }
            let Some(store) = self.stores.get(&store_id) else {
                blocked.insert(store_id);
                continue;
            };
            let cutoff = cutoff_ms(date, &store.tz, &self.close.cutoff_local).ok_or_else(|| {
                Error::Config(format!(
                    "close.cutoff_local {:?} is not HH:MM",
                    self.close.cutoff_local
                ))
            })?;
            let day = self.db.store_day(&store_id, date).await?;
            match close_decision(&day, cutoff, self.close.grace_ms, now_ms) {
                Some(CloseDecision {
                    reason: CloseReason::AllDevicesClosed,
                }) if !self.barrier_passed(&store_id, date).await? => {
                    blocked.insert(store_id);
                }
                Some(decision) => {
                    self.forget_barrier(&store_id, date);
                    let (reason, missing) = match decision.reason {
                        CloseReason::AllDevicesClosed => ("all_devices_closed", Vec::new()),
                        CloseReason::Cutoff { missing } => ("cutoff", missing),
                    };
                    self.export(&store_id, date, "day", iso_date(date), reason, missing)
                        .await?;
                }
                // Later days of this store wait: days export in date order.
                None => {
                    self.forget_barrier(&store_id, date);
                    blocked.insert(store_id);
                }
            }
        }
        for (store_id, since) in self.db.pending_stores(now_ms).await? {
            if blocked.contains(&store_id) || now_ms - since < self.close.late_flush_ms {
                continue;
            }
            let Some(last) = self.db.last_exported_day(&store_id).await? else {
                continue;
            };
            let seq = self
                .db
                .exports(Some(&store_id), i32::MIN, i32::MAX)
                .await?
                .len()
                + 1;
            let name = format!("{}.s{seq}", iso_date(last));
            self.export(
                &store_id,
                last,
                "supplement",
                name,
                "late_events",
                Vec::new(),
            )
            .await?;
        }
        Ok(())
    }

    /// Whether the close barrier (if any) lets a day its devices closed close now.
    async fn barrier_passed(&self, store_id: &str, date: i32) -> Result<bool, Error> {
        match &self.barrier {
            Some(b) => b.passed(&self.db, &(store_id.to_string(), date)).await,
            None => Ok(true),
        }
    }

    fn forget_barrier(&self, store_id: &str, date: i32) {
        if let Some(b) = &self.barrier {
            b.forget(&(store_id.to_string(), date));
        }
    }

    /// Assigns, renders and delivers one export.
    async fn export(
        &self,
        store: &str,
        date: i32,
        kind: &'static str,
        name: String,
        reason: &'static str,
        missing_close: Vec<String>,
    ) -> Result<(), Error> {
        let started = Instant::now();
        let mut recon = Vec::new();
        if kind == "day" {
            for device in self.db.day_devices(store, date).await? {
                recon.push((device_record(&self.db, store, date, &device).await?, false));
            }
        }
        recon.extend(self.revisions(store, date, kind).await?);
        let new = NewExport {
            store_id: store.to_string(),
            business_date: date,
            kind,
            name,
            reason,
            missing_close,
            recon,
        };
        let seq = self.db.assign_export(&new).await?;
        let meta = ExportMeta {
            store_id: store.to_string(),
            export_seq: seq,
            business_date: date,
            kind: kind.to_string(),
            name: new.name.clone(),
            reason: reason.to_string(),
            missing_close: new.missing_close.clone(),
            delivered: false,
        };
        self.deliver(&meta).await?;
        for (r, _) in &new.recon {
            m::reconciliation(r.status.name());
        }
        let latest = self.db.latest_reported(Some(store)).await?;
        let not_matched = latest
            .iter()
            .filter(|r| r.status != ReconStatus::Matched)
            .count();
        m::mismatched_device_days(store, not_matched as u64);
        m::export(kind, reason, started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Earlier device-days whose record differs from the one last reported (or was never reported).
    async fn revisions(
        &self,
        store: &str,
        date: i32,
        kind: &str,
    ) -> Result<Vec<(ReconRecord, bool)>, Error> {
        let upto = if kind == "day" { date - 1 } else { date };
        let reported: BTreeMap<(i32, String), ReconRecord> = self
            .db
            .latest_reported(Some(store))
            .await?
            .into_iter()
            .map(|r| ((r.business_date, r.device_id.clone()), r))
            .collect();
        let mut out = Vec::new();
        let from = upto.saturating_sub(REVISION_WINDOW_DAYS);
        for d in from..=upto {
            let devices = self.db.day_devices(store, d).await?;
            for device in devices {
                let now = device_record(&self.db, store, d, &device).await?;
                if reported.get(&(d, device.clone())) != Some(&now) {
                    out.push((now, true));
                }
            }
        }
        Ok(out)
    }

    /// Renders an assigned export from the ledger and delivers it.
    pub async fn deliver(&self, meta: &ExportMeta) -> Result<(), Error> {
        let rendered = render_export(&self.db, &self.chart, &self.stores, meta).await?;
        let mid_write = Hold::new(
            self.fault.hold_mid_write_ms,
            self.fault.marker_file.as_ref(),
        );
        let written = self
            .sink
            .deliver_holding(&meta.store_id, &meta.name, rendered, mid_write)
            .await?;
        if written == Delivery::Written {
            let f = &self.fault;
            Hold::new(f.hold_after_delivery_ms, f.delivered_marker_file.as_ref())
                .hold("holding after a delivery, before recording it")
                .await;
        }
        self.db
            .mark_delivered(&meta.store_id, meta.export_seq)
            .await?;
        tracing::info!(
            export = %format!("{}/{}", meta.store_id, meta.name),
            location = %self.sink.location(&meta.store_id, &meta.name),
            already_there = written == Delivery::AlreadyThere,
            "export delivered"
        );
        Ok(())
    }
}

/// Renders an export from the ledger and delivers it to `sink` (also what `tillctl finance export`
/// uses to write a range again to another folder).
pub async fn deliver_to(
    db: &Db,
    sink: &Sink,
    chart: &Chart,
    stores: &Stores,
    meta: &ExportMeta,
) -> Result<Delivery, Error> {
    let rendered = render_export(db, chart, stores, meta).await?;
    Ok(sink.deliver(&meta.store_id, &meta.name, rendered).await?)
}

/// Renders an assigned export's files from the ledger (the same rows give the same bytes).
pub async fn render_export(
    db: &Db,
    chart: &Chart,
    stores: &Stores,
    meta: &ExportMeta,
) -> Result<Rendered, Error> {
    let store = stores.get(&meta.store_id).ok_or_else(|| {
        Error::Config(format!(
            "store {} is not in the store master data",
            meta.store_id
        ))
    })?;
    let lines = db.export_lines(&meta.store_id, meta.export_seq).await?;
    let recon = db.export_recon(&meta.store_id, meta.export_seq).await?;
    Ok(render(meta, &lines, &recon, store, chart)?)
}
