//! Bearer tokens from a real OpenID provider (npm `oidc-provider`) verified by the real
//! binary: RS256 and ES256 access tokens, API keys, 401/403, key rotation without a
//! restart, and a provider that is down (at startup, or after keys were loaded).

use std::time::{Duration, Instant};

use crate::common::{self, Project, Server, client};
use crate::oidc::{AUD, AUD_ES, Provider, free_port, nestflux_config};
use reqwest::StatusCode;
use serde_json::Value;

struct Setup {
    _project: Project,
    server: Server,
    api_key: String,
}

fn serve(issuer: &str, audience: &str) -> Setup {
    let (api_key, hash) = common::new_api_key("ci");
    let project = Project::new(&nestflux_config(issuer, audience, &hash));
    let server = project.serve(&[("RUST_LOG", "info,nestflux::auth=debug")]);
    Setup {
        _project: project,
        server,
        api_key,
    }
}

fn get(server: &Server, path: &str, auth: Option<&str>) -> reqwest::blocking::Response {
    let mut req = client().get(server.url(path));
    if let Some(token) = auth {
        req = req.bearer_auth(token);
    }
    req.send().expect("request")
}

fn whoami(server: &Server, token: &str) -> Value {
    let res = get(server, "/api/me", Some(token));
    assert_eq!(res.status(), StatusCode::OK, "{}", server.log());
    res.json().expect("whoami JSON")
}

fn challenge(res: &reqwest::blocking::Response) -> String {
    res.headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// Polls until `token` is accepted, for at most `limit`.
fn eventually_accepted(server: &Server, token: &str, limit: Duration) {
    let start = Instant::now();
    loop {
        if get(server, "/api/me", Some(token)).status() == StatusCode::OK {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "token still refused after {limit:?}:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn rs256_and_es256_tokens_api_keys_and_status_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let provider = Provider::start(0, &dir.path().join("keys.json"), "1");
    let rs = serve(&provider.issuer(), AUD);
    let es = serve(&provider.issuer(), AUD_ES);

    // RS256 access token (typ at+jwt) for urn:nestflux:api.
    let token = provider.token(AUD);
    let header = token.split('.').next().unwrap_or_default();
    assert!(header.len() > 10);
    let me = whoami(&rs.server, &token);
    assert_eq!(me["subject"], "nestflux-svc", "{me}");
    assert_eq!(me["kind"], "bearer");
    assert_eq!(me["roles"], serde_json::json!(["service"]));
    assert_eq!(
        me["permissions"],
        serde_json::json!(["notes:read", "reports:read"])
    );
    // The same token again: served from the verified-token cache, same answer.
    assert_eq!(whoami(&rs.server, &token), me);

    // ES256 access token for the ES256 resource, at a nestflux expecting that audience.
    let es_token = provider.token(AUD_ES);
    assert_eq!(whoami(&es.server, &es_token)["subject"], "nestflux-svc");
    // Each token only works where its audience is expected.
    assert_eq!(
        get(&rs.server, "/api/me", Some(&es_token)).status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(&es.server, "/api/me", Some(&token)).status(),
        StatusCode::UNAUTHORIZED
    );

    // Permission routes: granted through inheritance, or 403 for a known caller.
    assert_eq!(
        get(&rs.server, "/api/me/reports", Some(&token)).status(),
        StatusCode::OK
    );
    let res = get(&rs.server, "/api/me/admin", Some(&token));
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        res.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );

    // Missing credentials: 401 with a bare Bearer challenge (RFC 6750 §3).
    let res = get(&rs.server, "/api/me", None);
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(challenge(&res), "Bearer");
    let body: Value = res.json().expect("problem");
    assert_eq!(body["status"], 401);
    // Invalid credentials: invalid_token.
    let res = get(&rs.server, "/api/me", Some("not-a-token"));
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(challenge(&res), "Bearer error=\"invalid_token\"");

    // Public routes ignore credentials, even bad ones.
    assert_eq!(
        get(&rs.server, "/health", Some("garbage")).status(),
        StatusCode::OK
    );

    // API keys: as a bearer token or in X-API-Key; a wrong key is 401.
    let me: Value = get(&rs.server, "/api/me", Some(&rs.api_key))
        .json()
        .expect("json");
    assert_eq!(me["kind"], "api_key");
    assert_eq!(me["api_key"], "ci");
    assert_eq!(me["subject"], "apikey:ci");
    assert_eq!(me["roles"], serde_json::json!(["viewer"]));
    let res = client()
        .get(rs.server.url("/api/me"))
        .header("x-api-key", &rs.api_key)
        .send()
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        get(&rs.server, "/api/me/reports", Some(&rs.api_key)).status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get(&rs.server, "/api/me", Some(&es.api_key)).status(),
        StatusCode::UNAUTHORIZED
    );

    // Neither tokens nor keys reach the log; the subject does.
    for s in [&rs, &es] {
        let log = s.server.log();
        for secret in [&token, &es_token, &rs.api_key, &es.api_key] {
            assert!(!log.contains(secret.as_str()), "secret in log:\n{log}");
        }
    }
    assert!(
        rs.server
            .log_when(|l| l.contains("nestflux-svc"))
            .contains("nestflux-svc")
    );
}

#[test]
fn keys_survive_an_outage_and_rotation_needs_no_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let provider = Provider::start(0, &dir.path().join("gen1.json"), "1");
    let port = provider.port;
    let s = serve(&provider.issuer(), AUD);
    let first = provider.token(AUD);
    let unseen = provider.token(AUD);
    eventually_accepted(&s.server, &first, Duration::from_secs(15));

    // Provider down: the keys already loaded keep verifying, also tokens never seen before
    // (so this is not only the verified-token cache answering).
    provider.stop();
    assert_eq!(whoami(&s.server, &unseen)["subject"], "nestflux-svc");
    assert_eq!(whoami(&s.server, &first)["subject"], "nestflux-svc");
    // And the service keeps serving.
    assert_eq!(get(&s.server, "/health", None).status(), StatusCode::OK);

    // The provider comes back with new keys (new kids): a token signed with them verifies
    // without restarting nestflux (the unknown kid triggers one early refetch).
    let provider = Provider::start(port, &dir.path().join("gen2.json"), "2");
    let rotated = provider.token(AUD);
    assert_ne!(
        rotated.split('.').next(),
        first.split('.').next(),
        "the new token names the new kid"
    );
    eventually_accepted(&s.server, &rotated, Duration::from_secs(30));
    // The old keys are no longer published: tokens signed with them stop working, even
    // the one in the verified-token cache.
    assert_eq!(
        get(&s.server, "/api/me", Some(&first)).status(),
        StatusCode::UNAUTHORIZED
    );
}

#[test]
fn serves_while_the_provider_is_unreachable_then_picks_it_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    // Nothing listens on `port` yet.
    let s = serve(&format!("http://127.0.0.1:{port}"), AUD);
    assert_eq!(get(&s.server, "/health", None).status(), StatusCode::OK);
    assert_eq!(
        get(&s.server, "/api/me", Some(&s.api_key)).status(),
        StatusCode::OK,
        "API keys work without the provider"
    );
    let res = get(&s.server, "/api/me", Some("a.b.c"));
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    let provider = Provider::start(port, &dir.path().join("keys.json"), "1");
    let token = provider.token(AUD);
    eventually_accepted(&s.server, &token, Duration::from_secs(30));
    assert!(
        s.server
            .log_when(|l| l.contains("could not load the issuer's signing keys"))
            .contains("could not load the issuer's signing keys"),
        "the outage is logged:\n{}",
        s.server.log()
    );
}
