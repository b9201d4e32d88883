//! `nestflux backup` and `nestflux restore` over the real binary and a real SQLite file: a
//! backup taken under a write load restores every row acknowledged before it began; restore
//! is refused while a server runs, with a wrong key ring, or for a changed copy, and then
//! changes nothing; a restored database serves its rows.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use diesel::prelude::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::common::{Project, Server, client};
use crate::fixtures::Notes;

const K1: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const K2: &str = "k2:HxweHRwbGhkYFxYVFBMSERAPDg0MCwoJCAcGBQQDAgE=";
/// K2's key material under K1's id: the right id, the wrong key.
const K1_WRONG: &str = "k1:HxweHRwbGhkYFxYVFBMSERAPDg0MCwoJCAcGBQQDAgE=";

/// Notes with an encrypted `secret`, on `data/notes.db`.
fn project() -> Project {
    Project::new(&format!(
        "[database]\nurl = \"sqlite://data/notes.db\"\n{}",
        Notes::new().resource("encrypted = [\"secret\"]")
    ))
}

fn ring(k: &str) -> [(&'static str, &str); 1] {
    [("NESTFLUX_ENCRYPTION__KEYS", k)]
}

fn db(p: &Project) -> PathBuf {
    p.path().join("data/notes.db")
}

fn post(s: &Server, title: &str) -> String {
    let res = client()
        .post(s.url("/api/notes"))
        .json(&json!({"title": title, "secret": format!("secret of {title}")}))
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    res.json::<Value>().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Every note id the server lists (pages followed to the end).
fn listed(s: &Server) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = s.url("/api/notes?limit=200");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = client().get(url).send().unwrap().json().unwrap();
        for item in page["items"].as_array().unwrap() {
            out.insert(item["id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return out,
        }
    }
}

fn sha256(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    let digest = Sha256::digest(&bytes);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// The files in `data/`, by name, with their contents' hash.
fn data_files(p: &Project) -> Vec<(String, String)> {
    let mut out: Vec<_> = std::fs::read_dir(p.path().join("data"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().to_string(),
                sha256(&e.path()),
            )
        })
        .collect();
    out.sort();
    out
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = diesel::sql_types::Text)]
    id: String,
}

#[derive(QueryableByName)]
struct Check {
    #[diesel(sql_type = diesel::sql_types::Text)]
    integrity_check: String,
}

/// A note table's ids and the integrity check, read by the test's own connection.
fn read_db(path: &Path) -> (Vec<String>, BTreeSet<String>) {
    let mut c = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
    let check: Vec<Check> = diesel::sql_query("PRAGMA integrity_check")
        .load(&mut c)
        .unwrap();
    let ids: Vec<Id> = diesel::sql_query("SELECT id FROM notes")
        .load(&mut c)
        .unwrap();
    (
        check.into_iter().map(|c| c.integrity_check).collect(),
        ids.into_iter().map(|i| i.id).collect(),
    )
}

/// Serves, writes `before` notes, takes a backup into `b.db`, writes `after` more, stops
/// the server (SIGKILL): (the ids in the backup, the ids written after it).
fn backed_up(p: &Project, before: usize, after: usize) -> (BTreeSet<String>, BTreeSet<String>) {
    let s = p.serve(&ring(K1));
    let first: BTreeSet<String> = (0..before).map(|i| post(&s, &format!("b{i}"))).collect();
    let out = p.run(&["backup", "b.db"], &ring(K1));
    assert!(out.status.success(), "{}", stderr(&out));
    let later: BTreeSet<String> = (0..after).map(|i| post(&s, &format!("a{i}"))).collect();
    drop(s);
    (first, later)
}

