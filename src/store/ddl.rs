//! Declared resources as tables: `id`, the schema's fields, `owner` when asked,
//! `created_at`, `updated_at`. Missing tables are created and additive changes applied; a
//! change that would drop, rename or retype a column is refused and nothing is altered.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Bind, Conn, StoreError};
use crate::plan::data::ResourcePlan;
use crate::validate::{CompiledField, FieldType, Schema};

/// How a field is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Int,
    Real,
    Bool,
    /// Arrays and objects, as JSON.
    Json,
}

impl Kind {
    fn of(field: &CompiledField) -> Self {
        match field.field_type() {
            FieldType::String | FieldType::Enum => Kind::Text,
            FieldType::Integer => Kind::Int,
            FieldType::Number => Kind::Real,
            FieldType::Boolean => Kind::Bool,
            FieldType::Array | FieldType::Object => Kind::Json,
        }
    }

    /// The declared column type. On SQLite the names keep their affinity (JSONTEXT is
    /// TEXT) yet stay distinct, so a retyped field is detected.
    pub fn sql_type(self, pg: bool) -> &'static str {
        match (self, pg) {
            (Kind::Text, false) => "TEXT",
            (Kind::Int, false) => "INTEGER",
            (Kind::Real, false) => "REAL",
            (Kind::Bool, false) => "BOOLEAN",
            (Kind::Json, false) => "JSONTEXT",
            (Kind::Text, true) => "text",
            (Kind::Int, true) => "bigint",
            (Kind::Real, true) => "double precision",
            (Kind::Bool, true) => "boolean",
            (Kind::Json, true) => "jsonb",
        }
    }

    /// A NULL of this column's type.
    pub fn null(self) -> Bind {
        match self {
            Kind::Text => Bind::Text(None),
            Kind::Int => Bind::Int(None),
            Kind::Real => Bind::Real(None),
            Kind::Bool => Bind::Bool(None),
            Kind::Json => Bind::Json(None),
        }
    }
}

/// One declared column.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub kind: Kind,
    /// Rows that predate the column may lack it.
    pub may_be_absent: bool,
    pub default: Option<serde_json::Value>,
}

/// A resource's table, derived from its plan and schema.
#[derive(Debug, Clone)]
pub struct Table {
    pub name: String,
    pub owner: bool,
    pub columns: Vec<Column>,
    pub schema: Arc<Schema>,
    /// Fields stored as `nf1:` ciphertext (always TEXT columns).
    pub encrypted: Vec<String>,
    /// Encrypted fields with a `<field>__bidx` HMAC column for equality filters.
    pub blind_index: Vec<String>,
}

pub const SERVER_COLUMNS: [&str; 4] = ["id", "owner", "created_at", "updated_at"];

impl Table {
    pub fn new(plan: &ResourcePlan, schema: Arc<Schema>) -> Self {
        let columns = schema
            .fields()
            .iter()
            .map(|f| Column {
                name: f.name().to_string(),
                kind: Kind::of(f),
                may_be_absent: f.is_optional() || f.is_nullable() || f.default().is_some(),
                default: f.default().cloned(),
            })
            .collect();
        Self {
            name: plan.name.0.clone(),
            owner: plan.owner,
            columns,
            schema,
            encrypted: plan.encrypted.clone(),
            blind_index: plan.blind_index.clone(),
        }
    }

    pub fn is_encrypted(&self, field: &str) -> bool {
        self.encrypted.iter().any(|f| f == field)
    }

