//! Compiles `[rate_limits]`: named GCRA policies and the backend that stores their buckets.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::time::Duration;

use super::Profile;
use super::diag::{Code, Diagnostic, Diagnostics};
use super::is_name;
use crate::config::RawRateLimits;

/// What a policy counts requests by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKey {
    /// The client address (IPv6 by /64).
    Ip,
    /// The authenticated subject; anonymous callers fall back to their ip.
    User,
    /// The declared API key; other callers fall back to their ip.
    ApiKey,
}

/// A policy name from the file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyName(pub String);

/// One GCRA policy: `burst` requests at once, refilled one per `period`.
#[derive(Debug, Clone)]
pub struct RatePolicy {
    /// The policy's name.
    pub name: PolicyName,
    /// What the policy counts by.
    pub key: LimitKey,
    /// Time to replenish one request.
    pub period: Duration,
    /// Requests allowed per window, as declared (for the `RateLimit-Policy` header).
    pub quota: NonZeroU32,
    /// The declared window: 1s, 60s or 3600s.
    pub window: Duration,
    /// Requests allowed at once.
    pub burst: NonZeroU32,
}

/// Where the buckets live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitBackend {
    /// In this process.
    Memory,
    /// In Redis, shared by every instance.
    Redis(RedisPlan),
}

/// `backend = "redis"`, checked. The URL may hold a password and stays out of `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisPlan {
    /// `redis://` or `rediss://`, with the password from the environment applied.
    pub url: String,
    /// Longest a request waits for Redis before [`OnBackendError`] decides.
    pub timeout: Duration,
    /// What decides while Redis is unreachable or slow.
    pub on_error: OnBackendError,
}

impl std::fmt::Debug for RedisPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPlan")
            .field("url", &"<redacted>")
            .field("timeout", &self.timeout)
            .field("on_error", &self.on_error)
            .finish()
    }
}

/// `on_backend_error`: who decides while the shared backend cannot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnBackendError {
    /// This instance's own in-memory buckets (limits hold per instance).
    Local,
    /// 503 with `Retry-After`.
    Deny,
    /// Let the request through uncounted.
    Allow,
}

impl OnBackendError {
    /// The name used in the file.
    pub fn name(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Deny => "deny",
            Self::Allow => "allow",
        }
    }
}

/// Default `redis_timeout`.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(50);

/// Longest time a Redis bucket may take to refill: its state is kept in whole nanoseconds
/// that Redis's Lua (IEEE doubles) represents exactly only below 2^53 ns (104 days).
pub const MAX_REDIS_REFILL: Duration = Duration::from_secs(90 * 86_400);

/// `[rate_limits]`, checked.
#[derive(Debug, Clone)]
pub struct RateLimitsPlan {
    /// Where the buckets live.
    pub backend: LimitBackend,
    /// Every policy, by name (with the built-in `auth_failures` when none is declared).
    pub policies: BTreeMap<PolicyName, RatePolicy>,
    /// Whether `auth_failures` is the built-in default rather than declared.
    pub default_auth_failures: bool,
    /// `dangerous_clock_offset` in nanoseconds (test only; refused in production): how far
    /// this instance's clock is moved as the rate limiter sees it.
    pub clock_offset_ns: i64,
}

impl RateLimitsPlan {
    /// The policies the file declares (the built-in `auth_failures` not counted).
    pub fn declared(&self) -> usize {
        self.policies.len() - usize::from(self.default_auth_failures)
    }
}

/// The policy charged with each failed authentication (by client ip); once a client has
/// spent it, its new tokens are refused with 429 before any signature is checked.
pub const AUTH_FAILURES: &str = "auth_failures";

/// `auth_failures` when the file declares none: 30 failures at once, then one a second.
const DEFAULT_AUTH_FAILURES: (u32, Duration, u32) = (60, Duration::from_secs(60), 30);

impl RateLimitsPlan {
    /// The policy named `global`, counted on every request before authentication.
    pub fn global(&self) -> Option<&RatePolicy> {
        self.policies.get(&PolicyName("global".into()))
    }
}

