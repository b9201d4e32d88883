//! The audit log over the real binary: one chained row per committed change and none for a
//! failed one, a failing audit insert taking its change with it, `audit verify` naming the
//! row that was edited, deleted or reordered, concurrent writers (two instances on
//! PostgreSQL), a flood of bad tokens folded into a few rows, no field value in any row,
//! the `audit` route's permission, filters and cursors, and pruning behind an anchor. Each
//! test runs on SQLite and, with `--features postgres`, on the PostgreSQL of
//! TEST_POSTGRES_URL.

use std::collections::BTreeSet;
use std::time::Duration;

use diesel::prelude::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{Project, Server, client};
use crate::fixtures::Notes;

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
            Db::Sqlite => "[database]\nurl = \"sqlite://data/notes.db\"\n".into(),
            Db::Postgres(url) => format!("[database]\nurl = \"{url}\"\n"),
        }
    }
}

fn backends() -> Vec<Db> {
    #[allow(unused_mut)]
    let mut out = vec![Db::Sqlite];
    #[cfg(feature = "postgres")]
    out.push(Db::Postgres(crate::resources::pg::fresh_schema()));
    out
}

/// A statement run by an outside client (the tamperer, the test's trigger).
fn exec(p: &Project, db: &Db, sql: &str) {
    match db {
        Db::Sqlite => {
            let path = p.path().join("data/notes.db");
            let mut c = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
            diesel::connection::SimpleConnection::batch_execute(&mut c, sql).unwrap();
        }
        #[cfg(feature = "postgres")]
        Db::Postgres(url) => {
            let mut c = PgConnection::establish(url).unwrap();
            diesel::connection::SimpleConnection::batch_execute(&mut c, sql).unwrap();
        }
        #[cfg(not(feature = "postgres"))]
        Db::Postgres(_) => unreachable!(),
    }
}

/// The notes routes with the reference's permissions, the audit route, and roles:
/// `editor` writes notes, `auditor` reads the audit log, `reader` only reads notes.
fn config(db: &Db, extra: &str) -> String {
    format!(
        "{}{extra}\n[auth.dev]\nenabled = true\n\
         [roles.editor]\npermissions = [\"notes:*\"]\n\
         [roles.auditor]\npermissions = [\"audit:read\"]\n\
         [roles.reader]\npermissions = [\"notes:read\"]\n\
         [rate_limits.writes]\nkey = \"user\"\nper_second = 10000\nburst = 10000\n\
         {}\n[[routes]]\nmethod = \"GET\"\npath = \"/api/audit\"\naction = \"audit\"\npermission = \"audit:read\"\n",
        db.config(),
        Notes::new().reference_access()
    )
}

