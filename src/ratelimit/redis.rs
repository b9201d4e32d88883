//! The Redis backend: every instance counts in the same buckets, by one atomic GCRA script
//! on Redis's own clock, and a request never waits longer than `redis_timeout` for it.
//!
//! One Lua script ([`GCRA`], sent by `EVALSHA`; loaded again on `NOSCRIPT`) reads the
//! bucket's theoretical arrival time, decides, and writes the new one in a single atomic
//! step, so concurrent requests on several instances cannot read-then-write past a limit.
//! The clock is Redis's `TIME`, so instances whose clocks disagree still agree on every
//! bucket. Each key expires when its bucket is full again (the state an absent key means),
//! so Redis holds only the buckets of recently active clients. The arithmetic is the memory
//! backend's (governor's GCRA) to the nanosecond: the same verdicts and headers.
//!
//! When Redis fails or is slower than the timeout, the circuit opens: the declared
//! `on_backend_error` decides every request at once (`local`: this instance's in-memory
//! buckets; `deny`: 503; `allow`: uncounted), and a background probe tries Redis again
//! with a growing pause (100 ms up to 2 s), so a dead Redis costs no request the full
//! timeout. Entering and leaving that state is logged once each. Failed authentications
//! always fall back to the local buckets, whatever the mode: their budget is what keeps a
//! flood of forged tokens from buying signature checks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::backend::{BackendError, PolicyId, Verdict};
use super::key::BucketKey;
use super::memory::MemoryBackend;
use crate::plan::ratelimit::{AUTH_FAILURES, OnBackendError, RatePolicy, RedisPlan};

/// GCRA on Redis's clock, governor's arithmetic. KEYS[1]: the bucket. ARGV[1]: nanoseconds
/// per request (`t`); ARGV[2]: the burst. The stored value is the theoretical arrival time
/// as `"<seconds> <nanoseconds>"` (two numbers, because Lua's doubles hold integer
/// nanoseconds exactly only below 2^53, about 104 days; the plan caps `t × burst` at 90
/// days, so every difference computed here is exact). Returns
/// `{allowed, remaining, reset_ns, retry_after_ns, redis_seconds, redis_microseconds}`.
pub const GCRA: &str = r#"
local t = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tau = t * (burst - 1)
local now = redis.call('TIME')
local now_s = tonumber(now[1])
local now_us = tonumber(now[2])
local now_n = now_us * 1000
local tat = 0
local stored = redis.call('GET', KEYS[1])
if stored then
  local sp = string.find(stored, ' ', 1, true)
  if sp then
    local s = tonumber(string.sub(stored, 1, sp - 1))
    local n = tonumber(string.sub(stored, sp + 1))
    if s and n then
      tat = (s - now_s) * 1000000000 + (n - now_n)
    end
  end
end
local earliest = tat - tau
if earliest > 0 then
  return {0, 0, earliest + t * (burst - 1), earliest, now_s, now_us}
end
local nxt = math.max(tat, 0) + t
local total = now_n + nxt
local carry = math.floor(total / 1000000000)
redis.call('SET', KEYS[1], string.format('%d %d', now_s + carry, total - carry * 1000000000),
  'PX', math.ceil(nxt / 1000000))
local room = tau + t - nxt
local remaining = math.floor(room / t)
if remaining * t > room then remaining = remaining - 1 end
if (remaining + 1) * t <= room then remaining = remaining + 1 end
return {1, remaining, t * (burst - remaining), 0, now_s, now_us}
"#;

/// The first pause before Redis is tried again after a failure.
const PROBE_MIN: Duration = Duration::from_millis(100);
/// The longest pause between two tries while Redis stays unreachable.
const PROBE_MAX: Duration = Duration::from_secs(2);
/// A clock further than this from Redis's is reported (once per change).
const SKEW_REPORTED: Duration = Duration::from_secs(1);

/// Buckets in Redis, shared by every instance; clones share the connection and the circuit.
#[derive(Clone)]
pub struct RedisBackend {
    inner: Arc<Inner>,
}

