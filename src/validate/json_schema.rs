//! JSON Schema (2020-12 dialect, as OpenAPI 3.1 uses it) of compiled schemas, so the served
//! `/openapi.json` describes exactly what the validator accepts.

use serde_json::{Map, Value, json};

use super::{CompiledField, Kind, Mode, NumberRules, Shape};

/// Where `ref` fields point: `#/components/schemas/NAME`.
pub const COMPONENTS_PREFIX: &str = "#/components/schemas/";

/// The object schema of a request body. In `Patch` no member is required, none has a
/// default, and optional members also accept `null` (which clears them).
pub(super) fn shape(shape: &Shape, mode: Mode) -> Value {
    let mut properties = Map::new();
    let mut required = Vec::new();
    for f in &shape.fields {
        properties.insert(f.name.clone(), field(f, mode, mode == Mode::Patch));
        if mode == Mode::Create && f.is_required() {
            required.push(Value::String(f.name.clone()));
        }
    }
    let mut out = Map::new();
    out.insert("type".into(), json!("object"));
    out.insert("properties".into(), Value::Object(properties));
    if !required.is_empty() {
        out.insert("required".into(), Value::Array(required));
    }
    if shape.strict {
        out.insert("additionalProperties".into(), json!(false));
    }
    Value::Object(out)
}

/// The schema of one field's value. `patch_member` marks a top-level member of a `Patch`
/// body: no default, and `null` allowed when the field is optional.
pub(super) fn field(f: &CompiledField, mode: Mode, patch_member: bool) -> Value {
    let mut out = Map::new();
    let mut ty = None;
    match &f.kind {
        Kind::String(rules) => {
            ty = Some("string");
            put(&mut out, "minLength", rules.min_length.map(Value::from));
            put(&mut out, "maxLength", rules.max_length.map(Value::from));
            put(
                &mut out,
                "pattern",
                rules.pattern.as_ref().map(|p| json!(p.as_str())),
            );
            put(
                &mut out,
                "format",
                rules.format.map(|fmt| json!(fmt.as_str())),
            );
        }
        Kind::Integer(rules) => {
            ty = Some("integer");
            out.insert("format".into(), json!("int64"));
            // The validator refuses integers beyond i64; say so, so clients do not send them.
            out.insert("minimum".into(), rules.min.map_or(json!(i64::MIN), number));
            out.insert("maximum".into(), rules.max.map_or(json!(i64::MAX), number));
            exclusive_and_multiple(&mut out, rules);
        }
        Kind::Number(rules) => {
            ty = Some("number");
            out.insert("format".into(), json!("double"));
            put(&mut out, "minimum", rules.min.map(number));
            put(&mut out, "maximum", rules.max.map(number));
            exclusive_and_multiple(&mut out, rules);
        }
        Kind::Boolean => ty = Some("boolean"),
        Kind::Enum(values) => {
            ty = Some("string");
            let mut list: Vec<Value> = values.iter().map(|v| json!(v)).collect();
            if f.nullable || (patch_member && f.optional) {
                list.push(Value::Null);
            }
            out.insert("enum".into(), Value::Array(list));
        }
        Kind::Array(rules) => {
            ty = Some("array");
            out.insert("items".into(), field(&rules.items, Mode::Create, false));
            put(&mut out, "minItems", rules.min_items.map(Value::from));
            put(&mut out, "maxItems", rules.max_items.map(Value::from));
            if rules.unique {
                out.insert("uniqueItems".into(), json!(true));
            }
        }
        Kind::Object(inner) => {
            if let Value::Object(map) = shape(inner, Mode::Create) {
                out = map;
            }
        }
        Kind::Ref { name, .. } => {
            out.insert("$ref".into(), json!(format!("{COMPONENTS_PREFIX}{name}")));
        }
    }

    let nullable = f.nullable || (patch_member && f.optional);
    if nullable {
        if let Some(Value::String(t)) = out.get("type").cloned() {
            out.insert("type".into(), json!([t, "null"]));
        } else if let Some(t) = ty {
            out.insert("type".into(), json!([t, "null"]));
        }
    } else if let Some(t) = ty {
        out.insert("type".into(), json!(t));
    }
    if nullable && let Some(reference) = out.remove("$ref") {
        out.insert(
            "anyOf".into(),
            json!([{ "$ref": reference }, { "type": "null" }]),
        );
    }

    put(
        &mut out,
        "description",
        f.description.as_ref().map(|d| json!(d)),
    );
    if mode == Mode::Create && !patch_member {
        put(&mut out, "default", f.default.clone());
    }
    Value::Object(out)
}

fn exclusive_and_multiple(out: &mut Map<String, Value>, rules: &NumberRules) {
    put(out, "exclusiveMinimum", rules.exclusive_min.map(number));
    put(out, "exclusiveMaximum", rules.exclusive_max.map(number));
    put(out, "multipleOf", rules.multiple_of.map(number));
}

fn put(out: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(value) = value {
        out.insert(key.into(), value);
    }
}

/// A bound as JSON: `5` rather than `5.0` when it is integral.
fn number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9_007_199_254_740_992.0 {
        json!(x as i64)
    } else {
        json!(x)
    }
}
