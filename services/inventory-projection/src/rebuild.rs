//! `rebuild`: replays the store-event topic from offset 0 into the inactive table set (blue/green),
//! then proves it equals the live set (same offsets, byte-identical canonical dump, compared under
//! the state-row lock so no live batch interleaves) and switches the analyst views to it.
//!
//! Delivery guarantee: the rebuilt set is built with the same batch transaction as the live one
//! (gate + offsets), so an interrupted rebuild resumes where it stopped when run again with
//! `--resume`; the live set is never written. The switch is one transaction: views and the active
//! colour change together, and the live consumer's next batch writes the new set.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tillstream_contracts::Registry;
use tillstream_runtime::CancellationToken;
use tillstream_runtime::kafka;

use crate::db::{
    Color, Db, FaultConfig, Switch, Target, apply_isolating_refused, offsets_differ,
    until_available,
};
use crate::decode::{Decoded, decode_retrying};
use crate::model::{Envelope, ProjectionParams};
use crate::{Config, Error, metrics};

/// The progress line: records replayed of the total to replay, rate and ETA.
pub const PROGRESS_TEMPLATE: &str = "{spinner} rebuild {msg} [{elapsed_precise}] [{wide_bar}] {pos}/{len} records {per_sec} ETA {eta}";

/// How `rebuild` runs (the CLI flags).
#[derive(Debug, Clone)]
pub struct RebuildOptions {
    /// Switch the views when the rebuilt set equals the live one.
    pub switch: bool,
    /// Switch even when the sets differ (after a change to the projection function).
    pub force: bool,
    /// Keep what an interrupted rebuild already wrote to the inactive set.
    pub resume: bool,
    /// Draw a progress bar with ETA on stderr.
    pub progress: bool,
    /// How often to catch up with a live set that keeps moving before giving up.
    pub max_rounds: u32,
}

impl Default for RebuildOptions {
    fn default() -> Self {
        RebuildOptions {
            switch: true,
            force: false,
            resume: false,
            progress: true,
            max_rounds: 50,
        }
    }
}

/// How the rebuilt set compares with the live one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Compared with the live set under lock: byte-identical (and switched if asked).
    Equal,
    /// There was no live projection to compare with.
    NoLiveSet,
    /// Switched without comparing (`--force`).
    Forced,
    /// Same offsets, different content: the first differing dump lines.
    Differs { live: String, rebuilt: String },
}

/// What a rebuild did.
#[derive(Debug, Clone)]
pub struct RebuildReport {
    /// The set that was rebuilt (the one that was inactive).
    pub color: Color,
    /// Events the rebuilt set's gate admitted.
    pub events: u64,
    /// Records replayed (events, duplicates and poison alike).
    pub records: u64,
    /// Whether the views now read the rebuilt set.
    pub switched: bool,
    /// How the rebuilt set compares with the live one.
    pub verdict: Verdict,
    /// Wall time of the whole rebuild.
    pub elapsed: Duration,
}

