//! The in-memory backend: one keyed `governor` GCRA limiter per policy, a hard cap on keys
//! per policy, and a sweep that evicts idle keys.
//!
//! Memory stays bounded under a key flood two ways. The sweep (every [`SWEEP_EVERY`], on
//! its own thread) evicts keys whose bucket has refilled completely — evicting them is
//! indistinguishable from keeping them, so it never hands anyone extra requests. And a
//! policy never holds more than [`MAX_KEYS_PER_POLICY`] keys: once full, a new key is
//! counted in one shared overflow bucket (with the policy's own quota) until a sweep frees
//! room. Existing clients keep their own buckets; new clients during a flood share one —
//! degraded but served, instead of refused outright or memory growing without bound.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::{NoOpMiddleware, StateInformationMiddleware};
use governor::nanos::Nanos;
use governor::state::keyed::{DashMapStateStore, ShrinkableKeyedStateStore};
use governor::state::{NotKeyed, StateStore};
use governor::{Quota, RateLimiter};

use super::backend::{Backend, BackendError, PolicyId, Verdict};
use super::key::BucketKey;
use crate::plan::ratelimit::RatePolicy;

/// Keys one policy holds at most: 45–75 bytes each (`bench/ratelimit.rs`), so a policy
/// never holds more than about 15 MiB.
pub const MAX_KEYS_PER_POLICY: usize = 200_000;

/// How often idle keys are evicted.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);

type Keyed<C> = RateLimiter<BucketKey, CappedStore, C, StateInformationMiddleware>;

/// Buckets of every policy, in memory; clones share the same buckets.
pub struct MemoryBackend<C: Clock = DefaultClock> {
    inner: Arc<Inner<C>>,
}

impl<C: Clock> Clone for MemoryBackend<C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<C: Clock> {
    policies: Vec<Arc<Limiter<C>>>,
}

struct Limiter<C: Clock> {
    name: String,
    /// The policy's whole definition: a reload keeps this limiter (and its buckets) only
    /// for a policy defined the same.
    definition: String,
    keyed: Keyed<C>,
    period: Duration,
    burst: NonZeroU32,
    overflowed: Arc<AtomicU64>,
}

impl MemoryBackend<DefaultClock> {
    /// Limiters for `policies` (in [`PolicyId`] order) on the real clock, swept in the
    /// background for as long as the backend lives.
    pub fn new(policies: &[RatePolicy]) -> Self {
        let backend = Self::with_clock(policies, DefaultClock::default(), MAX_KEYS_PER_POLICY);
        if !policies.is_empty() {
            backend.spawn_sweeper(SWEEP_EVERY);
        }
        backend
    }

    /// Limiters for `policies` (a reloaded plan's), keeping this backend's limiter and its
    /// buckets for every policy whose name and definition did not change: a drained bucket
    /// stays drained across the reload. Returns the backend and the policies carried over.
    pub fn carry_over(&self, policies: &[RatePolicy]) -> (Self, Vec<String>) {
        let fresh = Self::with_clock(policies, DefaultClock::default(), MAX_KEYS_PER_POLICY);
        let mut kept = Vec::new();
        let limiters = fresh
            .inner
            .policies
            .iter()
            .map(|new| {
                match self
                    .inner
                    .policies
                    .iter()
                    .find(|old| old.name == new.name && old.definition == new.definition)
                {
                    Some(old) => {
                        kept.push(old.name.clone());
                        old.clone()
                    }
                    None => new.clone(),
                }
            })
            .collect();
        let backend = Self {
            inner: Arc::new(Inner { policies: limiters }),
        };
        if !policies.is_empty() {
            backend.spawn_sweeper(SWEEP_EVERY);
        }
        (backend, kept)
    }
}

