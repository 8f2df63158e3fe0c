//! Reading the engine's RFC 3339 timestamps (e.g.
//! `2026-11-23T03:40:12.123456789Z`) into milliseconds since the epoch,
//! to know how long a container ran before it died, and writing such
//! times for the API.

/// Milliseconds since the Unix epoch, or `None` for an unparsable or zero
/// time (the engine reports `0001-01-01T00:00:00Z` for "never").
pub fn parse_rfc3339_ms(text: &str) -> Option<u64> {
    let (date, rest) = text.split_once('T')?;
    let mut date_parts = date.split('-');
    let year: i64 = date_parts.next()?.parse().ok()?;
    let month: i64 = date_parts.next()?.parse().ok()?;
    let day: i64 = date_parts.next()?.parse().ok()?;
    if year < 1970 {
        return None;
    }
    let (clock, zone_ms) = split_zone(rest)?;
    let (hms, fraction) = match clock.split_once('.') {
        Some((hms, fraction)) => (hms, fraction),
        None => (clock, ""),
    };
    let mut hms_parts = hms.split(':');
    let hour: i64 = hms_parts.next()?.parse().ok()?;
    let minute: i64 = hms_parts.next()?.parse().ok()?;
    let second: i64 = hms_parts.next()?.parse().ok()?;
    let millis: i64 = format!("{:0<3}", &fraction[..fraction.len().min(3)])
        .parse()
        .ok()?;
    let days = days_from_civil(year, month, day);
    let ms = ((days * 86_400 + hour * 3_600 + minute * 60 + second) * 1_000 + millis) - zone_ms;
    u64::try_from(ms).ok()
}

fn split_zone(rest: &str) -> Option<(&str, i64)> {
    if let Some(clock) = rest.strip_suffix('Z') {
        return Some((clock, 0));
    }
    let at = rest.rfind(['+', '-'])?;
    let (clock, zone) = rest.split_at(at);
    let sign = if zone.starts_with('-') { -1 } else { 1 };
    let (h, m) = zone[1..].split_once(':')?;
    let offset = (h.parse::<i64>().ok()? * 60 + m.parse::<i64>().ok()?) * 60_000;
    Some((clock, sign * offset))
}

/// `ms` since the epoch as RFC 3339 in UTC with milliseconds
/// (`2026-11-23T03:40:12.123Z`).
pub fn format_rfc3339_ms(ms: u64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.millisecond()
    )
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn formats_and_parses_back() {
        assert_eq!(format_rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_rfc3339_ms(1_795_405_212_123),
            "2026-11-23T03:40:12.123Z"
        );
        let ms = 951_782_400_007;
        assert_eq!(parse_rfc3339_ms(&format_rfc3339_ms(ms)), Some(ms));
    }
}
