//! Compiles `[rate_limits]`: named GCRA policies and the backend that stores their buckets.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::time::Duration;

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
    Redis {
        /// The Redis URL (may hold a password).
        url: String,
    },
}

/// `[rate_limits]`, checked.
#[derive(Debug, Clone)]
pub struct RateLimitsPlan {
    /// Where the buckets live.
    pub backend: LimitBackend,
    /// Every policy, by name (with the built-in `auth_failures` when none is declared).
    pub policies: BTreeMap<PolicyName, RatePolicy>,
    /// Whether `auth_failures` is the built-in default rather than declared.
    pub default_auth_failures: bool,
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
pub fn compile_rate_limits(raw: &RawRateLimits, d: &mut Diagnostics) -> RateLimitsPlan {
    let backend = match raw.backend.as_deref().unwrap_or("memory") {
        "memory" => LimitBackend::Memory,
        "redis" => match &raw.redis_url {
            Some(url) if url.starts_with("redis://") || url.starts_with("rediss://") => {
                LimitBackend::Redis { url: url.clone() }
            }
            Some(_) => {
                d.error(
                    "rate_limits.redis_url",
                    "must start with redis:// or rediss://",
                );
                LimitBackend::Memory
            }
            None => {
                d.error_with(
                    Code::MissingKey,
                    "rate_limits.redis_url",
                    "required with backend = \"redis\" (NESTFLUX_RATE_LIMITS__REDIS_URL)",
                );
                LimitBackend::Memory
            }
        },
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
    RateLimitsPlan {
        backend,
        policies,
        default_auth_failures,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RawRateLimits;

    fn compile(toml_text: &str) -> (RateLimitsPlan, Diagnostics) {
        let raw: RawRateLimits = toml::from_str(toml_text).unwrap();
        let mut d = Diagnostics::default();
        (compile_rate_limits(&raw, &mut d), d)
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
