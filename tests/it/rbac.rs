//! Role-based access over the reference service, table-driven: every reference route for
//! anonymous, viewer, editor (two of them) and admin callers with development-issuer tokens
//! (verified exactly like a provider's), own-row 404s, the hidden `secret` field and a
//! write to a field the caller may not touch. Also: users are recorded on first sight.

use crate::common::{self, Project, Server, client};
use crate::fixtures::{edit, servable_reference};
use diesel::prelude::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

const KEYS: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// The reference file as this build serves it (development issuer only, no browser login),
/// with a write limit no table of requests reaches, plus a `clerk` role
/// that may create notes but not touch `secret`.
fn reference() -> String {
    let out = servable_reference()
        + "\n[roles.clerk]\npermissions = [\"notes:create\", \"notes:read\"]\n";
    edit(
        &out,
        "per_minute = 60\nburst = 10",
        "per_minute = 6000\nburst = 1000",
    )
}

struct World {
    project: Project,
    server: Server,
    tokens: Vec<(&'static str, Option<String>)>,
}

fn world() -> World {
    let project = Project::new(&reference());
    let env = [
        ("NESTFLUX_ENCRYPTION__KEYS", KEYS),
        ("NESTFLUX_SERVER__BIND", "127.0.0.1:0"),
    ];
    let mint = |sub: &str, role: &str| {
        let out = project.run(
            &["token", "--sub", sub, "--role", role, "--ttl", "10m"],
            &env,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(String::from_utf8(out.stdout).unwrap().trim().to_string())
    };
    let tokens = vec![
        ("anonymous", None),
        ("viewer", mint("vera", "viewer")),
        ("alice", mint("alice", "editor")),
        ("bob", mint("bob", "editor")),
        ("admin", mint("root", "admin")),
        ("clerk", mint("carl", "clerk")),
    ];
    let server = project.serve(&env);
    World {
        project,
        server,
        tokens,
    }
}

impl World {
    fn token(&self, who: &str) -> Option<&str> {
        self.tokens
            .iter()
            .find(|(n, _)| *n == who)
            .and_then(|(_, t)| t.as_deref())
    }

    fn call(
        &self,
        who: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let c = client();
        let mut req = c.request(method.parse().unwrap(), self.server.url(path));
        if let Some(t) = self.token(who) {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().unwrap();
        let status = res.status();
        if status == StatusCode::UNAUTHORIZED {
            assert_eq!(
                res.headers()["www-authenticate"],
                "Bearer",
                "missing credentials get the bare challenge"
            );
        }
        let text = res.text().unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

#[test]
fn every_reference_route_for_every_role() {
    let w = world();
    let (s, a1) = w.call(
        "alice",
        "POST",
        "/api/notes",
        Some(json!({"title": "alice's", "secret": "a-secret"})),
    );
    assert_eq!(s, StatusCode::CREATED, "{a1}");
    assert_eq!(
        a1["owner"], "dev:alice",
        "development subjects are namespaced"
    );
    assert_eq!(
        a1["secret"], "a-secret",
        "editors see secret on their own rows"
    );
    let alice_note = format!("/api/notes/{}", a1["id"].as_str().unwrap());
    let (_, b1) = w.call(
        "bob",
        "POST",
        "/api/notes",
        Some(json!({"title": "bob's", "secret": "b-secret"})),
    );
    let bob_note = format!("/api/notes/{}", b1["id"].as_str().unwrap());

    // (caller, method, path, body, expected status)
    let table: Vec<(&str, &str, &str, Option<Value>, StatusCode)> = vec![
        ("anonymous", "GET", "/health", None, StatusCode::OK),
        ("viewer", "GET", "/health", None, StatusCode::OK),
        (
            "anonymous",
            "GET",
            "/api/me",
            None,
            StatusCode::UNAUTHORIZED,
        ),
        ("viewer", "GET", "/api/me", None, StatusCode::OK),
        ("admin", "GET", "/api/me", None, StatusCode::OK),
        (
            "anonymous",
            "GET",
            "/api/notes",
            None,
            StatusCode::UNAUTHORIZED,
        ),
        ("viewer", "GET", "/api/notes", None, StatusCode::OK),
        ("alice", "GET", "/api/notes", None, StatusCode::OK),
        ("admin", "GET", "/api/notes", None, StatusCode::OK),
        (
            "anonymous",
            "GET",
            &alice_note,
            None,
            StatusCode::UNAUTHORIZED,
        ),
        ("viewer", "GET", &alice_note, None, StatusCode::OK),
        ("bob", "GET", &alice_note, None, StatusCode::OK),
        (
            "anonymous",
            "POST",
            "/api/notes",
            Some(json!({"title": "x"})),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "viewer",
            "POST",
            "/api/notes",
            Some(json!({"title": "x"})),
            StatusCode::FORBIDDEN,
        ),
        (
            "admin",
            "POST",
            "/api/notes",
            Some(json!({"title": "x", "secret": "s"})),
            StatusCode::CREATED,
        ),
        (
            "clerk",
            "POST",
            "/api/notes",
            Some(json!({"title": "x"})),
            StatusCode::CREATED,
        ),
        (
            "clerk",
            "POST",
            "/api/notes",
            Some(json!({"title": "x", "secret": "s"})),
            StatusCode::FORBIDDEN,
        ),
        (
            "viewer",
            "PATCH",
            &alice_note,
            Some(json!({"title": "v"})),
            StatusCode::FORBIDDEN,
        ),
        (
            "bob",
            "PATCH",
            &alice_note,
            Some(json!({"title": "b"})),
            StatusCode::NOT_FOUND,
        ),
        (
            "alice",
            "PATCH",
            &alice_note,
            Some(json!({"title": "a2", "secret": "a2"})),
            StatusCode::OK,
        ),
        (
            "admin",
            "PATCH",
            &bob_note,
            Some(json!({"secret": "by admin"})),
            StatusCode::OK,
        ),
        (
            "clerk",
            "PATCH",
            &bob_note,
            Some(json!({"title": "c"})),
            StatusCode::FORBIDDEN,
        ),
        (
            "anonymous",
            "DELETE",
            &bob_note,
            None,
            StatusCode::UNAUTHORIZED,
        ),
        ("viewer", "DELETE", &bob_note, None, StatusCode::FORBIDDEN),
        ("alice", "DELETE", &bob_note, None, StatusCode::NOT_FOUND),
        ("bob", "DELETE", &bob_note, None, StatusCode::NO_CONTENT),
        ("admin", "DELETE", &alice_note, None, StatusCode::NO_CONTENT),
        ("alice", "GET", &alice_note, None, StatusCode::NOT_FOUND),
    ];
    for (who, method, path, body, want) in table {
        let (got, body) = w.call(who, method, path, body.clone());
        assert_eq!(got, want, "{who} {method} {path}: {body}");
    }
}

#[test]
fn the_secret_field_is_hidden_from_those_without_its_permission() {
    let w = world();
    let (_, a) = w.call(
        "alice",
        "POST",
        "/api/notes",
        Some(json!({"title": "t", "secret": "only-alice-and-admin"})),
    );
    let path = format!("/api/notes/{}", a["id"].as_str().unwrap());
    for (who, sees) in [
        ("alice", true),
        ("admin", true),
        ("bob", false),
        ("viewer", false),
        ("clerk", false),
    ] {
        let (s, row) = w.call(who, "GET", &path, None);
        assert_eq!(s, StatusCode::OK);
        assert_eq!(row.get("secret").is_some(), sees, "{who}: {row}");
        assert_eq!(row["title"], "t");
        let (_, list) = w.call(who, "GET", "/api/notes", None);
        let item = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == a["id"])
            .unwrap()
            .clone();
        assert_eq!(
            item.get("secret").is_some(),
            sees,
            "{who} in a list: {item}"
        );
    }
    // The :own form of the field permission does not reach another's row, even for writing.
    let (_, b) = w.call("bob", "POST", "/api/notes", Some(json!({"title": "b"})));
    let (s, _) = w.call(
        "alice",
        "PATCH",
        &format!("/api/notes/{}", b["id"].as_str().unwrap()),
        Some(json!({"secret": "x"})),
    );
    assert_eq!(
        s,
        StatusCode::NOT_FOUND,
        "alice may only update her own rows"
    );
}

#[test]
fn whoami_reports_subject_roles_and_permissions_and_users_are_recorded() {
    let w = world();
    let (s, me) = w.call("alice", "GET", "/api/me", None);
    assert_eq!(s, StatusCode::OK);
    assert_eq!(me["subject"], "dev:alice");
    assert_eq!(me["roles"], json!(["editor"]));
    let perms: Vec<&str> = me["permissions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for p in [
        "notes:read",
        "notes:create",
        "notes:update:own",
        "notes:delete:own",
        "notes:secret:own",
    ] {
        assert!(perms.contains(&p), "{p} in {perms:?}");
    }
    assert!(!perms.contains(&"audit:read"));
    w.call("bob", "GET", "/api/me", None);

    #[derive(QueryableByName, Debug)]
    struct User {
        #[diesel(sql_type = diesel::sql_types::Text)]
        subject: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        issuer: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        first_seen: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        last_seen: String,
    }
    let db = w.project.path().join("nestflux.db");
    let mut c = SqliteConnection::establish(db.to_str().unwrap()).unwrap();
    // Sightings are written in the background, off the request path: wait for them.
    let mut users: Vec<User> = Vec::new();
    for _ in 0..100 {
        users = diesel::sql_query(
            "SELECT subject, issuer, first_seen, last_seen FROM nestflux_users ORDER BY subject",
        )
        .load(&mut c)
        .unwrap();
        if users.len() >= 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let subjects: Vec<&str> = users.iter().map(|u| u.subject.as_str()).collect();
    assert_eq!(subjects, vec!["alice", "bob"]);
    assert!(
        users
            .iter()
            .all(|u| u.issuer == "urn:nestflux:dev-issuer" && u.first_seen <= u.last_seen)
    );
}

#[test]
fn dev_tokens_are_refused_in_production_and_when_the_issuer_is_off() {
    let p = Project::new(&reference());
    let out = p.run(
        &["token", "--sub", "x", "--role", "admin"],
        &[
            ("NESTFLUX_PROFILE", "production"),
            ("NESTFLUX_ENCRYPTION__KEYS", KEYS),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("auth.dev.enabled: the development issuer is refused in production")
    );

    let off = Project::new(&format!("[auth.dev]\nenabled = false\n{}", common::MINIMAL));
    let out = off.run(&["token", "--sub", "x"], &[]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("the development issuer is off"));
}

#[test]
fn a_token_from_another_dev_database_is_refused() {
    let w = world();
    let other = Project::new(&reference());
    let out = other.run(
        &["token", "--sub", "mallory", "--role", "admin"],
        &[("NESTFLUX_ENCRYPTION__KEYS", KEYS)],
    );
    let forged = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let res = client()
        .get(w.server.url("/api/me"))
        .bearer_auth(&forged)
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        res.headers()["www-authenticate"],
        "Bearer error=\"invalid_token\""
    );
}
