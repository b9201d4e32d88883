//! Browser login against the real `oidc-provider`, driven through its login and consent
//! pages over HTTP (`agent`): code flow with PKCE, the session cookie on API calls,
//! transparent refresh (exactly once, also with 20 concurrent requests and two instances),
//! logout here and at the provider, and every way a login or a session must fail: tampered,
//! replayed, foreign-browser and expired `state`, a wrong `nonce`, open redirects in
//! `return_to`, session fixation, CSRF, idle and absolute expiry, a refused refresh.
//! SQLite always; PostgreSQL too with `--features postgres`.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use diesel::prelude::*;
use reqwest::StatusCode;
use reqwest::blocking::Response;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::agent::{Agent, location, set_cookies};
use crate::common::{Project, Server, client};
use crate::fixtures::Notes;
use crate::oidc::{AUD, Provider, free_port};

pub const KEYS: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const SESSION: &str = "__Host-nestflux_session";
const LOGIN: &str = "__Host-nestflux_login";
const SPA: &str = "http://localhost:5173";

/// Where a test's data lives.
#[derive(Clone, Debug)]
pub enum Db {
    Sqlite,
    #[allow(dead_code)]
    Postgres(String),
}

/// What a test changes in the standard setup.
#[derive(Clone)]
pub struct Opts {
    pub db: Db,
    pub at_ttl: u64,
    pub idle: &'static str,
    pub absolute: &'static str,
    pub login_timeout: &'static str,
    pub audience: &'static str,
    pub workers: usize,
    pub refresh_delay_ms: u64,
    pub keys: bool,
    /// Serve HTTPS (with `[server.tls]` added by the test): the callback is https://.
    pub tls: bool,
    /// More lines for `[auth.session]`.
    pub session_extra: &'static str,
    /// More tables at the end of the file.
    pub extra: &'static str,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            db: Db::Sqlite,
            at_ttl: 300,
            idle: "30m",
            absolute: "12h",
            login_timeout: "10m",
            audience: AUD,
            workers: 2,
            refresh_delay_ms: 0,
            keys: true,
            tls: false,
            session_extra: "",
            extra: "",
        }
    }
}

/// A provider, a nestflux serving the notes API with browser login, and their settings.
struct Rig {
    provider: Option<Provider>,
    provider_port: u16,
    keys_file: std::path::PathBuf,
    project: Project,
    server: Server,
    port: u16,
    opts: Opts,
}

pub fn config(opts: &Opts, issuer: &str, port: u16) -> String {
    let db = match &opts.db {
        Db::Sqlite => "[database]\nurl = \"sqlite://data/app.db\"\n".to_string(),
        Db::Postgres(url) => format!("[database]\nurl = \"{url}\"\n"),
    };
    let notes = Notes::new()
        .resource("owner = true")
        .access("list", "permission = \"notes:read\"")
        .access("get", "permission = \"notes:read\"")
        .access("create", "permission = \"notes:create\"")
        .access("update", "permission = \"notes:update\"")
        .access("delete", "permission = \"notes:delete\"");
    format!(
        r#"{db}
[server]
workers = {workers}

[cors]
origins = ["{SPA}"]
credentials = true

[auth]
issuer = "{issuer}"
audience = "{audience}"
algorithms = ["RS256", "ES256"]
roles_claim = "roles"
leeway = "1s"

[auth.session]
client_id = "nestflux-web"
redirect_url = "{scheme}://127.0.0.1:{port}/auth/callback"
scopes = ["openid", "profile", "email", "roles"]
idle_timeout = "{idle}"
absolute_timeout = "{absolute}"
login_timeout = "{login_timeout}"
{session_extra}

[roles.user]
permissions = ["notes:read", "notes:create"]

[roles.service]
permissions = ["notes:read", "notes:create"]

[roles.admin]
inherits = ["user"]
permissions = ["notes:*"]

[[routes]]
method = "GET"
path = "/api/me"
action = "whoami"
authenticated = true

[[routes]]
method = "GET"
path = "/health"
action = "health"
public = true
{notes}
{extra}"#,
        workers = opts.workers,
        audience = opts.audience,
        idle = opts.idle,
        absolute = opts.absolute,
        login_timeout = opts.login_timeout,
        scheme = if opts.tls { "https" } else { "http" },
        session_extra = opts.session_extra,
        extra = opts.extra,
    )
}

impl Rig {
    fn start(opts: Opts) -> Rig {
        // The service's port goes into the provider's redirect URL, so it is chosen (and
        // released) before node starts, and another process may take it meanwhile: then
        // start over on a fresh one.
        let mut attempts = 0;
        loop {
            let port = free_port();
            let project = Project::new("");
            let keys_file = project.path().join("op-keys.json");
            let provider = start_provider(0, &keys_file, port, &opts);
            let provider_port = provider.port;
            std::fs::write(project.config(), config(&opts, &provider.issuer(), port)).unwrap();
            match try_serve(&project, port, &opts) {
                Ok(server) => {
                    return Rig {
                        provider: Some(provider),
                        provider_port,
                        keys_file,
                        project,
                        server,
                        port,
                        opts,
                    };
                }
                Err(log) if attempts < 3 && log.contains("Address already in use") => {
                    attempts += 1;
                }
                Err(log) => panic!("server did not start:\n{log}"),
            }
        }
    }

