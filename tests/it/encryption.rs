//! Encryption at rest over the real binary and a real SQLite file: no plaintext in the
//! database or its WAL, ciphertexts bound to their row, loud failures without keys, blind
//! index filters, and a rotation killed mid-way then resumed. In transit: the HTTP→HTTPS
//! redirect listener.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use crate::common::{self, Project, Server, client};
use crate::fixtures::crud_routes;
use diesel::prelude::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

const K1: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const K2: &str = "k2:HxweHRwbGhkYFxYVFBMSERAPDg0MCwoJCAcGBQQDAgE=";

/// People with an encrypted, blind-indexed email and an encrypted secret, behind the
/// fixture's CRUD routes, plus `/health`.
fn people() -> String {
    format!(
        r#"
[database]
url = "sqlite://data/people.db"

[schemas.Person]
name   = {{ type = "string", min_length = 1, max_length = 200 }}
email  = {{ type = "string", max_length = 200 }}
secret = {{ type = "string", max_length = 4000, optional = true }}

[resources.people]
schema = "Person"
encrypted = ["email", "secret"]
blind_index = ["email"]
{}
{}"#,
        common::MINIMAL,
        crud_routes("people")
    )
}

fn keys(ring: &str) -> [(&'static str, String); 1] {
    [("NESTFLUX_ENCRYPTION__KEYS", ring.to_string())]
}

fn serve(p: &Project, ring: &str) -> Server {
    let [(k, v)] = keys(ring);
    p.serve(&[(k, v.as_str())])
}

fn create(s: &Server, body: Value) -> Value {
    let res = client()
        .post(s.url("/api/people"))
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    res.json().unwrap()
}

fn db(p: &Project) -> SqliteConnection {
    SqliteConnection::establish(p.path().join("data/people.db").to_str().unwrap()).unwrap()
}

#[derive(QueryableByName, Debug)]
struct Stored {
    #[diesel(sql_type = diesel::sql_types::Text)]
    id: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    email: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    secret: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    email_index: Option<String>,
}

fn stored(p: &Project) -> Vec<Stored> {
    diesel::sql_query(
        "SELECT id, email, secret, email__bidx AS email_index FROM people ORDER BY id",
    )
    .load(&mut db(p))
    .unwrap()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every byte of the database, its WAL and shared-memory file.
fn database_bytes(p: &Project) -> Vec<(String, Vec<u8>)> {
    ["people.db", "people.db-wal", "people.db-shm"]
        .iter()
        .filter_map(|f| {
            std::fs::read(p.path().join("data").join(f))
                .ok()
                .map(|b| (f.to_string(), b))
        })
        .collect()
}

#[test]
fn plaintext_never_reaches_the_database_file_or_its_wal() {
    let p = Project::new(&people());
    let s = serve(&p, K1);
    let marker = "MARKER-6a1f0c93-plaintext-must-not-be-stored";
    let mut ids = Vec::new();
    for i in 0..60 {
        let row = create(
            &s,
            json!({"name": format!("person {i}"), "email": format!("{marker}-{i}@example.com"), "secret": format!("{marker} {}", "x".repeat(500))}),
        );
        assert!(row["secret"].as_str().unwrap().starts_with(marker), "{row}");
        ids.push(row["id"].as_str().unwrap().to_string());
    }
    let one: Value = client()
        .get(s.url(&format!("/api/people/{}", ids[7])))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(one["email"], format!("{marker}-7@example.com"));
    assert!(
        !one.as_object().unwrap().contains_key("email__bidx"),
        "{one}"
    );

    // Before a checkpoint the new pages sit in the WAL: scan it.
    let files = database_bytes(&p);
    assert!(
        files
            .iter()
            .any(|(f, b)| f.ends_with("-wal") && !b.is_empty()),
        "expected a WAL"
    );
    for (name, bytes) in &files {
        assert!(
            !contains(bytes, marker.as_bytes()),
            "plaintext marker found in {name}"
        );
        assert!(
            !contains(bytes, b"example.com"),
            "plaintext email found in {name}"
        );
    }
    // After a checkpoint the pages are in the main file: scan again.
    diesel::sql_query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut db(&p))
        .unwrap();
    for (name, bytes) in database_bytes(&p) {
        assert!(
            !contains(&bytes, marker.as_bytes()),
            "plaintext marker found in {name} after checkpoint"
        );
    }
    for row in stored(&p) {
        let email = row.email.unwrap();
        assert!(email.starts_with("nf1:k1:"), "{email}");
        assert!(row.secret.unwrap().starts_with("nf1:k1:"));
        assert!(row.email_index.unwrap().starts_with("k1:"));
    }
}

#[test]
fn a_ciphertext_moved_to_another_row_fails_to_decrypt() {
    let p = Project::new(&people());
    let s = serve(&p, K1);
    let a = create(
        &s,
        json!({"name": "a", "email": "a@example.com", "secret": "alpha-secret"}),
    );
    let b = create(
        &s,
        json!({"name": "b", "email": "b@example.com", "secret": "bravo-secret"}),
    );
    let (a_id, b_id) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    // Swap the two ciphertexts behind the server's back.
    let mut c = db(&p);
    let before = stored(&p);
    for (from, to) in [(&before[0], &before[1]), (&before[1], &before[0])] {
        diesel::sql_query("UPDATE people SET secret = ? WHERE id = ?")
            .bind::<diesel::sql_types::Nullable<diesel::sql_types::Text>, _>(from.secret.clone())
            .bind::<diesel::sql_types::Text, _>(&to.id)
            .execute(&mut c)
            .unwrap();
    }
    let rows = stored(&p);
    assert_eq!(rows[0].secret, before[1].secret);
    let ciphertexts: Vec<String> = rows.iter().map(|r| r.secret.clone().unwrap()).collect();

    // Each row keeps its other fields; the bad one is null and named in `_errors`.
    for path in [
        format!("/api/people/{a_id}"),
        format!("/api/people/{b_id}"),
        "/api/people".into(),
    ] {
        let res = client().get(s.url(&path)).send().unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        let body = res.text().unwrap();
        for secret in ["alpha-secret", "bravo-secret", "nf1:"] {
            assert!(!body.contains(secret), "{path}: {body}");
        }
        for ct in &ciphertexts {
            assert!(!body.contains(&ct[7..30]), "{path}: {body}");
        }
        let v: Value = serde_json::from_str(&body).unwrap();
        let rows = match v.get("items") {
            Some(items) => items.as_array().unwrap().clone(),
            None => vec![v],
        };
        assert_eq!(rows.len(), if path.ends_with("people") { 2 } else { 1 });
        for row in rows {
            assert_eq!(row["secret"], Value::Null, "{path}: {row}");
            assert!(row["email"].as_str().unwrap().ends_with("@example.com"));
            assert_eq!(
                row["_errors"],
                json!([{"field": "secret", "code": "undecryptable"}]),
                "{path}"
            );
        }
    }
    let log = s.log_when(|l| l.contains("does not decrypt with key"));
    assert!(
        log.contains("does not decrypt with key") && log.contains("k1"),
        "{log}"
    );
    for ct in &ciphertexts {
        assert!(!log.contains(&ct[7..]), "ciphertext in the log");
    }
    // The untouched field of the same rows still reads back once the swap is undone.
    diesel::sql_query("UPDATE people SET secret = NULL")
        .execute(&mut c)
        .unwrap();
    let ok: Value = client()
        .get(s.url(&format!("/api/people/{a_id}")))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(ok["email"], "a@example.com");
}

#[test]
fn missing_keys_fail_loudly() {
    let p = Project::new(&people());
    // Production: a startup (compile) error naming the resource.
    let out = p.run(&["check"], &[("NESTFLUX_PROFILE", "production")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("resources.people.encrypted") && err.contains("NESTFLUX_ENCRYPTION__KEYS"),
        "{err}"
    );

    // Development: starts with a loud warning and seals the fields with a development key
    // kept beside the database (see first_run.rs); nothing answers 503.
    let s = p.serve(&[]);
    let log = s.log_when(|l| l.contains("DEVELOPMENT ENCRYPTION KEY IN USE"));
    assert!(log.contains("DEVELOPMENT ENCRYPTION KEY IN USE"), "{log}");
    assert!(
        log.contains("Production refuses to start without NESTFLUX_ENCRYPTION__KEYS"),
        "{log}"
    );
    let res = client()
        .post(s.url("/api/people"))
        .json(&json!({"name": "x", "email": "x@example.com"}))
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(
        client().get(s.url("/api/people")).send().unwrap().status(),
        StatusCode::OK
    );
    drop(s);
    assert!(p.path().join("data/people.db.dev-key").exists());

    // A malformed key is a compile error that never echoes the key.
    let out = p.run(
        &["check"],
        &[("NESTFLUX_ENCRYPTION__KEYS", "k1:c2hvcnQta2V5")],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not 32 bytes") && !err.contains("c2hvcnQta2V5"),
        "{err}"
    );

    // Values under a key the ring no longer holds: one row is a 503 `key-unavailable` (it
    // will read again once the key is back), a list shows the field as null with the
    // reason; the key id is in the log, and in a warning at startup.
    let s = serve(&p, K1);
    let row = create(&s, json!({"name": "a", "email": "a@example.com"}));
    drop(s);
    let s = serve(&p, K2);
    // One warning per missing key, one after another: the development key's may come first.
    let log = s.log_when(|l| l.contains("stored values need key \\\"k1\\\""));
    assert!(
        log.contains("stored values need key") && log.contains("\"kid\":\"k1\""),
        "{log}"
    );
    let res = client()
        .get(s.url(&format!("/api/people/{}", row["id"].as_str().unwrap())))
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.headers().contains_key("retry-after"));
    let text = res.text().unwrap();
    assert!(!text.contains("nf1:"), "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["type"], "urn:nestflux:problem:key-unavailable");
    let page: Value = client()
        .get(s.url("/api/people"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    // The page also holds the development-key row `x` made above (its key is not in the
    // ring either): look `a` up by id.
    let a = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == row["id"])
        .unwrap();
    assert_eq!(a["email"], Value::Null);
    assert_eq!(a["name"], "a");
    assert_eq!(
        a["_errors"],
        json!([{"field": "email", "code": "key-unavailable"}])
    );
    let log = s.log_when(|l| l.contains("needs key"));
    assert!(log.contains("needs key") && log.contains("k1"), "{log}");
}

#[test]
fn a_blind_index_filter_finds_the_row() {
    let p = Project::new(&people());
    let s = serve(&p, K1);
    for who in ["ann", "bob", "cyd"] {
        create(
            &s,
            json!({"name": who, "email": format!("{who}@example.com"), "secret": format!("{who}'s secret")}),
        );
    }
    let found: Value = client()
        .get(s.url("/api/people?email=bob%40example.com"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let items = found["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{found}");
    assert_eq!(items[0]["name"], "bob");
    assert_eq!(items[0]["secret"], "bob's secret");
    let none: Value = client()
        .get(s.url("/api/people?email=BOB%40example.com"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(none["items"].as_array().unwrap().len(), 0);

    // An encrypted field without a blind index cannot be filtered or sorted.
    for q in ["secret=bob", "sort=email", "sort=secret"] {
        let res = client()
            .get(s.url(&format!("/api/people?{q}")))
            .send()
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{q}");
    }

    // An update re-indexes: the old value no longer matches, the new one does.
    let id = items[0]["id"].as_str().unwrap().to_string();
    let res = client()
        .patch(s.url(&format!("/api/people/{id}")))
        .json(&json!({"email": "robert@example.com"}))
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let old: Value = client()
        .get(s.url("/api/people?email=bob%40example.com"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(old["items"].as_array().unwrap().len(), 0);
    let new: Value = client()
        .get(s.url("/api/people?email=robert%40example.com"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(new["items"][0]["id"], id.as_str());
}

#[test]
fn keys_generate_prints_a_usable_key() {
    let p = Project::new(&people());
    let out = p.run(&["keys", "generate"], &[]);
    assert!(out.status.success());
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let (kid, b64) = key.split_once(':').unwrap();
    assert!(!kid.is_empty() && b64.len() == 44, "{key}");
    let s = serve(&p, &key);
    let row = create(&s, json!({"name": "n", "email": "n@example.com"}));
    assert_eq!(row["email"], "n@example.com");
    assert!(
        stored(&p)[0]
            .email
            .as_deref()
            .unwrap()
            .starts_with(&format!("nf1:{kid}:"))
    );
}

#[test]
fn rotation_killed_midway_then_rerun_leaves_every_value_readable_with_only_the_new_key() {
    const ROWS: usize = 150;
    let p = Project::new(&people());
    let s = serve(&p, K1);
    let mut expected = std::collections::BTreeMap::new();
    for i in 0..ROWS {
        let secret = (i % 3 != 0).then(|| format!("secret number {i}"));
        let mut body = json!({"name": format!("p{i}"), "email": format!("p{i}@example.com")});
        if let Some(secret) = &secret {
            body["secret"] = json!(secret);
        }
        let row = create(&s, body);
        expected.insert(
            row["id"].as_str().unwrap().to_string(),
            (format!("p{i}@example.com"), secret),
        );
    }
    drop(s);

    // Rotate one row per transaction and SIGKILL it after the first committed batch.
    let mut cmd = common::command();
    cmd.args(["keys", "rotate", "--batch-size", "1", "--config"])
        .arg(p.config())
        .current_dir(p.path())
        .env("NESTFLUX_ENCRYPTION__KEYS", format!("{K2},{K1}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.contains("batch 1 committed"), "{first}");
    child.kill().unwrap();
    child.wait().unwrap();

    let rows = stored(&p);
    let on = |kid: &str| {
        rows.iter()
            .filter(|r| {
                r.email
                    .as_deref()
                    .unwrap()
                    .starts_with(&format!("nf1:{kid}:"))
            })
            .count()
    };
    assert!(on("k2") >= 1, "the first batch was committed");
    assert!(
        on("k1") >= 1,
        "the kill came before the end ({} rows on k2)",
        on("k2")
    );

    // Rerun: resumes, skipping rows already on k2.
    let out = p.run(
        &["keys", "rotate", "--batch-size", "7"],
        &[("NESTFLUX_ENCRYPTION__KEYS", &format!("{K2},{K1}"))],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("people: {} rows re-encrypted to key k2", on("k1"))),
        "{text}"
    );
    // A third run has nothing left to do.
    let out = p.run(
        &["keys", "rotate"],
        &[("NESTFLUX_ENCRYPTION__KEYS", &format!("{K2},{K1}"))],
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("people: 0 rows re-encrypted"));

    for r in stored(&p) {
        assert!(r.email.unwrap().starts_with("nf1:k2:"));
        assert!(r.email_index.unwrap().starts_with("k2:"));
        if let Some(secret) = r.secret {
            assert!(secret.starts_with("nf1:k2:"), "{}", r.id);
        }
    }

    // Only the new key: every value reads back, and the blind index still finds rows.
    let s = serve(&p, K2);
    let mut seen = 0;
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => s.url(&format!("/api/people?limit=200&cursor={c}")),
            None => s.url("/api/people?limit=200"),
        };
        let res = client().get(url).send().unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let page: Value = res.json().unwrap();
        for item in page["items"].as_array().unwrap() {
            let (email, secret) = &expected[item["id"].as_str().unwrap()];
            assert_eq!(item["email"], email.as_str());
            assert_eq!(item["secret"].as_str(), secret.as_deref());
            seen += 1;
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, ROWS);
    let found: Value = client()
        .get(s.url("/api/people?email=p42%40example.com"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(found["items"][0]["name"], "p42");
}

#[test]
fn the_http_listener_redirects_to_the_configured_https_origin() {
    let ca = common::TestCa::new();
    let port = common::free_port();
    let p = Project::new(&format!(
        "[server.tls]\ncert = \"server.pem\"\nkey = \"server.key\"\nredirect_http = \"127.0.0.1:{port}\"\npublic_host = \"api.example.test\"\n{}",
        common::MINIMAL
    ));
    ca.install(&p);
    let s = p.serve(&[]);
    assert!(s.url.starts_with("https://"), "{}", s.url);
    // The redirect listener binds after the HTTPS one has logged that it listens.
    let log = s.log_when(|l| l.contains("nestflux redirecting http://"));
    assert!(log.contains("nestflux redirecting http://"), "{log}");
    for (path, host) in [
        ("/api/notes?limit=2&x=%2F", "evil.example"),
        ("//evil.example/x", "127.0.0.1"),
    ] {
        let res = client()
            .get(format!("http://127.0.0.1:{port}{path}"))
            .header("host", host)
            .send()
            .unwrap();
        assert_eq!(res.status(), StatusCode::PERMANENT_REDIRECT, "{path}");
        assert_eq!(
            res.headers()["location"],
            format!("https://api.example.test{path}").as_str()
        );
        assert!(res.headers().contains_key("x-content-type-options"));
    }

    // Without public_host the target is the bind address, which must then be specific.
    let p = Project::new(&format!(
        "[server]\nbind = \"0.0.0.0:8443\"\n[server.tls]\ncert = \"server.pem\"\nkey = \"server.key\"\nredirect_http = \"0.0.0.0:8080\"\n{}",
        common::MINIMAL
    ));
    ca.install(&p);
    let out = p.run(&["check"], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.tls.public_host"));
}
