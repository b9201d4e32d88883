//! Health with protected detail (issue 17): the public route tells only `status`; the checks
//! (database, each issuer's keys, the config hash) are on a route declared with
//! `detail = true`, protected like any route.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{Project, client};
use crate::config_check::check;

const OPS: &str = r#"
[auth.dev]
enabled = true
[roles.ops]
permissions = ["health:read"]
[roles.viewer]
permissions = ["things:read"]
[[routes]]
method = "GET"
path = "/health"
action = "health"
public = true
[[routes]]
method = "GET"
path = "/health/detail"
action = "health"
detail = true
permission = "health:read"
[[routes]]
method = "GET"
path = "/me"
action = "whoami"
permission = "things:read"
"#;

fn token(p: &Project, sub: &str, role: &str) -> String {
    let out = p.run(&["token", "--sub", sub, "--role", role], &[]);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn public_health_tells_only_the_status_and_detail_needs_its_permission() {
    let (key, hash) = crate::common::new_api_key("monitor");
    let config = format!(
        "{OPS}{}",
        crate::common::api_key_table("monitor", &hash, "ops")
    );
    let p = Project::new(&config);
    let (ops, viewer) = (token(&p, "o", "ops"), token(&p, "v", "viewer"));
    let s = p.serve(&[]);
    let c = client();

    // Public: exactly the status, even for a caller who could read the detail.
    for auth in [None, Some(&ops)] {
        let mut req = c.get(s.url("/health"));
        if let Some(t) = auth {
            req = req.bearer_auth(t);
        }
        let res = req.send().unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.json::<Value>().unwrap(), json!({ "status": "ok" }));
    }

    // Detail without credentials, with a bad token, without the permission.
    let res = c.get(s.url("/health/detail")).send().unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let body = res.text().unwrap();
    assert!(
        !body.contains("config_hash") && !body.contains("checks"),
        "{body}"
    );
    let res = c
        .get(s.url("/health/detail"))
        .bearer_auth("not-a-token")
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = c
        .get(s.url("/health/detail"))
        .bearer_auth(&viewer)
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(!res.text().unwrap().contains("config_hash"));

    // With the permission (a token or an API key): the checks.
    // `check` with the bind address the harness gives `serve`: the hash is of the
    // effective configuration, variables included.
    let hash_line = String::from_utf8(
        p.run(&["check"], &[("NESTFLUX_SERVER__BIND", "127.0.0.1:0")])
            .stdout,
    )
    .unwrap();
    let config_hash = hash_line
        .lines()
        .find_map(|l| l.strip_prefix("config hash: "))
        .unwrap_or_else(|| panic!("no config hash in {hash_line}"))
        .to_string();
    for res in [
        c.get(s.url("/health/detail"))
            .bearer_auth(&ops)
            .send()
            .unwrap(),
        c.get(s.url("/health/detail"))
            .header("x-api-key", &key)
            .send()
            .unwrap(),
    ] {
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers().get("cache-control").unwrap(), "no-store");
        let body: Value = res.json().unwrap();
        assert_eq!(body["status"], "ok", "{body}");
        assert_eq!(body["checks"]["database"], "ok", "{body}");
        assert_eq!(body["config_hash"], config_hash.as_str(), "{body}");
        let issuers = body["issuers"].as_array().unwrap();
        assert_eq!(issuers.len(), 1, "{body}");
        assert_eq!(issuers[0]["issuer"], "urn:nestflux:dev-issuer", "{body}");
        assert_eq!(issuers[0]["state"], "fixed", "{body}");
        assert_eq!(issuers[0]["keys"], 1, "{body}");
    }
}

