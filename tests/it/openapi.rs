//! The OpenAPI 3.1 document: what `nestflux openapi` prints for a notes API, that
//! `GET /openapi.json` serves the same bytes with the secure headers, that its exposure and
//! access are whatever the route declares, that no secret leaks into it, and that a real
//! validator (`openapi-spec-validator` from PyPI) accepts it.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{self, MINIMAL, Project, client};
use crate::fixtures::{edit, servable_reference};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The public document route.
const DOCUMENT: &str = r#"
[[routes]]
method = "GET"
path = "/openapi.json"
action = "openapi"
public = true
"#;

/// The reference service as this build serves it, with `secret` stored in the clear (so it
/// can be filtered), plus the document served publicly and to API-key holders (`docs`).
fn notes_config(api_key_hash: &str) -> String {
    let reference = edit(&servable_reference(), "encrypted = [\"secret\"]", "");
    let api_key = common::api_key_table("docs", api_key_hash, "docs");
    format!(
        r#"{reference}
{api_key}
[roles.docs]
permissions = ["docs:read"]
{DOCUMENT}
[[routes]]
method = "GET"
path = "/internal/openapi.json"
action = "openapi"
permission = "docs:read"
"#
    )
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// `nestflux openapi --config <project>`: the printed text.
fn printed(p: &Project, env: &[(&str, &str)]) -> String {
    let out = p.run(&["openapi"], env);
    assert!(
        out.status.success(),
        "nestflux openapi failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text).expect("the document is JSON")
}

fn names(v: &Value) -> Vec<&str> {
    v.as_array()
        .expect("array")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect()
}

#[test]
fn the_document_describes_every_route_of_the_notes_api() {
    let (_, hash) = common::new_api_key("docs");
    let p = Project::new(&notes_config(&hash));
    let doc = parse(&printed(&p, &[]));

    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "nestflux");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    let paths: Vec<&str> = doc["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        paths,
        [
            "/api/audit",
            "/api/me",
            "/api/notes",
            "/api/notes/{id}",
            "/auth/callback",
            "/auth/login",
            "/auth/logout",
            "/auth/session",
            "/health",
            "/internal/openapi.json",
            "/openapi.json"
        ]
    );
    let op = |path: &str, method: &str| doc["paths"][path][method].clone();
    let ids = [
        ("/api/notes", "get", "list_notes"),
        ("/api/notes", "post", "create_notes"),
        ("/api/notes/{id}", "get", "get_notes"),
        ("/api/notes/{id}", "patch", "update_notes"),
        ("/api/notes/{id}", "delete", "delete_notes"),
        ("/api/me", "get", "whoami"),
        ("/health", "get", "health"),
        ("/openapi.json", "get", "openapi"),
        ("/internal/openapi.json", "get", "openapi_2"),
        ("/auth/login", "get", "login"),
        ("/auth/callback", "get", "callback"),
        ("/auth/logout", "post", "logout"),
        ("/auth/session", "get", "session"),
    ];
    for (path, method, id) in ids {
        assert_eq!(op(path, method)["operationId"], id, "{method} {path}");
    }

    // Components: the declared schema, its stored record, the problem shape.
    let schemas = &doc["components"]["schemas"];
    assert_eq!(schemas["Note"]["required"], json!(["title"]));
    assert_eq!(schemas["Note"]["additionalProperties"], false);
    assert_eq!(schemas["Note"]["properties"]["priority"]["default"], 3);
    let record = &schemas["NoteRecord"];
    for field in [
        "id",
        "owner",
        "created_at",
        "updated_at",
        "title",
        "priority",
    ] {
        assert!(
            record["required"]
                .as_array()
                .is_some_and(|r| r.contains(&json!(field))),
            "{field} is always in a record: {record}"
        );
    }
    assert_eq!(record["properties"]["id"]["format"], "uuid");
    assert_eq!(record["properties"]["created_at"]["format"], "date-time");
    assert_eq!(
        record["properties"]["due"]["type"],
        json!(["string", "null"])
    );
    // A guarded field may be hidden from the reader: never required, and it says why.
    assert!(
        !record["required"]
            .as_array()
            .is_some_and(|r| r.contains(&json!("secret")))
    );
    assert_eq!(
        record["properties"]["secret"]["x-nestflux-field-permission"],
        "notes:secret"
    );
    assert!(
        record["properties"]["secret"]["description"]
            .as_str()
            .is_some_and(|d| d.contains("notes:secret"))
    );
    let problem = &schemas["Problem"];
    assert_eq!(
        problem["required"],
        json!(["type", "title", "status", "detail", "request_id"])
    );
    assert_eq!(
        problem["properties"]["errors"]["items"]["required"],
        json!(["pointer", "message"])
    );

    // Security schemes: bearer, the declared API keys and the browser session's cookie.
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["bearer"]["bearerFormat"], "JWT");
    assert_eq!(schemes["apiKey"]["in"], "header");
    assert_eq!(schemes["apiKey"]["name"], "X-API-Key");
    assert_eq!(schemes["session"]["in"], "cookie", "{schemes}");
    assert_eq!(schemes["session"]["name"], "__Host-nestflux_session");

    // List: paging, sorting by never-null scalars, one filter per short scalar field (text
    // longer than 256 characters, such as `body`, is neither sorted nor filtered).
    let list = op("/api/notes", "get");
    let params = &list["parameters"];
    assert_eq!(
        names(params),
        ["limit", "cursor", "sort", "priority", "title"]
    );
    let limit = &params[0]["schema"];
    assert_eq!(
        (
            &limit["type"],
            &limit["minimum"],
            &limit["maximum"],
            &limit["default"]
        ),
        (&json!("integer"), &json!(1), &json!(200), &json!(50))
    );
    assert_eq!(
        params[2]["schema"]["enum"],
        json!([
            "id",
            "-id",
            "created_at",
            "-created_at",
            "updated_at",
            "-updated_at",
            "priority",
            "-priority",
            "title",
            "-title"
        ])
    );
    let priority = &params[3]["schema"];
    assert_eq!(
        (
            &priority["type"],
            &priority["minimum"],
            &priority["maximum"]
        ),
        (&json!("integer"), &json!(1), &json!(5))
    );
    assert!(priority.get("default").is_none());
    let page = &list["responses"]["200"]["content"]["application/json"]["schema"];
    assert_eq!(
        page["properties"]["items"]["items"]["$ref"],
        "#/components/schemas/NoteRecord"
    );
    assert_eq!(
        page["properties"]["next_cursor"]["type"],
        json!(["string", "null"])
    );
    assert_eq!(page["required"], json!(["items", "next_cursor"]));

    // Create: the component as body, 201 with Location, every error that can happen.
    let create = op("/api/notes", "post");
    assert_eq!(
        create["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Note"
    );
    assert_eq!(create["requestBody"]["required"], true);
    let created = &create["responses"]["201"];
    assert_eq!(
        created["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/NoteRecord"
    );
    assert_eq!(created["headers"]["Location"]["required"], true);
    assert!(created["headers"]["RateLimit"].is_object());
    let statuses = |op: &Value| -> Vec<String> {
        op["responses"]
            .as_object()
            .expect("responses")
            .keys()
            .cloned()
            .collect()
    };
    assert_eq!(
        statuses(&create),
        [
            "201", "400", "401", "403", "413", "415", "422", "429", "503"
        ]
    );
    assert_eq!(create["x-nestflux-permission"], "notes:create");
    assert_eq!(create["x-nestflux-rate-limit"], "writes");

    // Update: the Patch form inline — nothing required, optional fields clearable.
    let update = op("/api/notes/{id}", "patch");
    let patch = &update["requestBody"]["content"]["application/json"]["schema"];
    assert!(patch.get("required").is_none(), "{patch}");
    assert_eq!(patch["additionalProperties"], false);
    assert_eq!(
        patch["properties"]["due"]["type"],
        json!(["string", "null"])
    );
    assert_eq!(patch["properties"]["title"]["type"], "string");
    assert!(patch["properties"]["priority"].get("default").is_none());
    assert_eq!(
        patch["properties"]["secret"]["x-nestflux-field-permission"],
        "notes:secret"
    );
    assert_eq!(names(&update["parameters"]), ["id"]);
    assert_eq!(update["parameters"][0]["in"], "path");
    assert_eq!(update["parameters"][0]["required"], true);
    assert_eq!(update["parameters"][0]["schema"]["format"], "uuid");

    let get = op("/api/notes/{id}", "get");
    assert_eq!(
        statuses(&get),
        ["200", "400", "401", "403", "404", "429", "503"]
    );
    assert!(
        get["description"]
            .as_str()
            .is_some_and(|d| d.contains("notes:read:own"))
    );
    let delete = op("/api/notes/{id}", "delete");
    assert!(delete["responses"]["204"].get("content").is_none());
    assert_eq!(
        statuses(&delete),
        ["204", "400", "401", "403", "404", "429", "503"]
    );

    // Who may call: the requirement, and the permission as an extension.
    let identity = json!([{ "bearer": [] }, { "apiKey": [] }, { "session": [] }]);
    assert_eq!(get["security"], identity);
    assert_eq!(get["x-nestflux-permission"], "notes:read");
    let me = op("/api/me", "get");
    assert_eq!(me["security"], identity);
    assert!(me.get("x-nestflux-permission").is_none());
    assert_eq!(statuses(&me), ["200", "400", "401", "429"]);
    assert_eq!(
        me["responses"]["200"]["content"]["application/json"]["schema"]["required"],
        json!(["subject", "kind", "roles", "permissions"])
    );
    let health = op("/health", "get");
    assert_eq!(health["security"], json!([]));
    assert_eq!(statuses(&health), ["200", "400", "429"]);
    assert_eq!(
        health["responses"]["200"]["content"]["application/json"]["schema"]["required"],
        json!(["status"])
    );
    assert_eq!(op("/openapi.json", "get")["security"], json!([]));
    assert_eq!(
        op("/internal/openapi.json", "get")["x-nestflux-permission"],
        "docs:read"
    );

    // The shared error responses: problem+json, with the headers each status carries.
    let responses = &doc["components"]["responses"];
    for name in [
        "BadRequest",
        "Unauthorized",
        "Forbidden",
        "NotFound",
        "PayloadTooLarge",
        "UnsupportedMediaType",
        "ValidationFailed",
        "TooManyRequests",
        "ServiceUnavailable",
    ] {
        assert_eq!(
            responses[name]["content"]["application/problem+json"]["schema"]["$ref"],
            "#/components/schemas/Problem",
            "{name}"
        );
    }
    assert!(responses["Unauthorized"]["headers"]["WWW-Authenticate"].is_object());
    for h in ["Retry-After", "RateLimit", "RateLimit-Policy"] {
        assert_eq!(
            responses["TooManyRequests"]["headers"][h]["$ref"],
            format!("#/components/headers/{h}")
        );
    }
}

#[test]
fn without_rate_limits_or_identity_no_429_and_no_schemes() {
    let p = Project::new(&format!("{MINIMAL}{DOCUMENT}"));
    let doc = parse(&printed(&p, &[]));
    let health = &doc["paths"]["/health"]["get"];
    assert!(health["responses"].get("429").is_none(), "{health}");
    assert!(health["responses"]["200"].get("headers").is_none());
    assert!(doc["components"].get("securitySchemes").is_none());
}

#[test]
fn a_redis_limit_that_denies_when_redis_is_down_documents_a_503() {
    // Printing the document never connects to Redis (nothing listens on port 1).
    let with = |mode: &str| {
        let p = Project::new(&format!(
            r#"[rate_limits]
backend = "redis"
redis_url = "redis://127.0.0.1:1/0"
on_backend_error = "{mode}"

[rate_limits.global]
per_minute = 60
{MINIMAL}{DOCUMENT}"#
        ));
        parse(&printed(&p, &[]))["paths"]["/health"]["get"]["responses"].clone()
    };
    let deny = with("deny");
    assert!(deny.get("429").is_some(), "{deny}");
    assert!(deny.get("503").is_some(), "{deny}");
    for mode in ["local", "allow"] {
        let other = with(mode);
        assert!(other.get("429").is_some(), "{mode}: {other}");
        assert!(other.get("503").is_none(), "{mode}: {other}");
    }
}

#[test]
fn served_document_is_the_printed_one_with_the_secure_headers() {
    let (key, hash) = common::new_api_key("docs");
    let p = Project::new(&notes_config(&hash));
    let expected = printed(&p, &[]);
    let server = p.serve(&[]);
    let http = client();

    for _ in 0..2 {
        let res = http
            .get(server.url("/openapi.json"))
            .send()
            .expect("GET /openapi.json");
        assert_eq!(res.status(), StatusCode::OK);
        let h = |name: &str| {
            res.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        assert_eq!(h("content-type").as_deref(), Some("application/json"));
        assert_eq!(h("x-content-type-options").as_deref(), Some("nosniff"));
        assert_eq!(h("x-frame-options").as_deref(), Some("SAMEORIGIN"));
        assert_eq!(h("referrer-policy").as_deref(), Some("no-referrer"));
        assert_eq!(
            h("cross-origin-resource-policy").as_deref(),
            Some("same-origin")
        );
        assert!(
            h("content-security-policy").is_some_and(|c| c.contains("default-src 'self'")),
            "CSP"
        );
        assert!(h("x-request-id").is_some());
        assert!(h("ratelimit-policy").is_some_and(|v| v.contains("\"global\"")));
        assert_eq!(h("server"), None);
        assert_eq!(
            res.text().expect("body"),
            expected,
            "served = printed, byte for byte"
        );
    }

    // Who may read it is the route's access: the internal copy needs `docs:read`.
    let res = http
        .get(server.url("/internal/openapi.json"))
        .send()
        .expect("GET");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(res.headers().contains_key("www-authenticate"));
    let res = http
        .get(server.url("/internal/openapi.json"))
        .header("x-api-key", &key)
        .send()
        .expect("GET");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.text().expect("body"), expected);
}

#[test]
fn an_undeclared_document_is_not_served() {
    let p = Project::new(MINIMAL);
    let server = p.serve(&[]);
    let res = client()
        .get(server.url("/openapi.json"))
        .send()
        .expect("GET");
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        res.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
}

#[test]
fn the_reference_file_prints_a_document_without_its_secrets() {
    let secret = "client-secret-do-not-print-7c1e";
    let key_b64 = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVoxMjM0NTY=";
    let keys = format!("k1:{key_b64}");
    let env = [
        ("NESTFLUX_AUTH__SESSION__CLIENT_SECRET", secret),
        ("NESTFLUX_ENCRYPTION__KEYS", keys.as_str()),
    ];
    let reference = repo("examples/reference/nestflux.toml");
    let cwd = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&str]| {
        let mut cmd = Command::new(common::bin());
        cmd.args(args).arg("--config").arg(&reference);
        for (k, _) in std::env::vars() {
            if k.starts_with("NESTFLUX_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(env).current_dir(cwd.path());
        cmd.output().expect("run nestflux")
    };

    // `serve` refuses the reference (it declares what this build does not enforce yet);
    // `openapi` only compiles, so it works.
    let out = run(&["openapi"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert!(!text.contains(secret), "client secret leaked");
    assert!(!text.contains(key_b64), "encryption key leaked");
    assert!(!text.contains("sqlite://"), "database URL leaked");
    let doc = parse(&text);
    assert_eq!(
        doc["components"]["securitySchemes"]["session"],
        json!({
            "type": "apiKey",
            "in": "cookie",
            "name": "__Host-nestflux_session",
            "description": "The browser session made by the OIDC login (`GET /auth/login`). Unsafe methods authenticated by it also need a same-origin `Origin` (or `Sec-Fetch-Site`), or one listed in `[cors]`.",
        })
    );
    assert_eq!(
        doc["paths"]["/api/notes/{id}"]["get"]["security"],
        json!([{ "bearer": [] }, { "session": [] }])
    );
    assert!(
        doc["components"]["schemas"]["NoteRecord"]["properties"]["secret"]["description"]
            .as_str()
            .is_some_and(|d| d.contains("Encrypted at rest")),
    );
    // Encrypted fields can be neither filtered nor sorted on.
    let list = &doc["paths"]["/api/notes"]["get"]["parameters"];
    assert!(!names(list).contains(&"secret"));
    assert_eq!(doc["paths"]["/api/audit"]["get"]["operationId"], "audit");
}

/// `python3 .ci/openapi_check.py`: openapi-spec-validator's 3.1 validator over the
/// reference file, the root file and this suite's notes config. CI installs the validator;
/// a machine without it fails here rather than skipping the check.
#[test]
fn documents_pass_openapi_spec_validator() {
    let import = || {
        Command::new("python3")
            .args(["-c", "import openapi_spec_validator"])
            .output()
    };
    // A fresh machine gets the validator from PyPI on first use, as CI does.
    if !import().is_ok_and(|o| o.status.success()) {
        let _ = Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "openapi-spec-validator",
            ])
            .status();
    }
    let probe = import();
    match probe {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "the Python module openapi_spec_validator is missing: `pip install openapi-spec-validator` (CI installs it in .ci/services.sh)\n{}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!("python3 is needed to run openapi-spec-validator: {e}"),
    }
    let (_, hash) = common::new_api_key("docs");
    let p = Project::new(&notes_config(&hash));
    let out = Command::new("python3")
        .arg(repo(".ci/openapi_check.py"))
        .arg("examples/reference/nestflux.toml")
        .arg("nestflux.toml")
        .arg(p.config())
        .env("NESTFLUX_BIN", common::bin())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run .ci/openapi_check.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "openapi-spec-validator refused a document:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.matches("valid OpenAPI 3.1").count(), 3, "{stdout}");
}