    /// `http://127.0.0.1:PORT`, the origin of the redirect URL.
    fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin())
    }

    fn provider(&self) -> &Provider {
        self.provider.as_ref().expect("provider running")
    }

    /// Stops the provider (its grants die with it).
    fn stop_provider(&mut self) {
        if let Some(p) = self.provider.take() {
            p.stop();
        }
    }

    /// A new provider process on the same port and keys: it knows none of the old grants.
    fn restart_provider(&mut self) {
        self.stop_provider();
        self.provider = Some(start_provider(
            self.provider_port,
            &self.keys_file,
            self.port,
            &self.opts,
        ));
    }

    /// A logged-in browser.
    fn logged_in(&self, user: &str) -> Agent {
        let mut agent = Agent::new();
        let res = agent.login(&self.origin(), user, None);
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{}", self.server.log());
        assert!(agent.jar.contains_key(SESSION), "{:?}", agent.jar);
        agent
    }

    /// Refresh grants answered so far, once the provider's output has caught up.
    fn refreshes(&self) -> usize {
        settled(|| self.provider().grants("refresh_token"))
    }

    fn sessions_in_db(&self) -> i64 {
        count(
            &self.opts.db,
            &self.project,
            "SELECT count(*) AS n FROM nestflux_sessions",
        )
    }
}

pub fn start_provider(
    port: u16,
    keys_file: &std::path::Path,
    app_port: u16,
    opts: &Opts,
) -> Provider {
    let scheme = if opts.tls { "https" } else { "http" };
    let redirect = format!("{scheme}://127.0.0.1:{app_port}/auth/callback");
    let ttl = opts.at_ttl.to_string();
    let delay = opts.refresh_delay_ms.to_string();
    Provider::start_with(
        port,
        keys_file,
        "1",
        &[
            ("RP_REDIRECT", redirect.as_str()),
            ("AT_TTL", ttl.as_str()),
            ("ROTATE_REFRESH", "1"),
            ("REFRESH_DELAY_MS", delay.as_str()),
        ],
    )
}

fn serve(project: &Project, port: u16, opts: &Opts) -> Server {
    try_serve(project, port, opts).unwrap_or_else(|log| panic!("server did not start:\n{log}"))
}

fn try_serve(project: &Project, port: u16, opts: &Opts) -> Result<Server, String> {
    let bind = format!("127.0.0.1:{port}");
    let mut env = vec![
        ("NESTFLUX_SERVER__BIND", bind.as_str()),
        ("NESTFLUX_AUTH__SESSION__CLIENT_SECRET", "web-secret"),
        ("RUST_LOG", "info,nestflux::auth=debug"),
    ];
    if opts.keys {
        env.push(("NESTFLUX_ENCRYPTION__KEYS", KEYS));
    }
    project.try_serve(&env)
}

/// A value read until it stops changing for a moment (the provider prints its grants
/// through a pipe, a little after it answers).
fn settled(read: impl Fn() -> usize) -> usize {
    let mut last = read();
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = read();
        if now == last {
            return now;
        }
        last = now;
    }
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Texts {
    #[diesel(sql_type = diesel::sql_types::Text)]
    a: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    b: String,
}

fn count(db: &Db, project: &Project, sql: &str) -> i64 {
    match db {
        Db::Sqlite => {
            let path = project.path().join("data/app.db");
            let mut c = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
            diesel::sql_query(sql)
                .get_result::<Count>(&mut c)
                .unwrap()
                .n
        }
        #[cfg(feature = "postgres")]
        Db::Postgres(url) => {
            let mut c = PgConnection::establish(url).unwrap();
            diesel::sql_query(sql)
                .get_result::<Count>(&mut c)
                .unwrap()
                .n
        }
        #[cfg(not(feature = "postgres"))]
        Db::Postgres(_) => unreachable!(),
    }
}

