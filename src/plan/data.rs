//! Compiles `[database]`, `[encryption]` and `[resources]`: where data lives, the key ring's
//! shape, and per resource field what the store, the actions and OpenAPI must do with it
//! (encrypted, blind-indexed, guarded by a permission, sortable, filterable), decided once.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use super::Profile;
use super::diag::{Code, Diagnostic, Diagnostics};
use super::is_name;
use super::roles::Permission;
use crate::config::{RawDatabase, RawEncryption, RawField, RawResource};
use crate::validate::{CompiledField, FieldType, Schemas};

/// Where data lives. The PostgreSQL URL may carry a password and stays out of `Debug`.
#[derive(Clone)]
pub enum DatabaseUrl {
    /// An SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL URL (may hold a password).
    Postgres(String),
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseUrl::Sqlite(p) => write!(f, "sqlite://{}", p.display()),
            DatabaseUrl::Postgres(_) => f.write_str("postgres://<redacted>"),
        }
    }
}

/// `[database]`, checked.
#[derive(Debug, Clone)]
pub struct DatabasePlan {
    /// Where data lives.
    pub url: DatabaseUrl,
    /// Connections in the pool.
    pub pool_size: u32,
    /// How long to wait for a connection or a lock before answering 503.
    pub busy_timeout: std::time::Duration,
    /// SQLite: writes that may wait for the writer before new ones are refused (503).
    pub write_queue: usize,
    /// How often a subject's `last_seen` may move.
    pub last_seen_interval: std::time::Duration,
}

/// Checks `[database]`; the URL is never echoed (it may hold a password).
pub fn compile_database(raw: &RawDatabase, d: &mut Diagnostics) -> DatabasePlan {
    let url = if let Some(path) = raw.url.strip_prefix("sqlite://") {
        if path.is_empty() {
            d.error(
                "database.url",
                "sqlite:// needs a file path, e.g. sqlite://nestflux.db",
            );
        }
        DatabaseUrl::Sqlite(PathBuf::from(path))
    } else if raw.url.starts_with("postgres://") || raw.url.starts_with("postgresql://") {
        DatabaseUrl::Postgres(raw.url.clone())
    } else {
        // Never echo the URL: it may hold a password.
        d.error(
            "database.url",
            "expected sqlite://PATH or postgres://USER@HOST/DB",
        );
        DatabaseUrl::Sqlite(PathBuf::from("nestflux.db"))
    };
    if raw.pool_size == 0 || raw.pool_size > 1000 {
        d.error("database.pool_size", "must be between 1 and 1000");
    }
    let busy_timeout = match super::units::duration(&raw.busy_timeout) {
        Ok(t) if !t.is_zero() && t <= std::time::Duration::from_secs(60) => t,
        Ok(_) => {
            d.error("database.busy_timeout", "must be between 1ms and 60s");
            std::time::Duration::from_secs(5)
        }
        Err(e) => {
            d.error("database.busy_timeout", e);
            std::time::Duration::from_secs(5)
        }
    };
    if raw.write_queue == 0 || raw.write_queue > 1_000_000 {
        d.error("database.write_queue", "must be between 1 and 1000000");
    }
    let last_seen_interval = match super::units::duration(&raw.last_seen_interval) {
        Ok(t)
            if t >= std::time::Duration::from_secs(1)
                && t <= std::time::Duration::from_secs(86_400) =>
        {
            t
        }
        Ok(_) => {
            d.error("database.last_seen_interval", "must be between 1s and 1d");
            std::time::Duration::from_secs(60)
        }
        Err(e) => {
            d.error("database.last_seen_interval", e);
            std::time::Duration::from_secs(60)
        }
    };
    DatabasePlan {
        url,
        pool_size: raw.pool_size.clamp(1, 1000),
        busy_timeout,
        write_queue: raw.write_queue.clamp(1, 1_000_000),
        last_seen_interval,
    }
}

/// The key ring from `NESTFLUX_ENCRYPTION__KEYS`: its shape is checked here, the keys are
/// loaded once by the crypto layer (zeroized on drop, `Debug` shows key ids only) and shared
/// by every worker.
#[derive(Debug, Clone, Default)]
pub struct EncryptionPlan {
    /// First encrypts, all decrypt.
    pub key_ids: Vec<String>,
    /// `None` when no keys are configured.
    pub ring: Option<std::sync::Arc<crate::crypto::KeyRing>>,
    /// Outside production, with encrypted fields declared and no keys configured: the file
    /// holding the development key, which the runtime loads or creates once
    /// (`crypto::dev_key`) and puts in `ring`. Never set under production.
    pub dev_key: Option<PathBuf>,
}

