//! `[schemas]` → [`Schemas`]: every declaration checked once at startup, every problem
//! reported with the path of its key, nothing left to interpret per request.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use regex::RegexBuilder;
use serde_json::Value;

use super::{
    ArrayRules, CompiledField, Format, Kind, MAX_DEPTH, NumberRules, Schema, Schemas, Shape,
    StringRules, instance,
};
use crate::config::RawField;
use crate::plan::data::SERVER_COLUMNS;
use crate::plan::diag::{Code, Diagnostic, Diagnostics};

/// Largest compiled program a `pattern` may produce, so a pathological regex cannot eat
/// memory at startup or time per request.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Longest field or schema name (a Postgres identifier holds 63 bytes).
const MAX_NAME_LEN: usize = 63;

const TYPES: &str = "string, integer, number, boolean, enum, array, object";

/// Compiles every `[schemas.NAME]` table, reporting each problem to `diags` with the path of
/// its key (e.g. `schemas.Note.tags.items.max_length`). Schemas with errors still compile to
/// something, so later stages can keep checking; the plan is refused as a whole.
pub fn compile_schemas(
    raw: &BTreeMap<String, BTreeMap<String, RawField>>,
    diags: &mut Diagnostics,
) -> Schemas {
    for (name, fields) in raw {
        if !is_schema_name(name) {
            diags.error_with(
                Code::InvalidName,
                format!("schemas.{name}"),
                "a schema name must start with a letter and contain only letters, digits and `_` (at most 63)",
            );
        }
        if fields.is_empty() {
            diags.warn_with(
                Code::Unused,
                format!("schemas.{name}"),
                "this schema declares no fields",
            );
        }
    }

    let order = reference_order(raw, diags);
    let mut compiler = Compiler {
        raw,
        done: BTreeMap::new(),
        diags,
    };
    let mut by_name = BTreeMap::new();
    for name in order {
        let Some(fields) = raw.get(name) else {
            continue;
        };
        let path = format!("schemas.{name}");
        let shape = Arc::new(compiler.fields(&path, fields, true, true));
        if shape.depth > MAX_DEPTH {
            compiler.diags.error(
                path,
                format!(
                    "nests {} levels of objects and arrays; at most {MAX_DEPTH} are allowed",
                    shape.depth
                ),
            );
        }
        compiler.done.insert(name.clone(), Arc::clone(&shape));
        by_name.insert(
            name.clone(),
            Arc::new(Schema {
                name: name.clone(),
                shape,
            }),
        );
    }
    Schemas { by_name }
}

/// `[A-Za-z][A-Za-z0-9_]*`, at most 63 bytes: usable as an OpenAPI component name.
fn is_schema_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= MAX_NAME_LEN
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `[a-z_][a-z0-9_]{0,62}`: usable unquoted as an SQL column name.
fn is_field_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= MAX_NAME_LEN
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Every `ref` inside `field` (through `items` and `fields`), with the path of the `ref` key.
fn collect_refs<'a>(path: &str, field: &'a RawField, out: &mut Vec<(&'a str, String)>) {
    if let Some(target) = &field.reference {
        out.push((target, format!("{path}.ref")));
    }
    if let Some(items) = &field.items {
        collect_refs(&format!("{path}.items"), items, out);
    }
    for (name, inner) in field.fields.iter().flatten() {
        collect_refs(&format!("{path}.fields.{name}"), inner, out);
    }
}

