//! One named test per fixed bug, each with a line saying what broke. Every test here fails
//! if its bug comes back; a bug fixed without such a test is listed at the end, with why.

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use diesel::{Connection, RunQueryDsl};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{self, MINIMAL, Project, Server, client};
use crate::config_check::check;
use crate::fixtures::Notes;
use crate::http_core::assert_problem;
use crate::oidc::{AUD, AUD_ES, Provider, free_port};

/// A resource without owners (`docs`) whose `level` has a server-filled default and is
/// guarded by `docs:admin`; `reader` holds only `docs:read:own` and `docs:create`, `boss`
/// holds `docs:*`. Returns the project, the server and the (reader, boss) tokens.
fn guarded_docs() -> (Project, Server, String, String) {
    let config = r#"
[auth.dev]
enabled = true
[roles.reader]
permissions = ["docs:read:own", "docs:create"]
[roles.boss]
permissions = ["docs:*"]
[schemas.Doc]
title = { type = "string" }
level = { type = "integer", default = 1 }
[resources.docs]
schema = "Doc"
field_permissions = { level = "docs:admin" }
[[routes]]
method = "GET"
path = "/docs"
resource = "docs"
action = "list"
permission = "docs:read"
[[routes]]
method = "POST"
path = "/docs"
resource = "docs"
action = "create"
permission = "docs:create"
"#;
    let p = Project::new(config);
    let token = |sub: &str, role: &str| {
        let out = p.run(&["token", "--sub", sub, "--role", role], &[]);
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let (reader, boss) = (token("r", "reader"), token("b", "boss"));
    let s = p.serve(&[]);
    (p, s, reader, boss)
}

fn post_doc(s: &Server, token: &str, body: Value) -> StatusCode {
    client()
        .post(s.url("/docs"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .unwrap()
        .status()
}

fn list_docs(s: &Server, token: &str, query: &str) -> StatusCode {
    client()
        .get(s.url(&format!("/docs{query}")))
        .bearer_auth(token)
        .send()
        .unwrap()
        .status()
}

/// Broke: sorting by a field-guarded field leaked it, through the row order and through the
/// cursor that carries the last value, to callers who may not read that field.
#[test]
fn a_field_guarded_field_is_never_a_sort_key() {
    let (_p, s, _reader, boss) = guarded_docs();
    assert_eq!(list_docs(&s, &boss, ""), StatusCode::OK);
    assert_eq!(
        list_docs(&s, &boss, "?sort=level"),
        StatusCode::UNPROCESSABLE_ENTITY
    );
}

/// Broke: `:own` on a resource that records no owner widened to every row on SQLite (the
/// owner condition named a column that does not exist, which SQLite reads as a string).
#[test]
fn own_on_an_ownerless_resource_permits_nothing() {
    let (_p, s, reader, boss) = guarded_docs();
    assert_eq!(
        list_docs(&s, &reader, ""),
        StatusCode::FORBIDDEN,
        ":own on a resource without owners"
    );
    assert_eq!(list_docs(&s, &boss, ""), StatusCode::OK);
}

/// Broke: a default the server filled in for a guarded field counted as the caller writing
/// it, so callers without the field's permission could not create rows at all.
#[test]
fn server_filled_defaults_are_not_forbidden_writes() {
    let (_p, s, reader, boss) = guarded_docs();
    assert_eq!(
        post_doc(&s, &reader, json!({"title": "a"})),
        StatusCode::CREATED,
        "the server-filled default is not the reader's write"
    );
    assert_eq!(
        post_doc(&s, &reader, json!({"title": "a", "level": 5})),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        post_doc(&s, &boss, json!({"title": "b", "level": 5})),
        StatusCode::CREATED
    );
}

/// Broke: a bearer token could claim an `apikey:` subject and pass for an API-key caller
/// (its rate-limit bucket, its owned rows).
#[test]
fn a_token_cannot_claim_an_api_key_subject() {
    let p = Project::new(&format!(
        "[auth.dev]\nenabled = true\n[roles.viewer]\npermissions = [\"notes:read\"]\n[[routes]]\nmethod = \"GET\"\npath = \"/api/me\"\naction = \"whoami\"\nauthenticated = true\n{MINIMAL}"
    ));
    let token = |sub: &str| {
        let out = p.run(&["token", "--sub", sub, "--role", "viewer"], &[]);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let plain = token("ci");
    let out = p.run(&["token", "--sub", "apikey:ci", "--role", "viewer"], &[]);
    assert!(!out.status.success(), "minting refuses a reserved subject");
    // Whoever reads the development key from the database can still sign anything: the
    // verifier itself refuses the claim.
    let claiming = sign_with_dev_key(&p, json!({"sub": "apikey:ci", "roles": ["viewer"]}));
    let s = p.serve(&[]);
    let me = |token: &str| {
        client()
            .get(s.url("/api/me"))
            .bearer_auth(token)
            .send()
            .unwrap()
    };
    let res = me(&plain);
    assert_eq!(res.status(), StatusCode::OK, "the same token, another sub");
    assert_eq!(res.json::<Value>().unwrap()["subject"], "dev:ci");
    let res = me(&claiming);
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        res.headers()["www-authenticate"],
        "Bearer error=\"invalid_token\""
    );
}

/// A token signed with the development issuer's key read straight from the database, as
/// anyone holding the file (or a backup) could.
fn sign_with_dev_key(p: &Project, claims: Value) -> String {
    use diesel::prelude::*;
    #[derive(QueryableByName)]
    struct Key {
        #[diesel(sql_type = diesel::sql_types::Text)]
        kid: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        private_pem: String,
    }
    let db = p.path().join("nestflux.db");
    let mut c = SqliteConnection::establish(db.to_str().unwrap()).unwrap();
    let key: Key = diesel::sql_query("SELECT kid, private_pem FROM nestflux_dev_keys")
        .get_result(&mut c)
        .unwrap();
    let now = common_now();
    let mut all =
        json!({"iss": "urn:nestflux:dev-issuer", "aud": "nestflux", "iat": now, "exp": now + 600});
    for (k, v) in claims.as_object().unwrap() {
        all[k] = v.clone();
    }
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(key.kid);
    let signing = jsonwebtoken::EncodingKey::from_ed_pem(key.private_pem.as_bytes()).unwrap();
    jsonwebtoken::encode(&header, &all, &signing).unwrap()
}

fn common_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Broke: the suite's PostgreSQL URL was `NESTFLUX_TEST_POSTGRES_URL`; every `NESTFLUX_*`
/// variable is configuration, so the binary under test read it as an unknown key and
/// unrelated tests failed. The harness now strips them (the URL is `TEST_POSTGRES_URL`).
#[test]
fn nestflux_variables_of_the_test_runner_do_not_reach_the_binary() {
    const POISON: (&str, &str) = ("NESTFLUX_TEST_POSTGRES_URL", "postgres://x@127.0.0.1/x");
    // The binary reads it as configuration: that is why the harness must not pass it on.
    let p = Project::new(MINIMAL);
    let out = Command::new(common::bin())
        .args(["check", "--config"])
        .arg(p.config())
        .env(POISON.0, POISON.1)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    // This suite, run with the variable set: tests through `command()`, `run` and `serve`.
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "config_check::reference_file_compiles",
            "config_check::warnings_do_not_fail_the_check",
            "http_core::health_carries_every_default_header",
        ])
        .env(POISON.0, POISON.1)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("3 passed"), "{stdout}");
}

