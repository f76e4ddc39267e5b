//! Wall-clock time as the services record it: milliseconds since the Unix epoch. Decisions in the
//! pure cores never read it (they use event or record time); only stamps and metrics do.

/// Milliseconds since the Unix epoch by the local clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
