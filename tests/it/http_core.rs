//! The runtime core over real HTTP: secure headers, CORS, problem+json errors, environment
//! overrides, `_FILE` secrets and TLS — each against the real binary.

use crate::common::{self, MINIMAL, Project, client};
use reqwest::StatusCode;
use reqwest::blocking::Response;
use serde_json::Value;

/// Helmet 8's defaults, which NestFlux sends unless `[headers]` says otherwise.
const HELMET: &[(&str, &str)] = &[
    (
        "content-security-policy",
        "default-src 'self';base-uri 'self';font-src 'self' https: data:;form-action 'self';frame-ancestors 'self';img-src 'self' data:;object-src 'none';script-src 'self';script-src-attr 'none';style-src 'self' https: 'unsafe-inline';upgrade-insecure-requests",
    ),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
    ("origin-agent-cluster", "?1"),
    ("referrer-policy", "no-referrer"),
    ("x-content-type-options", "nosniff"),
    ("x-dns-prefetch-control", "off"),
    ("x-download-options", "noopen"),
    ("x-frame-options", "SAMEORIGIN"),
    ("x-permitted-cross-domain-policies", "none"),
    ("x-xss-protection", "0"),
];

fn header<'a>(res: &'a Response, name: &str) -> Option<&'a str> {
    res.headers().get(name).and_then(|v| v.to_str().ok())
}

fn assert_helmet(res: &Response) {
    for (name, value) in HELMET {
        assert_eq!(
            header(res, name),
            Some(*value),
            "header {name} on {}",
            res.url()
        );
    }
    assert_eq!(
        header(res, "strict-transport-security"),
        None,
        "no HSTS over plain HTTP"
    );
    assert_eq!(header(res, "server"), None);
    assert_eq!(header(res, "x-powered-by"), None);
    assert_eq!(header(res, "cross-origin-embedder-policy"), None);
}

