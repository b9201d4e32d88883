//! Declared resources over real HTTP: every CRUD action, keyset lists, validation that
//! changes nothing, SQL injection attempts, drift refusal, crash safety and 503 on a locked
//! database. Runs on a SQLite file, and with `--features postgres` also against the
//! PostgreSQL server named by TEST_POSTGRES_URL (started by .ci/services.sh).

use std::collections::BTreeSet;

use crate::common::{Project, Server, client};
use crate::fixtures::Notes;
use diesel::prelude::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The notes fixture with two more field kinds: a boolean and a nullable number.
fn notes() -> Notes {
    Notes::new()
        .field("done", "{ type = \"boolean\", default = false }")
        .field(
            "score",
            "{ type = \"number\", optional = true, nullable = true }",
        )
}

/// Where a test's data lives.
#[derive(Clone, Debug)]
enum Db {
    Sqlite,
    #[allow(dead_code)]
    Postgres(String),
}

impl Db {
    fn config(&self) -> String {
        match self {
            Db::Sqlite => {
                "[database]\nurl = \"sqlite://data/notes.db\"\nbusy_timeout = \"300ms\"\n".into()
            }
            Db::Postgres(url) => format!("[database]\nurl = \"{url}\"\nbusy_timeout = \"2s\"\n"),
        }
    }
}

/// SQLite always; PostgreSQL too in a build with the `postgres` feature, each test in a
/// fresh schema of its own.
fn backends() -> Vec<Db> {
    #[allow(unused_mut)]
    let mut out = vec![Db::Sqlite];
    #[cfg(feature = "postgres")]
    out.push(Db::Postgres(pg::fresh_schema()));
    out
}

#[cfg(feature = "postgres")]
pub mod pg {
    use diesel::prelude::*;

    /// A new empty schema; returns a URL whose connections use it.
    pub fn fresh_schema() -> String {
        let base = std::env::var("TEST_POSTGRES_URL")
            .expect("TEST_POSTGRES_URL must name the test PostgreSQL (see .ci/services.sh)");
        let mut c = PgConnection::establish(&base).expect("connect to test PostgreSQL");
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        diesel::sql_query(format!("CREATE SCHEMA {name}"))
            .execute(&mut c)
            .expect("create schema");
        let sep = if base.contains('?') { '&' } else { '?' };
        format!("{base}{sep}options=-csearch_path%3D{name}")
    }
}

fn start(db: &Db, extra: &str) -> (Project, Server) {
    let p = Project::new(&format!("{}{extra}{}", db.config(), notes()));
    let s = p.serve(&[]);
    (p, s)
}

fn post(s: &Server, body: Value) -> reqwest::blocking::Response {
    client()
        .post(s.url("/api/notes"))
        .json(&body)
        .send()
        .unwrap()
}

fn list_all(s: &Server, query: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = s.url(&format!("/api/notes?{query}"));
        if let Some(c) = &cursor {
            url += &format!("&cursor={c}");
        }
        let page: Value = client().get(url).send().unwrap().json().unwrap();
        out.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return out,
        }
    }
}

