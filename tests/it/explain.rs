//! `nestflux explain METHOD PATH` on the reference service: the decision, step by step, for
//! an allowed request, a 403 naming the missing permission, an own-row restriction and a
//! hidden field — and proof that it writes nothing.

use std::process::Output;

use crate::common::{Project, new_api_key};
use crate::fixtures::REFERENCE;

const ROW: &str = "/api/notes/0190c7a2-0000-7000-8000-000000000000";

fn explain(p: &Project, args: &[&str]) -> (i32, String) {
    let mut all = vec!["explain"];
    all.extend_from_slice(args);
    let out: Output = p.run(&all, &[]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("panicked"), "{text}");
    (out.status.code().unwrap_or(-1), text)
}

fn step<'a>(text: &'a str, name: &str) -> &'a str {
    text.lines()
        .find(|l| l.split_whitespace().nth(1) == Some(name))
        .unwrap_or_else(|| panic!("no `{name}` step in:\n{text}"))
}

#[test]
fn an_allowed_request_names_the_route_limits_and_the_granting_role() {
    let p = Project::new(REFERENCE);
    let (code, text) = explain(
        &p,
        &["GET", "/api/notes", "--sub", "ann", "--role", "editor"],
    );
    assert_eq!(code, 0, "{text}");
    assert!(
        step(&text, "route").contains("routes[0]: GET /api/notes → list notes"),
        "{text}"
    );
    assert!(
        step(&text, "global").contains("rate_limits.global: 100 per second, burst 200"),
        "{text}"
    );
    // Granted through inheritance: editor inherits viewer, which declares notes:read.
    assert!(
        text.contains(
            "needs notes:read: granted to editor by `notes:read` declared on roles.viewer (inherited: editor → viewer)"
        ),
        "{text}"
    );
    assert!(text.contains("decision: 200 allowed"), "{text}");
    // The reference file is served whole since the audit log (issue 14): no refusal note.
    assert!(!text.contains("refuses this file"), "{text}");
    // Nothing was written: no database, no key file.
    let files: Vec<String> = std::fs::read_dir(p.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(files, ["nestflux.toml"], "explain wrote something");
}

#[test]
fn a_refused_request_is_403_naming_the_missing_permission_and_who_has_it() {
    let p = Project::new(REFERENCE);
    let (code, text) = explain(&p, &["DELETE", ROW, "--sub", "vic", "--role", "viewer"]);
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("needs notes:delete: roles.viewer does not grant it"),
        "{text}"
    );
    assert!(
        text.contains("granted by: admin (`notes:*`), editor (`notes:delete:own`)"),
        "{text}"
    );
    assert!(
        text.contains("decision: 403 forbidden: needs notes:delete, which viewer does not grant"),
        "{text}"
    );
    // Roles the file does not declare grant nothing and are said to be ignored.
    let (code, text) = explain(&p, &["GET", "/api/notes", "--sub", "x", "--role", "root"]);
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("ignored: root (not declared in [roles]"),
        "{text}"
    );
    assert!(text.contains("decision: 403"), "{text}");
    // No credentials at all on a protected route.
    let (code, text) = explain(&p, &["GET", "/api/notes"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("decision: 401"), "{text}");
}

#[test]
fn own_rows_and_hidden_fields_are_spelled_out() {
    let p = Project::new(REFERENCE);
    // editor holds notes:update:own and notes:secret:own.
    let (code, text) = explain(
        &p,
        &[
            "PATCH",
            ROW,
            "--sub",
            "ann",
            "--role",
            "editor",
            "--body",
            r#"{"title":"t"}"#,
        ],
    );
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(
            "needs notes:update: granted on own rows only to editor by `notes:update:own` declared on roles.editor"
        ),
        "{text}"
    );
    assert!(
        step(&text, "own").contains("only a row owned by \"ann\": another's row answers 404"),
        "{text}"
    );
    assert!(
        text.contains("secret: needs notes:secret: granted on own rows only"),
        "{text}"
    );
    assert!(
        step(&text, "body").contains("valid against schemas.Note"),
        "{text}"
    );

    // viewer may read, but `secret` is hidden from them, and a body setting it is refused.
    let (code, text) = explain(&p, &["GET", ROW, "--sub", "vic", "--role", "viewer"]);
    assert_eq!(code, 0, "{text}");
    assert!(step(&text, "own").contains("any row"), "{text}");
    assert!(
        text.contains("secret: needs notes:secret: not granted: hidden from every response"),
        "{text}"
    );

    // An admin sees and writes it on every row.
    let (_, text) = explain(&p, &["GET", ROW, "--sub", "root", "--role", "admin"]);
    assert!(
        text.contains("secret: needs notes:secret: granted, read and written on every row"),
        "{text}"
    );
}