struct Inner {
    conn: ConnectionManager,
    script: redis::Script,
    policies: Vec<Bucket>,
    timeout: Duration,
    on_error: OnBackendError,
    /// Used while Redis cannot decide (always for `auth_failures`, for all in `local`).
    local: MemoryBackend,
    circuit: Circuit,
    /// This instance's clock offset (test only), in nanoseconds.
    clock_offset_ns: i64,
    skewed: AtomicBool,
}

/// Per policy: the key prefix and GCRA parameters, computed once.
struct Bucket {
    prefix: String,
    t_ns: u64,
    burst: u32,
    always_local: bool,
}

/// Whether Redis is being used, and when to try it again while it is not.
struct Circuit {
    epoch: Instant,
    open: AtomicBool,
    probing: AtomicBool,
    next_probe_ms: AtomicU64,
    pause_ms: AtomicU64,
    /// Requests decided by the fallback since the circuit opened (for the closing log line).
    fallbacks: AtomicI64,
}

/// Why the Redis backend could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RedisSetupError {
    /// The URL was refused by the client (never echoed: it may hold a password).
    #[error("rate_limits.redis_url is not usable: {0}")]
    Url(String),
}

impl RedisBackend {
    /// A backend for `policies` (in [`PolicyId`] order). Connects lazily: call
    /// [`RedisBackend::connect`] to try Redis before serving. Needs a Tokio runtime.
    pub fn new(
        plan: &RedisPlan,
        policies: &[RatePolicy],
        clock_offset_ns: i64,
    ) -> Result<Self, RedisSetupError> {
        let client = redis::Client::open(plan.url.as_str())
            .map_err(|e| RedisSetupError::Url(describe(&e)))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1).max(plan.timeout)))
            .set_response_timeout(Some(Duration::from_secs(1).max(plan.timeout)))
            .set_number_of_retries(1)
            .set_min_delay(PROBE_MIN)
            .set_max_delay(PROBE_MAX);
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| RedisSetupError::Url(describe(&e)))?;
        let buckets = policies
            .iter()
            .map(|p| Bucket {
                prefix: format!("nestflux:rl:{}:", p.name.0),
                t_ns: u64::try_from(p.period.as_nanos()).unwrap_or(u64::MAX),
                burst: p.burst.get(),
                always_local: p.name.0 == AUTH_FAILURES,
            })
            .collect();
        Ok(Self {
            inner: Arc::new(Inner {
                conn,
                script: redis::Script::new(GCRA),
                policies: buckets,
                timeout: plan.timeout,
                on_error: plan.on_error,
                local: MemoryBackend::new(policies),
                circuit: Circuit {
                    epoch: Instant::now(),
                    open: AtomicBool::new(false),
                    probing: AtomicBool::new(false),
                    next_probe_ms: AtomicU64::new(0),
                    pause_ms: AtomicU64::new(millis(PROBE_MIN)),
                    fallbacks: AtomicI64::new(0),
                },
                clock_offset_ns,
                skewed: AtomicBool::new(false),
            }),
        })
    }

    /// Connects and loads the script once, waiting at most `wait`; on failure the backend
    /// starts degraded (the fallback decides) and keeps trying in the background.
    pub async fn connect(&self, wait: Duration) -> bool {
        let mut conn = self.inner.conn.clone();
        let load = async {
            self.inner
                .script
                .prepare_invoke()
                .load_async(&mut conn)
                .await?;
            Ok::<_, redis::RedisError>(())
        };
        match tokio::time::timeout(wait, load).await {
            Ok(Ok(())) => {
                tracing::info!(
                    on_backend_error = self.inner.on_error.name(),
                    "rate limiting: buckets in Redis, shared by every instance"
                );
                true
            }
            Ok(Err(e)) => {
                self.inner.trip(&describe(&e));
                false
            }
            Err(_) => {
                self.inner.trip("no answer in time");
                false
            }
        }
    }

    /// Whether Redis is deciding right now (false while the fallback does).
    pub fn is_healthy(&self) -> bool {
        !self.inner.circuit.open.load(Ordering::Acquire)
    }

    /// Counts one request: in Redis when it answers in time, else by the fallback.
    pub async fn check(&self, policy: PolicyId, key: &BucketKey) -> Result<Verdict, BackendError> {
        let inner = &self.inner;
        let bucket = inner
            .policies
            .get(policy.0)
            .ok_or(BackendError::UnknownPolicy(policy.0))?;
        if inner.circuit.open.load(Ordering::Acquire) {
            self.probe_if_due();
        } else {
            match tokio::time::timeout(inner.timeout, inner.eval(bucket, key)).await {
                Ok(Ok(verdict)) => return Ok(verdict),
                Ok(Err(e)) => inner.trip(&describe(&e)),
                Err(_) => inner.trip(&format!(
                    "no answer within redis_timeout ({} ms)",
                    inner.timeout.as_millis()
                )),
            }
        }
        inner.circuit.fallbacks.fetch_add(1, Ordering::Relaxed);
        if bucket.always_local {
            return inner.local.check_now(policy, key);
        }
        match inner.on_error {
            OnBackendError::Local => inner.local.check_now(policy, key),
            OnBackendError::Deny => Err(BackendError::Unavailable),
            OnBackendError::Allow => Err(BackendError::Undecided),
        }
    }

    /// Counts one request in Redis only (no timeout, no fallback), returning Redis's clock
    /// at the decision too: for comparing with the memory backend and for benchmarks.
    pub async fn check_in_redis(
        &self,
        policy: PolicyId,
        key: &BucketKey,
    ) -> Result<(Verdict, Duration), redis::RedisError> {
        let bucket =
            self.inner.policies.get(policy.0).ok_or_else(|| {
                redis::RedisError::from((redis::ErrorKind::Client, "no such policy"))
            })?;
        self.inner.eval_at(bucket, key).await
    }

    /// While the circuit is open: one background try at a time, no sooner than the pause.
    fn probe_if_due(&self) {
        let c = &self.inner.circuit;
        if c.since_epoch_ms() < c.next_probe_ms.load(Ordering::Acquire)
            || c.probing.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            c.probing.store(false, Ordering::Release);
            return;
        };
        let this = self.clone();
        runtime.spawn(async move {
            let inner = &this.inner;
            let mut conn = inner.conn.clone();
            let ping = redis::cmd("PING");
            match tokio::time::timeout(inner.timeout, ping.query_async::<String>(&mut conn)).await {
                Ok(Ok(_)) => inner.close(),
                Ok(Err(e)) => inner.reschedule(&describe(&e)),
                Err(_) => inner.reschedule("no answer within redis_timeout"),
            }
            inner.circuit.probing.store(false, Ordering::Release);
        });
    }
}