impl<C: Clock + Clone> MemoryBackend<C> {
    /// Limiters on a given clock with a given key cap, not swept unless asked to.
    pub fn with_clock(policies: &[RatePolicy], clock: C, max_keys: usize) -> Self {
        let policies = policies
            .iter()
            .map(|p| {
                // The plan guarantees a non-zero period; the floor only keeps this total.
                let quota = Quota::with_period(p.period.max(Duration::from_nanos(1)))
                    .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
                    .allow_burst(p.burst);
                let overflowed = Arc::new(AtomicU64::new(0));
                let store = CappedStore {
                    map: DashMapStateStore::default(),
                    max_keys,
                    keys: AtomicUsize::new(0),
                    overflowed: overflowed.clone(),
                };
                Arc::new(Limiter {
                    name: p.name.0.clone(),
                    definition: format!("{p:?}"),
                    keyed: RateLimiter::<_, _, _, NoOpMiddleware<C::Instant>>::new(
                        quota,
                        store,
                        clock.clone(),
                    )
                    .with_middleware(),
                    period: p.period,
                    burst: p.burst,
                    overflowed,
                })
            })
            .collect();
        Self {
            inner: Arc::new(Inner { policies }),
        }
    }
}

impl<C: Clock> MemoryBackend<C> {
    /// Evicts keys whose bucket is full again, and gives memory back when many went.
    pub fn sweep(&self) {
        self.inner.sweep();
    }

    /// Keys currently held by `policy`.
    pub fn keys(&self, policy: PolicyId) -> usize {
        self.inner
            .policies
            .get(policy.0)
            .map_or(0, |l| l.keyed.len())
    }

    /// Counts one request synchronously (the memory backend never waits).
    pub fn check_now(&self, policy: PolicyId, key: &BucketKey) -> Result<Verdict, BackendError> {
        let limiter = self
            .inner
            .policies
            .get(policy.0)
            .ok_or(BackendError::UnknownPolicy(policy.0))?;
        Ok(limiter.check(key))
    }
}

impl<C: Clock> MemoryBackend<C>
where
    C: Send + Sync + 'static,
    C::Instant: Send + Sync,
{
    /// Sweeps every `every` on a thread that ends when the last clone of the backend drops.
    fn spawn_sweeper(&self, every: Duration) {
        let weak: Weak<Inner<C>> = Arc::downgrade(&self.inner);
        let spawned = std::thread::Builder::new()
            .name("nestflux-ratelimit-sweep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(every);
                    match weak.upgrade() {
                        Some(inner) => inner.sweep(),
                        None => break,
                    }
                }
            });
        if let Err(e) = spawned {
            // The key cap still bounds memory; only idle keys linger longer.
            tracing::warn!(error = %e, "rate limiting: could not start the idle-key sweeper");
        }
    }
}

impl<C: Clock> Inner<C> {
    fn sweep(&self) {
        for l in &self.policies {
            let before = l.keyed.len();
            l.keyed.retain_recent();
            let after = l.keyed.len();
            if after < before / 2 {
                l.keyed.shrink_to_fit();
            }
            let overflowed = l.overflowed.swap(0, Ordering::Relaxed);
            if overflowed > 0 {
                tracing::warn!(
                    policy = %l.name,
                    keys = after,
                    overflowed,
                    "rate limiting: key cap reached; new clients shared one bucket"
                );
            }
        }
    }
}

impl<C: Clock> Limiter<C> {
    fn check(&self, key: &BucketKey) -> Verdict {
        match self.keyed.check_key(key) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                // Each used cell refills in one period: an upper bound within one period
                // of the exact time (which governor does not expose).
                let used = self.burst.get().saturating_sub(remaining);
                Verdict {
                    allowed: true,
                    remaining,
                    reset: self.period.saturating_mul(used),
                    retry_after: Duration::ZERO,
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.keyed.clock().now());
                let refill_rest = self.period.saturating_mul(self.burst.get() - 1);
                Verdict {
                    allowed: false,
                    remaining: 0,
                    reset: wait.saturating_add(refill_rest),
                    retry_after: wait,
                }
            }
        }
    }
}

impl<C> Backend for MemoryBackend<C>
where
    C: Clock + Send + Sync + 'static,
    C::Instant: Send + Sync,
{
    fn check<'a>(
        &'a self,
        policy: PolicyId,
        key: &'a BucketKey,
    ) -> impl Future<Output = Result<Verdict, BackendError>> + Send + 'a {
        std::future::ready(self.check_now(policy, key))
    }
}

