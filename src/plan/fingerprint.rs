//! The config hash: SHA-256 of the effective configuration (file and variables, after
//! layering) with every secret left out, so operators can tell which configuration an
//! instance runs without the hash revealing (or letting anyone guess) a secret.

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::Profile;
use crate::config::RawConfig;
use crate::config::source::may_hold_secret;

/// Declarations that name things and never hold a secret: a schema field or a field
/// permission called `secret` or `token` is not one.
const DECLARATIONS: &[&str] = &["schemas", "resources", "roles", "routes", "headers", "cors"];

/// Stands in for a secret that is set: whether it is set counts, its value does not.
const REDACTED: &str = "<redacted>";

/// `sha256:<64 hex>` of the effective configuration and profile, secrets left out.
pub fn config_hash(raw: &RawConfig, profile: Profile) -> String {
    let mut value = serde_json::to_value(raw).unwrap_or(Value::Null);
    redact(&mut value, "");
    let doc = serde_json::json!({ "profile": profile.name(), "config": value });
    // serde_json's maps are sorted by key, so equal configurations give equal bytes.
    let bytes = serde_json::to_vec(&doc).unwrap_or_default();
    let digest = Sha256::digest(&bytes);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for b in digest.iter() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

fn redact(value: &mut Value, path: &str) {
    let top = path.split(['.', '[']).next().unwrap_or(path);
    if !path.is_empty() && DECLARATIONS.contains(&top) {
        return;
    }
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                let child = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                redact(v, &child);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                redact(v, &format!("{path}[{i}]"));
            }
        }
        Value::Null => {}
        leaf => {
            let last = path.rsplit('.').next().unwrap_or(path);
            // A policy's `key` is `ip` or `user`, not a key.
            if top == "rate_limits" && last == "key" || !may_hold_secret(path) {
                return;
            }
            *leaf = match leaf.as_str().map(url::Url::parse) {
                // A URL keeps where it points; only its password goes.
                Some(Ok(mut url)) if url.has_host() => {
                    if url.password().is_some() {
                        let _ = url.set_password(Some(REDACTED));
                    }
                    Value::String(url.to_string())
                }
                Some(Ok(_)) | Some(Err(_)) | None => Value::String(REDACTED.into()),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> RawConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn secrets_do_not_change_the_hash_but_everything_else_does() {
        let base = r#"
            [database]
            url = "postgres://app:first@db.internal/notes"
            [encryption]
            keys = "k1:AAAA"
            [rate_limits.global]
            key = "ip"
            per_second = 10
        "#;
        let h = config_hash(&raw(base), Profile::Development);
        assert!(h.starts_with("sha256:") && h.len() == 71, "{h}");
        let other_secrets = base
            .replace("app:first@", "app:second@")
            .replace("k1:AAAA", "k2:BBBB");
        assert_eq!(h, config_hash(&raw(&other_secrets), Profile::Development));
        for changed in [
            base.replace("db.internal", "db2.internal"),
            base.replace("per_second = 10", "per_second = 11"),
            base.replace("key = \"ip\"", "key = \"user\""),
        ] {
            assert_ne!(
                h,
                config_hash(&raw(&changed), Profile::Development),
                "{changed}"
            );
        }
        assert_ne!(h, config_hash(&raw(base), Profile::Production));
    }

    #[test]
    fn the_hashed_document_holds_no_secret() {
        let mut v = serde_json::to_value(raw(r#"
            [database]
            url = "postgres://app:hunter2@db/notes"
            [encryption]
            keys = "k1:c2VjcmV0"
            [auth]
            [auth.session]
            client_id = "nestflux"
            client_secret = "s3cr3t"
            redirect_url = "http://127.0.0.1:8080/auth/callback"
        "#))
        .unwrap();
        redact(&mut v, "");
        let text = v.to_string();
        for secret in ["hunter2", "c2VjcmV0", "s3cr3t"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(text.contains("db/notes"), "{text}");
    }
}