fn sqlite(p: &Project) -> SqliteConnection {
    SqliteConnection::establish(p.path().join("data/notes.db").to_str().unwrap()).unwrap()
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

fn sqlite_rows(p: &Project) -> i64 {
    diesel::sql_query("SELECT count(*) AS n FROM notes")
        .get_result::<Count>(&mut sqlite(p))
        .unwrap()
        .n
}

#[test]
fn every_action_round_trips_with_typed_output() {
    for db in backends() {
        let (_p, s) = start(&db, "");
        let res = post(
            &s,
            json!({"title": "hello", "tags": ["a", "b"], "done": true, "score": 1.5}),
        );
        assert_eq!(res.status(), StatusCode::CREATED, "{db:?}");
        let location = res.headers()["location"].to_str().unwrap().to_string();
        let created: Value = res.json().unwrap();
        let id = created["id"].as_str().unwrap().to_string();
        assert_eq!(location, format!("/api/notes/{id}"));
        assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 7);
        assert_eq!(created["title"], "hello");
        assert_eq!(created["body"], "", "default applied");
        assert_eq!(created["tags"], json!(["a", "b"]));
        assert_eq!(created["priority"], json!(3));
        assert_eq!(created["done"], json!(true));
        assert_eq!(created["score"], json!(1.5));
        assert_eq!(created["due"], Value::Null);
        assert!(created["created_at"].as_str().unwrap().ends_with('Z'));
        assert_eq!(created["created_at"], created["updated_at"]);

        let got: Value = client()
            .get(s.url(&location))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(got, created);

        // What a create answers is what a read returns, for every kind: a whole-number
        // `number`, `false`, an empty array, escapes and non-ASCII text, an absent field.
        let res = post(
            &s,
            json!({"title": "a \"quoted\" \u{e9}\n\\", "tags": [], "done": false, "score": 2}),
        );
        assert_eq!(res.status(), StatusCode::CREATED, "{db:?}");
        let other = res.headers()["location"].to_str().unwrap().to_string();
        let created_other: Value = res.json().unwrap();
        let got_other: Value = client().get(s.url(&other)).send().unwrap().json().unwrap();
        assert_eq!(got_other, created_other, "{db:?}");
        assert_eq!(created_other["title"], "a \"quoted\" \u{e9}\n\\");
        assert_eq!(created_other["done"], json!(false));
        assert_eq!(created_other["score"].as_f64(), Some(2.0));
        assert_eq!(created_other["due"], Value::Null);

        let res = client()
            .patch(s.url(&location))
            .json(&json!({"priority": 5, "due": "2026-12-01T10:00:00Z", "tags": []}))
            .send()
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let patched: Value = res.json().unwrap();
        assert_eq!(
            (patched["priority"].clone(), patched["title"].clone()),
            (json!(5), json!("hello")),
            "merge keeps other fields"
        );
        assert_eq!(patched["due"], "2026-12-01T10:00:00Z");
        assert_eq!(patched["tags"], json!([]));
        assert_ne!(patched["updated_at"], created["updated_at"]);
        assert_eq!(patched["created_at"], created["created_at"]);

        let cleared: Value = client()
            .patch(s.url(&location))
            .json(&json!({"due": null, "score": null}))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(
            (cleared["due"].clone(), cleared["score"].clone()),
            (Value::Null, Value::Null)
        );
        let res = client()
            .patch(s.url(&location))
            .json(&json!({"title": null}))
            .send()
            .unwrap();
        assert_eq!(
            res.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "a required field cannot be cleared"
        );

        assert_eq!(
            client().delete(s.url(&location)).send().unwrap().status(),
            StatusCode::NO_CONTENT
        );
        for res in [
            client().get(s.url(&location)).send().unwrap(),
            client().delete(s.url(&location)).send().unwrap(),
            client()
                .patch(s.url(&location))
                .json(&json!({"title": "x"}))
                .send()
                .unwrap(),
            client().get(s.url("/api/notes/not-a-uuid")).send().unwrap(),
        ] {
            assert_eq!(res.status(), StatusCode::NOT_FOUND);
            assert_eq!(res.headers()["content-type"], "application/problem+json");
        }
    }
}

#[test]
fn invalid_writes_change_nothing() {
    for db in backends() {
        let (p, s) = start(&db, "");
        assert_eq!(
            post(&s, json!({"title": "keep"})).status(),
            StatusCode::CREATED
        );
        let res = post(&s, json!({"title": "", "priority": 9, "extra": 1}));
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let body: Value = res.json().unwrap();
        let got: BTreeSet<(String, String)> = body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["pointer"].as_str().unwrap().into(),
                    e["code"].as_str().unwrap().into(),
                )
            })
            .collect();
        let want: BTreeSet<(String, String)> = [
            ("/title", "too_short"),
            ("/priority", "maximum"),
            ("/extra", "unknown_field"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(got, want);
        let res = client()
            .post(s.url("/api/notes"))
            .header("content-type", "application/json")
            .body("[1,2")
            .send()
            .unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        let res = client()
            .post(s.url("/api/notes"))
            .header("content-type", "text/plain")
            .body("title=x")
            .send()
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let res = client().post(s.url("/api/notes")).send().unwrap();
        assert_eq!(
            res.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "a missing body is a validation error"
        );
        assert_eq!(list_all(&s, "").len(), 1);
        if let Db::Sqlite = db {
            assert_eq!(sqlite_rows(&p), 1);
        }
    }
}

