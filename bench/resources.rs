//! GET one record and POST one record through NestFlux against a hand-written actix-web +
//! diesel baseline doing the same SQL on the same kind of SQLite file with no security
//! layers (the ceiling), in the same run. Run: `cargo bench --bench resources`.
//!
//! Both servers run with one worker; the client is a minimal keep-alive HTTP/1.1 loop on
//! one connection, so the figures compare server work, not client overhead.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Instant;

use actix_web::{App, HttpResponse, HttpServer, web};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool};
use diesel::sql_types::{BigInt, Text};

#[allow(dead_code)]
#[path = "../tests/it/fixtures.rs"]
mod fixtures;

const REQUESTS: usize = 3000;
const WARMUP: usize = 300;

/// One worker, the development issuer, and the notes fixture with `secret` encrypted and one
/// more GET that needs `notes:read`.
fn config() -> String {
    let notes = fixtures::Notes::new()
        .resource("encrypted = [\"secret\"]")
        .route(
            "GET",
            "/secure/notes/{id}",
            "get",
            "permission = \"notes:read\"",
        );
    format!(
        "[server]\nworkers = 1\n[database]\nurl = \"sqlite://bench.db\"\n[auth.dev]\nenabled = true\n[roles.viewer]\npermissions = [\"notes:read\"]\n{notes}"
    )
}

const BODY: &str = r#"{"title":"benchmark note","body":"some text of a typical note","priority":2,"secret":"a secret of a typical length, encrypted at rest"}"#;
const KEYS: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("nestflux.toml"), config()).expect("config");
    let token = Command::new(env!("CARGO_BIN_EXE_nestflux"))
        .args([
            "token",
            "--sub",
            "bench",
            "--role",
            "viewer",
            "--config",
            "nestflux.toml",
        ])
        .current_dir(dir.path())
        .env("NESTFLUX_ENCRYPTION__KEYS", KEYS)
        .output()
        .expect("token");
    let token = String::from_utf8_lossy(&token.stdout).trim().to_string();
    let mut nestflux = Command::new(env!("CARGO_BIN_EXE_nestflux"))
        .args(["serve", "--config", "nestflux.toml"])
        .current_dir(dir.path())
        .env("NESTFLUX_ENCRYPTION__KEYS", KEYS)
        .env("NESTFLUX_SERVER__BIND", "127.0.0.1:0")
        .env("NESTFLUX_LOG", "warn,nestflux::server=info")
        .env("NESTFLUX_LOG_FORMAT", "json")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("nestflux");
    let stderr = nestflux.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let nf_port: u16 = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            l.split("127.0.0.1:")
                .nth(1)
                .and_then(|p| p.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        })
        .expect("nestflux port");
    std::thread::spawn(move || for _ in lines {});

    let base_port = start_baseline(dir.path().join("baseline.db"));

    let nf_id = create(nf_port, "/api/notes");
    let base_id = create(base_port, "/notes");
    let base_get = Probe {
        path: format!("/notes/{base_id}"),
        post: false,
        auth: None,
        status: 200,
    };
    let base_post = Probe {
        path: "/notes".into(),
        post: true,
        auth: None,
        status: 201,
    };
    let bearer = format!("Bearer {token}");
    let scenarios = [
        (
            "POST one record (validate + encrypt + insert)",
            Probe {
                path: "/api/notes".into(),
                post: true,
                auth: None,
                status: 201,
            },
            &base_post,
        ),
        (
            "GET one record, public (decrypt)",
            Probe {
                path: format!("/api/notes/{nf_id}"),
                post: false,
                auth: None,
                status: 200,
            },
            &base_get,
        ),
        (
            "GET one record, bearer JWT + RBAC + decrypt",
            Probe {
                path: format!("/secure/notes/{nf_id}"),
                post: false,
                auth: Some(bearer.clone()),
                status: 200,
            },
            &base_get,
        ),
        (
            "rejected: bad token (401)",
            Probe {
                path: format!("/secure/notes/{nf_id}"),
                post: false,
                auth: Some(format!("{bearer}x")),
                status: 401,
            },
            &base_get,
        ),
    ];
    let mut rows = Vec::new();
    for (name, probe, base) in scenarios {
        let nf = measure(nf_port, &probe);
        let b = measure(base_port, base);
        rows.push((name, nf, b));
    }
    let _ = nestflux.kill();
    let _ = nestflux.wait();

    println!(
        "| scenario ({REQUESTS} requests, 1 worker, 1 connection) | nestflux req/s | baseline req/s | ratio |"
    );
    println!("|---|---:|---:|---:|");
    for (name, nf, base) in rows {
        println!("| {name} | {nf:.0} | {base:.0} | {:.2} |", nf / base);
    }
}

/// One request shape and the status it must get.
struct Probe {
    path: String,
    post: bool,
    auth: Option<String>,
    status: u16,
}

