//! Every metric this service emits, by name, plus the helpers that record them. Owns no data;
//! guarantee: metric names and labels are defined here only, so dashboards have one place to look.

use std::time::Duration;

/// Counter of API requests, labelled `route` (the matched route template, or `unmatched`) and
/// `status` (HTTP status code).
pub const REQUESTS_TOTAL: &str = "tillstream_schema_registry_requests_total";
/// Histogram of API request durations in seconds, labelled `route`.
pub const REQUEST_DURATION_SECONDS: &str = "tillstream_schema_registry_request_duration_seconds";
/// Gauge: schema records (distinct ids) held.
pub const SCHEMAS: &str = "tillstream_schema_registry_schemas";
/// Gauge: subjects with at least one live (not soft-deleted) version.
pub const SUBJECTS: &str = "tillstream_schema_registry_subjects";

pub fn record_request(route: String, status: u16, elapsed: Duration) {
    metrics::counter!(REQUESTS_TOTAL, "route" => route.clone(), "status" => status.to_string())
        .increment(1);
    metrics::histogram!(REQUEST_DURATION_SECONDS, "route" => route).record(elapsed.as_secs_f64());
}

pub fn set_sizes(schemas: usize, subjects: usize) {
    metrics::gauge!(SCHEMAS).set(schemas as f64);
    metrics::gauge!(SUBJECTS).set(subjects as f64);
}
