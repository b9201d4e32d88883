//! A first run with no setup: a fresh directory holding only the root `nestflux.toml` serves
//! the notes API with its encrypted field, with no variable to export; the development key
//! is created once beside the database (mode 0600) and reused on the next start. Under
//! production the same start is refused, saying why.
//!
//! The only variables given are the harness's own: a free port (`NESTFLUX_SERVER__BIND`)
//! and JSON logs, so the test can find the port.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{Project, client};

const ROOT: &str = include_str!("../../nestflux.toml");

fn token(p: &Project, sub: &str, role: &str) -> String {
    let out = p.run(&["token", "--sub", sub, "--role", role], &[]);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn the_root_file_serves_encrypted_notes_with_no_setup() {
    let p = Project::new(ROOT);
    let alice = token(&p, "alice", "editor");
    let s = p.serve(&[]);
    let log = s.log_when(|l| l.contains("DEVELOPMENT ENCRYPTION KEY IN USE"));
    assert!(log.contains("DEVELOPMENT ENCRYPTION KEY IN USE"), "{log}");
    assert!(log.contains("nestflux.db.dev-key (created now)"), "{log}");

    let c = client();
    let res = c
        .post(s.url("/api/notes"))
        .bearer_auth(&alice)
        .json(&json!({"title": "first", "secret": "only alice and admins read this"}))
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let id = res.json::<Value>().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let read = |s: &crate::common::Server| -> Value {
        let res = c
            .get(s.url(&format!("/api/notes/{id}")))
            .bearer_auth(&alice)
            .send()
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        res.json().unwrap()
    };
    assert_eq!(read(&s)["secret"], "only alice and admins read this");
    drop(s);

    // Stored encrypted under the development key, in a file only its owner can read.
    let db = p.path().join("nestflux.db");
    let mut conn =
        <diesel::SqliteConnection as diesel::Connection>::establish(db.to_str().unwrap()).unwrap();
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        secret: String,
    }
    let rows: Vec<Row> =
        diesel::RunQueryDsl::load(diesel::sql_query("SELECT secret FROM notes"), &mut conn)
            .unwrap();
    let key_file = p.path().join("nestflux.db.dev-key");
    let key = std::fs::read_to_string(&key_file).unwrap();
    let kid = key.split(':').next().unwrap();
    assert!(kid.starts_with("dev"), "{key}");
    assert!(
        rows[0].secret.starts_with(&format!("nf1:{kid}:")),
        "{}",
        rows[0].secret
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    // The next start reuses the key: the note still reads back.
    let s = p.serve(&[]);
    assert!(
        s.log_when(|l| l.contains("created earlier"))
            .contains("created earlier"),
        "{}",
        s.log()
    );
    assert_eq!(read(&s)["secret"], "only alice and admins read this");
    drop(s);
    assert_eq!(
        std::fs::read_to_string(&key_file).unwrap(),
        key,
        "the key changed"
    );

    // `check` says which key the fields use.
    let out = p.run(&["check"], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("warning[encryption-keys]: resources.notes.encrypted: NESTFLUX_ENCRYPTION__KEYS is not set: the development key in nestflux.db.dev-key encrypts these fields (it exists)"),
        "{text}"
    );
}

#[test]
fn production_refuses_the_same_start_and_says_why() {
    let p = Project::new(ROOT);
    let err = match p.try_serve(&[("NESTFLUX_PROFILE", "production")]) {
        Ok(_) => panic!("production served with the development key"),
        Err(log) => log,
    };
    assert!(
        err.contains("resources.notes.encrypted: encrypted fields are declared but NESTFLUX_ENCRYPTION__KEYS is not set; production never uses a development key file"),
        "{err}"
    );
    assert!(
        err.contains("auth.dev.enabled: the development issuer is refused in production"),
        "{err}"
    );
    assert!(
        !p.path().join("nestflux.db.dev-key").exists(),
        "production created a development key"
    );
}

/// With PostgreSQL the development key lives beside the config file (the database server's
/// disk is not the service's), and `explain` verifies a development token against the key
/// stored in PostgreSQL on a read-only connection.
#[cfg(feature = "postgres")]
#[test]
fn with_postgres_the_key_lives_beside_the_config_file() {
    let url = crate::resources::pg::fresh_schema();
    let db = [("NESTFLUX_DATABASE__URL", url.as_str())];
    let p = Project::new(ROOT);
    let out = p.run(&["token", "--sub", "alice", "--role", "editor"], &db);
    assert!(out.status.success(), "{out:?}");
    let alice = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let s = p.serve(&db);
    let res = client()
        .post(s.url("/api/notes"))
        .bearer_auth(&alice)
        .json(&json!({"title": "pg", "secret": "kept in postgres"}))
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED, "{}", s.log());
    drop(s);
    assert!(p.path().join("nestflux.dev-key").exists());
    assert!(!p.path().join("nestflux.db.dev-key").exists());
    let out = p.run(&["explain", "POST", "/api/notes", "--token", &alice], &db);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("development token, verified against the stored key: subject \"dev:alice\""),
        "{text}"
    );
}
