//! The `metrics` action: after a known sequence of requests (200s, 404s, a refused token,
//! a missing credential, a 403, a write, a 429) the scrape, read by an independent
//! Prometheus text parser (`prometheus-parse`), holds exactly those counts. The route is
//! protected like any other (401 without credentials), documented in OpenAPI, and `check`
//! refuses a public one in production.

use crate::common::{self, Project, client};
use crate::fixtures::Notes;
use prometheus_parse::{Sample, Scrape, Value};
use reqwest::StatusCode;
use serde_json::json;

/// The notes fixture with the reference permissions, the development issuer, a `writes`
/// policy of two writes, and a metrics route for an `ops` role that only an API key holds.
fn config(scraper_hash: &str) -> String {
    Notes::new().reference_access().to_string()
        + r#"
[auth.dev]
enabled = true

[roles.viewer]
permissions = ["notes:read"]

[roles.editor]
inherits = ["viewer"]
permissions = ["notes:create"]

[roles.ops]
permissions = ["metrics:read"]

[rate_limits.writes]
key = "user"
per_minute = 1
burst = 2

[[routes]]
method = "GET"
path = "/health"
action = "health"
public = true

[[routes]]
method = "GET"
path = "/metrics"
action = "metrics"
permission = "metrics:read"

[[routes]]
method = "GET"
path = "/openapi.json"
action = "openapi"
public = true
"# + &common::api_key_table("scraper", scraper_hash, "ops")
}

/// One series: the samples named `name` whose labels include every pair of `labels`.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<&Sample> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .collect();
    assert!(found.len() <= 1, "{name} {labels:?}: {found:?}");
    found.first().map(|s| match &s.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        other => panic!("{name}: {other:?}"),
    })
}

fn count(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    value(scrape, name, labels).unwrap_or(0.0)
}

/// The sum of every series of a counter.
fn total(scrape: &Scrape, name: &str) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .map(|s| match s.value {
            Value::Counter(v) => v,
            _ => panic!("{s:?}"),
        })
        .sum()
}