    pub fn is_blind_indexed(&self, field: &str) -> bool {
        self.blind_index.iter().any(|f| f == field)
    }

    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// The column holding a field's blind index.
pub fn index_column(field: &str) -> String {
    format!("{field}{INDEX_SUFFIX}")
}

/// Suffix of blind-index columns.
pub const INDEX_SUFFIX: &str = "__bidx";

/// `"name"`: identifiers were validated at compile time; quoting is belt and braces.
pub fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Creates missing tables and applies additive changes for every resource, or refuses
/// (listing every destructive change) and alters nothing. Returns what changed.
pub fn sync(conn: &mut Conn, tables: &[Table]) -> Result<Vec<String>, StoreError> {
    let pg = conn.is_postgres();
    let mut problems = Vec::new();
    let mut statements: Vec<(String, Vec<Bind>)> = Vec::new();
    let mut changes = Vec::new();
    for t in tables {
        let actual: BTreeMap<String, String> = conn
            .columns(&t.name)?
            .into_iter()
            .map(|c| (c.name, c.ty))
            .collect();
        let table = quote(&t.name);
        if actual.is_empty() {
            let mut cols = vec![format!(
                "{} {} PRIMARY KEY NOT NULL",
                quote("id"),
                Kind::Text.sql_type(pg)
            )];
            if t.owner {
                cols.push(format!("{} {}", quote("owner"), Kind::Text.sql_type(pg)));
            }
            for c in &t.columns {
                cols.push(format!("{} {}", quote(&c.name), c.kind.sql_type(pg)));
            }
            for f in &t.blind_index {
                cols.push(format!(
                    "{} {}",
                    quote(&index_column(f)),
                    Kind::Text.sql_type(pg)
                ));
            }
            cols.push(format!(
                "{} {} NOT NULL",
                quote("created_at"),
                Kind::Text.sql_type(pg)
            ));
            cols.push(format!(
                "{} {} NOT NULL",
                quote("updated_at"),
                Kind::Text.sql_type(pg)
            ));
            statements.push((
                format!("CREATE TABLE {table} ({})", cols.join(", ")),
                vec![],
            ));
            changes.push(format!(
                "created table {} ({} fields)",
                t.name,
                t.columns.len()
            ));
        } else {
            let declared = |name: &str| {
                SERVER_COLUMNS.contains(&name) && (name != "owner" || t.owner)
                    || t.column(name).is_some()
                    || name
                        .strip_suffix(INDEX_SUFFIX)
                        .is_some_and(|f| t.is_blind_indexed(f))
            };
            for name in actual.keys() {
                if !declared(name) {
                    problems.push(format!(
                        "resources.{}: column `{name}` exists but is no longer declared; removing or renaming a field would drop its data (migrate it by hand, then restart)",
                        t.name
                    ));
                }
            }
            for c in &t.columns {
                match actual.get(&c.name) {
                    Some(ty) if !ty.eq_ignore_ascii_case(c.kind.sql_type(pg)) => problems.push(format!(
                        "resources.{}: field `{}` would change type from {ty} to {}; existing data would not fit",
                        t.name,
                        c.name,
                        c.kind.sql_type(pg)
                    )),
                    Some(_) => {}
                    None if !c.may_be_absent => problems.push(format!(
                        "resources.{}: new field `{}` is required and has no default; existing rows would be invalid (make it optional or give it a default)",
                        t.name, c.name
                    )),
                    None => {
                        statements.push((
                            format!("ALTER TABLE {table} ADD COLUMN {} {}", quote(&c.name), c.kind.sql_type(pg)),
                            vec![],
                        ));
                        // An encrypted field's default is never written unencrypted: existing
                        // rows keep NULL there.
                        if let Some(default) = c.default.as_ref().filter(|_| !t.is_encrypted(&c.name)) {
                            let value = super::crud::to_bind(c.kind, default);
                            statements.push((
                                format!("UPDATE {table} SET {} = {}", quote(&c.name), super::crud::placeholder(pg, 1, c.kind)),
                                vec![value],
                            ));
                        }
                        changes.push(format!("added field {}.{}", t.name, c.name));
                    }
                }
            }
            for f in &t.blind_index {
                let col = index_column(f);
                if !actual.contains_key(&col) {
                    // Existing rows get their index from `nestflux keys rotate`.
                    statements.push((
                        format!(
                            "ALTER TABLE {table} ADD COLUMN {} {}",
                            quote(&col),
                            Kind::Text.sql_type(pg)
                        ),
                        vec![],
                    ));
                    changes.push(format!(
                        "added blind index {}.{col} (run `nestflux keys rotate` to index existing rows)",
                        t.name
                    ));
                }
            }
            if t.owner && !actual.contains_key("owner") {
                statements.push((
                    format!(
                        "ALTER TABLE {table} ADD COLUMN {} {}",
                        quote("owner"),
                        Kind::Text.sql_type(pg)
                    ),
                    vec![],
                ));
                changes.push(format!("added owner column to {}", t.name));
            }
        }
        let indexed: Vec<String> = t.blind_index.iter().map(|f| index_column(f)).collect();
        for col in ["owner", "created_at"]
            .into_iter()
            .chain(indexed.iter().map(String::as_str))
        {
            if col != "owner" || t.owner {
                statements.push((
                    format!(
                        "CREATE INDEX IF NOT EXISTS {} ON {table} ({})",
                        quote(&format!("{}_{col}_idx", t.name)),
                        quote(col)
                    ),
                    vec![],
                ));
            }
        }
    }
    if !problems.is_empty() {
        return Err(StoreError::Drift(problems.join("\n")));
    }
    conn.transaction(|c| {
        for (sql, binds) in &statements {
            c.execute(sql, binds)?;
        }
        Ok(())
    })?;
    Ok(changes)
}
