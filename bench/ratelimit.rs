//! The rate limiter's cost per request against a plain `HashMap` update measured in the
//! same run, and resident memory after 100k distinct keys and after their eviction.
//! Run: `cargo bench --bench ratelimit`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use futures_util::FutureExt;
use governor::clock::FakeRelativeClock;
use nestflux::plan::ratelimit::{LimitBackend, LimitKey, PolicyName, RateLimitsPlan, RatePolicy};
use nestflux::ratelimit::memory::MAX_KEYS_PER_POLICY;
use nestflux::ratelimit::{BucketKey, MemoryBackend, PolicyId, RateLimits};

const OPS: u32 = 2_000_000;
const KEYS: u32 = 100_000;
const P: PolicyId = PolicyId(0);

fn policy(period: Duration, burst: u32) -> RatePolicy {
    RatePolicy {
        name: PolicyName("global".into()),
        key: LimitKey::Ip,
        period,
        quota: NonZeroU32::new(100).unwrap(),
        window: Duration::from_secs(1),
        burst: NonZeroU32::new(burst).unwrap(),
    }
}

/// Median ns per op over 5 runs of `OPS` calls.
fn ns_per_op(mut f: impl FnMut(u32)) -> f64 {
    let mut runs: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            for i in 0..OPS {
                f(i);
            }
            t.elapsed().as_nanos() as f64 / f64::from(OPS)
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[2]
}

/// Resident set size in bytes, from /proc/self/statm.
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn mib(bytes: i64) -> String {
    format!("{:+.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn main() {
    println!("rate limiter, {OPS} ops per run, median of 5 runs\n");
    println!("{:<52} {:>10} {:>9}", "scenario", "ns/op", "× base");

    // Baseline: the least a keyed counter can do — one std HashMap update.
    let mut map: HashMap<u32, u64> = HashMap::new();
    let base = ns_per_op(|i| {
        *map.entry(black_box(7)).or_default() += u64::from(i);
    });
    black_box(&map);
    let row = |name: &str, ns: f64| println!("{name:<52} {ns:>10.1} {:>9.2}", ns / base);
    row("baseline: HashMap<u32,u64> update, hot key", base);

    let hot = BucketKey::ip(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
    // Allowed every time: 1 ns period, huge burst.
    let open = MemoryBackend::with_clock(
        &[policy(Duration::from_nanos(1), 1_000_000_000)],
        FakeRelativeClock::default(),
        MAX_KEYS_PER_POLICY,
    );
    row(
        "governor check, hot key, allowed",
        ns_per_op(|_| {
            black_box(open.check_now(P, black_box(&hot)).ok());
        }),
    );
    // Refused every time after the first.
    let shut = MemoryBackend::with_clock(
        &[policy(Duration::from_secs(3600), 1)],
        FakeRelativeClock::default(),
        MAX_KEYS_PER_POLICY,
    );
    row(
        "governor check, hot key, refused",
        ns_per_op(|_| {
            black_box(shut.check_now(P, black_box(&hot)).ok());
        }),
    );

    // The whole per-request path of the global policy: client ip through a trusted proxy,
    // key, check, RateLimit item rendering.
    let mut policies = std::collections::BTreeMap::new();
    let p = policy(Duration::from_nanos(1), 1_000_000_000);
    policies.insert(p.name.clone(), p.clone());
    let plan = RateLimitsPlan {
        backend: LimitBackend::Memory,
        policies,
        default_auth_failures: false,
    };
    let trusted = ["10.0.0.0/8".parse().unwrap()];
    let limits = RateLimits::new(
        &plan,
        &trusted,
        MemoryBackend::with_clock(&[p], FakeRelativeClock::default(), MAX_KEYS_PER_POLICY),
    );
    let mut headers = HeaderMap::new();
    headers.insert(
        HeaderName::from_static("x-forwarded-for"),
        HeaderValue::from_static("203.0.113.9, 198.51.100.1, 10.0.0.7"),
    );
    let peer = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    let direct = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));
    row(
        "request path: untrusted peer, check, header item",
        ns_per_op(|_| {
            let ip = limits.client_ip(black_box(direct), &headers);
            let out = limits.check(P, &BucketKey::ip(ip)).now_or_never();
            black_box(out.map(|r| r.is_ok()));
        }),
    );
    row(
        "request path: via trusted proxy (XFF, 3 hops)",
        ns_per_op(|_| {
            let ip = limits.client_ip(black_box(peer), &headers);
            let out = limits.check(P, &BucketKey::ip(ip)).now_or_never();
            black_box(out.map(|r| r.is_ok()));
        }),
    );
    row(
        "client ip only: via trusted proxy (XFF, 3 hops)",
        ns_per_op(|_| {
            black_box(limits.client_ip(black_box(peer), &headers));
        }),
    );

    // Memory: 100k distinct keys, then eviction once their buckets refilled.
    println!("\nmemory (RSS from /proc/self/statm)\n");
    println!("{:<52} {:>10} {:>9}", "step", "RSS delta", "keys");
    for (label, make) in [
        (
            "ipv4 keys",
            (|n: u32| BucketKey::V4(n)) as fn(u32) -> BucketKey,
        ),
        ("user keys (\"user-<n>\")", |n: u32| {
            BucketKey::User(format!("user-{n}").into())
        }),
    ] {
        let clock = FakeRelativeClock::default();
        let b = MemoryBackend::with_clock(
            &[policy(Duration::from_millis(10), 10)],
            clock.clone(),
            MAX_KEYS_PER_POLICY,
        );
        let before = rss() as i64;
        let t = Instant::now();
        for n in 0..KEYS {
            black_box(b.check_now(P, &make(n)).ok());
        }
        let fill = t.elapsed();
        let grown = rss() as i64 - before;
        println!(
            "{:<52} {:>10} {:>9}   ({:.0} B/key, {:.0} ns/new key)",
            format!("{label}: after {KEYS} distinct keys"),
            mib(grown),
            b.keys(P),
            grown as f64 / f64::from(KEYS),
            fill.as_nanos() as f64 / f64::from(KEYS),
        );
        clock.advance(Duration::from_secs(1));
        let t = Instant::now();
        b.sweep();
        let swept = t.elapsed();
        println!(
            "{:<52} {:>10} {:>9}   (sweep {:.1} ms)",
            format!("{label}: after eviction"),
            mib(rss() as i64 - before),
            b.keys(P),
            swept.as_secs_f64() * 1000.0,
        );
    }

    // A flood past the cap: memory stops at the cap.
    let b = MemoryBackend::with_clock(
        &[policy(Duration::from_secs(1), 10)],
        FakeRelativeClock::default(),
        MAX_KEYS_PER_POLICY,
    );
    let before = rss() as i64;
    let flood = 3 * MAX_KEYS_PER_POLICY as u32;
    for n in 0..flood {
        black_box(b.check_now(P, &BucketKey::V4(n)).ok());
    }
    println!(
        "{:<52} {:>10} {:>9}",
        format!("flood of {flood} keys, none idle (cap {MAX_KEYS_PER_POLICY})"),
        mib(rss() as i64 - before),
        b.keys(P),
    );
}
