//! Writes through SQLite's one writer, over real HTTP and a real SQLite file: writes
//! queued while the lock is held commit together, a failing write fails only its own
//! request (whether it failed before or after changing a row), a full queue answers 503
//! with `Retry-After` at once, committed writes reach the database file itself while the
//! server runs (the WAL checkpointer), and a slow batch is logged with its phases. (Crash
//! safety through the writer: `resources::sigkill_during_writes_loses_no_acknowledged_row`;
//! the request deadline: `regression::a_write_answered_503_is_never_committed`.)

use std::collections::BTreeMap;
use std::time::Duration;

use diesel::prelude::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{Project, Server, client};
use crate::fixtures::Notes;

/// The notes fixture on `data/notes.db`, with `extra` lines in `[database]`.
pub fn notes_project(extra: &str) -> Project {
    Project::new(&format!(
        "[database]\nurl = \"sqlite://data/notes.db\"\n{extra}\n{}",
        Notes::new()
    ))
}

/// A connection of the test's own to the server's database file.
pub fn sqlite(p: &Project) -> SqliteConnection {
    let path = p.path().join("data/notes.db");
    let mut c = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
    diesel::sql_query("PRAGMA busy_timeout = 10000")
        .execute(&mut c)
        .unwrap();
    c
}

#[derive(QueryableByName)]
struct Title {
    #[diesel(sql_type = diesel::sql_types::Text)]
    title: String,
}

/// Every stored title, sorted.
pub fn titles(p: &Project) -> Vec<String> {
    let mut t: Vec<String> = diesel::sql_query("SELECT title FROM notes ORDER BY title")
        .load::<Title>(&mut sqlite(p))
        .unwrap()
        .into_iter()
        .map(|t| t.title)
        .collect();
    t.sort();
    t
}

/// A write under way: (status, Retry-After, body) once joined.
type Write = std::thread::JoinHandle<(StatusCode, Option<String>, Value)>;

/// POSTs a note titled `title` from a thread of its own.
fn post_in_background(s: &Server, title: &str) -> Write {
    let (url, body) = (s.url("/api/notes"), json!({ "title": title }));
    std::thread::spawn(move || {
        let res = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap()
            .post(url)
            .json(&body)
            .send()
            .unwrap();
        let status = res.status();
        let retry = res
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        (status, retry, res.json().unwrap_or(Value::Null))
    })
}

#[test]
fn a_failing_write_in_a_batch_fails_only_its_own_request() {
    let p = notes_project("");
    let s = p.serve(&[]);
    // A real constraint, declared on the real file: titles are unique.
    let mut c = sqlite(&p);
    diesel::sql_query("CREATE UNIQUE INDEX one_title ON notes (title)")
        .execute(&mut c)
        .unwrap();
    // Hold the write lock so the writes queue up and commit in as few batches as possible;
    // the second `dup` then fails after the first one's insert, inside the same
    // uncommitted transaction.
    diesel::sql_query("BEGIN IMMEDIATE")
        .execute(&mut c)
        .unwrap();
    let writes = post_with_duplicates(&s);
    diesel::sql_query("COMMIT").execute(&mut c).unwrap();
    only_the_duplicates_failed(writes, &["unique", "sqlite"]);
    assert_eq!(titles(&p), ["a", "b", "c", "dup"]);
}

/// POSTs `a`, `dup`, `b`, `dup`, `c`, `dup` and gives them 500 ms to queue up.
fn post_with_duplicates(s: &Server) -> Vec<(&'static str, Write)> {
    let writes = ["a", "dup", "b", "dup", "c", "dup"]
        .into_iter()
        .map(|t| (t, post_in_background(s, t)))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    writes
}

