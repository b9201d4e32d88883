//! Bench-only: seeds notes straight into a NestFlux database with SQL through the store (the
//! same encryption and DDL as the server, no HTTP), for `bench/run`.
//!
//! `seed nestflux CONFIG COUNT OWNER` fills the `notes` resource of CONFIG (reads
//! `NESTFLUX_ENCRYPTION__KEYS`); `seed baseline DB COUNT` fills the baseline's table.
//! Row `i` has priority `i % 5 + 1`, so a fifth of the rows match `priority=3`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::Path;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use nestflux::store::crud::ReadMask;
use serde_json::{Map, Value, json};

/// Rows per transaction.
const BATCH: usize = 20_000;

fn note(i: usize) -> Map<String, Value> {
    let Value::Object(doc) = json!({
        "title": format!("note {i}"),
        "body": "some text of a typical note, a sentence or two long",
        "tags": ["bench"],
        "priority": (i % 5 + 1) as i64,
        "secret": format!("the secret of note {i}, encrypted at rest"),
    }) else {
        unreachable!()
    };
    doc
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("nestflux") => nestflux_rows(Path::new(&args[2]), args[3].parse().unwrap(), &args[4]),
        Some("baseline") => baseline_rows(&args[2], args[3].parse().unwrap()),
        _ => panic!("usage: seed nestflux CONFIG COUNT OWNER | seed baseline DB COUNT"),
    }
}

fn nestflux_rows(config: &Path, count: usize, owner: &str) {
    let loaded = nestflux::config::load(config).expect("config");
    let plan = nestflux::plan::compile_loaded(&loaded, nestflux::plan::Profile::Development)
        .unwrap_or_else(|e| panic!("{:?}", e.errors));
    let opened = nestflux::store::open(&plan).expect("open");
    let notes = opened
        .resources
        .values()
        .find(|r| r.table.name == "notes")
        .expect("a notes resource")
        .clone();
    let mut conn = opened.store.conn().expect("conn");
    // Seeding only: durability of each batch does not matter, the file is thrown away.
    conn.batch("PRAGMA synchronous = OFF").expect("pragma");
    let mask = ReadMask::all();
    let mut done = 0;
    while done < count {
        let n = BATCH.min(count - done);
        conn.transaction(|c| {
            for i in done..done + n {
                notes.create(c, Some(owner), &note(i), &mask)?;
            }
            Ok(())
        })
        .expect("insert");
        done += n;
    }
    conn.batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .expect("checkpoint");
    eprintln!("seeded {count} notes");
}

/// The baseline's table: the same columns, and the one index its sorted list needs.
pub const BASELINE_DDL: &str = "PRAGMA journal_mode = WAL;
CREATE TABLE IF NOT EXISTS notes (id TEXT PRIMARY KEY NOT NULL, owner TEXT, body TEXT, due TEXT,
  priority INTEGER, secret TEXT, tags JSONTEXT, title TEXT, created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS notes_priority_id ON notes (priority, id);";

fn baseline_rows(db: &str, count: usize) {
    let mut c = SqliteConnection::establish(db).expect("open");
    c.batch_execute(BASELINE_DDL).expect("ddl");
    c.batch_execute("PRAGMA synchronous = OFF").expect("pragma");
    let mut done = 0;
    while done < count {
        let n = BATCH.min(count - done);
        c.transaction::<_, diesel::result::Error, _>(|c| {
            for i in done..done + n {
                let doc = note(i);
                let now = humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string();
                diesel::sql_query(
                    "INSERT INTO notes (id, owner, body, priority, secret, tags, title, created_at, updated_at) \
                     VALUES (?, 'bench', ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind::<diesel::sql_types::Text, _>(uuid::Uuid::now_v7().to_string())
                .bind::<diesel::sql_types::Text, _>(doc["body"].as_str().unwrap())
                .bind::<diesel::sql_types::BigInt, _>(doc["priority"].as_i64().unwrap())
                .bind::<diesel::sql_types::Text, _>(doc["secret"].as_str().unwrap())
                .bind::<diesel::sql_types::Text, _>(doc["tags"].to_string())
                .bind::<diesel::sql_types::Text, _>(doc["title"].as_str().unwrap())
                .bind::<diesel::sql_types::Text, _>(&now)
                .bind::<diesel::sql_types::Text, _>(&now)
                .execute(c)?;
            }
            Ok(())
        })
        .expect("insert");
        done += n;
    }
    c.batch_execute("PRAGMA wal_checkpoint(TRUNCATE)")
        .expect("checkpoint");
    eprintln!("seeded {count} baseline notes");
}
