//! The one place dates are written and read, all through the `time` crate:
//! RFC 3339 in UTC for the API and the runtimes' container times (with as
//! many fractional digits as the time has, none for a whole second), the
//! engines' RFC 3339 timestamps read back into milliseconds, and the CLI's
//! short `YYYY-MM-DD HH:MM:SS` form; and durations as Consul and the CLI
//! write them (`30s`, `5m`, `0.001s`). It never reads the clock.

use std::time::SystemTime;

use time::format_description::well_known::Rfc3339;
use time::format_description::BorrowedFormatItem;
use time::OffsetDateTime;

/// `at` as RFC 3339 in UTC.
pub fn rfc3339(at: SystemTime) -> String {
    format(OffsetDateTime::from(at))
}

/// `ms` milliseconds since the Unix epoch as RFC 3339 in UTC.
pub fn rfc3339_ms(ms: u64) -> String {
    format(from_unix_ms(ms))
}

/// `secs` seconds since the Unix epoch as RFC 3339 in UTC.
pub fn rfc3339_secs(secs: i64) -> String {
    format(OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH))
}

/// Milliseconds since the Unix epoch of an RFC 3339 time (any offset,
/// any number of fractional digits), or `None` for an unparsable time or
/// one before the epoch (engines report `0001-01-01T00:00:00Z` for
/// "never").
pub fn parse_rfc3339_ms(text: &str) -> Option<u64> {
    let at = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    u64::try_from(at.unix_timestamp_nanos() / 1_000_000).ok()
}

/// `ms` since the Unix epoch as `YYYY-MM-DD HH:MM:SS` (UTC), for tables.
pub fn short_utc_ms(ms: u64) -> String {
    const SHORT: &[BorrowedFormatItem<'_>] =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    from_unix_ms(ms)
        .format(SHORT)
        .unwrap_or_else(|_| ms.to_string())
}

fn from_unix_ms(ms: u64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn format(at: OffsetDateTime) -> String {
    // Rfc3339 refuses only years outside 0..=9999, far from any clock here.
    at.format(&Rfc3339)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
}

/// Parses a Consul duration (`30s`, `5m`, `250ms`, `1h`, fractions such as
/// `9.87s` or `0.001s` as Patroni sends them; bare numbers are seconds).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("{text:?} is not a duration like 30s, 5m, 250ms or 0.5s");
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let amount: f64 = number.parse().map_err(|_| bad())?;
    let seconds_per_unit = match unit {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "us" | "µs" => 0.000_001,
        "ns" => 0.000_000_001,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(bad()),
    };
    let seconds = amount * seconds_per_unit;
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(bad());
    }
    Ok(std::time::Duration::from_secs_f64(
        seconds.min(u32::MAX as f64),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn formats_in_utc_with_the_digits_the_time_has() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::new(1_709_210_096, 5);
        assert_eq!(rfc3339(t), "2024-02-29T12:34:56.000000005Z");
        assert_eq!(rfc3339_ms(1_795_405_212_123), "2026-11-23T03:40:12.123Z");
        assert_eq!(rfc3339_secs(1_795_405_212), "2026-11-23T03:40:12Z");
        assert_eq!(short_utc_ms(1_795_405_212_123), "2026-11-23 03:40:12");
        assert_eq!(short_utc_ms(951_782_400_000), "2000-02-29 00:00:00");
    }

    #[test]
    fn parses_engine_times() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:01Z"), Some(1_000));
        assert_eq!(
            parse_rfc3339_ms("2026-11-23T03:40:12.123456789Z"),
            Some(1_795_405_212_123)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-11-23T04:40:12.5+01:00"),
            Some(1_795_405_212_500)
        );
        assert_eq!(parse_rfc3339_ms("0001-01-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339_ms(""), None);
        assert_eq!(parse_rfc3339_ms("garbage"), None);
    }

    #[test]
    fn what_is_written_reads_back() {
        for ms in [0, 951_782_400_007, 1_795_405_212_120] {
            assert_eq!(parse_rfc3339_ms(&rfc3339_ms(ms)), Some(ms));
        }
        let t = UNIX_EPOCH + Duration::new(1_709_210_096, 123_456_789);
        assert_eq!(parse_rfc3339_ms(&rfc3339(t)), Some(1_709_210_096_123));
    }
}
