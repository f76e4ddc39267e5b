//! The topic→Kafka mapping built from configuration: MQTT topic patterns with `{store}` and
//! `{device}` placeholders, each bound to an event kind and a Kafka topic; plus MQTT wildcard
//! filter matching (`+`, `#`) for the ignore list. Pure; no I/O, no delivery guarantee.

use std::sync::Arc;

use tillstream_contracts::EventKind;

use crate::config::RouteConfig;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    #[error("route {topic:?}: unknown event kind {kind:?}")]
    UnknownKind { topic: String, kind: String },
    #[error("route {topic:?}: {kind} is not an event a store device sends")]
    NotDeviceEvent { topic: String, kind: String },
    #[error("route {0:?}: needs a {{store}} or {{device}} placeholder")]
    NoIdentity(String),
    #[error("route {0:?}: bad pattern (placeholders must be whole levels, no wildcards)")]
    BadPattern(String),
    #[error("route {0:?}: empty Kafka topic")]
    NoKafkaTopic(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Lit(String),
    Store,
    Device,
}

/// One configured route.
#[derive(Debug, Clone)]
pub struct Route {
    pub pattern: String,
    pub kind: EventKind,
    pub kafka_topic: Arc<str>,
    segs: Vec<Seg>,
}

/// What a topic matched: the route and the identities the topic carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched<'r, 't> {
    pub kind: EventKind,
    pub kafka_topic: &'r Arc<str>,
    pub store: Option<&'t str>,
    pub device: Option<&'t str>,
}

impl Matched<'_, '_> {
    /// A store event on a v1 topic: a store level and no device level (see
    /// [`TopicLevels`](crate::config::TopicLevels)).
    pub fn is_store_level(&self) -> bool {
        self.store.is_some() && self.device.is_none()
    }
}

/// The route table. First match wins.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    routes: Vec<Route>,
}

impl Routes {
    pub fn new(config: &[RouteConfig]) -> Result<Routes, RouteError> {
        let mut routes = Vec::with_capacity(config.len());
        for rc in config {
            let kind =
                EventKind::from_full_name(&rc.kind).ok_or_else(|| RouteError::UnknownKind {
                    topic: rc.topic.clone(),
                    kind: rc.kind.clone(),
                })?;
            if !kind.is_store_event() || kind == EventKind::PriceListApproved {
                return Err(RouteError::NotDeviceEvent {
                    topic: rc.topic.clone(),
                    kind: rc.kind.clone(),
                });
            }
            if rc.kafka_topic.trim().is_empty() {
                return Err(RouteError::NoKafkaTopic(rc.topic.clone()));
            }
            let mut segs = Vec::new();
            for level in rc.topic.split('/') {
                let seg = match level {
                    "{store}" => Seg::Store,
                    "{device}" => Seg::Device,
                    l if l.is_empty() || l.contains(['{', '}', '+', '#']) => {
                        return Err(RouteError::BadPattern(rc.topic.clone()));
                    }
                    l => Seg::Lit(l.to_string()),
                };
                segs.push(seg);
            }
            if !segs.iter().any(|s| matches!(s, Seg::Store | Seg::Device)) {
                return Err(RouteError::NoIdentity(rc.topic.clone()));
            }
            routes.push(Route {
                pattern: rc.topic.clone(),
                kind,
                kafka_topic: rc.kafka_topic.as_str().into(),
                segs,
            });
        }
        Ok(Routes { routes })
    }

    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }

    /// The first route whose pattern matches `topic`. Identity levels must be non-empty.
    pub fn matches<'r, 't>(&'r self, topic: &'t str) -> Option<Matched<'r, 't>> {
        'routes: for r in &self.routes {
            let mut store = None;
            let mut device = None;
            let mut levels = topic.split('/');
            for seg in &r.segs {
                let Some(level) = levels.next() else {
                    continue 'routes;
                };
                match seg {
                    Seg::Lit(l) if l == level => {}
                    Seg::Lit(_) => continue 'routes,
                    Seg::Store if !level.is_empty() => store = Some(level),
                    Seg::Device if !level.is_empty() => device = Some(level),
                    _ => continue 'routes,
                }
            }
            if levels.next().is_some() {
                continue;
            }
            return Some(Matched {
                kind: r.kind,
                kafka_topic: &r.kafka_topic,
                store,
                device,
            });
        }
        None
    }
}