/// Checks `[rate_limits]`: backend and policies.
pub fn compile_rate_limits(
    raw: &RawRateLimits,
    profile: Profile,
    d: &mut Diagnostics,
) -> RateLimitsPlan {
    let backend = match raw.backend.as_deref().unwrap_or("memory") {
        "memory" => {
            if raw.redis_url.is_some()
                || raw.on_backend_error.is_some()
                || raw.redis_timeout.is_some()
            {
                d.warn(
                    "rate_limits",
                    "redis_url, redis_timeout and on_backend_error are ignored unless backend = \"redis\"",
                );
            }
            LimitBackend::Memory
        }
        "redis" => compile_redis(raw, d).map_or(LimitBackend::Memory, LimitBackend::Redis),
        other => {
            d.push_error(
                Diagnostic::new(
                    "rate_limits.backend",
                    format!("`{other}`: expected \"memory\" or \"redis\""),
                )
                .with_suggestion(crate::suggest::closest(other, ["memory", "redis"])),
            );
            LimitBackend::Memory
        }
    };
    let clock_offset_ns = match raw.dangerous_clock_offset.as_deref() {
        None => 0,
        Some(text) => {
            let path = "rate_limits.dangerous_clock_offset";
            d.refuse_in_production(
                profile,
                Diagnostic::new(path, "refused in production (a test-only clock shift)"),
                Diagnostic::new(
                    path,
                    "this instance's clock is shifted for the rate limiter (test only)",
                ),
            );
            match signed_duration(text) {
                Ok(ns) => ns,
                Err(e) => {
                    d.error(path, e);
                    0
                }
            }
        }
    };
    let mut policies = BTreeMap::new();
    for (name, p) in &raw.policies {
        let path = format!("rate_limits.{name}");
        if !is_name(name) {
            d.error_with(
                Code::InvalidName,
                &path,
                "policy names are lowercase letters, digits, `_` or `-`",
            );
        }
        let key = match p.key.as_deref().unwrap_or("ip") {
            "ip" => LimitKey::Ip,
            "user" => LimitKey::User,
            "api_key" => LimitKey::ApiKey,
            other => {
                d.push_error(
                    Diagnostic::new(
                        format!("{path}.key"),
                        format!("`{other}`: expected \"ip\", \"user\" or \"api_key\""),
                    )
                    .with_suggestion(crate::suggest::closest(other, ["ip", "user", "api_key"])),
                );
                LimitKey::Ip
            }
        };
        if name == "global" && key != LimitKey::Ip {
            d.error_with(
                Code::Conflict,
                format!("{path}.key"),
                "the global policy runs before authentication, so it can only count by \"ip\"",
            );
        }
        if name == AUTH_FAILURES && key != LimitKey::Ip {
            d.error(
                format!("{path}.key"),
                "failed authentications have no user to count by, so this policy can only count by \"ip\"",
            );
        }
        let rates = [
            (p.per_second, 1u64, "per_second"),
            (p.per_minute, 60, "per_minute"),
            (p.per_hour, 3600, "per_hour"),
        ];
        let declared: Vec<_> = rates.iter().filter(|(n, _, _)| n.is_some()).collect();
        let (count, window) = match declared.as_slice() {
            [(Some(n), secs, key)] => match NonZeroU32::new(*n) {
                Some(n) => (n, Duration::from_secs(*secs)),
                None => {
                    d.error(format!("{path}.{key}"), "must be at least 1");
                    continue;
                }
            },
            [] => {
                d.error_with(
                    Code::MissingKey,
                    &path,
                    "declare one of per_second, per_minute or per_hour",
                );
                continue;
            }
            _ => {
                d.error_with(
                    Code::Conflict,
                    &path,
                    "declare only one of per_second, per_minute or per_hour",
                );
                continue;
            }
        };
        let burst = match p.burst {
            None => count,
            Some(b) => match NonZeroU32::new(b) {
                Some(b) => b,
                None => {
                    d.error(format!("{path}.burst"), "must be at least 1");
                    continue;
                }
            },
        };
        let period = window / count.get();
        if period.is_zero() {
            d.error(&path, "rate too high to represent");
            continue;
        }
        let name = PolicyName(name.clone());
        policies.insert(
            name.clone(),
            RatePolicy {
                name,
                key,
                period,
                quota: count,
                window,
                burst,
            },
        );
    }
    // Failed authentications always have a budget: flooding forged tokens must not buy
    // unlimited signature checks.
    let auth_failures = PolicyName(AUTH_FAILURES.into());
    let default_auth_failures = !raw.policies.contains_key(AUTH_FAILURES);
    if default_auth_failures {
        let (count, window, burst) = DEFAULT_AUTH_FAILURES;
        if let (Some(quota), Some(burst)) = (NonZeroU32::new(count), NonZeroU32::new(burst)) {
            policies.insert(
                auth_failures.clone(),
                RatePolicy {
                    name: auth_failures,
                    key: LimitKey::Ip,
                    period: window / count,
                    quota,
                    window,
                    burst,
                },
            );
        }
    }
    if matches!(backend, LimitBackend::Redis(_)) {
        for p in policies.values() {
            if p.period.saturating_mul(p.burst.get()) > MAX_REDIS_REFILL {
                d.error(
                    format!("rate_limits.{}", p.name.0),
                    "with backend = \"redis\" a bucket must refill within 90 days (burst × the time per request)",
                );
            }
        }
    }
    RateLimitsPlan {
        backend,
        policies,
        default_auth_failures,
        clock_offset_ns,
    }
}