/// governor's DashMap store with a hard cap on keys; past it, new keys share
/// [`BucketKey::Overflow`].
struct CappedStore {
    map: DashMapStateStore<BucketKey>,
    max_keys: usize,
    /// Keys admitted since the last sweep recounted them; may overcount by concurrent
    /// inserts of the same key (so the cap errs on the early side), never undercount.
    keys: AtomicUsize,
    overflowed: Arc<AtomicU64>,
}

impl StateStore for CappedStore {
    type Key = BucketKey;

    fn measure_and_replace<T, F, E>(&self, key: &BucketKey, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        if let Some(state) = self.map.get(key) {
            return state.measure_and_replace(&NotKeyed::NonKey, f);
        }
        let room = self
            .keys
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_keys).then_some(n + 1)
            })
            .is_ok();
        let key = if room {
            key.clone()
        } else {
            self.overflowed.fetch_add(1, Ordering::Relaxed);
            BucketKey::Overflow
        };
        let state = self.map.entry(key).or_default();
        state.measure_and_replace(&NotKeyed::NonKey, f)
    }
}

impl ShrinkableKeyedStateStore<BucketKey> for CappedStore {
    fn retain_recent(&self, drop_below: Nanos) {
        ShrinkableKeyedStateStore::retain_recent(&self.map, drop_below);
        self.keys.store(self.map.len(), Ordering::Release);
    }