impl Inner {
    async fn eval(&self, bucket: &Bucket, key: &BucketKey) -> Result<Verdict, redis::RedisError> {
        let (verdict, redis_now) = self.eval_at(bucket, key).await?;
        self.watch_skew(redis_now);
        Ok(verdict)
    }

    /// The script's verdict and Redis's clock when it decided (since the Unix epoch).
    async fn eval_at(
        &self,
        bucket: &Bucket,
        key: &BucketKey,
    ) -> Result<(Verdict, Duration), redis::RedisError> {
        let mut conn = self.conn.clone();
        let reply: Vec<i64> = self
            .script
            .key(redis_key(&bucket.prefix, key))
            .arg(bucket.t_ns)
            .arg(bucket.burst)
            .invoke_async(&mut conn)
            .await?;
        let [allowed, remaining, reset, retry, secs, micros] = reply[..] else {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Parse,
                "unexpected reply from the rate-limit script",
            )));
        };
        let ns = |n: i64| Duration::from_nanos(u64::try_from(n).unwrap_or(0));
        let verdict = Verdict {
            allowed: allowed == 1,
            remaining: u32::try_from(remaining).unwrap_or(0),
            reset: ns(reset),
            retry_after: ns(retry),
        };
        let redis_now = Duration::from_secs(u64::try_from(secs).unwrap_or(0))
            + Duration::from_micros(u64::try_from(micros).unwrap_or(0));
        Ok((verdict, redis_now))
    }

    /// Reports (once per change) how far this instance's clock is from Redis's. Nothing
    /// depends on it: the buckets use Redis's clock only.
    fn watch_skew(&self, redis_now: Duration) {
        let redis_ns = redis_now.as_nanos() as i128;
        let skew_ns = instance_now_ns(self.clock_offset_ns) - redis_ns;
        let skewed = skew_ns.unsigned_abs() > SKEW_REPORTED.as_nanos();
        if skewed != self.skewed.swap(skewed, Ordering::Relaxed) {
            let skew_ms = i64::try_from(skew_ns / 1_000_000).unwrap_or(i64::MAX);
            if skewed {
                tracing::warn!(
                    skew_ms,
                    "rate limiting: this instance's clock is {:.1} s off Redis's; shared limits use Redis's clock, so they still agree across instances",
                    skew_ms as f64 / 1000.0
                );
            } else {
                tracing::info!(
                    skew_ms,
                    "rate limiting: this instance's clock agrees with Redis's again"
                );
            }
        }
    }

    /// Redis failed: open the circuit (logged once) and schedule the first try.
    fn trip(&self, why: &str) {
        let c = &self.circuit;
        if !c.open.swap(true, Ordering::AcqRel) {
            c.pause_ms.store(millis(PROBE_MIN), Ordering::Release);
            c.next_probe_ms
                .store(c.since_epoch_ms() + millis(PROBE_MIN), Ordering::Release);
            c.fallbacks.store(0, Ordering::Relaxed);
            let fallback = match self.on_error {
                OnBackendError::Local => {
                    "limits now hold per instance (on_backend_error = \"local\")"
                }
                OnBackendError::Deny => {
                    "rate-limited requests are refused with 503 (on_backend_error = \"deny\")"
                }
                OnBackendError::Allow => {
                    "rate-limited requests pass uncounted (on_backend_error = \"allow\")"
                }
            };
            tracing::error!(
                reason = why,
                on_backend_error = self.on_error.name(),
                "rate limiting: Redis unreachable; {fallback} until it answers again"
            );
        }
    }

    /// A try failed while the circuit is open: wait longer before the next.
    fn reschedule(&self, why: &str) {
        let c = &self.circuit;
        let pause = (c.pause_ms.load(Ordering::Acquire) * 2).min(millis(PROBE_MAX));
        c.pause_ms.store(pause, Ordering::Release);
        c.next_probe_ms
            .store(c.since_epoch_ms() + pause, Ordering::Release);
        tracing::debug!(
            reason = why,
            next_try_ms = pause,
            "rate limiting: Redis still unreachable"
        );
    }

    /// A try succeeded: Redis decides again (logged once).
    fn close(&self) {
        let c = &self.circuit;
        if c.open.swap(false, Ordering::AcqRel) {
            tracing::warn!(
                decided_by_fallback = c.fallbacks.load(Ordering::Relaxed),
                "rate limiting: Redis answers again; shared limits resume"
            );
        }
    }
}

