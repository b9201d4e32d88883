//! Rate limiting over real HTTP against the real binary: burst then 429 problem+json with
//! `Retry-After` and the IETF `RateLimit` fields, 404s counted by the global policy,
//! forwarded headers believed only from trusted proxies, route policies after routing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{MINIMAL, Project, client};
use reqwest::StatusCode;
use reqwest::blocking::{RequestBuilder, Response};
use serde_json::Value;

fn header<'a>(res: &'a Response, name: &str) -> Option<&'a str> {
    res.headers().get(name).and_then(|v| v.to_str().ok())
}

/// A config with a `global` policy of `burst` requests replenished one per minute (so no
/// request in a test is ever refilled), plus `extra` config.
fn config(burst: u32, extra: &str) -> String {
    format!("{extra}\n[rate_limits.global]\nper_minute = 1\nburst = {burst}\n{MINIMAL}")
}

fn status(req: RequestBuilder) -> StatusCode {
    req.send().expect("request").status()
}

/// Asserts a 429 problem document and returns its `Retry-After`.
fn assert_rate_limited(res: Response) -> u64 {
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        header(&res, "content-type"),
        Some("application/problem+json")
    );
    let retry: u64 = header(&res, "retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in whole seconds");
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    assert!(header(&res, "x-request-id").is_some());
    assert_eq!(header(&res, "x-content-type-options"), Some("nosniff"));
    let body: Value = res.json().expect("problem body");
    assert_eq!(body["status"], 429);
    assert_eq!(body["type"], "urn:nestflux:problem:rate-limited");
    assert_eq!(body["title"], "Too Many Requests");
    retry
}