#[test]
fn a_backup_under_write_load_restores_every_row_acknowledged_before_it_began() {
    let p = project();
    let s = p.serve(&ring(K1));
    let url = s.url("/api/notes");
    let stop = Arc::new(AtomicBool::new(false));
    // Each writer: a bounded loop of POSTs, recording (id, when the 201 arrived).
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (url, stop) = (url.clone(), stop.clone());
            std::thread::spawn(move || {
                let c = client();
                let mut acked = Vec::new();
                for i in 0..3000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let res = c
                        .post(&url)
                        .json(&json!({"title": format!("w{w}-{i}"), "secret": format!("s{w}-{i}")}))
                        .send()
                        .unwrap();
                    assert_eq!(res.status(), StatusCode::CREATED);
                    let row: Value = res.json().unwrap();
                    acked.push((row["id"].as_str().unwrap().to_string(), Instant::now()));
                }
                acked
            })
        })
        .collect();
    // Let the load run, then back up while it goes on.
    let warm = Instant::now();
    while (std::fs::metadata(db(&p).with_extension("db-wal")).map_or(0, |m| m.len()) == 0
        || warm.elapsed() < Duration::from_millis(800))
        && warm.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let began = Instant::now();
    let out = p.run(&["backup", "b.db"], &ring(K1));
    stop.store(true, Ordering::Relaxed);
    let acked: Vec<(String, Instant)> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    assert!(out.status.success(), "{}", stderr(&out));
    let before: BTreeSet<String> = acked
        .iter()
        .filter(|(_, at)| *at < began)
        .map(|(id, _)| id.clone())
        .collect();
    let during = acked.len() - before.len();
    assert!(
        !before.is_empty(),
        "no write acknowledged before the backup"
    );
    eprintln!(
        "{} writes acknowledged before the backup began, {during} after",
        before.len()
    );

    // The copy: private, its manifest consistent with it.
    let copy = p.path().join("b.db");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for f in [copy.clone(), p.path().join("b.db.manifest.json")] {
            let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", f.display());
        }
    }
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(p.path().join("b.db.manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["sha256"], sha256(&copy));
    assert_eq!(manifest["key_ids"], json!(["k1"]));
    assert_eq!(manifest["integrity_check"], "ok");
    assert!(
        manifest["config_hash"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert!(manifest["schema_version"].as_str().is_some());
    let in_copy = manifest["row_counts"]["notes"].as_u64().unwrap() as usize;
    assert!(
        in_copy >= before.len() && in_copy <= acked.len(),
        "{manifest}"
    );

    drop(s);
    let out = p.run(&["restore", "b.db"], &ring(K1));
    assert!(out.status.success(), "{}", stderr(&out));
    let (check, restored) = read_db(&db(&p));
    assert_eq!(check, ["ok"]);
    assert_eq!(restored.len(), in_copy);
    let missing: Vec<_> = before.difference(&restored).collect();
    assert!(
        missing.is_empty(),
        "acknowledged before the backup began but not restored: {missing:?}"
    );
    assert!(restored.iter().all(|id| acked.iter().any(|(a, _)| a == id)));

    // The restored database serves: every row listed, secrets decrypted.
    let s = p.serve(&ring(K1));
    assert_eq!(listed(&s), restored);
    for id in before.iter().take(20) {
        let row: Value = client()
            .get(s.url(&format!("/api/notes/{id}")))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let title = row["title"].as_str().unwrap();
        assert_eq!(row["secret"], json!(format!("s{}", &title[1..])));
    }
}

#[test]
fn restore_is_refused_while_the_server_runs_and_a_killed_server_does_not_block_it() {
    let p = project();
    let (in_backup, _) = backed_up(&p, 3, 0);
    let s = p.serve(&ring(K1));
    let later = post(&s, "after the backup");
    let files = data_files(&p).len();

    let out = p.run(&["restore", "b.db"], &ring(K1));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("another process has the database open")
            && err.contains("nothing was changed"),
        "{err}"
    );
    // Unchanged: the server still serves the row written after the backup, and nothing was
    // set aside or left behind.
    let mut all = in_backup.clone();
    all.insert(later.clone());
    assert_eq!(listed(&s), all);
    let names: Vec<String> = data_files(&p).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names.len(), files, "{names:?}");
    assert!(
        !names
            .iter()
            .any(|n| n.contains("pre-restore") || n.contains(".tmp-")),
        "{names:?}"
    );

    // A server killed outright leaves its -wal and -shm but holds nothing: restore proceeds.
    drop(s);
    let out = p.run(&["restore", "b.db"], &ring(K1));
    assert!(out.status.success(), "{}", stderr(&out));
    let names: Vec<String> = data_files(&p).into_iter().map(|(n, _)| n).collect();
    let aside: Vec<_> = names
        .iter()
        .filter(|n| n.starts_with("notes.db.pre-restore-"))
        .collect();
    assert_eq!(aside.len(), 1, "{names:?}");
    assert!(
        !names
            .iter()
            .any(|n| n.ends_with("-wal") || n.ends_with("-shm")),
        "{names:?}"
    );
    // The set-aside database is whole on its own: it holds the later row.
    let (check, kept) = read_db(&p.path().join("data").join(aside[0]));
    assert_eq!(check, ["ok"]);
    assert!(kept.contains(&later));

    // The restore is in the restored database's audit log, and its chain still verifies.
    let out = p.run(&["audit", "verify"], &ring(K1));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = p.run(&["audit", "export"], &ring(K1));
    let export = String::from_utf8_lossy(&out.stdout);
    assert!(export.contains("\"backup.restored\""), "{export}");
    // The backup was recorded in the database it copied (after the copy, so not in it).
    assert!(!export.contains("\"backup.taken\""), "{export}");
    let mut c = SqliteConnection::establish(p.path().join("data").join(aside[0]).to_str().unwrap())
        .unwrap();
    let taken: Vec<Id> = diesel::sql_query(
        "SELECT record_id || action AS id FROM nestflux_audit WHERE action = 'backup.taken'",
    )
    .load(&mut c)
    .unwrap();
    assert_eq!(taken.len(), 1);

    let s = p.serve(&ring(K1));
    assert_eq!(listed(&s), in_backup);
}

#[test]
fn restore_with_a_key_ring_that_cannot_decrypt_the_backup_is_refused() {
    let p = project();
    let (in_backup, later) = backed_up(&p, 3, 2);
    let files = data_files(&p);
    for (keys, says) in [
        (K2, "sealed with key \"k1\", which the key ring lacks"),
        (K1_WRONG, "does not decrypt with key \"k1\""),
    ] {
        let out = p.run(&["restore", "b.db"], &ring(keys));
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(
            err.contains(says) && err.contains("nothing was changed"),
            "{err}"
        );
        assert!(!err.contains("HxweHRwb"), "key material in: {err}");
        assert_eq!(data_files(&p), files);
    }
    // No key ring at all (and no development key): refused too.
    let out = p.run(&["restore", "b.db"], &[]);
    assert!(!out.status.success());
    assert_eq!(data_files(&p), files);
    // The database is still the one after the backup.
    let s = p.serve(&ring(K1));
    assert_eq!(listed(&s), &in_backup | &later);
}

#[test]
fn a_changed_copy_or_manifest_is_refused() {
    let p = project();
    let (in_backup, later) = backed_up(&p, 3, 1);
    let files = data_files(&p);
    let copy = p.path().join("b.db");
    let manifest_path = p.path().join("b.db.manifest.json");
    let manifest = std::fs::read_to_string(&manifest_path).unwrap();

    // One byte changed in the copy.
    let mut bytes = std::fs::read(&copy).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(p.path().join("tampered.db"), &bytes).unwrap();
    std::fs::write(p.path().join("tampered.db.manifest.json"), &manifest).unwrap();
    let out = p.run(&["restore", "tampered.db"], &ring(K1));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("does not match its manifest"),
        "{}",
        stderr(&out)
    );

    // A manifest claiming a schema newer than this binary knows.
    let mut newer: Value = serde_json::from_str(&manifest).unwrap();
    newer["schema_version"] = json!("99991231000001");
    std::fs::write(&manifest_path, newer.to_string()).unwrap();
    let out = p.run(&["restore", "b.db"], &ring(K1));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("newer than this nestflux knows"),
        "{}",
        stderr(&out)
    );

    // No manifest at all.
    std::fs::remove_file(&manifest_path).unwrap();
    let out = p.run(&["restore", "b.db"], &ring(K1));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot read the manifest"),
        "{}",
        stderr(&out)
    );

    assert_eq!(data_files(&p), files);
    let s = p.serve(&ring(K1));
    assert_eq!(listed(&s), &in_backup | &later);
}