fn token(p: &Project, sub: &str, role: &str) -> String {
    let out = p.run(&["token", "--sub", sub, "--role", role], &[]);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Every row, oldest first, as `nestflux audit export` writes them.
fn export(p: &Project, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["audit", "export"];
    all.extend_from_slice(args);
    let out = p.run(&all, &[]);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The rows of `action`s that record changes of data.
fn mutations(p: &Project) -> Vec<Value> {
    export(p, &[])
        .into_iter()
        .filter(|r| matches!(r["action"].as_str(), Some("create" | "update" | "delete")))
        .collect()
}

/// `nestflux audit verify`: (exit code, stdout).
fn verify(p: &Project) -> (i32, String) {
    let out = p.run(&["audit", "verify"], &[]);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
    )
}

fn post(s: &Server, token: &str, body: Value) -> reqwest::blocking::Response {
    client()
        .post(s.url("/api/notes"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .unwrap()
}

#[test]
fn one_row_per_committed_change_and_none_for_a_failed_one() {
    for db in backends() {
        let p = Project::new(&config(&db, ""));
        let alice = token(&p, "alice", "editor");
        let s = p.serve(&[]);
        let created: Value = {
            let res = post(&s, &alice, json!({ "title": "first", "tags": ["a"] }));
            assert_eq!(res.status(), StatusCode::CREATED, "{db:?}");
            res.json().unwrap()
        };
        let id = created["id"].as_str().unwrap().to_string();
        let res = client()
            .patch(s.url(&format!("/api/notes/{id}")))
            .bearer_auth(&alice)
            .json(&json!({ "priority": 5 }))
            .send()
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let res = client()
            .delete(s.url(&format!("/api/notes/{id}")))
            .bearer_auth(&alice)
            .send()
            .unwrap();
        assert_eq!(res.status(), StatusCode::NO_CONTENT);

        // Failures change nothing and record nothing: invalid body, unknown row (update and
        // delete), a row deleted already.
        assert_eq!(
            post(&s, &alice, json!({ "title": "" })).status(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        let gone = format!("/api/notes/{id}");
        for res in [
            client()
                .patch(s.url(&gone))
                .bearer_auth(&alice)
                .json(&json!({ "priority": 1 }))
                .send()
                .unwrap(),
            client()
                .delete(s.url(&gone))
                .bearer_auth(&alice)
                .send()
                .unwrap(),
        ] {
            assert_eq!(res.status(), StatusCode::NOT_FOUND);
        }

        let rows = mutations(&p);
        let actions: Vec<&str> = rows.iter().map(|r| r["action"].as_str().unwrap()).collect();
        assert_eq!(actions, ["create", "update", "delete"], "{db:?}: {rows:#?}");
        for r in &rows {
            assert_eq!(r["actor"], "dev:alice");
            assert_eq!(r["resource"], "notes");
            assert_eq!(r["record_id"], id.as_str());
            assert_eq!(r["outcome"], "ok");
            assert_eq!(r["hash"].as_str().unwrap().len(), 64);
            assert!(!r["request_id"].as_str().unwrap().is_empty());
            assert_eq!(r["client_ip"], "127.0.0.1");
        }
        // Field names only: the create names what it stored (defaults included), the update
        // what it changed; no value ("first", "a", 5) anywhere.
        let details = |i: usize| -> Value {
            serde_json::from_str(rows[i]["details"].as_str().unwrap()).unwrap()
        };
        let created = details(0);
        let created_fields: BTreeSet<&str> = created["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap())
            .collect();
        assert!(created_fields.contains("title") && created_fields.contains("tags"));
        assert_eq!(details(1), json!({ "fields": ["priority"] }));
        assert_eq!(details(2), json!({}));
        let text = serde_json::to_string(&rows).unwrap();
        assert!(!text.contains("first") && !text.contains("\"a\""), "{text}");
        assert_eq!(verify(&p).0, 0, "{db:?}: {}", verify(&p).1);
        // Also emitted as one JSON line under the target `audit`, the row's columns as fields.
        let log = s.log_when(|l| l.contains("\"action\":\"delete\""));
        let line = log
            .lines()
            .find(|l| l.contains("\"target\":\"audit\"") && l.contains("\"action\":\"delete\""))
            .unwrap_or_else(|| panic!("{log}"));
        let line: Value = serde_json::from_str(line).unwrap();
        assert_eq!(line["hash"], rows[2]["hash"]);
        assert_eq!(line["seq"], rows[2]["seq"]);
    }
}

#[test]
fn a_failing_audit_insert_rolls_its_change_back() {
    for db in backends() {
        let p = Project::new(&config(&db, ""));
        let alice = token(&p, "alice", "editor");
        let mallory = token(&p, "mallory", "editor");
        let s = p.serve(&[]);
        let kept = post(&s, &alice, json!({ "title": "kept" }));
        assert_eq!(kept.status(), StatusCode::CREATED);
        let kept: Value = kept.json().unwrap();
        // What an operator could do: a rule in the database refusing some audit rows.
        match db {
            Db::Sqlite => exec(
                &p,
                &db,
                "CREATE TRIGGER refuse_mallory BEFORE INSERT ON nestflux_audit \
                 WHEN NEW.actor = 'dev:mallory' BEGIN SELECT RAISE(ABORT, 'refused'); END;",
            ),
            Db::Postgres(_) => exec(
                &p,
                &db,
                "ALTER TABLE nestflux_audit ADD CONSTRAINT refuse_mallory CHECK (actor <> 'dev:mallory')",
            ),
        }
        let refused = post(&s, &mallory, json!({ "title": "never stored" }));
        assert!(
            refused.status().is_server_error(),
            "{db:?}: {}",
            refused.status()
        );
        let problem: Value = refused.json().unwrap();
        assert!(!problem.to_string().contains("refuse_mallory"), "{problem}");
        let id = kept["id"].as_str().unwrap();
        let update = client()
            .patch(s.url(&format!("/api/notes/{id}")))
            .bearer_auth(&mallory)
            .json(&json!({ "title": "changed" }))
            .send()
            .unwrap();
        assert!(update.status().is_server_error());
        let delete = client()
            .delete(s.url(&format!("/api/notes/{id}")))
            .bearer_auth(&mallory)
            .send()
            .unwrap();
        assert!(delete.status().is_server_error());

        // Nothing of mallory's happened: one note, unchanged, and no row names mallory.
        let list: Value = client()
            .get(s.url("/api/notes"))
            .bearer_auth(&alice)
            .send()
            .unwrap()
            .json()
            .unwrap();
        let items = list["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{db:?}: {list}");
        assert_eq!(items[0]["title"], "kept");
        // The writer goes on for everyone else.
        assert_eq!(
            post(&s, &alice, json!({ "title": "after" })).status(),
            StatusCode::CREATED
        );
        let rows = mutations(&p);
        assert_eq!(rows.len(), 2, "{rows:#?}");
        assert!(rows.iter().all(|r| r["actor"] == "dev:alice"));
        assert_eq!(verify(&p).0, 0, "{}", verify(&p).1);
    }
}

#[test]
fn a_row_appended_by_another_process_meanwhile_keeps_one_chain() {
    // The SQLite writer keeps the chain head between appends (issue 14): a row another
    // process appends meanwhile (`nestflux keys rotate`, on its own connection) must be
    // seen, or the next create would fork the chain.
    for db in backends() {
        let p = Project::new(&config(&db, ""));
        let alice = token(&p, "alice", "editor");
        let s = p.serve(&[]);
        for title in ["one", "two"] {
            assert_eq!(
                post(&s, &alice, json!({ "title": title })).status(),
                StatusCode::CREATED
            );
        }
        let key = p.run(&["keys", "generate"], &[]);
        let key = String::from_utf8(key.stdout).unwrap();
        let out = p.run(
            &["keys", "rotate"],
            &[("NESTFLUX_ENCRYPTION__KEYS", key.trim())],
        );
        assert!(out.status.success(), "{db:?}: {out:?}");
        assert_eq!(
            post(&s, &alice, json!({ "title": "three" })).status(),
            StatusCode::CREATED
        );
        let actions: Vec<String> = export(&p, &[])
            .iter()
            .map(|r| r["action"].as_str().unwrap().to_string())
            .filter(|a| a != "config.loaded")
            .collect();
        assert_eq!(
            actions,
            ["create", "create", "keys.rotate", "create"],
            "{db:?}"
        );
        assert_eq!(verify(&p).0, 0, "{db:?}: {}", verify(&p).1);
    }
}

#[test]
fn verify_names_the_row_that_was_edited_deleted_or_reordered() {
    for db in backends() {
        let p = Project::new(&config(&db, ""));
        let alice = token(&p, "alice", "editor");
        let s = p.serve(&[]);
        for i in 0..6 {
            assert_eq!(
                post(&s, &alice, json!({ "title": format!("n{i}") })).status(),
                StatusCode::CREATED
            );
        }
        drop(s);
        let (code, out) = verify(&p);
        assert_eq!(code, 0, "{db:?}: {out}");
        let rows = export(&p, &[]);
        assert!(rows.len() >= 6, "{rows:#?}");
        let row = |seq: i64| rows.iter().find(|r| r["seq"] == seq).unwrap().clone();
        let broken = |expect: &str| {
            let (code, out) = verify(&p);
            assert_eq!(code, 1, "{db:?}: {out}");
            assert!(out.contains(expect), "{db:?}: expected {expect:?} in {out}");
        };

        // Edited: a field of row 3.
        exec(
            &p,
            &db,
            "UPDATE nestflux_audit SET actor = 'dev:bob' WHERE seq = 3",
        );
        broken("broken at row 3");
        exec(
            &p,
            &db,
            &format!(
                "UPDATE nestflux_audit SET actor = '{}' WHERE seq = 3",
                row(3)["actor"].as_str().unwrap()
            ),
        );
        assert_eq!(verify(&p).0, 0);

        // Edited with its hash recomputed: the next row no longer links to it.
        exec(
            &p,
            &db,
            &format!(
                "UPDATE nestflux_audit SET hash = '{}' WHERE seq = 3",
                "0".repeat(64)
            ),
        );
        broken("broken at row 3");
        exec(
            &p,
            &db,
            &format!(
                "UPDATE nestflux_audit SET hash = '{}' WHERE seq = 3",
                row(3)["hash"].as_str().unwrap()
            ),
        );

        // Deleted: row 4 (then restored as it was).
        exec(&p, &db, "DELETE FROM nestflux_audit WHERE seq = 4");
        broken("broken at row 5: it follows row 3: row 4 is missing");
        let r4 = row(4);
        let q = |k: &str| format!("'{}'", r4[k].as_str().unwrap().replace('\'', "''"));
        exec(
            &p,
            &db,
            &format!(
                "INSERT INTO nestflux_audit (seq, at, actor, action, resource, record_id, outcome, details, request_id, client_ip, prev_hash, hash) \
                 VALUES (4, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {})",
                q("at"),
                q("actor"),
                q("action"),
                q("resource"),
                q("record_id"),
                q("outcome"),
                q("details"),
                q("request_id"),
                q("client_ip"),
                q("prev_hash"),
                q("hash")
            ),
        );
        assert_eq!(verify(&p).0, 0, "{}", verify(&p).1);

        // Reordered: rows 4 and 5 swap places.
        exec(
            &p,
            &db,
            "UPDATE nestflux_audit SET seq = -4 WHERE seq = 4; \
             UPDATE nestflux_audit SET seq = 4 WHERE seq = 5; \
             UPDATE nestflux_audit SET seq = 5 WHERE seq = -4;",
        );
        broken("broken at row 4");

        // The oldest rows deleted with no prune anchor.
        exec(
            &p,
            &db,
            "UPDATE nestflux_audit SET seq = -4 WHERE seq = 4; \
             UPDATE nestflux_audit SET seq = 4 WHERE seq = 5; \
             UPDATE nestflux_audit SET seq = 5 WHERE seq = -4;",
        );
        assert_eq!(verify(&p).0, 0);
        exec(&p, &db, "DELETE FROM nestflux_audit WHERE seq <= 2");
        broken("broken at row 3: rows before it are gone and no prune anchor records row 2");
    }
}

#[test]
fn concurrent_writers_leave_one_valid_chain() {
    for db in backends() {
        let p = Project::new(&config(&db, ""));
        let alice = token(&p, "alice", "editor");
        // PostgreSQL: two instances on one database, as several instances run.
        let servers: Vec<Server> = match db {
            Db::Sqlite => vec![p.serve(&[])],
            Db::Postgres(_) => vec![p.serve(&[]), p.serve(&[])],
        };
        const WRITERS: usize = 8;
        const EACH: usize = 25;
        std::thread::scope(|scope| {
            for w in 0..WRITERS {
                let (s, alice) = (&servers[w % servers.len()], &alice);
                scope.spawn(move || {
                    for i in 0..EACH {
                        let res = post(s, alice, json!({ "title": format!("w{w}-{i}") }));
                        assert_eq!(res.status(), StatusCode::CREATED);
                    }
                });
            }
        });
        drop(servers);
        let (code, out) = verify(&p);
        assert_eq!(code, 0, "{db:?}: {out}");
        let rows = export(&p, &[]);
        let seqs: Vec<i64> = rows.iter().map(|r| r["seq"].as_i64().unwrap()).collect();
        assert_eq!(
            seqs,
            (1..=seqs.len() as i64).collect::<Vec<_>>(),
            "gap-free from 1"
        );
        let creates = rows.iter().filter(|r| r["action"] == "create").count();
        assert_eq!(creates, WRITERS * EACH, "{db:?}");
    }
}

#[test]
fn a_flood_of_bad_tokens_adds_a_few_aggregated_rows() {
    const FLOOD: usize = 10_000;
    for db in backends() {
        // The built-in budget (30 at once, then one a second) turns most of the flood into
        // 429s before any signature check; 401s and 429s alike are counted per source.
        let p = Project::new(&config(&db, ""));
        let mut s = p.serve(&[]);
        let sent = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for t in 0..8 {
                let (s, sent) = (&s, &sent);
                scope.spawn(move || {
                    let c = client();
                    for i in (t..FLOOD).step_by(8) {
                        let res = c
                            .get(s.url("/api/notes"))
                            .bearer_auth(format!("eyJhbGciOiJFUzI1NiJ9.bad{i}.sig"))
                            .send()
                            .unwrap();
                        assert!(
                            matches!(res.status().as_u16(), 401 | 429),
                            "{}",
                            res.status()
                        );
                        sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                });
            }
        });
        assert_eq!(sent.into_inner(), FLOOD);
        // SIGTERM: the server writes the counters of the open window before it exits.
        let pid = s.child.id().to_string();
        assert!(
            std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let _ = s.child.wait();
        let rows = export(&p, &[]);
        let failures: Vec<&Value> = rows
            .iter()
            .filter(|r| r["action"] == "auth.failures")
            .collect();
        assert!(
            !failures.is_empty() && failures.len() <= 4,
            "{db:?}: {} rows: {failures:#?}",
            failures.len()
        );
        let counted: u64 = failures
            .iter()
            .map(|r| {
                let d: Value = serde_json::from_str(r["details"].as_str().unwrap()).unwrap();
                assert_eq!(r["client_ip"], "127.0.0.1");
                d["count"].as_u64().unwrap()
            })
            .sum();
        assert_eq!(counted, FLOOD as u64, "{db:?}: {failures:#?}");
        assert!(rows.len() < 10, "{db:?}: {} rows in all", rows.len());
        assert_eq!(verify(&p).0, 0);
    }
}

#[test]
fn no_field_value_reaches_the_audit_log() {
    const MARKER: &str = "MARKER-7f3a-secret-value";
    const TITLE: &str = "TITLE-c41e-visible-value";
    for db in backends() {
        let p = Project::new(&config(&db, "").replace(
            "[resources.notes]\nschema = \"Note\"\n",
            "[resources.notes]\nschema = \"Note\"\nencrypted = [\"secret\"]\n",
        ));
        let alice = token(&p, "alice", "editor");
        let s = p.serve(&[]);
        let res = post(&s, &alice, json!({ "title": TITLE, "secret": MARKER }));
        assert_eq!(res.status(), StatusCode::CREATED);
        let id = res.json::<Value>().unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let res = client()
            .patch(s.url(&format!("/api/notes/{id}")))
            .bearer_auth(&alice)
            .json(&json!({ "secret": format!("{MARKER}-2") }))
            .send()
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let rows = export(&p, &[]);
        let text = serde_json::to_string(&rows).unwrap();
        let update: Value =
            serde_json::from_str(rows.last().unwrap()["details"].as_str().unwrap()).unwrap();
        assert_eq!(
            update,
            json!({ "fields": ["secret"] }),
            "the field's name is recorded"
        );
        assert!(
            !text.contains(MARKER) && !text.contains(TITLE),
            "{db:?}: {text}"
        );
        if let Db::Sqlite = db {
            // The marker nowhere in the database: file and WAL (the audit rows included).
            for name in ["notes.db", "notes.db-wal"] {
                let path = p.path().join("data").join(name);
                if let Ok(bytes) = std::fs::read(&path) {
                    assert!(
                        !bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()),
                        "{name} holds the plaintext"
                    );
                }
            }
        }
        drop(s);
    }
}

#[test]
fn the_audit_route_needs_its_permission_and_filters_and_pages() {
    for db in backends() {
        let p = Project::new(&config(&db, ""));
        let (alice, bob) = (token(&p, "alice", "editor"), token(&p, "bob", "editor"));
        let (auditor, reader) = (token(&p, "ann", "auditor"), token(&p, "rick", "reader"));
        let s = p.serve(&[]);
        let mut ids = Vec::new();
        for (who, n) in [(&alice, 3), (&bob, 2)] {
            for i in 0..n {
                let res = post(&s, who, json!({ "title": format!("t{i}") }));
                ids.push(
                    res.json::<Value>().unwrap()["id"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                );
            }
        }
        let get = |token: &str, query: &str| {
            client()
                .get(s.url(&format!("/api/audit?{query}")))
                .bearer_auth(token)
                .send()
                .unwrap()
        };
        // Without `audit:read`: 403, and the denial itself is recorded.
        assert_eq!(get(&reader, "").status(), StatusCode::FORBIDDEN);
        assert_eq!(get(&alice, "").status(), StatusCode::FORBIDDEN);
        let anonymous = client().get(s.url("/api/audit")).send().unwrap();
        assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);

        let page = |query: &str| -> Value {
            let res = get(&auditor, query);
            assert_eq!(res.status(), StatusCode::OK, "{query}");
            res.json().unwrap()
        };
        let items = |v: &Value| v["items"].as_array().unwrap().clone();
        let by_bob = page("actor=dev:bob");
        assert_eq!(items(&by_bob).len(), 2);
        assert!(
            items(&by_bob)
                .iter()
                .all(|r| r["actor"] == "dev:bob" && r["action"] == "create")
        );
        // Details are served as the object they are.
        assert!(items(&by_bob)[0]["details"]["fields"].is_array());
        let one = page(&format!("resource=notes&record_id={}", ids[0]));
        assert_eq!(items(&one).len(), 1);
        assert_eq!(items(&one)[0]["actor"], "dev:alice");
        let creates = page("action=create");
        assert_eq!(items(&creates).len(), 5);
        // Newest first.
        let seqs: Vec<i64> = items(&creates)
            .iter()
            .map(|r| r["seq"].as_i64().unwrap())
            .collect();
        assert!(seqs.windows(2).all(|w| w[0] > w[1]), "{seqs:?}");
        // Time range: everything is after a minute ago and before a minute from now.
        let now = std::time::SystemTime::now();
        let ago = humantime::format_rfc3339(now - Duration::from_secs(60)).to_string();
        let later = humantime::format_rfc3339(now + Duration::from_secs(60)).to_string();
        assert_eq!(
            items(&page(&format!("action=create&since={ago}&until={later}"))).len(),
            5
        );
        assert_eq!(
            items(&page(&format!("action=create&since={later}"))).len(),
            0
        );
        assert_eq!(items(&page(&format!("action=create&until={ago}"))).len(), 0);
        // Any RFC 3339 date-time (issue 17: a year before 1970 was a 422): offsets, long
        // fractions, lowercase, the ends of years 0000 and 9999 past an offset.
        for (query, n) in [
            ("since=1969-07-20T20:17:40.000000001-05:00", 5),
            ("until=0568-03-10T08:44:13.0Z", 0),
            ("since=0000-01-01t00:30:00%2B01:00", 5),
            ("until=0000-01-01T00:30:00%2B01:00", 0),
            ("since=9999-12-31T23:30:00-01:00", 0),
            ("until=9999-12-31T23:30:00-01:00", 5),
        ] {
            assert_eq!(
                items(&page(&format!("action=create&{query}"))).len(),
                n,
                "{query}"
            );
        }

        // Pages of two, by cursor, cover the five creates once each.
        let mut seen = Vec::new();
        let mut cursor = String::new();
        loop {
            let v = page(&format!("action=create&limit=2&cursor={cursor}"));
            seen.extend(items(&v).iter().map(|r| r["seq"].as_i64().unwrap()));
            match v["next_cursor"].as_str() {
                Some(c) => cursor = c.to_string(),
                None => break,
            }
        }
        assert_eq!(seen, seqs);
        // A cursor edited, or one of a notes list, is refused.
        let first = page("action=create&limit=2");
        let c = first["next_cursor"].as_str().unwrap();
        let mut forged = c.to_string();
        forged.insert(2, if c.as_bytes()[2] == b'A' { 'B' } else { 'A' });
        assert_eq!(
            get(&auditor, &format!("cursor={forged}")).status(),
            StatusCode::BAD_REQUEST
        );
        let notes: Value = client()
            .get(s.url("/api/notes?limit=1"))
            .bearer_auth(&alice)
            .send()
            .unwrap()
            .json()
            .unwrap();
        let notes_cursor = notes["next_cursor"].as_str().unwrap();
        assert_eq!(
            get(&auditor, &format!("cursor={notes_cursor}")).status(),
            StatusCode::BAD_REQUEST
        );
        // Unknown parameters and bad values: 422 naming each.
        let res = get(&auditor, "colour=red&since=yesterday&limit=0");
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let problem: Value = res.json().unwrap();
        let pointers: BTreeSet<&str> = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["pointer"].as_str().unwrap())
            .collect();
        assert_eq!(
            pointers,
            BTreeSet::from(["/query/colour", "/query/since", "/query/limit"])
        );

        // The denials of rick and alice arrive through the sink.
        let denied = (0..100)
            .map(|_| {
                std::thread::sleep(Duration::from_millis(50));
                items(&page("action=authz.denied"))
            })
            .find(|d| d.len() >= 2)
            .unwrap_or_default();
        let actors: BTreeSet<&str> = denied
            .iter()
            .map(|r| r["actor"].as_str().unwrap())
            .collect();
        assert_eq!(
            actors,
            BTreeSet::from(["dev:alice", "dev:rick"]),
            "{denied:#?}"
        );
        assert!(denied.iter().all(|r| r["outcome"] == "denied"));
        // The configuration load is recorded with its fingerprint and profile.
        let loaded = items(&page("action=config.loaded"));
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0]["details"]["profile"], "development");
        // The plan's config_hash, the one `check` prints and the health detail shows (not
        // compared with `check` here: the test server's bind address comes from a variable,
        // and the hash covers the effective configuration).
        let hash = loaded[0]["details"]["config_hash"].as_str().unwrap();
        assert!(
            hash.strip_prefix("sha256:")
                .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit())),
            "{hash}"
        );
    }
}

