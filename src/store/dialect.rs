//! The SQL dialects in one place: how a field is stored ([`Kind`]), how a value is bound
//! ([`Bind`]), placeholders (`?` on SQLite, `$n` on PostgreSQL), identifier quoting and the
//! expression that makes the database render a row as JSON.

use serde_json::Value;

use crate::validate::FieldType;

/// A value bound to a placeholder, typed by its column (a NULL is typed too, which
/// PostgreSQL requires).
#[derive(Debug, Clone, PartialEq)]
pub enum Bind {
    /// A text value (or NULL).
    Text(Option<String>),
    /// A 64-bit integer (or NULL).
    Int(Option<i64>),
    /// A double (or NULL).
    Real(Option<f64>),
    /// A boolean (or NULL).
    Bool(Option<bool>),
    /// JSON text for an array or object column.
    Json(Option<String>),
}

impl Bind {
    /// The column kind this bind is typed as.
    pub fn kind(&self) -> Kind {
        match self {
            Bind::Text(_) => Kind::Text,
            Bind::Int(_) => Kind::Int,
            Bind::Real(_) => Kind::Real,
            Bind::Bool(_) => Kind::Bool,
            Bind::Json(_) => Kind::Json,
        }
    }
}

/// How a field is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Strings and enums.
    Text,
    /// Integers.
    Int,
    /// Numbers.
    Real,
    /// Booleans.
    Bool,
    /// Arrays and objects, as JSON.
    Json,
}

impl Kind {
    /// The storage of a field of this type.
    pub fn of(ty: FieldType) -> Self {
        match ty {
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

/// `?` on SQLite, `$n` on PostgreSQL (with a cast for JSON columns).
pub fn placeholder(pg: bool, n: usize, kind: Kind) -> String {
    match (pg, kind) {
        (false, _) => "?".into(),
        (true, Kind::Json) => format!("${n}::jsonb"),
        (true, _) => format!("${n}"),
    }
}

/// A validated JSON value as a bind of its column's type.
pub fn to_bind(kind: Kind, v: &Value) -> Bind {
    match (kind, v) {
        (_, Value::Null) => kind.null(),
        (Kind::Text, Value::String(s)) => Bind::Text(Some(s.clone())),
        (Kind::Int, v) => Bind::Int(v.as_i64()),
        (Kind::Real, v) => Bind::Real(v.as_f64()),
        (Kind::Bool, v) => Bind::Bool(v.as_bool()),
        (Kind::Json, v) => Bind::Json(Some(v.to_string())),
        (Kind::Text, v) => Bind::Text(Some(v.to_string())),
    }
}

/// `"name"`: identifiers were validated at compile time; quoting is belt and braces.
pub fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// The database renders a row as JSON text from `'name', <expr>` pairs.
pub fn json_row(pg: bool, pairs: &[String]) -> String {
    if pg {
        format!("json_build_object({})::text", pairs.join(", "))
    } else {
        format!("json_object({})", pairs.join(", "))
    }
}

/// `'name', <expr>` rendering one column as JSON.
pub fn pair(pg: bool, name: &str, kind: Kind) -> String {
    let col = quote(name);
    let expr = match (pg, kind) {
        (false, Kind::Bool) => {
            format!(
                "CASE WHEN {col} IS NULL THEN NULL WHEN {col} THEN json('true') ELSE json('false') END"
            )
        }
        (false, Kind::Json) => format!("json({col})"),
        _ => col,
    };
    format!("'{name}', {expr}")
}
