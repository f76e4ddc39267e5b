//! Re-driving the bridge's dead letters: an MQTT message the bridge refused goes through the same
//! validation and conversion again, against the fleet file and limits as they are now (after the
//! cause was fixed: a device added to the fleet, a bound raised). `tillctl dead-letters redrive`
//! reads the dead-letter topic and writes what this returns.
//!
//! Delivery guarantee: none of its own; it builds records. A message re-driven twice becomes the
//! same event twice (same `event_id`): the dedup passes it on once. A message still refused becomes
//! a new dead letter with its reason now.

use std::sync::Arc;

use tillstream_contracts::Registry;
use tillstream_runtime::kafka::{self, DeadLetters};

use crate::config::Config;
use crate::fleet::{Fleet, SharedFleet};
use crate::outbox::Record;
use crate::routes::Routes;
use crate::uplink::{Converted, Converter, SERVICE};
use crate::validate::Classifier;
use crate::{BridgeError, kinds, metrics};

/// What re-validating one message gave.
#[derive(Debug)]
pub enum Revalidated {
    /// The record the bridge writes for it now: its event's, or (if it is still refused) a new
    /// dead letter's; [`Revalidator::is_dead_letter`] tells which.
    Record(Record),
    /// It matches an ignore filter now: nothing to write.
    Ignored,
}

/// The bridge's validation and conversion, outside the bridge.
#[derive(Debug, Clone)]
pub struct Revalidator {
    converter: Converter,
}

impl Revalidator {
    /// Built from the bridge's configuration (routes, fleet file, limits, dead-letter topic) with a
    /// registry whose schema ids it resolves first.
    pub async fn new(config: &Config, registry: Registry) -> Result<Revalidator, BridgeError> {
        // Builds the refused messages' dead-letter records; its producer sends nothing here.
        let dead_letters = DeadLetters::new(
            kafka::producer(&config.kafka, "tillstream-redrive-builder")?,
            &config.dead_letter.topic,
            registry.clone(),
            SERVICE,
            metrics::DEAD_LETTERS_TOTAL,
        );
        let routes = Routes::new(&config.effective_routes())?;
        registry.warm_up(&kinds(&routes)).await?;
        let fleet = SharedFleet::new(Fleet::load(&config.fleet_file)?);
        Ok(Revalidator {
            converter: Converter {
                classifier: Arc::new(Classifier {
                    routes,
                    fleet,
                    ignore: config.mqtt.ignore.clone(),
                    limits: config.limits.clone(),
                }),
                registry,
                dead_letters,
                dead_letter: config.dead_letter.clone(),
                record_headers: config.kafka.record_headers,
            },
        })
    }

    /// Validates and converts one MQTT message as the bridge would now.
    pub fn revalidate(
        &self,
        mqtt_topic: &str,
        payload: &[u8],
        now_ms: i64,
    ) -> Result<Revalidated, BridgeError> {
        match self
            .converter
            .convert(mqtt_topic, payload, 1, false, now_ms)?
        {
            Converted::Store(record) => Ok(Revalidated::Record(record)),
            Converted::Skip => Ok(Revalidated::Ignored),
        }
    }

    /// Whether a record is a dead letter (the message is still refused).
    pub fn is_dead_letter(&self, record: &Record) -> bool {
        record.topic == self.converter.dead_letter.topic
    }
}
