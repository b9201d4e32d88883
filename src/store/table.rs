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

impl Table {
    pub fn new(plan: &ResourcePlan, schema: Arc<Schema>) -> Self {
        let columns = schema
            .fields()
            .iter()
            .map(|f| Column {
                name: f.name().to_string(),
                kind: Kind::of(f.field_type()),
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
