//! How each device publishes its events: the identity collisions (sales re-published with the same
//! event id and other content), which devices go offline and when, and the publish steps that follow
//! — online publishes, offline stretches buffered and burst (reordered) on reconnect after a replay
//! of the last events sent before the disconnect, duplicates from lost acks, collision variants,
//! heartbeats at their position. Pure.

use std::collections::{BTreeMap, BTreeSet};

use rand::Rng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use tillstream_contracts::DeviceEvent;

use super::fleet::{FleetGenerator, PlannedEvent};
use super::{DevicePlan, FleetSpec, Publish, Purpose, Step, mqtt_topic};

/// A planned store event: (device index, index among the device's events).
pub(super) type EventRef = (usize, usize);

fn json_bytes(e: &DeviceEvent) -> Vec<u8> {
    serde_json::to_vec(&e.to_json()).unwrap_or_default()
}

fn publish_of(event: &DeviceEvent, purpose: Purpose) -> Publish {
    Publish {
        topic: mqtt_topic(event),
        payload: json_bytes(event),
        purpose,
    }
}

/// The label a publish is counted under in the truth's `published`.
fn purpose_label(purpose: &Purpose) -> &'static str {
    match purpose {
        Purpose::Event => "event",
        Purpose::Duplicate => "duplicate",
        Purpose::Collision => "collision",
        Purpose::Poison(_) => "poison",
    }
}

/// Which of a device's events it records while offline: the constructed ones, and on a device that
/// goes offline `offline_periods` windows of `offline_events` (at most half its events) at random
/// starts (windows may overlap).
fn offline_windows(
    rng: &mut ChaCha8Rng,
    spec: &FleetSpec,
    events: &[PlannedEvent],
    goes_offline: bool,
) -> Vec<bool> {
    let n = events.len();
    let mut offline: Vec<bool> = events.iter().map(|p| p.force_offline).collect();
    if goes_offline && n > 4 {
        for _ in 0..spec.offline_periods {
            let len = (spec.offline_events as usize).min(n / 2).max(1);
            let start = rng.random_range(1..n.saturating_sub(len).max(2));
            for o in offline.iter_mut().skip(start).take(len) {
                *o = true;
            }
        }
    }
    offline
}

/// One device's uplink while its steps are built: what it has sent and what it buffers offline.
struct Uplink {
    steps: Vec<Step>,
    /// Every event publish so far, buffered ones included (the replay on reconnect skips those).
    sent: Vec<Publish>,
    /// Publishes recorded while offline, burst on reconnect.
    buffer: Vec<Publish>,
    offline: bool,
    replay_on_reconnect: usize,
    reorder_window: usize,
}

impl Uplink {
    /// Publishes now when online, buffers when offline.
    fn send(&mut self, publish: Publish) {
        if self.offline {
            self.buffer.push(publish);
        } else {
            self.steps.push(Step::Publish(publish));
        }
    }

    fn disconnect(&mut self) {
        self.steps.push(Step::Offline);
        self.offline = true;
    }

    /// The uplink returns: a POS that lost its acks re-sends the last events it sent before the
    /// outage (unless they are in the buffer), then bursts its buffer, shuffled within each
    /// reordering window.
    fn reconnect(&mut self, rng: &mut ChaCha8Rng) {
        self.steps.push(Step::Online);
        let replay = self.replay_on_reconnect.min(self.sent.len());
        let cut = self.sent.len().saturating_sub(replay + self.buffer.len());
        for p in self.sent[cut..].iter().take(replay) {
            if !self.buffer.iter().any(|b| b.payload == p.payload) {
                self.steps.push(Step::Publish(Publish {
                    purpose: Purpose::Duplicate,
                    ..p.clone()
                }));
            }
        }
        for chunk in self.buffer.chunks_mut(self.reorder_window.max(1)) {
            chunk.shuffle(rng);
        }
        self.steps.extend(self.buffer.drain(..).map(Step::Publish));
        self.offline = false;
    }
}