#[test]
fn a_known_sequence_of_requests_is_counted_exactly() {
    let (key, hash) = common::new_api_key("scraper");
    let project = Project::new(&config(&hash));
    let mint = |sub: &str, role: &str| {
        let out = project.run(
            &["token", "--sub", sub, "--role", role, "--ttl", "10m"],
            &[],
        );
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let (viewer, editor) = (mint("vera", "viewer"), mint("eddie", "editor"));
    // The same token with its signature's first character changed: well formed, bad signature.
    let forged = {
        let (head, sig) = editor.rsplit_once('.').unwrap();
        let first = if sig.starts_with('A') { 'B' } else { 'A' };
        format!("{head}.{first}{}", &sig[1..])
    };
    let server = project.serve(&[]);
    let c = client();
    let get = |path: &str, token: Option<&str>| {
        let mut req = c.get(server.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().unwrap().status()
    };
    let post = |token: &str| {
        c.post(server.url("/api/notes"))
            .bearer_auth(token)
            .json(&json!({ "title": "counted" }))
            .send()
            .unwrap()
            .status()
    };

    for _ in 0..3 {
        assert_eq!(get("/health", None), StatusCode::OK);
    }
    assert_eq!(get("/nope", None), StatusCode::NOT_FOUND);
    assert_eq!(get("/api/nope/deeper", None), StatusCode::NOT_FOUND);
    assert_eq!(get("/api/notes", Some(&forged)), StatusCode::UNAUTHORIZED);
    assert_eq!(get("/api/notes", None), StatusCode::UNAUTHORIZED);
    assert_eq!(post(&viewer), StatusCode::FORBIDDEN);
    assert_eq!(post(&editor), StatusCode::CREATED);
    assert_eq!(post(&editor), StatusCode::CREATED);
    assert_eq!(post(&editor), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(get("/api/notes", Some(&viewer)), StatusCode::OK);
    assert_eq!(get("/metrics", None), StatusCode::UNAUTHORIZED);

    let res = c
        .get(server.url("/metrics"))
        .header("x-api-key", &key)
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert_eq!(res.headers()["cache-control"], "no-store");
    let text = res.text().unwrap();
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();

    // Requests by route template, method and status; unknown paths share one label value.
    let requests = "nestflux_http_requests_total";
    let req = |route: &str, method: &str, status: &str| {
        count(
            &scrape,
            requests,
            &[("route", route), ("method", method), ("status", status)],
        )
    };
    assert_eq!(req("/health", "GET", "200"), 3.0, "{text}");
    assert_eq!(req("unmatched", "GET", "404"), 2.0, "{text}");
    assert_eq!(req("/api/notes", "GET", "401"), 2.0, "{text}");
    assert_eq!(req("/api/notes", "GET", "200"), 1.0, "{text}");
    assert_eq!(req("/api/notes", "POST", "403"), 1.0, "{text}");
    assert_eq!(req("/api/notes", "POST", "201"), 2.0, "{text}");
    assert_eq!(req("/api/notes", "POST", "429"), 1.0, "{text}");
    assert_eq!(req("/metrics", "GET", "401"), 1.0, "{text}");
    // The scrape itself is counted once it is answered, so not in its own body.
    assert_eq!(req("/metrics", "GET", "200"), 0.0, "{text}");
    assert_eq!(
        total(&scrape, requests),
        13.0,
        "every request before the scrape, once: {text}"
    );
    assert!(!text.contains("/nope"), "raw paths never become labels");

    // Latency histograms by route template and method: one observation per request.
    let latency = |route: &str, method: &str| {
        count(
            &scrape,
            "nestflux_http_request_duration_seconds_count",
            &[("route", route), ("method", method)],
        )
    };
    assert_eq!(latency("/api/notes", "POST"), 4.0, "{text}");
    assert_eq!(latency("/health", "GET"), 3.0, "{text}");
    let buckets = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "nestflux_http_request_duration_seconds"
                && s.labels.get("route") == Some("/health")
        })
        .map(|s| s.value.clone());
    match buckets {
        Some(Value::Histogram(b)) => {
            let inf = b.iter().find(|h| h.less_than.is_infinite()).unwrap();
            assert_eq!(inf.count, 3.0, "{b:?}");
        }
        other => panic!("no /health histogram: {other:?}\n{text}"),
    }

    // Authentication: five development-issuer callers and the scraper's key accepted; the
    // forged signature and two requests without credentials refused.
    let accepted = |kind: &str| count(&scrape, "nestflux_auth_accepted_total", &[("kind", kind)]);
    assert_eq!(accepted("dev"), 5.0, "{text}");
    assert_eq!(accepted("api_key"), 1.0, "{text}");
    let refused = |why: &str| count(&scrape, "nestflux_auth_refused_total", &[("reason", why)]);
    assert_eq!(refused("signature"), 1.0, "{text}");
    assert_eq!(refused("missing"), 2.0, "{text}");
    // Authorization: the viewer's write.
    assert_eq!(
        count(
            &scrape,
            "nestflux_authz_denied_total",
            &[("route", "/api/notes"), ("method", "POST")]
        ),
        1.0,
        "{text}"
    );

    // Rate limits: `writes` counts each POST after authentication (the viewer's too, before
    // authorization): three let through, one refused; `auth_failures` charged once.
    let decision = |policy: &str, d: &str| {
        count(
            &scrape,
            "nestflux_rate_limit_decisions_total",
            &[("policy", policy), ("decision", d)],
        )
    };
    assert_eq!(decision("writes", "allowed"), 3.0, "{text}");
    assert_eq!(decision("writes", "limited"), 1.0, "{text}");
    assert_eq!(decision("auth_failures", "allowed"), 1.0, "{text}");
    assert_eq!(decision("auth_failures", "limited"), 0.0, "{text}");

    // Token cache: each token verified in full once (the forged one, the viewer's, the
    // editor's), every later use answered from memory.
    assert_eq!(
        count(&scrape, "nestflux_token_cache_misses_total", &[]),
        3.0,
        "{text}"
    );
    assert_eq!(
        count(&scrape, "nestflux_token_cache_hits_total", &[]),
        3.0,
        "{text}"
    );

    // Database: the two notes were committed (audit events share the writer's batches, so
    // batches hold at least those two writes); the pool is sampled at scrape time.
    let batches = count(&scrape, "nestflux_db_commit_batch_size_count", &[]);
    let writes = count(&scrape, "nestflux_db_commit_batch_size_sum", &[]);
    assert!(
        batches >= 1.0 && writes >= 2.0,
        "{batches} {writes}\n{text}"
    );
    assert_eq!(
        count(&scrape, "nestflux_db_commit_duration_seconds_count", &[]),
        batches,
        "{text}"
    );
    assert!(
        value(&scrape, "nestflux_db_writer_queue_depth", &[]).is_some(),
        "{text}"
    );
    assert!(
        count(&scrape, "nestflux_db_pool_connections", &[]) >= 1.0,
        "{text}"
    );

    // Nothing decrypted badly, nothing reloaded, no issuer to refresh; the loaded file's hash.
    assert_eq!(total(&scrape, "nestflux_decryption_failures_total"), 0.0);
    assert_eq!(total(&scrape, "nestflux_plan_reloads_total"), 0.0);
    assert_eq!(total(&scrape, "nestflux_jwks_refreshes_total"), 0.0);
    let info: Vec<&Sample> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "nestflux_config_info")
        .collect();
    assert_eq!(info.len(), 1, "{text}");
    assert_eq!(info[0].value, Value::Gauge(1.0));
    let hash = info[0].labels.get("config_hash").unwrap();
    assert!(hash.starts_with("sha256:") && hash.len() == 71, "{hash}");

    // The next scrape counts the first one.
    let again = c
        .get(server.url("/metrics"))
        .header("x-api-key", &key)
        .send()
        .unwrap()
        .text()
        .unwrap();
    let again = Scrape::parse(again.lines().map(|l| Ok(l.to_string()))).unwrap();
    assert_eq!(
        count(
            &again,
            requests,
            &[("route", "/metrics"), ("method", "GET"), ("status", "200")]
        ),
        1.0
    );
}

