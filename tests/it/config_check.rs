//! `nestflux check`: the reference file compiles; bad files fail listing every error with
//! its path; nothing panics.

use serde_json::Value;

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

/// `nestflux check --format json` on `config`: (exit code, one JSON object per line).
pub(crate) fn check_json(config: &str, env: &[(&str, &str)]) -> (i32, Vec<Value>) {
    let p = Project::new(config);
    let out = p.run(&["check", "--format", "json"], env);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    (out.status.code().unwrap_or(-1), lines)
}

/// Where a diagnostic must point.
#[derive(Clone, Copy, Debug)]
enum At {
    /// The line where this text first appears in the config.
    Line(&'static str),
    /// The line and column where this text first appears.
    Col(&'static str),
    /// A line number.
    N(u64),
    /// A variable, instead of a line.
    Var(&'static str),
    /// Nowhere in the file (a process setting).
    Nowhere,
}

/// One expected diagnostic: a substring of `path: message`, where it points, and the name
/// it suggests.
#[derive(Clone, Debug)]
struct Expect {
    text: &'static str,
    at: At,
    meant: Option<&'static str>,
}

fn e(text: &'static str, at: At) -> Expect {
    Expect {
        text,
        at,
        meant: None,
    }
}

impl Expect {
    fn meant(mut self, name: &'static str) -> Self {
        self.meant = Some(name);
        self
    }
}

/// 1-based line and column of the first `needle` in `text`.
fn line_col(text: &str, needle: &str) -> (u64, u64) {
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("`{needle}` is not in:\n{text}"));
    let before = &text[..at];
    let line = before.matches('\n').count() as u64 + 1;
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[start..].chars().count() as u64 + 1)
}

/// Asserts that `diags` holds a diagnostic matching `want` in `config`.
fn assert_diag(case: usize, config: &str, diags: &[Value], want: &Expect) {
    let found = diags.iter().find(|d| {
        let path = d["path"].as_str().unwrap_or("");
        let text = if path.is_empty() {
            d["message"].as_str().unwrap_or("").to_string()
        } else {
            format!("{path}: {}", d["message"].as_str().unwrap_or(""))
        };
        text.contains(want.text)
    });
    let Some(d) = found else {
        panic!(
            "case {case}: no diagnostic containing `{}` in:\n{}",
            want.text,
            diags
                .iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        );
    };
    let at = (
        d["line"].as_u64(),
        d["column"].as_u64(),
        d["variable"].as_str(),
    );
    match want.at {
        At::Line(needle) => {
            assert_eq!(at.0, Some(line_col(config, needle).0), "case {case}: {d}");
        }
        At::Col(needle) => {
            let (l, c) = line_col(config, needle);
            assert_eq!((at.0, at.1), (Some(l), Some(c)), "case {case}: {d}");
        }
        At::N(n) => assert_eq!(at.0, Some(n), "case {case}: {d}"),
        At::Var(var) => {
            assert_eq!((at.0, at.2), (None, Some(var)), "case {case}: {d}");
        }
        At::Nowhere => assert_eq!((at.0, at.2), (None, None), "case {case}: {d}"),
    }
    if let Some(meant) = want.meant {
        assert_eq!(d["suggestion"], meant, "case {case}: {d}");
    }
}

/// (config, environment, expected diagnostics). Each case must fail with exit 1 and name
/// every listed path, at its line (and column where given) or variable.
#[test]
fn bad_configs_name_each_error_path_and_line() {
    use At::*;
    type Case<'a> = (String, Vec<(&'a str, &'a str)>, Vec<Expect>);
    let cases: Vec<Case> = vec![
        (format!("[server]\nbind = \"localhost\"{ROUTE}"), vec![], vec![e("server.bind: `localhost` is not a socket address", Col("\"localhost\""))]),
        (format!("[server]\nbody_limit = \"lots\"{ROUTE}"), vec![], vec![e("server.body_limit: `lots` is not a size", Line("body_limit"))]),
        (format!("[server]\nrequest_timeout = \"0s\"{ROUTE}"), vec![], vec![e("server.request_timeout: must be greater than zero", Line("request_timeout"))]),
        (format!("[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"0.0.0.0/0\", \"nope\"]{ROUTE}"), vec![], vec![
            e("server.trusted_proxies[1]: `0.0.0.0/0` would trust every address", Col("\"0.0.0.0/0\"")),
            e("server.trusted_proxies[2]: `nope` is not an IP address", Col("\"nope\"")),
        ]),
        (format!("[server.tls]\ncert = \"missing.pem\"\nkey = \"missing.key\"{ROUTE}"), vec![], vec![
            e("server.tls.cert: missing.pem", Col("\"missing.pem\"")),
            e("server.tls.key: missing.key", Col("\"missing.key\"")),
        ]),
        (format!("[database]\nurl = \"mysql://u:hunter2@h/db\"{ROUTE}"), vec![], vec![e("database.url: expected sqlite://PATH or postgres://", Line("url"))]),
        (format!("[database]\npool_size = 0{ROUTE}"), vec![], vec![e("database.pool_size: must be between 1 and 1000", Line("pool_size"))]),
        (format!("[headers]\nx_frame_options = \"DENY\\nX-Evil: 1\"{ROUTE}"), vec![], vec![e("headers.x_frame_options: not a valid header value", Line("x_frame_options"))]),
        (format!("[cors]\norigins = [\"*\"]\ncredentials = true{ROUTE}"), vec![], vec![e("cors.origins: \"*\" together with credentials = true", Col("[\"*\"]"))]),
        (format!("[cors]\norigins = [\"https://ok.example\", \"https://x.example/path\", \"ftp://x\"]\nmethods = [\"GET\", \"G E T\"]\nheaders = [\"bad header\"]{ROUTE}"), vec![], vec![
            e("cors.origins[1]: `https://x.example/path` is not an origin", Col("\"https://x.example/path\"")),
            e("cors.origins[2]: `ftp://x` is not an origin", Col("\"ftp://x\"")),
            e("cors.methods[1]: `G E T` is not an HTTP method", Col("\"G E T\"")),
            e("cors.headers[0]: `bad header` is not a header name", Col("\"bad header\"")),
        ]),
        (format!("[auth]\nissuer = \"http://idp.example.com\"\naudience = \"x\"{ROUTE}"), vec![], vec![e("auth.issuer: must be https://", Line("issuer"))]),
        (format!("[auth]\nissuer = \"https://idp.example.com\"{ROUTE}"), vec![], vec![e("auth.audience: required with an issuer", Line("[auth]"))]),
        (format!("[auth]\nissuer = \"https://idp.example.com\"\naudience = \"a\"\nalgorithms = [\"none\", \"HS256\", \"RS999\", \"RS256\"]{ROUTE}"), vec![], vec![
            e("auth.algorithms[0]: `none` means unsigned tokens", Col("\"none\"")),
            e("auth.algorithms[1]: `HS256` (shared-secret HMAC) is refused", Col("\"HS256\"")),
            e("auth.algorithms[2]: unknown algorithm `RS999`", Col("\"RS999\"")),
        ]),
        (format!("[auth]\nleeway = \"1h\"\n[auth.dev]\nenabled = true{ROUTE}"), vec![], vec![e("auth.leeway: at most 5m", Col("\"1h\""))]),
        (format!("[auth.dev]\nenabled = true{ROUTE}"), vec![("NESTFLUX_PROFILE", "production")], vec![e("auth.dev.enabled: the development issuer is refused in production", Col("true"))]),
        (format!("[auth]\nissuer = \"http://127.0.0.1:9000\"\naudience = \"a\"\n[auth.session]\nclient_id = \"c\"\nredirect_url = \"http://app.example/cb\"{ROUTE}"), vec![("NESTFLUX_PROFILE", "production")], vec![
            e("auth.issuer: a plain-HTTP issuer is refused in production", Line("issuer")),
            e("auth.session.redirect_url: plain-HTTP session cookies are refused in production", Line("redirect_url")),
        ]),
        (format!("[roles.a]\ninherits = [\"b\"]\npermissions = [\"x:read\"]\n[roles.b]\ninherits = [\"a\"]\n[roles.c]\ninherits = [\"ghost\"]\npermissions = [\"x:read:mine\", \"X:read\"]\n[roles.viewer]\n[roles.editor]\ninherits = [\"viewr\"]{ROUTE}"), vec![], vec![
            e("roles.a.inherits: inheritance cycle: a → b → a", Line("inherits = [\"b\"]")),
            e("roles.c.inherits[0]: no role named \"ghost\"", Col("\"ghost\"")),
            e("roles.c.permissions[0]: `x:read:mine` is not a permission", Col("\"x:read:mine\"")),
            e("roles.c.permissions[1]: `X:read` is not a permission", Col("\"X:read\"")),
            e("roles.editor.inherits[0]: no role named \"viewr\"", Col("\"viewr\"")).meant("viewer"),
        ]),
        (format!("[rate_limits.global]\nkey = \"user\"\nper_second = 5\n[rate_limits.write]\nper_minute = 1\nper_hour = 2\n[rate_limits.none]\nkey = \"ip\"\n[rate_limits.zero]\nper_second = 0\n[rate_limits.typo]\nkey = \"usr\"\nper_second = 1{ROUTE}"), vec![], vec![
            e("rate_limits.global.key: the global policy runs before authentication", Col("\"user\"")),
            e("rate_limits.write: declare only one of per_second, per_minute or per_hour", Col("[rate_limits.write]")),
            e("rate_limits.none: declare one of per_second, per_minute or per_hour", Col("[rate_limits.none]")),
            e("rate_limits.zero.per_second: must be at least 1", Line("per_second = 0")),
            e("rate_limits.typo.key: `usr`", Col("\"usr\"")).meant("user"),
        ]),
        (format!("[rate_limits]\nbackend = \"redis\"{ROUTE}"), vec![], vec![e("rate_limits.redis_url: required with backend = \"redis\"", Col("[rate_limits]"))]),
        (format!("[schemas.Note]\ntitle = {{ type = \"string\" }}\nsecret = {{ type = \"string\" }}\n[resources.notes]\nschema = \"Noet\"\n[resources.nestflux_users]\nschema = \"Note\"\n[resources.items]\nschema = \"Note\"\nencrypted = [\"ghost\", \"secrte\"]\nblind_index = [\"title\"]\nfield_permissions = {{ title = \"items:secret:own\" }}{ROUTE}"), vec![], vec![
            e("resources.notes.schema: no schema named \"Noet\"", Col("\"Noet\"")).meant("Note"),
            e("resources.nestflux_users: names starting with `nestflux_` are reserved", Col("[resources.nestflux_users]")),
            e("resources.items.encrypted[0]: no field \"ghost\" in schema \"Note\"", Col("\"ghost\"")),
            e("resources.items.encrypted[1]: no field \"secrte\" in schema \"Note\"", Col("\"secrte\"")).meant("secret"),
            e("resources.items.blind_index[0]: \"title\" is not listed in encrypted", Col("\"title\"")),
            e("resources.items.field_permissions.title: name the permission without :own", Col("\"items:secret:own\"")),
        ]),
        (format!("[schemas.Note]\nsecret = {{ type = \"string\" }}\n[resources.notes]\nschema = \"Note\"\nencrypted = [\"secret\"]{ROUTE}"), vec![("NESTFLUX_PROFILE", "production")], vec![e("resources.notes.encrypted: encrypted fields are declared but NESTFLUX_ENCRYPTION__KEYS is not set", Col("[\"secret\"]"))]),
        ("[encryption]\n".to_string() + ROUTE, vec![("NESTFLUX_ENCRYPTION__KEYS", "k1:AAAA,nocolon,k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")], vec![
            e("encryption.keys[0]: key \"k1\" is not 32 bytes", Var("NESTFLUX_ENCRYPTION__KEYS")),
            e("encryption.keys[1]: expected kid:base64", Var("NESTFLUX_ENCRYPTION__KEYS")),
            e("encryption.keys[2]: key id \"k1\" appears twice", Var("NESTFLUX_ENCRYPTION__KEYS")),
        ]),
        (ROUTE.to_string(), vec![("NESTFLUX_SERVER__BIND", "localhost"), ("NESTFLUX_SERVR__BIND", "x")], vec![
            e("server.bind: `localhost` is not a socket address", Var("NESTFLUX_SERVER__BIND")),
            e("servr: unknown key (set by NESTFLUX_SERVR__BIND)", Var("NESTFLUX_SERVR__BIND")).meant("NESTFLUX_SERVER__BIND"),
        ]),
        ("[[routes]]\nmethod = \"GET\"\npath = \"/open\"\naction = \"health\"\n".to_string(), vec![], vec![e("routes[0]: declares none of public = true, authenticated = true or permission", Col("[[routes]]"))]),
        ("[[routes]]\nmethod = \"GET\"\npath = \"/h\"\naction = \"health\"\npublic = true\nauthenticated = true\n".to_string(), vec![], vec![e("routes[0]: declare exactly one of public, authenticated or permission", N(1))]),
        (format!("[rate_limits.writes]\nper_second = 1\n{ROUTE}[[routes]]\nmethod = \"get\"\npath = \"api/x\"\naction = \"fly\"\npublic = true\nrate_limit = \"write\"\n[[routes]]\nmethod = \"GET\"\npath = \"/l\"\naction = \"lsit\"\npublic = true\n"), vec![], vec![
            e("routes[1].method: `get` is not an uppercase HTTP method", Col("\"get\"")),
            e("routes[1].path: `api/x` must start with /", Col("\"api/x\"")),
            e("routes[1].action: unknown action `fly`", Col("\"fly\"")),
            e("routes[1].rate_limit: no policy named \"write\"", Col("\"write\"")).meant("writes"),
            e("routes[2].action: unknown action `lsit`", Col("\"lsit\"")).meant("list"),
        ]),
        (format!("{ROUTE}{ROUTE}"), vec![], vec![e("routes[1]: GET /health is already declared by routes[0]", N(8))]),
        ("[[routes]]\nmethod = \"GET\"\npath = \"/api/notes/{id}\"\naction = \"get\"\nresource = \"notes\"\npermission = \"notes:read:own\"\n[[routes]]\nmethod = \"POST\"\npath = \"/api/me\"\naction = \"whoami\"\npermission = \"x:y\"\n".to_string(), vec![], vec![
            e("routes[0].resource: no resource named \"notes\"", Col("\"notes\"")),
            e("routes[0].permission: name the permission without :own", Col("\"notes:read:own\"")),
            e("routes[1].method: action whoami is served with GET", Col("\"POST\"")),
            e("routes[1]: needs a caller identity, but [auth] declares no issuer, dev issuer or API key", N(7)),
        ]),
        ("[[routes]]\nmethod = \"GET\"\npath = \"/a/{Id}\"\naction = \"health\"\npublic = true\n[[routes]]\nmethod = \"GET\"\npath = \"/b/\"\naction = \"health\"\npublic = true\n".to_string(), vec![], vec![
            e("routes[0].path: `{Id}` is not a parameter name", Col("\"/a/{Id}\"")),
            e("routes[1].path: `/b/`: segments are", Col("\"/b/\"")),
        ]),
        (format!("[server]\nbind = \"127.0.0.1:8080\"\npermision = \"x\"{ROUTE}"), vec![], vec![e("server.permision: unknown key", Col("permision"))]),
        (format!("[[routes]]\nmethod = \"GET\"\npath = \"/x\"\naction = \"health\"\npermision = \"notes:read\"{ROUTE}"), vec![], vec![e("routes[0].permision: unknown key", Col("permision")).meant("permission")]),
        (format!("[server]\nworkers = \"many\"{ROUTE}"), vec![], vec![e("server.workers: invalid type", Col("\"many\""))]),
        (format!("[server]\nworkers = 2\n[server\n{ROUTE}"), vec![], vec![e("not valid TOML", N(3))]),
        (
            "[server]\nbnd = \"x\"\n[cors]\norigin = []\n[schemas.A]\nx = { type = \"array\", items = { type = \"string\", maxlen = 3 } }\n[[routes]]\nmethod = \"GET\"\npath = \"/x\"\naction = \"health\"\npublic = true\n[[routes]]\nmethod = \"GET\"\npath = \"/y\"\naction = \"health\"\npermision = \"a:b\"\n".to_string(),
            vec![],
            vec![
                e("server.bnd: unknown key", Col("bnd")).meant("bind"),
                e("cors.origin: unknown key", Col("origin =")).meant("origins"),
                e("schemas.A.x.items.maxlen: unknown key", Col("maxlen")),
                e("routes[1].permision: unknown key", Col("permision")).meant("permission"),
                e("routes[1]: declares none of public", N(12)),
            ],
        ),
        (ROUTE.to_string(), vec![("NESTFLUX_PROFILE", "staging")], vec![e("NESTFLUX_PROFILE: `staging` is neither", Nowhere)]),
    ];
    assert!(cases.len() >= 30);
    for (i, (config, env, expected)) in cases.iter().enumerate() {
        let (code, diags) = check_json(config, env);
        assert_eq!(
            code, 1,
            "case {i} should fail:\n{config}\n--- output:\n{diags:#?}"
        );
        for want in expected {
            assert_diag(i, config, &diags, want);
        }
        // The same file in text: no panic, every expected headline present.
        let (code, text) = check(config, env);
        assert_eq!(code, 1, "case {i}: {text}");
        for want in expected {
            assert!(
                text.contains(want.text),
                "case {i}: missing `{}` in:\n{text}",
                want.text
            );
        }
    }
}

/// The file of issue 11: five mistakes, each of which alone used to hide the others.
const FIVE_MISTAKES: &str = r#"[server]
bind = "127.0.0.1:8080"
body_limt = "1MiB"

[cors]
origins = ["*"]
credentials = true

[auth.dev]
enabled = true

[roles.viewer]
permissions = ["notes:read"]

[roles.editor]
inherits = ["viewr"]
permissions = ["notes:create"]

[rate_limits.writes]
key = "user"
per_minute = 60

[schemas.Note]
title = { type = "string" }

[resources.notes]
schema = "Note"

[[routes]]
method = "GET"
path = "/api/notes"
resource = "notes"
action = "list"
permision = "notes:read"

[[routes]]
method = "POST"
path = "/api/notes"
resource = "notes"
action = "create"
permission = "notes:create"
rate_limit = "write"
"#;

#[test]
fn five_mistakes_are_reported_at_once_with_lines_and_suggestions() {
    let (code, text) = check(FIVE_MISTAKES, &[]);
    assert_eq!(code, 1, "{text}");
    // Each with its path, its FILE:LINE:COL, the line itself and, for a typo, the name meant.
    for (headline, place, line, help) in [
        (
            "error[unknown-key]: server.body_limt: unknown key",
            "nestflux.toml:3:1",
            "3 | body_limt = \"1MiB\"",
            Some("help: did you mean `body_limit`?"),
        ),
        (
            "error[insecure]: cors.origins: \"*\" together with credentials = true",
            "nestflux.toml:6:11",
            "6 | origins = [\"*\"]",
            None,
        ),
        (
            "error[unknown-role]: roles.editor.inherits[0]: no role named \"viewr\"",
            "nestflux.toml:16:13",
            "16 | inherits = [\"viewr\"]",
            Some("help: did you mean `viewer`?"),
        ),
        (
            "error[no-access-rule]: routes[0]: declares none of public = true, authenticated = true or permission",
            "nestflux.toml:29:1",
            "29 | [[routes]]",
            None,
        ),
        (
            "error[unknown-key]: routes[0].permision: unknown key",
            "nestflux.toml:34:1",
            "34 | permision = \"notes:read\"",
            Some("help: did you mean `permission`?"),
        ),
        (
            "error[unknown-policy]: routes[1].rate_limit: no policy named \"write\"",
            "nestflux.toml:42:14",
            "42 | rate_limit = \"write\"",
            Some("help: did you mean `writes`?"),
        ),
    ] {
        let at = text
            .find(headline)
            .unwrap_or_else(|| panic!("missing `{headline}` in:\n{text}"));
        let block: String = text[at..]
            .lines()
            .take_while(|l| !l.starts_with("error") || l.starts_with(headline))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(block.contains("--> "), "{block}");
        assert!(block.contains(place), "`{place}` not in:\n{block}");
        assert!(block.contains(line), "`{line}` not in:\n{block}");
        assert!(block.contains('^'), "no caret in:\n{block}");
        if let Some(help) = help {
            assert!(block.contains(help), "`{help}` not in:\n{block}");
        }
    }
    assert!(text.contains("nestflux.toml: 6 errors found"), "{text}");
}

#[test]
fn json_lines_carry_every_field() {
    let (code, diags) = check_json(FIVE_MISTAKES, &[]);
    assert_eq!(code, 1);
    let errors: Vec<&Value> = diags.iter().filter(|d| d["severity"] == "error").collect();
    assert_eq!(errors.len(), 6, "{diags:#?}");
    for d in &diags {
        for key in [
            "severity",
            "code",
            "path",
            "file",
            "line",
            "column",
            "message",
            "suggestion",
        ] {
            assert!(d.get(key).is_some(), "`{key}` missing from {d}");
        }
        assert!(
            d["file"].as_str().unwrap().ends_with("nestflux.toml"),
            "{d}"
        );
    }
    let policy = errors
        .iter()
        .find(|d| d["path"] == "routes[1].rate_limit")
        .unwrap();
    assert_eq!(policy["code"], "unknown-policy");
    assert_eq!(
        (policy["line"].as_u64(), policy["column"].as_u64()),
        (Some(42), Some(14))
    );
    assert_eq!(policy["suggestion"], "writes");
    assert_eq!(policy["message"], "no policy named \"write\"");
    // Warnings come too, with codes: the development issuer.
    assert!(
        diags
            .iter()
            .any(|d| d["severity"] == "warning" && d["path"] == "auth.dev.enabled"),
        "{diags:#?}"
    );
    // A good file: only warnings, exit 0, still one object per line.
    let (code, diags) = check_json(&format!("[auth.dev]\nenabled = true{ROUTE}"), &[]);
    assert_eq!(code, 0);
    assert_eq!(diags.len(), 1, "{diags:#?}");
    assert_eq!(diags[0]["code"], "refused-in-production");
    assert_eq!(diags[0]["line"], 2);
}

/// Each secret written in the file: a warning naming the variable in development, an error
/// under production; the same value from the environment is no finding at all.
#[test]
fn secrets_in_the_file_warn_in_development_and_fail_in_production() {
    const KEY: &str = "nfk_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG";
    let session = "[auth]\nissuer = \"https://idp.example.com\"\naudience = \"api\"\n[auth.session]\nclient_id = \"app\"\nredirect_url = \"https://app.example.com/cb\"\n";
    // (config, path, what the message must name as the fix, the same value from the
    // environment). The OIDC client secret is an error in every profile: issue 13 takes it
    // only from the environment.
    type Case<'a> = (String, &'a str, &'a str, Vec<(&'a str, &'a str)>);
    let cases: Vec<Case> = vec![
        (
            format!("{session}client_secret = \"s3cr3t-value\"{ROUTE}"),
            "auth.session.client_secret",
            "NESTFLUX_AUTH__SESSION__CLIENT_SECRET",
            vec![("NESTFLUX_AUTH__SESSION__CLIENT_SECRET", "s3cr3t-value")],
        ),
        (
            format!(
                "[roles.ci]\npermissions = [\"x:read\"]\n[auth.api_keys.ci]\nhash = \"{KEY}\"\nroles = [\"ci\"]{ROUTE}"
            ),
            "auth.api_keys.ci.hash",
            "hash = \"sha256:…\"",
            vec![("NESTFLUX_AUTH__API_KEYS__CI__HASH", KEY)],
        ),
        (
            format!(
                "[encryption]\nkeys = \"k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"{ROUTE}"
            ),
            "encryption.keys",
            "NESTFLUX_ENCRYPTION__KEYS",
            vec![(
                "NESTFLUX_ENCRYPTION__KEYS",
                "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            )],
        ),
        (
            format!("[database]\nurl = \"postgres://app:hunter2@db.example/app\"{ROUTE}"),
            "database.url",
            "NESTFLUX_DATABASE__URL",
            vec![(
                "NESTFLUX_DATABASE__URL",
                "postgres://app:hunter2@db.example/app",
            )],
        ),
        (
            format!(
                "[rate_limits]\nbackend = \"redis\"\nredis_url = \"redis://:hunter2@127.0.0.1:6379/0\"{ROUTE}"
            ),
            "rate_limits.redis_url",
            "NESTFLUX_RATE_LIMITS__REDIS_URL",
            vec![(
                "NESTFLUX_RATE_LIMITS__REDIS_URL",
                "redis://:hunter2@127.0.0.1:6379/0",
            )],
        ),
    ];
    for (config, path, fix, env) in cases {
        let secret_free = |diags: &[Value]| {
            for d in diags {
                let text = d.to_string();
                for s in ["s3cr3t-value", KEY, "AAECAwQFBgcICQoL", "hunter2"] {
                    assert!(!text.contains(s), "secret echoed: {text}");
                }
            }
        };
        let find = |diags: &[Value], severity: &str| -> Value {
            diags
                .iter()
                .find(|d| d["path"] == path && d["code"] == "secret-in-file")
                .filter(|d| d["severity"] == severity)
                .cloned()
                .unwrap_or_else(|| panic!("no {severity} for {path}: {diags:#?}"))
        };
        let always_error = path == "auth.session.client_secret";
        let (code, diags) = check_json(&config, &[]);
        assert_eq!(code, i32::from(always_error), "development: {diags:#?}");
        let w = find(&diags, if always_error { "error" } else { "warning" });
        let message = w["message"].as_str().unwrap();
        assert!(message.contains(fix), "{w}");
        if fix.starts_with("NESTFLUX_") {
            assert!(message.contains(&format!("{fix}_FILE")), "{w}");
        }
        assert!(w["line"].as_u64().is_some(), "{w}");
        secret_free(&diags);

        let (code, diags) = check_json(&config, &[("NESTFLUX_PROFILE", "production")]);
        assert_eq!(code, 1, "production: {diags:#?}");
        find(&diags, "error");
        secret_free(&diags);

        // From the environment the same value is where it belongs.
        let stripped: String = config
            .lines()
            .filter(|l| !l.starts_with(path.rsplit('.').next().unwrap()))
            .collect::<Vec<_>>()
            .join("\n");
        let (_, diags) = check_json(&stripped, &env);
        assert!(
            !diags.iter().any(|d| d["code"] == "secret-in-file"),
            "{path} from the environment: {diags:#?}"
        );
        secret_free(&diags);
    }
    // The plaintext key's suggestion is its hash, which is no secret.
    let (_, diags) = check_json(
        &format!(
            "[roles.ci]\npermissions = [\"x:read\"]\n[auth.api_keys.ci]\nhash = \"{KEY}\"\nroles = [\"ci\"]{ROUTE}"
        ),
        &[],
    );
    let d = diags
        .iter()
        .find(|d| d["code"] == "secret-in-file")
        .unwrap();
    assert!(
        d["suggestion"].as_str().unwrap().starts_with("sha256:"),
        "{d}"
    );
}

#[test]
fn overlapping_and_shadowed_routes_are_errors_naming_both() {
    const N: &str = "[schemas.N]\nt = { type = \"string\" }\n[resources.n]\nschema = \"N\"\n";
    let route = |method: &str, path: &str, action: &str| {
        let resource = if action == "health" {
            ""
        } else {
            "resource = \"n\"\n"
        };
        format!(
            "[[routes]]\nmethod = \"{method}\"\npath = \"{path}\"\naction = \"{action}\"\n{resource}public = true\n"
        )
    };
    // Same method, paths that match the same request: which one serves depends on the order
    // Actix registers them in, not on the file.
    let text = format!(
        "{N}{}{}",
        route("GET", "/n/{id}", "get"),
        route("GET", "/n/all", "list")
    );
    let (code, diags) = check_json(&text, &[]);
    assert_eq!(code, 1, "{diags:#?}");
    let d = diags
        .iter()
        .find(|d| d["code"] == "route-overlap")
        .unwrap_or_else(|| panic!("{diags:#?}"));
    let m = d["message"].as_str().unwrap();
    assert!(
        m.contains("GET /n/all matches both routes[0] (GET /n/{id}) and routes[1] (GET /n/all)"),
        "{m}"
    );
    assert_eq!(d["path"], "routes[1].path");
    assert_eq!(d["line"].as_u64(), Some(line_col(&text, "\"/n/all\"").0));

    // Another method on a path Actix tries first (`/n/{id2}` sorts before `/n/{id}`): every
    // GET /n/… reaches the DELETE-only path and gets its 405. (`delete` wants `{id}` and says
    // so too; with today's actions only a renamed parameter can shadow a route entirely.)
    let text = format!(
        "{N}{}{}",
        route("GET", "/n/{id}", "get"),
        route("DELETE", "/n/{id2}", "delete")
    );
    let (code, diags) = check_json(&text, &[]);
    assert_eq!(code, 1, "{diags:#?}");
    let d = diags
        .iter()
        .find(|d| d["code"] == "route-shadowed")
        .unwrap_or_else(|| panic!("{diags:#?}"));
    let m = d["message"].as_str().unwrap();
    assert!(
        m.contains("routes[0] (GET /n/{id}) is shadowed by routes[1] (DELETE /n/{id2})")
            && m.contains("Actix tries /n/{id2} first and answers 405, so GET never reaches it"),
        "{m}"
    );

    // Partly shadowed: GET /n/upload reaches the POST-only path first and gets 405.
    let text = format!(
        "{N}{}{}",
        route("GET", "/n/{id}", "get"),
        route("POST", "/n/upload", "create")
    );
    let (code, diags) = check_json(&text, &[]);
    assert_eq!(code, 1, "{diags:#?}");
    let d = diags
        .iter()
        .find(|d| d["code"] == "route-shadowed")
        .unwrap_or_else(|| panic!("{diags:#?}"));
    let m = d["message"].as_str().unwrap();
    assert!(
        m.contains("routes[0] (GET /n/{id}) is shadowed by routes[1] (POST /n/upload)")
            && m.contains("for paths such as /n/upload"),
        "{m}"
    );
    assert_eq!(d["line"].as_u64(), Some(line_col(&text, "\"/n/{id}\"").0));

    // No overlap: one path serving several methods, different lengths, distinct statics.
    let fine = [
        route("GET", "/n", "list"),
        route("POST", "/n", "create"),
        route("GET", "/n/{id}", "get"),
        route("PATCH", "/n/{id}", "update"),
        route("DELETE", "/n/{id}", "delete"),
        route("GET", "/n/x/health", "health"),
        route("GET", "/health", "health"),
    ]
    .concat();
    let (code, diags) = check_json(&format!("{N}{fine}"), &[]);
    assert_eq!(code, 0, "{diags:#?}");
    assert!(
        !diags
            .iter()
            .any(|d| d["code"].as_str().unwrap().starts_with("route-")),
        "{diags:#?}"
    );
}

/// A permission with a typo grants nothing; the role and the route each say what was meant.
#[test]
fn permission_typos_suggest_the_permission_meant() {
    let config = format!(
        "[auth.dev]\nenabled = true\n[roles.viewer]\npermissions = [\"notse:read\", \"notes:raed\"]\n[roles.editor]\npermissions = [\"notes:read\"]\n{}",
        crate::fixtures::Notes::new()
            .access("list", "permission = \"notes:read\"")
            .access("get", "permission = \"notes:reda\"")
    );
    let (code, diags) = check_json(&config, &[]);
    assert_eq!(code, 0, "{diags:#?}");
    let meant = |path: &str| -> (String, u64) {
        let d = diags
            .iter()
            .find(|d| d["path"] == path && d["code"] == "unknown-permission")
            .unwrap_or_else(|| panic!("nothing at {path}: {diags:#?}"));
        (
            d["suggestion"].as_str().unwrap_or("").to_string(),
            d["line"].as_u64().unwrap(),
        )
    };
    assert_eq!(
        meant("roles.viewer.permissions[0]"),
        ("notes:read".into(), 4)
    );
    assert_eq!(meant("roles.viewer.permissions[1]").0, "notes:read");
    let (s, line) = meant("routes[1].permission");
    assert_eq!(s, "notes:read");
    assert_eq!(line, line_col(&config, "\"notes:reda\"").0);
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
        text.contains("warning[unused]: roles.empty: grants no permission"),
        "{text}"
    );
    assert!(
        text.contains(
            "warning[unknown-permission]: routes[0].permission: no role grants \"audit:read\""
        ),
        "{text}"
    );
    // The audit action is enforced (issue 14): nothing is listed as not yet enforced.
    assert!(!text.contains("not yet enforced"), "{text}");
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