/// MQTT topic filter matching (`+` = one level, `#` = this level and everything below).
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    let mut t = topic.split('/');
    for f in filter.split('/') {
        match f {
            "#" => return true,
            "+" => {
                if t.next().is_none() {
                    return false;
                }
            }
            lit => {
                if t.next() != Some(lit) {
                    return false;
                }
            }
        }
    }
    t.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::default_routes;

    #[test]
    fn default_routes_match_their_topics() {
        let r = Routes::new(&default_routes()).unwrap();
        let m = r.matches("store/s001/s001-d01/pos/order.created").unwrap();
        assert_eq!(m.kind, EventKind::OrderCreated);
        assert_eq!((m.store, m.device), (Some("s001"), Some("s001-d01")));
        assert!(!m.is_store_level());
        assert_eq!(&**m.kafka_topic, "tillstream.store-events.raw");
        let m = r.matches("fleet/s001-d01/health.status").unwrap();
        assert_eq!(m.kind, EventKind::DeviceHealth);
        assert_eq!((m.store, m.device), (None, Some("s001-d01")));
        let m = r
            .matches("store/s9/s9-d2/inventory/reservation.released")
            .unwrap();
        assert_eq!(m.kind, EventKind::StockReservationReleased);
        assert!(r.matches("store/s001/d/pos/order.created/x").is_none());
        assert!(r.matches("store/s001/d/pos").is_none());
        assert!(r.matches("store/s001//pos/order.created").is_none());
        assert!(r.matches("store/s001/d/pos/order.deleted").is_none());
        // v1 store-level topics are not part of the v2 contract.
        assert!(r.matches("store/s001/pos/order.created").is_none());
    }

    #[test]
    fn store_level_routes_are_taken_only_during_a_migration() {
        let mut both = default_routes();
        both.extend(crate::config::store_level_routes());
        let r = Routes::new(&both).unwrap();
        let m = r.matches("store/s001/pos/order.created").unwrap();
        assert_eq!((m.store, m.device), (Some("s001"), None));
        assert!(m.is_store_level());
        let m = r.matches("store/s001/s001-d01/day/closed").unwrap();
        assert_eq!(m.kind, EventKind::StoreDayClosed);
        assert!(!m.is_store_level());
        let m = r.matches("store/s001/day/closed").unwrap();
        assert_eq!(m.kind, EventKind::StoreDayClosed);
        assert!(m.is_store_level());
    }

    #[test]
    fn bad_routes_are_refused() {
        let bad = |t: &str, k: &str| {
            Routes::new(&[RouteConfig {
                topic: t.into(),
                kind: k.into(),
                kafka_topic: "x".into(),
            }])
            .unwrap_err()
        };
        assert!(matches!(
            bad("a/{store}", "Nope"),
            RouteError::UnknownKind { .. }
        ));
        assert!(matches!(
            bad("a/{store}", "SequenceGap"),
            RouteError::NotDeviceEvent { .. }
        ));
        assert!(matches!(
            bad("a/b", "OrderCreated"),
            RouteError::NoIdentity(_)
        ));
        assert!(matches!(
            bad("a/+/{store}", "OrderCreated"),
            RouteError::BadPattern(_)
        ));
        assert!(matches!(
            bad("a/x{store}", "OrderCreated"),
            RouteError::BadPattern(_)
        ));
    }

    #[test]
    fn filters() {
        assert!(filter_matches(
            "store/+/catalog/#",
            "store/s1/catalog/prices"
        ));
        assert!(filter_matches("store/+/catalog/#", "store/s1/catalog"));
        assert!(!filter_matches("store/+/catalog/#", "store/s1/pos/x"));
        assert!(filter_matches("a/+", "a/b"));
        assert!(!filter_matches("a/+", "a/b/c"));
        assert!(!filter_matches("a/b", "a"));
        assert!(filter_matches("#", "anything/at/all"));
    }
}