#[test]
fn a_backup_never_overwrites_a_file() {
    let p = project();
    backed_up(&p, 1, 0);
    let before = sha256(&p.path().join("b.db"));
    let out = p.run(&["backup", "b.db"], &ring(K1));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    assert_eq!(sha256(&p.path().join("b.db")), before);
    let out = p.run(&["backup", "data/notes.db"], &ring(K1));
    assert!(!out.status.success());
}

/// PostgreSQL: both commands say how to use pg_dump/pg_restore (never printing the URL,
/// which holds a password), write nothing, and check the key ring against the stored data.
#[cfg(feature = "postgres")]
#[test]
fn on_postgres_backup_and_restore_point_to_pg_dump_and_still_check_the_key_ring() {
    let url = crate::resources::pg::fresh_schema();
    let p = Project::new(&format!(
        "[database]\nurl = \"{url}\"\n{}",
        Notes::new().resource("encrypted = [\"secret\"]")
    ));
    let s = p.serve(&ring(K1));
    post(&s, "one");
    post(&s, "two");
    drop(s);
    let stdout = |o: &std::process::Output| String::from_utf8_lossy(&o.stdout).to_string();

    let out = p.run(&["backup", "x.dump"], &ring(K1));
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(text.contains("pg_dump --format=custom"), "{text}");
    assert!(
        text.contains("need: k1") && text.contains("key ring check: ok"),
        "{text}"
    );
    assert!(!text.contains(&url) && !stderr(&out).contains(&url));
    assert!(!p.path().join("x.dump").exists());
    assert!(!p.path().join("x.dump.manifest.json").exists());

    let out = p.run(&["restore", "x.dump"], &ring(K1));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("pg_restore"), "{}", stdout(&out));

    for keys in [K2, K1_WRONG] {
        for cmd in ["backup", "restore"] {
            let out = p.run(&[cmd, "x.dump"], &ring(keys));
            assert!(!out.status.success(), "{cmd} with {keys}");
            assert!(
                stderr(&out).contains("cannot read the stored encrypted fields"),
                "{}",
                stderr(&out)
            );
        }
    }
}