#[test]
fn the_config_hash_leaves_secrets_out_and_follows_everything_else() {
    let hash = |config: &str, env: &[(&str, &str)]| {
        let p = Project::new(config);
        let out = p.run(&["check"], env);
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(out.status.success(), "{text}");
        text.lines()
            .find_map(|l| l.strip_prefix("config hash: "))
            .unwrap_or_else(|| panic!("no config hash in {text}"))
            .to_string()
    };
    let base = hash(OPS, &[]);
    // A different encryption key (a secret) leaves the hash alone; a limit does not.
    let key = |b: u8| {
        use base64::Engine;
        let bytes: Vec<u8> = (0..32u8)
            .map(|i| i.wrapping_mul(7).wrapping_add(b))
            .collect();
        format!(
            "k1:{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        )
    };
    let (a, b) = (key(1), key(2));
    let with_a = hash(OPS, &[("NESTFLUX_ENCRYPTION__KEYS", &a)]);
    let with_b = hash(OPS, &[("NESTFLUX_ENCRYPTION__KEYS", &b)]);
    assert_eq!(with_a, with_b, "the key's value must not change the hash");
    assert_ne!(
        base,
        hash(OPS, &[("NESTFLUX_SERVER__BODY_LIMIT", "2MiB")]),
        "an effective setting from the environment changes the hash"
    );
}

#[test]
fn a_public_detail_route_is_a_warning_in_development_and_an_error_in_production() {
    let public_detail = OPS.replace(
        "detail = true\npermission = \"health:read\"",
        "detail = true\npublic = true",
    );
    assert_ne!(public_detail, OPS);
    let (code, text) = check(&public_detail, &[]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(
            "warning[refused-in-production]: routes[1].detail: a public health route with detail = true"
        ),
        "{text}"
    );
    // Production, with only an API key (the development issuer is refused there anyway).
    let (_, hash) = crate::common::new_api_key("monitor");
    let prod = format!(
        "[roles.ops]\npermissions = [\"health:read\"]\n{}[[routes]]\nmethod = \"GET\"\npath = \"/health/detail\"\naction = \"health\"\ndetail = true\npublic = true\n",
        crate::common::api_key_table("monitor", &hash, "ops")
    );
    let (code, text) = check(&prod, &[("NESTFLUX_PROFILE", "production")]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(
            "error[refused-in-production]: routes[0].detail: a public health route with detail = true"
        ),
        "{text}"
    );
    let protected = prod.replace("public = true", "permission = \"health:read\"");
    let (code, text) = check(&protected, &[("NESTFLUX_PROFILE", "production")]);
    assert!(!text.contains(".detail"), "{text}");
    assert_eq!(code, 0, "{text}");
    // `detail` belongs to health only.
    let (code, text) = check(
        &OPS.replace(
            "action = \"whoami\"\n",
            "action = \"whoami\"\ndetail = true\n",
        ),
        &[],
    );
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("routes[2].detail: only a health route has detail; action whoami has none"),
        "{text}"
    );
}

#[test]
fn openapi_documents_both_health_routes() {
    let p = Project::new(&format!(
        "{OPS}[[routes]]\nmethod = \"GET\"\npath = \"/openapi.json\"\naction = \"openapi\"\npublic = true\n"
    ));
    let s = p.serve(&[]);
    let doc: Value = client()
        .get(s.url("/openapi.json"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let public = &doc["paths"]["/health"]["get"];
    assert_eq!(public["security"], json!([]), "{public}");
    let schema = &public["responses"]["200"]["content"]["application/json"]["schema"];
    assert_eq!(schema["additionalProperties"], false, "{schema}");
    assert_eq!(
        schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["status"],
        "{schema}"
    );
    let detail = &doc["paths"]["/health/detail"]["get"];
    assert_eq!(detail["x-nestflux-permission"], "health:read", "{detail}");
    assert_ne!(detail["security"], json!([]), "{detail}");
    assert!(
        detail["responses"]["401"].is_object() && detail["responses"]["403"].is_object(),
        "{detail}"
    );
    let schema = &detail["responses"]["200"]["content"]["application/json"]["schema"];
    assert_eq!(
        schema["required"],
        json!(["status", "checks", "issuers", "config_hash"]),
        "{schema}"
    );
}
