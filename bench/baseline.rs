//! Bench-only: the ceiling NestFlux is measured against, as an HTTP server. A hand-written
//! actix-web + diesel service doing the same SQL on the same kind of SQLite file (WAL,
//! `synchronous = FULL`, an r2d2 pool of 8, `web::block` per query) with no security
//! layers: no headers, no authentication, no validation, no encryption, no problem+json,
//! no logging. `bench/run` starts it with `baseline DB ADDR`. Its `/floor` answers like
//! NestFlux's `/health` without any of NestFlux's layers (see [`floor`]).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool};
use diesel::sql_types::{BigInt, Text};

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
    #[serde(default)]
    secret: Option<String>,
}

fn three() -> i64 {
    3
}

const ROW: &str = "json_object('id', id, 'owner', owner, 'body', body, 'due', due, 'priority', priority, \
     'secret', secret, 'tags', json(tags), 'title', title, 'created_at', created_at, 'updated_at', updated_at)";

type P = web::Data<Pool<ConnectionManager<SqliteConnection>>>;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (db, addr) = (args[1].clone(), args[2].clone());
    let mut c = SqliteConnection::establish(&db).expect("open");
    c.batch_execute("PRAGMA journal_mode = WAL;").expect("wal");
    drop(c);
    let pool = Pool::builder()
        .max_size(8)
        .connection_customizer(Box::new(Setup))
        .build(ConnectionManager::<SqliteConnection>::new(db))
        .expect("pool");
    actix_web::rt::System::new().block_on(async move {
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(pool.clone()))
                .route("/health", web::get().to(health))
                .route("/floor", web::get().to(floor))
                .route("/notes/{id}", web::get().to(get))
                .route("/notes", web::get().to(list))
                .route("/notes", web::post().to(post))
        })
        .bind(&addr)
        .expect("bind");
        eprintln!("baseline listening on http://{addr}");
        server.run().await.expect("run");
    });
}

async fn health() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(r#"{"status":"ok"}"#)
}

/// The headers NestFlux's `GET /health` answers with under bench/run's config (the reference
/// file's secure headers, CORS and `RateLimit` headers), besides the request id.
const FLOOR_HEADERS: [(&str, &str); 17] = [
    (
        "access-control-expose-headers",
        "retry-after, location, ratelimit-policy, x-request-id, ratelimit",
    ),
    ("x-permitted-cross-domain-policies", "none"),
    ("cross-origin-resource-policy", "same-origin"),
    ("x-content-type-options", "nosniff"),
    (
        "vary",
        "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
    ),
    (
        "content-security-policy",
        "default-src 'self'; frame-ancestors 'none'",
    ),
    ("x-dns-prefetch-control", "off"),
    ("cross-origin-opener-policy", "same-origin"),
    ("ratelimit", "\"global\";r=199;t=1"),
    ("origin-agent-cluster", "?1"),
    ("cache-control", "no-store"),
    ("x-download-options", "noopen"),
    ("x-frame-options", "SAMEORIGIN"),
    ("ratelimit-policy", "\"global\";q=100;w=1"),
    ("access-control-allow-credentials", "true"),
    ("x-xss-protection", "0"),
    ("referrer-policy", "no-referrer"),
];

/// The floor: `/health` as NestFlux must send it, with nothing computed. The same headers
/// (static here), a fresh UUIDv7 request id and one access line written to stderr in one
/// `write`, as NestFlux writes its own. No rate limit, CORS check, routing, deadline or
/// metrics: the least any server answering like NestFlux pays per response.
async fn floor(req: HttpRequest) -> HttpResponse {
    use std::io::Write;
    let started = std::time::Instant::now();
    let rid = uuid::Uuid::now_v7().to_string();
    let mut res = HttpResponse::Ok();
    res.content_type("application/json");
    for header in FLOOR_HEADERS {
        res.insert_header(header);
    }
    res.insert_header(("x-request-id", rid.as_str()));
    let line = format!(
        "{{\"timestamp\":\"{}\",\"level\":\"INFO\",\"method\":\"GET\",\"route\":\"{}\",\"status\":200,\"latency_ms\":{},\"request_id\":\"{rid}\",\"subject\":\"-\",\"target\":\"baseline\"}}\n",
        humantime::format_rfc3339_micros(std::time::SystemTime::now()),
        req.path(),
        started.elapsed().as_secs_f64() * 1000.0,
    );
    let _ = std::io::stderr().write_all(line.as_bytes());
    res.body(r#"{"status":"ok"}"#)
}

async fn get(pool: P, id: web::Path<String>) -> HttpResponse {
    let row = web::block(move || {
        let mut c = pool.get().ok()?;
        diesel::sql_query(format!("SELECT {ROW} AS j FROM notes WHERE id = ?"))
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

/// `?limit=50`, or `?sort=-priority&priority=3` (the two pages `bench/run` asks for).
async fn list(pool: P, req: HttpRequest) -> HttpResponse {
    let sorted = req.query_string().contains("sort=-priority");
    let rows = web::block(move || {
        let mut c = pool.get().ok()?;
        let q = if sorted {
            diesel::sql_query(format!(
                "SELECT {ROW} AS j FROM notes WHERE priority = ? ORDER BY priority DESC, id DESC LIMIT ?"
            ))
            .bind::<BigInt, _>(3)
            .bind::<BigInt, _>(51)
            .load::<J>(&mut c)
        } else {
            diesel::sql_query(format!("SELECT {ROW} AS j FROM notes ORDER BY id LIMIT ?"))
                .bind::<BigInt, _>(51)
                .load::<J>(&mut c)
        };
        q.ok()
    })
    .await
    .ok()
    .flatten();
    let Some(mut rows) = rows else {
        return HttpResponse::InternalServerError().finish();
    };
    let more = rows.len() > 50;
    rows.truncate(50);
    let mut body = String::with_capacity(rows.iter().map(|r| r.j.len() + 1).sum::<usize>() + 64);
    body.push_str("{\"items\":[");
    for (i, r) in rows.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&r.j);
    }
    body.push_str("],\"next_cursor\":");
    body.push_str(if more { "\"more\"" } else { "null" });
    body.push('}');
    HttpResponse::Ok()
        .content_type("application/json")
        .body(body)
}

async fn post(pool: P, note: web::Json<NewNote>) -> HttpResponse {
    let row = web::block(move || {
        let mut c = pool.get().ok()?;
        let id = uuid::Uuid::now_v7().to_string();
        let now = humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string();
        c.transaction::<_, diesel::result::Error, _>(|c| {
            diesel::sql_query(
                "INSERT INTO notes (id, owner, body, priority, secret, tags, title, created_at, updated_at) \
                 VALUES (?, 'bench', ?, ?, ?, '[]', ?, ?, ?)",
            )
            .bind::<Text, _>(&id)
            .bind::<Text, _>(&note.body)
            .bind::<BigInt, _>(note.priority)
            .bind::<diesel::sql_types::Nullable<Text>, _>(&note.secret)
            .bind::<Text, _>(&note.title)
            .bind::<Text, _>(&now)
            .bind::<Text, _>(&now)
            .execute(c)?;
            diesel::sql_query(format!("SELECT {ROW} AS j FROM notes WHERE id = ?"))
                .bind::<Text, _>(&id)
                .get_result::<J>(c)
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
        None => HttpResponse::ServiceUnavailable().finish(),
    }
}
