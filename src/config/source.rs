//! Where each value came from: a map from key path (`routes[3].rate_limit`) to its byte
//! range in the file, built from the spans the TOML parser keeps, and the `NESTFLUX_*`
//! variables that set keys. Diagnostics use it to print `FILE:LINE:COL` with the line and a
//! caret, or the name of the variable.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use toml_edit::{ImDocument, Item, Table, Value};

/// Byte ranges of one key in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spans {
    /// The key itself (`permision` in `permision = "x"`), or the header of a table.
    pub key: Option<Range<usize>>,
    /// The value (`"x"`), or the header of a table.
    pub value: Option<Range<usize>>,
}

/// Key path → spans: the parsed file, looked up on demand (a file of hundreds of keys is
/// compiled far more often than it has something to point at).
#[derive(Debug, Clone, Default)]
pub struct SourceMap {
    doc: Option<Arc<ImDocument<String>>>,
    /// One path with a fixed span, for a file that does not parse.
    single: Option<(String, Range<usize>)>,
}

/// The first line of `span` in `text` (a table's span covers its whole body; its header
/// is what a diagnostic about the table points at).
fn first_line(text: &str, span: Range<usize>) -> Range<usize> {
    let end = text
        .get(span.clone())
        .and_then(|s| s.find('\n'))
        .map_or(span.end, |i| span.start + i);
    span.start..end
}

enum Seg<'p> {
    Key(&'p str),
    Index(usize),
}

/// `routes[2].permission` → `routes`, `[2]`, `permission`.
fn segments(path: &str) -> Option<Vec<Seg<'_>>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (name, mut rest) = part.split_at(part.find('[').unwrap_or(part.len()));
        if !name.is_empty() {
            out.push(Seg::Key(name));
        }
        while let Some(r) = rest.strip_prefix('[') {
            let (i, after) = r.split_once(']')?;
            out.push(Seg::Index(i.parse().ok()?));
            rest = after;
        }
    }
    Some(out)
}

/// A place in the parsed document.
enum Node<'d> {
    Item(&'d Item),
    /// A table of an array of tables.
    Table(&'d Table),
    /// An array element or an inline table's value.
    Value(&'d Value),
}

impl SourceMap {
    /// The map of a parsed document.
    pub fn of(doc: ImDocument<String>) -> Self {
        Self {
            doc: Some(Arc::new(doc)),
            single: None,
        }
    }

    /// A map of one path, for a file that does not parse: the parser's error span.
    pub fn single(path: &str, span: Range<usize>) -> Self {
        Self {
            doc: None,
            single: Some((path.to_string(), span)),
        }
    }

    /// The parsed document, when the file parsed.
    pub fn document(&self) -> Option<&ImDocument<String>> {
        self.doc.as_deref()
    }

    /// The spans of exactly `path`, if the file declares it.
    pub fn get(&self, path: &str) -> Option<Spans> {
        if let Some((p, span)) = &self.single {
            return (p == path).then(|| Spans {
                key: Some(span.clone()),
                value: Some(span.clone()),
            });
        }
        let doc = self.doc.as_deref()?;
        let text = doc.raw();
        let mut node = Node::Table(doc.as_table());
        let mut key: Option<Range<usize>> = None;
        let segs = segments(path)?;
        if segs.is_empty() {
            return None;
        }
        for seg in segs {
            node = match (seg, node) {
                (Seg::Key(k), Node::Item(Item::Table(t)) | Node::Table(t)) => {
                    let (k, item) = t.get_key_value(k)?;
                    key = k.span();
                    Node::Item(item)
                }
                (
                    Seg::Key(k),
                    Node::Item(Item::Value(Value::InlineTable(t)))
                    | Node::Value(Value::InlineTable(t)),
                ) => {
                    let (k, item) = t.get_key_value(k)?;
                    key = k.span();
                    match item {
                        Item::Value(v) => Node::Value(v),
                        other => Node::Item(other),
                    }
                }
                (Seg::Index(i), Node::Item(Item::ArrayOfTables(a))) => {
                    key = None;
                    Node::Table(a.get(i)?)
                }
                (
                    Seg::Index(i),
                    Node::Item(Item::Value(Value::Array(a))) | Node::Value(Value::Array(a)),
                ) => {
                    key = None;
                    Node::Value(a.get(i)?)
                }
                _ => return None,
            };
        }
        let spans = match node {
            Node::Item(Item::None) => return None,
            Node::Item(Item::Value(v)) => Spans {
                key: key.or_else(|| v.span()),
                value: v.span(),
            },
            Node::Item(Item::Table(t)) => {
                // An implicit table (`[auth.dev]` without `[auth]`) has no header: its key.
                let header = t
                    .span()
                    .map(|s| first_line(text, s))
                    .or_else(|| key.clone());
                Spans {
                    key: key.or_else(|| header.clone()),
                    value: header,
                }
            }
            Node::Item(Item::ArrayOfTables(a)) => Spans {
                key: key.or_else(|| a.span()),
                value: a.span(),
            },
            Node::Table(t) => {
                let header = t.span().map(|s| first_line(text, s));
                Spans {
                    key: header.clone(),
                    value: header,
                }
            }
            Node::Value(v) => Spans {
                key: key.or_else(|| v.span()),
                value: v.span(),
            },
        };
        Some(spans)
    }
}

/// The path one level up: `routes[3].rate_limit` → `routes[3]` → `routes` → none.
pub fn parent(path: &str) -> Option<&str> {
    let cut = path.rfind(['.', '['])?;
    Some(&path[..cut])
}

/// A key set by a `NESTFLUX_*` variable. The value is kept only so messages can be
/// scrubbed of it; it is never printed (`Debug` hides it).
#[derive(Clone)]
pub struct EnvEntry {
    /// The dotted key path it sets, e.g. `auth.leeway`.
    pub key: String,
    /// The variable, e.g. `NESTFLUX_AUTH__LEEWAY` or `NESTFLUX_AUTH__LEEWAY_FILE`.
    pub var: String,
    /// The value was read from the file a `…_FILE` variable names.
    pub from_file: bool,
    /// The value as given (for `_FILE`, the file's content without its final newline).
    pub value: String,
}

impl fmt::Debug for EnvEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnvEntry")
            .field("key", &self.key)
            .field("var", &self.var)
            .field("from_file", &self.from_file)
            .finish_non_exhaustive()
    }
}

