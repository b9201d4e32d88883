//! Secrets never in the file, never echoed: a secret-looking value written in the file gets
//! a diagnostic naming the variable to use instead (a warning in development, an error in
//! production), and no diagnostic repeats a value that came from a `…_FILE` variable or
//! from a variable whose key can hold a secret.

use super::Profile;
use super::auth::{API_KEY_HASH_PREFIX, API_KEY_PREFIX, sha256_of};
use super::diag::{Code, Diagnostic, Diagnostics};
use crate::config::{ConfigSource, RawConfig, var_for};

/// Whether the value at `path` was written in the file (not set by a variable). Without a
/// source (a config given as text) everything is the file's.
fn in_file(source: Option<&ConfigSource>, path: &str) -> bool {
    match source {
        None => true,
        Some(s) => s.env_for(path).is_none() && s.map.get(path).is_some(),
    }
}

/// Reports every secret written in the file.
pub fn lint(raw: &RawConfig, source: Option<&ConfigSource>, profile: Profile, d: &mut Diagnostics) {
    let found = |d: &mut Diagnostics, path: String, what: &str, suggestion: Option<String>| {
        let var = var_for(&path);
        let message = format!(
            "{what} is written in the file: set {var} (or {var}_FILE, naming a file that holds it) instead, and treat this one as leaked (the file is copied, committed and printed)"
        );
        let refused = Diagnostic::new(
            &path,
            format!("{message}; refused under NESTFLUX_PROFILE=production"),
        )
        .with_code(Code::SecretInFile)
        .with_suggestion(suggestion.clone());
        let tolerated = Diagnostic::new(&path, message)
            .with_code(Code::SecretInFile)
            .with_suggestion(suggestion);
        d.refuse_in_production(profile, refused, tolerated);
    };

    if let Some(secret) = raw
        .auth
        .as_ref()
        .and_then(|a| a.session.as_ref())
        .and_then(|s| s.client_secret.as_ref())
        && !secret.is_empty()
        && in_file(source, "auth.session.client_secret")
    {
        // Issue 13: the client secret comes only from the environment, in every profile.
        let path = "auth.session.client_secret";
        let var = var_for(path);
        d.push_error(
            Diagnostic::new(
                path,
                format!(
                    "the OIDC client secret must not be written in the file: set {var} (or {var}_FILE) instead, and treat this one as leaked"
                ),
            )
            .with_code(Code::SecretInFile),
        );
    }
    for (name, key) in raw.auth.iter().flat_map(|a| &a.api_keys) {
        let path = format!("auth.api_keys.{name}.hash");
        if key.hash.starts_with(API_KEY_PREFIX) && in_file(source, &path) {
            // The hash of the pasted key is what belongs there; the hash is no secret.
            let hash: String = sha256_of(&key.hash)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let message = format!(
                "this is the API key itself, not its hash: declare hash = \"{API_KEY_HASH_PREFIX}…\" (the suggestion is this key's hash), give the key only to its holder, and better, issue a new one with `nestflux keys api-key {name}`: this one is leaked"
            );
            d.refuse_in_production(
                profile,
                Diagnostic::new(
                    &path,
                    format!("{message}; refused under NESTFLUX_PROFILE=production"),
                )
                .with_code(Code::SecretInFile)
                .with_suggestion(Some(format!("{API_KEY_HASH_PREFIX}{hash}"))),
                Diagnostic::new(&path, message)
                    .with_code(Code::SecretInFile)
                    .with_suggestion(Some(format!("{API_KEY_HASH_PREFIX}{hash}"))),
            );
        }
    }
    if raw
        .encryption
        .as_ref()
        .and_then(|e| e.keys.as_ref())
        .is_some_and(|k| !k.is_empty())
        && in_file(source, "encryption.keys")
    {
        found(d, "encryption.keys".into(), "the encryption key ring", None);
    }
    if has_password(&raw.database.url) && in_file(source, "database.url") {
        found(
            d,
            "database.url".into(),
            "the database password (in database.url)",
            None,
        );
    }
    if raw
        .rate_limits
        .redis_url
        .as_deref()
        .is_some_and(has_password)
        && in_file(source, "rate_limits.redis_url")
    {
        found(
            d,
            "rate_limits.redis_url".into(),
            "the Redis password (in rate_limits.redis_url)",
            None,
        );
    }
}

/// Whether a URL carries a password (`postgres://user:pass@host/db`).
fn has_password(text: &str) -> bool {
    url::Url::parse(text).is_ok_and(|u| u.password().is_some_and(|p| !p.is_empty()))
}

/// Replaces, in every diagnostic, each value that must not be echoed: values read from a
/// `…_FILE` variable and values of variables whose key can hold a secret. Within the key
/// the value set (and below it) every occurrence goes; elsewhere only values long enough
/// not to be mistaken for ordinary words.
pub fn scrub(diags: &mut [Diagnostic], source: &ConfigSource) {
    for e in source.env.iter().filter(|e| !e.may_echo()) {
        let value = e.value.trim();
        if value.is_empty() {
            continue;
        }
        let hidden = format!("<value of {} hidden>", e.var);
        for d in diags.iter_mut() {
            let inside = d.path == e.key
                || d.path.starts_with(&format!("{}.", e.key))
                || d.path.starts_with(&format!("{}[", e.key));
            if inside || value.chars().count() >= 6 {
                d.message = d.message.replace(value, &hidden);
                if let Some(s) = &d.suggestion
                    && s.contains(value)
                {
                    d.suggestion = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EnvEntry;

    #[test]
    fn passwords_in_urls() {
        assert!(has_password("postgres://app:hunter2@db/app"));
        assert!(!has_password("postgres://app@db/app"));
        assert!(!has_password("sqlite://nestflux.db"));
        assert!(!has_password("redis://127.0.0.1:6379"));
        assert!(has_password("rediss://:s3cret@cache:6380"));
    }

    #[test]
    fn file_values_are_never_echoed() {
        let source = ConfigSource {
            env: vec![
                EnvEntry {
                    key: "auth.leeway".into(),
                    var: "NESTFLUX_AUTH__LEEWAY_FILE".into(),
                    from_file: true,
                    value: "2s".into(),
                },
                EnvEntry {
                    key: "server.bind".into(),
                    var: "NESTFLUX_SERVER__BIND".into(),
                    from_file: false,
                    value: "localhost".into(),
                },
            ],
            ..ConfigSource::default()
        };
        let mut diags = vec![
            Diagnostic::new("auth.leeway", "`2s` is not a duration"),
            Diagnostic::new("server.bind", "`localhost` is not a socket address"),
            Diagnostic::new("routes[2]", "2s elsewhere is left alone"),
        ];
        scrub(&mut diags, &source);
        assert_eq!(
            diags[0].message,
            "`<value of NESTFLUX_AUTH__LEEWAY_FILE hidden>` is not a duration"
        );
        assert_eq!(diags[1].message, "`localhost` is not a socket address");
        assert_eq!(diags[2].message, "2s elsewhere is left alone");
    }
}
