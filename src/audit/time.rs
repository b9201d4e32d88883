//! Every RFC 3339 `date-time` (section 5.6, what OpenAPI's `format: date-time` names) turned
//! into the audit log's stored form, so a time filter compares as text: any year 0000-9999,
//! `T`/`t`, fractional seconds of any length, `Z`/`z` or a numeric offset, a leap second.
//!
//! Stored times are UTC with exactly six fractional digits (`store::now`), so a bound given
//! more precisely is rounded up to the microsecond: for a stored time `a` and any bound `b`,
//! `a >= b` and `a < b` hold exactly when they hold against `b` rounded up.

/// Microseconds in a day.
const DAY: i128 = 86_400 * 1_000_000;

/// A time filter's bound in the stored form's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound {
    /// Before 0000-01-01T00:00:00Z (an offset can move year 0000 there): before every row.
    BeforeAll,
    /// The stored form of the bound.
    At(String),
    /// After 9999-12-31T23:59:59.999999Z (year 9999 with a negative offset): after every row.
    AfterAll,
}

/// Parses an RFC 3339 date-time into a [`Bound`]; `None` when it is not one.
pub fn parse(text: &str) -> Option<Bound> {
    let micros = micros(text)?;
    let last = days_from_civil(9999, 12, 31) * DAY + DAY - 1;
    Some(if micros < 0 {
        Bound::BeforeAll
    } else if micros > last {
        Bound::AfterAll
    } else {
        Bound::At(format(micros))
    })
}

/// Microseconds since 0000-01-01T00:00:00Z (proleptic Gregorian), rounded up.
fn micros(text: &str) -> Option<i128> {
    let b = text.as_bytes();
    // date-fullyear "-" date-month "-" date-mday "T" hh ":" mm ":" ss, then the rest.
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (digits(&b[0..4])?, digits(&b[5..7])?, digits(&b[8..10])?);
    let (hour, minute, second) = (
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    );
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        // 60: a leap second (RFC 3339 5.7); it sorts as the next minute's first instant.
        || second > 60
    {
        return None;
    }
    let mut rest = &b[19..];
    let mut fraction = 0;
    if let Some(after_dot) = rest.strip_prefix(b".") {
        let n = after_dot.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        let (kept, dropped) = after_dot[..n].split_at(n.min(6));
        fraction = digits(kept)? * 10_i128.pow(u32::try_from(6 - kept.len()).ok()?);
        if dropped.iter().any(|&c| c != b'0') {
            fraction += 1;
        }
        rest = &after_dot[n..];
    }
    let offset = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (h, m) = (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?);
            if h > 23 || m > 59 {
                return None;
            }
            let seconds = h * 3600 + m * 60;
            if *sign == b'-' { -seconds } else { seconds }
        }
        _ => return None,
    };
    let seconds = hour * 3600 + minute * 60 + second - offset;
    Some(days_from_civil(year, month, day) * DAY + seconds * 1_000_000 + fraction)
}

/// ASCII digits as a number; `None` if any byte is not a digit.
fn digits(b: &[u8]) -> Option<i128> {
    b.iter().try_fold(0_i128, |n, &c| {
        c.is_ascii_digit().then(|| n * 10 + i128::from(c - b'0'))
    })
}

fn is_leap(year: i128) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i128, month: i128) -> i128 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 0000-01-01 to `year-month-day` (H. Hinnant's `days_from_civil`, shifted).
fn days_from_civil(year: i128, month: i128, day: i128) -> i128 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    // 0000-03-01 is day 60 of the epoch (0000 is a leap year).
    era * 146_097 + doe + 60
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i128) -> (i128, i128, i128) {
    let z = days - 60;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i128::from(month <= 2);
    (year, month, day)
}