    fn shrink_to_fit(&self) {
        self.map.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::ratelimit::{LimitKey, PolicyName};
    use governor::clock::FakeRelativeClock;

    fn policy(name: &str, per_second: u32, burst: u32) -> RatePolicy {
        RatePolicy {
            name: PolicyName(name.into()),
            key: LimitKey::Ip,
            period: Duration::from_secs(1) / per_second,
            quota: NonZeroU32::new(per_second).unwrap(),
            window: Duration::from_secs(1),
            burst: NonZeroU32::new(burst).unwrap(),
        }
    }

    fn backend(
        policies: &[RatePolicy],
        max_keys: usize,
    ) -> (MemoryBackend<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        (
            MemoryBackend::with_clock(policies, clock.clone(), max_keys),
            clock,
        )
    }

    const P: PolicyId = PolicyId(0);

    fn key(n: u32) -> BucketKey {
        BucketKey::V4(n)
    }

    #[test]
    fn burst_then_steady_rate_exactly() {
        // 2 per second (one every 500 ms), burst 3.
        let (b, clock) = backend(&[policy("p", 2, 3)], 100);
        let k = key(1);
        for i in 0..3 {
            let v = b.check_now(P, &k).unwrap();
            assert!(v.allowed, "burst request {i}");
            assert_eq!(v.remaining, 2 - i);
        }
        let refused = b.check_now(P, &k).unwrap();
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        assert_eq!(refused.retry_after, Duration::from_millis(500));
        assert_eq!(refused.reset, Duration::from_millis(1500));
        // One nanosecond early is still refused; on the dot is admitted; exactly one.
        clock.advance(Duration::from_millis(500) - Duration::from_nanos(1));
        let early = b.check_now(P, &k).unwrap();
        assert!(!early.allowed);
        assert_eq!(early.retry_after, Duration::from_nanos(1));
        clock.advance(Duration::from_nanos(1));
        assert!(b.check_now(P, &k).unwrap().allowed);
        assert!(!b.check_now(P, &k).unwrap().allowed);
        // Steady state: exactly one per period for 10 periods.
        for _ in 0..10 {
            clock.advance(Duration::from_millis(500));
            assert!(b.check_now(P, &k).unwrap().allowed);
            assert!(!b.check_now(P, &k).unwrap().allowed);
        }
        // A long idle refills the burst, and no more than the burst.
        clock.advance(Duration::from_secs(60));
        let admitted = (0..10)
            .filter(|_| b.check_now(P, &k).unwrap().allowed)
            .count();
        assert_eq!(admitted, 3);
    }

    #[test]
    fn reset_counts_the_refill_of_used_cells() {
        let (b, clock) = backend(&[policy("p", 1, 5)], 100);
        let k = key(1);
        let first = b.check_now(P, &k).unwrap();
        assert_eq!((first.remaining, first.reset), (4, Duration::from_secs(1)));
        let second = b.check_now(P, &k).unwrap();
        assert_eq!(
            (second.remaining, second.reset),
            (3, Duration::from_secs(2))
        );
        clock.advance(Duration::from_secs(2));
        let after = b.check_now(P, &k).unwrap();
        assert_eq!((after.remaining, after.reset), (4, Duration::from_secs(1)));
    }

    #[test]
    fn buckets_are_per_key_and_per_policy() {
        let (b, _clock) = backend(&[policy("a", 1, 2), policy("b", 1, 1)], 100);
        for _ in 0..2 {
            assert!(b.check_now(P, &key(1)).unwrap().allowed);
        }
        assert!(!b.check_now(P, &key(1)).unwrap().allowed);
        // Another key in the same policy, and the same key in another policy, are untouched.
        assert!(b.check_now(P, &key(2)).unwrap().allowed);
        assert!(
            b.check_now(P, &BucketKey::User("alice".into()))
                .unwrap()
                .allowed
        );
        assert!(b.check_now(PolicyId(1), &key(1)).unwrap().allowed);
        assert!(!b.check_now(PolicyId(1), &key(1)).unwrap().allowed);
        assert!(b.check_now(PolicyId(9), &key(1)).is_err());
    }

    #[test]
    fn idle_keys_are_evicted_and_busy_ones_kept() {
        let (b, clock) = backend(&[policy("p", 10, 5)], 10_000);
        for n in 0..1000 {
            assert!(b.check_now(P, &key(n)).unwrap().allowed);
        }
        // Drain key 0 so its bucket needs time to refill.
        while b.check_now(P, &key(0)).unwrap().allowed {}
        assert_eq!(b.keys(P), 1000);
        clock.advance(Duration::from_millis(250));
        b.sweep();
        // Keys used once refilled after one period (100 ms) plus one of margin; key 0 needs 500 ms.
        assert_eq!(b.keys(P), 1);
        // Key 0 kept its state: 2 cells refilled in 250 ms, not a fresh burst of 5.
        let admitted = (0..10)
            .filter(|_| b.check_now(P, &key(0)).unwrap().allowed)
            .count();
        assert_eq!(admitted, 2);
        clock.advance(Duration::from_secs(1));
        b.sweep();
        assert_eq!(b.keys(P), 0);
    }

    #[test]
    fn past_the_key_cap_new_keys_share_one_bucket() {
        let (b, clock) = backend(&[policy("p", 1, 2)], 3);
        for n in 0..3 {
            assert!(b.check_now(P, &key(n)).unwrap().allowed);
        }
        // Keys 100.. overflow into one shared bucket of burst 2.
        assert!(b.check_now(P, &key(100)).unwrap().allowed);
        assert!(b.check_now(P, &key(101)).unwrap().allowed);
        assert!(!b.check_now(P, &key(102)).unwrap().allowed);
        assert_eq!(b.keys(P), 4, "three keys and the overflow bucket");
        // Existing keys keep their own buckets.
        assert!(b.check_now(P, &key(0)).unwrap().allowed);
        assert!(!b.check_now(P, &key(0)).unwrap().allowed);
        // Once the sweep frees room, new keys get their own bucket again.
        clock.advance(Duration::from_secs(10));
        b.sweep();
        assert_eq!(b.keys(P), 0);
        assert!(b.check_now(P, &key(102)).unwrap().allowed);
        assert!(b.check_now(P, &key(102)).unwrap().allowed);
        assert!(!b.check_now(P, &key(102)).unwrap().allowed);
        assert!(b.check_now(P, &key(103)).unwrap().allowed);
    }
}
