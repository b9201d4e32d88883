//! Layered loading: built-in defaults < the TOML file < `NESTFLUX_*` environment variables.
//!
//! `NESTFLUX_SERVER__BIND` sets `server.bind` (a double underscore nests);
//! `NESTFLUX_AUTH__SESSION__CLIENT_SECRET_FILE=/run/secrets/x` reads that key's value from a
//! file, so secrets never have to be in the file or in the environment itself.
//!
//! Loading never stops at the first mistake: the merged values are read section by section
//! (see [`super::read`]), so an unknown key or a value of the wrong type is reported beside
//! every other one and the rest of the file is still checked.

use std::path::Path;
use std::str::FromStr;

use figment::providers::Serialized;
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use toml_edit::ImDocument;

use super::RawConfig;
use super::read::{Issue, Reader};
use super::source::{ConfigSource, EnvEntry, SourceMap};

/// Variables that steer the process rather than name a config key.
pub const CONTROL_VARS: &[&str] = &["CONFIG", "PROFILE", "LOG", "LOG_FORMAT"];

/// The configuration as read, with every problem found while reading it.
#[derive(Debug)]
pub struct Loaded {
    /// The raw values; a key that could not be read keeps its default.
    pub raw: RawConfig,
    /// The file's text and spans, and the variables that set keys.
    pub source: ConfigSource,
    /// Unknown keys and values of the wrong type, each with its path.
    pub issues: Vec<Issue>,
}

/// Why the configuration could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("config file {path}: {reason}")]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// Why it could not be read.
        reason: String,
    },
    /// The file is not valid TOML.
    #[error("{message}")]
    Syntax {
        /// The file's text, for showing the line.
        text: String,
        /// What the parser says.
        message: String,
        /// Where, as a byte range.
        span: Option<std::ops::Range<usize>>,
    },
    /// A `NESTFLUX_…_FILE` secret file could not be read.
    #[error("{var}: cannot read secret file: {reason}")]
    SecretFile {
        /// The `…_FILE` variable naming the file.
        var: String,
        /// Why it could not be read.
        reason: String,
    },
    /// The layers could not be merged (e.g. a variable sets a table to a plain value).
    #[error("{0}")]
    Merge(String),
}

/// Loads the raw configuration from `path` and the process environment.
pub fn load(path: &Path) -> Result<Loaded, LoadError> {
    load_from(path, std::env::vars())
}

/// Loads from an explicit set of environment variables.
pub fn load_from(
    path: &Path,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Loaded, LoadError> {
    let file_error = |reason: String| LoadError::File {
        path: path.into(),
        reason,
    };
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => {}
        Ok(_) => return Err(file_error("not a regular file".into())),
        Err(e) => return Err(file_error(e.to_string())),
    }
    let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
    // One read and one parse of the file: the spans and the values come from the same text.
    let doc = ImDocument::parse(text.clone()).map_err(|e| LoadError::Syntax {
        text: text.clone(),
        message: e.message().to_string(),
        span: e.span(),
    })?;
    let file: Dict = toml_edit::de::from_document(toml_edit::de::Deserializer::from(doc.clone()))
        .map_err(|e| LoadError::Merge(e.to_string()))?;
    let map = SourceMap::of(doc);

    let env = EnvLayer::collect(vars)?;
    let figment = Figment::new().merge(Serialized::defaults(file)).merge(&env);
    let merged: serde_json::Value = figment
        .extract()
        .map_err(|e| LoadError::Merge(e.to_string()))?;
    let source = ConfigSource {
        path: path.into(),
        env_keys: env.keys(),
        text: text.clone(),
        map,
        env: env.entries.clone(),
    };
    let mut reader = Reader::new(&source);
    let raw = reader.config(merged);
    Ok(Loaded {
        raw,
        issues: reader.into_issues(),
        source,
    })
}

/// The `NESTFLUX_*` variables as a figment provider.
struct EnvLayer {
    /// `_FILE` secrets are read already; a plain variable comes after a `_FILE` one for the
    /// same key, so it wins.
    entries: Vec<EnvEntry>,
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
                files.push(EnvEntry {
                    key: key_path(key),
                    var: name.clone(),
                    from_file: true,
                    value: secret,
                });
            } else {
                plain.push(EnvEntry {
                    key: key_path(rest),
                    var: name.clone(),
                    from_file: false,
                    value,
                });
            }
        }
        let mut entries = files;
        entries.extend(plain);
        Ok(Self { entries })
    }

    fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.entries.iter().map(|e| e.key.clone()).collect();
        keys.sort();
        keys.dedup();
        keys
    }
}

impl Provider for &EnvLayer {
    fn metadata(&self) -> Metadata {
        Metadata::named("environment variable(s) NESTFLUX_*")
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut figment = Figment::new();
        for e in &self.entries {
            let value = if e.from_file {
                Value::from(e.value.clone())
            } else {
                Value::from_str(&e.value).unwrap_or_else(|never| match never {})
            };
            let nested = figment::util::nest(&e.key, value);
            if let Some(dict) = nested.into_dict() {
                figment = figment.merge(Serialized::defaults(dict));
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

/// The variable that would set `path`: `server.bind` → `NESTFLUX_SERVER__BIND`.
pub fn var_for(path: &str) -> String {
    let mut out = String::from("NESTFLUX_");
    out.push_str(&path.replace('.', "__").to_ascii_uppercase());
    out
}