/// Orders schemas so that each comes after the schemas it refers to, and reports every
/// reference cycle (naming it) as an error: a record cannot contain itself.
fn reference_order<'a>(
    raw: &'a BTreeMap<String, BTreeMap<String, RawField>>,
    diags: &mut Diagnostics,
) -> Vec<&'a String> {
    let edges: BTreeMap<&str, Vec<(&str, String)>> = raw
        .iter()
        .map(|(name, fields)| {
            let mut refs = Vec::new();
            for (field, raw_field) in fields {
                collect_refs(&format!("schemas.{name}.{field}"), raw_field, &mut refs);
            }
            refs.retain(|(target, _)| raw.contains_key(*target));
            (name.as_str(), refs)
        })
        .collect();

    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let mut marks: BTreeMap<&str, Mark> = raw.keys().map(|k| (k.as_str(), Mark::New)).collect();
    let mut order = Vec::with_capacity(raw.len());

    // Iterative depth-first search: (schema, index of the next edge to follow).
    for root in raw.keys() {
        if marks.get(root.as_str()) != Some(&Mark::New) {
            continue;
        }
        let mut stack: Vec<(&str, usize)> = vec![(root.as_str(), 0)];
        marks.insert(root.as_str(), Mark::Open);
        while let Some((node, next)) = stack.last().copied() {
            let out = edges.get(node).map(Vec::as_slice).unwrap_or_default();
            let Some((target, ref_path)) = out.get(next) else {
                marks.insert(node, Mark::Done);
                if let Some((name, _)) = raw.get_key_value(node) {
                    order.push(name);
                }
                stack.pop();
                continue;
            };
            if let Some(top) = stack.last_mut() {
                top.1 += 1;
            }
            match marks.get(target).copied() {
                Some(Mark::New) => {
                    marks.insert(target, Mark::Open);
                    stack.push((target, 0));
                }
                Some(Mark::Open) => {
                    let start = stack.iter().position(|(n, _)| n == target).unwrap_or(0);
                    let mut cycle: Vec<&str> = stack[start..].iter().map(|(n, _)| *n).collect();
                    cycle.push(target);
                    diags.error_with(
                        Code::Cycle,
                        ref_path.clone(),
                        format!(
                            "reference cycle {}: a schema cannot contain itself, directly or through others",
                            cycle.join(" -> ")
                        ),
                    );
                }
                Some(Mark::Done) | None => {}
            }
        }
    }
    order
}

/// Which keywords a type accepts.
#[derive(Clone, Copy, PartialEq)]
enum Family {
    String,
    Number,
    Enum,
    Array,
    Object,
}

/// The declared type, resolved.
enum Declared<'a> {
    String,
    Integer,
    Number,
    Boolean,
    Enum,
    Array,
    Object,
    Ref(&'a str),
    /// Already reported; compile to a placeholder.
    Invalid,
}

impl Declared<'_> {
    fn family(&self) -> Option<Family> {
        match self {
            Declared::String => Some(Family::String),
            Declared::Integer | Declared::Number => Some(Family::Number),
            Declared::Enum => Some(Family::Enum),
            Declared::Array => Some(Family::Array),
            Declared::Object => Some(Family::Object),
            Declared::Boolean | Declared::Ref(_) | Declared::Invalid => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            Declared::String => "a string field".into(),
            Declared::Integer => "an integer field".into(),
            Declared::Number => "a number field".into(),
            Declared::Boolean => "a boolean field".into(),
            Declared::Enum => "an enum field".into(),
            Declared::Array => "an array field".into(),
            Declared::Object => "an object field".into(),
            Declared::Ref(_) => "a `ref` field".into(),
            Declared::Invalid => "this field".into(),
        }
    }
}

/// Where a field sits, which decides the rules its declaration must follow.
#[derive(Clone, Copy, PartialEq)]
enum Place {
    /// A field of a `[schemas.NAME]` table: becomes a column.
    Column,
    /// A field of an inline object.
    Nested,
    /// The `items` of an array.
    Items,
}

/// An object that accepts anything: what a broken declaration compiles to.
fn placeholder_shape() -> Arc<Shape> {
    Arc::new(Shape {
        fields: Vec::new(),
        strict: false,
        depth: 1,
    })
}

struct Compiler<'a, 'd> {
    raw: &'a BTreeMap<String, BTreeMap<String, RawField>>,
    /// Schemas compiled so far; `ref`s resolve here (targets are compiled first).
    done: BTreeMap<String, Arc<Shape>>,
    diags: &'d mut Diagnostics,
}

impl Compiler<'_, '_> {
    /// Compiles the fields of a schema (`top`) or of an inline object.
    fn fields(
        &mut self,
        path: &str,
        fields: &BTreeMap<String, RawField>,
        strict: bool,
        top: bool,
    ) -> Shape {
        let mut compiled = Vec::with_capacity(fields.len());
        for (name, raw) in fields {
            let field_path = format!("{path}.{name}");
            if !is_field_name(name) {
                self.diags.error_with(
                    Code::InvalidName,
                    &field_path,
                    "a field name must match [a-z_][a-z0-9_]{0,62} (it becomes a column name)",
                );
            } else if top && SERVER_COLUMNS.contains(&name.as_str()) {
                self.diags.error_with(
                    Code::InvalidName,
                    &field_path,
                    format!("`{name}` is set by the server on every record and cannot be declared"),
                );
            } else if top && name.contains("__") {
                self.diags.error_with(
                    Code::InvalidName,
                    &field_path,
                    "`__` is reserved for columns NestFlux adds (blind indexes such as `email__bidx`)",
                );
            }
            let place = if top { Place::Column } else { Place::Nested };
            compiled.push(self.field(&field_path, name, raw, place));
        }
        // BTreeMap iteration is already sorted by name, which `Shape::field` relies on.
        let depth = 1 + compiled.iter().map(CompiledField::depth).max().unwrap_or(0);
        Shape {
            fields: compiled,
            strict,
            depth,
        }
    }