#[test]
fn the_metrics_route_needs_credentials_and_is_documented() {
    let (_, hash) = common::new_api_key("scraper");
    let project = Project::new(&config(&hash));
    let server = project.serve(&[]);
    let c = client();
    let res = c.get(server.url("/metrics")).send().unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(res.headers()["www-authenticate"], "Bearer");
    let res = c
        .get(server.url("/metrics"))
        .header("x-api-key", "nfk_not_a_declared_key")
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    let doc: serde_json::Value = c
        .get(server.url("/openapi.json"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let op = &doc["paths"]["/metrics"]["get"];
    assert!(
        op["responses"]["200"]["content"]["text/plain"]["schema"]["type"] == "string",
        "{op}"
    );
    assert!(op["responses"]["401"].is_object(), "{op}");
    assert!(op["responses"]["403"].is_object(), "{op}");
    assert!(!op["security"].as_array().unwrap().is_empty(), "{op}");
}

#[test]
fn a_public_metrics_route_is_a_warning_in_development_and_an_error_in_production() {
    let public = Notes::new().to_string()
        + "\n[[routes]]\nmethod = \"GET\"\npath = \"/metrics\"\naction = \"metrics\"\npublic = true\n";
    let project = Project::new(&public);
    let found = |env: &[(&str, &str)]| {
        let out = project.run(&["check", "--format", "json"], env);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let severity: Vec<String> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|d| d["code"] == "public-metrics" && d["path"] == "routes[5].public")
            .map(|d| d["severity"].as_str().unwrap_or_default().to_string())
            .collect();
        (out.status.success(), severity, text)
    };
    let (ok, severity, text) = found(&[]);
    assert!(ok, "{text}");
    assert_eq!(severity, ["warning"], "{text}");
    let (ok, severity, text) = found(&[("NESTFLUX_PROFILE", "production")]);
    assert!(!ok, "{text}");
    assert_eq!(severity, ["error"], "{text}");
}

#[test]
fn key_refreshes_are_counted_by_issuer_and_result() {
    use crate::oidc::{AUD, Provider, free_port, nestflux_config};
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let (key, hash) = common::new_api_key("ci");
    // Nothing listens on `port` yet: the first fetches fail.
    let project = Project::new(
        &(nestflux_config(&issuer, AUD, &hash)
            + "\n[[routes]]\nmethod = \"GET\"\npath = \"/metrics\"\naction = \"metrics\"\npermission = \"notes:read\"\n"),
    );
    let server = project.serve(&[]);
    let c = client();
    let scrape = || {
        let res = c
            .get(server.url("/metrics"))
            .header("x-api-key", &key)
            .send()
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let text = res.text().unwrap();
        Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap()
    };
    let refreshes = |s: &Scrape, result: &str| {
        count(
            s,
            "nestflux_jwks_refreshes_total",
            &[("issuer", &format!("{issuer}/")), ("result", result)],
        )
    };
    let failed = {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let n = refreshes(&scrape(), "failed");
            if n >= 1.0 || std::time::Instant::now() > deadline {
                break n;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    assert!(failed >= 1.0, "{}", server.log());

    let provider = Provider::start(port, &dir.path().join("keys.json"), "1");
    let token = provider.token(AUD);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while c
        .get(server.url("/api/me"))
        .bearer_auth(&token)
        .send()
        .unwrap()
        .status()
        != StatusCode::OK
    {
        assert!(std::time::Instant::now() < deadline, "{}", server.log());
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let s = scrape();
    assert!(refreshes(&s, "ok") >= 1.0, "{:?}", s.samples);
    assert!(refreshes(&s, "failed") >= failed);
    assert_eq!(
        count(&s, "nestflux_auth_accepted_total", &[("kind", "bearer")]),
        1.0,
        "one accepted bearer request"
    );
}

#[test]
fn reloads_are_counted_and_the_config_hash_follows_the_plan_served() {
    let (key, hash) = common::new_api_key("scraper");
    let project = Project::new(&config(&hash));
    let server = project.serve(&[]);
    let c = client();
    let scrape = || {
        let res = c
            .get(server.url("/metrics"))
            .header("x-api-key", &key)
            .send()
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let text = res.text().unwrap();
        Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap()
    };
    let hashes = |s: &Scrape| -> Vec<(String, f64)> {
        s.samples
            .iter()
            .filter(|x| x.metric == "nestflux_config_info")
            .map(|x| {
                let v = match x.value {
                    Value::Gauge(v) | Value::Untyped(v) => v,
                    ref other => panic!("{other:?}"),
                };
                (x.labels.get("config_hash").unwrap_or("").to_string(), v)
            })
            .collect()
    };
    let reloads = |s: &Scrape| {
        let by = |result| count(s, "nestflux_plan_reloads_total", &[("result", result)]);
        (by("failure"), by("success"))
    };
    let reload = |outcomes: usize| {
        let out = project.run(&["reload"], &[]);
        assert!(out.status.success(), "{out:?}");
        server.log_when(|log| log.matches("\"message\":\"configuration reload").count() >= outcomes)
    };
    let before = hashes(&scrape());
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!(before[0].1, 1.0);

    // A broken file: a failure is counted and the served hash stays.
    project.write(
        "nestflux.toml",
        &(config(&hash)
            + "\n[[routes]]\nmethod = \"GET\"\npath = \"/x\"\naction = \"nope\"\npublic = true\n"),
    );
    let log = reload(1);
    assert!(log.contains("\"outcome\":\"invalid\""), "{log}");
    let mid = scrape();
    assert_eq!(reloads(&mid), (1.0, 0.0), "(failures, successes)");
    assert_eq!(hashes(&mid), before);

    // A route added: a success is counted and the info series names the new hash only.
    project.write(
        "nestflux.toml",
        &(config(&hash)
            + "\n[[routes]]\nmethod = \"GET\"\npath = \"/ping\"\naction = \"health\"\npublic = true\n"),
    );
    let log = reload(2);
    assert!(log.contains("\"outcome\":\"applied\""), "{log}");
    let after = scrape();
    assert_eq!(reloads(&after), (1.0, 1.0), "(failures, successes)");
    let now = hashes(&after);
    assert_eq!(now.len(), 1, "{now:?}");
    assert_ne!(now[0].0, before[0].0);
    assert!(
        log.contains(&format!("\"config_hash\":\"{}\"", now[0].0)),
        "the hash the reload logged: {log}"
    );
    // The new route is served and counted under its template.
    assert_eq!(
        c.get(server.url("/ping")).send().unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        count(
            &scrape(),
            "nestflux_http_requests_total",
            &[("route", "/ping"), ("method", "GET"), ("status", "200")]
        ),
        1.0
    );
}