/// Name of the development key file kept beside a PostgreSQL service's config file.
pub const DEV_KEY_FILE: &str = "nestflux.dev-key";

/// Where the development key lives: beside the SQLite file (`nestflux.db.dev-key`), or for
/// PostgreSQL beside the config file (`nestflux.dev-key`), which is where the service's own
/// state lives when the data does not.
pub fn dev_key_path(db: &DatabasePlan, config_dir: &std::path::Path) -> PathBuf {
    match &db.url {
        DatabaseUrl::Sqlite(file) => {
            let mut name = file.as_os_str().to_os_string();
            name.push(".dev-key");
            PathBuf::from(name)
        }
        DatabaseUrl::Postgres(_) => config_dir.join(DEV_KEY_FILE),
    }
}

/// Checks the shape of `NESTFLUX_ENCRYPTION__KEYS` and loads the key ring.
pub fn compile_encryption(raw: Option<&RawEncryption>, d: &mut Diagnostics) -> EncryptionPlan {
    let Some(keys) = raw.and_then(|e| e.keys.as_deref()) else {
        return EncryptionPlan::default();
    };
    match crate::crypto::KeyRing::parse_all(keys) {
        Ok(ring) => EncryptionPlan {
            key_ids: ring.kids().map(str::to_string).collect(),
            ring: Some(std::sync::Arc::new(ring)),
            dev_key: None,
        },
        Err(problems) => {
            for (i, what) in problems {
                d.error(format!("encryption.keys[{i}]"), what);
            }
            EncryptionPlan::default()
        }
    }
}

/// The member of a record that names fields its reader may read but that could not be read
/// (`[{field, code}]`). Field names start with a letter, so it never collides with one.
pub const ERRORS_KEY: &str = "_errors";

/// Columns the server sets on every record; a schema cannot declare a field of these names.
pub const SERVER_COLUMNS: [&str; 4] = ["id", "owner", "created_at", "updated_at"];

/// Table names NestFlux keeps for itself.
pub const RESERVED_TABLE_PREFIX: &str = "nestflux_";

/// A resource name from the file (also its table name).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceName(pub String);

/// Items a list returns when the request names no `limit`.
pub const DEFAULT_LIMIT: usize = 50;

/// The largest `limit` a list accepts.
pub const MAX_LIMIT: usize = 200;

/// Query parameters of a list that are not filters: a field with one of these names cannot
/// be filtered on by equality.
pub const LIST_CONTROLS: [&str; 3] = ["limit", "cursor", "sort"];

/// `[resources.NAME]`, checked against its schema.
#[derive(Debug, Clone)]
pub struct ResourcePlan {
    /// The resource's name, also its table's.
    pub name: ResourceName,
    /// The schema of one record.
    pub schema: String,
    /// Rows record the subject who created them (`:own` permissions apply).
    pub owner: bool,
    /// One entry per schema field, ordered by name like the schema's fields.
    pub fields: Vec<FieldPlan>,
    /// What a list request may ask for.
    pub list: ListPlan,
}

/// What the plan decided about one field of a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPlan {
    /// The field's name (also its column's).
    pub name: String,
    /// The field's type, which decides its column's type.
    pub ty: FieldType,
    /// Stored as `nf1:` ciphertext bound to resource, field and row.
    pub encrypted: bool,
    /// Encrypted and also indexed by an HMAC, so `?field=value` can filter on it.
    pub blind_index: bool,
    /// The permission needed to read or write the field (`field_permissions`).
    pub permission: Option<Permission>,
    /// A list may sort by it: one scalar value that is never NULL, readable by every
    /// caller of the list, not encrypted, and (for text) short.
    pub sortable: bool,
    /// Why a list may not sort by it, for the 422 that refuses it.
    pub sort_refusal: Option<&'static str>,
    /// `?field=value` may filter a list on it: a scalar, short if text, and if encrypted
    /// only through its blind index (equality on an HMAC).
    pub filterable: bool,
    /// Why a list may not filter on it.
    pub filter_refusal: Option<&'static str>,
}

/// Text sort and filter keys are at most this many characters: longer ones would make
/// cursors large and the `(field, id)` indexes large and slow.
pub const MAX_KEY_CHARS: u64 = 256;