    fn field(&mut self, path: &str, name: &str, raw: &RawField, place: Place) -> CompiledField {
        let errors_before = self.diags.errors.len();
        let declared = self.declared(path, raw);
        self.check_keywords(path, raw, &declared);
        if place == Place::Items {
            if raw.optional {
                self.diags
                    .error(format!("{path}.optional"), "array items cannot be optional");
            }
            if raw.default.is_some() {
                self.diags.error(
                    format!("{path}.default"),
                    "array items cannot have a default",
                );
            }
        }

        let kind = match declared {
            Declared::String => Kind::String(self.string_rules(path, raw)),
            Declared::Integer => Kind::Integer(self.number_rules(path, raw)),
            Declared::Number => Kind::Number(self.number_rules(path, raw)),
            Declared::Boolean => Kind::Boolean,
            Declared::Enum => Kind::Enum(self.enum_values(path, raw)),
            Declared::Array => Kind::Array(Box::new(self.array_rules(path, raw))),
            Declared::Object => self.object(path, raw),
            Declared::Ref(target) => self.reference(path, target),
            Declared::Invalid => {
                // Still look inside, so every problem is reported in one run.
                if let Some(items) = &raw.items {
                    self.field(&format!("{path}.items"), "items", items, Place::Items);
                }
                if let Some(fields) = &raw.fields {
                    self.fields(&format!("{path}.fields"), fields, true, false);
                }
                Kind::Object(placeholder_shape())
            }
        };

        let mut field = CompiledField {
            name: name.to_owned(),
            optional: raw.optional,
            nullable: raw.nullable,
            default: None,
            description: raw.description.clone(),
            kind,
        };
        // A default is checked only against a declaration without errors: otherwise the
        // message would be about rules that are themselves wrong.
        if let Some(default) = &raw.default
            && place != Place::Items
            && self.diags.errors.len() == errors_before
        {
            field.default = self.default(path, default, &field);
        }
        field
    }