/// Joins the writes of [`post_with_duplicates`] (titles unique) and checks that only the two
/// later duplicates failed, with a 500 that names none of `hidden`.
fn only_the_duplicates_failed(writes: Vec<(&str, Write)>, hidden: &[&str]) {
    let mut by_status: BTreeMap<u16, Vec<&str>> = BTreeMap::new();
    for (title, w) in writes {
        let (status, _, body) = w.join().unwrap();
        if status == StatusCode::CREATED {
            assert_eq!(body["title"], title);
        } else {
            assert_eq!(body["type"], "urn:nestflux:problem:internal", "{body}");
            let text = body.to_string().to_lowercase();
            assert!(!hidden.iter().any(|h| text.contains(h)), "{text}");
        }
        by_status.entry(status.as_u16()).or_default().push(title);
    }
    by_status.values_mut().for_each(|v| v.sort_unstable());
    assert_eq!(
        by_status,
        BTreeMap::from([(201, vec!["a", "b", "c", "dup"]), (500, vec!["dup", "dup"])]),
        "only the two duplicate writes fail"
    );
}

#[derive(QueryableByName)]
struct RecordId {
    #[diesel(sql_type = diesel::sql_types::Text)]
    record_id: String,
}

#[test]
fn a_write_failing_after_its_change_in_a_batch_fails_alone_and_keeps_one_chain() {
    // The writer runs a batch without savepoints first; a write that fails after it changed
    // a row (here: its note is inserted, then its audit row is refused) makes the writer
    // roll the batch back and run it again with a savepoint per write.
    let p = notes_project("");
    let s = p.serve(&[]);
    let mut c = sqlite(&p);
    diesel::sql_query(
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON nestflux_audit \
         WHEN NEW.record_id IN (SELECT id FROM notes WHERE title LIKE 'poison%') \
         BEGIN SELECT RAISE(ABORT, 'refused'); END",
    )
    .execute(&mut c)
    .unwrap();
    // Hold the write lock so that the writes queue up and share a batch.
    diesel::sql_query("BEGIN IMMEDIATE")
        .execute(&mut c)
        .unwrap();
    let writes: Vec<_> = ["a", "poison1", "b", "poison2", "c"]
        .into_iter()
        .map(|t| (t, post_in_background(&s, t)))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    diesel::sql_query("COMMIT").execute(&mut c).unwrap();
    let mut ids = Vec::new();
    let mut by_status: BTreeMap<u16, Vec<&str>> = BTreeMap::new();
    for (title, w) in writes {
        let (status, _, body) = w.join().unwrap();
        if status == StatusCode::CREATED {
            ids.push(body["id"].as_str().unwrap().to_string());
        } else {
            assert!(!body.to_string().contains("refuse_poison"), "{body}");
        }
        by_status.entry(status.as_u16()).or_default().push(title);
    }
    by_status.values_mut().for_each(|v| v.sort_unstable());
    assert_eq!(
        by_status,
        BTreeMap::from([
            (201, vec!["a", "b", "c"]),
            (500, vec!["poison1", "poison2"])
        ]),
    );
    assert_eq!(titles(&p), ["a", "b", "c"], "no poisoned note stayed");
    // One audit row per committed create, and the chain verifies.
    let mut audited: Vec<String> =
        diesel::sql_query("SELECT record_id FROM nestflux_audit WHERE action = 'create'")
            .load::<RecordId>(&mut sqlite(&p))
            .unwrap()
            .into_iter()
            .map(|r| r.record_id)
            .collect();
    audited.sort();
    ids.sort();
    assert_eq!(audited, ids);
    let verify = p.run(&["audit", "verify"], &[]);
    assert!(verify.status.success(), "{verify:?}");
}

