//! Several instances behind no sticky balancer: two real `nestflux serve` processes on
//! different ports share one real Redis for rate limits (and, with `--features postgres`,
//! one real PostgreSQL for everything else). A limit holds across both; a skewed instance
//! clock changes nothing (Redis's `TIME` decides); a stopped or frozen Redis gets each
//! declared `on_backend_error` behaviour and never a 500; a Redis back resumes the shared
//! limits; the Redis password only ever comes from the environment and is never printed.
//! Both instances also start at the same moment on an empty PostgreSQL without error.
//!
//! Each test owns a private `redis-server` (see `redis_server`); they run when
//! `TEST_REDIS_URL` is set, like the PostgreSQL tests with `TEST_POSTGRES_URL`.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::blocking::Response;
use serde_json::Value;

use crate::common::{MINIMAL, Project, Server, client};
use crate::redis_server::{self, Redis};

fn header(res: &Response, name: &str) -> Option<String> {
    res.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// What a client sees of one request: status, `RateLimit`, `Retry-After`, problem `type`.
#[derive(Debug, Clone)]
struct Seen {
    status: StatusCode,
    ratelimit: Option<String>,
    retry_after: Option<String>,
    problem: Option<String>,
}

fn hit(s: &Server) -> Seen {
    let res = client().get(s.url("/health")).send().unwrap();
    let status = res.status();
    let ratelimit = header(&res, "ratelimit");
    let retry_after = header(&res, "retry-after");
    let problem = if status.is_success() {
        None
    } else {
        let body: Value = res.json().unwrap();
        body["type"].as_str().map(str::to_string)
    };
    Seen {
        status,
        ratelimit,
        retry_after,
        problem,
    }
}

/// `GET /health` for the client at `ip`, reported by the trusted proxy at 127.0.0.1.
/// The health detail (a public detail route: a development-only warning, fine in a test).
fn health(s: &Server, ip: &str) -> Response {
    client()
        .get(s.url("/health/detail"))
        .header("x-forwarded-for", ip)
        .send()
        .unwrap()
}

/// `[rate_limits]` on Redis with a `global` policy, and the health route; 127.0.0.1 is a
/// trusted proxy (so a test can speak for another client address).
fn config(redis_url: &str, mode: &str, policy: &str, extra: &str) -> String {
    format!(
        r#"[server]
trusted_proxies = ["127.0.0.1/32"]

[database]
url = "sqlite://data/app.db"

[rate_limits]
backend = "redis"
redis_url = "{redis_url}"
redis_timeout = "500ms"
on_backend_error = "{mode}"
{extra}

[rate_limits.global]
{policy}
{MINIMAL}
[[routes]]
method = "GET"
path = "/health/detail"
action = "health"
detail = true
public = true
"#
    )
}

/// Two instances of one project (one SQLite file, one Redis), each on its own port.
fn two(p: &Project, env_b: &[(&str, &str)]) -> (Server, Server) {
    let a = p.serve(&[]);
    let b = p.serve(env_b);
    (a, b)
}

/// `n` requests alternating between the instances, A first.
fn alternate(a: &Server, b: &Server, n: usize) -> Vec<Seen> {
    (0..n)
        .map(|i| if i % 2 == 0 { hit(a) } else { hit(b) })
        .collect()
}

fn statuses(seen: &[Seen]) -> Vec<u16> {
    seen.iter().map(|s| s.status.as_u16()).collect()
}

fn lines(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

const DOWN: &str = "Redis unreachable";
const BACK: &str = "Redis answers again; shared limits resume";

#[test]
fn a_limit_of_n_per_minute_admits_n_across_two_instances() {
    if !redis_server::available("a_limit_of_n_per_minute_admits_n_across_two_instances") {
        return;
    }
    let redis = Redis::start();
    let n = 6u64;
    let p = Project::new(&config(
        &redis.url(),
        "local",
        &format!("per_minute = {n}"),
        "",
    ));
    let (a, b) = two(&p, &[]);
    let started = Instant::now();
    let seen = alternate(&a, &b, 20);
    // One request refills every 10 s: a slow machine may see a refill, never more.
    let refills = started.elapsed().as_secs() / 10;
    let admitted = seen.iter().filter(|s| s.status == StatusCode::OK).count() as u64;
    assert!(
        (n..=n + refills).contains(&admitted),
        "{admitted} admitted: {:?}",
        statuses(&seen)
    );
    assert!(
        seen.iter()
            .all(|s| s.status == StatusCode::OK || s.status == StatusCode::TOO_MANY_REQUESTS),
        "{:?}",
        statuses(&seen)
    );
    // Both instances refused once the shared bucket was spent.
    let refused_by = |i: usize| {
        seen.iter()
            .skip(i)
            .step_by(2)
            .any(|s| s.status == StatusCode::TOO_MANY_REQUESTS)
    };
    assert!(refused_by(0) && refused_by(1), "{:?}", statuses(&seen));
    // One bucket in Redis for the one client, expiring when it is full again.
    let keys = redis.cli(&["KEYS", "nestflux:rl:*"]);
    assert_eq!(keys.trim(), "nestflux:rl:global:ip:127.0.0.1", "{keys}");
    let ttl: i64 = redis
        .cli(&["PTTL", "nestflux:rl:global:ip:127.0.0.1"])
        .trim()
        .parse()
        .unwrap();
    assert!(ttl > 0 && ttl <= 60_000, "PTTL {ttl}");
}

#[test]
fn a_skewed_instance_clock_changes_nothing_redis_time_decides() {
    if !redis_server::available("a_skewed_instance_clock_changes_nothing_redis_time_decides") {
        return;
    }
    let redis = Redis::start();
    // Four an hour: nothing refills during the test, so every field is exact.
    let p = Project::new(&config(&redis.url(), "local", "per_hour = 4", ""));
    let (a, b) = two(
        &p,
        &[("NESTFLUX_RATE_LIMITS__DANGEROUS_CLOCK_OFFSET", "-1h")],
    );
    let seen = alternate(&a, &b, 8);
    assert_eq!(
        statuses(&seen),
        [200, 200, 200, 200, 429, 429, 429, 429],
        "{seen:?}"
    );
    // One bucket counted down across both instances, 15 minutes per request used.
    let items: Vec<_> = seen.iter().map(|s| s.ratelimit.clone().unwrap()).collect();
    assert_eq!(
        &items[..4],
        [
            r#""global";r=3;t=900"#,
            r#""global";r=2;t=1800"#,
            r#""global";r=1;t=2700"#,
            r#""global";r=0;t=3600"#,
        ]
    );
    // Both instances tell a refused client the same wait (15 min at most, rounded up).
    for s in &seen[4..] {
        let retry: u64 = s.retry_after.as_deref().unwrap().parse().unwrap();
        assert!((895..=900).contains(&retry), "{s:?}");
    }
    // The skewed clock is real (the instance says so) and changed nothing.
    let log_b = b.log_when(|l| l.contains("clock is"));
    assert!(
        log_b.contains("this instance's clock is -3600.0 s off Redis's"),
        "{log_b}"
    );
    assert!(!a.log().contains("off Redis's"), "{}", a.log());
    // Refused in production: it exists for this test only.
    let out = p.run(
        &["check"],
        &[
            ("NESTFLUX_PROFILE", "production"),
            ("NESTFLUX_RATE_LIMITS__DANGEROUS_CLOCK_OFFSET", "-1h"),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("rate_limits.dangerous_clock_offset: refused in production"),
        "{err}"
    );
}

#[test]
fn redis_stopped_mid_test_each_fallback_as_declared_then_shared_again() {
    if !redis_server::available(
        "redis_stopped_mid_test_each_fallback_as_declared_then_shared_again",
    ) {
        return;
    }
    for mode in ["local", "deny", "allow"] {
        stopped_and_back(mode);
    }
}

fn stopped_and_back(mode: &str) {
    let mut redis = Redis::start();
    let p = Project::new(&config(&redis.url(), mode, "per_hour = 3", ""));
    let (a, b) = two(&p, &[]);
    let mut all = Vec::new();

    // Shared: three across both.
    let seen = alternate(&a, &b, 6);
    assert_eq!(statuses(&seen), [200, 200, 200, 429, 429, 429], "{mode}");
    all.extend(seen);

    redis.stop();
    let (on_a, on_b) = (
        (0..5).map(|_| hit(&a)).collect::<Vec<_>>(),
        (0..5).map(|_| hit(&b)).collect::<Vec<_>>(),
    );
    for seen in [&on_a, &on_b] {
        match mode {
            // Each instance counts alone: its own three, then 429 with its own fields.
            "local" => {
                assert_eq!(
                    statuses(seen),
                    [200, 200, 200, 429, 429],
                    "{mode}: {seen:?}"
                );
                assert_eq!(seen[0].ratelimit.as_deref(), Some(r#""global";r=2;t=1200"#));
                assert_eq!(
                    seen[3].problem.as_deref(),
                    Some("urn:nestflux:problem:rate-limited")
                );
            }
            // Refused, with a short Retry-After, as problem+json.
            "deny" => {
                for s in seen {
                    assert_eq!(s.status, StatusCode::SERVICE_UNAVAILABLE, "{s:?}");
                    assert_eq!(s.retry_after.as_deref(), Some("1"));
                    assert_eq!(
                        s.problem.as_deref(),
                        Some("urn:nestflux:problem:unavailable")
                    );
                    assert_eq!(s.ratelimit, None);
                }
            }
            // Through, uncounted, without RateLimit fields (there is no count to report).
            "allow" => {
                for s in seen {
                    assert_eq!(s.status, StatusCode::OK, "{s:?}");
                    assert_eq!(s.ratelimit, None);
                }
            }
            _ => unreachable!(),
        }
    }
    all.extend(on_a);
    all.extend(on_b);
    // Health says so, for a client with budget left (another address, through the
    // trusted proxy); in `deny` every rate-limited request is refused, health included.
    let res = health(&a, "198.51.100.7");
    if mode == "deny" {
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    } else {
        assert_eq!(res.status(), StatusCode::OK);
        let health: Value = res.json().unwrap();
        assert_eq!(health["status"], "degraded", "{health}");
        assert_eq!(health["checks"]["rate_limits"], "unavailable", "{health}");
    }
    // Loud, and once: one line on entering the degraded state, per instance.
    for s in [&a, &b] {
        let log = s.log_when(|l| l.contains(DOWN));
        assert_eq!(lines(&log, DOWN), 1, "{mode}: {log}");
        assert!(
            log.contains(&format!("on_backend_error = \\\"{mode}\\\"")),
            "{log}"
        );
    }

    // Redis back (new and empty): each instance notices by itself, once.
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(a.log().contains(BACK) && b.log().contains(BACK)) {
        assert!(
            Instant::now() < deadline,
            "{mode}: not resumed\n{}\n{}",
            a.log(),
            b.log()
        );
        all.push(hit(&a));
        all.push(hit(&b));
        std::thread::sleep(Duration::from_millis(50));
    }
    redis.cli(&["FLUSHALL"]);
    let health: Value = health(&a, "198.51.100.8").json().unwrap();
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["checks"]["rate_limits"], "ok", "{health}");
    let seen = alternate(&a, &b, 6);
    assert_eq!(
        statuses(&seen),
        [200, 200, 200, 429, 429, 429],
        "{mode} after"
    );
    all.extend(seen);
    for s in [&a, &b] {
        assert_eq!(lines(&s.log(), BACK), 1, "{mode}: {}", s.log());
        assert_eq!(lines(&s.log(), DOWN), 1, "{mode}: {}", s.log());
    }
    // Never a 500.
    assert!(
        all.iter().all(|s| s.status.as_u16() < 500
            || (mode == "deny" && s.status == StatusCode::SERVICE_UNAVAILABLE)),
        "{mode}: {:?}",
        statuses(&all)
    );
}

#[test]
fn a_frozen_redis_is_timed_out_and_the_local_limits_decide() {
    if !redis_server::available("a_frozen_redis_is_timed_out_and_the_local_limits_decide") {
        return;
    }
    let redis = Redis::start();
    let p = Project::new(&config(&redis.url(), "local", "per_hour = 2", ""));
    let s = p.serve(&[]);
    assert_eq!(hit(&s).status, StatusCode::OK);
    // Frozen: the connection stays open and nothing answers.
    redis.freeze();
    let seen: Vec<_> = (0..4).map(|_| hit(&s)).collect();
    redis.thaw();
    assert_eq!(statuses(&seen), [200, 200, 429, 429], "{seen:?}");
    let log = s.log_when(|l| l.contains(DOWN));
    assert!(
        log.contains("no answer within redis_timeout (500 ms)"),
        "{log}"
    );
    // Thawed: Redis decides again, and remembers the one request it counted.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !s.log().contains(BACK) {
        assert!(Instant::now() < deadline, "not resumed\n{}", s.log());
        hit(&s);
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_redis_password_comes_only_from_the_environment_and_is_never_printed() {
    const PASSWORD: &str = "s3cr3t-redis-pw";
    // In the URL in the file: a secret-in-file warning in development, an error in
    // production, naming both variables that can hold it; never echoed.
    let p = Project::new(&config(
        &format!("redis://:{PASSWORD}@127.0.0.1:6379/0"),
        "local",
        "per_hour = 2",
        "",
    ));
    for (profile, fails) in [("development", false), ("production", true)] {
        let out = p.run(&["check"], &[("NESTFLUX_PROFILE", profile)]);
        let err = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(!out.status.success(), fails, "{profile}: {err}");
        let severity = if fails { "error" } else { "warning" };
        assert!(
            err.contains(&format!(
                "{severity}[secret-in-file]: rate_limits.redis_url: the Redis password"
            )),
            "{err}"
        );
        assert!(err.contains("set NESTFLUX_RATE_LIMITS__REDIS_URL"), "{err}");
        assert!(
            err.contains("NESTFLUX_RATE_LIMITS__REDIS_PASSWORD"),
            "{err}"
        );
        assert!(!err.contains(PASSWORD), "{err}");
    }
    // The password key itself is refused from the file in every profile, and a password
    // set twice is a conflict whose snippet masks it too.
    for url in [
        "redis://127.0.0.1:6379/0",
        "redis://:other-pw-123@127.0.0.1:6379/0",
    ] {
        let p = Project::new(&config(
            url,
            "local",
            "per_hour = 2",
            &format!("redis_password = \"{PASSWORD}\""),
        ));
        let out = p.run(&["check"], &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert!(
            err.contains("error[secret-in-file]: rate_limits.redis_password: the Redis password must not be written in the file: set NESTFLUX_RATE_LIMITS__REDIS_PASSWORD"),
            "{err}"
        );
        assert!(
            !err.contains(PASSWORD) && !err.contains("other-pw-123"),
            "{err}"
        );
    }
    // Certificate checks cannot be turned off through the URL.
    let p = Project::new(&config(
        "rediss://127.0.0.1:6379/0#insecure",
        "local",
        "per_hour = 2",
        "",
    ));
    let out = p.run(&["check"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rate_limits.redis_url: a #fragment is not allowed"),
        "{err}"
    );

    if !redis_server::available(
        "the_redis_password_comes_only_from_the_environment_and_is_never_printed",
    ) {
        return;
    }
    let redis = Redis::start_with(Some(PASSWORD));
    let p = Project::new(&config(&redis.url(), "deny", "per_hour = 2", ""));
    let secret = p.write("redis-password", &format!("{PASSWORD}\n"));
    let secret = secret.to_str().unwrap();
    // From a _FILE beside a password-less URL in the file: shared limits work.
    let a = p.serve(&[("NESTFLUX_RATE_LIMITS__REDIS_PASSWORD_FILE", secret)]);
    // The whole URL from the environment.
    let url = format!("redis://:{PASSWORD}@127.0.0.1:{}/0", redis.port);
    let b = p.serve(&[("NESTFLUX_RATE_LIMITS__REDIS_URL", url.as_str())]);
    assert_eq!(statuses(&alternate(&a, &b, 4)), [200, 200, 429, 429]);
    // A wrong password: the declared fallback (deny), a reason in the log, no password.
    let c = p.serve(&[("NESTFLUX_RATE_LIMITS__REDIS_PASSWORD", "wrong-password-xyz")]);
    let seen = hit(&c);
    assert_eq!(seen.status, StatusCode::SERVICE_UNAVAILABLE, "{seen:?}");
    let log = c.log_when(|l| l.contains(DOWN));
    assert!(log.contains(DOWN), "{log}");
    for s in [&a, &b, &c] {
        let log = s.log();
        assert!(
            !log.contains(PASSWORD) && !log.contains("wrong-password-xyz"),
            "{log}"
        );
    }
    // A password that looks like a number is still text (its leading zero kept).
    let numeric = Redis::start_with(Some("0123456"));
    let q = Project::new(&config(&numeric.url(), "deny", "per_hour = 1", ""));
    let d = q.serve(&[("NESTFLUX_RATE_LIMITS__REDIS_PASSWORD", "0123456")]);
    assert_eq!(statuses(&alternate(&d, &d, 2)), [200, 429]);
    assert!(!d.log().contains(DOWN), "{}", d.log());
    let out = p.run(
        &["check"],
        &[("NESTFLUX_RATE_LIMITS__REDIS_URL", url.as_str())],
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        !text.contains(PASSWORD) && !text.contains("not yet enforced"),
        "{text}"
    );
}

/// Two instances on one PostgreSQL and one Redis, started at the same moment on an empty
/// database: both start without error, one development key and one schema result, a
/// token minted once works on both, a per-user write limit holds across both, and
/// concurrent writes through both all land.
#[cfg(feature = "postgres")]
#[test]
fn two_instances_on_one_postgres_and_one_redis() {
    use diesel::prelude::*;

    if !redis_server::available("two_instances_on_one_postgres_and_one_redis") {
        return;
    }
    let redis = Redis::start();
    let pg = crate::resources::pg::fresh_schema();
    let notes = crate::fixtures::Notes::new()
        .resource("owner = true")
        .access("list", "authenticated = true")
        .access("create", "authenticated = true\nrate_limit = \"writes\"");
    let n = 8u64;
    let text = format!(
        r#"[database]
url = "{pg}"

[auth.dev]
enabled = true

[rate_limits]
backend = "redis"
redis_url = "{redis}"
# The longest wait allowed: a loaded test machine must not trip the local fallback here.
redis_timeout = "1s"

[rate_limits.writes]
key = "user"
per_minute = {n}

[[routes]]
method = "GET"
path = "/health"
action = "health"
public = true
{notes}"#,
        redis = redis.url()
    );
    let p = std::sync::Arc::new(Project::new(&text));
    // Both at the same moment, on an empty schema.
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
    let starts: Vec<_> = (0..2)
        .map(|_| {
            let (barrier, p) = (barrier.clone(), p.clone());
            std::thread::spawn(move || {
                barrier.wait();
                p.try_serve(&[])
            })
        })
        .collect();
    let servers: Vec<Server> = starts
        .into_iter()
        .map(|h| {
            h.join()
                .unwrap()
                .unwrap_or_else(|log| panic!("an instance did not start:\n{log}"))
        })
        .collect();
    let (a, b) = (&servers[0], &servers[1]);
    for s in [a, b] {
        assert!(!s.log().contains("\"level\":\"ERROR\""), "{}", s.log());
    }
    let mut db = PgConnection::establish(&pg).unwrap();
    let count = |db: &mut PgConnection, sql: &str| -> i64 {
        #[derive(QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        diesel::sql_query(sql).get_result::<N>(db).unwrap().n
    };
    assert_eq!(
        count(&mut db, "SELECT count(*) AS n FROM nestflux_dev_keys"),
        1
    );
    // Every internal migration ran exactly once.
    let migrations = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
        .unwrap()
        .count() as i64;
    assert_eq!(
        count(
            &mut db,
            "SELECT count(*) AS n FROM __diesel_schema_migrations"
        ),
        migrations
    );
    // One token from the one key, good on both instances.
    let out = p.run(&["token", "--sub", "alice"], &[]);
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    for s in [a, b] {
        let res = client()
            .get(s.url("/api/notes"))
            .bearer_auth(&token)
            .send()
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{}", s.log());
    }
    // Concurrent writes through both: the per-user limit holds across the fleet, and
    // every admitted write is a row.
    let started = Instant::now();
    let writes: Vec<_> = (0..20)
        .map(|i| {
            let url = [a, b][i % 2].url("/api/notes");
            let token = token.clone();
            std::thread::spawn(move || {
                client()
                    .post(url)
                    .bearer_auth(token)
                    .json(&serde_json::json!({ "title": format!("note {i}") }))
                    .send()
                    .unwrap()
                    .status()
            })
        })
        .collect();
    let statuses: Vec<StatusCode> = writes.into_iter().map(|h| h.join().unwrap()).collect();
    let refills = started.elapsed().as_secs() * n / 60;
    let created = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count() as u64;
    for s in [a, b] {
        assert!(
            !s.log().contains(DOWN),
            "Redis was not deciding: {}",
            s.log()
        );
    }
    assert!((n..=n + refills).contains(&created), "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::CREATED || *s == StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    assert_eq!(
        count(&mut db, "SELECT count(*) AS n FROM notes") as u64,
        created
    );
    // The audit chain stays one valid sequence with both instances writing (issue 14):
    // `audit verify` is clean and holds one create per stored note.
    let out = p.run(&["audit", "verify"], &[]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        count(
            &mut db,
            "SELECT count(*) AS n FROM nestflux_audit WHERE action = 'create'"
        ) as u64,
        created
    );
}
