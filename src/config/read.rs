//! Reads the merged values into [`RawConfig`] section by section, collecting every mistake
//! instead of stopping at the first: keys serde ignored (unknown keys, with the nearest
//! valid name) and values of the wrong type. A value that cannot be read is reported with
//! its path, dropped, and the section read again, so it falls back to its default and the
//! rest of the section (and of the file) is still checked.

use std::collections::{BTreeMap, BTreeSet};

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::source::{ConfigSource, EnvEntry};
use super::{RawConfig, RawRateLimits};

/// What kind of problem reading found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueKind {
    /// A key no section knows: a typo must never silently open (or close) anything.
    UnknownKey,
    /// A value of the wrong type; the key keeps its default.
    WrongType,
    /// A required key is missing from a table; the table keeps its default.
    MissingKey,
}

/// One problem found while reading, with the path of its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// What kind of problem.
    pub kind: IssueKind,
    /// Path of the key, e.g. `routes[2].permision`.
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// The name meant, when one is close (`permission`), or the variable meant.
    pub suggestion: Option<String>,
}

/// Retries per section; each retry drops one more unreadable value.
const MAX_RETRIES: usize = 64;

/// Top-level sections, in the order of the file's documentation.
pub const SECTIONS: &[&str] = &[
    "server",
    "database",
    "headers",
    "cors",
    "auth",
    "roles",
    "rate_limits",
    "encryption",
    "schemas",
    "resources",
    "routes",
    "audit",
    "backup",
];

/// Keys the published schema leaves out (secrets belong in the environment) but the file
/// may name, by the table that holds them.
const HIDDEN_KEYS: &[(&str, &str)] = &[
    ("session", "client_secret"),
    ("encryption", "keys"),
    ("rate_limits", "redis_password"),
];

