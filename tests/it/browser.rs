//! The browser login once in a real browser: Debian's headless Chromium, driven by
//! `playwright-core` (tests/browser/login.mjs), against nestflux over TLS with a test CA
//! (Chromium trusts exactly that CA's key) and the real `oidc-provider`.
//!
//! Without Chromium the test prints a loud SKIP line and passes, so `cargo test` works on
//! any machine; with `TEST_REQUIRE_CHROMIUM=1` (set by `.ci/run`) a missing Chromium fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::common::Project;
use crate::oidc::{free_port, require_node};
use crate::sessions::{KEYS, Opts, config, start_provider};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// Chromium and the driver, installed from npm on first use; `false` (after a loud line)
/// when this machine has no Chromium and the run does not require it.
fn browser_available() -> bool {
    let required = std::env::var("TEST_REQUIRE_CHROMIUM").is_ok_and(|v| v == "1");
    if !chromium().exists() {
        assert!(
            !required,
            "TEST_REQUIRE_CHROMIUM=1 but {} is missing (Debian: apt-get install chromium)",
            chromium().display()
        );
        eprintln!(
            "\n*** SKIPPED browser::login_in_headless_chromium_over_tls: no Chromium at {} \
             (apt-get install chromium; TEST_REQUIRE_CHROMIUM=1 makes this a failure) ***\n",
            chromium().display()
        );
        return false;
    }
    require_node();
    if !dir()
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        let _ = Command::new("npm")
            .args([
                "ci",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
                "--prefix",
            ])
            .arg(dir())
            .status();
    }
    assert!(
        dir()
            .join("node_modules/playwright-core/package.json")
            .exists(),
        "playwright-core is missing: run `npm ci --prefix tests/browser`"
    );
    true
}

#[test]
fn login_in_headless_chromium_over_tls() {
    if !browser_available() {
        return;
    }
    // A test CA and a certificate for 127.0.0.1 it signed.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "nestflux browser test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".into()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    let spki =
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(ca_key.public_key_der()));

    let opts = Opts {
        tls: true,
        ..Opts::default()
    };
    let port = free_port();
    let project = Project::new("");
    let provider = start_provider(free_port(), &project.path().join("op.json"), port, &opts);
    // The reference's CSP (no form-action limit): a logout form may end at the provider.
    let file = config(&opts, &provider.issuer(), port)
        + "\n[server.tls]\ncert = \"server.pem\"\nkey = \"server.key\"\n\n[headers]\ncontent_security_policy = \"default-src 'self'; frame-ancestors 'none'\"\n";
    std::fs::write(project.config(), file).unwrap();
    project.write("server.pem", &format!("{}{}", leaf.pem(), ca.pem()));
    project.write("server.key", &leaf_key.serialize_pem());
    let bind = format!("127.0.0.1:{port}");
    let server = project.serve(&[
        ("NESTFLUX_SERVER__BIND", bind.as_str()),
        ("NESTFLUX_ENCRYPTION__KEYS", KEYS),
        ("NESTFLUX_AUTH__SESSION__CLIENT_SECRET", "web-secret"),
    ]);
    let app = format!("https://127.0.0.1:{port}");
    assert_eq!(server.url, app);

    let out = Command::new("node")
        .arg(dir().join("login.mjs"))
        .env("APP", &app)
        .env("SPKI", &spki)
        .env("CHROMIUM", chromium())
        .env("LOGIN_USER", "admin")
        .output()
        .expect("node login.mjs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let seen: Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!(
                "no result from login.mjs:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(seen.get("error").is_none(), "{seen:#}\n{}", server.log());

    // Login went through the provider and back to where it was asked to.
    assert!(
        seen["login_page"]
            .as_str()
            .unwrap()
            .starts_with(&provider.issuer()),
        "{seen:#}"
    );
    assert_eq!(seen["landed"], format!("{app}/api/me"));
    assert_eq!(seen["me"]["subject"], "admin");
    assert_eq!(seen["me"]["kind"], "session");
    assert_eq!(seen["me"]["roles"], serde_json::json!(["admin", "user"]));
    // The cookie as Chromium stored it: __Host- rules held, invisible to scripts.
    assert_eq!(
        seen["cookie"],
        serde_json::json!({
            "secure": true, "httpOnly": true, "sameSite": "Lax",
            "path": "/", "domain": "127.0.0.1", "length": 43,
        }),
        "{seen:#}"
    );
    assert_eq!(seen["cookie_visible_to_scripts"], false);
    assert_eq!(seen["session"]["authenticated"], true);
    // A same-origin write: Chromium's own Origin header passes the CSRF check.
    assert_eq!(seen["write_status"], StatusCode::CREATED.as_u16());
    // Logout: the provider's confirmation page, the cookie gone, then back here.
    assert!(
        seen["logout_page"]
            .as_str()
            .unwrap()
            .starts_with(&provider.issuer()),
        "{seen:#}"
    );
    assert_eq!(seen["cookie_after_logout"], false);
    assert_eq!(seen["after_provider_logout"], format!("{app}/"));
    assert_eq!(seen["me_after_logout"], StatusCode::UNAUTHORIZED.as_u16());
}