fn texts(db: &Db, project: &Project, sql: &str) -> Vec<(String, String)> {
    let rows: Vec<Texts> = match db {
        Db::Sqlite => {
            let path = project.path().join("data/app.db");
            let mut c = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
            diesel::sql_query(sql).load(&mut c).unwrap()
        }
        #[cfg(feature = "postgres")]
        Db::Postgres(url) => {
            let mut c = PgConnection::establish(url).unwrap();
            diesel::sql_query(sql).load(&mut c).unwrap()
        }
        #[cfg(not(feature = "postgres"))]
        Db::Postgres(_) => unreachable!(),
    };
    rows.into_iter().map(|r| (r.a, r.b)).collect()
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn get(agent: &Agent, url: &str) -> Response {
    agent.with(client().get(url)).send().unwrap()
}

fn post_note(agent: &Agent, url: &str, headers: &[(&str, &str)]) -> Response {
    let mut req = agent
        .with(client().post(url))
        .json(&serde_json::json!({ "title": "from the browser" }));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().unwrap()
}

fn logout(agent: &mut Agent, rig: &Rig, origin: &str) -> Response {
    let res = agent
        .with(client().post(rig.url("/auth/logout")))
        .header("origin", origin)
        .send()
        .unwrap();
    agent.absorb(&res);
    res
}

fn json(res: Response) -> Value {
    res.json().unwrap()
}

fn assert_problem(res: Response, status: StatusCode, slug: &str) -> Value {
    assert_eq!(res.status(), status);
    assert_eq!(
        res.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    let body = json(res);
    assert_eq!(
        body["type"],
        format!("urn:nestflux:problem:{slug}"),
        "{body}"
    );
    body
}

/// Sleeps until `deadline` (a moment after an access token's expiry).
fn sleep_until(deadline: Instant) {
    if let Some(d) = deadline.checked_duration_since(Instant::now()) {
        std::thread::sleep(d);
    }
}

fn backends() -> Vec<Db> {
    #[allow(unused_mut)]
    let mut out = vec![Db::Sqlite];
    #[cfg(feature = "postgres")]
    out.push(Db::Postgres(crate::resources::pg::fresh_schema()));
    out
}

#[test]
fn login_api_call_refresh_and_logout() {
    for db in backends() {
        login_api_call_refresh_and_logout_on(db);
    }
}

fn login_api_call_refresh_and_logout_on(db: Db) {
    let rig = Rig::start(Opts {
        db: db.clone(),
        at_ttl: 5,
        ..Opts::default()
    });
    let mut browser = Agent::new();
    // Before login: no session, and API routes want credentials.
    assert_eq!(
        json(get(&browser, &rig.url("/auth/session"))),
        serde_json::json!({ "authenticated": false })
    );
    assert_eq!(
        get(&browser, &rig.url("/api/me")).status(),
        StatusCode::UNAUTHORIZED
    );

    // Login: the provider's forms, then the callback sets the session cookie.
    let provider_url = browser.start_login(&rig.origin(), Some("/api/me?from=login"));
    assert!(
        browser.jar.contains_key(LOGIN),
        "login cookie: {:?}",
        browser.jar
    );
    let auth = url::Url::parse(&provider_url).unwrap();
    let params: std::collections::HashMap<_, _> = auth.query_pairs().into_owned().collect();
    assert!(
        provider_url.starts_with(&rig.provider().issuer()),
        "{provider_url}"
    );
    assert_eq!(params["code_challenge_method"], "S256");
    assert_eq!(params["response_type"], "code");
    assert_eq!(params["client_id"], "nestflux-web");
    assert_eq!(params["redirect_uri"], rig.url("/auth/callback"));
    for p in ["state", "nonce", "code_challenge"] {
        assert!(params[p].len() >= 43, "{p} is not 256 bits: {}", params[p]);
    }
    assert!(
        params["scope"].split(' ').any(|s| s == "openid"),
        "{}",
        params["scope"]
    );
    let callback = browser.authorize(&provider_url, "admin", &rig.url("/auth/callback"));
    let res = browser.get(&callback);
    assert_eq!(res.status(), StatusCode::SEE_OTHER, "{}", rig.server.log());
    assert_eq!(location(&res), "/api/me?from=login");
    assert_eq!(
        res.headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    let cookies = set_cookies(&res);
    let session = cookies
        .iter()
        .find(|c| c.name == SESSION)
        .expect("session cookie");
    assert_eq!(
        session.attributes, "Path=/; Max-Age=43200; HttpOnly; SameSite=Lax; Secure",
        "__Host- cookies need Secure and Path=/ and no Domain"
    );
    assert!(
        cookies
            .iter()
            .any(|c| c.name == LOGIN && c.max_age() == Some(0)),
        "the login cookie is cleared: {cookies:?}"
    );
    assert!(!browser.jar.contains_key(LOGIN));
    let logged_in_at = Instant::now();
    // The login's audit row committed with the session: there as soon as the callback
    // answered, no queue to wait for.
    let session_rows = |rig: &Rig| {
        texts(
            &rig.opts.db,
            &rig.project,
            "SELECT action AS a, actor AS b FROM nestflux_audit \
             WHERE action LIKE 'session.%' ORDER BY seq",
        )
    };
    assert_eq!(
        session_rows(&rig),
        vec![("session.login".to_string(), "admin".to_string())]
    );

    // The cookie authenticates API calls: subject, roles from the access token.
    let me = json(get(&browser, &rig.url("/api/me")));
    assert_eq!(me["subject"], "admin", "{me}");
    assert_eq!(me["kind"], "session");
    assert_eq!(me["roles"], serde_json::json!(["admin", "user"]));
    let status = json(get(&browser, &rig.url("/auth/session")));
    assert_eq!(status["authenticated"], true);
    assert_eq!(status["subject"], "admin");
    assert_eq!(status["roles"], serde_json::json!(["admin", "user"]));
    assert!(
        status["expires_at"].as_str().unwrap().ends_with('Z'),
        "{status}"
    );

    // At rest: only the id's hash, tokens sealed with the key ring; the user is recorded.
    let id = browser.jar[SESSION].clone();
    let rows = texts(
        &db,
        &rig.project,
        "SELECT id_hash AS a, access_token || ' ' || refresh_token || ' ' || id_token AS b FROM nestflux_sessions",
    );
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0, sha256_hex(&id));
    for sealed in rows[0].1.split(' ') {
        let payload = sealed
            .strip_prefix("nf1:k1:")
            .unwrap_or_else(|| panic!("{sealed}"));
        assert!(!payload.starts_with("eyJ"), "a token is stored in clear");
    }
    let sealed_at_login = rows[0].1.clone();
    assert_eq!(
        count(
            &db,
            &rig.project,
            "SELECT count(*) AS n FROM nestflux_users WHERE subject = 'admin'"
        ),
        1
    );

    // A write from our own origin passes the CSRF check.
    let res = post_note(
        &browser,
        &rig.url("/api/notes"),
        &[("origin", &rig.origin())],
    );
    assert_eq!(
        res.status(),
        StatusCode::CREATED,
        "{}",
        res.text().unwrap_or_default()
    );

    // The access token expires: the next call refreshes it, transparently, once.
    assert_eq!(rig.refreshes(), 0);
    sleep_until(logged_in_at + Duration::from_secs(6));
    let me = json(get(&browser, &rig.url("/api/me")));
    assert_eq!(me["subject"], "admin", "{}", rig.server.log());
    assert_eq!(rig.refreshes(), 1);
    assert_eq!(json(get(&browser, &rig.url("/api/me")))["kind"], "session");
    assert_eq!(rig.refreshes(), 1, "a fresh token is not refreshed again");
    // And again: the provider rotates refresh tokens, so this only works with the new one.
    sleep_until(logged_in_at + Duration::from_secs(12));
    assert_eq!(
        get(&browser, &rig.url("/api/me")).status(),
        StatusCode::OK,
        "{}",
        rig.server.log()
    );
    assert_eq!(rig.refreshes(), 2);

    // Logout: deleted here, cookie cleared, sent to the provider with the hint.
    let res = logout(&mut browser, &rig, &rig.origin());
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let cleared = set_cookies(&res);
    assert!(
        cleared
            .iter()
            .any(|c| c.name == SESSION && c.max_age() == Some(0)),
        "{cleared:?}"
    );
    let end = url::Url::parse(&location(&res)).unwrap();
    assert!(end.as_str().starts_with(&rig.provider().issuer()), "{end}");
    let q: std::collections::HashMap<_, _> = end.query_pairs().into_owned().collect();
    assert!(q["id_token_hint"].starts_with("eyJ"), "{q:?}");
    // The ID token was stored only sealed.
    assert!(!sealed_at_login.contains(q["id_token_hint"].as_str()));
    assert_eq!(q["post_logout_redirect_uri"], rig.url("/"));
    assert_eq!(q["client_id"], "nestflux-web");
    // The provider accepts that request (it checks the hint and the registered URI).
    let page = client().get(end.as_str()).send().unwrap();
    assert_eq!(
        page.status(),
        StatusCode::OK,
        "{}",
        page.text().unwrap_or_default()
    );
    assert_eq!(rig.sessions_in_db(), 0);
    // The logout's row too, with whose session it was (not `-`).
    assert_eq!(
        session_rows(&rig),
        vec![
            ("session.login".to_string(), "admin".to_string()),
            ("session.logout".to_string(), "admin".to_string()),
        ]
    );

    // The old cookie is refused everywhere now.
    let mut stale = Agent::new();
    stale.jar.insert(SESSION.into(), id);
    let res = get(&stale, &rig.url("/api/me"));
    assert!(
        set_cookies(&res)
            .iter()
            .any(|c| c.name == SESSION && c.max_age() == Some(0))
    );
    assert_problem(res, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(
        json(get(&stale, &rig.url("/auth/session"))),
        serde_json::json!({ "authenticated": false })
    );
    // No token or session id ever reached the log.
    let log = rig.server.log();
    assert!(!log.contains(&stale.jar[SESSION]), "session id in the log");
    assert!(
        !log.contains(q["id_token_hint"].as_str()),
        "the ID token in the log"
    );
    assert!(!log.contains("eyJ"), "a token in the log");
}

/// `url` with its query parameter `name` replaced by `f(old value)`.
fn with_param(url: &str, name: &str, f: impl Fn(&str) -> String) -> String {
    let mut url = url::Url::parse(url).unwrap();
    let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    url.query_pairs_mut()
        .clear()
        .extend_pairs(pairs.iter().map(|(k, v)| {
            if k == name {
                (k.clone(), f(v))
            } else {
                (k.clone(), v.clone())
            }
        }));
    url.to_string()
}

#[test]
fn state_is_single_use_bound_to_the_browser_and_expiring() {
    let rig = Rig::start(Opts {
        login_timeout: "3s",
        ..Opts::default()
    });
    let prefix = rig.url("/auth/callback");
    let refused_as = |status: StatusCode| {
        move |res: Response| {
            assert!(!set_cookies(&res).iter().any(|c| c.name == SESSION));
            assert_problem(res, status, "login-failed");
        }
    };
    // A callback whose state names no pending login (tampered, used, spent): 404, like any
    // missing row; one refused for what it is (another browser, too late, no state): 400.
    let (gone, refused) = (
        refused_as(StatusCode::NOT_FOUND),
        refused_as(StatusCode::BAD_REQUEST),
    );

    // Tampered state: refused, and it does not spend the real one.
    let mut browser = Agent::new();
    let p = browser.start_login(&rig.origin(), None);
    let cb = browser.authorize(&p, "alice", &prefix);
    let login_cookie = browser.jar[LOGIN].clone();
    // Change the last character (to one it is not: a fixed "A" is a no-op one time in 64).
    let tampered = with_param(&cb, "state", |v| {
        let last = if v.ends_with('A') { 'B' } else { 'A' };
        format!("{}{last}", &v[..v.len() - 1])
    });
    gone(browser.clone().get(&tampered));
    // The real callback works once …
    let res = browser.get(&cb);
    assert_eq!(res.status(), StatusCode::SEE_OTHER, "{}", rig.server.log());
    // … and a replay, even with the login cookie put back, is refused.
    let mut replay = browser.clone();
    replay.jar.insert(LOGIN.into(), login_cookie);
    gone(replay.get(&cb));

    // A callback in another browser (no login cookie, or another one) is refused and spends
    // the state: the browser that started the login cannot use it afterwards either.
    let mut victim = Agent::new();
    let p = victim.start_login(&rig.origin(), None);
    let cb = victim.authorize(&p, "alice", &prefix);
    let mut attacker = Agent::new();
    attacker.start_login(&rig.origin(), None);
    refused(attacker.get(&cb));
    gone(victim.get(&cb));
    gone(Agent::new().get(&cb));

    // Expired: a login that takes longer than login_timeout is refused.
    let mut slow = Agent::new();
    let p = slow.start_login(&rig.origin(), None);
    let cb = slow.authorize(&p, "alice", &prefix);
    std::thread::sleep(Duration::from_millis(3500));
    let late = slow.get(&cb);
    // Taken too late (400), or already swept as expired (404): refused either way.
    if late.status() == StatusCode::NOT_FOUND {
        gone(late);
    } else {
        refused(late);
    }

    // No state at all.
    refused(Agent::new().get(&with_param(&cb, "state", |_| String::new())));

    // Only the one good login made a session.
    assert_eq!(rig.sessions_in_db(), 1);
}

#[test]
fn a_wrong_nonce_is_refused() {
    let rig = Rig::start(Opts::default());
    let mut browser = Agent::new();
    let provider_url = browser.start_login(&rig.origin(), None);
    // The provider puts whatever nonce it is asked for into the ID token.
    let url = with_param(&provider_url, "nonce", |_| {
        "an-attacker-chosen-nonce-0123456789abcdefghijk".into()
    });
    let callback = browser.authorize(&url, "alice", &rig.url("/auth/callback"));
    let res = browser.get(&callback);
    assert!(!set_cookies(&res).iter().any(|c| c.name == SESSION));
    let body = assert_problem(res, StatusCode::BAD_REQUEST, "login-failed");
    assert!(
        body["detail"].as_str().unwrap().contains("ID token"),
        "{body}"
    );
    assert_eq!(rig.sessions_in_db(), 0);
    assert!(
        rig.server
            .log_when(|l| l.contains("nonce does not match"))
            .contains("nonce does not match")
    );
}

#[test]
fn return_to_never_leaves_this_server_or_the_cors_origins() {
    let rig = Rig::start(Opts::default());
    let own_lookalike = format!("http://127.0.0.1:{}.evil.example/", rig.port);
    let cases: Vec<(&str, &str)> = vec![
        ("/api/me?x=1#frag", "/api/me?x=1#frag"),
        ("http://localhost:5173/app", "http://localhost:5173/app"),
        ("https://evil.example/", "/"),
        ("//evil.example", "/"),
        ("/\\evil.example", "/"),
        ("/%2F%2Fevil.example", "/"),
        ("%2F%2Fevil.example", "/"),
        ("/%5Cevil.example", "/"),
        ("/%252F%252Fevil.example", "/"),
        ("http://localhost:5174/", "/"),
        (own_lookalike.as_str(), "/"),
    ];
    for (given, expected) in cases {
        let mut browser = Agent::new();
        let res = browser.login(&rig.origin(), "alice", Some(given));
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{given}");
        assert_eq!(location(&res), expected, "return_to={given:?}");
    }
}

#[test]
fn login_always_issues_a_fresh_session_id() {
    let rig = Rig::start(Opts::default());
    // An attacker plants a session id of their choosing before the victim logs in.
    let planted = "AttackerChosenSessionId0123456789abcdefghij".to_string();
    assert_eq!(planted.len(), 43);
    let mut victim = Agent::new();
    victim.jar.insert(SESSION.into(), planted.clone());
    let res = victim.login(&rig.origin(), "alice", None);
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let issued = victim.jar[SESSION].clone();
    assert_ne!(issued, planted);
    let mut attacker = Agent::new();
    attacker.jar.insert(SESSION.into(), planted);
    assert_eq!(
        get(&attacker, &rig.url("/api/me")).status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(json(get(&victim, &rig.url("/api/me")))["subject"], "alice");

    // Logging in again replaces the session: the old id stops working.
    let res = victim.login(&rig.origin(), "alice", None);
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_ne!(victim.jar[SESSION], issued);
    let mut old = Agent::new();
    old.jar.insert(SESSION.into(), issued);
    assert_eq!(
        get(&old, &rig.url("/api/me")).status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(get(&victim, &rig.url("/api/me")).status(), StatusCode::OK);
    assert_eq!(rig.sessions_in_db(), 1);
}

#[test]
fn cookie_writes_need_an_allowed_origin_bearer_writes_do_not() {
    let rig = Rig::start(Opts::default());
    let mut browser = rig.logged_in("alice");
    let notes = rig.url("/api/notes");
    let notes_in_db = || {
        count(
            &rig.opts.db,
            &rig.project,
            "SELECT count(*) AS n FROM notes",
        )
    };

    for headers in [
        vec![("origin", "https://evil.example")],
        vec![("origin", "null")],
        vec![("origin", "http://127.0.0.1:1")],
        vec![("sec-fetch-site", "cross-site")],
        vec![("sec-fetch-site", "same-site")],
        vec![
            ("origin", "https://evil.example"),
            ("sec-fetch-site", "cross-site"),
        ],
        vec![],
    ] {
        let res = post_note(&browser, &notes, &headers);
        assert_problem(res, StatusCode::FORBIDDEN, "forbidden");
    }
    assert_eq!(notes_in_db(), 0, "a refused request wrote nothing");
    // Safe methods need no origin check.
    assert_eq!(
        browser
            .with(client().get(&notes))
            .header("origin", "https://evil.example")
            .send()
            .unwrap()
            .status(),
        StatusCode::OK
    );
    // Our own origin, a listed CORS origin, or same-origin fetch metadata pass. The last:
    // a same-origin form POST from a page with `Referrer-Policy: no-referrer` (Helmet's
    // default) sends `Origin: null`, as Chromium showed in browser.rs.
    let own = rig.origin();
    for headers in [
        vec![("origin", own.as_str())],
        vec![("origin", SPA)],
        vec![("sec-fetch-site", "same-origin")],
        vec![("origin", "null"), ("sec-fetch-site", "same-origin")],
    ] {
        let res = post_note(&browser, &notes, &headers);
        assert_eq!(res.status(), StatusCode::CREATED, "{headers:?}");
    }
    assert_eq!(notes_in_db(), 4);

    // Bearer tokens are not cookies: no origin check. And a request with both a bearer
    // token and the cookie is the bearer token's.
    let token = rig.provider().token(AUD);
    let res = browser
        .with(client().post(&notes))
        .bearer_auth(&token)
        .header("origin", "https://evil.example")
        .json(&serde_json::json!({ "title": "machine" }))
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let me = json(
        browser
            .with(client().get(rig.url("/api/me")))
            .bearer_auth(&token)
            .send()
            .unwrap(),
    );
    assert_eq!(me["kind"], "bearer");
    assert_eq!(me["subject"], "nestflux-svc");
    // A bad bearer token is not rescued by the cookie.
    let res = browser
        .with(client().get(rig.url("/api/me")))
        .bearer_auth("a.b.c")
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    // Logout is a write too.
    let res = logout(&mut browser.clone(), &rig, "https://evil.example");
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(get(&browser, &rig.url("/api/me")).status(), StatusCode::OK);
    let res = logout(&mut browser, &rig, SPA);
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
}

#[test]
fn twenty_concurrent_requests_at_expiry_refresh_once_on_two_instances() {
    for db in backends() {
        concurrent_refresh_on(db);
    }
}

fn concurrent_refresh_on(db: Db) {
    let rig = Rig::start(Opts {
        db,
        at_ttl: 4,
        workers: 4,
        ..Opts::default()
    });
    // A second instance on the same database (another port; same callback URL).
    let second_port = free_port();
    let second = serve(&rig.project, second_port, &rig.opts);
    let browser = rig.logged_in("admin");
    let logged_in = Instant::now();
    assert_eq!(rig.refreshes(), 0);

    // Round 1: 20 requests at once to one instance (4 workers), after expiry.
    sleep_until(logged_in + Duration::from_secs(5));
    let statuses = burst(&browser, &[rig.url("/api/me")], 20);
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}\n{}",
        rig.server.log()
    );
    assert_eq!(rig.refreshes(), 1, "{}", rig.server.log());

    // Round 2: 10 to each instance at once, after the new token expired too.
    sleep_until(Instant::now() + Duration::from_secs(5));
    let urls = [rig.url("/api/me"), second.url("/api/me")];
    let statuses = burst(&browser, &urls, 20);
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}\n{}\n{}",
        rig.server.log(),
        second.log()
    );
    assert_eq!(rig.refreshes(), 2, "{}\n{}", rig.server.log(), second.log());
}

#[test]
fn a_session_made_on_one_instance_works_on_the_other_and_a_logout_there_ends_it_everywhere() {
    for db in backends() {
        session_across_instances(db);
    }
}

fn session_across_instances(db: Db) {
    // With the suite's Redis, the two instances share their rate limits as well.
    let redis = crate::redis_server::available("session_across_instances (Redis part)")
        .then(crate::redis_server::Redis::start);
    let extra: &'static str = match &redis {
        Some(r) => Box::leak(
            format!(
                "[rate_limits]\nbackend = \"redis\"\nredis_url = \"{}\"\n\n[rate_limits.global]\nper_hour = 1000\n",
                r.url()
            )
            .into_boxed_str(),
        ),
        None => "",
    };
    let rig = Rig::start(Opts {
        db,
        extra,
        ..Opts::default()
    });
    let second = serve(&rig.project, free_port(), &rig.opts);
    // Made on the first instance, used on the second.
    let mut browser = rig.logged_in("alice");
    let me = json(get(&browser, &second.url("/api/me")));
    assert_eq!(me["subject"], "alice", "{me}");
    let cookie = browser.cookie_header();
    // Logout on the second instance.
    let res = browser
        .with(client().post(second.url("/auth/logout")))
        .header("origin", SPA)
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER, "{}", second.log());
    browser.absorb(&res);
    // The old cookie opens nothing anywhere, at once: no instance keeps a session past its row.
    for url in [rig.url("/api/me"), second.url("/api/me")] {
        let res = client().get(&url).header("cookie", &cookie).send().unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{url}");
    }
    assert_eq!(rig.sessions_in_db(), 0);
    if let Some(r) = &redis {
        // The global limit was counted in Redis (one request refills in 3.6 s, so the key
        // is still there).
        let keys = r.cli(&["KEYS", "nestflux:rl:global:*"]);
        assert_eq!(keys.trim(), "nestflux:rl:global:ip:127.0.0.1", "{keys}");
    }
}

