//! Rate limiting: every declared policy enforced on `governor` GCRA buckets, keyed by a
//! client address no untrusted header can forge, answered with 429 problem+json,
//! `Retry-After` and the IETF `RateLimit` / `RateLimit-Policy` fields.
//!
//! The policy named `global` counts every request by client ip before authentication
//! ([`middleware::global`], 404s included); a route's `rate_limit` counts after
//! authentication ([`middleware::route`]) by ip, user or API key. One bucket per policy and
//! key, in state built once and shared by every worker.
//!
//! ```text
//! client_ip  peer address, or the rightmost untrusted forwarded address via a trusted proxy
//! key        what a bucket counts by (IPv4 address, IPv6 /64, user, API key)
//! backend    the limiter interface; memory: governor + key cap + idle-key sweep;
//!            redis: one GCRA script on Redis's clock, shared by every instance, with a
//!            circuit and the declared fallback while Redis cannot answer in time
//! headers    RateLimit, RateLimit-Policy, Retry-After
//! middleware the two enforcement points in the request pipeline
//! ```
//!
//! NestFlux drives `governor` (MIT) itself rather than through actix-governor, which is
//! GPL-3.0-or-later (it would put the whole binary under GPL), rounds `Retry-After` down
//! (a 200 ms wait becomes `0`), trusts forwarded headers blindly and has no pluggable
//! backend.

pub mod backend;
pub mod client_ip;
pub mod headers;
pub mod key;
pub mod memory;
pub mod middleware;
pub mod redis;

use std::collections::HashMap;
use std::net::IpAddr;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use ipnet::IpNet;

use crate::plan::Plan;
use crate::plan::ratelimit::{LimitBackend, LimitKey, PolicyName, RateLimitsPlan};
use crate::problem::Problem;

pub use backend::{Backend, BackendError, PolicyId, Verdict};
pub use client_ip::ClientIp;
pub use key::BucketKey;
pub use memory::MemoryBackend;
pub use redis::RedisBackend;

/// The backend a plan declares: this process's memory, or Redis.
#[derive(Clone)]
pub enum Buckets {
    /// `backend = "memory"`.
    Memory(MemoryBackend),
    /// `backend = "redis"`.
    Redis(RedisBackend),
}

impl Buckets {
    /// The Redis backend, when that is the one declared.
    pub fn redis(&self) -> Option<&RedisBackend> {
        match self {
            Self::Redis(r) => Some(r),
            Self::Memory(_) => None,
        }
    }
}

impl Backend for Buckets {
    async fn check(&self, policy: PolicyId, key: &BucketKey) -> Result<Verdict, BackendError> {
        match self {
            Self::Memory(m) => m.check_now(policy, key),
            Self::Redis(r) => r.check(policy, key).await,
        }
    }
}

/// Every compiled policy, the trusted proxies and the backend holding the buckets.
pub struct RateLimits<B: Backend = Buckets> {
    policies: Vec<Policy>,
    by_name: HashMap<PolicyName, PolicyId>,
    global: Option<PolicyId>,
    auth_failures: Option<PolicyId>,
    /// The `auth_failures` emission interval: how long until a spent budget admits one again.
    auth_period: std::time::Duration,
    /// Clients that spent their `auth_failures` budget, until when: answered here without
    /// asking the backend again (and without a signature check).
    blocked: quick_cache::sync::Cache<BucketKey, std::time::Instant>,
    trusted: Vec<IpNet>,
    backend: B,
    /// Each policy's decision counters, by [`PolicyId`] (none: not counted).
    decisions: Vec<crate::metrics::Decisions>,
    /// Where refusals are counted for the audit log (handed down by the server).
    audit: crate::audit::sink::AuditSink,
}

/// Clients remembered at once as over their failed-authentication budget.
const BLOCKED_CLIENTS: usize = 64 * 1024;

struct Policy {
    name: PolicyName,
    key: LimitKey,
    /// This policy's `RateLimit-Policy` item, rendered once.
    item: String,
}

impl RateLimits<Buckets> {
    /// The limits a plan declares, on the backend it declares (Redis connects lazily and
    /// needs a Tokio runtime; the memory backend is swept in the background).
    pub fn from_plan(
        plan: &Plan,
        audit: crate::audit::sink::AuditSink,
    ) -> Result<Self, redis::RedisSetupError> {
        let policies: Vec<_> = plan.rate_limits.policies.values().cloned().collect();
        let backend = match &plan.rate_limits.backend {
            LimitBackend::Memory => Buckets::Memory(MemoryBackend::new(&policies)),
            LimitBackend::Redis(r) => Buckets::Redis(RedisBackend::new(
                r,
                &policies,
                plan.rate_limits.clock_offset_ns,
            )?),
        };
        let mut limits = Self::new(&plan.rate_limits, &plan.server.trusted_proxies, backend);
        limits.audit = audit;
        Ok(limits)
    }
}

