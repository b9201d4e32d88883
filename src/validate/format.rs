//! String formats, checked by hand: RFC 3339 dates and date-times, pragmatic email, absolute
//! URI, UUID, and IP addresses through the standard library's parsers.

use std::net::{Ipv4Addr, Ipv6Addr};

/// A `format` a string field may declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `email`: a pragmatic email address check.
    Email,
    /// `uri`: an absolute URI.
    Uri,
    /// `uuid`: a hyphenated UUID.
    Uuid,
    /// `date`: an RFC 3339 full date.
    Date,
    /// `date-time`: an RFC 3339 timestamp.
    DateTime,
    /// `ipv4`: a dotted-quad address.
    Ipv4,
    /// `ipv6`: an IPv6 address.
    Ipv6,
}

impl Format {
    /// Every format, in the order they are listed to users.
    pub const ALL: [Format; 7] = [
        Format::Email,
        Format::Uri,
        Format::Uuid,
        Format::Date,
        Format::DateTime,
        Format::Ipv4,
        Format::Ipv6,
    ];

    /// The name used in `nestflux.toml` and in JSON Schema.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Email => "email",
            Format::Uri => "uri",
            Format::Uuid => "uuid",
            Format::Date => "date",
            Format::DateTime => "date-time",
            Format::Ipv4 => "ipv4",
            Format::Ipv6 => "ipv6",
        }
    }

    /// The format called `name`.
    pub fn from_name(name: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.as_str() == name)
    }

    /// Whether `s` is a value of this format.
    pub fn matches(self, s: &str) -> bool {
        match self {
            Format::Email => is_email(s),
            Format::Uri => is_uri(s),
            Format::Uuid => is_uuid(s),
            Format::Date => is_date(s.as_bytes()),
            Format::DateTime => is_date_time(s),
            Format::Ipv4 => s.parse::<Ipv4Addr>().is_ok(),
            Format::Ipv6 => s.parse::<Ipv6Addr>().is_ok(),
        }
    }

    /// The most characters a value of this format can have; `None` when the format
    /// alone does not bound it (URIs, date-times with any number of fraction digits).
    pub fn max_chars(self) -> Option<u64> {
        match self {
            Format::Email => Some(254),
            Format::Uuid => Some(36),
            Format::Date => Some(10),
            Format::Ipv4 => Some(15),
            // The longest textual form: eight groups and an embedded IPv4 tail.
            Format::Ipv6 => Some(45),
            Format::Uri | Format::DateTime => None,
        }
    }

    /// What a value of this format looks like, for messages.
    pub fn example(self) -> &'static str {
        match self {
            Format::Email => "an email address such as ada@example.com",
            Format::Uri => "an absolute URI such as https://example.com/x",
            Format::Uuid => "a UUID such as 0190b2a4-7c1e-7d3f-9a2b-3c4d5e6f7a8b",
            Format::Date => "a date such as 2025-01-31",
            Format::DateTime => "an RFC 3339 date-time with offset, such as 2025-01-31T09:30:00Z",
            Format::Ipv4 => "an IPv4 address such as 192.0.2.1",
            Format::Ipv6 => "an IPv6 address such as 2001:db8::1",
        }
    }
}

/// `N` ASCII digits as a number.
fn digits(b: &[u8]) -> Option<u32> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')))
}

/// RFC 3339 `full-date`: `YYYY-MM-DD` with a day that exists in that month.
fn is_date(b: &[u8]) -> bool {
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let (Some(year), Some(month), Some(day)) =
        (digits(&b[0..4]), digits(&b[5..7]), digits(&b[8..10]))
    else {
        return false;
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&day)
}

/// RFC 3339 `date-time`: full-date `T` partial-time, then `Z` or `±HH:MM`. A time zone is
/// required; a leap second is accepted only at 23:59:60 UTC.
fn is_date_time(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 20 || !is_date(&b[..10]) || !matches!(b[10], b'T' | b't') {
        return false;
    }
    let t = &b[11..];
    if t.len() < 9 || t[2] != b':' || t[5] != b':' {
        return false;
    }
    let (Some(hour), Some(minute), Some(second)) =
        (digits(&t[0..2]), digits(&t[3..5]), digits(&t[6..8]))
    else {
        return false;
    };
    if hour > 23 || minute > 59 || second > 60 {
        return false;
    }
    let mut rest = &t[8..];
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return false;
        }
        rest = &frac[n..];
    }
    // Minutes east of UTC.
    let offset: i64 = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (Some(oh), Some(om)) = (digits(&[*h1, *h2]), digits(&[*m1, *m2])) else {
                return false;
            };
            if oh > 23 || om > 59 {
                return false;
            }
            let minutes = i64::from(oh * 60 + om);
            if *sign == b'-' { -minutes } else { minutes }
        }
        _ => return false,
    };
    if second == 60 {
        let utc = (i64::from(hour * 60 + minute) - offset).rem_euclid(24 * 60);
        return utc == 23 * 60 + 59;
    }
    true
}

