//! The response fields of draft-ietf-httpapi-ratelimit-headers-10 and `Retry-After`.
//!
//! Both fields are structured-field Lists (RFC 9651) with one Item per policy that applied
//! to the request, named by the policy as an sf-string:
//!
//! ```text
//! RateLimit-Policy: "global";q=100;w=1, "writes";q=60;w=60
//! RateLimit: "global";r=199;t=1, "writes";r=9;t=6
//! ```
//!
//! `q` is the declared quota per window and `w` the window in seconds. `r` is the number of
//! requests the bucket admits right now (with a burst above the quota it may exceed `q`),
//! and `t` the whole seconds, rounded up, until the bucket is full again. No `pk`
//! (partition key) is sent: it would describe how clients are told apart. `Retry-After`
//! (RFC 9110) is whole seconds rounded up, at least 1: a client that waits that long is
//! admitted, and never told to retry at once while it would still be refused.

use std::fmt::Write;
use std::time::Duration;

use super::backend::Verdict;

/// Name of the `RateLimit` field.
pub const RATELIMIT: &str = "ratelimit";
/// Name of the `RateLimit-Policy` field.
pub const RATELIMIT_POLICY: &str = "ratelimit-policy";

/// An sf-string: `"name"` with `"` and `\` escaped (policy names are plain already).
fn sf_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars().filter(|c| c.is_ascii() && !c.is_ascii_control()) {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// The `RateLimit-Policy` item of a policy: `"name";q=QUOTA;w=WINDOW`.
pub fn policy_item(name: &str, quota: u32, window: Duration) -> String {
    let mut out = String::new();
    sf_string(&mut out, name);
    let _ = write!(out, ";q={quota};w={}", seconds_up(window));
    out
}

/// The `RateLimit` item of a decision: `"name";r=REMAINING;t=SECONDS`.
/// Written on every request a policy counts: integers through `itoa`, not `fmt`.
pub fn limit_item(name: &str, verdict: &Verdict) -> String {
    let mut out = String::with_capacity(name.len() + 24);
    sf_string(&mut out, name);
    out.push_str(";r=");
    out.push_str(itoa::Buffer::new().format(verdict.remaining));
    out.push_str(";t=");
    out.push_str(itoa::Buffer::new().format(seconds_up(verdict.reset)));
    out
}

/// `Retry-After` for a refused request: whole seconds rounded up, never 0.
pub fn retry_after(wait: Duration) -> u64 {
    seconds_up(wait).max(1)
}

/// Whole seconds, rounded up.
pub fn seconds_up(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(remaining: u32, reset: Duration) -> Verdict {
        Verdict {
            allowed: remaining > 0,
            remaining,
            reset,
            retry_after: Duration::ZERO,
        }
    }

    #[test]
    fn items_are_structured_field_items() {
        assert_eq!(
            policy_item("global", 100, Duration::from_secs(1)),
            r#""global";q=100;w=1"#
        );
        assert_eq!(
            policy_item("writes", 60, Duration::from_secs(3600)),
            r#""writes";q=60;w=3600"#
        );
        assert_eq!(
            limit_item("global", &verdict(7, Duration::from_millis(1200))),
            r#""global";r=7;t=2"#
        );
        assert_eq!(
            limit_item("global", &verdict(0, Duration::from_secs(3))),
            r#""global";r=0;t=3"#
        );
        assert_eq!(
            policy_item("a\"b\\c", 1, Duration::from_secs(1)),
            r#""a\"b\\c";q=1;w=1"#
        );
    }

    #[test]
    fn retry_after_rounds_up_and_is_never_zero() {
        assert_eq!(retry_after(Duration::from_nanos(1)), 1);
        assert_eq!(retry_after(Duration::from_millis(200)), 1);
        assert_eq!(retry_after(Duration::from_secs(1)), 1);
        assert_eq!(retry_after(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after(Duration::ZERO), 1);
        assert_eq!(seconds_up(Duration::ZERO), 0);
        assert_eq!(seconds_up(Duration::from_millis(2500)), 3);
    }
}
