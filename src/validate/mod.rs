//! Request validation: `[schemas]` compiled once into validators that accept a request
//! document whole (normalised, defaults filled) or name every violation by JSON pointer.
//!
//! ```text
//! [schemas.Note]                                   compile_schemas(&raw.schemas, &mut diags)
//! title = { type = "string", max_length = 200 }  → Schemas ─┬─ validate(body, Mode::Create)
//!                                                            ├─ coerce_param(field, "3")
//!                                                            └─ json_schema(Mode::Patch)
//! ```
//!
//! The compile step ([`compile_schemas`]) reports every problem in the declarations as a
//! diagnostic with the path of the offending key; the run-time steps never panic, whatever
//! JSON they are given, and never recurse deeper than [`MAX_DEPTH`].

mod compile;
mod format;
mod instance;
mod json_schema;
mod param;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use regex::Regex;
use serde_json::Value;

pub use compile::compile_schemas;
pub use format::Format;
pub use param::coerce_param;

/// Deepest nesting of arrays and objects a request document (or a schema) may have.
pub const MAX_DEPTH: usize = 32;

/// Most violations reported for one document; beyond this the list is cut short, so a huge
/// invalid array cannot make a huge error response.
pub const MAX_VIOLATIONS: usize = 100;

/// How a document is validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A new record: required fields must be present, defaults are filled in.
    Create,
    /// A partial update: every top-level field may be absent and no default is applied;
    /// `null` clears a field that is nullable or optional. Nested values are whole values
    /// and are validated as in `Create`.
    Patch,
}

/// One reason a document was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// RFC 6901 pointer into the request, e.g. `/tags/3`; `""` is the whole document.
    pub pointer: String,
    /// Stable machine code: `required`, `type`, `too_short`, `too_long`, `pattern`,
    /// `format`, `minimum`, `maximum`, `multiple_of`, `enum`, `too_few_items`,
    /// `too_many_items`, `not_unique`, `unknown_field`, `not_nullable`, `too_deep`.
    pub code: &'static str,
    /// Human explanation; never repeats the submitted value.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.pointer.is_empty() {
            write!(f, "{} ({})", self.message, self.code)
        } else {
            write!(f, "{}: {} ({})", self.pointer, self.message, self.code)
        }
    }
}

/// Every compiled schema, by name.
#[derive(Debug, Clone, Default)]
pub struct Schemas {
    by_name: BTreeMap<String, Arc<Schema>>,
}

impl Schemas {
    /// The schema declared as `[schemas.NAME]`.
    pub fn get(&self, name: &str) -> Option<&Arc<Schema>> {
        self.by_name.get(name)
    }

    /// All schemas, ordered by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Arc<Schema>)> {
        self.by_name
            .iter()
            .map(|(name, schema)| (name.as_str(), schema))
    }

    /// Number of schemas.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether no schema is declared.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The `components.schemas` map of an OpenAPI 3.1 document: every schema's `Create`
    /// form under its own name. `ref` fields point into this map.
    pub fn components(&self) -> serde_json::Map<String, Value> {
        self.by_name
            .iter()
            .map(|(name, schema)| (name.clone(), schema.json_schema(Mode::Create)))
            .collect()
    }
}

/// One `[schemas.NAME]` table, compiled: an object whose unknown keys are refused.
#[derive(Debug)]
pub struct Schema {
    name: String,
    shape: Arc<Shape>,
}

impl Schema {
    /// The name under `[schemas]`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The declared fields, ordered by name.
    pub fn fields(&self) -> &[CompiledField] {
        &self.shape.fields
    }

    /// The field called `name`.
    pub fn field(&self, name: &str) -> Option<&CompiledField> {
        self.shape.field(name)
    }

    /// Validates a request body; the top level must be an object. On success returns the
    /// normalised document (strings trimmed where asked, defaults filled in `Create`).
    pub fn validate(&self, document: &Value, mode: Mode) -> Result<Value, Vec<Violation>> {
        instance::validate_document(&self.shape, document, mode)
    }

    /// JSON Schema (2020-12, as used by OpenAPI 3.1) of a request body in `mode`.
    pub fn json_schema(&self, mode: Mode) -> Value {
        json_schema::shape(&self.shape, mode)
    }
}

/// The type of a field as later stages see it (a `ref` field is an `Object`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    /// `string`.
    String,
    /// `integer`.
    Integer,
    /// `number`.
    Number,
    /// `boolean`.
    Boolean,
    /// `enum`: one of declared strings.
    Enum,
    /// `array`.
    Array,
    /// `object` (inline or `ref`).
    Object,
}

impl FieldType {
    /// The name used in `nestflux.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            FieldType::String => "string",
            FieldType::Integer => "integer",
            FieldType::Number => "number",
            FieldType::Boolean => "boolean",
            FieldType::Enum => "enum",
            FieldType::Array => "array",
            FieldType::Object => "object",
        }
    }
}

/// One compiled field of a schema (or the `items` of an array).
#[derive(Debug, Clone)]
pub struct CompiledField {
    name: String,
    optional: bool,
    nullable: bool,
    default: Option<Value>,
    description: Option<String>,
    kind: Kind,
}