/// Broke: a body with a duplicate object key was accepted, and parsers disagree on which
/// value wins (a proxy or WAF may have checked the other one).
#[test]
fn a_body_with_a_duplicate_key_is_refused() {
    let p = Project::new(&format!("{}{MINIMAL}", Notes::new()));
    let s = p.serve(&[]);
    let c = client();
    let res = c
        .post(s.url("/api/notes"))
        .header("content-type", "application/json")
        .body("{\"title\":\"checked\",\"title\":\"stored\"}")
        .send()
        .unwrap();
    let body = assert_problem(res, StatusCode::BAD_REQUEST);
    assert!(
        body["detail"].as_str().unwrap().contains("duplicate key"),
        "{body}"
    );
    let page: Value = c.get(s.url("/api/notes")).send().unwrap().json().unwrap();
    assert_eq!(page["items"], json!([]), "nothing was stored");
}

/// Broke: `database.busy_timeout` could outlast `server.request_timeout`, so a write still
/// waiting for the database could commit after the client had been told 503.
#[test]
fn busy_timeout_must_be_shorter_than_request_timeout() {
    let (code, text) = check(
        &format!("[server]\nrequest_timeout = \"5s\"\n[database]\nbusy_timeout = \"10s\"{MINIMAL}"),
        &[],
    );
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("database.busy_timeout: must be shorter than server.request_timeout"),
        "{text}"
    );
}

/// Broke: a field named like a blind-index column (`email__bidx`) collided with the column
/// that indexes `email`; `__` is reserved, like the server's own columns.
#[test]
fn field_names_with_a_double_underscore_are_reserved() {
    let (code, text) = check(
        &format!(
            "[schemas.N]\nemail__bidx = {{ type = \"string\" }}\nowner = {{ type = \"string\" }}{MINIMAL}"
        ),
        &[],
    );
    assert_eq!(code, 1, "{text}");
    for e in [
        "schemas.N.email__bidx: `__` is reserved",
        "schemas.N.owner: `owner` is set by the server",
    ] {
        assert!(text.contains(e), "missing `{e}` in:\n{text}");
    }
}

/// Broke: list-query errors were unbounded (one per parameter, as many as a URL holds) and
/// their pointers were not RFC 6901 escaped (`/query/a/b` points somewhere else).
#[test]
fn list_query_errors_are_capped_and_their_pointers_escaped() {
    let p = Project::new(&Notes::new().to_string());
    let s = p.serve(&[]);
    let errors = |query: &str| -> Vec<Value> {
        let res = client()
            .get(s.url(&format!("/api/notes?{query}")))
            .send()
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{query}");
        res.json::<Value>().unwrap()["errors"]
            .as_array()
            .unwrap()
            .clone()
    };
    let pointers: Vec<Value> = errors("a%2Fb=1&c~d=2")
        .iter()
        .map(|e| e["pointer"].clone())
        .collect();
    assert_eq!(pointers, [json!("/query/a~1b"), json!("/query/c~0d")]);

    let many: Vec<String> = (0..300).map(|i| format!("p{i}=1")).collect();
    assert_eq!(errors(&many.join("&")).len(), 100);
}

/// Broke (issue 17, medium 1): the development issuer and `auth.issuer` shared one subject
/// namespace, so `nestflux token --sub <a provider user's sub>` read, changed and deleted
/// that user's own rows. Development subjects are now `dev:<sub>`.
#[test]
fn a_development_token_never_owns_a_provider_users_rows() {
    let dir = tempfile::tempdir().unwrap();
    let provider = Provider::start(0, &dir.path().join("keys.json"), "1");
    let config = format!(
        "[auth]\nissuer = \"{}\"\naudience = \"{AUD}\"\nalgorithms = [\"RS256\", \"EdDSA\"]\n\
         [auth.dev]\nenabled = true\n\
         [roles.editor]\npermissions = [\"notes:read\", \"notes:create\", \"notes:update:own\", \"notes:delete:own\", \"notes:secret:own\"]\n\
         [roles.service]\ninherits = [\"editor\"]\n{}",
        provider.issuer(),
        Notes::new()
            .resource("owner = true")
            .resource("encrypted = [\"secret\"]")
            .resource("field_permissions = { secret = \"notes:secret\" }")
            .access("list", "permission = \"notes:read\"")
            .access("get", "permission = \"notes:read\"")
            .access("create", "permission = \"notes:create\"")
            .access("update", "permission = \"notes:update\"")
            .access("delete", "permission = \"notes:delete\"")
    );
    let p = Project::new(&config);
    let env = [(
        "NESTFLUX_ENCRYPTION__KEYS",
        "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
    )];
    // The provider's client_credentials tokens have `sub` = nestflux-svc, roles [service].
    let user = provider.token(AUD);
    let out = p.run(
        &["token", "--sub", "nestflux-svc", "--role", "editor"],
        &env,
    );
    assert!(out.status.success(), "{out:?}");
    let impostor = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let s = p.serve(&env);
    let call = |token: &str, method: reqwest::Method, path: &str, body: Option<Value>| {
        let mut req = client().request(method, s.url(path)).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().unwrap();
        let status = res.status();
        (status, res.json::<Value>().unwrap_or(Value::Null))
    };
    let me = |token: &str| call(token, reqwest::Method::GET, "/api/notes?limit=10", None);
    // The provider's keys arrive in the background.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while me(&user).0 != StatusCode::OK {
        assert!(std::time::Instant::now() < deadline, "{}", s.log());
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let (status, note) = call(
        &user,
        reqwest::Method::POST,
        "/api/notes",
        Some(json!({"title": "mine", "secret": "provider user's secret"})),
    );
    assert_eq!(status, StatusCode::CREATED, "{note}");
    assert_eq!(note["owner"], "nestflux-svc");
    let path = format!("/api/notes/{}", note["id"].as_str().unwrap());

    // The development token with the same `sub` is somebody else: `dev:nestflux-svc`.
    // `notes:read` reads every row, but `secret` only on one's own rows.
    let (_, list) = me(&impostor);
    assert_eq!(list["items"][0]["id"], note["id"]);
    assert!(list["items"][0].get("secret").is_none(), "{list}");
    let (status, row) = call(&impostor, reqwest::Method::GET, &path, None);
    assert_eq!(status, StatusCode::OK);
    assert!(row.get("secret").is_none(), "{row}");
    // Own-row writes find no row of theirs.
    for (method, body) in [
        (
            reqwest::Method::PATCH,
            Some(json!({"title": "overwritten"})),
        ),
        (reqwest::Method::DELETE, None),
    ] {
        let (status, _) = call(&impostor, method.clone(), &path, body);
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} of the user's row");
    }
    let (status, mine) = call(
        &impostor,
        reqwest::Method::POST,
        "/api/notes",
        Some(json!({"title": "dev's"})),
    );
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(mine["owner"], "dev:nestflux-svc");
    // The row is untouched, secret included, and the user still owns it.
    let (status, row) = call(&user, reqwest::Method::GET, &path, None);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(row["secret"], "provider user's secret");
    assert_eq!(row["title"], "mine");
    // And the reverse: no development token may name a reserved namespace.
    let out = p.run(&["token", "--sub", "dev:alice", "--role", "editor"], &env);
    assert!(!out.status.success(), "a `dev:` sub is refused at minting");
}