impl EnvEntry {
    /// Whether a message may repeat the value: never for `_FILE` values, and for plain
    /// variables only when the key cannot hold a secret.
    pub fn may_echo(&self) -> bool {
        !self.from_file && !may_hold_secret(&self.key)
    }
}

/// Keys whose value can be (or contain) a secret: passwords in URLs, keys, client secrets,
/// and the API-key `hash`, where a key itself is sometimes pasted by mistake.
pub fn may_hold_secret(path: &str) -> bool {
    let last = path.rsplit(['.', '[']).next().unwrap_or(path);
    matches!(
        last,
        "client_secret" | "keys" | "url" | "redis_url" | "hash"
    ) || ["secret", "password", "token", "key"]
        .iter()
        .any(|w| last.contains(w) && last != "roles_claim")
}

/// Where the value at a path came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A byte range of the file.
    File(Range<usize>),
    /// A `NESTFLUX_*` variable.
    Env {
        /// The variable's name.
        var: String,
        /// Set through `…_FILE`.
        from_file: bool,
    },
    /// Neither: a built-in default, or a key the file leaves out in a table it does not
    /// declare.
    Default,
}

/// Where the configuration came from: the file (its text and spans) and the variables.
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    /// The file that was read.
    pub path: PathBuf,
    /// Config keys set from the environment, e.g. `server.bind`.
    pub env_keys: Vec<String>,
    /// The file's text, as parsed.
    pub text: String,
    /// Spans of the file's keys and values.
    pub map: SourceMap,
    /// Every key set by a variable.
    pub env: Vec<EnvEntry>,
}

impl ConfigSource {
    /// The variable that set `path` or one of its parents, if any.
    pub fn env_for(&self, path: &str) -> Option<&EnvEntry> {
        self.env.iter().find(|e| covers(&e.key, path))
    }

    /// A variable that set a key inside `path` (`NESTFLUX_SERVR__BIND` for `servr`).
    pub fn env_under(&self, path: &str) -> Option<&EnvEntry> {
        self.env.iter().find(|e| covers(path, &e.key))
    }