impl RateLimits<Buckets> {
    /// The limits of a reloaded plan, keeping the buckets of every policy whose name and
    /// definition did not change (and the names of those kept). `None` when either plan
    /// uses Redis: its buckets live in Redis, and a changed Redis setup needs a restart.
    pub fn carry_over(&self, plan: &Plan) -> Option<(Self, Vec<String>)> {
        let Buckets::Memory(old) = &self.backend else {
            return None;
        };
        if plan.rate_limits.backend != LimitBackend::Memory {
            return None;
        }
        let policies: Vec<_> = plan.rate_limits.policies.values().cloned().collect();
        let (backend, kept) = old.carry_over(&policies);
        let mut limits = Self::new(
            &plan.rate_limits,
            &plan.server.trusted_proxies,
            Buckets::Memory(backend),
        );
        // Refusals of the new plan are audited like the old one's.
        limits.audit = self.audit.clone();
        Some((limits, kept))
    }
}

impl<B: Backend> RateLimits<B> {
    /// Limits over `backend`, whose policies must be `plan`'s in the same (name) order.
    pub fn new(plan: &RateLimitsPlan, trusted: &[IpNet], backend: B) -> Self {
        let policies: Vec<Policy> = plan
            .policies
            .values()
            .map(|p| Policy {
                name: p.name.clone(),
                key: p.key,
                item: headers::policy_item(&p.name.0, p.quota.get(), p.window),
            })
            .collect();
        let by_name = policies
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.clone(), PolicyId(i)))
            .collect::<HashMap<_, _>>();
        let global = by_name.get(&PolicyName("global".into())).copied();
        let auth_failures = by_name
            .get(&PolicyName(crate::plan::ratelimit::AUTH_FAILURES.into()))
            .copied();
        Self {
            policies,
            by_name,
            global,
            auth_failures,
            auth_period: plan
                .policies
                .get(&PolicyName(crate::plan::ratelimit::AUTH_FAILURES.into()))
                .map_or(std::time::Duration::ZERO, |p| p.period),
            blocked: quick_cache::sync::Cache::new(BLOCKED_CLIENTS),
            trusted: trusted.to_vec(),
            backend,
            decisions: Vec::new(),
            audit: Default::default(),
        }
    }

    /// Counts every policy's decisions in `metrics` (`nestflux_rate_limit_decisions_total`).
    pub fn with_metrics(mut self, metrics: &crate::metrics::Metrics) -> Self {
        self.decisions = self
            .policies
            .iter()
            .map(|p| metrics.decisions(&p.name.0))
            .collect();
        self
    }

    /// The decision counters of `policy`, when counted.
    fn decided(&self, policy: PolicyId) -> Option<&crate::metrics::Decisions> {
        self.decisions.get(policy.0)
    }

    /// Counts a refusal under `policy` for the audit log (one row per source per window).
    pub fn audit_refusal(&self, source: &str, policy: &str) {
        self.audit.rate_limited(source, policy);
    }

    /// Whether no policy is declared (nothing to count, no headers to send).
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// The backend holding the buckets.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The `global` policy, applied to every request before authentication.
    pub fn global(&self) -> Option<PolicyId> {
        self.global
    }

    /// The policy of a given name.
    pub fn policy(&self, name: &PolicyName) -> Option<PolicyId> {
        self.by_name.get(name).copied()
    }

    /// What `policy` counts by.
    pub fn key_kind(&self, policy: PolicyId) -> Option<LimitKey> {
        self.policies.get(policy.0).map(|p| p.key)
    }

    /// The client address of a request from `peer`, honouring only trusted proxies.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        client_ip::resolve(peer, headers, &self.trusted)
    }

    /// Counts one request; `Ok` carries the `RateLimit` item to send (`None` when the
    /// backend could not decide and the declared fallback lets the request through),
    /// `Err` the answer (429 when refused, 503 when the backend cannot decide).
    pub async fn check(
        &self,
        policy: PolicyId,
        key: &BucketKey,
    ) -> Result<Option<Applied>, Refusal> {
        let name = self
            .policies
            .get(policy.0)
            .map(|p| p.name.0.as_str())
            .unwrap_or_default();
        match self.backend.check(policy, key).await {
            Ok(verdict) => {
                let applied = Applied {
                    policy,
                    item: headers::limit_item(name, &verdict),
                };
                if verdict.allowed {
                    if let Some(d) = self.decided(policy) {
                        d.allowed.inc();
                    }
                    Ok(Some(applied))
                } else {
                    if let Some(d) = self.decided(policy) {
                        d.limited.inc();
                    }
                    Err(Refusal {
                        problem: too_many_requests(verdict.retry_after),
                        applied: Some(applied),
                    })
                }
            }
            Err(BackendError::Undecided) => {
                if let Some(d) = self.decided(policy) {
                    d.fallback.inc();
                }
                Ok(None)
            }
            Err(e) => {
                if let Some(d) = self.decided(policy) {
                    d.unavailable.inc();
                }
                // The Redis backend logs its own outage once; anything else is a fault.
                if !matches!(e, BackendError::Unavailable) {
                    tracing::error!(policy = name, error = %e, "rate limiting: backend failed");
                }
                Err(Refusal {
                    problem: Problem::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        "the rate limiter cannot decide right now; retry shortly",
                    )
                    .header(
                        actix_web::http::header::RETRY_AFTER,
                        actix_web::http::header::HeaderValue::from_static("1"),
                    ),
                    applied: None,
                })
            }
        }
    }

    /// `Some(wait)` while the client at `ip` is over its `auth_failures` budget: its next
    /// unverified credential is refused with 429 before any signature is checked.
    pub fn auth_blocked(&self, ip: IpAddr) -> Option<std::time::Duration> {
        let key = BucketKey::ip(ip);
        let until = self.blocked.get(&key)?;
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            self.blocked.remove(&key);
            return None;
        }
        if let Some(d) = self.auth_failures.and_then(|p| self.decided(p)) {
            d.limited.inc();
        }
        Some(left)
    }

    /// Charges one failed authentication to the client at `ip`; once the budget is spent,
    /// the client is blocked until the bucket admits one again.
    pub async fn charge_auth_failure(&self, ip: IpAddr) {
        let Some(policy) = self.auth_failures else {
            return;
        };
        let key = BucketKey::ip(ip);
        let verdict = self.backend.check(policy, &key).await;
        if let (Ok(v), Some(d)) = (&verdict, self.decided(policy)) {
            if v.allowed { &d.allowed } else { &d.limited }.inc();
        }
        match verdict {
            // The last failure allowed, or one beyond: blocked until the bucket admits one.
            Ok(verdict) if !verdict.allowed || verdict.remaining == 0 => {
                let wait = if verdict.allowed {
                    self.auth_period
                } else {
                    verdict.retry_after
                };
                let until = std::time::Instant::now() + wait;
                self.blocked.insert(key, until);
                tracing::warn!(
                    target: "nestflux::auth",
                    client = %ip,
                    retry_after_ms = wait.as_millis() as u64,
                    "client over its budget of failed authentications: its new credentials are refused unchecked for a while"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "rate limiting: backend failed"),
            // (The Redis backend answers `auth_failures` locally while it is unreachable.)
        }
    }

    /// Writes `RateLimit-Policy` and `RateLimit` for the policies that counted a request.
    pub fn write_headers(&self, applied: &[Applied], headers: &mut HeaderMap) {
        if applied.is_empty() {
            return;
        }
        let (mut policy, mut state) = (String::new(), String::new());
        for (i, a) in applied.iter().enumerate() {
            if i > 0 {
                policy.push_str(", ");
                state.push_str(", ");
            }
            if let Some(p) = self.policies.get(a.policy.0) {
                policy.push_str(&p.item);
            }
            state.push_str(&a.item);
        }
        if let (Ok(policy), Ok(state)) = (
            HeaderValue::from_str(&policy),
            HeaderValue::from_str(&state),
        ) {
            headers.insert(
                header::HeaderName::from_static(headers::RATELIMIT_POLICY),
                policy,
            );
            headers.insert(header::HeaderName::from_static(headers::RATELIMIT), state);
        }
    }
}

/// One policy that counted a request, with its `RateLimit` item.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The policy that counted.
    pub policy: PolicyId,
    /// Its `RateLimit` item, e.g. `"writes";r=9;t=6`.
    pub item: String,
}

/// A request the limiter will not let through.
#[derive(Debug)]
pub struct Refusal {
    /// The answer: 429, or 503 when the backend cannot decide.
    pub problem: Problem,
    /// The refusing policy's state, for the `RateLimit` fields (none if it could not decide).
    pub applied: Option<Applied>,
}

/// 429 with `Retry-After` in whole seconds, rounded up.
fn too_many_requests(wait: std::time::Duration) -> Problem {
    let secs = headers::retry_after(wait);
    Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate-limited",
        format!("too many requests; retry in {secs} s"),
    )
    .header(header::RETRY_AFTER, HeaderValue::from(secs))
}