    /// Resolves `type` / `ref`.
    fn declared<'r>(&mut self, path: &str, raw: &'r RawField) -> Declared<'r> {
        match (raw.ty.as_deref(), raw.reference.as_deref()) {
            (Some(_), Some(_)) => {
                self.diags.error_with(
                    Code::Conflict,
                    format!("{path}.ref"),
                    "`ref` and `type` cannot be used together: a `ref` field has the type of the schema it names",
                );
                Declared::Invalid
            }
            (None, None) => {
                self.diags
                    .error(path, format!("a field needs a `type` ({TYPES}) or a `ref`"));
                Declared::Invalid
            }
            (None, Some(target)) => Declared::Ref(target),
            (Some(ty), None) => match ty {
                "string" => Declared::String,
                "integer" => Declared::Integer,
                "number" => Declared::Number,
                "boolean" => Declared::Boolean,
                "enum" => Declared::Enum,
                "array" => Declared::Array,
                "object" => Declared::Object,
                other => {
                    let meant = crate::suggest::closest(other, TYPES.split(", "));
                    self.diags.push_error(
                        Diagnostic::new(
                            format!("{path}.type"),
                            format!("unknown type \"{other}\"; expected one of {TYPES}"),
                        )
                        .with_suggestion(meant),
                    );
                    Declared::Invalid
                }
            },
        }
    }

    /// Reports every keyword that does not belong to the declared type.
    fn check_keywords(&mut self, path: &str, raw: &RawField, declared: &Declared<'_>) {
        if matches!(declared, Declared::Invalid) {
            return;
        }
        let present = [
            ("min_length", raw.min_length.is_some(), Family::String),
            ("max_length", raw.max_length.is_some(), Family::String),
            ("pattern", raw.pattern.is_some(), Family::String),
            ("format", raw.format.is_some(), Family::String),
            ("trim", raw.trim, Family::String),
            ("min", raw.min.is_some(), Family::Number),
            ("max", raw.max.is_some(), Family::Number),
            ("exclusive_min", raw.exclusive_min.is_some(), Family::Number),
            ("exclusive_max", raw.exclusive_max.is_some(), Family::Number),
            ("multiple_of", raw.multiple_of.is_some(), Family::Number),
            ("values", raw.values.is_some(), Family::Enum),
            ("items", raw.items.is_some(), Family::Array),
            ("min_items", raw.min_items.is_some(), Family::Array),
            ("max_items", raw.max_items.is_some(), Family::Array),
            ("unique", raw.unique, Family::Array),
            ("fields", raw.fields.is_some(), Family::Object),
            ("strict", raw.strict.is_some(), Family::Object),
        ];
        let family = declared.family();
        for (keyword, is_set, belongs_to) in present {
            if is_set && family != Some(belongs_to) {
                self.diags.error_with(
                    Code::Conflict,
                    format!("{path}.{keyword}"),
                    format!("`{keyword}` does not apply to {}", declared.describe()),
                );
            }
        }
    }

    fn string_rules(&mut self, path: &str, raw: &RawField) -> StringRules {
        if let (Some(min), Some(max)) = (raw.min_length, raw.max_length)
            && min > max
        {
            self.diags.error_with(
                Code::Conflict,
                format!("{path}.min_length"),
                format!("min_length ({min}) is greater than max_length ({max})"),
            );
        }
        let pattern = raw.pattern.as_deref().and_then(|p| {
            match RegexBuilder::new(p)
                .size_limit(REGEX_SIZE_LIMIT)
                .dfa_size_limit(REGEX_SIZE_LIMIT)
                .build()
            {
                Ok(regex) => Some(regex),
                Err(e) => {
                    // The regex crate's messages span several lines; keep the last (the cause).
                    let detail = e.to_string();
                    let cause = detail.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
                    self.diags.error(
                        format!("{path}.pattern"),
                        format!("not a valid regular expression: {}", cause.trim()),
                    );
                    None
                }
            }
        });
        let format = raw.format.as_deref().and_then(|name| {
            let found = Format::from_name(name);
            if found.is_none() {
                let known: Vec<&str> = Format::ALL.iter().map(|f| f.as_str()).collect();
                let meant = crate::suggest::closest(name, &known);
                self.diags.push_error(
                    Diagnostic::new(
                        format!("{path}.format"),
                        format!(
                            "unknown format \"{name}\"; expected one of {}",
                            known.join(", ")
                        ),
                    )
                    .with_suggestion(meant),
                );
            }
            found
        });
        StringRules {
            min_length: raw.min_length,
            max_length: raw.max_length,
            pattern,
            format,
            trim: raw.trim,
        }
    }

    fn number_rules(&mut self, path: &str, raw: &RawField) -> NumberRules {
        let mut finite = |key: &str, value: Option<f64>| -> Option<f64> {
            let v = value?;
            if v.is_finite() {
                Some(v)
            } else {
                self.diags.error(
                    format!("{path}.{key}"),
                    format!("`{key}` must be a finite number"),
                );
                None
            }
        };
        let rules = NumberRules {
            min: finite("min", raw.min),
            max: finite("max", raw.max),
            exclusive_min: finite("exclusive_min", raw.exclusive_min),
            exclusive_max: finite("exclusive_max", raw.exclusive_max),
            multiple_of: finite("multiple_of", raw.multiple_of),
        };
        if let Some(m) = rules.multiple_of
            && m <= 0.0
        {
            self.diags.error(
                format!("{path}.multiple_of"),
                "multiple_of must be greater than 0",
            );
        }
        // Every lower bound against every upper bound: no number may satisfy both.
        let lows = [
            ("min", rules.min, false),
            ("exclusive_min", rules.exclusive_min, true),
        ];
        let highs = [
            ("max", rules.max, false),
            ("exclusive_max", rules.exclusive_max, true),
        ];
        for (low_key, low, low_excl) in lows {
            for (high_key, high, high_excl) in highs {
                let (Some(lo), Some(hi)) = (low, high) else {
                    continue;
                };
                let empty = if low_excl || high_excl {
                    lo >= hi
                } else {
                    lo > hi
                };
                if empty {
                    self.diags.error_with(
                        Code::Conflict,
                        format!("{path}.{low_key}"),
                        format!("{low_key} ({lo}) leaves no value below {high_key} ({hi})"),
                    );
                }
            }
        }
        rules
    }

    fn enum_values(&mut self, path: &str, raw: &RawField) -> Vec<String> {
        let Some(values) = &raw.values else {
            self.diags
                .error_with(Code::MissingKey, path, "an enum needs `values`");
            return Vec::new();
        };
        if values.is_empty() {
            self.diags
                .error(format!("{path}.values"), "an enum needs at least one value");
        }
        let mut seen = BTreeSet::new();
        for (i, value) in values.iter().enumerate() {
            if !seen.insert(value) {
                self.diags.error_with(
                    Code::Duplicate,
                    format!("{path}.values[{i}]"),
                    format!("duplicate enum value \"{value}\""),
                );
            }
        }
        values.clone()
    }

    fn array_rules(&mut self, path: &str, raw: &RawField) -> ArrayRules {
        if let (Some(min), Some(max)) = (raw.min_items, raw.max_items)
            && min > max
        {
            self.diags.error_with(
                Code::Conflict,
                format!("{path}.min_items"),
                format!("min_items ({min}) is greater than max_items ({max})"),
            );
        }
        let items = match &raw.items {
            Some(items) => self.field(&format!("{path}.items"), "items", items, Place::Items),
            None => {
                self.diags.error_with(
                    Code::MissingKey,
                    path,
                    "an array needs `items`, the declaration of its elements",
                );
                CompiledField {
                    name: "items".into(),
                    optional: false,
                    nullable: true,
                    default: None,
                    description: None,
                    kind: Kind::Object(placeholder_shape()),
                }
            }
        };
        ArrayRules {
            items,
            min_items: raw.min_items,
            max_items: raw.max_items,
            unique: raw.unique,
        }
    }

    fn object(&mut self, path: &str, raw: &RawField) -> Kind {
        let strict = raw.strict.unwrap_or(true);
        match &raw.fields {
            Some(fields) => Kind::Object(Arc::new(self.fields(
                &format!("{path}.fields"),
                fields,
                strict,
                false,
            ))),
            None => {
                if strict {
                    self.diags.error_with(
                        Code::MissingKey,
                        path,
                        "an object needs `fields` (or `strict = false` to accept any keys)",
                    );
                }
                Kind::Object(Arc::new(Shape {
                    fields: Vec::new(),
                    strict,
                    depth: 1,
                }))
            }
        }
    }

    fn reference(&mut self, path: &str, target: &str) -> Kind {
        let shape = match self.done.get(target) {
            Some(shape) => Arc::clone(shape),
            None => {
                if !self.raw.contains_key(target) {
                    let known: Vec<&str> = self.raw.keys().map(String::as_str).collect();
                    self.diags.push_error(
                        Diagnostic::new(
                            format!("{path}.ref"),
                            format!(
                                "no schema named \"{target}\" (declared: {})",
                                known.join(", ")
                            ),
                        )
                        .with_code(Code::UnknownSchema)
                        .with_suggestion(crate::suggest::closest(target, &known)),
                    );
                }
                // Otherwise the target is on a reference cycle, reported already.
                placeholder_shape()
            }
        };
        Kind::Ref {
            name: target.to_owned(),
            shape,
        }
    }

    /// Checks a declared default against the field's own rules; returns it normalised.
    fn default(
        &mut self,
        path: &str,
        default: &toml::Value,
        field: &CompiledField,
    ) -> Option<Value> {
        let key = format!("{path}.default");
        let json = match toml_to_json(default) {
            Ok(json) => json,
            Err(message) => {
                self.diags.error(key, message);
                return None;
            }
        };
        match instance::validate_value(field, &json) {
            Ok(normalised) => Some(normalised),
            Err(violations) => {
                for v in violations {
                    let at = if v.pointer.is_empty() {
                        String::new()
                    } else {
                        format!(" at {}", v.pointer)
                    };
                    self.diags.error(
                        &key,
                        format!(
                            "the default does not satisfy the field's rules{at}: {} ({})",
                            v.message, v.code
                        ),
                    );
                }
                None
            }
        }
    }
}

impl CompiledField {
    /// Levels of arrays and objects below this field's value.
    fn depth(&self) -> usize {
        match &self.kind {
            Kind::Array(rules) => 1 + rules.items.depth(),
            Kind::Object(shape) | Kind::Ref { shape, .. } => shape.depth,
            _ => 0,
        }
    }
}

/// TOML default → JSON value (TOML date-times become their RFC 3339 text).
fn toml_to_json(value: &toml::Value) -> Result<Value, String> {
    Ok(match value {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .ok_or_else(|| "a default must be a finite number".to_owned())?,
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(items) => {
            Value::Array(items.iter().map(toml_to_json).collect::<Result<_, _>>()?)
        }
        toml::Value::Table(table) => Value::Object(
            table
                .iter()
                .map(|(k, v)| Ok((k.clone(), toml_to_json(v)?)))
                .collect::<Result<_, String>>()?,
        ),
    })
}