/// Checks the Redis URL, its password (only from the environment) and the fallback. The
/// URL is never echoed: it may hold a password.
fn compile_redis(raw: &RawRateLimits, d: &mut Diagnostics) -> Option<RedisPlan> {
    let path = "rate_limits.redis_url";
    let Some(text) = raw.redis_url.as_deref() else {
        d.error_with(
            Code::MissingKey,
            path,
            "required with backend = \"redis\" (NESTFLUX_RATE_LIMITS__REDIS_URL)",
        );
        return None;
    };
    let mut url = match url::Url::parse(text) {
        Ok(u) if matches!(u.scheme(), "redis" | "rediss") => u,
        _ => {
            d.error(
                path,
                "must be a redis://HOST[:PORT][/DB] or rediss://HOST[:PORT][/DB] URL",
            );
            return None;
        }
    };
    let mut ok = true;
    if url.host_str().is_none_or(str::is_empty) {
        d.error(path, "names no host");
        ok = false;
    }
    if url.fragment().is_some() {
        d.error(
            path,
            "a #fragment is not allowed (`#insecure` would turn off certificate checks)",
        );
        ok = false;
    }
    if let Some(password) = raw.redis_password.as_deref() {
        if url.password().is_some() {
            d.error_with(
                Code::Conflict,
                "rate_limits.redis_password",
                "the URL holds a password already: set it in one place",
            );
            ok = false;
        } else if url.set_password(Some(password)).is_err() {
            d.error(path, "cannot hold a password");
            ok = false;
        }
    }
    let timeout = match raw.redis_timeout.as_deref() {
        None => DEFAULT_REDIS_TIMEOUT,
        Some(t) => match super::units::duration(t) {
            Ok(t) if t >= Duration::from_millis(1) && t <= Duration::from_secs(1) => t,
            Ok(_) => {
                d.error("rate_limits.redis_timeout", "must be between 1ms and 1s");
                ok = false;
                DEFAULT_REDIS_TIMEOUT
            }
            Err(e) => {
                d.error("rate_limits.redis_timeout", e);
                ok = false;
                DEFAULT_REDIS_TIMEOUT
            }
        },
    };
    let on_error = match raw.on_backend_error.as_deref().unwrap_or("local") {
        "local" => OnBackendError::Local,
        "deny" => OnBackendError::Deny,
        "allow" => {
            d.warn(
                "rate_limits.on_backend_error",
                "\"allow\": while Redis is unreachable no rate limit holds (failed authentications stay limited per instance)",
            );
            OnBackendError::Allow
        }
        other => {
            d.push_error(
                Diagnostic::new(
                    "rate_limits.on_backend_error",
                    format!("`{other}`: expected \"local\", \"deny\" or \"allow\""),
                )
                .with_suggestion(crate::suggest::closest(other, ["local", "deny", "allow"])),
            );
            ok = false;
            OnBackendError::Local
        }
    };
    ok.then(|| RedisPlan {
        url: url.to_string(),
        timeout,
        on_error,
    })
}