#[test]
fn burst_is_admitted_then_429_with_retry_after_and_ratelimit_fields() {
    let p = Project::new(&config(3, ""));
    let s = p.serve(&[]);
    let c = client();
    for (remaining, reset) in [(2, 60), (1, 120), (0, 180)] {
        let res = c.get(s.url("/health")).send().unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            header(&res, "ratelimit-policy"),
            Some(r#""global";q=1;w=60"#)
        );
        assert_eq!(
            header(&res, "ratelimit"),
            Some(format!(r#""global";r={remaining};t={reset}"#).as_str())
        );
        assert_eq!(header(&res, "retry-after"), None);
    }
    let res = c.get(s.url("/health")).send().unwrap();
    assert_eq!(
        header(&res, "ratelimit-policy"),
        Some(r#""global";q=1;w=60"#)
    );
    let state = header(&res, "ratelimit").unwrap_or_default().to_string();
    assert!(state.starts_with(r#""global";r=0;t="#), "{state}");
    let retry = assert_rate_limited(res);
    assert_eq!(retry, 60, "one 60 s period until the next request");
}

#[test]
fn the_global_policy_counts_and_limits_unknown_paths() {
    let p = Project::new(&config(2, ""));
    let s = p.serve(&[]);
    let c = client();
    let res = c.get(s.url("/nope")).send().unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(header(&res, "ratelimit"), Some(r#""global";r=1;t=60"#));
    assert_eq!(status(c.post(s.url("/also/nope"))), StatusCode::NOT_FOUND);
    assert_rate_limited(c.get(s.url("/nope")).send().unwrap());
    // The same bucket covers real routes.
    assert_rate_limited(c.get(s.url("/health")).send().unwrap());
}

#[test]
fn a_spoofed_forwarded_header_from_an_untrusted_peer_does_not_change_the_bucket() {
    // 127.0.0.1 is not a trusted proxy: X-Forwarded-For and Forwarded are ignored.
    let p = Project::new(&config(2, ""));
    let s = p.serve(&[]);
    let c = client();
    let spoof = |n: u32| {
        c.get(s.url("/health"))
            .header("x-forwarded-for", format!("198.51.100.{n}"))
            .header("forwarded", format!("for=203.0.113.{n}"))
    };
    assert_eq!(status(spoof(1)), StatusCode::OK);
    assert_eq!(status(spoof(2)), StatusCode::OK);
    assert_rate_limited(spoof(3).send().unwrap());
    assert_rate_limited(c.get(s.url("/health")).send().unwrap());
}

#[test]
fn clients_behind_a_trusted_proxy_get_their_own_buckets() {
    let p = Project::new(&config(1, "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]"));
    let s = p.serve(&[]);
    let c = client();
    let xff = |v: &str| c.get(s.url("/health")).header("x-forwarded-for", v);
    let fwd = |v: &str| c.get(s.url("/health")).header("forwarded", v);

    assert_eq!(status(xff("198.51.100.1")), StatusCode::OK);
    assert_rate_limited(xff("198.51.100.1").send().unwrap());
    assert_eq!(status(xff("198.51.100.2")), StatusCode::OK);
    // Rightmost untrusted: a client-written entry to the left changes nothing.
    assert_rate_limited(xff("203.0.113.50, 198.51.100.2").send().unwrap());
    // A trusted hop to the right is skipped.
    assert_rate_limited(xff("198.51.100.1, 127.0.0.1").send().unwrap());
    // RFC 7239, quoted IPv6 with port; the same /64 shares a bucket.
    assert_eq!(
        status(fwd(r#"for="[2001:db8:1:2::1]:4711""#)),
        StatusCode::OK
    );
    assert_rate_limited(fwd(r#"for="[2001:db8:1:2::99]""#).send().unwrap());
    assert_eq!(status(fwd(r#"for="[2001:db8:1:3::1]""#)), StatusCode::OK);
    // No header: the proxy itself, its own bucket.
    assert_eq!(status(c.get(s.url("/health"))), StatusCode::OK);
    assert_rate_limited(c.get(s.url("/health")).send().unwrap());
    // Garbage falls back to the proxy's bucket, which is now empty.
    assert_rate_limited(xff("not an address").send().unwrap());
}

#[test]
fn a_route_policy_counts_after_routing_and_reports_beside_global() {
    let route_limited = MINIMAL.replace("public = true", "public = true\nrate_limit = \"health\"");
    let p = Project::new(&format!(
        "[rate_limits.global]\nper_second = 100\nburst = 100\n\
         [rate_limits.health]\nper_minute = 1\nburst = 2\n{route_limited}"
    ));
    let s = p.serve(&[]);
    let c = client();
    let res = c.get(s.url("/health")).send().unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        header(&res, "ratelimit-policy"),
        Some(r#""global";q=100;w=1, "health";q=1;w=60"#)
    );
    assert_eq!(
        header(&res, "ratelimit"),
        Some(r#""global";r=99;t=1, "health";r=1;t=60"#)
    );
    assert_eq!(status(c.get(s.url("/health"))), StatusCode::OK);
    let res = c.get(s.url("/health")).send().unwrap();
    let state = header(&res, "ratelimit").unwrap_or_default().to_string();
    assert!(state.contains(r#""health";r=0;t="#), "{state}");
    assert_rate_limited(res);
    // Unknown paths only meet the global policy.
    let res = c.get(s.url("/nope")).send().unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        header(&res, "ratelimit-policy"),
        Some(r#""global";q=100;w=1"#)
    );
}

#[test]
fn route_policies_count_each_user_and_api_key_in_its_own_bucket() {
    let (ci, ci_hash) = common::new_api_key("ci");
    let (ops, ops_hash) = common::new_api_key("ops");
    let p = Project::new(&format!(
        r#"
# API keys need no provider; an unreachable issuer only makes bearer tokens fail.
[auth]
issuer = "http://127.0.0.1:9"
audience = "urn:nestflux:api"

[auth.api_keys.ci]
hash = "{ci_hash}"
roles = ["viewer"]

[auth.api_keys.ops]
hash = "{ops_hash}"
roles = ["viewer"]

[roles.viewer]
permissions = ["notes:read"]

[rate_limits.by_user]
key = "user"
per_minute = 1
burst = 2

[rate_limits.by_key]
key = "api_key"
per_minute = 1
burst = 1

[[routes]]
method = "GET"
path = "/api/me"
action = "whoami"
authenticated = true
rate_limit = "by_user"

[[routes]]
method = "GET"
path = "/api/key"
action = "whoami"
authenticated = true
rate_limit = "by_key"
"#
    ));
    let s = p.serve(&[]);
    let c = client();
    let get = |path: &str, key: &str| c.get(s.url(path)).bearer_auth(key);

    assert_eq!(status(get("/api/me", &ci)), StatusCode::OK);
    let res = get("/api/me", &ci).send().unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "ratelimit"), Some(r#""by_user";r=0;t=120"#));
    assert_rate_limited(get("/api/me", &ci).send().unwrap());
    // Another caller from the same address has its own bucket.
    assert_eq!(status(get("/api/me", &ops)), StatusCode::OK);
    // Authentication runs first: a bad or missing credential is 401, never a 429.
    assert_eq!(
        status(get("/api/me", "nfk_not-a-real-key")),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(status(c.get(s.url("/api/me"))), StatusCode::UNAUTHORIZED);

    assert_eq!(status(get("/api/key", &ci)), StatusCode::OK);
    assert_rate_limited(get("/api/key", &ci).send().unwrap());
    assert_eq!(status(get("/api/key", &ops)), StatusCode::OK);
    assert_rate_limited(get("/api/key", &ops).send().unwrap());
}
