//! The `<Schema>Record` component of a resource: what get, list, create and update return,
//! with server-set fields, nullable optional fields and guarded fields described.

use serde_json::{Map, Value, json};

use super::Builder;
use crate::plan::data::ResourcePlan;
use crate::plan::roles::Permission;
use crate::plan::routes::{Access, Action, RoutePlan};
use crate::validate::Schema;

impl Builder<'_> {
    /// The `<Schema>Record` component of a resource (what get, list, create and update
    /// return), added on first use; its name.
    pub(super) fn record_component(
        &mut self,
        route: &RoutePlan,
        res: &ResourcePlan,
        schema: &Schema,
    ) -> String {
        // A public create on an owned resource stores no owner.
        let anonymous_owner = self.plan.routes.iter().any(|r| {
            r.action == Action::Create
                && r.access == Access::Public
                && r.resource.as_ref() == Some(&res.name)
        });
        let shape = record_schema(res, schema, anonymous_owner);
        let base = format!("{}Record", schema.name());
        let mut name = base.clone();
        let mut n = 2;
        loop {
            match self.schemas.get(&name) {
                None => {
                    self.schemas.insert(name.clone(), shape);
                    return name;
                }
                Some(existing) if *existing == shape => return name,
                // Another resource with the same schema but a different record (owner).
                Some(_) => {
                    name = if n == 2 {
                        format!(
                            "{base}_{}",
                            route.resource.as_ref().map_or("x", |r| r.0.as_str())
                        )
                    } else {
                        format!("{base}_{n}")
                    };
                    n += 1;
                }
            }
        }
    }
}

/// `Problem`, or `Problem_2`… when a declared schema already has the name.
pub(super) fn fresh_name(taken: &Map<String, Value>, base: &str) -> String {
    let mut name = base.to_string();
    let mut n = 2;
    while taken.contains_key(&name) {
        name = format!("{base}_{n}");
        n += 1;
    }
    name
}

pub(super) fn own_form(p: &Permission) -> Permission {
    Permission {
        own: true,
        ..p.clone()
    }
}

/// Appends a field permission to a property's description, and names it as an extension.
pub(super) fn guard_note(prop: &mut Value, p: &Permission) {
    let Value::Object(map) = prop else { return };
    let note = format!(
        "Needs `{p}` (or `{}` on the caller's own rows) to read or write; hidden from other callers.",
        own_form(p)
    );
    let text = match map.get("description").and_then(Value::as_str) {
        Some(d) => format!("{d} {note}"),
        None => note,
    };
    map.insert("description".into(), json!(text));
    map.insert("x-nestflux-field-permission".into(), json!(p.to_string()));
}

/// A stored row: the schema's `Create` form (defaults filled, so fields with one are always
/// present) plus the server-set fields. Optional fields may come back as `null`; guarded
/// fields may be absent.
fn record_schema(res: &ResourcePlan, schema: &Schema, anonymous_owner: bool) -> Value {
    let mut props = Map::new();
    let mut required = vec![json!("id")];
    props.insert(
        "id".into(),
        json!({ "type": "string", "format": "uuid", "description": "Set by the server (UUIDv7)." }),
    );
    if res.owner {
        let ty = if anonymous_owner {
            json!(["string", "null"])
        } else {
            json!("string")
        };
        props.insert(
            "owner".into(),
            json!({ "type": ty, "description": "Set by the server: the subject who created the row." }),
        );
        required.push(json!("owner"));
    }
    for f in schema.fields() {
        let mut s = f.json_schema();
        if let Value::Object(map) = &mut s {
            map.remove("default");
        }
        let absent_allowed = f.is_optional() && f.default().is_none();
        if absent_allowed && !f.is_nullable() {
            make_nullable(&mut s);
        }
        if res.field(f.name()).is_some_and(|p| p.encrypted) {
            // A stored value that does not decrypt is answered as null (named in `_errors`).
            make_nullable(&mut s);
            if let Value::Object(map) = &mut s {
                let text = match map.get("description").and_then(Value::as_str) {
                    Some(d) => format!("{d} Encrypted at rest; `null` when the stored value cannot be decrypted (see `_errors`)."),
                    None => "Encrypted at rest; `null` when the stored value cannot be decrypted (see `_errors`).".to_string(),
                };
                map.insert("description".into(), json!(text));
            }
        }
        let guarded = res.permission(f.name());
        if let Some(p) = guarded {
            guard_note(&mut s, p);
        }
        if !absent_allowed && guarded.is_none() {
            required.push(json!(f.name()));
        }
        props.insert(f.name().to_string(), s);
    }
    for stamp in ["created_at", "updated_at"] {
        props.insert(
            stamp.into(),
            json!({ "type": "string", "format": "date-time", "description": "Set by the server (RFC 3339, UTC)." }),
        );
        required.push(json!(stamp));
    }
    if res.has_encrypted() {
        props.insert(
            crate::plan::data::ERRORS_KEY.into(),
            json!({
                "type": "array",
                "description": "Present only when a field the caller may read could not be read: the field is `null` and named here. `undecryptable`: the stored value does not decrypt (tampered, or moved from another row or field); `key-unavailable`: it needs an encryption key this server does not hold (a single record is then answered 503 instead).",
                "items": {
                    "type": "object",
                    "required": ["field", "code"],
                    "properties": {
                        "field": { "type": "string" },
                        "code": { "type": "string", "enum": ["undecryptable", "key-unavailable"] },
                    },
                },
            }),
        );
    }
    json!({
        "type": "object",
        "description": format!("A stored {}, with the fields the server sets.", schema.name()),
        "properties": Value::Object(props),
        "required": required,
    })
}

/// Lets `null` through a field schema: a type list, an enum value, or `anyOf` around a `$ref`.
fn make_nullable(s: &mut Value) {
    let Value::Object(map) = s else { return };
    if let Some(reference) = map.remove("$ref") {
        map.insert(
            "anyOf".into(),
            json!([{ "$ref": reference }, { "type": "null" }]),
        );
        return;
    }
    match map.get_mut("type") {
        Some(Value::String(t)) => {
            let t = t.clone();
            map.insert("type".into(), json!([t, "null"]));
        }
        Some(Value::Array(types)) if !types.iter().any(|t| t == "null") => {
            types.push(json!("null"));
        }
        _ => {}
    }
    if let Some(Value::Array(values)) = map.get_mut("enum")
        && !values.iter().any(Value::is_null)
    {
        values.push(Value::Null);
    }
}