#[test]
fn a_full_write_queue_answers_503_with_retry_after_at_once() {
    let p = notes_project("write_queue = 2");
    let s = p.serve(&[]);
    let mut c = sqlite(&p);
    diesel::sql_query("BEGIN IMMEDIATE")
        .execute(&mut c)
        .unwrap();
    // The writer takes the first write and waits for the lock; two more fit in the queue.
    let first = post_in_background(&s, "first");
    std::thread::sleep(Duration::from_millis(300));
    let more: Vec<_> = (0..8)
        .map(|i| post_in_background(&s, &format!("more{i}")))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    // Nothing can have committed while the lock is held: whatever answered already was
    // refused, without waiting for the lock.
    let mut refused = 0;
    let mut waiting = Vec::new();
    for w in more {
        if w.is_finished() {
            let (status, retry, body) = w.join().unwrap();
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
            assert_eq!(body["type"], "urn:nestflux:problem:overloaded");
            assert_eq!(retry.as_deref(), Some("1"));
            refused += 1;
        } else {
            waiting.push(w);
        }
    }
    diesel::sql_query("COMMIT").execute(&mut c).unwrap();
    let mut created = vec!["first".to_string()];
    assert_eq!(first.join().unwrap().0, StatusCode::CREATED);
    for w in waiting {
        let (status, retry, body) = w.join().unwrap();
        match status {
            StatusCode::CREATED => created.push(body["title"].as_str().unwrap().to_string()),
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(body["type"], "urn:nestflux:problem:overloaded");
                assert_eq!(retry.as_deref(), Some("1"));
                refused += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(refused >= 5, "a queue of 2 refused only {refused} of 8");
    created.sort();
    assert_eq!(
        titles(&p),
        created,
        "exactly the accepted writes are stored"
    );
    // The writer is not stuck: a write now goes through.
    let res = client()
        .post(s.url("/api/notes"))
        .json(&json!({"title": "after"}))
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
}

#[test]
fn committed_writes_reach_the_database_file_itself_while_the_server_runs() {
    // The checkpointer thread copies the WAL back into the database file after commits.
    // Twenty single writes log far fewer pages than SQLite's own automatic checkpoint
    // waits for (1,000), so without that thread they would stay in `notes.db-wal`.
    let p = notes_project("");
    let s = p.serve(&[]);
    for i in 0..20 {
        let res = client()
            .post(s.url("/api/notes"))
            .json(&json!({ "title": format!("n{i:02}") }))
            .send()
            .unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
    }
    // A copy of the database file alone, without its log, holds what was checkpointed.
    let copy = tempfile::tempdir().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let in_file = loop {
        let file = copy.path().join("alone.db");
        let n = std::fs::copy(p.path().join("data/notes.db"), &file)
            .ok()
            .and_then(|_| SqliteConnection::establish(file.to_str()?).ok())
            .and_then(|mut c| {
                diesel::sql_query("SELECT title FROM notes")
                    .load::<Title>(&mut c)
                    .ok()
            })
            .map_or(0, |rows| rows.len());
        let _ = std::fs::remove_file(copy.path().join("alone.db-wal"));
        if n == 20 || std::time::Instant::now() > deadline {
            break n;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(in_file, 20, "the writes are still only in the WAL");
}

#[test]
fn a_slow_batch_is_logged_with_the_time_of_each_phase() {
    let p = notes_project("");
    let s = p.serve(&[]);
    // Another process holds the write lock for 400 ms: the writer's batch waits for it.
    let mut c = sqlite(&p);
    diesel::sql_query("BEGIN IMMEDIATE")
        .execute(&mut c)
        .unwrap();
    let write = post_in_background(&s, "late");
    std::thread::sleep(Duration::from_millis(400));
    diesel::sql_query("COMMIT").execute(&mut c).unwrap();
    assert_eq!(write.join().unwrap().0, StatusCode::CREATED);
    let log = s.log_when(|l| l.contains("slow write batch"));
    let line: Value = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["target"] == "nestflux::writer")
        .unwrap_or_else(|| panic!("{log}"));
    assert_eq!(line["level"], "WARN", "{line}");
    assert_eq!(line["writes"], 1, "{line}");
    let ms = |f: &str| line[f].as_u64().unwrap_or_else(|| panic!("{f}: {line}"));
    assert!(ms("lock_ms") >= 300, "{line}");
    assert!(ms("work_ms") + ms("commit_ms") < ms("lock_ms"), "{line}");
}

/// The same writer on PostgreSQL (a pooled connection lent for each batch, the audit chain's
/// lock taken at `BEGIN`), against the real server named by TEST_POSTGRES_URL.
#[cfg(feature = "postgres")]
mod postgres {
    use super::*;

    /// The audit chain's advisory lock (`store::audit::PG_CHAIN_LOCK`).
    const CHAIN_LOCK: i64 = 0x6e66_6175_6469_7431;

    /// The notes fixture in a fresh schema, served with `extra` lines in `[database]`; the
    /// server's connections carry `application_name` = the returned name, and the URL is
    /// the schema's.
    fn serve(extra: &str) -> (Project, Server, String, String) {
        let name = format!("w{}", uuid::Uuid::new_v4().simple());
        let url = format!(
            "{}&application_name={name}",
            crate::resources::pg::fresh_schema()
        );
        let p = Project::new(&format!(
            "[database]\nurl = \"{url}\"\nbusy_timeout = \"5s\"\n{extra}\n{}",
            Notes::new()
        ));
        let s = p.serve(&[]);
        (p, s, url, name)
    }

    fn titles(url: &str) -> Vec<String> {
        let mut c = PgConnection::establish(url).unwrap();
        diesel::sql_query("SELECT title FROM notes ORDER BY title")
            .load::<Title>(&mut c)
            .unwrap()
            .into_iter()
            .map(|t| t.title)
            .collect()
    }

    #[test]
    fn a_failing_write_in_a_batch_fails_only_its_own_request_on_postgresql() {
        let (p, s, url, _) = serve("");
        assert_eq!(post_in_background(&s, "first").join().unwrap().0, 201);
        let mut c = PgConnection::establish(&url).unwrap();
        diesel::sql_query("CREATE UNIQUE INDEX one_title ON notes (title)")
            .execute(&mut c)
            .unwrap();
        // Hold the chain's lock so the writes queue up and share a batch: the second `dup`
        // fails after the first one's insert, which aborts PostgreSQL's transaction, so the
        // writer runs the batch again with a savepoint per write. (The lock is one for the
        // whole database: other tests' writes wait these 500 ms too.)
        diesel::sql_query(format!("SELECT pg_advisory_lock({CHAIN_LOCK})"))
            .execute(&mut c)
            .unwrap();
        let writes = post_with_duplicates(&s);
        diesel::sql_query(format!("SELECT pg_advisory_unlock({CHAIN_LOCK})"))
            .execute(&mut c)
            .unwrap();
        only_the_duplicates_failed(writes, &["unique", "duplicate", "postgres"]);
        assert_eq!(titles(&url), ["a", "b", "c", "dup", "first"]);
        let verify = p.run(&["audit", "verify"], &[]);
        assert!(verify.status.success(), "{verify:?}");
    }

    /// Ends every PostgreSQL connection of the server named `name`, as a restart or a
    /// failover does, from the test's own connection `c`.
    fn end_connections(c: &mut PgConnection, name: &str) {
        #[derive(QueryableByName)]
        struct Ended {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let ended = diesel::sql_query(format!(
            "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity \
             WHERE application_name = '{name}' AND pid <> pg_backend_pid()"
        ))
        .get_result::<Ended>(c)
        .unwrap();
        assert!(ended.n >= 1, "no connection of the server was found");
    }

    /// A pooled connection lent again within 500 ms is not checked first (`store::Check`):
    /// each step here follows the last at once, so the write's `BEGIN` and the read find
    /// their connection ended, and must run again on a new one instead of failing. (One
    /// connection in the pool, so each request gets the one lent last, not a replacement
    /// the pool opened meanwhile.)
    #[test]
    fn requests_take_new_connections_when_postgresql_ends_the_old_ones() {
        let (_p, s, url, name) = serve("pool_size = 1");
        let mut c = PgConnection::establish(&url).unwrap();
        let (status, _, created) = post_in_background(&s, "before").join().unwrap();
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let note = s.url(&format!("/api/notes/{}", created["id"].as_str().unwrap()));
        assert_eq!(client().get(&note).send().unwrap().status(), StatusCode::OK);

        end_connections(&mut c, &name);
        let (status, _, body) = post_in_background(&s, "after").join().unwrap();
        assert_eq!(status, StatusCode::CREATED, "{body}");

        end_connections(&mut c, &name);
        let read = client().get(&note).send().unwrap();
        assert_eq!(read.status(), StatusCode::OK);
        assert_eq!(read.json::<Value>().unwrap()["title"], "before");
        assert_eq!(titles(&url), ["after", "before"]);
    }
}