/// Broke (issue 17, medium 2): a valid JWKS answer without a usable key (an emergency
/// revocation, or a rotation to algorithms outside `auth.algorithms`) was treated like an
/// outage, so tokens signed with the removed keys stayed valid indefinitely.
#[test]
fn a_jwks_without_usable_keys_retires_the_old_ones() {
    let dir = tempfile::tempdir().unwrap();
    let gen1 = dir.path().join("gen1.json");
    let provider = Provider::start(0, &gen1, "1");
    let port = provider.port;
    // This service trusts ES256 only.
    let config = format!(
        "[auth]\nissuer = \"{}\"\naudience = \"{AUD_ES}\"\nalgorithms = [\"ES256\"]\n\
         [[routes]]\nmethod = \"GET\"\npath = \"/api/me\"\naction = \"whoami\"\nauthenticated = true\n",
        provider.issuer()
    );
    let p = Project::new(&config);
    let s = p.serve(&[("RUST_LOG", "info,nestflux::auth=debug")]);
    let status = |token: &str| {
        client()
            .get(s.url("/api/me"))
            .bearer_auth(token)
            .send()
            .unwrap()
            .status()
    };
    let old = provider.token(AUD_ES);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while status(&old) != StatusCode::OK {
        assert!(std::time::Instant::now() < deadline, "{}", s.log());
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // The provider rotates to an RSA key only: a valid answer, no key usable here.
    provider.stop();
    let mut keys: Value = serde_json::from_str(&std::fs::read_to_string(&gen1).unwrap()).unwrap();
    let rsa: Vec<Value> = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["kty"] == "RSA")
        .map(|k| {
            let mut k = k.clone();
            k["kid"] = json!("rsa-2");
            k
        })
        .collect();
    keys["keys"] = Value::Array(rsa);
    let gen2 = dir.path().join("gen2.json");
    std::fs::write(&gen2, keys.to_string()).unwrap();
    let _provider = Provider::start(port, &gen2, "2");
    // An ES256 token naming an unknown kid makes the service look at the keys again.
    let b64 = |v: Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let probe = format!(
        "{}.{}.c2ln",
        b64(json!({"alg": "ES256", "kid": "ec-unknown"})),
        b64(json!({"sub": "x"}))
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        assert_eq!(status(&probe), StatusCode::UNAUTHORIZED);
        // The old token is refused, although it verified (and was cached) before.
        if status(&old) == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the old key still verifies:\n{}",
            s.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert!(
        s.log_when(|l| l.contains("publishes no key usable"))
            .contains("publishes no key usable"),
        "{}",
        s.log()
    );
}

/// Broke (issue 17, low 12): the plain-HTTP redirect listener sent
/// `Strict-Transport-Security`, which RFC 6797 §7.2 forbids over plain HTTP.
#[test]
fn the_plain_http_redirect_listener_sends_no_hsts() {
    let ca = common::TestCa::new();
    let port = free_port();
    let p = Project::new(&format!(
        "{}redirect_http = \"127.0.0.1:{port}\"\npublic_host = \"localhost\"\n{MINIMAL}",
        common::TLS
    ));
    ca.install(&p);
    let s = p.serve(&[]);
    s.log_when(|l| l.contains("nestflux redirecting http://"));
    let tls = ca.client().get(s.url("/health")).send().unwrap();
    assert!(tls.headers().contains_key("strict-transport-security"));
    let plain = client()
        .get(format!("http://127.0.0.1:{port}/health"))
        .send()
        .unwrap();
    assert_eq!(plain.status(), StatusCode::PERMANENT_REDIRECT);
    assert!(plain.headers().contains_key("x-content-type-options"));
    assert!(
        !plain.headers().contains_key("strict-transport-security"),
        "{:?}",
        plain.headers()
    );
}

/// Broke (issue 17, low 11): `HEAD` on a GET route answered 405; RFC 9110 wants it
/// answered wherever GET is, with the same headers and no body.
#[test]
fn head_is_answered_wherever_get_is_declared() {
    let p = Project::new(&Notes::new().to_string());
    let s = p.serve(&[]);
    let created: Value = client()
        .post(s.url("/api/notes"))
        .json(&json!({"title": "t"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let one = format!("/api/notes/{}", created["id"].as_str().unwrap());
    let get = client().get(s.url(&one)).send().unwrap();
    let head = client().head(s.url(&one)).send().unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    for name in [
        "content-type",
        "content-length",
        "x-content-type-options",
        "cache-control",
    ] {
        assert_eq!(head.headers().get(name), get.headers().get(name), "{name}");
    }
    assert!(head.bytes().unwrap().is_empty(), "no body");
    // A missing row: the same 404 problem headers, no body.
    let missing = client()
        .head(s.url("/api/notes/01a2296d-d507-7109-b0b8-6add276c0ee8"))
        .send()
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        missing.headers()["content-type"],
        "application/problem+json"
    );
    // HEAD is listed where GET is.
    let res = client().put(s.url("/api/notes")).send().unwrap();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    let allow = res.headers()["allow"].to_str().unwrap().to_string();
    assert!(allow.contains("GET") && allow.contains("HEAD"), "{allow}");
}

/// Broke (issue 17, low 8): over HTTP/2 a body without `Content-Length` was ignored: a POST
/// got 422 "must be a JSON object" and a GET with a non-JSON body 200. Whether a body exists
/// now comes from the payload stream.
#[test]
fn http2_bodies_without_a_length_are_read() {
    // HTTP/2 is served over TLS (ALPN h2).
    let ca = common::TestCa::new();
    let p = Project::new(&format!("{}{}{MINIMAL}", common::TLS, Notes::new()));
    ca.install(&p);
    let s = p.serve(&[]);
    let h2 = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.ca_pem.as_bytes()).unwrap())
        .http2_prior_knowledge()
        .build()
        .unwrap();
    // A streamed body: HTTP/2 DATA frames and no content-length header.
    let streamed = |text: &'static str| {
        reqwest::blocking::Body::new(std::io::Cursor::new(text.as_bytes().to_vec()))
    };
    let res = h2
        .post(s.url("/api/notes"))
        .header("content-type", "application/json")
        .body(streamed(r#"{"title": "over h2"}"#))
        .send()
        .unwrap();
    assert_eq!(res.version(), reqwest::Version::HTTP_2);
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(res.json::<Value>().unwrap()["title"], "over h2");
    let res = h2
        .get(s.url("/health"))
        .header("content-type", "text/plain")
        .body(streamed("hello"))
        .send()
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::BAD_REQUEST,
        "a body on a route that takes none"
    );
    let res = h2
        .post(s.url("/api/notes"))
        .header("content-type", "text/plain")
        .body(streamed("title=x"))
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

/// Broke (issue 17, also fixed): a body sent to a public route that takes none was read and
/// parsed (413, 415 or a JSON syntax error) before it was refused; it is now refused unread.
#[test]
fn a_body_on_a_route_that_takes_none_is_refused_before_it_is_parsed() {
    let p = Project::new(&format!("[server]\nbody_limit = \"64\"\n{MINIMAL}"));
    let s = p.serve(&[]);
    for (ct, payload) in [
        ("application/json", "{}".to_string()),
        ("text/plain", "hello".to_string()),
        (
            "application/json",
            format!("{{\"x\":\"{}\"}}", "a".repeat(100)),
        ),
        ("application/json", "{\"a\":".to_string()),
    ] {
        let res = client()
            .get(s.url("/health"))
            .header("content-type", ct)
            .body(payload)
            .send()
            .unwrap();
        let body = assert_problem(res, StatusCode::BAD_REQUEST);
        assert_eq!(body["detail"], "this route takes no request body");
    }
}

/// Broke (issue 17, also fixed): an integer beyond i64 was refused with "must be at most
/// 9223372036854775807" although the schema says `max = 5`.
#[test]
fn an_integer_overflow_reports_the_schemas_own_bound() {
    let p = Project::new(&Notes::new().to_string());
    let s = p.serve(&[]);
    for body in [
        r#"{"title": "t", "priority": 99999999999999999999}"#,
        r#"{"title": "t", "priority": 1e19}"#,
    ] {
        let res = client()
            .post(s.url("/api/notes"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap();
        let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(problem["errors"][0]["pointer"], "/priority", "{problem}");
        assert_eq!(
            problem["errors"][0]["message"], "must be at most 5",
            "{body}"
        );
    }
    let res = client()
        .get(s.url("/api/notes?priority=99999999999999999999"))
        .send()
        .unwrap();
    let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        problem["errors"][0]["message"], "must be at most 5",
        "{problem}"
    );
    let res = client()
        .get(s.url("/api/notes?priority=-99999999999999999999"))
        .send()
        .unwrap();
    let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        problem["errors"][0]["message"], "must be at least 1",
        "{problem}"
    );
}

/// Broke (issue 17, also fixed): an all-zero or repeated-byte AES key was accepted.
#[test]
fn a_placeholder_encryption_key_is_refused() {
    for key in [
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=",
    ] {
        let keys = format!("k1:{key}");
        let (code, text) = check(MINIMAL, &[("NESTFLUX_ENCRYPTION__KEYS", keys.as_str())]);
        assert_eq!(code, 1, "{text}");
        assert!(
            text.contains("encryption.keys[0]") && text.contains("not random"),
            "{text}"
        );
        assert!(!text.contains(key), "the key is never echoed: {text}");
    }
}

/// Broke (issue 17, also fixed): CORS preflights were answered by actix-cors before the
/// global rate limit saw them, so a flood of preflights was never limited.
#[test]
fn cors_preflights_count_against_the_global_limit() {
    let p = Project::new(&format!(
        "[cors]\norigins = [\"http://app.example\"]\nmethods = [\"GET\", \"POST\"]\n\
         [rate_limits.global]\nper_minute = 1\nburst = 3\n{MINIMAL}"
    ));
    let s = p.serve(&[]);
    let preflight = || {
        client()
            .request(reqwest::Method::OPTIONS, s.url("/health"))
            .header("origin", "http://app.example")
            .header("access-control-request-method", "GET")
            .send()
            .unwrap()
    };
    for _ in 0..3 {
        let res = preflight();
        assert!(res.status().is_success(), "{:?}", res.status());
        assert!(
            res.headers().contains_key("ratelimit"),
            "{:?}",
            res.headers()
        );
    }
    let res = preflight();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers().contains_key("retry-after"));
    assert!(!res.headers().contains_key("access-control-allow-origin"));
    // The same bucket as every other request from this client.
    let res = client().get(s.url("/health")).send().unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
}

/// Broke (issue 17, low 9): answers made by actix's HTTP/1 codec itself (a request head it
/// cannot parse, one too large, one too slow) carry no security headers and no
/// problem+json. actix offers no hook for them, so they are the README's documented
/// exceptions: exactly these three, each an empty body on a closed connection. Anything the
/// codec accepts, however odd, gets the full envelope.
#[test]
fn only_the_documented_codec_answers_bypass_the_envelope() {
    let p = Project::new(&format!(
        "[server]\nrequest_timeout = \"1s\"\n[database]\nbusy_timeout = \"500ms\"\n{MINIMAL}"
    ));
    let s = p.serve(&[]);
    let raw = |head: &[u8]| {
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", s.port())).unwrap();
        tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        tcp.write_all(head).unwrap();
        let mut answer = Vec::new();
        let _ = tcp.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).to_lowercase()
    };
    let huge = format!(
        "GET /health HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(200_000)
    );
    for (what, head, status) in [
        ("bad request line", "GARBAGE\r\n\r\n".to_string(), "400"),
        (
            "content-length with transfer-encoding",
            "POST /health HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n".to_string(),
            "400",
        ),
        ("head too large", huge, "431"),
        ("head too slow", "GET /health HTTP/1.1\r\nhost: x\r\n".to_string(), "408"),
    ] {
        let answer = raw(head.as_bytes());
        assert!(answer.starts_with(&format!("http/1.1 {status}")), "{what}: {answer}");
        assert!(answer.contains("content-length: 0"), "{what}: {answer}");
        assert!(answer.contains("connection: close"), "{what}: {answer}");
    }
    // Odd but parseable requests get the envelope: problem+json and the secure headers.
    for head in [
        "GET /%zz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        "BREW /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        "GET /health?%ff=%00 HTTP/1.0\r\nconnection: close\r\n\r\n",
    ] {
        let answer = raw(head.as_bytes());
        assert!(
            answer.contains("x-content-type-options: nosniff"),
            "{head}: {answer}"
        );
        assert!(answer.contains("x-request-id:"), "{head}: {answer}");
    }
}