/// Text that a variable may have turned into a number (`…_PASSWORD=12345`).
#[derive(Default, serde::Deserialize)]
struct Text(#[serde(deserialize_with = "super::lenient::opt_string")] Option<String>);

/// Reads sections and keeps the issues.
pub struct Reader<'a> {
    source: &'a ConfigSource,
    /// The file's JSON Schema, built the first time an unknown key needs suggestions.
    schema: Option<Value>,
    issues: Vec<Issue>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Seg {
    Key(String),
    Index(usize),
}

fn render(base: &str, segs: &[Seg]) -> String {
    let mut out = base.to_string();
    for s in segs {
        match s {
            Seg::Key(k) if out.is_empty() => out.push_str(k),
            Seg::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn ignored_segments(path: &serde_ignored::Path<'_>, out: &mut Vec<Seg>) {
    use serde_ignored::Path;
    match path {
        Path::Root => {}
        Path::Seq { parent, index } => {
            ignored_segments(parent, out);
            out.push(Seg::Index(*index));
        }
        Path::Map { parent, key } => {
            ignored_segments(parent, out);
            out.push(Seg::Key(key.clone()));
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => ignored_segments(parent, out),
    }
}

fn tracked_segments(path: &serde_path_to_error::Path) -> Vec<Seg> {
    use serde_path_to_error::Segment;
    path.iter()
        .filter_map(|s| match s {
            Segment::Seq { index } => Some(Seg::Index(*index)),
            Segment::Map { key } => Some(Seg::Key(key.clone())),
            Segment::Enum { .. } | Segment::Unknown => None,
        })
        .collect()
}

/// Drops the value at `segs` so the section can be read again. An element of an array
/// takes its whole array with it (dropping one element would renumber the others).
fn remove(value: &mut Value, segs: &[Seg]) -> bool {
    let Some((last, parents)) = segs.split_last() else {
        return false;
    };
    if let Seg::Index(_) = last {
        return remove(value, parents);
    }
    let mut at = value;
    for s in parents {
        let next = match (s, at) {
            (Seg::Key(k), Value::Object(m)) => m.get_mut(k),
            (Seg::Index(i), Value::Array(a)) => a.get_mut(*i),
            _ => None,
        };
        match next {
            Some(v) => at = v,
            None => return false,
        }
    }
    match (last, at) {
        (Seg::Key(k), Value::Object(m)) => m.remove(k).is_some(),
        _ => false,
    }
}

impl<'a> Reader<'a> {
    /// A reader reporting against `source` (for telling file keys from variables).
    pub fn new(source: &'a ConfigSource) -> Self {
        Self {
            source,
            schema: None,
            issues: Vec::new(),
        }
    }

    /// Every issue found, in the order found.
    pub fn into_issues(self) -> Vec<Issue> {
        self.issues
    }

    /// The whole configuration.
    pub fn config(&mut self, merged: Value) -> RawConfig {
        let mut raw = RawConfig::default();
        let Value::Object(root) = merged else {
            return raw;
        };
        for (key, value) in root {
            match key.as_str() {
                "server" => raw.server = self.read(value, "server"),
                "database" => raw.database = self.read(value, "database"),
                "headers" => raw.headers = self.read(value, "headers"),
                "cors" => raw.cors = self.read(value, "cors"),
                "auth" => raw.auth = self.read(value, "auth"),
                "roles" => raw.roles = self.map(value, "roles"),
                "rate_limits" => raw.rate_limits = self.rate_limits(value),
                "encryption" => raw.encryption = self.read(value, "encryption"),
                "audit" => raw.audit = self.read(value, "audit"),
                "backup" => raw.backup = self.read(value, "backup"),
                "schemas" => {
                    if let Some(tables) = self.table(value, "schemas") {
                        for (name, fields) in tables {
                            let fields = self.map(fields, &format!("schemas.{name}"));
                            raw.schemas.insert(name, fields);
                        }
                    }
                }
                "resources" => raw.resources = self.map(value, "resources"),
                "routes" => match value {
                    Value::Array(items) => {
                        raw.routes = items
                            .into_iter()
                            .enumerate()
                            .map(|(i, v)| self.read(v, &format!("routes[{i}]")))
                            .collect();
                    }
                    _ => self.wrong_type("routes", "expected an array of tables: [[routes]]"),
                },
                _ => self.unknown("", &key, SECTIONS.iter().map(|s| s.to_string()).collect()),
            }
        }
        raw
    }

    /// `[rate_limits]`: `backend`, the Redis keys, `dangerous_clock_offset`, and every other
    /// key a policy table.
    fn rate_limits(&mut self, value: Value) -> RawRateLimits {
        let mut out = RawRateLimits::default();
        let Some(tables) = self.table(value, "rate_limits") else {
            return out;
        };
        let policy_keys: Vec<String> = [
            "backend",
            "redis_url",
            "redis_password",
            "redis_timeout",
            "on_backend_error",
            "dangerous_clock_offset",
        ]
        .map(String::from)
        .to_vec();
        for (name, v) in tables {
            let path = format!("rate_limits.{name}");
            match name.as_str() {
                "backend" => out.backend = self.read(v, &path),
                "redis_url" => out.redis_url = self.read::<Text>(v, &path).0,
                "redis_password" => out.redis_password = self.read::<Text>(v, &path).0,
                "redis_timeout" => out.redis_timeout = self.read(v, &path),
                "on_backend_error" => out.on_backend_error = self.read(v, &path),
                "dangerous_clock_offset" => {
                    out.dangerous_clock_offset = self.read::<Text>(v, &path).0;
                }
                _ if !v.is_object() => {
                    // Not a policy table: most likely a misspelt key above.
                    let suggestion = crate::suggest::closest(&name, &policy_keys);
                    let message = match &suggestion {
                        Some(_) => "unknown key".to_string(),
                        None => "a policy is a table: [rate_limits.NAME] with per_second, per_minute or per_hour".to_string(),
                    };
                    self.push(IssueKind::UnknownKey, path, message, suggestion);
                }
                _ => {
                    let policy = self.read(v, &path);
                    out.policies.insert(name, policy);
                }
            }
        }
        out
    }

    /// A table of named entries, each read on its own.
    fn map<T: DeserializeOwned + Default>(
        &mut self,
        value: Value,
        base: &str,
    ) -> BTreeMap<String, T> {
        let Some(tables) = self.table(value, base) else {
            return BTreeMap::new();
        };
        tables
            .into_iter()
            .map(|(name, v)| {
                let entry = self.read(v, &format!("{base}.{name}"));
                (name, entry)
            })
            .collect()
    }

    fn table(&mut self, value: Value, base: &str) -> Option<serde_json::Map<String, Value>> {
        match value {
            Value::Object(m) => Some(m),
            _ => {
                self.wrong_type(base, "expected a table");
                None
            }
        }
    }

    /// Reads one value; every unknown key and every unreadable value is reported, and the
    /// unreadable ones fall back to their defaults.
    pub fn read<T: DeserializeOwned + Default>(&mut self, mut value: Value, base: &str) -> T {
        let mut reported: BTreeSet<Vec<Seg>> = BTreeSet::new();
        for _ in 0..MAX_RETRIES {
            let mut ignored: Vec<Vec<Seg>> = Vec::new();
            let mut track = serde_path_to_error::Track::new();
            let result: Result<T, serde_json::Error> = {
                let de = serde_path_to_error::Deserializer::new(&value, &mut track);
                serde_ignored::deserialize(de, |p: serde_ignored::Path<'_>| {
                    let mut segs = Vec::new();
                    ignored_segments(&p, &mut segs);
                    ignored.push(segs);
                })
            };
            for segs in ignored {
                if reported.insert(segs.clone()) {
                    self.unknown_at(base, &segs);
                }
            }
            match result {
                Ok(t) => return t,
                Err(e) => {
                    let segs = tracked_segments(&track.path());
                    let path = render(base, &segs);
                    let message = e.to_string();
                    let kind = if message.starts_with("missing field") {
                        IssueKind::MissingKey
                    } else {
                        IssueKind::WrongType
                    };
                    let message = message.replace("missing field", "missing key");
                    self.push(kind, path, message, None);
                    if !remove(&mut value, &segs) {
                        return T::default();
                    }
                }
            }
        }
        T::default()
    }

    fn wrong_type(&mut self, path: &str, message: &str) {
        self.push(
            IssueKind::WrongType,
            path.to_string(),
            message.to_string(),
            None,
        );
    }

    fn unknown_at(&mut self, base: &str, segs: &[Seg]) {
        let Some((Seg::Key(key), parents)) = segs.split_last() else {
            return;
        };
        let parent = render(base, parents);
        let candidates = self.expected(&parent);
        self.unknown(&parent, key, candidates);
    }

    /// Reports `parent.key` as unknown, suggesting the nearest of `candidates` (or, for a
    /// key set by a variable, the variable meant).
    fn unknown(&mut self, parent: &str, key: &str, mut candidates: Vec<String>) {
        let path = if parent.is_empty() {
            key.to_string()
        } else {
            format!("{parent}.{key}")
        };
        let last = parent.rsplit(['.', '[']).next().unwrap_or(parent);
        for (table, hidden) in HIDDEN_KEYS {
            if *table == last {
                candidates.push(hidden.to_string());
            }
        }
        candidates.sort();
        candidates.dedup();
        let near = crate::suggest::closest(key, &candidates);
        let env: Option<EnvEntry> = match self.source.map.get(&path) {
            Some(_) => None,
            None => self
                .source
                .env_for(&path)
                .or_else(|| self.source.env_under(&path))
                .cloned(),
        };
        let (message, suggestion) = match env {
            Some(e) => {
                let meant = near.as_ref().and_then(|n| meant_var(&e, &path, n));
                (format!("unknown key (set by {})", e.var), meant)
            }
            None if near.is_some() || candidates.is_empty() => ("unknown key".to_string(), near),
            None => (
                format!("unknown key (expected one of: {})", candidates.join(", ")),
                None,
            ),
        };
        self.push(IssueKind::UnknownKey, path, message, suggestion);
    }

    fn push(&mut self, kind: IssueKind, path: String, message: String, suggestion: Option<String>) {
        self.issues.push(Issue {
            kind,
            path,
            message,
            suggestion,
        });
    }

    /// The keys the table at `path` accepts, from the file's JSON Schema.
    fn expected(&mut self, path: &str) -> Vec<String> {
        let schema = self.schema.get_or_insert_with(|| {
            serde_json::to_value(schemars::schema_for!(RawConfig)).unwrap_or_default()
        });
        super::keys::expected(schema, path)
    }
}

/// `NESTFLUX_SERVR__BIND` with `servr` meant as `server` → `NESTFLUX_SERVER__BIND`.
fn meant_var(e: &EnvEntry, path: &str, meant: &str) -> Option<String> {
    let depth = path.matches('.').count();
    let rest = e.var.strip_prefix("NESTFLUX_")?;
    let rest = rest.strip_suffix("_FILE").unwrap_or(rest);
    let mut parts: Vec<String> = rest.split("__").map(str::to_string).collect();
    *parts.get_mut(depth)? = meant.to_ascii_uppercase();
    let suffix = if e.from_file { "_FILE" } else { "" };
    Some(format!("NESTFLUX_{}{suffix}", parts.join("__")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(toml: &str) -> (RawConfig, Vec<Issue>) {
        let merged: Value = toml::from_str(toml).unwrap();
        let source = ConfigSource::default();
        let mut r = Reader::new(&source);
        let raw = r.config(merged);
        (raw, r.into_issues())
    }

    fn paths(issues: &[Issue]) -> Vec<(&str, IssueKind, Option<&str>)> {
        issues
            .iter()
            .map(|i| (i.path.as_str(), i.kind, i.suggestion.as_deref()))
            .collect()
    }

    #[test]
    fn every_unknown_key_and_bad_value_at_once() {
        use IssueKind::*;
        let (raw, issues) = read(
            r#"
servr = 1
[server]
bnd = "x"
workers = "many"
body_limit = "2MiB"
[server.tls]
cert = "c.pem"
[auth.session]
client_secrt = "x"
[rate_limits]
backnd = "redis"
[rate_limits.writes]
per_minte = 3
per_minute = 60
[schemas.Note]
title = { type = "string", maxlen = 3 }
[[routes]]
method = "GET"
permision = "notes:read"
public = "yes"
[[routes]]
method = "POST"
"#,
        );
        let mut found = paths(&issues);
        found.sort_by_key(|f| f.0);
        assert_eq!(
            found,
            [
                (
                    "auth.session.client_secrt",
                    UnknownKey,
                    Some("client_secret")
                ),
                ("rate_limits.backnd", UnknownKey, Some("backend")),
                (
                    "rate_limits.writes.per_minte",
                    UnknownKey,
                    Some("per_minute")
                ),
                ("routes[0].permision", UnknownKey, Some("permission")),
                ("routes[0].public", WrongType, None),
                ("schemas.Note.title.maxlen", UnknownKey, None),
                ("server.bnd", UnknownKey, Some("bind")),
                ("server.tls", MissingKey, None),
                ("server.workers", WrongType, None),
                ("servr", UnknownKey, Some("server")),
            ]
        );
        // What could be read was kept.
        assert_eq!(raw.server.body_limit, "2MiB");
        assert_eq!(raw.routes.len(), 2);
        assert_eq!(raw.routes[0].method, "GET");
        assert!(!raw.routes[0].public);
        assert_eq!(raw.routes[1].method, "POST");
        assert_eq!(raw.rate_limits.policies.len(), 1);
        let public = issues
            .iter()
            .find(|i| i.path == "routes[0].public")
            .unwrap();
        assert!(public.message.contains("invalid type"), "{public:?}");
    }

    #[test]
    fn variables_are_suggested_as_variables() {
        let e = EnvEntry {
            key: "servr.bind".into(),
            var: "NESTFLUX_SERVR__BIND".into(),
            from_file: false,
            value: String::new(),
        };
        assert_eq!(
            meant_var(&e, "servr", "server").as_deref(),
            Some("NESTFLUX_SERVER__BIND")
        );
    }
}
