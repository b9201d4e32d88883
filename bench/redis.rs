//! The cost of one rate-limit decision in Redis against the in-memory backend, measured in
//! the same run on one machine: the memory backend (the baseline), the Redis backend one
//! request at a time (a round trip to Redis on 127.0.0.1 per decision), the Redis backend
//! with 64 decisions in flight on one connection (how a busy instance uses it), and a dead
//! Redis (circuit open: the local fallback decides without waiting).
//!
//! Run: `TEST_REDIS_URL=redis://127.0.0.1:56379/0 cargo bench --bench redis` (the URL of a
//! running Redis; `.ci/services.sh` starts one). Without it the bench says so and exits.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use nestflux::plan::ratelimit::{LimitKey, OnBackendError, PolicyName, RatePolicy, RedisPlan};
use nestflux::ratelimit::{BucketKey, MemoryBackend, PolicyId, RedisBackend};

const P: PolicyId = PolicyId(0);
const KEYS: u32 = 10_000;

fn policy(name: &str) -> RatePolicy {
    // Generous: the bench measures the decision, most requests are admitted.
    RatePolicy {
        name: PolicyName(name.into()),
        key: LimitKey::Ip,
        period: Duration::from_millis(1),
        quota: NonZeroU32::new(1000).unwrap(),
        window: Duration::from_secs(1),
        burst: NonZeroU32::new(1000).unwrap(),
    }
}

/// Median of 5 runs of `ops` decisions, in ns per decision.
fn median(mut runs: Vec<f64>) -> f64 {
    runs.sort_by(f64::total_cmp);
    runs[runs.len() / 2]
}

fn main() {
    let Some(url) = std::env::var("TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        eprintln!(
            "redis bench SKIPPED: set TEST_REDIS_URL to a running Redis (see .ci/services.sh)"
        );
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(url));
}

async fn run(url: String) {
    let name = format!("bench{}", std::process::id());
    let policies = [policy(&name)];
    let plan = RedisPlan {
        url,
        timeout: Duration::from_secs(1),
        on_error: OnBackendError::Deny,
    };
    let redis = RedisBackend::new(&plan, &policies, 0).unwrap();
    assert!(
        redis.connect(Duration::from_secs(2)).await,
        "Redis did not answer"
    );
    let memory = MemoryBackend::new(&policies);
    let key = |i: u32| BucketKey::V4(i % KEYS);

    // Baseline: the memory backend.
    let ops = 1_000_000u32;
    let mem_ns = median(
        (0..5)
            .map(|_| {
                let t = Instant::now();
                for i in 0..ops {
                    black_box(memory.check_now(P, &key(i)).unwrap());
                }
                t.elapsed().as_nanos() as f64 / f64::from(ops)
            })
            .collect(),
    );

    // Redis, one decision at a time: the latency a lone request pays.
    let ops = 20_000u32;
    let mut runs = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        for i in 0..ops {
            let v = redis.check(P, &key(i)).await.unwrap();
            black_box(v);
        }
        runs.push(t.elapsed().as_nanos() as f64 / f64::from(ops));
    }
    let seq_ns = median(runs);

    // Redis, 64 decisions in flight on the one multiplexed connection.
    let batch = 64u32;
    let batches = 1_000u32;
    let mut runs = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        for b in 0..batches {
            let all = join_all((0..batch).map(|i| {
                let k = key(b * batch + i);
                let redis = &redis;
                async move { redis.check(P, &k).await.unwrap() }
            }))
            .await;
            black_box(all);
        }
        runs.push(t.elapsed().as_nanos() as f64 / f64::from(batch * batches));
    }
    let par_ns = median(runs);
    assert!(redis.is_healthy(), "Redis failed during the bench");

    // A dead Redis (nothing listens): once the circuit is open, the local buckets decide.
    let dead = RedisPlan {
        url: "redis://127.0.0.1:1/0".into(),
        timeout: Duration::from_millis(50),
        on_error: OnBackendError::Local,
    };
    let down = RedisBackend::new(&dead, &policies, 0).unwrap();
    down.connect(Duration::from_millis(200)).await;
    assert!(!down.is_healthy());
    let ops = 1_000_000u32;
    let mut runs = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        for i in 0..ops {
            black_box(down.check(P, &key(i)).await.unwrap());
        }
        runs.push(t.elapsed().as_nanos() as f64 / f64::from(ops));
    }
    let down_ns = median(runs);

    println!("rate-limit decision cost, one machine (2 cores), Redis on 127.0.0.1, {KEYS} keys");
    println!(
        "{:<52} {:>12} {:>14}",
        "backend", "per decision", "vs memory"
    );
    let row = |label: &str, ns: f64| {
        let per = if ns >= 1000.0 {
            format!("{:.1} µs", ns / 1000.0)
        } else {
            format!("{ns:.0} ns")
        };
        println!("{label:<52} {per:>12} {:>13.1}x", ns / mem_ns);
    };
    row("memory (governor), baseline", mem_ns);
    row("redis, one at a time (round trip per decision)", seq_ns);
    row("redis, 64 in flight on one connection", par_ns);
    row("redis down, circuit open: local fallback decides", down_ns);
    println!(
        "redis throughput on one connection, 64 in flight: {:.0} decisions/s",
        1e9 / par_ns
    );
}
