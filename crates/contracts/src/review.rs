//! The conflict detector's review API, as both sides see it: what a list of the review queue
//! selects. The detector deserializes it from the query string; `tillctl conflicts list` builds
//! that query string from it.

use serde::{Deserialize, Serialize};

/// What `GET /conflicts` selects (its query parameters; each absent one selects everything).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConflictFilter {
    /// Only this store's conflicts.
    pub store: Option<String>,
    /// Only this rule's conflicts (e.g. `oversell`).
    pub rule: Option<String>,
    /// info | auto-resolved | needs-review
    pub severity: Option<String>,
    /// open (default) | closed | resolved | superseded | all
    pub status: Option<String>,
    /// Only conflicts queued at least this long ago (ms).
    pub min_age_ms: Option<i64>,
    /// At most this many rows.
    pub limit: Option<i64>,
}

impl ConflictFilter {
    /// The query parameters that are set, as (name, value) pairs (values not yet URL-encoded).
    pub fn query_pairs(&self) -> Vec<(&'static str, String)> {
        let text = [
            ("store", &self.store),
            ("rule", &self.rule),
            ("severity", &self.severity),
            ("status", &self.status),
        ];
        let numbers = [("min_age_ms", self.min_age_ms), ("limit", self.limit)];
        text.into_iter()
            .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
            .chain(
                numbers
                    .into_iter()
                    .filter_map(|(k, v)| v.map(|v| (k, v.to_string()))),
            )
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_set_parameters_are_in_the_query() {
        let f = ConflictFilter {
            store: Some("s001".into()),
            limit: Some(50),
            ..Default::default()
        };
        assert_eq!(
            f.query_pairs(),
            vec![("store", "s001".to_string()), ("limit", "50".to_string())]
        );
        assert!(ConflictFilter::default().query_pairs().is_empty());
    }
}