const LONG_TEXT: &str = "text that may be longer than 256 characters (a larger or missing max_length) is not indexed: cursors and indexes stay small";

impl FieldPlan {
    fn new(f: &CompiledField, r: &RawResource, permission: Option<Permission>) -> Self {
        let name = f.name();
        let encrypted = r.encrypted.iter().any(|e| e == name);
        let blind_index = encrypted && r.blind_index.iter().any(|e| e == name);
        let text = matches!(f.field_type(), FieldType::String | FieldType::Enum);
        let long_text = text && f.max_chars().is_none_or(|n| n > MAX_KEY_CHARS);
        // Never sort by a field some readers may not see: the order itself, and the cursor
        // that carries the last value, would reveal it.
        let sort_refusal = if !f.is_scalar() {
            Some("arrays and objects have no order")
        } else if f.is_optional() || f.is_nullable() {
            Some("it may be absent or null, which keyset paging cannot order")
        } else if encrypted {
            Some("it is encrypted")
        } else if permission.is_some() {
            Some("it is guarded by a field permission, and the order would reveal it")
        } else if long_text {
            Some(LONG_TEXT)
        } else {
            None
        };
        let filter_refusal = if !f.is_scalar() {
            Some("arrays and objects cannot be compared for equality")
        } else if LIST_CONTROLS.contains(&name) {
            Some("its name is a list parameter")
        } else if encrypted && !blind_index {
            Some("it is encrypted without a blind index")
        } else if long_text && !encrypted {
            Some(LONG_TEXT)
        } else {
            None
        };
        Self {
            name: name.to_string(),
            ty: f.field_type(),
            encrypted,
            blind_index,
            permission,
            sortable: sort_refusal.is_none(),
            sort_refusal,
            filterable: filter_refusal.is_none(),
            filter_refusal,
        }
    }
}

/// The list rules of one resource, compiled once for the action and for OpenAPI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPlan {
    /// Items returned without `limit`.
    pub default_limit: usize,
    /// The largest `limit` accepted.
    pub max_limit: usize,
    /// What `sort` may name: `id`, `created_at`, `updated_at`, then the sortable fields.
    pub sortable: Vec<String>,
}

impl ListPlan {
    fn new(fields: &[FieldPlan]) -> Self {
        let mut sortable: Vec<String> = ["id", "created_at", "updated_at"]
            .map(String::from)
            .to_vec();
        sortable.extend(fields.iter().filter(|f| f.sortable).map(|f| f.name.clone()));
        Self {
            default_limit: DEFAULT_LIMIT,
            max_limit: MAX_LIMIT,
            sortable,
        }
    }

    /// Whether `sort` may name `field`.
    pub fn can_sort(&self, field: &str) -> bool {
        self.sortable.iter().any(|s| s == field)
    }
}

impl ResourcePlan {
    /// The field called `name`.
    pub fn field(&self, name: &str) -> Option<&FieldPlan> {
        self.fields
            .binary_search_by(|f| f.name.as_str().cmp(name))
            .ok()
            .and_then(|i| self.fields.get(i))
    }

    /// The permission guarding field `name`, if any.
    pub fn permission(&self, name: &str) -> Option<&Permission> {
        self.field(name).and_then(|f| f.permission.as_ref())
    }

    /// The guarded fields and their permissions, ordered by field name.
    pub fn guarded(&self) -> impl Iterator<Item = (&str, &Permission)> {
        self.fields
            .iter()
            .filter_map(|f| f.permission.as_ref().map(|p| (f.name.as_str(), p)))
    }

    /// Whether any field is encrypted.
    pub fn has_encrypted(&self) -> bool {
        self.fields.iter().any(|f| f.encrypted)
    }
}