/// Asserts an RFC 9457 body with the given status and returns it.
pub(crate) fn assert_problem(res: Response, status: StatusCode) -> Value {
    assert_eq!(res.status(), status);
    assert_helmet(&res);
    assert_eq!(
        header(&res, "content-type"),
        Some("application/problem+json")
    );
    let rid = header(&res, "x-request-id")
        .expect("x-request-id")
        .to_string();
    let body: Value = res.json().expect("problem body is JSON");
    assert_eq!(body["status"], status.as_u16());
    assert_eq!(body["request_id"], rid.as_str());
    assert!(
        body["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("urn:nestflux:problem:")),
        "{body}"
    );
    assert!(
        body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
    body
}

#[test]
fn health_carries_every_default_header() {
    let p = Project::new(MINIMAL);
    let s = p.serve(&[]);
    let res = client().get(s.url("/health")).send().unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_helmet(&res);
    assert_eq!(header(&res, "content-type"), Some("application/json"));
    let body: Value = res.json().unwrap();
    assert_eq!(body["status"], "ok");
}

#[test]
fn request_id_is_kept_when_sane_and_replaced_otherwise() {
    let p = Project::new(MINIMAL);
    let s = p.serve(&[]);
    let c = client();
    let res = c
        .get(s.url("/health"))
        .header("x-request-id", "trace-42.a:b")
        .send()
        .unwrap();
    assert_eq!(header(&res, "x-request-id"), Some("trace-42.a:b"));
    let res = c
        .get(s.url("/health"))
        .header("x-request-id", "has space")
        .send()
        .unwrap();
    let id = header(&res, "x-request-id").unwrap();
    assert_ne!(id, "has space");
    assert_eq!(
        uuid::Uuid::parse_str(id).map(|u| u.get_version_num()),
        Ok(7)
    );
    let long = "a".repeat(200);
    let res = c
        .get(s.url("/health"))
        .header("x-request-id", &long)
        .send()
        .unwrap();
    assert_ne!(header(&res, "x-request-id"), Some(long.as_str()));
}

#[test]
fn errors_are_problem_json_with_headers() {
    let p = Project::new(&format!(
        "[server]\nbody_limit = \"64\"\n{}{MINIMAL}",
        crate::fixtures::Notes::new()
    ));
    let s = p.serve(&[]);
    let c = client();

    let body = assert_problem(c.get(s.url("/nope")).send().unwrap(), StatusCode::NOT_FOUND);
    assert_eq!(body["type"], "urn:nestflux:problem:not-found");

    let res = c.delete(s.url("/api/notes")).send().unwrap();
    assert_eq!(header(&res, "allow"), Some("GET, POST, HEAD"));
    assert_problem(res, StatusCode::METHOD_NOT_ALLOWED);

    let big = format!("{{\"x\":\"{}\"}}", "a".repeat(100));
    let res = c
        .post(s.url("/api/notes"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .unwrap();
    assert_problem(res, StatusCode::PAYLOAD_TOO_LARGE);

    let res = c
        .post(s.url("/api/notes"))
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .unwrap();
    assert_problem(res, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let res = c
        .post(s.url("/api/notes"))
        .header("content-type", "application/json")
        .body("{\"a\":")
        .send()
        .unwrap();
    let body = assert_problem(res, StatusCode::BAD_REQUEST);
    assert!(
        body["detail"].as_str().unwrap().contains("line 1 column 5"),
        "{body}"
    );
}

#[test]
fn oversized_chunked_body_is_413() {
    use std::io::{Read, Write};
    let p = Project::new(&format!(
        "[server]\nbody_limit = \"64\"\n{}",
        crate::fixtures::Notes::new()
    ));
    let s = p.serve(&[]);
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", s.port())).unwrap();
    let chunk = "a".repeat(100);
    write!(
        tcp,
        "POST /api/notes HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len()
    )
    .unwrap();
    let mut answer = String::new();
    let _ = tcp.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert!(
        answer.contains("x-content-type-options: nosniff"),
        "{answer}"
    );
}

#[test]
fn headers_can_be_overridden_and_removed() {
    let p = Project::new(&format!(
        "[headers]\ncontent_security_policy = \"default-src 'none'\"\nx_frame_options = \"DENY\"\nx_xss_protection = \"\"\ncross_origin_embedder_policy = \"require-corp\"\n{MINIMAL}"
    ));
    let s = p.serve(&[]);
    for path in ["/health", "/missing"] {
        let res = client().get(s.url(path)).send().unwrap();
        assert_eq!(
            header(&res, "content-security-policy"),
            Some("default-src 'none'")
        );
        assert_eq!(header(&res, "x-frame-options"), Some("DENY"));
        assert_eq!(header(&res, "x-xss-protection"), None);
        assert_eq!(
            header(&res, "cross-origin-embedder-policy"),
            Some("require-corp")
        );
        assert_eq!(header(&res, "referrer-policy"), Some("no-referrer"));
    }
}

const CORS: &str = r#"
[cors]
origins = ["http://localhost:5173"]
methods = ["GET", "POST"]
headers = ["authorization", "content-type"]
credentials = true
max_age = "10m"
"#;

#[test]
fn cors_preflight_allowed_and_refused() {
    let p = Project::new(&format!("{CORS}{MINIMAL}"));
    let s = p.serve(&[]);
    let c = client();
    let ok = c
        .request(reqwest::Method::OPTIONS, s.url("/health"))
        .header("origin", "http://localhost:5173")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .unwrap();
    assert!(ok.status().is_success(), "{}", ok.status());
    assert_eq!(
        header(&ok, "access-control-allow-origin"),
        Some("http://localhost:5173")
    );
    assert_eq!(
        header(&ok, "access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(header(&ok, "access-control-max-age"), Some("600"));
    let methods = header(&ok, "access-control-allow-methods").unwrap();
    assert!(
        methods.contains("POST") && !methods.contains("DELETE"),
        "{methods}"
    );
    assert_helmet(&ok);

    let refused = c
        .request(reqwest::Method::OPTIONS, s.url("/health"))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .unwrap();
    assert_eq!(header(&refused, "access-control-allow-origin"), None);
    let body = assert_problem(refused, StatusCode::BAD_REQUEST);
    assert_eq!(body["type"], "urn:nestflux:problem:cors-refused");

    let bad_method = c
        .request(reqwest::Method::OPTIONS, s.url("/health"))
        .header("origin", "http://localhost:5173")
        .header("access-control-request-method", "DELETE")
        .send()
        .unwrap();
    assert_eq!(header(&bad_method, "access-control-allow-origin"), None);
    assert!(bad_method.status().is_client_error());

    // A simple cross-origin GET from an unlisted origin is answered without CORS headers,
    // so the browser withholds it.
    let res = c
        .get(s.url("/health"))
        .header("origin", "https://evil.example")
        .send()
        .unwrap();
    assert_eq!(header(&res, "access-control-allow-origin"), None);
    let res = c
        .get(s.url("/health"))
        .header("origin", "http://localhost:5173")
        .send()
        .unwrap();
    assert_eq!(
        header(&res, "access-control-allow-origin"),
        Some("http://localhost:5173")
    );
}

#[test]
fn environment_overrides_file_values() {
    let p = Project::new(&format!(
        "[server]\nbody_limit = \"1MiB\"\n{}{MINIMAL}",
        crate::fixtures::Notes::new()
    ));
    // server.body_limit (a key of a section) and headers.referrer_policy.
    let s = p.serve(&[
        ("NESTFLUX_SERVER__BODY_LIMIT", "16"),
        ("NESTFLUX_HEADERS__REFERRER_POLICY", "same-origin"),
    ]);
    let res = client()
        .post(s.url("/api/notes"))
        .header("content-type", "application/json")
        .body("{\"twenty\":\"bytes...\"}")
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(header(&res, "referrer-policy"), Some("same-origin"));
}

#[test]
fn deeply_nested_environment_key_is_checked_with_its_path() {
    let p = Project::new(MINIMAL);
    let out = p.run(
        &["check"],
        &[("NESTFLUX_AUTH__SESSION__IDLE_TIMEOUT", "whenever")],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("auth.session.idle_timeout: `whenever` is not a duration"),
        "{stderr}"
    );
}

#[test]
fn file_secrets_are_read_and_never_echoed() {
    let p = Project::new(MINIMAL);
    let secret = p.write("xfo", "DENY\n");
    let s = p.serve(&[(
        "NESTFLUX_HEADERS__X_FRAME_OPTIONS_FILE",
        secret.to_str().unwrap(),
    )]);
    let res = client().get(s.url("/health")).send().unwrap();
    assert_eq!(header(&res, "x-frame-options"), Some("DENY"));

    let keys = p.write("keys", "k1:c2VjcmV0LXNlY3JldC1zZWNyZXQ=\n");
    let out = p.run(
        &["check"],
        &[("NESTFLUX_ENCRYPTION__KEYS_FILE", keys.to_str().unwrap())],
    );
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("encryption.keys[0]: key \"k1\" is not 32 bytes"),
        "{all}"
    );
    assert!(!all.contains("c2VjcmV0"), "key material leaked: {all}");

    let out = p.run(
        &["check"],
        &[("NESTFLUX_ENCRYPTION__KEYS_FILE", "/nonexistent/keys")],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("NESTFLUX_ENCRYPTION__KEYS_FILE: cannot read secret file")
    );
}

#[test]
fn serves_https_with_hsts_when_tls_is_configured() {
    let ca = common::TestCa::new();
    let p = Project::new(&format!("{}{MINIMAL}", common::TLS));
    ca.install(&p);
    let s = p.serve(&[]);
    assert!(s.url.starts_with("https://"), "{}", s.url);

    let c = ca.client();
    let res = c.get(s.url("/health")).send().unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        header(&res, "strict-transport-security"),
        Some("max-age=31536000; includeSubDomains")
    );
    let res = c.get(s.url("/missing")).send().unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        header(&res, "strict-transport-security"),
        Some("max-age=31536000; includeSubDomains")
    );

    // Plain HTTP to the TLS port gets no answer.
    let plain = client()
        .get(s.url("/health").replace("https://", "http://"))
        .send();
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true));
}

#[test]
fn sigterm_stops_the_server_gracefully() {
    let p = Project::new(MINIMAL);
    let mut s = p.serve(&[]);
    assert_eq!(
        client().get(s.url("/health")).send().unwrap().status(),
        StatusCode::OK
    );
    let pid = s.child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        if let Some(status) = s.child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status:?}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "server did not stop");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let log = s.log_when(|l| l.contains("SIGTERM received"));
    assert!(log.contains("SIGTERM received"), "{log}");
}

#[test]
fn access_log_has_one_line_per_request() {
    let p = Project::new(MINIMAL);
    let s = p.serve(&[]);
    client()
        .get(s.url("/health"))
        .header("x-request-id", "log-probe-1")
        .send()
        .unwrap();
    client()
        .get(s.url("/nowhere"))
        .header("x-request-id", "log-probe-2")
        .send()
        .unwrap();
    let log = s.log_when(|l| l.contains("log-probe-2"));
    let lines: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "nestflux::request")
        .collect();
    let probe = |id: &str| {
        lines
            .iter()
            .find(|v| v["request_id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{log}"))
    };
    let a = probe("log-probe-1");
    assert_eq!(
        (
            a["method"].as_str(),
            a["route"].as_str(),
            a["status"].as_u64()
        ),
        (Some("GET"), Some("/health"), Some(200))
    );
    assert!(a["latency_ms"].as_f64().is_some() && a["subject"] == "-");
    let b = probe("log-probe-2");
    assert_eq!(
        (b["route"].as_str(), b["status"].as_u64()),
        (Some("-"), Some(404))
    );
}