/// Requests per second over one keep-alive connection.
fn measure(port: u16, probe: &Probe) -> f64 {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    conn.set_nodelay(true).ok();
    let path = &probe.path;
    let auth = probe
        .auth
        .as_ref()
        .map(|a| format!("authorization: {a}\r\n"))
        .unwrap_or_default();
    let request = if probe.post {
        format!(
            "POST {path} HTTP/1.1\r\nhost: b\r\n{auth}content-type: application/json\r\ncontent-length: {}\r\n\r\n{BODY}",
            BODY.len()
        )
    } else {
        format!("GET {path} HTTP/1.1\r\nhost: b\r\n{auth}\r\n")
    };
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    let mut once = || {
        conn.write_all(request.as_bytes()).expect("write");
        let status = read_response(&mut reader);
        assert_eq!(status, probe.status, "status for {path}");
    };
    for _ in 0..WARMUP {
        once();
    }
    let t = Instant::now();
    for _ in 0..REQUESTS {
        once();
    }
    REQUESTS as f64 / t.elapsed().as_secs_f64()
}

fn read_response(r: &mut BufReader<TcpStream>) -> u16 {
    let mut line = String::new();
    r.read_line(&mut line).expect("status line");
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut length = 0usize;
    loop {
        line.clear();
        r.read_line(&mut line).expect("header");
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    r.read_exact(&mut body).expect("body");
    status
}

fn create(port: u16, path: &str) -> String {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(conn, "POST {path} HTTP/1.1\r\nhost: b\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{BODY}", BODY.len()).expect("write");
    let mut text = String::new();
    conn.read_to_string(&mut text).expect("read");
    let body = text.split("\r\n\r\n").nth(1).expect("body");
    let v: serde_json::Value = serde_json::from_str(body).expect("json");
    v["id"].as_str().expect("id").to_string()
}

#[derive(Debug)]
struct Setup;

impl CustomizeConnection<SqliteConnection, diesel::r2d2::Error> for Setup {
    fn on_acquire(&self, c: &mut SqliteConnection) -> Result<(), diesel::r2d2::Error> {
        c.batch_execute("PRAGMA busy_timeout = 5000; PRAGMA synchronous = FULL;")
            .map_err(diesel::r2d2::Error::QueryError)
    }
}

#[derive(QueryableByName)]
struct J {
    #[diesel(sql_type = Text)]
    j: String,
}

#[derive(serde::Deserialize)]
struct NewNote {
    title: String,
    #[serde(default)]
    body: String,
    #[serde(default = "three")]
    priority: i64,
}

fn three() -> i64 {
    3
}

const SELECT: &str = "SELECT json_object('id', id, 'title', title, 'body', body, 'priority', priority, 'created_at', created_at, 'updated_at', updated_at) AS j FROM notes WHERE id = ?";

/// The ceiling: the same SQL with no headers, no validation, no problem+json, no logging.
fn start_baseline(path: std::path::PathBuf) -> u16 {
    let url = path.to_string_lossy().to_string();
    let mut c = SqliteConnection::establish(&url).expect("open");
    c.batch_execute("PRAGMA journal_mode = WAL; CREATE TABLE notes (id TEXT PRIMARY KEY NOT NULL, title TEXT, body TEXT, priority INTEGER, created_at TEXT NOT NULL, updated_at TEXT NOT NULL);").expect("ddl");
    let pool = Pool::builder()
        .max_size(8)
        .connection_customizer(Box::new(Setup))
        .build(ConnectionManager::<SqliteConnection>::new(url))
        .expect("pool");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            HttpServer::new(move || {
                App::new()
                    .app_data(web::Data::new(pool.clone()))
                    .route("/notes/{id}", web::get().to(get))
                    .route("/notes", web::post().to(post))
            })
            .workers(1)
            .listen(listener)
            .expect("listen")
            .run()
            .await
        })
    });
    port
}

type P = web::Data<Pool<ConnectionManager<SqliteConnection>>>;

async fn get(pool: P, id: web::Path<String>) -> HttpResponse {
    let row = web::block(move || {
        let mut c = pool.get().ok()?;
        diesel::sql_query(SELECT)
            .bind::<Text, _>(id.into_inner())
            .get_result::<J>(&mut c)
            .ok()
    })
    .await
    .ok()
    .flatten();
    match row {
        Some(r) => HttpResponse::Ok()
            .content_type("application/json")
            .body(r.j),
        None => HttpResponse::NotFound().finish(),
    }
}

async fn post(pool: P, note: web::Json<NewNote>) -> HttpResponse {
    let row = web::block(move || {
        let mut c = pool.get().ok()?;
        let id = uuid::Uuid::now_v7().to_string();
        let now = humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string();
        c.transaction::<_, diesel::result::Error, _>(|c| {
            diesel::sql_query("INSERT INTO notes (id, title, body, priority, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)")
                .bind::<Text, _>(&id)
                .bind::<Text, _>(&note.title)
                .bind::<Text, _>(&note.body)
                .bind::<BigInt, _>(note.priority)
                .bind::<Text, _>(&now)
                .bind::<Text, _>(&now)
                .execute(c)?;
            diesel::sql_query(SELECT).bind::<Text, _>(&id).get_result::<J>(c)
        })
        .ok()
    })
    .await
    .ok()
    .flatten();
    match row {
        Some(r) => HttpResponse::Created()
            .content_type("application/json")
            .body(r.j),
        None => HttpResponse::InternalServerError().finish(),
    }
}