#[test]
fn bodies_ids_methods_and_paths_are_checked_as_served() {
    let p = Project::new(REFERENCE);
    let (code, text) = explain(
        &p,
        &[
            "POST",
            "/api/notes",
            "--sub",
            "ann",
            "--role",
            "editor",
            "--body",
            r#"{"title":""}"#,
        ],
    );
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("/title"), "{text}");
    assert!(text.contains("decision: 422"), "{text}");
    let (code, text) = explain(
        &p,
        &[
            "GET",
            "/api/notes/not-a-uuid",
            "--sub",
            "a",
            "--role",
            "viewer",
        ],
    );
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("decision: 404"), "{text}");
    let (code, text) = explain(&p, &["PUT", "/api/notes"]);
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("decision: 405 method not allowed (Allow: GET, POST)"),
        "{text}"
    );
    let (code, text) = explain(&p, &["GET", "/nowhere"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("decision: 404"), "{text}");
    let (code, text) = explain(&p, &["GET", "/health"]);
    assert_eq!(code, 0, "{text}");
    assert!(
        step(&text, "authentication").contains("public route"),
        "{text}"
    );
}

/// Tokens and API keys go through the same authenticator as `serve`: a development token
/// verifies against the stored key, a tampered one is refused, an API key is looked up.
#[test]
fn tokens_and_api_keys_are_verified_as_served() {
    let (key, hash) = new_api_key("ci");
    let config = format!(
        "[auth.dev]\nenabled = true\n[roles.viewer]\npermissions = [\"notes:read\"]\n[auth.api_keys.ci]\nhash = \"{hash}\"\nroles = [\"viewer\"]\n{}",
        crate::fixtures::Notes::new().access("list", "permission = \"notes:read\"")
    );
    let p = Project::new(&config);
    let out = p.run(&["token", "--sub", "tina", "--role", "viewer"], &[]);
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let (code, text) = explain(&p, &["GET", "/api/notes", "--token", &token]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(
            "development token, verified against the stored key: subject \"dev:tina\", roles viewer"
        ),
        "{text}"
    );
    let last = if token.ends_with('A') { 'B' } else { 'A' };
    let tampered = format!("{}{last}", &token[..token.len() - 1]);
    let (code, text) = explain(&p, &["GET", "/api/notes", "--token", &tampered]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("decision: 401"), "{text}");
    let (code, text) = explain(&p, &["GET", "/api/notes", "--api-key", &key]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("API key auth.api_keys.ci: subject \"apikey:ci\""),
        "{text}"
    );
}

/// A provider's token is verified against the provider's keys, fetched once from its
/// discovery document, exactly as `serve` verifies it (the real `oidc-provider`).
#[test]
fn a_provider_token_is_verified_against_the_providers_keys() {
    use crate::oidc::{AUD, Provider, nestflux_config};
    let dir = tempfile::tempdir().unwrap();
    let provider = Provider::start(0, &dir.path().join("keys.json"), "1");
    let (_, hash) = new_api_key("ci");
    let p = Project::new(&nestflux_config(&provider.issuer(), AUD, &hash));
    let token = provider.token(AUD);
    let (code, text) = explain(&p, &["GET", "/api/me/reports", "--token", &token]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(
            "bearer token of auth.issuer, verified: subject \"nestflux-svc\", roles service"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "needs reports:read: granted to service by `reports:read` declared on roles.service"
        ),
        "{text}"
    );
    // The same token on a route its roles do not open: 403, and who would have it.
    let (code, text) = explain(&p, &["GET", "/api/me/admin", "--token", &token]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("granted by: admin (`*:*`)"), "{text}");
    provider.stop();
}
