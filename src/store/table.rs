//! A declared resource as a table: `id`, the schema's fields, `owner` when asked, the
//! blind-index columns of indexed fields, `created_at` and `updated_at`. Derived once from
//! the plan; both the DDL and the CRUD SQL are built from it.

use std::sync::Arc;

use super::dialect::Kind;
use crate::plan::data::ResourcePlan;
use crate::validate::Schema;

/// One declared column.
#[derive(Debug, Clone)]
pub struct Column {
    /// The field's name.
    pub name: String,
    /// How its values are stored.
    pub kind: Kind,
    /// Rows that predate the column may lack it.
    pub may_be_absent: bool,
    /// The declared default, written into existing rows when the column is added.
    pub default: Option<serde_json::Value>,
    /// Stored as `nf1:` ciphertext (always a TEXT column).
    pub encrypted: bool,
    /// Has a `<field>__bidx` HMAC column for equality filters.
    pub blind_index: bool,
    /// A list may sort or filter by the column itself: it gets `(column, id)` indexes.
    pub key: bool,
}

/// A resource's table, derived from its plan and schema.
#[derive(Debug, Clone)]
pub struct Table {
    /// The table's (and resource's) name.
    pub name: String,
    /// Whether the table has an `owner` column.
    pub owner: bool,
    /// The schema's fields as columns, ordered by name.
    pub columns: Vec<Column>,
    /// The compiled schema request bodies are validated with.
    pub schema: Arc<Schema>,
}

impl Table {
    /// The table of `plan`, whose fields are `schema`'s.
    pub fn new(plan: &ResourcePlan, schema: Arc<Schema>) -> Self {
        let columns = schema
            .fields()
            .iter()
            .map(|f| {
                let field = plan.field(f.name());
                Column {
                    name: f.name().to_string(),
                    kind: Kind::of(f.field_type()),
                    may_be_absent: f.is_optional() || f.is_nullable() || f.default().is_some(),
                    default: f.default().cloned(),
                    encrypted: field.is_some_and(|p| p.encrypted),
                    blind_index: field.is_some_and(|p| p.blind_index),
                    key: field.is_some_and(|p| p.sortable || (p.filterable && !p.encrypted)),
                }
            })
            .collect();
        Self {
            name: plan.name.0.clone(),
            owner: plan.owner,
            columns,
            schema,
        }
    }

    /// The column of field `name`.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns
            .binary_search_by(|c| c.name.as_str().cmp(name))
            .ok()
            .and_then(|i| self.columns.get(i))
    }

    /// Whether field `name` is stored encrypted.
    pub fn is_encrypted(&self, name: &str) -> bool {
        self.column(name).is_some_and(|c| c.encrypted)
    }

    /// Whether field `name` has a blind index.
    pub fn is_blind_indexed(&self, name: &str) -> bool {
        self.column(name).is_some_and(|c| c.blind_index)
    }

    /// The names of the encrypted fields, in column order.
    pub fn encrypted(&self) -> impl Iterator<Item = &str> {
        self.columns
            .iter()
            .filter(|c| c.encrypted)
            .map(|c| c.name.as_str())
    }

    /// The names of the blind-indexed fields, in column order.
    pub fn blind_indexed(&self) -> impl Iterator<Item = &str> {
        self.columns
            .iter()
            .filter(|c| c.blind_index)
            .map(|c| c.name.as_str())
    }

    /// Whether any field is encrypted.
    pub fn has_encrypted(&self) -> bool {
        self.columns.iter().any(|c| c.encrypted)
    }
}

impl Table {
    /// The indexes lists need, as (name, columns): `(key, id)` for each key a list may sort
    /// or filter by (`created_at`, `updated_at`, the key fields, the blind-index columns),
    /// and when the table has owners `(owner, id)` and `(owner, key, id)`, so an `:own` list
    /// never scans other people's rows. Both databases answer a keyset page, filtered by
    /// equality and sorted by the key, from one of them without sorting.
    pub fn indexes(&self) -> Vec<(String, Vec<String>)> {
        let mut keys: Vec<String> = vec!["created_at".into(), "updated_at".into()];
        keys.extend(
            self.columns
                .iter()
                .filter(|c| c.key)
                .map(|c| c.name.clone()),
        );
        keys.extend(self.blind_indexed().map(index_column));
        let mut sets: Vec<Vec<String>> = Vec::new();
        if self.owner {
            sets.push(vec!["owner".into(), "id".into()]);
        }
        for k in &keys {
            sets.push(vec![k.clone(), "id".into()]);
            if self.owner {
                sets.push(vec!["owner".into(), k.clone(), "id".into()]);
            }
        }
        sets.into_iter()
            .map(|cols| (index_name(&self.name, &cols), cols))
            .collect()
    }
}

/// `notes(owner,priority,id)`: quoted, so it can never collide with a name of another kind.
/// PostgreSQL keeps 63 bytes of a name: longer ones become `<table>#<hash>`.
fn index_name(table: &str, cols: &[String]) -> String {
    let name = format!("{table}({})", cols.join(","));
    if name.len() <= 63 {
        return name;
    }
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(name.as_bytes());
    let hash: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let prefix: String = table.chars().take(40).collect();
    format!("{prefix}#{hash}")
}

/// The column holding a field's blind index.
pub fn index_column(field: &str) -> String {
    format!("{field}{INDEX_SUFFIX}")
}

/// Suffix of blind-index columns.
pub const INDEX_SUFFIX: &str = "__bidx";
