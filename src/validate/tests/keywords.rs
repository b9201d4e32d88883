//! One field, one keyword: each accepts what it should and refuses the rest with its code.

use serde_json::{Value, json};

use super::{compile, expect, pairs, schema};
use crate::validate::{FieldType, MAX_DEPTH, MAX_VIOLATIONS, Mode, coerce_param};

/// Validates `{"f": value}` against `[schemas.T] f = { decl }` in `Create`.
fn run(decl: &str, value: Value) -> Result<Value, Vec<(String, &'static str)>> {
    let s = schema(&format!("[schemas.T]\nf = {{ {decl} }}\n"), "T");
    s.validate(&json!({ "f": value }), Mode::Create)
        .map(|out| out.get("f").cloned().unwrap_or(Value::Null))
        .map_err(|v| pairs(&v).into_iter().collect())
}

fn accepts(decl: &str, value: Value, normalised: Value) {
    assert_eq!(
        run(decl, value.clone()),
        Ok(normalised),
        "{decl} with {value}"
    );
}

fn refuses(decl: &str, value: Value, pointer: &str, code: &'static str) {
    let got = run(decl, value.clone());
    assert_eq!(
        got,
        Err(vec![(pointer.to_owned(), code)]),
        "{decl} with {value}"
    );
}

#[test]
fn string_type() {
    accepts(r#"type = "string""#, json!("x"), json!("x"));
    accepts(r#"type = "string""#, json!(""), json!(""));
    refuses(r#"type = "string""#, json!(1), "/f", "type");
    refuses(r#"type = "string""#, json!(["x"]), "/f", "type");
}

#[test]
fn min_and_max_length_count_unicode_scalar_values() {
    let d = r#"type = "string", min_length = 2, max_length = 3"#;
    accepts(d, json!("ab"), json!("ab"));
    accepts(d, json!("日本語"), json!("日本語"));
    accepts(d, json!("🦀🦀"), json!("🦀🦀"));
    refuses(d, json!("a"), "/f", "too_short");
    refuses(d, json!("🦀"), "/f", "too_short");
    refuses(d, json!("abcd"), "/f", "too_long");
    refuses(d, json!("日本語x"), "/f", "too_long");
}

#[test]
fn pattern_is_searched_not_anchored() {
    accepts(
        r#"type = "string", pattern = "^[a-z]+$""#,
        json!("abc"),
        json!("abc"),
    );
    refuses(
        r#"type = "string", pattern = "^[a-z]+$""#,
        json!("ab1"),
        "/f",
        "pattern",
    );
    accepts(
        r#"type = "string", pattern = "b""#,
        json!("abc"),
        json!("abc"),
    );
    refuses(
        r#"type = "string", pattern = "b""#,
        json!("xyz"),
        "/f",
        "pattern",
    );
}

#[test]
fn format() {
    let cases = [
        ("email", "ada@example.com", "ada.example.com"),
        ("uri", "https://example.com", "example.com"),
        ("uuid", "0190b2a4-7c1e-7d3f-9a2b-3c4d5e6f7a8b", "0190b2a4"),
        ("date", "2024-02-29", "2023-02-29"),
        (
            "date-time",
            "2025-01-31T09:30:00+01:00",
            "2025-01-31T09:30:00",
        ),
        ("ipv4", "192.0.2.1", "192.0.2"),
        ("ipv6", "2001:db8::1", "2001:db8::g"),
    ];
    for (format, good, bad) in cases {
        let d = format!(r#"type = "string", format = "{format}""#);
        accepts(&d, json!(good), json!(good));
        refuses(&d, json!(bad), "/f", "format");
    }
}

#[test]
fn trim_applies_before_every_other_rule() {
    let d = r#"type = "string", trim = true, min_length = 1, pattern = "^[a-z]*$""#;
    refuses(d, json!("   "), "/f", "too_short");
    accepts(d, json!(" ab "), json!("ab"));
    let d = r#"type = "string", trim = true, max_length = 3"#;
    accepts(d, json!("  ab \n"), json!("ab"));
    // Without trim the spaces count and stay.
    accepts(r#"type = "string""#, json!(" a "), json!(" a "));
    refuses(
        r#"type = "string", max_length = 2"#,
        json!(" a "),
        "/f",
        "too_long",
    );
}

#[test]
fn integer_type() {
    let d = r#"type = "integer""#;
    accepts(d, json!(3), json!(3));
    accepts(d, json!(-3), json!(-3));
    accepts(d, json!(3.0), json!(3));
    accepts(d, json!(i64::MAX), json!(i64::MAX));
    accepts(d, json!(i64::MIN), json!(i64::MIN));
    refuses(d, json!(3.5), "/f", "type");
    refuses(d, json!("3"), "/f", "type");
    refuses(d, json!(true), "/f", "type");
    refuses(d, json!(u64::MAX), "/f", "maximum");
    refuses(d, json!(1e19), "/f", "maximum");
    refuses(d, json!(-1e19), "/f", "minimum");
    refuses(d, json!(1e300), "/f", "maximum");
}

#[test]
fn integer_bounds_are_exact_near_i64_limits() {
    // 2^53 + 1 is not representable as f64; comparison must not round it down.
    let d = r#"type = "integer", max = 9007199254740992"#;
    accepts(
        d,
        json!(9_007_199_254_740_992_i64),
        json!(9_007_199_254_740_992_i64),
    );
    refuses(d, json!(9_007_199_254_740_993_i64), "/f", "maximum");
    let d = r#"type = "integer", min = 1.5"#;
    accepts(d, json!(2), json!(2));
    refuses(d, json!(1), "/f", "minimum");
}

#[test]
fn min_max_and_exclusive_bounds() {
    let d = r#"type = "integer", min = 1, max = 5"#;
    accepts(d, json!(1), json!(1));
    accepts(d, json!(5), json!(5));
    refuses(d, json!(0), "/f", "minimum");
    refuses(d, json!(6), "/f", "maximum");
    let d = r#"type = "number", exclusive_min = 0, exclusive_max = 1"#;
    accepts(d, json!(0.5), json!(0.5));
    refuses(d, json!(0), "/f", "minimum");
    refuses(d, json!(0.0), "/f", "minimum");
    refuses(d, json!(1), "/f", "maximum");
    refuses(d, json!(-0.1), "/f", "minimum");
}

#[test]
fn multiple_of() {
    let d = r#"type = "integer", multiple_of = 5"#;
    accepts(d, json!(10), json!(10));
    accepts(d, json!(-15), json!(-15));
    accepts(d, json!(0), json!(0));
    refuses(d, json!(12), "/f", "multiple_of");
    let d = r#"type = "number", multiple_of = 0.1"#;
    accepts(d, json!(0.3), json!(0.3));
    accepts(d, json!(7), json!(7));
    refuses(d, json!(0.35), "/f", "multiple_of");
    let d = r#"type = "integer", multiple_of = 0.5"#;
    accepts(d, json!(3), json!(3));
}

#[test]
fn number_type() {
    let d = r#"type = "number""#;
    accepts(d, json!(1.5), json!(1.5));
    accepts(d, json!(1), json!(1));
    accepts(d, json!(-0.0), json!(-0.0));
    accepts(d, json!(u64::MAX), json!(u64::MAX));
    refuses(d, json!("1"), "/f", "type");
    refuses(d, json!(null), "/f", "not_nullable");
}

#[test]
fn boolean_type() {
    accepts(r#"type = "boolean""#, json!(true), json!(true));
    accepts(r#"type = "boolean""#, json!(false), json!(false));
    refuses(r#"type = "boolean""#, json!("true"), "/f", "type");
    refuses(r#"type = "boolean""#, json!(1), "/f", "type");
}

#[test]
fn enum_values() {
    let d = r#"type = "enum", values = ["low", "high"]"#;
    accepts(d, json!("low"), json!("low"));
    refuses(d, json!("LOW"), "/f", "enum");
    refuses(d, json!(1), "/f", "type");
}

#[test]
fn array_items_and_counts() {
    let d =
        r#"type = "array", items = { type = "integer", min = 0 }, min_items = 1, max_items = 3"#;
    accepts(d, json!([0, 1.0, 2]), json!([0, 1, 2]));
    refuses(d, json!([]), "/f", "too_few_items");
    refuses(d, json!([1, 2, 3, 4]), "/f", "too_many_items");
    refuses(d, json!([1, -1]), "/f/1", "minimum");
    refuses(d, json!({"0": 1}), "/f", "type");
    refuses(d, json!([null]), "/f/0", "not_nullable");
    accepts(
        r#"type = "array", items = { type = "integer", nullable = true }"#,
        json!([null, 1]),
        json!([null, 1]),
    );
}

#[test]
fn unique_items_compare_as_json_schema_does() {
    let d = r#"type = "array", items = { type = "number" }, unique = true"#;
    accepts(d, json!([1, 2, 3]), json!([1, 2, 3]));
    refuses(d, json!([1, 2, 1]), "/f/2", "not_unique");
    refuses(d, json!([1, 1.0]), "/f/1", "not_unique");
    let d = r#"type = "array", items = { type = "string", trim = true }, unique = true"#;
    refuses(d, json!(["a", " a"]), "/f/1", "not_unique");
    let d = r#"type = "array", items = { type = "object", fields = { a = { type = "integer" }, b = { type = "integer" } } }, unique = true"#;
    refuses(
        d,
        json!([{"a": 1, "b": 2}, {"b": 2, "a": 1}]),
        "/f/1",
        "not_unique",
    );
    accepts(
        d,
        json!([{"a": 1, "b": 2}, {"a": 2, "b": 1}]),
        json!([{"a": 1, "b": 2}, {"a": 2, "b": 1}]),
    );
    // Without `unique`, duplicates are fine.
    accepts(
        r#"type = "array", items = { type = "integer" }"#,
        json!([1, 1]),
        json!([1, 1]),
    );
}

#[test]
fn objects_are_strict_by_default() {
    let d = r#"type = "object", fields = { a = { type = "integer" }, b = { type = "string", default = "x" } }"#;
    accepts(d, json!({"a": 1}), json!({"a": 1, "b": "x"}));
    refuses(d, json!({"a": 1, "c": 2}), "/f/c", "unknown_field");
    refuses(d, json!({}), "/f/a", "required");
    refuses(d, json!([]), "/f", "type");
    let d = r#"type = "object", strict = false, fields = { a = { type = "integer" } }"#;
    accepts(d, json!({"a": 1, "c": [2]}), json!({"a": 1, "c": [2]}));
    refuses(d, json!({"a": "1", "c": 2}), "/f/a", "type");
}

#[test]
fn ref_takes_the_shape_of_another_schema() {
    let text = r#"
[schemas.Address]
zip = { type = "string", pattern = "^[0-9]{5}$" }
city = { type = "string", default = "Paris" }
[schemas.Order]
address = { ref = "Address" }
previous = { ref = "Address", nullable = true, optional = true }
"#;
    let order = schema(text, "Order");
    assert_eq!(
        order.validate(&json!({"address": {"zip": "75001"}}), Mode::Create),
        Ok(json!({"address": {"zip": "75001", "city": "Paris"}}))
    );
    let err = order
        .validate(
            &json!({"address": {"zip": "7500", "x": 1}, "previous": null}),
            Mode::Create,
        )
        .map_err(|v| pairs(&v));
    assert_eq!(
        err,
        Err(expect(&[
            ("/address/zip", "pattern"),
            ("/address/x", "unknown_field")
        ]))
    );
    let field = order
        .field("address")
        .map(|f| (f.field_type(), f.reference(), f.is_scalar()));
    assert_eq!(field, Some((FieldType::Object, Some("Address"), false)));
}

#[test]
fn nullable_optional_and_default() {
    let text = r#"
[schemas.T]
req = { type = "integer" }
opt = { type = "integer", optional = true }
nul = { type = "integer", nullable = true }
def = { type = "integer", default = 7 }
both = { type = "integer", optional = true, nullable = true, default = 1 }
"#;
    let t = schema(text, "T");
    let create = |v: Value| t.validate(&v, Mode::Create).map_err(|v| pairs(&v));
    assert_eq!(
        create(json!({"req": 1, "nul": null})),
        Ok(json!({"req": 1, "nul": null, "def": 7, "both": 1}))
    );
    assert_eq!(
        create(json!({"req": 1, "nul": 2, "both": null})),
        Ok(json!({"req": 1, "nul": 2, "def": 7, "both": null}))
    );
    assert_eq!(
        create(json!({"opt": null, "def": null})),
        Err(expect(&[
            ("/req", "required"),
            ("/nul", "required"),
            ("/opt", "not_nullable"),
            ("/def", "not_nullable")
        ]))
    );

    let patch = |v: Value| t.validate(&v, Mode::Patch).map_err(|v| pairs(&v));
    assert_eq!(patch(json!({})), Ok(json!({})));
    assert_eq!(
        patch(json!({"opt": null, "nul": null})),
        Ok(json!({"opt": null, "nul": null}))
    );
    assert_eq!(
        patch(json!({"req": null, "def": null})),
        Err(expect(&[
            ("/req", "not_nullable"),
            ("/def", "not_nullable")
        ]))
    );
    assert_eq!(
        patch(json!({"zzz": 1})),
        Err(expect(&[("/zzz", "unknown_field")]))
    );
}

#[test]
fn patch_replaces_nested_values_whole() {
    let text = r#"
[schemas.T]
o = { type = "object", fields = { a = { type = "integer" }, b = { type = "integer", default = 2 } } }
"#;
    let t = schema(text, "T");
    assert_eq!(
        t.validate(&json!({"o": {"a": 1}}), Mode::Patch),
        Ok(json!({"o": {"a": 1, "b": 2}}))
    );
    let err = t
        .validate(&json!({"o": {"b": 1}}), Mode::Patch)
        .map_err(|v| pairs(&v));
    assert_eq!(err, Err(expect(&[("/o/a", "required")])));
}

#[test]
fn top_level_must_be_an_object() {
    let t = schema(
        "[schemas.T]\nf = { type = \"integer\", optional = true }\n",
        "T",
    );
    for doc in [json!(null), json!([]), json!("x"), json!(1), json!(true)] {
        for mode in [Mode::Create, Mode::Patch] {
            let err = t.validate(&doc, mode).map_err(|v| pairs(&v));
            assert_eq!(err, Err(expect(&[("", "type")])), "{doc}");
        }
    }
}

#[test]
fn pointers_escape_tilde_and_slash() {
    let t = schema(
        "[schemas.T]\nf = { type = \"integer\", optional = true }\n",
        "T",
    );
    let err = t
        .validate(&json!({"a/b": 1, "~c": 2, "": 3}), Mode::Create)
        .map_err(|v| pairs(&v));
    assert_eq!(
        err,
        Err(expect(&[
            ("/a~1b", "unknown_field"),
            ("/~0c", "unknown_field"),
            ("/", "unknown_field")
        ]))
    );
}

#[test]
fn depth_is_bounded_for_free_form_objects() {
    let t = schema(
        "[schemas.T]\nmeta = { type = \"object\", strict = false }\n",
        "T",
    );
    let mut deep = json!(1);
    for _ in 0..40 {
        deep = json!({ "a": deep });
    }
    let err = t
        .validate(&json!({ "meta": deep }), Mode::Create)
        .map_err(|v| pairs(&v));
    assert_eq!(err, Err(expect(&[("/meta/a", "too_deep")])));
    // Exactly MAX_DEPTH levels (document, meta, and 30 more) is fine.
    let mut ok = json!(1);
    for _ in 0..MAX_DEPTH - 2 {
        ok = json!([ok]);
    }
    assert!(
        t.validate(&json!({ "meta": { "a": ok } }), Mode::Create)
            .is_ok()
    );
}

#[test]
fn violations_are_capped() {
    let t = schema(
        "[schemas.T]\nf = { type = \"array\", items = { type = \"integer\" } }\n",
        "T",
    );
    let many: Vec<Value> = (0..10_000).map(|_| json!("x")).collect();
    let err = t
        .validate(&json!({ "f": many }), Mode::Create)
        .err()
        .unwrap_or_default();
    assert_eq!(err.len(), MAX_VIOLATIONS);
    assert_eq!(err.first().map(|v| v.pointer.as_str()), Some("/f/0"));
}

#[test]
fn every_violation_is_reported_at_once() {
    let text = r#"
[schemas.T]
a = { type = "string", min_length = 3, pattern = "^[0-9]+$", format = "uuid" }
b = { type = "integer", min = 10, multiple_of = 3 }
c = { type = "array", items = { type = "string" }, max_items = 1 }
"#;
    let t = schema(text, "T");
    let err = t
        .validate(
            &json!({"a": "x", "b": 1, "c": [1, 2], "d": 0}),
            Mode::Create,
        )
        .map_err(|v| pairs(&v));
    assert_eq!(
        err,
        Err(expect(&[
            ("/a", "too_short"),
            ("/a", "pattern"),
            ("/a", "format"),
            ("/b", "minimum"),
            ("/b", "multiple_of"),
            ("/c", "too_many_items"),
            ("/c/0", "type"),
            ("/c/1", "type"),
            ("/d", "unknown_field"),
        ]))
    );
}

#[test]
fn messages_do_not_repeat_the_submitted_value() {
    let t = schema(
        "[schemas.T]\nf = { type = \"string\", max_length = 3, format = \"email\" }\n",
        "T",
    );
    let secret = "hunter2-password";
    let err = t
        .validate(&json!({ "f": secret, secret: 1 }), Mode::Create)
        .err()
        .unwrap_or_default();
    assert!(!err.is_empty());
    assert!(err.iter().all(|v| !v.message.contains(secret)), "{err:?}");
}

#[test]
fn coerce_param_types_scalars() {
    let text = r#"
[schemas.T]
i = { type = "integer", min = 1, max = 5 }
n = { type = "number" }
b = { type = "boolean" }
e = { type = "enum", values = ["a", "b"] }
s = { type = "string", trim = true, max_length = 3 }
u = { type = "string", format = "uuid" }
l = { type = "array", items = { type = "integer" } }
o = { type = "object", fields = { a = { type = "integer" } } }
"#;
    let t = schema(text, "T");
    let c = |name: &str, raw: &str| match t.field(name) {
        Some(field) => coerce_param(field, raw).map_err(|v| (v.pointer, v.code)),
        None => panic!("no field {name}"),
    };
    assert_eq!(c("i", "3"), Ok(json!(3)));
    assert_eq!(c("i", "9"), Err(("/i".into(), "maximum")));
    assert_eq!(c("i", "x"), Err(("/i".into(), "type")));
    assert_eq!(c("i", "3.0"), Err(("/i".into(), "type")));
    assert_eq!(c("i", ""), Err(("/i".into(), "type")));
    assert_eq!(
        c("i", "99999999999999999999"),
        Err(("/i".into(), "maximum"))
    );
    assert_eq!(c("n", "1.5"), Ok(json!(1.5)));
    assert_eq!(c("n", "2"), Ok(json!(2)));
    assert_eq!(c("n", "NaN"), Err(("/n".into(), "type")));
    assert_eq!(c("n", "inf"), Err(("/n".into(), "type")));
    assert_eq!(c("b", "true"), Ok(json!(true)));
    assert_eq!(c("b", "false"), Ok(json!(false)));
    assert_eq!(c("b", "1"), Err(("/b".into(), "type")));
    assert_eq!(c("e", "a"), Ok(json!("a")));
    assert_eq!(c("e", "c"), Err(("/e".into(), "enum")));
    assert_eq!(c("s", " ab "), Ok(json!("ab")));
    assert_eq!(c("s", "abcd"), Err(("/s".into(), "too_long")));
    assert_eq!(c("u", "nope"), Err(("/u".into(), "format")));
    assert_eq!(c("l", "1"), Err(("/l".into(), "type")));
    assert_eq!(c("o", "{}"), Err(("/o".into(), "type")));
    let scalars: Vec<&str> = t
        .fields()
        .iter()
        .filter(|f| f.is_scalar())
        .map(|f| f.name())
        .collect();
    assert_eq!(scalars, ["b", "e", "i", "n", "s", "u"]);
}

#[test]
fn fields_expose_what_later_stages_need() {
    let (schemas, diags) = compile(super::NOTE_TOML);
    assert!(
        diags.errors.is_empty() && diags.warnings.is_empty(),
        "{diags:?}"
    );
    let Some(note) = schemas.get("Note") else {
        panic!("no Note")
    };
    type Summary<'a> = (&'a str, FieldType, bool, bool, Option<&'a Value>, bool);
    let summary: Vec<Summary<'_>> = note
        .fields()
        .iter()
        .map(|f| {
            (
                f.name(),
                f.field_type(),
                f.is_optional(),
                f.is_nullable(),
                f.default(),
                f.is_scalar(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "body",
                FieldType::String,
                false,
                false,
                Some(&json!("")),
                true
            ),
            ("due", FieldType::String, true, false, None, true),
            (
                "priority",
                FieldType::Integer,
                false,
                false,
                Some(&json!(3)),
                true
            ),
            ("secret", FieldType::String, true, false, None, true),
            (
                "tags",
                FieldType::Array,
                false,
                false,
                Some(&json!([])),
                false
            ),
            ("title", FieldType::String, false, false, None, true),
        ]
    );
    assert_eq!(
        note.field("tags")
            .and_then(|f| f.items())
            .map(|i| i.field_type()),
        Some(FieldType::String)
    );
    assert_eq!(
        note.field("due")
            .and_then(|f| f.format())
            .map(|f| f.as_str()),
        Some("date-time")
    );
    let required: Vec<&str> = note
        .fields()
        .iter()
        .filter(|f| f.is_required())
        .map(|f| f.name())
        .collect();
    assert_eq!(required, ["title"]);
}

#[test]
fn defaults_are_normalised_once() {
    let t = schema(
        "[schemas.T]\ns = { type = \"string\", trim = true, default = \"  x  \" }\nd = { type = \"string\", format = \"date-time\", default = 2025-01-31T09:30:00Z }\n",
        "T",
    );
    assert_eq!(
        t.validate(&json!({}), Mode::Create),
        Ok(json!({"s": "x", "d": "2025-01-31T09:30:00Z"}))
    );
}