#[test]
fn lists_page_by_keyset_sort_and_filter() {
    for db in backends() {
        let (_p, s) = start(&db, "");
        for i in 0..7 {
            post(
                &s,
                json!({"title": format!("n{i}"), "priority": (i % 5) + 1, "done": i % 2 == 0}),
            );
        }
        let page: Value = client()
            .get(s.url("/api/notes"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(
            page["items"].as_array().unwrap().len(),
            7,
            "default limit 50"
        );
        assert_eq!(page["next_cursor"], Value::Null);

        // Walk pages of 3 while new rows arrive: every row that existed is seen exactly once.
        let before: BTreeSet<String> = list_all(&s, "")
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect();
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        for round in 0.. {
            let url = match &cursor {
                Some(c) => s.url(&format!("/api/notes?limit=3&sort=-priority&cursor={c}")),
                None => s.url("/api/notes?limit=3&sort=-priority"),
            };
            let page: Value = client().get(url).send().unwrap().json().unwrap();
            assert!(page["items"].as_array().unwrap().len() <= 3);
            seen.extend(page["items"].as_array().unwrap().iter().cloned());
            post(&s, json!({"title": format!("late{round}"), "priority": 3}));
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        let ids: Vec<String> = seen
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect();
        let unique: BTreeSet<String> = ids.iter().cloned().collect();
        assert_eq!(unique.len(), ids.len(), "no row twice");
        assert!(before.is_subset(&unique), "no pre-existing row skipped");
        let prios: Vec<i64> = seen
            .iter()
            .map(|r| r["priority"].as_i64().unwrap())
            .collect();
        assert!(
            prios.windows(2).all(|w| w[0] >= w[1]),
            "sorted descending: {prios:?}"
        );

        let fives = list_all(&s, "priority=5");
        assert!(!fives.is_empty() && fives.iter().all(|r| r["priority"] == 5));
        let done = list_all(&s, "done=true&title=n0");
        assert_eq!(done.len(), 1);
        assert_eq!(done[0]["title"], "n0");

        for (query, status) in [
            ("limit=0", StatusCode::UNPROCESSABLE_ENTITY),
            ("limit=201", StatusCode::UNPROCESSABLE_ENTITY),
            ("limit=200", StatusCode::OK),
            ("sort=due", StatusCode::UNPROCESSABLE_ENTITY),
            ("sort=tags", StatusCode::UNPROCESSABLE_ENTITY),
            ("tags=a", StatusCode::UNPROCESSABLE_ENTITY),
            ("priority=high", StatusCode::UNPROCESSABLE_ENTITY),
            ("priority=1&priority=2", StatusCode::UNPROCESSABLE_ENTITY),
            ("cursor=garbage", StatusCode::BAD_REQUEST),
        ] {
            let res = client()
                .get(s.url(&format!("/api/notes?{query}")))
                .send()
                .unwrap();
            assert_eq!(res.status(), status, "{query}");
        }
        // A cursor is only valid for the query that made it.
        let page: Value = client()
            .get(s.url("/api/notes?limit=1&sort=priority"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let c = page["next_cursor"].as_str().unwrap();
        let res = client()
            .get(s.url(&format!("/api/notes?limit=1&sort=title&cursor={c}")))
            .send()
            .unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    }
}

#[test]
fn injection_attempts_are_refused_or_stored_as_data() {
    for db in backends() {
        let (_p, s) = start(&db, "");
        let evil = "'); DROP TABLE notes; --";
        let res = post(&s, json!({"title": evil, "tags": ["\" OR 1=1 --"]}));
        assert_eq!(res.status(), StatusCode::CREATED);
        let row: Value = res.json().unwrap();
        assert_eq!(row["title"], evil);
        post(&s, json!({"title": "plain"}));

        let enc = |q: &str| url::form_urlencoded::byte_serialize(q.as_bytes()).collect::<String>();
        let res = client()
            .get(s.url(&format!("/api/notes?title={}", enc("x' OR '1'='1"))))
            .send()
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let page: Value = res.json().unwrap();
        assert_eq!(
            page["items"].as_array().unwrap().len(),
            0,
            "filter value is data, not SQL"
        );
        let found: Value = client()
            .get(s.url(&format!("/api/notes?title={}", enc(evil))))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(found["items"].as_array().unwrap().len(), 1);

        for query in [
            format!("sort={}", enc("title; DROP TABLE notes")),
            format!("sort={}", enc("-title DESC, (SELECT 1)")),
            format!("{}=1", enc("title\" = 1 OR \"1")),
            format!("priority={}", enc("1 OR 1=1")),
        ] {
            let res = client()
                .get(s.url(&format!("/api/notes?{query}")))
                .send()
                .unwrap();
            assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{query}");
        }
        let forged =
            base64_url(&json!({"s": "id", "d": false, "v": "x", "i": "' OR 1=1 --"}).to_string());
        let res = client()
            .get(s.url(&format!("/api/notes?cursor={forged}")))
            .send()
            .unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        for path in [
            "/api/notes/1'%20OR%20'1'='1",
            "/api/notes/%27%3B%20DROP%20TABLE%20notes%3B--",
        ] {
            assert_eq!(
                client().get(s.url(path)).send().unwrap().status(),
                StatusCode::NOT_FOUND
            );
            assert_eq!(
                client().delete(s.url(path)).send().unwrap().status(),
                StatusCode::NOT_FOUND
            );
        }
        assert_eq!(list_all(&s, "").len(), 2, "the table is intact");
    }
}

fn base64_url(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

#[test]
fn destructive_drift_is_refused_and_data_kept() {
    for db in backends() {
        let p = Project::new(&format!("{}{}", db.config(), notes()));
        let id = {
            let s = p.serve(&[]);
            let row: Value = post(&s, json!({"title": "survivor", "priority": 4}))
                .json()
                .unwrap();
            row["id"].as_str().unwrap().to_string()
        };
        let retyped = notes()
            .retype("priority", "{ type = \"string\", default = \"3\" }")
            .to_string();
        let dropped = notes().without_field("done").to_string();
        let required = notes()
            .field("owner_email", "{ type = \"string\", format = \"email\" }")
            .to_string();
        for (config, expected) in [
            (
                &retyped,
                "resources.notes: field `priority` would change type",
            ),
            (
                &dropped,
                "resources.notes: column `done` exists but is no longer declared",
            ),
            (
                &required,
                "resources.notes: new field `owner_email` is required and has no default",
            ),
        ] {
            std::fs::write(p.config(), format!("{}{config}", db.config())).unwrap();
            let err = p.try_serve(&[]).err().expect("serve must refuse drift");
            assert!(err.contains(expected), "{err}");
            let out = p.run(&["migrate"], &[]);
            assert_eq!(out.status.code(), Some(1));
            assert!(String::from_utf8_lossy(&out.stderr).contains(expected));
        }
        // An additive change is applied and the row survives with the new default.
        let added = notes().field("stars", "{ type = \"integer\", default = 0 }");
        std::fs::write(p.config(), format!("{}{added}", db.config())).unwrap();
        let out = p.run(&["migrate"], &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("added field notes.stars"));
        let s = p.serve(&[]);
        let row: Value = client()
            .get(s.url(&format!("/api/notes/{id}")))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(
            (
                row["title"].clone(),
                row["priority"].clone(),
                row["stars"].clone()
            ),
            (json!("survivor"), json!(4), json!(0))
        );
    }
}

#[test]
fn sigkill_during_writes_loses_no_acknowledged_row() {
    let p = Project::new(&format!("{}{}", Db::Sqlite.config(), notes()));
    let s = p.serve(&[]);
    let url = s.url("/api/notes");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (url, stop) = (url.clone(), stop.clone());
            std::thread::spawn(move || {
                let c = reqwest::blocking::Client::builder()
                    .timeout(std::time::Duration::from_secs(5))
                    .build()
                    .unwrap();
                let mut acked = Vec::new();
                for i in 0..2000 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let Ok(res) = c
                        .post(&url)
                        .json(&json!({"title": format!("w{w}-{i}")}))
                        .send()
                    else {
                        break;
                    };
                    if res.status() == StatusCode::CREATED
                        && let Ok(row) = res.json::<Value>()
                    {
                        acked.push(row["id"].as_str().unwrap_or_default().to_string());
                    }
                }
                acked
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let mut server = s;
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked: Vec<String> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    assert!(
        acked.len() > 10,
        "the load produced too few writes: {}",
        acked.len()
    );
    drop(server);

    #[derive(QueryableByName)]
    struct Check {
        #[diesel(sql_type = diesel::sql_types::Text)]
        integrity_check: String,
    }
    let mut c = sqlite(&p);
    let check: Vec<Check> = diesel::sql_query("PRAGMA integrity_check")
        .load(&mut c)
        .unwrap();
    assert_eq!(
        check
            .iter()
            .map(|c| c.integrity_check.as_str())
            .collect::<Vec<_>>(),
        vec!["ok"]
    );
    drop(c);

    let s = p.serve(&[]);
    let present: BTreeSet<String> = list_all(&s, "limit=200")
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    let missing: Vec<&String> = acked.iter().filter(|id| !present.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged rows lost: {missing:?}",
        missing.len()
    );
}

#[test]
fn locked_database_answers_503_then_recovers() {
    let (p, s) = start(&Db::Sqlite, "");
    assert_eq!(
        post(&s, json!({"title": "before"})).status(),
        StatusCode::CREATED
    );
    let mut lock = sqlite(&p);
    diesel::sql_query("BEGIN EXCLUSIVE")
        .execute(&mut lock)
        .unwrap();
    let res = post(&s, json!({"title": "during"}));
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.headers().contains_key("retry-after"));
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let body = res.text().unwrap();
    assert!(
        !body.to_lowercase().contains("locked") && !body.contains("sqlite"),
        "{body}"
    );
    diesel::sql_query("COMMIT").execute(&mut lock).unwrap();
    assert_eq!(
        post(&s, json!({"title": "after"})).status(),
        StatusCode::CREATED
    );
    let titles: Vec<String> = list_all(&s, "")
        .iter()
        .map(|r| r["title"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        titles,
        vec!["before", "after"],
        "the refused write left nothing behind"
    );
}

const K1: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const K2: &str = "k2:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

/// Encrypted fields on every backend: round trip, blind-index filter, and a rotation after
/// which only the new key is needed.
#[test]
fn encrypted_fields_round_trip_filter_and_rotate() {
    for db in backends() {
        let encrypted = notes()
            .resource("encrypted = [\"body\", \"title\"]")
            .resource("blind_index = [\"title\"]");
        let config = format!("{}{encrypted}", db.config());
        let p = Project::new(&config);
        let ids: Vec<String> = {
            let s = p.serve(&[("NESTFLUX_ENCRYPTION__KEYS", K1)]);
            (0..5)
                .map(|i| {
                    let res = post(
                        &s,
                        json!({"title": format!("t{i}"), "body": format!("secret body {i}")}),
                    );
                    assert_eq!(res.status(), StatusCode::CREATED, "{db:?}");
                    let row: Value = res.json().unwrap();
                    assert_eq!(row["body"], format!("secret body {i}"));
                    row["id"].as_str().unwrap().to_string()
                })
                .collect()
        };
        let out = p.run(
            &["keys", "rotate", "--batch-size", "2"],
            &[("NESTFLUX_ENCRYPTION__KEYS", &format!("{K2},{K1}"))],
        );
        assert!(
            out.status.success(),
            "{db:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let s = p.serve(&[("NESTFLUX_ENCRYPTION__KEYS", K2)]);
        for (i, id) in ids.iter().enumerate() {
            let row: Value = client()
                .get(s.url(&format!("/api/notes/{id}")))
                .send()
                .unwrap()
                .json()
                .unwrap();
            assert_eq!(
                (row["title"].clone(), row["body"].clone()),
                (json!(format!("t{i}")), json!(format!("secret body {i}"))),
                "{db:?}"
            );
        }
        let found = list_all(&s, "title=t3");
        assert_eq!(found.len(), 1, "{db:?}");
        assert_eq!(found[0]["id"], ids[3].as_str());
        let res = client().get(s.url("/api/notes?body=x")).send().unwrap();
        assert_eq!(
            res.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "no filter without a blind index"
        );
        let res = client().get(s.url("/api/notes?sort=title")).send().unwrap();
        assert_eq!(
            res.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "no sort on an encrypted field"
        );
    }
}