    /// Where the value at `path` came from. With `key`, a file location points at the key
    /// rather than its value (for unknown keys). A path the file does not declare points
    /// at the nearest parent it does declare.
    pub fn origin(&self, path: &str, key: bool) -> Origin {
        if let Some(e) = self.env_for(path) {
            return Origin::Env {
                var: e.var.clone(),
                from_file: e.from_file,
            };
        }
        if let Some(s) = self.map.get(path) {
            let span = if key {
                s.key.clone().or_else(|| s.value.clone())
            } else {
                s.value.clone().or_else(|| s.key.clone())
            };
            if let Some(span) = span {
                return Origin::File(span);
            }
        }
        if let Some(e) = self.env_under(path) {
            return Origin::Env {
                var: e.var.clone(),
                from_file: e.from_file,
            };
        }
        let mut at = path;
        while let Some(up) = parent(at) {
            // A parent table: its header (its value span); an implicit one: its key.
            if let Some(span) = self
                .map
                .get(up)
                .and_then(|s| s.value.clone().or(s.key.clone()))
            {
                return Origin::File(span);
            }
            at = up;
        }
        Origin::Default
    }
}

/// Whether a key set at `set` covers `path` (the same key or one inside it).
fn covers(set: &str, path: &str) -> bool {
    path == set
        || path
            .strip_prefix(set)
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"[server]
bind = "127.0.0.1:8080"

[auth.dev]
enabled = true

[schemas.Note]
title = { type = "string", max_length = 200 }
tags = { type = "array", items = { type = "string" } }

[[routes]]
method = "GET"
path = "/health"

[[routes]]
method = "POST"
rate_limit = "write"
"#;

    fn at(text: &str, span: Option<Range<usize>>) -> &str {
        &text[span.unwrap()]
    }

    #[test]
    fn every_key_has_its_span() {
        let map = SourceMap::of(ImDocument::parse(TEXT.to_string()).unwrap());
        let s = map.get("server.bind").unwrap();
        assert_eq!(at(TEXT, s.key.clone()), "bind");
        assert_eq!(at(TEXT, s.value.clone()), "\"127.0.0.1:8080\"");
        assert_eq!(
            at(TEXT, map.get("server").unwrap().value.clone()),
            "[server]"
        );
        assert_eq!(
            at(TEXT, map.get("auth.dev.enabled").unwrap().value.clone()),
            "true"
        );
        assert!(map.get("auth").is_some());
        let title = map.get("schemas.Note.title.max_length").unwrap();
        assert_eq!(at(TEXT, title.key.clone()), "max_length");
        assert_eq!(at(TEXT, title.value.clone()), "200");
        assert_eq!(
            at(
                TEXT,
                map.get("schemas.Note.tags.items.type")
                    .unwrap()
                    .value
                    .clone()
            ),
            "\"string\""
        );
        let route = map.get("routes[1]").unwrap();
        assert_eq!(at(TEXT, route.key.clone()), "[[routes]]");
        assert_eq!(
            at(TEXT, map.get("routes[1].rate_limit").unwrap().value.clone()),
            "\"write\""
        );
    }

    #[test]
    fn origins_prefer_the_environment_then_the_nearest_declared_key() {
        let source = ConfigSource {
            text: TEXT.into(),
            map: SourceMap::of(ImDocument::parse(TEXT.to_string()).unwrap()),
            env: vec![EnvEntry {
                key: "auth.leeway".into(),
                var: "NESTFLUX_AUTH__LEEWAY".into(),
                from_file: false,
                value: "1h".into(),
            }],
            ..ConfigSource::default()
        };
        assert_eq!(
            source.origin("auth.leeway", false),
            Origin::Env {
                var: "NESTFLUX_AUTH__LEEWAY".into(),
                from_file: false
            }
        );
        assert!(source.env_for("auth.leewayx").is_none());
        let Origin::File(span) = source.origin("routes[1].permission", false) else {
            panic!("no origin")
        };
        assert!(TEXT[span].starts_with("[[routes]]"));
        let Origin::File(span) = source.origin("routes[0].method", true) else {
            panic!("no origin")
        };
        assert_eq!(&TEXT[span], "method");
        assert_eq!(source.origin("database.url", false), Origin::Default);
    }

    #[test]
    fn secret_keys() {
        for k in [
            "database.url",
            "encryption.keys",
            "auth.session.client_secret",
            "rate_limits.redis_url",
            "auth.api_keys.ci.hash",
        ] {
            assert!(may_hold_secret(k), "{k}");
        }
        for k in [
            "auth.leeway",
            "server.bind",
            "auth.roles_claim",
            "headers.x_frame_options",
        ] {
            assert!(!may_hold_secret(k), "{k}");
        }
    }
}
