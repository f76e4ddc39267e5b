//! Which delivery failures mean "this topic cannot take records now or ever" (it vanished, or the
//! bridge may not write it), and when the drainer stops retrying a topic's records and sets them
//! aside in the outbox's quarantine table instead, so the rest of the outbox drains. Pure: errors
//! and times in, decisions out.
//!
//! Delivery guarantee: nothing is dropped. A quarantined record stays on disk with its reason until
//! an operator re-drives it (`tillctl outbox redrive`), which puts it back at the end of the outbox.
//! A topic's quarantine is re-checked after `recheck`: one record is tried again, so a topic that
//! comes back drains by itself from then on.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode as C};

/// The reason written beside a quarantined record, when the error names the topic as the problem.
pub fn topic_problem(e: &KafkaError) -> Option<&'static str> {
    match e.rdkafka_error_code()? {
        C::UnknownTopicOrPartition | C::UnknownTopic | C::UnknownPartition => Some("topic_unknown"),
        C::TopicAuthorizationFailed | C::ClusterAuthorizationFailed => Some("not_authorized"),
        C::InvalidTopic => Some("topic_invalid"),
        _ => None,
    }
}

#[derive(Debug)]
struct TopicFailures {
    /// Failed deliveries in a row naming the topic as the problem.
    in_a_row: u32,
    reason: &'static str,
    /// Set once `in_a_row` reached the bound: records are set aside until then.
    quarantined_until: Option<Instant>,
}

/// Per-topic failure counts and quarantine decisions.
#[derive(Debug)]
pub struct Quarantine {
    /// Failed deliveries in a row (with a topic-level error) before a topic is quarantined.
    after_failures: u32,
    /// How long a topic stays quarantined before one record is tried again.
    recheck: Duration,
    topics: HashMap<String, TopicFailures>,
}

impl Quarantine {
    pub fn new(after_failures: u32, recheck: Duration) -> Self {
        Quarantine {
            after_failures: after_failures.max(1),
            recheck,
            topics: HashMap::new(),
        }
    }

    /// A delivery to `topic` failed with `e`. Returns the reason when the failed record must be
    /// set aside now (the topic is, or has just become, quarantined).
    pub fn failed(&mut self, topic: &str, e: &KafkaError, now: Instant) -> Option<&'static str> {
        let reason = topic_problem(e)?;
        let t = self
            .topics
            .entry(topic.to_string())
            .or_insert(TopicFailures {
                in_a_row: 0,
                reason,
                quarantined_until: None,
            });
        t.in_a_row += 1;
        t.reason = reason;
        if t.in_a_row >= self.after_failures {
            t.quarantined_until = Some(now + self.recheck);
            return Some(reason);
        }
        None
    }

    /// A delivery to `topic` succeeded: it is healthy again.
    pub fn delivered(&mut self, topic: &str) {
        if !self.topics.is_empty() {
            self.topics.remove(topic);
        }
    }

    /// Whether a record of `topic` must be set aside without being tried (the reason), or tried.
    pub fn set_aside(&mut self, topic: &str, now: Instant) -> Option<&'static str> {
        let t = self.topics.get_mut(topic)?;
        match t.quarantined_until {
            Some(until) if now < until => Some(t.reason),
            Some(_) => {
                // Recheck: let one record through; its failure quarantines the topic again at
                // once (the count is still at the bound), its success clears it.
                t.quarantined_until = None;
                None
            }
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unknown() -> KafkaError {
        KafkaError::MessageProduction(C::UnknownTopicOrPartition)
    }

    #[test]
    fn only_topic_level_errors_count_and_a_topic_is_set_aside_after_the_bound() {
        let t0 = Instant::now();
        let mut q = Quarantine::new(3, Duration::from_secs(60));
        // A broker that is down is not the topic's fault: never quarantined.
        for _ in 0..10 {
            assert_eq!(
                q.failed("t", &KafkaError::MessageProduction(C::MessageTimedOut), t0),
                None
            );
        }
        assert_eq!(q.failed("t", &unknown(), t0), None);
        assert_eq!(q.failed("t", &unknown(), t0), None);
        assert_eq!(q.failed("t", &unknown(), t0), Some("topic_unknown"));
        // From now on its records are set aside without a try; other topics are untouched.
        assert_eq!(
            q.set_aside("t", t0 + Duration::from_secs(1)),
            Some("topic_unknown")
        );
        assert_eq!(q.set_aside("other", t0), None);
        // After the recheck period one record is tried; failing, the topic is quarantined again.
        assert_eq!(q.set_aside("t", t0 + Duration::from_secs(61)), None);
        let t1 = t0 + Duration::from_secs(61);
        assert_eq!(q.failed("t", &unknown(), t1), Some("topic_unknown"));
        assert_eq!(q.set_aside("t", t1), Some("topic_unknown"));
        // A topic that came back: one success clears it.
        q.delivered("t");
        assert_eq!(q.set_aside("t", t1), None);
        assert_eq!(q.failed("t", &unknown(), t1), None);
    }

    #[test]
    fn authorization_and_invalid_topics_are_topic_problems() {
        assert_eq!(
            topic_problem(&KafkaError::MessageProduction(C::TopicAuthorizationFailed)),
            Some("not_authorized")
        );
        assert_eq!(
            topic_problem(&KafkaError::MessageProduction(C::InvalidTopic)),
            Some("topic_invalid")
        );
        assert_eq!(
            topic_problem(&KafkaError::MessageProduction(C::BrokerTransportFailure)),
            None
        );
    }
}