/// Checks every `[resources.NAME]` against its (raw and compiled) schema and decides each
/// field's [`FieldPlan`].
pub fn compile_resources(
    raw: &BTreeMap<String, RawResource>,
    schemas: &BTreeMap<String, BTreeMap<String, RawField>>,
    compiled: &Schemas,
    encryption: &EncryptionPlan,
    profile: Profile,
    d: &mut Diagnostics,
) -> BTreeMap<ResourceName, ResourcePlan> {
    let mut out = BTreeMap::new();
    for (name, r) in raw {
        let path = format!("resources.{name}");
        if !is_name(name) || name.contains('-') {
            d.error_with(Code::InvalidName, &path, "resource names become table names: lowercase letters, digits and `_`, starting with a letter");
        } else if name.starts_with(RESERVED_TABLE_PREFIX) {
            d.error_with(
                Code::InvalidName,
                &path,
                format!(
                    "names starting with `{RESERVED_TABLE_PREFIX}` are reserved for internal tables"
                ),
            );
        }
        let schema = schemas.get(&r.schema);
        if schema.is_none() {
            d.unknown(
                Code::UnknownSchema,
                format!("{path}.schema"),
                "schema",
                &r.schema,
                schemas.keys(),
            );
        }
        let field = |f: &str| schema.and_then(|s| s.get(f));
        let no_field = |d: &mut Diagnostics, at: String, f: &str| {
            let meant = schema.and_then(|s| crate::suggest::closest(f, s.keys()));
            d.push_error(
                Diagnostic::new(at, format!("no field \"{f}\" in schema \"{}\"", r.schema))
                    .with_code(Code::UnknownField)
                    .with_suggestion(meant),
            );
        };
        for (i, f) in r.encrypted.iter().enumerate() {
            let fpath = format!("{path}.encrypted[{i}]");
            if r.encrypted[..i].contains(f) {
                d.error_with(Code::Duplicate, fpath, format!("\"{f}\" is listed twice"));
                continue;
            }
            match field(f) {
                None if schema.is_some() => no_field(d, fpath, f),
                Some(spec) if spec.ty.as_deref() != Some("string") => d.error(
                    fpath,
                    format!("\"{f}\" must be a string field to be encrypted"),
                ),
                _ => {}
            }
        }
        for (i, f) in r.blind_index.iter().enumerate() {
            let fpath = format!("{path}.blind_index[{i}]");
            if r.blind_index[..i].contains(f) {
                d.error_with(Code::Duplicate, fpath, format!("\"{f}\" is listed twice"));
            } else if schema.is_some() && field(f).is_none() {
                no_field(d, fpath, f);
            } else if !r.encrypted.contains(f) {
                d.error_with(
                    Code::Conflict,
                    fpath,
                    format!("\"{f}\" is not listed in encrypted"),
                );
            }
        }
        let mut field_permissions = BTreeMap::new();
        for (f, perm) in &r.field_permissions {
            let fpath = format!("{path}.field_permissions.{f}");
            if schema.is_some() && field(f).is_none() {
                no_field(d, fpath.clone(), f);
            }
            match Permission::parse(perm) {
                Ok(p) if p.own => d.error(&fpath, "name the permission without :own; holders of its :own form may use the field on their own rows"),
                Ok(p) => {
                    field_permissions.insert(f.clone(), p);
                }
                Err(e) => d.error(&fpath, e),
            }
        }
        if !r.encrypted.is_empty() && encryption.key_ids.is_empty() {
            let tolerated = match &encryption.dev_key {
                Some(file) => format!(
                    "NESTFLUX_ENCRYPTION__KEYS is not set: the development key in {} encrypts these fields ({}); anyone who can read that file can decrypt them, so set the variable before real data goes in (production refuses to start without it)",
                    file.display(),
                    if file.exists() {
                        "it exists"
                    } else {
                        "created on first start, mode 0600"
                    }
                ),
                None => "NESTFLUX_ENCRYPTION__KEYS is not set: routes of this resource answer 503 until it is".to_string(),
            };
            d.refuse_in_production(
                profile,
                Diagnostic::new(
                    format!("{path}.encrypted"),
                    "encrypted fields are declared but NESTFLUX_ENCRYPTION__KEYS is not set; production never uses a development key file (it would sit beside the data it protects): set NESTFLUX_ENCRYPTION__KEYS or NESTFLUX_ENCRYPTION__KEYS_FILE (`nestflux keys generate` prints a key)",
                )
                .with_code(Code::EncryptionKeys),
                Diagnostic::new(format!("{path}.encrypted"), tolerated)
                    .with_code(Code::EncryptionKeys),
            );
        }
        let fields: Vec<FieldPlan> = compiled
            .get(&r.schema)
            .map(|s| {
                s.fields()
                    .iter()
                    .map(|f| FieldPlan::new(f, r, field_permissions.remove(f.name())))
                    .collect()
            })
            .unwrap_or_default();
        let list = ListPlan::new(&fields);
        out.insert(
            ResourceName(name.clone()),
            ResourcePlan {
                name: ResourceName(name.clone()),
                schema: r.schema.clone(),
                owner: r.owner,
                fields,
                list,
            },
        );
    }
    out
}