impl CompiledField {
    /// The field's name (`items` for the element of an array).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The field's type.
    pub fn field_type(&self) -> FieldType {
        match &self.kind {
            Kind::String(_) => FieldType::String,
            Kind::Integer(_) => FieldType::Integer,
            Kind::Number(_) => FieldType::Number,
            Kind::Boolean => FieldType::Boolean,
            Kind::Enum(_) => FieldType::Enum,
            Kind::Array(_) => FieldType::Array,
            Kind::Object(_) | Kind::Ref { .. } => FieldType::Object,
        }
    }

    /// Whether a `Create` request may leave the field out (without a default).
    pub fn is_optional(&self) -> bool {
        self.optional
    }

    /// Whether `null` is a value of the field.
    pub fn is_nullable(&self) -> bool {
        self.nullable
    }

    /// The normalised default applied in `Create` when the field is absent.
    pub fn default(&self) -> Option<&Value> {
        self.default.as_ref()
    }

    /// Whether a `Create` request must carry the field.
    pub fn is_required(&self) -> bool {
        !self.optional && self.default.is_none()
    }

    /// The declared description.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// Whether the field holds one scalar (string, integer, number, boolean, enum): only
    /// those can be path parameters or list filters.
    pub fn is_scalar(&self) -> bool {
        !matches!(
            self.kind,
            Kind::Array(_) | Kind::Object(_) | Kind::Ref { .. }
        )
    }

    /// The schema named by `ref`, if the field has one.
    pub fn reference(&self) -> Option<&str> {
        match &self.kind {
            Kind::Ref { name, .. } => Some(name),
            _ => None,
        }
    }

    /// The most characters a value of a text field (string or enum) can have: the
    /// `max_length`, a bound its `format` implies, or the longest enum value. `None` for an
    /// unbounded string and for fields that are not text.
    pub fn max_chars(&self) -> Option<u64> {
        match &self.kind {
            Kind::String(rules) => {
                let by_format = rules.format.and_then(Format::max_chars);
                match (rules.max_length, by_format) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
            Kind::Enum(values) => values.iter().map(|v| v.chars().count() as u64).max(),
            _ => None,
        }
    }

    /// The `format` of a string field.
    pub fn format(&self) -> Option<Format> {
        match &self.kind {
            Kind::String(rules) => rules.format,
            _ => None,
        }
    }

    /// The allowed values of an enum field.
    pub fn enum_values(&self) -> Option<&[String]> {
        match &self.kind {
            Kind::Enum(values) => Some(values),
            _ => None,
        }
    }

    /// The element of an array field.
    pub fn items(&self) -> Option<&CompiledField> {
        match &self.kind {
            Kind::Array(rules) => Some(&rules.items),
            _ => None,
        }
    }

    /// The fields of an object field (inline or through `ref`), ordered by name.
    pub fn object_fields(&self) -> Option<&[CompiledField]> {
        match &self.kind {
            Kind::Object(shape) | Kind::Ref { shape, .. } => Some(&shape.fields),
            _ => None,
        }
    }

    /// Validates one value of this field as in `Create` (nested defaults filled).
    pub fn validate(&self, value: &Value) -> Result<Value, Vec<Violation>> {
        instance::validate_value(self, value)
    }

    /// JSON Schema (2020-12) of the field's value, as it appears in a `Create` body.
    pub fn json_schema(&self) -> Value {
        json_schema::field(self, Mode::Create, false)
    }
}

/// What a field checks, by type.
#[derive(Debug, Clone)]
enum Kind {
    String(StringRules),
    Integer(NumberRules),
    Number(NumberRules),
    Boolean,
    Enum(Vec<String>),
    Array(Box<ArrayRules>),
    Object(Arc<Shape>),
    /// The shape of another schema; the name is kept for `$ref` in JSON Schema.
    Ref {
        name: String,
        shape: Arc<Shape>,
    },
}

#[derive(Debug, Clone, Default)]
struct StringRules {
    min_length: Option<u64>,
    max_length: Option<u64>,
    pattern: Option<Regex>,
    format: Option<Format>,
    trim: bool,
}

#[derive(Debug, Clone, Default)]
struct NumberRules {
    min: Option<f64>,
    max: Option<f64>,
    exclusive_min: Option<f64>,
    exclusive_max: Option<f64>,
    multiple_of: Option<f64>,
}

#[derive(Debug, Clone)]
struct ArrayRules {
    items: CompiledField,
    min_items: Option<u64>,
    max_items: Option<u64>,
    unique: bool,
}

/// The fields of an object, sorted by name (so lookups can binary-search).
#[derive(Debug, Clone)]
struct Shape {
    fields: Vec<CompiledField>,
    /// Unknown keys are refused; when false they are kept as sent.
    strict: bool,
    /// Levels of objects and arrays, this object included.
    depth: usize,
}

impl Shape {
    fn field(&self, name: &str) -> Option<&CompiledField> {
        self.fields
            .binary_search_by(|f| f.name.as_str().cmp(name))
            .ok()
            .and_then(|i| self.fields.get(i))
    }
}