fn replay_consumer(cfg: &Config) -> Result<StreamConsumer, Error> {
    let mut c = cfg
        .kafka
        .consumer_config("tillstream-inventory-projection-rebuild");
    c.set("group.id", format!("{}-rebuild", cfg.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest");
    for (k, v) in &cfg.kafka.properties {
        c.set(k, v);
    }
    Ok(c.create()?)
}

/// (low, high) watermark per partition of the topic.
async fn watermarks(cfg: &Config) -> Result<BTreeMap<i32, (i64, i64)>, Error> {
    let cfg = cfg.clone();
    tokio::task::spawn_blocking(move || -> Result<_, Error> {
        let consumer = replay_consumer(&cfg)?;
        let marks = kafka::watermarks(consumer.client(), &[&cfg.topic], Duration::from_secs(15))?;
        if marks.is_empty() {
            return Err(Error::Other(format!("topic {} not found", cfg.topic)));
        }
        Ok(marks.into_iter().map(|((_, p), w)| (p, w)).collect())
    })
    .await
    .map_err(|e| Error::Other(format!("watermarks: {e}")))?
}

/// Rebuilds the inactive set from the beginning of the topic. See the module docs.
pub async fn rebuild(
    cfg: &Config,
    opts: &RebuildOptions,
    token: &CancellationToken,
) -> Result<RebuildReport, Error> {
    let t0 = Instant::now();
    let Some(db) = Db::connect_retrying(&cfg.database, token).await? else {
        return Err(Error::Other("cancelled".into()));
    };
    db.ensure_views().await?;
    let live = db.active_color().await?;
    let target = live.other();
    if !opts.resume {
        db.clear(target).await?;
    }
    let registry = Registry::new(cfg.registry.clone())?;
    let marks = watermarks(cfg).await?;
    let live_offsets = db.offsets(live, &cfg.topic).await?;
    // Replay exactly as far as the live set has got (so the two can be compared); with no live
    // set, as far as the topic goes now.
    let mut goal: BTreeMap<i32, i64> = if live_offsets.is_empty() {
        marks.iter().map(|(p, (_, hi))| (*p, *hi)).collect()
    } else {
        live_offsets.clone()
    };
    tracing::info!(%live, %target, ?goal, "rebuild starting");
    let total: u64 = goal
        .iter()
        .map(|(p, g)| (g - marks.get(p).map(|m| m.0).unwrap_or(0)).max(0) as u64)
        .sum();
    let bar = if opts.progress {
        ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(PROGRESS_TEMPLATE)
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(format!("{live}→{target}"));

    let mut stats = Stats::default();
    let mut rounds = 0;
    let verdict;
    let mut switched = false;
    loop {
        replay(cfg, &db, &registry, target, &goal, &bar, &mut stats, token).await?;
        if token.is_cancelled() {
            return Err(Error::Other("rebuild cancelled".into()));
        }
        rounds += 1;
        let outcome = if opts.switch || opts.force {
            db.try_switch(target, &cfg.topic, opts.force).await?
        } else {
            compare_only(&db, live, target, &cfg.topic).await?
        };
        match outcome {
            Switch::Done { compared } => {
                switched = opts.switch || opts.force;
                verdict = if opts.force {
                    Verdict::Forced
                } else if compared {
                    Verdict::Equal
                } else {
                    Verdict::NoLiveSet
                };
                break;
            }
            Switch::LiveAhead(off) if rounds < opts.max_rounds => {
                tracing::info!(?off, "live set moved on; catching up");
                bar.inc_length(
                    off.iter()
                        .map(|(p, o)| (o - goal.get(p).copied().unwrap_or(0)).max(0) as u64)
                        .sum(),
                );
                goal = off;
            }
            Switch::LiveBehind(off) if rounds < opts.max_rounds => {
                tracing::info!(?off, "live set is behind the rebuild; waiting for it");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Switch::LiveAhead(off) | Switch::LiveBehind(off) => {
                return Err(Error::Other(format!(
                    "live set never held still at the rebuild's offsets after {rounds} rounds (live {off:?}); \
                     stop the live consumer or use --force"
                )));
            }
            Switch::Differs { live, rebuilt } => {
                verdict = Verdict::Differs { live, rebuilt };
                break;
            }
        }
    }
    bar.finish_and_clear();
    metrics::rebuild_progress(stats.events);
    Ok(RebuildReport {
        color: target,
        events: stats.events,
        records: stats.records,
        switched,
        verdict,
        elapsed: t0.elapsed(),
    })
}

/// The comparison `try_switch` does, without switching (`--no-switch`).
async fn compare_only(db: &Db, live: Color, target: Color, topic: &str) -> Result<Switch, Error> {
    let live_off = db.offsets(live, topic).await?;
    let new_off = db.offsets(target, topic).await?;
    if live_off.is_empty() {
        return Ok(Switch::Done { compared: false });
    }
    if live_off != new_off {
        return Ok(offsets_differ(live_off, &new_off));
    }
    let (a, b) = (db.dump(live).await?, db.dump(target).await?);
    if a == b {
        Ok(Switch::Done { compared: true })
    } else {
        let (live, rebuilt) = crate::db::first_difference(&a, &b);
        Ok(Switch::Differs { live, rebuilt })
    }
}

/// Replay progress across rounds.
#[derive(Debug, Default)]
struct Stats {
    /// Records replayed below the goal.
    records: u64,
    /// Events the gate admitted.
    events: u64,
}

/// Replays every partition of `goal` from the set's stored offset up to (not including) its goal.
#[allow(clippy::too_many_arguments)]
async fn replay(
    cfg: &Config,
    db: &Db,
    registry: &Registry,
    target: Color,
    goal: &BTreeMap<i32, i64>,
    bar: &ProgressBar,
    stats: &mut Stats,
    token: &CancellationToken,
) -> Result<(), Error> {
    let stored = db.offsets(target, &cfg.topic).await?;
    let mut pending: BTreeMap<i32, i64> = goal
        .iter()
        .filter(|(p, g)| stored.get(p).copied().unwrap_or(0) < **g)
        .map(|(p, g)| (*p, *g))
        .collect();
    if pending.is_empty() {
        return Ok(());
    }
    let consumer = replay_consumer(cfg)?;
    let mut tpl = TopicPartitionList::new();
    for p in pending.keys() {
        let start = match stored.get(p) {
            Some(o) => Offset::Offset(*o),
            None => Offset::Beginning,
        };
        tpl.add_partition_offset(&cfg.topic, *p, start)?;
    }
    consumer.assign(&tpl)?;
    let params = cfg.projection.params();
    let no_fault = FaultConfig::default();
    let max = cfg.batch.max_events.max(1);
    let idle = Duration::from_secs(5);
    while !pending.is_empty() {
        // Collect a batch: first record (or idle timeout), then up to `max` without waiting long.
        let mut batch = Vec::with_capacity(max);
        let first = tokio::select! {
            _ = token.cancelled() => return Ok(()),
            r = tokio::time::timeout(idle, consumer.recv()) => r,
        };
        match first {
            Ok(Ok(m)) => batch.push(m.detach()),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "replay consume error; retrying");
                continue;
            }
            Err(_) => {
                // Nothing arrives: a partition whose goal lies past its last record (offsets taken
                // by transaction markers) is done once the consumer's position reaches the goal.
                let pos = consumer.position()?;
                let mut done = BTreeMap::new();
                for e in pos.elements() {
                    if let (Offset::Offset(o), Some(g)) = (e.offset(), pending.get(&e.partition()))
                        && o >= *g
                    {
                        done.insert(e.partition(), *g);
                    }
                }
                if !done.is_empty() {
                    db.apply(
                        Target::Set(target),
                        &cfg.topic,
                        &[],
                        &done,
                        &params,
                        &no_fault,
                    )
                    .await?;
                    for p in done.keys() {
                        pending.remove(p);
                    }
                }
                continue;
            }
        }
        while batch.len() < max {
            match tokio::time::timeout(Duration::from_millis(20), consumer.recv()).await {
                Ok(Ok(m)) => batch.push(m.detach()),
                _ => break,
            }
        }
        let mut next: BTreeMap<i32, i64> = BTreeMap::new();
        let mut envs: Vec<Envelope> = Vec::with_capacity(batch.len());
        let mut records = 0u64;
        for msg in &batch {
            let p = msg.partition();
            let Some(g) = pending.get(&p) else { continue };
            if msg.offset() >= *g {
                continue;
            }
            records += 1;
            match decode_retrying(registry, msg, token).await? {
                Some(Decoded::Event(env)) => envs.push(env),
                // The live consumer dead-lettered it; the rebuild skips it the same way.
                Some(Decoded::Poison { .. }) => {}
                None => return Ok(()),
            }
            let e = next.entry(p).or_insert(0);
            *e = (*e).max(msg.offset() + 1);
        }
        if next.is_empty() {
            continue;
        }
        let applied =
            apply_skipping_refused(db, target, &cfg.topic, &envs, &next, &params, token).await?;
        let Some(admitted) = applied else {
            return Ok(());
        };
        stats.records += records;
        stats.events += admitted as u64;
        bar.inc(records);
        metrics::rebuild_progress(stats.events);
        for (p, o) in &next {
            if pending.get(p).is_some_and(|g| o >= g) {
                pending.remove(p);
            }
        }
    }
    Ok(())
}

/// Applies a replayed batch; a batch the database refuses (poison: a sum that would overflow) is
/// applied event by event and the refused events are skipped, as the live loop dead-lettered them,
/// so the rebuilt set equals the live one. The events admitted; `None` when cancelled.
async fn apply_skipping_refused(
    db: &Db,
    target: Color,
    topic: &str,
    envs: &[Envelope],
    next: &BTreeMap<i32, i64>,
    params: &ProjectionParams,
    token: &CancellationToken,
) -> Result<Option<usize>, Error> {
    let no_fault = &FaultConfig::default();
    apply_isolating_refused(
        envs,
        next,
        |envs, next| async move {
            let applied = until_available(
                token,
                |_| {},
                || db.apply(Target::Set(target), topic, envs, &next, params, no_fault),
            )
            .await?;
            Ok(applied.map(|a| a.new_events))
        },
        |env, e| async move {
            tracing::warn!(partition = env.partition, offset = env.offset, error = %e, "replayed event refused (dead-lettered by the live loop): skipped");
            Ok::<(), Error>(())
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_progress_template_parses() {
        assert!(indicatif::ProgressStyle::with_template(super::PROGRESS_TEMPLATE).is_ok());
    }
}