/// `n` GETs released at once, spread over `urls`; their statuses.
fn burst(agent: &Agent, urls: &[String], n: usize) -> Vec<StatusCode> {
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let barrier = barrier.clone();
            let url = urls[i % urls.len()].clone();
            let cookie = agent.cookie_header();
            std::thread::spawn(move || {
                let http = client();
                barrier.wait();
                http.get(url)
                    .header("cookie", cookie)
                    .send()
                    .unwrap()
                    .status()
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn idle_and_absolute_timeouts_end_sessions_and_the_sweeper_removes_them() {
    let rig = Rig::start(Opts {
        idle: "3s",
        absolute: "6s",
        ..Opts::default()
    });
    // Idle: unused for longer than idle_timeout.
    let idle = rig.logged_in("alice");
    // Absolute: used every second, yet ended absolute_timeout after login.
    let busy = rig.logged_in("bob");
    let start = Instant::now();
    let mut busy_ok_until = Duration::ZERO;
    while start.elapsed() < Duration::from_millis(7500) {
        let res = get(&busy, &rig.url("/api/me"));
        if res.status() == StatusCode::OK {
            busy_ok_until = start.elapsed();
        } else {
            assert!(
                set_cookies(&res)
                    .iter()
                    .any(|c| c.name == SESSION && c.max_age() == Some(0)),
                "an ended session's cookie is cleared"
            );
            assert_problem(res, StatusCode::UNAUTHORIZED, "unauthorized");
            break;
        }
        std::thread::sleep(Duration::from_millis(1000));
    }
    assert!(
        busy_ok_until >= Duration::from_secs(4),
        "use kept the session past its idle timeout: {busy_ok_until:?}"
    );
    assert!(
        busy_ok_until < Duration::from_secs(6),
        "the session outlived its absolute timeout: {busy_ok_until:?}"
    );
    assert_eq!(
        get(&busy, &rig.url("/api/me")).status(),
        StatusCode::UNAUTHORIZED
    );

    // The idle session was never used again: the sweeper removed it without any request.
    let deadline = Instant::now() + Duration::from_secs(10);
    while rig.sessions_in_db() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(rig.sessions_in_db(), 0, "expired sessions are swept");
    assert_eq!(
        get(&idle, &rig.url("/api/me")).status(),
        StatusCode::UNAUTHORIZED
    );
}

#[test]
fn logout_during_a_refresh_in_flight_stays_logged_out() {
    let rig = Rig::start(Opts {
        at_ttl: 3,
        refresh_delay_ms: 2500,
        ..Opts::default()
    });
    let mut browser = rig.logged_in("alice");
    std::thread::sleep(Duration::from_secs(4));
    // This request finds the token expired and waits for the (slow) refresh …
    let cookie = browser.cookie_header();
    let url = rig.url("/api/me");
    let in_flight = std::thread::spawn(move || {
        client()
            .get(url)
            .header("cookie", cookie)
            .send()
            .unwrap()
            .status()
    });
    // … while the user logs out in another tab.
    std::thread::sleep(Duration::from_millis(700));
    let res = logout(&mut browser, &rig, &rig.origin());
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(rig.sessions_in_db(), 0);
    // The refresh finishes at the provider, but its result does not bring the session back.
    assert_eq!(
        in_flight.join().unwrap(),
        StatusCode::UNAUTHORIZED,
        "{}",
        rig.server.log()
    );
    assert_eq!(rig.refreshes(), 1);
    assert_eq!(rig.sessions_in_db(), 0);
    assert_eq!(
        get(&browser, &rig.url("/api/me")).status(),
        StatusCode::UNAUTHORIZED
    );
}

#[test]
fn a_refused_refresh_ends_the_session_an_unreachable_provider_does_not() {
    let mut rig = Rig::start(Opts {
        at_ttl: 3,
        ..Opts::default()
    });
    let browser = rig.logged_in("alice");
    // Provider down when the token expires: 503, and the session is kept.
    rig.stop_provider();
    std::thread::sleep(Duration::from_secs(4));
    let res = get(&browser, &rig.url("/api/me"));
    assert!(res.headers().contains_key("retry-after"));
    assert_problem(res, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert_eq!(rig.sessions_in_db(), 1);
    // It comes back without the grant (a restart of an in-memory provider): the refresh is
    // refused, the session ends with a clean 401 and its cookie is cleared.
    rig.restart_provider();
    let res = get(&browser, &rig.url("/api/me"));
    assert!(
        set_cookies(&res)
            .iter()
            .any(|c| c.name == SESSION && c.max_age() == Some(0)),
        "{}",
        rig.server.log()
    );
    assert_problem(res, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(rig.sessions_in_db(), 0);
}

#[test]
fn the_dangerous_insecure_cookie_drops_secure_and_the_prefix() {
    let rig = Rig::start(Opts {
        session_extra: "dangerous_insecure_cookie = true",
        ..Opts::default()
    });
    let mut browser = Agent::new();
    let provider_url = browser.start_login(&rig.origin(), None);
    assert!(
        browser.jar.contains_key("nestflux_login"),
        "{:?}",
        browser.jar
    );
    let callback = browser.authorize(&provider_url, "alice", &rig.url("/auth/callback"));
    let res = browser.get(&callback);
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let cookies = set_cookies(&res);
    let session = cookies
        .iter()
        .find(|c| c.name == "nestflux_session")
        .expect("nestflux_session");
    assert_eq!(
        session.attributes,
        "Path=/; Max-Age=43200; HttpOnly; SameSite=Lax"
    );
    assert!(!cookies.iter().any(|c| c.name.starts_with("__Host-")));
    assert_eq!(json(get(&browser, &rig.url("/api/me")))["kind"], "session");
    assert!(
        rig.server
            .log_when(|l| l.contains("dangerous_insecure_cookie"))
            .contains("development only")
    );
}

#[test]
fn forged_session_cookies_spend_the_auth_failures_budget_but_never_lock_out_a_session() {
    let rig = Rig::start(Opts {
        extra: "[rate_limits.auth_failures]\nper_minute = 1\nburst = 3\n",
        ..Opts::default()
    });
    let browser = rig.logged_in("alice");
    for i in 0..3 {
        let mut forger = Agent::new();
        forger.jar.insert(SESSION.into(), format!("{i}").repeat(43));
        let res = get(&forger, &rig.url("/api/me"));
        assert_problem(res, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    // The budget is spent: a bearer token never seen gets 429 unchecked …
    let token = rig.provider().token(AUD);
    let res = client()
        .get(rig.url("/api/me"))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_problem(res, StatusCode::TOO_MANY_REQUESTS, "auth-failures");
    // … while a real session from the same address goes on working.
    assert_eq!(json(get(&browser, &rig.url("/api/me")))["subject"], "alice");
}

#[test]
fn roles_come_from_the_id_token_when_the_access_token_is_for_another_audience() {
    let rig = Rig::start(Opts {
        audience: "urn:another:api",
        ..Opts::default()
    });
    let browser = rig.logged_in("admin");
    let me = json(get(&browser, &rig.url("/api/me")));
    assert_eq!(me["kind"], "session");
    assert_eq!(me["roles"], serde_json::json!(["admin", "user"]), "{me}");
}

#[test]
fn without_encryption_keys_development_seals_sessions_with_the_dev_key() {
    // No NESTFLUX_ENCRYPTION__KEYS in development: the first run creates the development
    // key beside the database (loudly), and a login seals its tokens with it.
    let rig = Rig::start(Opts {
        keys: false,
        ..Opts::default()
    });
    assert!(
        rig.server
            .log_when(|l| l.contains("DEVELOPMENT ENCRYPTION KEY IN USE"))
            .contains("DEVELOPMENT ENCRYPTION KEY IN USE")
    );
    let browser = rig.logged_in("alice");
    assert_eq!(
        json(get(&browser, &rig.url("/auth/session")))["authenticated"],
        true
    );
    assert_eq!(rig.sessions_in_db(), 1);
}

#[test]
fn the_session_routes_are_listed_and_documented() {
    let project = Project::new(&config(&Opts::default(), "http://127.0.0.1:9", 8080));
    let out = project.run(&["routes"], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for line in [
        "GET     /auth/login",
        "GET     /auth/callback",
        "POST    /auth/logout",
        "GET     /auth/session",
    ] {
        let (method, path) = line.split_once(' ').unwrap();
        assert!(
            text.lines()
                .any(|l| l.starts_with(method) && l.contains(path.trim()) && l.contains("public")),
            "{line} missing:\n{text}"
        );
    }
    let out = project.run(&["openapi"], &[]);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["paths"]["/auth/login"]["get"]["operationId"], "login");
    assert!(doc["paths"]["/auth/login"]["get"]["responses"]["302"].is_object());
    assert!(doc["paths"]["/auth/callback"]["get"]["responses"]["303"].is_object());
    assert!(doc["paths"]["/auth/logout"]["post"]["responses"]["403"].is_object());
    assert_eq!(
        doc["paths"]["/auth/session"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
            ["required"],
        serde_json::json!(["authenticated"])
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["session"]["name"],
        SESSION
    );
    // Without [auth.session] none of them exists.
    let plain = Project::new(crate::common::MINIMAL);
    let out = plain.run(&["routes"], &[]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("/auth/"));
}

#[test]
fn a_declared_route_cannot_take_a_session_route() {
    let taken = config(&Opts::default(), "http://127.0.0.1:9", 8080)
        + "\n[[routes]]\nmethod = \"GET\"\npath = \"/auth/login\"\naction = \"health\"\npublic = true\n";
    let out = Project::new(&taken).run(&["check"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("GET /auth/login is the browser login's login route"),
        "{err}"
    );
}

/// `nestflux check` of a session setup with `redirect_url`, extra `[auth.session]` lines
/// and a profile: (exit code, stdout + stderr).
fn check_session(redirect: &str, extra: &str, production: bool) -> (i32, String) {
    let file = format!(
        "[auth]\nissuer = \"https://idp.example.com\"\naudience = \"api\"\n[auth.session]\nclient_id = \"web\"\nredirect_url = \"{redirect}\"\n{extra}\n{}",
        crate::common::MINIMAL
    );
    let mut env = vec![("NESTFLUX_ENCRYPTION__KEYS", KEYS)];
    if production {
        env.push(("NESTFLUX_PROFILE", "production"));
    }
    let out = Project::new(&file).run(&["check"], &env);
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_cookie_follows_the_redirect_url() {
    // https: the __Host- cookie, no warning about it.
    let (code, text) = check_session("https://api.example.com/auth/callback", "", true);
    assert_eq!(code, 0, "{text}");
    // Loopback over plain HTTP: allowed (browsers treat it as secure) with a warning,
    // refused in production.
    let (code, text) = check_session("http://127.0.0.1:8080/auth/callback", "", false);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("warning[refused-in-production]: auth.session.redirect_url: plain-HTTP callback on loopback"),
        "{text}"
    );
    let (code, text) = check_session("http://localhost:8080/auth/callback", "", true);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("plain-HTTP session cookies are refused in production"),
        "{text}"
    );
    // Any other plain-HTTP host needs the dangerous switch, which production refuses.
    let (code, text) = check_session("http://app.example/auth/callback", "", false);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("dangerous_insecure_cookie = true"), "{text}");
    let (code, text) = check_session(
        "http://app.example/auth/callback",
        "dangerous_insecure_cookie = true",
        false,
    );
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("warning[refused-in-production]: auth.session.dangerous_insecure_cookie"),
        "{text}"
    );
    let (code, _) = check_session(
        "http://app.example/auth/callback",
        "dangerous_insecure_cookie = true",
        true,
    );
    assert_eq!(code, 1);
    // A callback path the router cannot serve.
    let (code, text) = check_session("https://api.example.com/auth/{x}", "", false);
    assert_eq!(code, 1, "{text}");
}

#[test]
fn the_client_secret_is_refused_in_the_file() {
    let file = "[auth]\nissuer = \"https://idp.example.com\"\naudience = \"api\"\n[auth.session]\nclient_id = \"web\"\nclient_secret = \"hunter2\"\nredirect_url = \"https://api.example.com/cb\"\n".to_string()
        + crate::common::MINIMAL;
    let p = Project::new(&file);
    let out = p.run(&["check"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("auth.session.client_secret: the OIDC client secret must not be written in the file: set NESTFLUX_AUTH__SESSION__CLIENT_SECRET"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
    // From the environment (or a _FILE), it is fine.
    let ok = Project::new(&file.replace("client_secret = \"hunter2\"\n", ""));
    let secret = ok.write("secret", "hunter2\n");
    let out = ok.run(
        &["check"],
        &[(
            "NESTFLUX_AUTH__SESSION__CLIENT_SECRET_FILE",
            secret.to_str().unwrap(),
        )],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_root_file_serves_dev_tokens_while_its_provider_is_down() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/nestflux.toml");
    let project = Project::new(&std::fs::read_to_string(root).unwrap());
    // The file names http://127.0.0.1:9000; point it at a port where surely nothing
    // listens, so another provider on 9000 cannot make this pass or fail.
    let issuer = format!("http://127.0.0.1:{}", free_port());
    let env = [
        ("NESTFLUX_ENCRYPTION__KEYS", KEYS),
        ("NESTFLUX_AUTH__ISSUER", issuer.as_str()),
    ];
    let token = project.run(&["token", "--sub", "alice", "--role", "editor"], &env);
    assert!(
        token.status.success(),
        "{}",
        String::from_utf8_lossy(&token.stderr)
    );
    let token = String::from_utf8(token.stdout).unwrap().trim().to_string();
    let server = project.serve(&env);
    assert_eq!(
        client().get(server.url("/health")).send().unwrap().status(),
        StatusCode::OK
    );
    let me = json(
        client()
            .get(server.url("/api/me"))
            .bearer_auth(&token)
            .send()
            .unwrap(),
    );
    assert_eq!(me["kind"], "dev", "{me}");
    let res = client().get(server.url("/auth/login")).send().unwrap();
    assert_problem(res, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
}
