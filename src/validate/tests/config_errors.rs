//! Bad declarations: each yields an error at the path of the offending key, and every
//! problem of a file is reported in one run.

use std::collections::BTreeSet;

use super::compile;

/// The error paths of compiling `text`.
fn error_paths(text: &str) -> BTreeSet<String> {
    let (_, diags) = compile(text);
    diags.errors.iter().map(|d| d.path.clone()).collect()
}

fn assert_errors(text: &str, paths: &[&str]) {
    let want: BTreeSet<String> = paths.iter().map(|p| (*p).to_owned()).collect();
    let (_, diags) = compile(text);
    let got: BTreeSet<String> = diags.errors.iter().map(|d| d.path.clone()).collect();
    assert_eq!(got, want, "{text}\n{:#?}", diags.errors);
}

fn message_at(text: &str, path: &str) -> String {
    let (_, diags) = compile(text);
    diags
        .errors
        .iter()
        .filter(|d| d.path == path)
        .map(|d| d.message.clone())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn each_bad_declaration_names_its_key() {
    let cases: &[(&str, &[&str])] = &[
        (r#"f = { type = "strng" }"#, &["schemas.T.f.type"]),
        (r#"f = { }"#, &["schemas.T.f"]),
        (r#"f = { optional = true }"#, &["schemas.T.f"]),
        (
            r#"f = { type = "integer", min_length = 1 }"#,
            &["schemas.T.f.min_length"],
        ),
        (
            r#"f = { type = "string", items = { type = "string" } }"#,
            &["schemas.T.f.items"],
        ),
        (
            r#"f = { type = "string", min = 1, unique = true }"#,
            &["schemas.T.f.min", "schemas.T.f.unique"],
        ),
        (
            r#"f = { type = "boolean", values = ["a"], trim = true }"#,
            &["schemas.T.f.values", "schemas.T.f.trim"],
        ),
        (
            r#"f = { type = "enum", values = ["a"], pattern = "a" }"#,
            &["schemas.T.f.pattern"],
        ),
        (
            r#"f = { type = "object", fields = { a = { type = "integer" } }, max_items = 1 }"#,
            &["schemas.T.f.max_items"],
        ),
        (
            r#"f = { type = "array", items = { type = "integer" }, strict = false }"#,
            &["schemas.T.f.strict"],
        ),
        (
            r#"f = { type = "string", min_length = 5, max_length = 4 }"#,
            &["schemas.T.f.min_length"],
        ),
        (
            r#"f = { type = "string", min_length = 4, max_length = 4 }"#,
            &[],
        ),
        (
            r#"f = { type = "integer", min = 5, max = 1 }"#,
            &["schemas.T.f.min"],
        ),
        (
            r#"f = { type = "number", exclusive_min = 1, exclusive_max = 1 }"#,
            &["schemas.T.f.exclusive_min"],
        ),
        (
            r#"f = { type = "number", min = 1, exclusive_max = 1 }"#,
            &["schemas.T.f.min"],
        ),
        (
            r#"f = { type = "number", exclusive_min = 2, max = 1 }"#,
            &["schemas.T.f.exclusive_min"],
        ),
        (r#"f = { type = "number", min = 1, max = 1 }"#, &[]),
        (
            r#"f = { type = "number", min = nan }"#,
            &["schemas.T.f.min"],
        ),
        (
            r#"f = { type = "number", max = inf }"#,
            &["schemas.T.f.max"],
        ),
        (
            r#"f = { type = "integer", multiple_of = 0 }"#,
            &["schemas.T.f.multiple_of"],
        ),
        (
            r#"f = { type = "integer", multiple_of = -2 }"#,
            &["schemas.T.f.multiple_of"],
        ),
        (
            r#"f = { type = "array", items = { type = "integer" }, min_items = 3, max_items = 2 }"#,
            &["schemas.T.f.min_items"],
        ),
        (r#"f = { type = "array" }"#, &["schemas.T.f"]),
        (
            r#"f = { type = "array", items = { type = "string", optional = true } }"#,
            &["schemas.T.f.items.optional"],
        ),
        (
            r#"f = { type = "array", items = { type = "string", default = "a" } }"#,
            &["schemas.T.f.items.default"],
        ),
        (
            r#"f = { type = "string", pattern = "(" }"#,
            &["schemas.T.f.pattern"],
        ),
        (
            r#"f = { type = "string", pattern = "\\w{1000}\\w{1000}\\w{1000}" }"#,
            &["schemas.T.f.pattern"],
        ),
        (
            r#"f = { type = "string", format = "phone" }"#,
            &["schemas.T.f.format"],
        ),
        (r#"f = { type = "enum" }"#, &["schemas.T.f"]),
        (
            r#"f = { type = "enum", values = [] }"#,
            &["schemas.T.f.values"],
        ),
        (
            r#"f = { type = "enum", values = ["a", "b", "a"] }"#,
            &["schemas.T.f.values[2]"],
        ),
        (r#"f = { type = "object" }"#, &["schemas.T.f"]),
        (r#"f = { type = "object", strict = false }"#, &[]),
        (r#"f = { ref = "Nope" }"#, &["schemas.T.f.ref"]),
        (
            r#"f = { ref = "T2", type = "object" }"#,
            &["schemas.T.f.ref"],
        ),
        (
            r#"f = { ref = "T2", min_length = 1 }"#,
            &["schemas.T.f.min_length"],
        ),
        (r#"Title = { type = "string" }"#, &["schemas.T.Title"]),
        (r#"1a = { type = "string" }"#, &["schemas.T.1a"]),
        (r#""a-b" = { type = "string" }"#, &["schemas.T.a-b"]),
        (r#"id = { type = "string" }"#, &["schemas.T.id"]),
        (r#"owner = { type = "string" }"#, &["schemas.T.owner"]),
        (
            r#"created_at = { type = "string" }"#,
            &["schemas.T.created_at"],
        ),
        (
            r#"updated_at = { type = "string" }"#,
            &["schemas.T.updated_at"],
        ),
        (r#"_private = { type = "string" }"#, &[]),
        (
            r#"o = { type = "object", fields = { id = { type = "string" } } }"#,
            &[],
        ),
        (
            r#"o = { type = "object", fields = { Bad = { type = "string" } } }"#,
            &["schemas.T.o.fields.Bad"],
        ),
        (
            r#"o = { type = "object", fields = { zip = { type = "string", pattern = "[" } } }"#,
            &["schemas.T.o.fields.zip.pattern"],
        ),
        (
            r#"tags = { type = "array", items = { type = "string", min_length = 3, max_length = 2 } }"#,
            &["schemas.T.tags.items.min_length"],
        ),
        (
            r#"tags = { type = "array", items = { type = "array", items = { type = "nope" } } }"#,
            &["schemas.T.tags.items.items.type"],
        ),
        (
            r#"x = { type = "nope", items = { type = "string", format = "bad" } }"#,
            &["schemas.T.x.type", "schemas.T.x.items.format"],
        ),
        // Defaults must satisfy the field's own rules.
        (
            r#"f = { type = "integer", min = 1, max = 5, default = 9 }"#,
            &["schemas.T.f.default"],
        ),
        (
            r#"f = { type = "integer", default = "3" }"#,
            &["schemas.T.f.default"],
        ),
        (
            r#"f = { type = "integer", default = 1.5 }"#,
            &["schemas.T.f.default"],
        ),
        (
            r#"f = { type = "string", max_length = 2, default = "abc" }"#,
            &["schemas.T.f.default"],
        ),
        (
            r#"f = { type = "string", format = "email", default = "nobody" }"#,
            &["schemas.T.f.default"],
        ),
        (
            r#"f = { type = "enum", values = ["a"], default = "b" }"#,
            &["schemas.T.f.default"],
        ),
        (
            r#"f = { type = "array", items = { type = "string", max_length = 1 }, default = ["ab"] }"#,
            &["schemas.T.f.default"],
        ),
        (
            r#"f = { type = "object", fields = { a = { type = "integer" } }, default = { b = 1 } }"#,
            &["schemas.T.f.default"],
        ),
        (
            r#"f = { type = "number", default = nan }"#,
            &["schemas.T.f.default"],
        ),
        (
            r#"f = { ref = "T2", default = {} }"#,
            &["schemas.T.f.default"],
        ),
        (r#"f = { ref = "T2", default = { a = 1 } }"#, &[]),
        // With optional or nullable, a default is fine.
        (
            r#"f = { type = "integer", default = 1, optional = true, nullable = true }"#,
            &[],
        ),
        // A broken declaration does not also complain about its default.
        (
            r#"f = { type = "string", pattern = "(", default = "x" }"#,
            &["schemas.T.f.pattern"],
        ),
    ];
    for (decl, paths) in cases {
        let text = format!("[schemas.T]\n{decl}\n[schemas.T2]\na = {{ type = \"integer\" }}\n");
        assert_errors(&text, paths);
    }
}

#[test]
fn every_problem_is_reported_in_one_run() {
    let text = r#"
[schemas.A]
a = { type = "integer", min_length = 1 }
b = { type = "string", pattern = "(" }
c = { type = "array", items = { type = "string", max_length = 1, min_length = 2 } }
d = { ref = "Missing" }
id = { type = "string" }
[schemas.B]
e = { type = "enum", values = [] }
"#;
    assert_errors(
        text,
        &[
            "schemas.A.a.min_length",
            "schemas.A.b.pattern",
            "schemas.A.c.items.min_length",
            "schemas.A.d.ref",
            "schemas.A.id",
            "schemas.B.e.values",
        ],
    );
}

#[test]
fn reference_cycles_are_refused_and_named() {
    let text = r#"
[schemas.A]
b = { ref = "B" }
[schemas.B]
a = { ref = "A", optional = true }
"#;
    assert_eq!(
        error_paths(text),
        BTreeSet::from(["schemas.B.a.ref".to_owned()])
    );
    assert!(
        message_at(text, "schemas.B.a.ref").contains("A -> B -> A"),
        "{}",
        message_at(text, "schemas.B.a.ref")
    );

    let text = "[schemas.Tree]\nkids = { type = \"array\", items = { ref = \"Tree\" } }\n";
    assert!(message_at(text, "schemas.Tree.kids.items.ref").contains("Tree -> Tree"));

    let text = r#"
[schemas.A]
o = { type = "object", fields = { c = { ref = "C" } } }
[schemas.B]
a = { ref = "A" }
[schemas.C]
b = { ref = "B", nullable = true }
[schemas.D]
a = { ref = "A" }
"#;
    assert_eq!(error_paths(text).len(), 1, "{:?}", error_paths(text));
    let all = compile(text).1.errors;
    assert!(
        all.iter().any(|d| d.message.contains("A -> C -> B -> A")),
        "{all:?}"
    );
}

#[test]
fn diamond_references_are_not_cycles() {
    let text = r#"
[schemas.Address]
zip = { type = "string" }
[schemas.Person]
home = { ref = "Address" }
work = { ref = "Address", optional = true }
[schemas.Order]
buyer = { ref = "Person" }
ship_to = { ref = "Address" }
"#;
    assert_errors(text, &[]);
}

#[test]
fn schema_names_and_depth() {
    assert_errors(
        "[schemas.\"bad-name\"]\na = { type = \"string\" }\n",
        &["schemas.bad-name"],
    );
    assert_errors("[schemas.Good_Name2]\na = { type = \"string\" }\n", &[]);

    let mut decl = "{ type = \"integer\" }".to_owned();
    for _ in 0..40 {
        decl = format!("{{ type = \"array\", items = {decl} }}");
    }
    assert_errors(&format!("[schemas.T]\nf = {decl}\n"), &["schemas.T"]);

    let (_, diags) = compile("[schemas.Empty]\n");
    assert!(diags.errors.is_empty());
    assert_eq!(
        diags.warnings.first().map(|d| d.path.as_str()),
        Some("schemas.Empty")
    );
}

#[test]
fn messages_say_what_to_do() {
    let text =
        "[schemas.T]\nf = { type = \"strng\" }\ng = { type = \"string\", format = \"phone\" }\n";
    assert!(message_at(text, "schemas.T.f.type").contains("string, integer, number"));
    assert!(message_at(text, "schemas.T.g.format").contains("date-time"));
    let text = "[schemas.T]\nf = { type = \"integer\", min = 1, max = 5, default = 9 }\n";
    assert!(message_at(text, "schemas.T.f.default").contains("at most 5"));
}
