//! Wording shared by the rules' explanations: UTC timestamps and event references. Pure; no I/O.

/// `2026-11-02T10:00:00.000Z` for epoch milliseconds (proleptic Gregorian, UTC).
pub fn utc(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}

/// `event 1b2c... (device s001-d02, 2026-11-02T10:00:00.000Z)`.
pub fn event(id: &str, device: &str, at: i64) -> String {
    format!("event {id} (device {device}, {})", utc(at))
}

/// Whole minutes (or seconds below one minute) for a duration in milliseconds.
pub fn duration(ms: i64) -> String {
    let ms = ms.abs();
    if ms < 60_000 {
        format!("{} s", ms / 1000)
    } else {
        format!("{} min", ms / 60_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(1_793_872_800_000), "2026-11-05T10:00:00.000Z");
        assert_eq!(utc(951_782_400_000 + 1), "2000-02-29T00:00:00.001Z");
        assert_eq!(utc(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(duration(7_200_000), "120 min");
        assert_eq!(duration(-5_000), "5 s");
    }
}