/// Broke (issue 17, low 5): distinct forged tokens each cost a signature check (about 10x a
/// cached one) with no limit but the global one. Failed authentications are now charged to
/// the client's `auth_failures` budget; once it is spent, its unseen tokens get 429 before
/// any signature is checked, while tokens it already proved and other clients are unaffected.
#[test]
fn forged_tokens_spend_a_budget_then_are_refused_unchecked() {
    let p = Project::new(&format!(
        "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n[auth.dev]\nenabled = true\n\
         [rate_limits.auth_failures]\nper_minute = 1\nburst = 5\n\
         [[routes]]\nmethod = \"GET\"\npath = \"/api/me\"\naction = \"whoami\"\nauthenticated = true\n{MINIMAL}"
    ));
    let mint = |sub: &str| {
        let out = p.run(&["token", "--sub", sub], &[]);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let (proven, unseen) = (mint("early"), mint("late"));
    let s = p.serve(&[]);
    let me = |token: &str, client_ip: &str| {
        client()
            .get(s.url("/api/me"))
            .bearer_auth(token)
            .header("x-forwarded-for", client_ip)
            .send()
            .unwrap()
    };
    assert_eq!(me(&proven, "192.0.2.1").status(), StatusCode::OK);
    // Distinct forgeries: a valid signature under another payload.
    let parts: Vec<&str> = proven.split('.').collect();
    let forged = |i: usize| {
        use base64::Engine;
        let payload = json!({"iss": "urn:nestflux:dev-issuer", "aud": "nestflux", "sub": format!("f{i}"), "exp": 4_000_000_000u64});
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(payload.to_string());
        format!("{}.{payload}.{}", parts[0], parts[2])
    };
    for i in 0..5 {
        let res = me(&forged(i), "192.0.2.1");
        assert_eq!(
            res.status(),
            StatusCode::UNAUTHORIZED,
            "failure {i} is checked"
        );
    }
    let res = me(&forged(5), "192.0.2.1");
    let problem = assert_problem(res, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(problem["type"], "urn:nestflux:problem:auth-failures");
    let res = me(&unseen, "192.0.2.1");
    assert_eq!(
        res.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "even a good token waits: it was never checked"
    );
    assert!(res.headers().contains_key("retry-after"));
    // Tokens this client already proved are answered from the cache; other clients are
    // unaffected.
    assert_eq!(me(&proven, "192.0.2.1").status(), StatusCode::OK);
    assert_eq!(me(&unseen, "198.51.100.7").status(), StatusCode::OK);
    assert_eq!(
        me(&forged(6), "198.51.100.7").status(),
        StatusCode::UNAUTHORIZED
    );
    assert!(
        s.log_when(|l| l.contains("over its budget of failed authentications"))
            .contains("192.0.2.1")
    );
}

/// Broke (found merging browser login with HEAD support): `HEAD /auth/callback` ran the
/// callback and used up the one-time login `state` (a link prefetcher could break a login);
/// login and callback answer only GET.
#[test]
fn head_never_runs_the_login_steps() {
    let port = common::free_port();
    let p = Project::new(&format!(
        "[auth]\nissuer = \"http://127.0.0.1:{port}\"\naudience = \"nestflux\"\n\
         [auth.session]\nclient_id = \"web\"\nredirect_url = \"http://127.0.0.1:{port}/auth/callback\"\n{MINIMAL}"
    ));
    let s = p.serve(&[(
        "NESTFLUX_ENCRYPTION__KEYS",
        "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
    )]);
    for path in ["/auth/login", "/auth/callback?code=x&state=y"] {
        let res = client().head(s.url(path)).send().unwrap();
        assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED, "{path}");
        assert_eq!(res.headers()["allow"], "GET", "{path}");
    }
    let res = client().head(s.url("/auth/session")).send().unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

/// Broke (issue 17, low 6): an OIDC ID token was accepted as a bearer access token when its
/// audience matched (the reference file names the same client id and audience). Tokens with
/// a `nonce` (ID tokens) or a payload `typ` other than `Bearer` are refused.
#[test]
fn an_id_token_is_not_an_access_token() {
    use base64::Engine;
    use sha2::Digest;
    let dir = tempfile::tempdir().unwrap();
    let provider = Provider::start(0, &dir.path().join("keys.json"), "1");
    // A real login at the provider as the confidential web client, with a nonce.
    let redirect = "http://127.0.0.1:8080/callback";
    let verifier = "a-code-verifier-long-enough-for-pkce-0123456789abcdefghijkl";
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    let authorize = format!(
        "{}/auth?client_id=nestflux-web&response_type=code&scope=openid&redirect_uri={}&nonce=n-42&state=s-42&code_challenge={challenge}&code_challenge_method=S256",
        provider.issuer(),
        url::form_urlencoded::byte_serialize(redirect.as_bytes()).collect::<String>()
    );
    let callback = crate::agent::Agent::new().authorize(&authorize, "alice", redirect);
    let code = url::Url::parse(&callback)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.to_string())
        .expect("code");
    let tokens: Value = client()
        .post(format!("{}/token", provider.issuer()))
        .basic_auth("nestflux-web", Some("web-secret"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", redirect),
            ("code_verifier", verifier),
        ])
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id_token = tokens["id_token"].as_str().expect("id_token").to_string();
    // A service whose audience is the web client's id: the ID token's `aud`, `iss` and
    // signature are all right.
    let p = Project::new(&format!(
        "[auth]\nissuer = \"{}\"\naudience = \"nestflux-web\"\nalgorithms = [\"RS256\"]\n\
         [[routes]]\nmethod = \"GET\"\npath = \"/api/me\"\naction = \"whoami\"\nauthenticated = true\n{MINIMAL}",
        provider.issuer()
    ));
    let s = p.serve(&[("RUST_LOG", "info,nestflux::auth=debug")]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !s.log().contains("issuer signing keys loaded") {
        assert!(std::time::Instant::now() < deadline, "{}", s.log());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let res = client()
        .get(s.url("/api/me"))
        .bearer_auth(&id_token)
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(
        s.log_when(|l| l.contains("a nonce marks an ID token"))
            .contains("a nonce marks an ID token")
    );
}

/// Issue 17, low 6, the opt-in half: `auth.require_access_token_typ = true` accepts only
/// RFC 9068 access tokens (`typ: at+jwt`), as `nestflux token` now mints them.
#[test]
fn require_access_token_typ_refuses_plain_jwts() {
    let p = Project::new(&format!(
        "[auth]\nrequire_access_token_typ = true\n[auth.dev]\nenabled = true\n\
         [[routes]]\nmethod = \"GET\"\npath = \"/api/me\"\naction = \"whoami\"\nauthenticated = true\n{MINIMAL}"
    ));
    let out = p.run(&["token", "--sub", "alice"], &[]);
    assert!(out.status.success(), "{out:?}");
    let minted = String::from_utf8(out.stdout).unwrap().trim().to_string();
    // The same key, the same claims, but the header says `JWT`.
    let plain = sign_with_dev_key(&p, json!({"sub": "alice"}));
    let s = p.serve(&[]);
    let status = |token: &str| {
        client()
            .get(s.url("/api/me"))
            .bearer_auth(token)
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(status(&minted), StatusCode::OK);
    assert_eq!(status(&plain), StatusCode::UNAUTHORIZED);
}

/// Broke (issue 17, low 10): a value read from a `…_FILE` variable was echoed in config
/// errors (``auth.leeway: `<file content>` is not a duration``), and so were values of
/// variables whose key can hold a secret. Now neither is; other variables still are.
#[test]
fn values_from_file_variables_and_secret_variables_are_never_echoed() {
    let p = Project::new(MINIMAL);
    let leeway = p.write("leeway", "soon-CONFIDENTIAL\n");
    let workers = p.write("workers", "many-CONFIDENTIAL\n");
    let out = p.run(
        &["check", "--format", "json"],
        &[
            ("NESTFLUX_AUTH__LEEWAY_FILE", leeway.to_str().unwrap()),
            ("NESTFLUX_SERVER__WORKERS_FILE", workers.to_str().unwrap()),
            (
                "NESTFLUX_DATABASE__URL",
                "mysql://app:PASSWORD-CONFIDENTIAL@db/app",
            ),
            ("NESTFLUX_RATE_LIMITS__BACKEND", "redis"),
            (
                "NESTFLUX_RATE_LIMITS__REDIS_URL",
                "http://:REDIS-CONFIDENTIAL@cache",
            ),
            ("NESTFLUX_SERVER__BIND", "localhost"),
        ],
    );
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        !text.contains("CONFIDENTIAL"),
        "a secret was echoed:\n{text}"
    );
    for (path, var) in [
        ("auth.leeway", "NESTFLUX_AUTH__LEEWAY_FILE"),
        ("server.workers", "NESTFLUX_SERVER__WORKERS_FILE"),
        ("database.url", "NESTFLUX_DATABASE__URL"),
        ("rate_limits.redis_url", "NESTFLUX_RATE_LIMITS__REDIS_URL"),
    ] {
        let line = text
            .lines()
            .find(|l| l.contains(&format!("\"path\":\"{path}\"")))
            .unwrap_or_else(|| panic!("no diagnostic at {path}:\n{text}"));
        assert!(line.contains(&format!("\"variable\":\"{var}\"")), "{line}");
    }
    // A variable whose key holds no secret is still quoted: it helps fix the mistake.
    assert!(
        text.contains("`localhost` is not a socket address"),
        "{text}"
    );
}

/// Broke: the same field listed twice in `encrypted` or `blind_index` passed `check`.
#[test]
fn duplicate_encrypted_or_blind_index_entries_are_refused() {
    let (code, text) = check(
        &format!(
            "[schemas.P]\nemail = {{ type = \"string\" }}\n[resources.people]\nschema = \"P\"\nencrypted = [\"email\", \"email\"]\nblind_index = [\"email\", \"email\"]{MINIMAL}"
        ),
        &[(
            "NESTFLUX_ENCRYPTION__KEYS",
            "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        )],
    );
    assert_eq!(code, 1, "{text}");
    for e in [
        "error[duplicate]: resources.people.encrypted[1]: \"email\" is listed twice",
        "error[duplicate]: resources.people.blind_index[1]: \"email\" is listed twice",
    ] {
        assert!(text.contains(e), "missing `{e}` in:\n{text}");
    }
    assert!(text.contains("nestflux.toml:5:23"), "{text}");
}

/// Broke: `dangerous_insecure_cookie = true` with an https redirect URL reported its
/// production error at `auth.session.redirect_url`, a key that was fine.
#[test]
fn the_insecure_cookie_error_points_at_the_dangerous_key() {
    let (code, text) = check(
        &format!(
            "[auth]\nissuer = \"https://idp.example.com\"\naudience = \"a\"\n[auth.session]\nclient_id = \"c\"\nredirect_url = \"https://app.example.com/cb\"\ndangerous_insecure_cookie = true{MINIMAL}"
        ),
        &[("NESTFLUX_PROFILE", "production")],
    );
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("error[refused-in-production]: auth.session.dangerous_insecure_cookie: session cookies without `Secure` are refused in production"),
        "{text}"
    );
    assert!(text.contains("nestflux.toml:7:29"), "{text}");
    assert!(!text.contains("auth.session.redirect_url"), "{text}");
}

/// Holds SQLite's write lock on `p`'s database from another connection for `hold`, on a
/// thread; returns once the lock is taken.
fn hold_write_lock(p: &Project, hold: Duration) -> std::thread::JoinHandle<()> {
    let mut c = crate::writes::sqlite(p);
    let (taken, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        diesel::sql_query("BEGIN IMMEDIATE")
            .execute(&mut c)
            .unwrap();
        taken.send(()).unwrap();
        std::thread::sleep(hold);
        diesel::sql_query("COMMIT").execute(&mut c).unwrap();
    });
    rx.recv().unwrap();
    handle
}

/// Broke (review 17, medium 3): a client was told 503 (timeout) while its write went on and
/// committed: the timeout dropped the future, the blocking database task ran on, and each of
/// several sequential database calls could wait the whole busy timeout. Now one deadline per
/// request is carried into the database work: a write either commits and the client gets its
/// 201, or the client gets 503 and nothing is written.
#[test]
fn a_write_answered_503_is_never_committed() {
    // As reported: the reference service's notes routes, a development token (so the old
    // code also recorded the user, one more wait), request_timeout 2 s.
    let notes = Notes::new().reference_access();
    let p = Project::new(&format!(
        "[server]\nrequest_timeout = \"2s\"\n\
         [database]\nurl = \"sqlite://data/notes.db\"\nbusy_timeout = \"1900ms\"\n\
         [auth.dev]\nenabled = true\n\
         [roles.editor]\npermissions = [\"notes:read\", \"notes:create\"]\n\
         [rate_limits.writes]\nkey = \"user\"\nper_second = 1000\nburst = 1000\n{notes}"
    ));
    let out = p.run(&["token", "--sub", "alice", "--role", "editor"], &[]);
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let s = p.serve(&[]);
    let post = |title: &str| {
        client()
            .post(s.url("/api/notes"))
            .bearer_auth(&token)
            .json(&json!({ "title": title }))
            .send()
            .unwrap()
    };

    // The reported case: an outside writer holds the lock 2.6 s, longer than the request
    // may take.
    let lock = hold_write_lock(&p, Duration::from_millis(2600));
    let res = post("late");
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.headers().contains_key("retry-after"));
    lock.join().unwrap();
    // The lock is gone and the writer idle: had the write been kept, it would be here now.
    assert_eq!(post("probe").status(), StatusCode::CREATED);
    assert_eq!(
        crate::writes::titles(&p),
        ["probe"],
        "the 503 write left nothing"
    );

    // Released in time: the write waits for it and commits.
    let lock = hold_write_lock(&p, Duration::from_millis(500));
    let res = post("in time");
    assert_eq!(res.status(), StatusCode::CREATED);
    lock.join().unwrap();
    assert_eq!(crate::writes::titles(&p), ["in time", "probe"]);

    // The deadline, not only the busy timeout, bounds the wait: a body that takes 1.5 s
    // to arrive leaves the write about 0.5 s, so a lock held for 2.6 s makes it a 503
    // although the lock is released well within the busy timeout of the write's own start.
    let lock = hold_write_lock(&p, Duration::from_millis(2600));
    let body = r#"{"title":"slow body"}"#;
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", s.port())).unwrap();
    write!(
        conn,
        "POST /api/notes HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    conn.write_all(body.as_bytes()).unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    lock.join().unwrap();
    assert_eq!(post("probe 2").status(), StatusCode::CREATED);
    assert_eq!(
        crate::writes::titles(&p),
        ["in time", "probe", "probe 2"],
        "the slow write left nothing"
    );
    // Every stage answered by the deadline: the envelope's backstop never had to.
    assert!(!s.log().contains("outlived its deadline"), "{}", s.log());
}

/// The same on PostgreSQL, which keeps its pool: an outside transaction holds the table
/// locked for 2.6 s; the write's statements wait no longer than the request's deadline
/// (`SET LOCAL lock_timeout`), so the client gets 503 and the row is never written. Released
/// in time, the write commits.
#[cfg(feature = "postgres")]
#[test]
fn a_write_answered_503_is_never_committed_on_postgresql() {
    let url = crate::resources::pg::fresh_schema();
    let p = Project::new(&format!(
        "[server]\nrequest_timeout = \"2s\"\n[database]\nurl = \"{url}\"\nbusy_timeout = \"1900ms\"\n{}",
        Notes::new()
    ));
    let s = p.serve(&[]);
    let post = |title: &str| {
        client()
            .post(s.url("/api/notes"))
            .json(&json!({ "title": title }))
            .send()
            .unwrap()
    };
    assert_eq!(post("before").status(), StatusCode::CREATED);
    let lock = |hold: Duration| {
        let mut c = diesel::PgConnection::establish(&url).unwrap();
        let (taken, rx) = std::sync::mpsc::channel();
        let handle = std::thread::spawn(move || {
            diesel::sql_query("BEGIN").execute(&mut c).unwrap();
            diesel::sql_query("LOCK TABLE notes IN EXCLUSIVE MODE")
                .execute(&mut c)
                .unwrap();
            taken.send(()).unwrap();
            std::thread::sleep(hold);
            diesel::sql_query("COMMIT").execute(&mut c).unwrap();
        });
        rx.recv().unwrap();
        handle
    };
    let held = lock(Duration::from_millis(2600));
    let res = post("late");
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    held.join().unwrap();
    let held = lock(Duration::from_millis(500));
    assert_eq!(post("in time").status(), StatusCode::CREATED);
    held.join().unwrap();
    let titles: Vec<String> = client()
        .get(s.url("/api/notes?sort=title"))
        .send()
        .unwrap()
        .json::<Value>()
        .unwrap()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["title"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(titles, ["before", "in time"], "the 503 write left nothing");
    assert!(!s.log().contains("outlived its deadline"), "{}", s.log());
}

/// An owned notes service with an encrypted `secret` guarded by `notes:secret`: `viewer`
/// reads notes but not secrets, `editor` reads secrets of its own notes, `admin` all.
fn secret_notes() -> (Project, String, String, String) {
    let notes = Notes::new()
        .resource("owner = true")
        .resource("encrypted = [\"secret\"]")
        .resource("field_permissions = { secret = \"notes:secret\" }")
        .reference_access();
    let p = Project::new(&format!(
        "[auth.dev]\nenabled = true\n[roles.viewer]\npermissions = [\"notes:read\"]\n\
         [roles.editor]\ninherits = [\"viewer\"]\npermissions = [\"notes:create\", \"notes:secret:own\"]\n\
         [roles.admin]\npermissions = [\"notes:*\"]\n\
         [rate_limits.writes]\nkey = \"user\"\nper_second = 1000\nburst = 1000\n{notes}"
    ));
    let token = |sub: &str, role: &str| {
        let out = p.run(&["token", "--sub", sub, "--role", role], &[]);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let (viewer, editor, admin) = (
        token("vic", "viewer"),
        token("eve", "editor"),
        token("ada", "admin"),
    );
    (p, viewer, editor, admin)
}

const K1: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const K2: &str = "k2:HxweHRwbGhkYFxYVFBMSERAPDg0MCwoJCAcGBQQDAgE=";

fn get_as(s: &Server, token: &str, path: &str) -> (StatusCode, Value) {
    let res = client().get(s.url(path)).bearer_auth(token).send().unwrap();
    let status = res.status();
    (status, res.json().unwrap_or(Value::Null))
}

/// Broke (review 17, low 4): one row that did not decrypt (a swapped ciphertext, a key id
/// missing from the ring) made every list containing it a 500, even for readers who may not
/// see the field, because decryption ran before redaction. Now only readable fields are
/// decrypted; a bad one is `null` and named in the row's `_errors`; a single row whose needed
/// field lacks its key is 503 `key-unavailable`.
#[test]
fn one_undecryptable_field_does_not_fail_the_list() {
    let (p, viewer, editor, admin) = secret_notes();
    let s = p.serve(&[("NESTFLUX_ENCRYPTION__KEYS", K1)]);
    let mut ids = Vec::new();
    for (title, secret) in [("a", "alpha-secret"), ("b", "bravo-secret")] {
        let res = client()
            .post(s.url("/api/notes"))
            .bearer_auth(&editor)
            .json(&json!({ "title": title, "secret": secret }))
            .send()
            .unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
        ids.push(
            res.json::<Value>().unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    // Swap the two ciphertexts behind the server's back.
    let db = p.path().join("nestflux.db");
    let mut c = diesel::SqliteConnection::establish(db.to_str().unwrap()).unwrap();
    #[derive(diesel::QueryableByName)]
    struct Secret {
        #[diesel(sql_type = diesel::sql_types::Text)]
        secret: String,
    }
    let stored = |c: &mut diesel::SqliteConnection, id: &str| {
        diesel::sql_query("SELECT secret FROM notes WHERE id = ?")
            .bind::<diesel::sql_types::Text, _>(id)
            .get_result::<Secret>(c)
            .unwrap()
            .secret
    };
    let (a, b) = (stored(&mut c, &ids[0]), stored(&mut c, &ids[1]));
    for (id, secret) in [(&ids[0], &b), (&ids[1], &a)] {
        diesel::sql_query("UPDATE notes SET secret = ? WHERE id = ?")
            .bind::<diesel::sql_types::Text, _>(secret)
            .bind::<diesel::sql_types::Text, _>(id)
            .execute(&mut c)
            .unwrap();
    }

    // Readers of the field: 200, the other fields intact, the bad one null and named.
    for token in [&admin, &editor] {
        let (status, page) = get_as(&s, token, "/api/notes");
        assert_eq!(status, StatusCode::OK, "{page}");
        let items = page["items"].as_array().unwrap();
        assert_eq!(items.len(), 2);
        for row in items {
            assert_eq!(row["secret"], Value::Null, "{row}");
            assert!(row["title"].is_string());
            assert_eq!(
                row["_errors"],
                json!([{ "field": "secret", "code": "undecryptable" }])
            );
        }
        let (status, row) = get_as(&s, token, &format!("/api/notes/{}", ids[0]));
        assert_eq!(status, StatusCode::OK);
        assert_eq!(row["_errors"][0]["code"], "undecryptable");
    }
    // A reader without the field's permission: the field was never decrypted, nothing to
    // report.
    let (status, page) = get_as(&s, &viewer, "/api/notes");
    assert_eq!(status, StatusCode::OK);
    for row in page["items"].as_array().unwrap() {
        assert!(
            row.get("secret").is_none() && row.get("_errors").is_none(),
            "{row}"
        );
    }
    let log = s.log_when(|l| l.contains("could not be decrypted"));
    assert!(log.contains("\"kid\":\"k1\""), "{log}");
    for secret in ["alpha-secret", "bravo-secret"] {
        assert!(!log.contains(secret));
    }
    drop(s);

    // Stored under a key the ring no longer holds: warned at startup; one row is a 503
    // for a reader who needs the field, and a plain 200 for one who may not read it.
    diesel::sql_query("UPDATE notes SET secret = NULL WHERE title = 'b'")
        .execute(&mut c)
        .unwrap();
    let s = p.serve(&[("NESTFLUX_ENCRYPTION__KEYS", K2)]);
    let log = s.log_when(|l| l.contains("stored values need key"));
    assert!(log.contains("stored values need key \\\"k1\\\""), "{log}");
    let path = format!("/api/notes/{}", ids[0]);
    let (status, body) = get_as(&s, &admin, &path);
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["type"], "urn:nestflux:problem:key-unavailable");
    let (status, body) = get_as(&s, &viewer, &path);
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.get("secret").is_none() && body.get("_errors").is_none());
    let (status, page) = get_as(&s, &admin, "/api/notes");
    assert_eq!(status, StatusCode::OK);
    let codes: Vec<Value> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["_errors"].clone())
        .collect();
    assert_eq!(
        codes,
        [
            json!([{ "field": "secret", "code": "key-unavailable" }]),
            Value::Null
        ]
    );
}

/// Broke (review 17, low 7): cursors were not authenticated although the README said a
/// foreign cursor is refused, and sorting by a long text field (a 10,000-character `body`)
/// made a 4 KB cursor that was then refused, so paging broke. Now cursors carry a MAC and are
/// bounded, long text is not sortable (the 422 says why), and `cursor=` is the first page.
#[test]
fn cursors_are_authenticated_bounded_and_paging_works() {
    // Two resources of one schema: a cursor of one list is foreign to the other.
    let config = format!(
        "{}\n{}\n[resources.drafts]\nschema = \"Note\"\n",
        Notes::new(),
        crate::fixtures::crud_routes("drafts")
    );
    let p = Project::new(&config);
    let s = p.serve(&[]);
    let c = client();
    for path in ["/api/notes", "/api/drafts"] {
        for i in 0..5 {
            let res = c
                .post(s.url(path))
                .json(&json!({ "title": format!("t{i}"), "body": "x".repeat(10_000), "priority": i % 3 + 1 }))
                .send()
                .unwrap();
            assert_eq!(res.status(), StatusCode::CREATED);
        }
    }
    let page = |path: &str| -> (StatusCode, Value) {
        let res = c.get(s.url(path)).send().unwrap();
        let status = res.status();
        (status, res.json().unwrap_or(Value::Null))
    };
    // Paging by a sortable field sees every row once.
    let mut seen = Vec::new();
    let mut next = String::new();
    loop {
        let (status, body) = page(&format!("/api/notes?limit=2&sort=-priority&cursor={next}"));
        assert_eq!(status, StatusCode::OK, "{body}");
        for row in body["items"].as_array().unwrap() {
            seen.push(row["title"].as_str().unwrap().to_string());
        }
        match body["next_cursor"].as_str() {
            Some(cursor) => {
                assert!(cursor.len() < 512, "{cursor}");
                next = cursor.to_string();
            }
            None => break,
        }
    }
    seen.sort();
    assert_eq!(seen, ["t0", "t1", "t2", "t3", "t4"]);

    let (_, first) = page("/api/notes?limit=2&sort=title");
    let cursor = first["next_cursor"].as_str().unwrap().to_string();
    let (status, _) = page(&format!("/api/notes?limit=2&sort=title&cursor={cursor}"));
    assert_eq!(status, StatusCode::OK);
    // Edited: the value inside changed, the tag kept.
    let (payload, tag) = cursor.split_once('.').unwrap();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let text = String::from_utf8(b64.decode(payload).unwrap()).unwrap();
    let edited = format!("{}.{tag}", b64.encode(text.replace("t1", "t0")));
    // Foreign: made by the same server for another resource's list.
    let (_, drafts) = page("/api/drafts?limit=2&sort=title");
    let foreign = drafts["next_cursor"].as_str().unwrap().to_string();
    for bad in [edited, foreign, "A".repeat(4000), payload.to_string()] {
        let (status, body) = page(&format!("/api/notes?limit=2&sort=title&cursor={bad}"));
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["type"], "urn:nestflux:problem:invalid-cursor");
    }
    // An empty cursor is the first page.
    let (status, body) = page("/api/notes?limit=2&sort=title&cursor=");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["items"], first["items"]);
    // Long text is not a sort key, and the refusal says why.
    let (status, body) = page("/api/notes?sort=body");
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("`body` is not sortable") && message.contains("256 characters"),
        "{message}"
    );
    // The OpenAPI document lists neither as a sort key nor as a filter.
    let out = p.run(&["openapi"], &[]);
    assert!(out.status.success(), "{out:?}");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let params = &doc["paths"]["/api/notes"]["get"]["parameters"];
    let sort = params
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "sort")
        .unwrap();
    assert!(
        !sort["schema"]["enum"]
            .as_array()
            .unwrap()
            .contains(&json!("body"))
    );
    assert!(
        params
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["name"] != "body")
    );
}

