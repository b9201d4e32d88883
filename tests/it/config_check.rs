//! `nestflux check`: the reference file compiles; bad files fail listing every error with
//! its path; nothing panics.

use crate::common::{self, Project};

/// `nestflux check` on `config`: (exit code, stdout and stderr); never a panic.
pub(crate) fn check(config: &str, env: &[(&str, &str)]) -> (i32, String) {
    let p = Project::new(config);
    let out = p.run(&["check"], env);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("panicked"), "panic:\n{text}");
    (out.status.code().unwrap_or(-1), text)
}

const ROUTE: &str = common::MINIMAL;

#[test]
fn reference_file_compiles() {
    let out = common::command()
        .args([
            "check",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/examples/reference/nestflux.toml"
            ),
        ])
        .env_remove("NESTFLUX_PROFILE")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ok (profile development): 12 routes, 3 roles, 2 rate-limit policies, 1 schemas, 1 resources"), "{stdout}");
}

#[test]
fn root_file_compiles_and_serves_nothing_unenforced() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/nestflux.toml");
    let out = common::command().args(["check", root]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(!stdout.contains("not yet enforced"), "{stdout}");
}

/// (config, environment, expected path-prefixed messages). Each case must fail with exit 1
/// and name every listed path.
#[test]
fn bad_configs_name_each_error_path() {
    type Case<'a> = (String, Vec<(&'a str, &'a str)>, Vec<&'a str>);
    let cases: Vec<Case> = vec![
        (format!("[server]\nbind = \"localhost\"{ROUTE}"), vec![], vec!["server.bind: `localhost` is not a socket address"]),
        (format!("[server]\nbody_limit = \"lots\"{ROUTE}"), vec![], vec!["server.body_limit: `lots` is not a size"]),
        (format!("[server]\nrequest_timeout = \"0s\"{ROUTE}"), vec![], vec!["server.request_timeout: must be greater than zero"]),
        (format!("[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"0.0.0.0/0\", \"nope\"]{ROUTE}"), vec![], vec![
            "server.trusted_proxies[1]: `0.0.0.0/0` would trust every address",
            "server.trusted_proxies[2]: `nope` is not an IP address",
        ]),
        (format!("[server.tls]\ncert = \"missing.pem\"\nkey = \"missing.key\"{ROUTE}"), vec![], vec!["server.tls.cert: missing.pem", "server.tls.key: missing.key"]),
        (format!("[database]\nurl = \"mysql://u:hunter2@h/db\"{ROUTE}"), vec![], vec!["database.url: expected sqlite://PATH or postgres://"]),
        (format!("[database]\npool_size = 0{ROUTE}"), vec![], vec!["database.pool_size: must be between 1 and 1000"]),
        (format!("[headers]\nx_frame_options = \"DENY\\nX-Evil: 1\"{ROUTE}"), vec![], vec!["headers.x_frame_options: not a valid header value"]),
        (format!("[cors]\norigins = [\"*\"]\ncredentials = true{ROUTE}"), vec![], vec!["cors.origins: \"*\" together with credentials = true"]),
        (format!("[cors]\norigins = [\"https://ok.example\", \"https://x.example/path\", \"ftp://x\"]\nmethods = [\"GET\", \"G E T\"]\nheaders = [\"bad header\"]{ROUTE}"), vec![], vec![
            "cors.origins[1]: `https://x.example/path` is not an origin",
            "cors.origins[2]: `ftp://x` is not an origin",
            "cors.methods[1]: `G E T` is not an HTTP method",
            "cors.headers[0]: `bad header` is not a header name",
        ]),
        (format!("[auth]\nissuer = \"http://idp.example.com\"\naudience = \"x\"{ROUTE}"), vec![], vec!["auth.issuer: must be https://"]),
        (format!("[auth]\nissuer = \"https://idp.example.com\"{ROUTE}"), vec![], vec!["auth.audience: required with an issuer"]),
        (format!("[auth]\nissuer = \"https://idp.example.com\"\naudience = \"a\"\nalgorithms = [\"none\", \"HS256\", \"RS999\", \"RS256\"]{ROUTE}"), vec![], vec![
            "auth.algorithms[0]: `none` means unsigned tokens",
            "auth.algorithms[1]: `HS256` (shared-secret HMAC) is refused",
            "auth.algorithms[2]: unknown algorithm `RS999`",
        ]),
        (format!("[auth]\nleeway = \"1h\"\n[auth.dev]\nenabled = true{ROUTE}"), vec![], vec!["auth.leeway: at most 5m"]),
        (format!("[auth.dev]\nenabled = true{ROUTE}"), vec![("NESTFLUX_PROFILE", "production")], vec!["auth.dev.enabled: the development issuer is refused in production"]),
        (format!("[auth]\nissuer = \"http://127.0.0.1:9000\"\naudience = \"a\"\n[auth.session]\nclient_id = \"c\"\nredirect_url = \"http://app.example/cb\"{ROUTE}"), vec![("NESTFLUX_PROFILE", "production")], vec![
            "auth.issuer: a plain-HTTP issuer is refused in production",
            "auth.session.redirect_url: plain-HTTP session cookies are refused in production",
        ]),
        (format!("[roles.a]\ninherits = [\"b\"]\npermissions = [\"x:read\"]\n[roles.b]\ninherits = [\"a\"]\n[roles.c]\ninherits = [\"ghost\"]\npermissions = [\"x:read:mine\", \"X:read\"]{ROUTE}"), vec![], vec![
            "roles.a.inherits: inheritance cycle: a → b → a",
            "roles.c.inherits[0]: no role named \"ghost\"",
            "roles.c.permissions[0]: `x:read:mine` is not a permission",
            "roles.c.permissions[1]: `X:read` is not a permission",
        ]),
        (format!("[rate_limits.global]\nkey = \"user\"\nper_second = 5\n[rate_limits.write]\nper_minute = 1\nper_hour = 2\n[rate_limits.none]\nkey = \"ip\"\n[rate_limits.zero]\nper_second = 0{ROUTE}"), vec![], vec![
            "rate_limits.global.key: the global policy runs before authentication",
            "rate_limits.write: declare only one of per_second, per_minute or per_hour",
            "rate_limits.none: declare one of per_second, per_minute or per_hour",
            "rate_limits.zero.per_second: must be at least 1",
        ]),
        (format!("[rate_limits]\nbackend = \"redis\"{ROUTE}"), vec![], vec!["rate_limits.redis_url: required with backend = \"redis\""]),
        (format!("[schemas.Note]\ntitle = {{ type = \"string\" }}\n[resources.notes]\nschema = \"Nope\"\n[resources.nestflux_users]\nschema = \"Note\"\n[resources.items]\nschema = \"Note\"\nencrypted = [\"ghost\"]\nblind_index = [\"title\"]\nfield_permissions = {{ title = \"items:secret:own\" }}{ROUTE}"), vec![], vec![
            "resources.notes.schema: no schema named \"Nope\"",
            "resources.nestflux_users: names starting with `nestflux_` are reserved",
            "resources.items.encrypted[0]: no field \"ghost\" in schema \"Note\"",
            "resources.items.blind_index[0]: \"title\" is not listed in encrypted",
            "resources.items.field_permissions.title: name the permission without :own",
        ]),
        (format!("[schemas.Note]\nsecret = {{ type = \"string\" }}\n[resources.notes]\nschema = \"Note\"\nencrypted = [\"secret\"]{ROUTE}"), vec![("NESTFLUX_PROFILE", "production")], vec!["resources.notes.encrypted: encrypted fields are declared but NESTFLUX_ENCRYPTION__KEYS is not set"]),
        ("[encryption]\n".to_string() + ROUTE, vec![("NESTFLUX_ENCRYPTION__KEYS", "k1:AAAA,nocolon,k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")], vec![
            "encryption.keys[0]: key \"k1\" is not 32 bytes",
            "encryption.keys[1]: expected kid:base64",
            "encryption.keys[2]: key id \"k1\" appears twice",
        ]),
        ("[[routes]]\nmethod = \"GET\"\npath = \"/open\"\naction = \"health\"\n".to_string(), vec![], vec!["routes[0]: declares none of public = true, authenticated = true or permission"]),
        ("[[routes]]\nmethod = \"GET\"\npath = \"/h\"\naction = \"health\"\npublic = true\nauthenticated = true\n".to_string(), vec![], vec!["routes[0]: declare exactly one of public, authenticated or permission"]),
        (format!("[rate_limits.writes]\nper_second = 1\n{ROUTE}[[routes]]\nmethod = \"get\"\npath = \"api/x\"\naction = \"fly\"\npublic = true\nrate_limit = \"write\"\n"), vec![], vec![
            "routes[1].method: `get` is not an uppercase HTTP method",
            "routes[1].path: `api/x` must start with /",
            "routes[1].action: unknown action `fly`",
            "routes[1].rate_limit: no policy named \"write\"",
        ]),
        (format!("{ROUTE}{ROUTE}"), vec![], vec!["routes[1]: GET /health is already declared by routes[0]"]),
        ("[[routes]]\nmethod = \"GET\"\npath = \"/api/notes/{id}\"\naction = \"get\"\nresource = \"notes\"\npermission = \"notes:read:own\"\n[[routes]]\nmethod = \"POST\"\npath = \"/api/me\"\naction = \"whoami\"\npermission = \"x:y\"\n".to_string(), vec![], vec![
            "routes[0].resource: no resource named \"notes\"",
            "routes[0].permission: name the permission without :own",
            "routes[1].method: action whoami is served with GET",
            "routes[1]: needs a caller identity, but [auth] declares no issuer, dev issuer or API key",
        ]),
        ("[[routes]]\nmethod = \"GET\"\npath = \"/a/{Id}\"\naction = \"health\"\npublic = true\n[[routes]]\nmethod = \"GET\"\npath = \"/b/\"\naction = \"health\"\npublic = true\n".to_string(), vec![], vec![
            "routes[0].path: `{Id}` is not a parameter name",
            "routes[1].path: `/b/`: segments are",
        ]),
        (format!("[server]\nbind = \"127.0.0.1:8080\"\npermision = \"x\"{ROUTE}"), vec![], vec!["server.permision: unknown key"]),
        (format!("[[routes]]\nmethod = \"GET\"\npath = \"/x\"\naction = \"health\"\npermision = \"notes:read\"{ROUTE}"), vec![], vec!["permision: unknown key"]),
        (format!("[server]\nworkers = \"many\"{ROUTE}"), vec![], vec!["server.workers: invalid type"]),
        (format!("[server\n{ROUTE}"), vec![], vec!["nestflux.toml"]),
        (
            "[server]\nbnd = \"x\"\n[cors]\norigin = []\n[schemas.A]\nx = { type = \"array\", items = { type = \"string\", maxlen = 3 } }\n[[routes]]\nmethod = \"GET\"\npath = \"/x\"\naction = \"health\"\npublic = true\n[[routes]]\nmethod = \"GET\"\npath = \"/y\"\naction = \"health\"\npermision = \"a:b\"\n".to_string(),
            vec![],
            vec![
                "server.bnd: unknown key",
                "cors.origin: unknown key",
                "schemas.A.x.items.maxlen: unknown key",
                "routes[1].permision: unknown key",
            ],
        ),
        (ROUTE.to_string(), vec![("NESTFLUX_PROFILE", "staging")], vec!["NESTFLUX_PROFILE: `staging` is neither"]),
    ];
    assert!(cases.len() >= 20);
    for (i, (config, env, expected)) in cases.iter().enumerate() {
        let (code, text) = check(config, env);
        assert_eq!(
            code, 1,
            "case {i} should fail:\n{config}\n--- output:\n{text}"
        );
        for e in expected {
            assert!(text.contains(e), "case {i}: missing `{e}` in:\n{text}");
        }
    }
}

#[test]
fn warnings_do_not_fail_the_check() {
    let (code, text) = check(
        &format!(
            "[roles.empty]\n[auth.dev]\nenabled = true\n[[routes]]\nmethod = \"GET\"\npath = \"/x\"\naction = \"audit\"\npermission = \"audit:read\"\n{ROUTE}"
        ),
        &[],
    );
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("warning: roles.empty: grants no permission"),
        "{text}"
    );
    assert!(
        text.contains("warning: routes[0].permission: no role grants \"audit:read\""),
        "{text}"
    );
    assert!(text.contains("not yet enforced"), "{text}");
}

#[test]
fn config_schema_is_json_schema_refusing_unknown_keys() {
    let out = common::command()
        .args(["config", "schema"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        schema["$schema"]
            .as_str()
            .unwrap()
            .contains("json-schema.org")
    );
    assert_eq!(schema["additionalProperties"], false);
    assert!(schema["properties"]["routes"].is_object());
    assert!(schema["properties"]["server"].is_object());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("client_secret"),
        "secrets must not be advertised as file keys"
    );
}