impl Circuit {
    fn since_epoch_ms(&self) -> u64 {
        millis(self.epoch.elapsed())
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// This instance's wall clock, shifted by the test-only offset, in ns since the epoch.
fn instance_now_ns(offset_ns: i64) -> i128 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128);
    now + i128::from(offset_ns)
}

/// A Redis error for the log: its kind and detail, never the URL or a password.
fn describe(e: &redis::RedisError) -> String {
    let kind = format!("{:?}", e.kind());
    match e.detail() {
        Some(detail) => format!("{kind}: {detail}"),
        None => kind,
    }
}

/// The Redis key of a bucket: `nestflux:rl:<policy>:<client>`.
pub fn redis_key(prefix: &str, key: &BucketKey) -> String {
    match key {
        BucketKey::V4(ip) => format!("{prefix}ip:{}", std::net::Ipv4Addr::from(*ip)),
        BucketKey::V6(net) => format!("{prefix}ip6:{net:016x}"),
        BucketKey::User(sub) => format!("{prefix}user:{sub}"),
        BucketKey::ApiKey(name) => format!("{prefix}key:{name}"),
        BucketKey::Overflow => format!("{prefix}overflow"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::ratelimit::{LimitKey, PolicyName};
    use governor::clock::FakeRelativeClock;
    use std::num::NonZeroU32;

    /// The Redis the suite may use (`TEST_REDIS_URL`, set by `.ci/services.sh`), or a loud
    /// skip where there is none.
    fn redis_url() -> Option<String> {
        let url = std::env::var("TEST_REDIS_URL")
            .ok()
            .filter(|u| !u.is_empty());
        if url.is_none() {
            eprintln!("SKIPPED: TEST_REDIS_URL is not set (see .ci/services.sh)");
        }
        url
    }

    fn policy(name: &str, period: Duration, burst: u32) -> RatePolicy {
        RatePolicy {
            name: PolicyName(name.into()),
            key: LimitKey::Ip,
            period,
            quota: NonZeroU32::MIN,
            window: Duration::from_secs(60),
            burst: NonZeroU32::new(burst).unwrap(),
        }
    }

    /// The same requests at the same instants get the same verdicts from both backends:
    /// each Redis decision reports Redis's clock, and the memory backend's fake clock is
    /// moved to that instant before it decides.
    #[tokio::test]
    async fn redis_and_memory_agree_to_the_nanosecond() {
        let Some(url) = redis_url() else { return };
        let run = uuid::Uuid::new_v4().simple().to_string();
        let policies = [
            policy(&format!("a{run}"), Duration::from_millis(40), 3),
            // A third of a second: not a whole number of microseconds.
            policy(&format!("b{run}"), Duration::from_secs(1) / 3, 2),
            policy(&format!("c{run}"), Duration::from_millis(7), 1),
            policy(&format!("d{run}"), Duration::from_millis(25), 6),
        ];
        let plan = RedisPlan {
            url,
            timeout: Duration::from_secs(1),
            on_error: OnBackendError::Deny,
        };
        let redis = RedisBackend::new(&plan, &policies, 0).unwrap();
        let clock = FakeRelativeClock::default();
        let memory = MemoryBackend::with_clock(&policies, clock.clone(), 1000);
        let keys = [
            BucketKey::V4(1),
            BucketKey::V6(2),
            BucketKey::User("alice".into()),
        ];
        let mut start: Option<Duration> = None;
        let mut moved = Duration::ZERO;
        let mut compared = (0, 0);
        // Bursts, then pauses of varied length (some shorter, some longer than a period).
        let pauses = [
            0u64, 0, 0, 0, 3, 11, 0, 0, 29, 41, 0, 5, 90, 0, 0, 0, 17, 350, 0, 0,
        ];
        for (step, pause) in pauses.iter().enumerate() {
            tokio::time::sleep(Duration::from_millis(*pause)).await;
            for (p, _) in policies.iter().enumerate() {
                for key in &keys {
                    let (from_redis, at) = redis.check_in_redis(PolicyId(p), key).await.unwrap();
                    let origin = *start.get_or_insert(at);
                    let elapsed = at - origin;
                    clock.advance(elapsed - moved);
                    moved = elapsed;
                    let from_memory = memory.check_now(PolicyId(p), key).unwrap();
                    assert_eq!(
                        from_redis, from_memory,
                        "step {step}, policy {p}, key {key:?}, at +{elapsed:?}"
                    );
                    if from_redis.allowed {
                        compared.0 += 1;
                    } else {
                        compared.1 += 1;
                    }
                }
            }
        }
        // Both outcomes were exercised.
        assert!(compared.0 > 20 && compared.1 > 20, "{compared:?}");
    }

    #[test]
    fn keys_name_the_policy_and_the_client() {
        let p = "nestflux:rl:global:";
        assert_eq!(
            redis_key(p, &BucketKey::V4(0xc000_0201)),
            "nestflux:rl:global:ip:192.0.2.1"
        );
        assert_eq!(
            redis_key(p, &BucketKey::V6(0x2001_0db8_0001_0002)),
            "nestflux:rl:global:ip6:20010db800010002"
        );
        assert_eq!(
            redis_key(p, &BucketKey::User("dev:alice".into())),
            "nestflux:rl:global:user:dev:alice"
        );
        assert_eq!(
            redis_key(p, &BucketKey::ApiKey("ci".into())),
            "nestflux:rl:global:key:ci"
        );
    }
}