/// Broke (review 17, Schemathesis): a list filtered by a long text field with a huge value
/// (`?body=` and 40,000 characters) was a 400 the OpenAPI document did not describe. Long
/// text is not a filter (it has no index), so the answer is the declared 422 naming the
/// parameter, however long the value; and `cursor=` (empty) is the first page.
#[test]
fn a_huge_filter_on_long_text_is_a_declared_422() {
    let p = Project::new(&Notes::new().to_string());
    let s = p.serve(&[]);
    let c = client();
    for i in 0..3 {
        let res = c
            .post(s.url("/api/notes"))
            .json(&json!({ "title": format!("t{i}") }))
            .send()
            .unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
    }
    for len in [257, 10_001, 40_000] {
        let res = c
            .get(s.url(&format!("/api/notes?body={}", "x".repeat(len))))
            .send()
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{len}");
        assert_eq!(
            res.headers()["content-type"],
            "application/problem+json",
            "{len}"
        );
        let body: Value = res.json().unwrap();
        assert_eq!(body["errors"][0]["pointer"], "/query/body", "{body}");
        assert_eq!(body["errors"][0]["code"], "not_filterable", "{body}");
    }
    // The OpenAPI document declares the 422 on the list, and no `body` parameter.
    let out = p.run(&["openapi"], &[]);
    assert!(out.status.success(), "{out:?}");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = &doc["paths"]["/api/notes"]["get"];
    assert!(list["responses"]["422"].is_object(), "{list}");
    assert!(
        list["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["name"] != "body")
    );
    // `cursor=` is the first page, also with the default sort and limit.
    let first: Value = c.get(s.url("/api/notes")).send().unwrap().json().unwrap();
    let res = c.get(s.url("/api/notes?cursor=")).send().unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let empty: Value = res.json().unwrap();
    assert_eq!(empty["items"], first["items"]);
    assert_eq!(empty["items"].as_array().unwrap().len(), 3);
}

/// Broke (review 17, also fixed): `last_seen` in `nestflux_users` moved only when a token was
/// first verified (later requests hit the token cache), and an issuer written with and
/// without a trailing slash made two user rows for one person. Sightings now reach the users
/// table in the background on later requests too (at most once per
/// `database.last_seen_interval`), under the issuer without its trailing slash.
#[test]
fn last_seen_moves_on_later_requests_and_one_issuer_is_one_user() {
    use crate::oidc::{AUD, Provider, keys, nestflux_config, now};
    let dir = tempfile::tempdir().unwrap();
    let provider = Provider::start(0, &dir.path().join("keys.json"), "1");
    let issuer = provider.issuer();
    let rsa = keys(&provider.keys_file.to_string_lossy())
        .into_iter()
        .find(|k| k.alg == "RS256")
        .unwrap();
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(rsa.private_pem.as_bytes()).unwrap();
    let token = |iss: &str| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(rsa.kid.clone());
        let t = now();
        let claims = json!({ "iss": iss, "aud": AUD, "sub": "carol", "iat": t, "exp": t + 600 });
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    };
    let (plain, slashed) = (token(&issuer), token(&format!("{issuer}/")));
    let p = Project::new(&format!(
        "[database]\nlast_seen_interval = \"1s\"\n{}",
        nestflux_config(
            &issuer,
            AUD,
            "sha256:0000000000000000000000000000000000000000000000000000000000000000"
        )
    ));
    let s = p.serve(&[]);
    let me = |token: &str| {
        let res = client()
            .get(s.url("/api/me"))
            .bearer_auth(token)
            .send()
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    };
    #[derive(diesel::QueryableByName, Debug, PartialEq)]
    struct User {
        #[diesel(sql_type = diesel::sql_types::Text)]
        issuer: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        first_seen: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        last_seen: String,
    }
    let db = p.path().join("nestflux.db");
    let mut c = diesel::SqliteConnection::establish(db.to_str().unwrap()).unwrap();
    // Rows are written in the background: wait until they say what `done` expects.
    let mut users_until = |done: &dyn Fn(&[User]) -> bool| -> Vec<User> {
        for _ in 0..200 {
            let users: Vec<User> = diesel::sql_query(
                "SELECT issuer, first_seen, last_seen FROM nestflux_users WHERE subject = 'carol'",
            )
            .load(&mut c)
            .unwrap();
            if done(&users) {
                return users;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the users table never got there");
    };
    me(&plain);
    let first = users_until(&|u| u.len() == 1);
    assert_eq!(first[0].issuer, issuer);
    assert_eq!(first[0].first_seen, first[0].last_seen);
    // The same token later (answered from the token cache): last_seen moves.
    std::thread::sleep(Duration::from_millis(1100));
    me(&plain);
    let second = users_until(&|u| u.len() == 1 && u[0].last_seen > first[0].last_seen);
    assert_eq!(second[0].first_seen, first[0].first_seen);
    // The issuer spelt with a trailing slash: the same person, the same row.
    std::thread::sleep(Duration::from_millis(1100));
    me(&slashed);
    let third =
        users_until(&|u| !u.is_empty() && u.iter().any(|u| u.last_seen > second[0].last_seen));
    assert_eq!(third.len(), 1, "{third:?}");
    assert_eq!(third[0].issuer, issuer, "stored without the trailing slash");
}

// Fixed without a test here, because no test can make them happen on demand:
// - a crashed database task answered 503 (retry) instead of 500: nothing a client sends
//   crashes that task;
// - key rotation could overwrite a concurrent PATCH on PostgreSQL (rows are now locked): a
//   race that a test could only hit by chance;
// - health checked the database on every request (now at most once a second): only timing
//   would show it, and tests make no timed assertions.