/// `"90s"`, `"+90s"` or `"-1h"` as signed nanoseconds.
fn signed_duration(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let (sign, rest) = match text.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, text.strip_prefix('+').unwrap_or(text)),
    };
    let d = super::units::duration(rest.trim())?;
    if d > Duration::from_secs(30 * 86_400) {
        return Err("must be within 30 days".into());
    }
    i64::try_from(d.as_nanos())
        .map(|ns| sign * ns)
        .map_err(|_| "too large".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RawRateLimits;

    fn compile(toml_text: &str) -> (RateLimitsPlan, Diagnostics) {
        let raw: RawRateLimits = toml::from_str(toml_text).unwrap();
        let mut d = Diagnostics::default();
        (compile_rate_limits(&raw, Profile::Development, &mut d), d)
    }

    fn redis(extra: &str) -> (RateLimitsPlan, Diagnostics) {
        compile(&format!(
            "backend = \"redis\"\nredis_url = \"redis://cache.internal:6379/2\"\n{extra}"
        ))
    }

    #[test]
    fn redis_defaults_and_declared_fallbacks() {
        let (plan, d) = redis("");
        assert!(d.errors.is_empty(), "{:?}", d.errors);
        let LimitBackend::Redis(r) = &plan.backend else {
            panic!("{:?}", plan.backend)
        };
        assert_eq!(
            (r.timeout, r.on_error),
            (DEFAULT_REDIS_TIMEOUT, OnBackendError::Local)
        );
        assert!(!format!("{r:?}").contains("cache.internal"));
        let (plan, d) = redis("redis_timeout = \"20ms\"\non_backend_error = \"deny\"");
        assert!(d.errors.is_empty());
        let LimitBackend::Redis(r) = &plan.backend else {
            panic!()
        };
        assert_eq!(
            (r.timeout, r.on_error),
            (Duration::from_millis(20), OnBackendError::Deny)
        );
        let (_, d) = redis("on_backend_error = \"allow\"");
        assert!(d.errors.is_empty());
        assert_eq!(d.warnings[0].path, "rate_limits.on_backend_error");
        for (extra, path) in [
            (
                "on_backend_error = \"open\"",
                "rate_limits.on_backend_error",
            ),
            ("redis_timeout = \"2s\"", "rate_limits.redis_timeout"),
            ("redis_timeout = \"0ms\"", "rate_limits.redis_timeout"),
        ] {
            let (plan, d) = redis(extra);
            assert_eq!(d.errors[0].path, path, "{extra}");
            assert_eq!(plan.backend, LimitBackend::Memory);
        }
    }

    #[test]
    fn redis_urls_are_checked_and_never_echoed() {
        for url in [
            "http://cache:6379",
            "redis://",
            "rediss://cache:6379/0#insecure",
            "not a url s3cret",
        ] {
            let (_, d) = compile(&format!("backend = \"redis\"\nredis_url = \"{url}\""));
            assert_eq!(d.errors.len(), 1, "{url}: {:?}", d.errors);
            assert_eq!(d.errors[0].path, "rate_limits.redis_url");
            assert!(!d.errors[0].message.contains("cache"), "{:?}", d.errors);
            assert!(!d.errors[0].message.contains("s3cret"), "{:?}", d.errors);
        }
        let (_, d) = compile("backend = \"redis\"");
        assert_eq!(d.errors[0].path, "rate_limits.redis_url");
        // The password from the environment joins a password-less URL, once.
        let (plan, d) = redis("redis_password = \"p@ss:word\"");
        assert!(d.errors.is_empty());
        let LimitBackend::Redis(r) = &plan.backend else {
            panic!()
        };
        let url = url::Url::parse(&r.url).unwrap();
        assert_eq!(url.password(), Some("p%40ss%3Aword"));
        let (_, d) = compile(
            "backend = \"redis\"\nredis_url = \"redis://:a@cache/0\"\nredis_password = \"b\"",
        );
        assert_eq!(d.errors[0].path, "rate_limits.redis_password");
    }

    #[test]
    fn redis_buckets_must_refill_within_90_days() {
        let (_, d) = redis("[slow]\nper_hour = 1\nburst = 2161");
        assert_eq!(d.errors[0].path, "rate_limits.slow", "{:?}", d.errors);
        let (_, d) = redis("[slow]\nper_hour = 1\nburst = 2160");
        assert!(d.errors.is_empty(), "{:?}", d.errors);
        // The memory backend has no such bound.
        let (_, d) = compile("[slow]\nper_hour = 1\nburst = 100000");
        assert!(d.errors.is_empty());
    }

    #[test]
    fn the_clock_offset_is_signed_and_refused_in_production() {
        let (plan, d) = compile("dangerous_clock_offset = \"-90s\"");
        assert_eq!(plan.clock_offset_ns, -90_000_000_000);
        assert_eq!(d.warnings[0].path, "rate_limits.dangerous_clock_offset");
        let (plan, _) = compile("dangerous_clock_offset = \"+1h\"");
        assert_eq!(plan.clock_offset_ns, 3_600_000_000_000);
        let raw: RawRateLimits = toml::from_str("dangerous_clock_offset = \"1h\"").unwrap();
        let mut d = Diagnostics::default();
        compile_rate_limits(&raw, Profile::Production, &mut d);
        assert_eq!(d.errors[0].path, "rate_limits.dangerous_clock_offset");
        assert_eq!(
            d.errors[0].message,
            "refused in production (a test-only clock shift)"
        );
    }

    #[test]
    fn auth_failures_is_built_in_and_counts_by_ip_only() {
        let (plan, d) = compile("");
        assert!(d.errors.is_empty());
        assert!(plan.default_auth_failures);
        assert_eq!(plan.declared(), 0);
        let p = &plan.policies[&PolicyName(AUTH_FAILURES.into())];
        assert_eq!((p.key, p.burst.get()), (LimitKey::Ip, 30));
        let (plan, d) = compile("[auth_failures]\nper_minute = 10\nburst = 3\n");
        assert!(d.errors.is_empty());
        assert!(!plan.default_auth_failures);
        assert_eq!(plan.declared(), 1);
        let (_, d) = compile("[auth_failures]\nkey = \"user\"\nper_minute = 10\n");
        assert_eq!(d.errors[0].path, "rate_limits.auth_failures.key");
    }
}
