//! Layered loading: built-in defaults < the TOML file < `NESTFLUX_*` environment variables.
//!
//! `NESTFLUX_SERVER__BIND` sets `server.bind` (a double underscore nests);
//! `NESTFLUX_AUTH__SESSION__CLIENT_SECRET_FILE=/run/secrets/x` reads that key's value from a
//! file, so secrets never have to be in the file or in the environment itself.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

use super::RawConfig;

/// Variables that steer the process rather than name a config key.
const CONTROL_VARS: &[&str] = &["CONFIG", "PROFILE", "LOG", "LOG_FORMAT"];

/// Keys only the environment may set: secrets.
const ENV_ONLY: &[&str] = &["auth.session.client_secret", "rate_limits.redis_password"];

/// URL keys the file may set only without a password: (key, the password's own variable).
const URL_WITHOUT_PASSWORD: &[(&str, &str)] = &[(
    "rate_limits.redis_url",
    "NESTFLUX_RATE_LIMITS__REDIS_PASSWORD",
)];

/// The name of the environment layer in figment's metadata.
const ENV_LAYER: &str = "environment variable(s) NESTFLUX_*";

/// Where the configuration came from, for summaries (key names only, never values).
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    /// The file that was read.
    pub path: PathBuf,
    /// Config keys set from the environment, e.g. `server.bind`.
    pub env_keys: Vec<String>,
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("config file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why it could not be read or parsed.
        reason: String,
    },
    /// A `NESTFLUX_…_FILE` secret file could not be read.
    #[error("{var}: cannot read secret file: {reason}")]
    SecretFile {
        /// The `…_FILE` variable naming the file.
        var: String,
        /// Why it could not be read.
        reason: String,
    },
    /// One line per problem, each starting with its key path.
    #[error("{0}")]
    Parse(String),
}

/// Loads the raw configuration from `path` and the process environment.
pub fn load(path: &Path) -> Result<(RawConfig, ConfigSource), LoadError> {
    load_from(path, std::env::vars())
}

/// Loads from an explicit set of environment variables.
pub fn load_from(
    path: &Path,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<(RawConfig, ConfigSource), LoadError> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => {}
        Ok(_) => {
            return Err(LoadError::File {
                path: path.into(),
                reason: "not a regular file".into(),
            });
        }
        Err(e) => {
            return Err(LoadError::File {
                path: path.into(),
                reason: e.to_string(),
            });
        }
    }

    let env = EnvLayer::collect(vars)?;
    let env_keys = env.keys();
    let figment = Figment::new().merge(Toml::file_exact(path)).merge(env);
    // Every unknown key at once (serde alone would stop at the first).
    if let Ok(merged) = figment.extract::<serde_json::Value>() {
        let schema = serde_json::to_value(schemars::schema_for!(RawConfig)).unwrap_or_default();
        let unknown = super::keys::unknown(&merged, &schema);
        if !unknown.is_empty() {
            return Err(LoadError::Parse(unknown.join("\n")));
        }
    }
    // A secret written in the file travels with it (repositories, backups, `cat`): only the
    // environment may set these keys.
    for key in ENV_ONLY {
        if figment
            .find_metadata(key)
            .is_some_and(|m| m.name != ENV_LAYER)
        {
            let var = format!("NESTFLUX_{}", key.replace('.', "__").to_ascii_uppercase());
            return Err(LoadError::Parse(format!(
                "{key}: a secret must not be written in the file; set {var} or {var}_FILE"
            )));
        }
    }
    for (key, password_var) in URL_WITHOUT_PASSWORD {
        let from_file = figment
            .find_metadata(key)
            .is_some_and(|m| m.name != ENV_LAYER);
        let has_password = figment
            .find_value(key)
            .ok()
            .and_then(|v| v.into_string())
            .and_then(|u| url::Url::parse(&u).ok())
            .is_some_and(|u| u.password().is_some());
        if from_file && has_password {
            // Never echo the URL: it holds the password.
            let var = format!("NESTFLUX_{}", key.replace('.', "__").to_ascii_uppercase());
            return Err(LoadError::Parse(format!(
                "{key}: a password must not be written in the file; set {var} (or {var}_FILE), or {password_var} (or {password_var}_FILE) beside a URL without one"
            )));
        }
    }
    let raw: RawConfig = figment
        .extract()
        .map_err(|e| LoadError::Parse(format_figment(e)))?;
    Ok((
        raw,
        ConfigSource {
            path: path.into(),
            env_keys,
        },
    ))
}

/// The `NESTFLUX_*` variables as a figment provider.
struct EnvLayer {
    /// (dotted key path, value); `_FILE` secrets are read already.
    entries: Vec<(String, Value)>,
}

impl EnvLayer {
    fn collect(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, LoadError> {
        let mut plain = Vec::new();
        let mut files = Vec::new();
        for (name, value) in vars {
            let Some(rest) = name.strip_prefix("NESTFLUX_") else {
                continue;
            };
            if rest.is_empty() || CONTROL_VARS.contains(&rest) {
                continue;
            }
            if let Some(key) = rest.strip_suffix("_FILE") {
                let secret =
                    std::fs::read_to_string(&value).map_err(|e| LoadError::SecretFile {
                        var: name.clone(),
                        reason: e.to_string(),
                    })?;
                // A secret is taken verbatim, never parsed as a number or list.
                let secret = secret.trim_end_matches(['\r', '\n']).to_string();
                files.push((key_path(key), Value::from(secret)));
            } else {
                let parsed = Value::from_str(&value).unwrap_or_else(|never| match never {});
                plain.push((key_path(rest), parsed));
            }
        }
        // A plain variable and a _FILE variable for the same key: the plain one wins.
        let mut entries = files;
        entries.extend(plain);
        Ok(Self { entries })
    }

    fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.entries.iter().map(|(k, _)| k.clone()).collect();
        keys.sort();
        keys.dedup();
        keys
    }
}

impl Provider for EnvLayer {
    fn metadata(&self) -> Metadata {
        Metadata::named(ENV_LAYER)
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut figment = Figment::new();
        for (key, value) in &self.entries {
            let nested = figment::util::nest(key, value.clone());
            if let Some(dict) = nested.into_dict() {
                figment = figment.merge(figment::providers::Serialized::defaults(dict));
            }
        }
        let dict: Dict = figment.extract()?;
        let mut map = Map::new();
        map.insert(Profile::Default, dict);
        Ok(map)
    }
}

/// `SERVER__BIND` → `server.bind`.
fn key_path(var: &str) -> String {
    var.split("__")
        .map(str::to_ascii_lowercase)
        .collect::<Vec<_>>()
        .join(".")
}

/// Every error figment found, one per line, each starting with its key path.
fn format_figment(err: figment::Error) -> String {
    err.into_iter()
        .map(|e| {
            let path = e
                .path
                .iter()
                .map(|seg| match seg.parse::<usize>() {
                    Ok(i) => format!("[{i}]"),
                    Err(_) => format!(".{seg}"),
                })
                .collect::<String>()
                .trim_start_matches('.')
                .to_string();
            let what = match &e.kind {
                figment::error::Kind::UnknownField(_, expected) => {
                    // figment's path already ends with the unknown key.
                    return format!(
                        "{path}: unknown key (expected one of: {})",
                        expected.join(", ")
                    );
                }
                kind => kind.to_string(),
            };
            let origin = e.metadata.as_ref().map(|m| m.name.to_string());
            let place = if path.is_empty() {
                String::new()
            } else {
                format!("{path}: ")
            };
            match origin {
                Some(origin) => format!("{place}{what} (from {origin})"),
                None => format!("{place}{what}"),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}