/// A scheduled backup named as `[backup]` names them, dated `stamp`, written long ago.
fn old_scheduled(dir: &Path, stamp: &str) -> PathBuf {
    let f = dir.join(format!("nestflux-{stamp}.db"));
    std::fs::write(&f, b"an old backup").unwrap();
    std::fs::write(
        dir.join(format!("nestflux-{stamp}.db.manifest.json")),
        b"{}",
    )
    .unwrap();
    let past = std::time::SystemTime::now() - Duration::from_secs(86_400);
    std::fs::File::options()
        .write(true)
        .open(&f)
        .unwrap()
        .set_modified(past)
        .unwrap();
    f
}

#[test]
fn the_server_takes_scheduled_backups_keeps_the_newest_and_they_restore() {
    let p = Project::new(&format!(
        "[database]\nurl = \"sqlite://data/notes.db\"\n[backup]\nevery = \"1h\"\nkeep = 2\ndir = \"backups\"\n{}",
        Notes::new().resource("encrypted = [\"secret\"]")
    ));
    let dir = p.path().join("backups");
    std::fs::create_dir(&dir).unwrap();
    let oldest = old_scheduled(&dir, "20260101T000000.000000Z");
    let older = old_scheduled(&dir, "20260102T000000.000000Z");
    let kept = old_scheduled(&dir, "20260103T000000.000000Z");
    std::fs::write(dir.join("notes.txt"), b"not a backup").unwrap();

    // The newest backup in the directory is a day old, older than `every`: one is due now.
    let s = p.serve(&ring(K1));
    // Two are past `keep`, each deleted with a line of its own.
    let log = s.log_when(|l| l.matches("old backup deleted").count() >= 2);
    assert!(log.contains("scheduled backup taken"), "{log}");
    let taken: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().to_string();
            n.starts_with("nestflux-2") && n.ends_with(".db") && !n.starts_with("nestflux-202601")
        })
        .collect();
    assert_eq!(taken.len(), 1, "{taken:?}");
    let new = &taken[0];
    // Rotation: the newest two kept, older ones deleted with their manifests, nothing else.
    assert!(kept.exists() && !older.exists() && !oldest.exists());
    assert!(
        !p.path()
            .join("backups/nestflux-20260101T000000.000000Z.db.manifest.json")
            .exists()
    );
    assert!(dir.join("notes.txt").exists());
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{}.manifest.json", new.display())).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["sha256"], sha256(new));
    assert_eq!(manifest["key_ids"], json!([]));

    // Taken on start, on an empty table: restore it over a database that has a row since.
    let id = post(&s, "after the scheduled backup");
    drop(s);
    let name = format!("backups/{}", new.file_name().unwrap().to_string_lossy());
    let out = p.run(&["restore", &name], &ring(K1));
    assert!(out.status.success(), "{}", stderr(&out));
    let s = p.serve(&ring(K1));
    assert!(!listed(&s).contains(&id));
}

#[test]
fn backup_settings_are_checked_before_serving() {
    let p = Project::new(&format!(
        "[database]\nurl = \"sqlite://data/notes.db\"\n[backup]\nevery = \"30s\"\nkeep = 0\ndir = \"missing\"\n{}",
        crate::common::MINIMAL
    ));
    let out = p.run(&["check"], &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    for says in [
        "backup.every",
        "at least 1m",
        "backup.keep",
        "backup.dir",
        "does not exist",
    ] {
        assert!(err.contains(says), "{says} not in {err}");
    }
    p.write("afile", "x");
    let p2 = Project::new(&format!(
        "[database]\nurl = \"postgres://u@127.0.0.1/db\"\n[backup]\nevery = \"6h\"\ndir = \"{}\"\n{}",
        p.path().join("afile").display(),
        crate::common::MINIMAL
    ));
    let out = p2.run(&["check"], &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("pg_dump") && err.contains("is not a directory"),
        "{err}"
    );
    let out = p.run(
        &["check"],
        &[
            ("NESTFLUX_BACKUP__EVERY", "6h"),
            ("NESTFLUX_BACKUP__KEEP", "3"),
        ],
    );
    assert!(!out.status.success());
    assert!(!stderr(&out).contains("backup.every"), "{}", stderr(&out));
}
