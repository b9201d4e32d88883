//! JSON Schema output: the exact documents for Note, and the `$ref` and null forms.

use serde_json::json;

use super::{compile, note};
use crate::validate::Mode;

#[test]
fn note_create_form() {
    assert_eq!(
        note().json_schema(Mode::Create),
        json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["title"],
            "properties": {
                "body": {"type": "string", "maxLength": 10000, "default": ""},
                "due": {"type": "string", "format": "date-time"},
                "priority": {"type": "integer", "format": "int64", "minimum": 1, "maximum": 5, "default": 3},
                "secret": {"type": "string", "maxLength": 2000},
                "tags": {"type": "array", "items": {"type": "string", "maxLength": 32}, "maxItems": 10, "default": []},
                "title": {"type": "string", "minLength": 1, "maxLength": 200}
            }
        })
    );
}

#[test]
fn note_patch_form() {
    assert_eq!(
        note().json_schema(Mode::Patch),
        json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "body": {"type": "string", "maxLength": 10000},
                "due": {"type": ["string", "null"], "format": "date-time"},
                "priority": {"type": "integer", "format": "int64", "minimum": 1, "maximum": 5},
                "secret": {"type": ["string", "null"], "maxLength": 2000},
                "tags": {"type": "array", "items": {"type": "string", "maxLength": 32}, "maxItems": 10},
                "title": {"type": "string", "minLength": 1, "maxLength": 200}
            }
        })
    );
}

#[test]
fn refs_enums_and_nulls() {
    let text = r#"
[schemas.Address]
zip = { type = "string", description = "Postal code" }
[schemas.Order]
ship_to = { ref = "Address" }
bill_to = { ref = "Address", nullable = true }
state = { type = "enum", values = ["new", "paid"], nullable = true }
n = { type = "integer" }
x = { type = "number", exclusive_min = 0, multiple_of = 0.5 }
meta = { type = "object", strict = false, optional = true }
ids = { type = "array", items = { type = "string", format = "uuid" }, unique = true, min_items = 1 }
"#;
    let (schemas, diags) = compile(text);
    assert!(diags.errors.is_empty(), "{:?}", diags.errors);
    let components = schemas.components();
    assert_eq!(
        components.get("Address"),
        Some(&json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["zip"],
            "properties": {"zip": {"type": "string", "description": "Postal code"}}
        }))
    );
    let Some(order) = components.get("Order") else {
        panic!("no Order")
    };
    let props = &order["properties"];
    assert_eq!(
        props["ship_to"],
        json!({"$ref": "#/components/schemas/Address"})
    );
    assert_eq!(
        props["bill_to"],
        json!({"anyOf": [{"$ref": "#/components/schemas/Address"}, {"type": "null"}]})
    );
    assert_eq!(
        props["state"],
        json!({"type": ["string", "null"], "enum": ["new", "paid", null]})
    );
    assert_eq!(
        props["n"],
        json!({"type": "integer", "format": "int64", "minimum": i64::MIN, "maximum": i64::MAX})
    );
    assert_eq!(
        props["x"],
        json!({"type": "number", "format": "double", "exclusiveMinimum": 0, "multipleOf": 0.5})
    );
    assert_eq!(props["meta"], json!({"type": "object", "properties": {}}));
    assert_eq!(
        props["ids"],
        json!({"type": "array", "items": {"type": "string", "format": "uuid"}, "uniqueItems": true, "minItems": 1})
    );
    assert_eq!(
        order["required"],
        json!(["bill_to", "ids", "n", "ship_to", "state", "x"])
    );
}