#[test]
fn pruning_leaves_an_anchor_that_verify_accepts() {
    for db in backends() {
        let p = Project::new(&config(&db, ""));
        let alice = token(&p, "alice", "editor");
        let s = p.serve(&[]);
        for i in 0..4 {
            assert_eq!(
                post(&s, &alice, json!({ "title": format!("p{i}") })).status(),
                StatusCode::CREATED
            );
        }
        drop(s);
        let before = export(&p, &[]);
        let last = before.last().unwrap().clone();
        // Everything written so far is older than a second from now.
        let cutoff =
            humantime::format_rfc3339(std::time::SystemTime::now() + Duration::from_secs(1))
                .to_string();
        std::thread::sleep(Duration::from_millis(1100));
        let out = p.run(&["audit", "prune", "--before", &cutoff], &[]);
        assert!(out.status.success(), "{out:?}");
        let after = export(&p, &[]);
        assert_eq!(after.len(), 1, "{after:#?}");
        let anchor = &after[0];
        assert_eq!(anchor["action"], "audit.prune");
        assert_eq!(anchor["seq"], last["seq"].as_i64().unwrap() + 1);
        assert_eq!(anchor["record_id"], last["seq"].to_string());
        let (code, out) = verify(&p);
        assert_eq!(code, 0, "{db:?}: {out}");
        // The chain goes on after the anchor, and verify still passes.
        let s = p.serve(&[]);
        assert_eq!(
            post(&s, &alice, json!({ "title": "later" })).status(),
            StatusCode::CREATED
        );
        drop(s);
        assert_eq!(verify(&p).0, 0, "{}", verify(&p).1);
        // Removing the anchor is caught: the rows before the first are gone unexplained.
        exec(
            &p,
            &db,
            "DELETE FROM nestflux_audit WHERE action = 'audit.prune'",
        );
        let (code, out) = verify(&p);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("no prune anchor"), "{out}");
    }
}

#[test]
fn retention_is_checked_like_every_key() {
    let p = Project::new(&format!(
        "[audit]\nretain = \"1h\"\n{}",
        crate::common::MINIMAL
    ));
    let out = p.run(&["check"], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("audit.retain") && err.contains("at least 1d"),
        "{err}"
    );
    let p = Project::new(&format!(
        "[audit]\nretain = \"400d\"\n{}",
        crate::common::MINIMAL
    ));
    assert!(p.run(&["check"], &[]).status.success());
    let p = Project::new(&format!(
        "[audit]\nkeep = \"400d\"\n{}",
        crate::common::MINIMAL
    ));
    assert!(!p.run(&["check"], &[]).status.success());
}