/// Pragmatic email: one `@`, a non-empty local part without spaces, a dotted domain of
/// non-empty labels, at most 254 bytes in all.
fn is_email(s: &str) -> bool {
    if s.len() > 254 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    let mut parts = s.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    !local.is_empty() && domain.contains('.') && domain.split('.').all(|label| !label.is_empty())
}

/// Absolute URI: `scheme ":" rest` with a non-empty rest and no whitespace or controls.
fn is_uri(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && !rest.is_empty()
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// `8-4-4-4-12` hexadecimal digits, either case.
fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::Format;

    fn check(format: Format, good: &[&str], bad: &[&str]) {
        for s in good {
            assert!(format.matches(s), "{} should accept {s:?}", format.as_str());
        }
        for s in bad {
            assert!(
                !format.matches(s),
                "{} should refuse {s:?}",
                format.as_str()
            );
        }
    }

    #[test]
    fn date() {
        check(
            Format::Date,
            &["2025-01-31", "2024-02-29", "2000-02-29", "0001-12-31"],
            &[
                "2025-02-29",
                "1900-02-29",
                "2025-13-01",
                "2025-00-10",
                "2025-04-31",
                "2025-1-01",
                "2025-01-31T",
                "",
                "２０２５-01-01",
            ],
        );
    }

    #[test]
    fn date_time() {
        check(
            Format::DateTime,
            &[
                "2025-01-31T09:30:00Z",
                "2025-01-31t09:30:00z",
                "2025-01-31T09:30:00.123456Z",
                "2025-01-31T09:30:00+05:30",
                "2025-01-31T23:59:60Z",
                "2025-01-31T15:59:60-08:00",
            ],
            &[
                "2025-01-31T09:30:00",
                "2025-01-31 09:30:00Z",
                "2025-01-31T24:00:00Z",
                "2025-01-31T09:60:00Z",
                "2025-01-31T09:30:00.Z",
                "2025-01-31T09:30:00+0530",
                "2025-01-31T09:30:00+24:00",
                "2025-01-31T09:30:60Z",
                "2025-02-30T09:30:00Z",
                "2025-01-31T9:30:00Z",
                "",
            ],
        );
    }

    #[test]
    fn email() {
        check(
            Format::Email,
            &["ada@example.com", "a.b+c@sub.example.org", "0@a.b"],
            &[
                "ada",
                "ada@example",
                "@example.com",
                "a b@example.com",
                "a@b@c.com",
                "a@.com",
                "a@example.",
                "a@exa..mple",
            ],
        );
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(!Format::Email.matches(&long));
    }

    #[test]
    fn uri() {
        check(
            Format::Uri,
            &[
                "https://example.com/x?y=1",
                "urn:isbn:0451450523",
                "mailto:ada@example.com",
                "a+b-c.d:x",
            ],
            &[
                "example.com",
                "/relative/path",
                "https:",
                "1http://x",
                "http://exa mple.com",
                ":x",
                "",
            ],
        );
    }

    #[test]
    fn uuid() {
        check(
            Format::Uuid,
            &[
                "0190b2a4-7c1e-7d3f-9a2b-3c4d5e6f7a8b",
                "0190B2A4-7C1E-7D3F-9A2B-3C4D5E6F7A8B",
            ],
            &[
                "0190b2a47c1e7d3f9a2b3c4d5e6f7a8b",
                "0190b2a4-7c1e-7d3f-9a2b-3c4d5e6f7a8",
                "g190b2a4-7c1e-7d3f-9a2b-3c4d5e6f7a8b",
                "{0190b2a4-7c1e-7d3f-9a2b-3c4d5e6f7a8b}",
            ],
        );
    }

    #[test]
    fn ip() {
        check(
            Format::Ipv4,
            &["192.0.2.1", "0.0.0.0"],
            &["256.0.0.1", "1.2.3", "01.2.3.4", "::1", " 1.2.3.4"],
        );
        check(
            Format::Ipv6,
            &["::1", "2001:db8::1", "::ffff:192.0.2.1"],
            &["1.2.3.4", "2001:db8:::1", "fe80::1%eth0", ""],
        );
    }
}