/// The stored form (`store::now`'s): `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
fn format(micros: i128) -> String {
    let (year, month, day) = civil_from_days(micros.div_euclid(DAY));
    let in_day = micros.rem_euclid(DAY);
    let (seconds, fraction) = (in_day / 1_000_000, in_day % 1_000_000);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{fraction:06}Z",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> String {
        match parse(text) {
            Some(Bound::At(s)) => s,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn the_schemathesis_case_and_the_stored_form_itself() {
        assert_eq!(at("0568-03-10T08:44:13.0Z"), "0568-03-10T08:44:13.000000Z");
        assert_eq!(
            at("2026-11-30T01:02:03.000004Z"),
            "2026-11-30T01:02:03.000004Z"
        );
    }

    #[test]
    fn agrees_with_the_clock_format_for_times_after_1970() {
        for secs in [
            0_u64,
            951_782_400,
            1_780_000_123,
            4_102_444_799,
            253_402_300_799,
        ] {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_micros(secs * 1_000_000 + 7);
            let stored = humantime::format_rfc3339_micros(t).to_string();
            assert_eq!(at(&stored), stored);
        }
    }

    #[test]
    fn offsets_lowercase_and_any_fraction_length() {
        assert_eq!(
            at("2026-11-30T01:30:00+02:00"),
            "2026-11-29T23:30:00.000000Z"
        );
        assert_eq!(
            at("2026-12-31T23:30:00-01:45"),
            "2027-01-01T01:15:00.000000Z"
        );
        assert_eq!(at("2026-11-30t00:00:00z"), "2026-11-30T00:00:00.000000Z");
        assert_eq!(at("2026-11-30T00:00:00.5Z"), "2026-11-30T00:00:00.500000Z");
        assert_eq!(
            at("2026-11-30T00:00:00.123456000000000000000Z"),
            "2026-11-30T00:00:00.123456Z"
        );
    }

    #[test]
    fn finer_than_a_microsecond_rounds_up() {
        assert_eq!(
            at("2026-11-30T00:00:00.0000001Z"),
            "2026-11-30T00:00:00.000001Z"
        );
        assert_eq!(
            at("2026-11-30T23:59:59.9999999Z"),
            "2026-12-01T00:00:00.000000Z"
        );
    }

    #[test]
    fn leap_days_leap_seconds_and_the_ends_of_the_range() {
        assert_eq!(at("2024-02-29T00:00:00Z"), "2024-02-29T00:00:00.000000Z");
        assert_eq!(at("2000-02-29T00:00:00Z"), "2000-02-29T00:00:00.000000Z");
        assert_eq!(at("0000-02-29T00:00:00Z"), "0000-02-29T00:00:00.000000Z");
        assert_eq!(at("2016-12-31T23:59:60Z"), "2017-01-01T00:00:00.000000Z");
        assert_eq!(at("0000-01-01T00:00:00Z"), "0000-01-01T00:00:00.000000Z");
        assert_eq!(
            at("9999-12-31T23:59:59.999999Z"),
            "9999-12-31T23:59:59.999999Z"
        );
        assert_eq!(parse("0000-01-01T00:30:00+01:00"), Some(Bound::BeforeAll));
        assert_eq!(parse("9999-12-31T23:30:00-01:00"), Some(Bound::AfterAll));
        assert_eq!(parse("9999-12-31T23:59:59.9999991Z"), Some(Bound::AfterAll));
    }

    #[test]
    fn every_day_of_four_centuries_round_trips() {
        let start = days_from_civil(1600, 1, 1);
        let mut expected = (1600, 1, 1);
        for days in start..start + 146_097 {
            assert_eq!(civil_from_days(days), expected);
            assert_eq!(days_from_civil(expected.0, expected.1, expected.2), days);
            let (y, m, d) = expected;
            expected = if d < days_in_month(y, m) {
                (y, m, d + 1)
            } else if m < 12 {
                (y, m + 1, 1)
            } else {
                (y + 1, 1, 1)
            };
        }
    }

    #[test]
    fn what_rfc_3339_does_not_allow_is_refused() {
        for bad in [
            "",
            "2026-11-30",
            "2026-11-30T00:00:00",
            "2026-11-30 00:00:00Z",
            "2026-11-30T00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-00-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-11-30T24:00:00Z",
            "2026-11-30T00:60:00Z",
            "2026-11-30T00:00:61Z",
            "2026-11-30T00:00:00.Z",
            "2026-11-30T00:00:00+0200",
            "2026-11-30T00:00:00+24:00",
            "2026-11-30T00:00:00+02:60",
            "2026-11-30T00:00:00Z ",
            "+2026-11-30T00:00:00Z",
            "20261-11-30T00:00:00Z",
            "2026-1a-30T00:00:00Z",
            "2026-11-30T00:00:00.1e3Z",
            "２026-11-30T00:00:00Z",
        ] {
            assert_eq!(parse(bad), None, "{bad:?} accepted");
        }
    }
}