impl FleetGenerator {
    /// Identity collisions: `spec.collisions` published, unconstructed sales that will be
    /// re-published with the same event_id and a different tender reference (content differs, stock
    /// and money do not: the truth holds whichever arrives first).
    pub(super) fn pick_collisions(&mut self) -> BTreeSet<EventRef> {
        let mut sales: Vec<EventRef> = Vec::new();
        for (d, dev) in self.devices.iter().enumerate().filter(|(_, dev)| !dev.late) {
            for (i, p) in dev.events.iter().enumerate() {
                if !p.missing && !p.force_offline && matches!(p.event, DeviceEvent::OrderCreated(_))
                {
                    sales.push((d, i));
                }
            }
        }
        sales.shuffle(&mut self.rng);
        let collisions: BTreeSet<EventRef> = sales
            .into_iter()
            .take(self.spec.collisions as usize)
            .collect();
        for (d, i) in &collisions {
            self.truth
                .collisions
                .insert(self.devices[*d].events[*i].event.event_id().to_string());
        }
        collisions
    }

    /// Turns each device's events into publish steps. Offline devices are drawn first, then device
    /// by device its offline windows and, event by event, its duplicates and reconnect bursts.
    pub(super) fn build_steps(&mut self, collisions: &BTreeSet<EventRef>) -> Vec<DevicePlan> {
        let offline_fraction = self.spec.offline_fraction.clamp(0.0, 1.0);
        let offline_devices: BTreeSet<usize> = (0..self.devices.len())
            .filter(|_| self.rng.random_bool(offline_fraction))
            .collect();
        let mut plans = Vec::new();
        for (d, dev) in self.devices.iter().enumerate() {
            let n = dev.events.len();
            let offline = offline_windows(
                &mut self.rng,
                &self.spec,
                &dev.events,
                offline_devices.contains(&d) && !dev.late,
            );
            // Heartbeats are published at their position, before the event they precede.
            let mut heartbeats_before: BTreeMap<usize, Vec<&DeviceEvent>> = BTreeMap::new();
            for heartbeat in &dev.heartbeats {
                heartbeats_before
                    .entry(heartbeat.before_event)
                    .or_default()
                    .push(&heartbeat.event);
            }
            let mut uplink = Uplink {
                steps: Vec::new(),
                sent: Vec::new(),
                buffer: Vec::new(),
                offline: false,
                replay_on_reconnect: self.spec.replay_on_reconnect as usize,
                reorder_window: self.spec.reorder_window,
            };
            let mut send_heartbeats_before = |uplink: &mut Uplink, i: usize| {
                for heartbeat in heartbeats_before.remove(&i).unwrap_or_default() {
                    uplink.send(publish_of(heartbeat, Purpose::Event));
                }
            };
            for (i, (planned, &offline_now)) in dev.events.iter().zip(&offline).enumerate() {
                send_heartbeats_before(&mut uplink, i);
                if offline_now && !uplink.offline {
                    uplink.disconnect();
                } else if !offline_now && uplink.offline {
                    uplink.reconnect(&mut self.rng);
                }
                if planned.missing {
                    continue;
                }
                let publish = publish_of(&planned.event, Purpose::Event);
                let duplicated = self
                    .rng
                    .random_bool(self.spec.duplicate_rate.clamp(0.0, 1.0));
                uplink.send(publish.clone());
                if duplicated {
                    uplink.send(Publish {
                        purpose: Purpose::Duplicate,
                        ..publish.clone()
                    });
                }
                if collisions.contains(&(d, i))
                    && let DeviceEvent::OrderCreated(order) = &planned.event
                {
                    let mut variant = order.clone();
                    variant.tenders[0].reference = Some(format!("retry-{}", variant.seq));
                    uplink.send(Publish {
                        topic: publish.topic.clone(),
                        payload: json_bytes(&variant.into()),
                        purpose: Purpose::Collision,
                    });
                }
                uplink.sent.push(publish);
            }
            // Heartbeats due after the device's last event.
            send_heartbeats_before(&mut uplink, n);
            if uplink.offline {
                uplink.reconnect(&mut self.rng);
            }
            plans.push(DevicePlan {
                device_id: dev.id.clone(),
                store_id: dev.store.clone(),
                steps: uplink.steps,
                late: dev.late,
            });
        }
        plans
    }

    /// Counts every publish of `devices` in the truth, by purpose.
    pub(super) fn count_publishes(&mut self, devices: &[DevicePlan]) {
        for step in devices.iter().flat_map(|d| &d.steps) {
            if let Step::Publish(p) = step {
                self.truth.count_published(purpose_label(&p.purpose));
            }
        }
    }
}
