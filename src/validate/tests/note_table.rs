//! The reference `Note` schema against a table of documents: for each, the exact set of
//! (pointer, code) pairs, or the normalised document with defaults applied.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::{expect, note, pairs, pointers_resolve};
use crate::validate::Mode;

type Expected = Result<Value, BTreeSet<(String, &'static str)>>;

struct Case {
    mode: Mode,
    doc: Value,
    expected: Expected,
}

/// A `Create` document whose normalised form is `doc` plus the Note defaults.
fn ok(doc: Value) -> Case {
    let mut out = doc.clone();
    if let Some(map) = out.as_object_mut() {
        map.entry("body").or_insert(json!(""));
        map.entry("tags").or_insert(json!([]));
        map.entry("priority").or_insert(json!(3));
    }
    Case {
        mode: Mode::Create,
        doc,
        expected: Ok(out),
    }
}

/// A `Create` document normalised to exactly `out`.
fn ok_as(doc: Value, out: Value) -> Case {
    Case {
        mode: Mode::Create,
        doc,
        expected: Ok(out),
    }
}

fn err(doc: Value, list: &[(&str, &'static str)]) -> Case {
    Case {
        mode: Mode::Create,
        doc,
        expected: Err(expect(list)),
    }
}

fn patch_ok(doc: Value) -> Case {
    Case {
        mode: Mode::Patch,
        expected: Ok(doc.clone()),
        doc,
    }
}

fn patch_err(doc: Value, list: &[(&str, &'static str)]) -> Case {
    Case {
        mode: Mode::Patch,
        doc,
        expected: Err(expect(list)),
    }
}

fn s(n: usize) -> String {
    "x".repeat(n)
}

fn cases() -> Vec<Case> {
    let mut c = vec![
        // The smallest valid note gets every default.
        ok_as(
            json!({"title": "a"}),
            json!({"title": "a", "body": "", "tags": [], "priority": 3}),
        ),
        ok(json!({"title": "Groceries", "body": "milk", "tags": ["home"], "priority": 5})),
        ok(json!({"title": "t", "due": "2025-01-31T09:30:00Z"})),
        ok(json!({"title": "t", "due": "2025-01-31T09:30:00.5+05:30"})),
        ok(json!({"title": "t", "due": "2024-02-29t23:59:59z"})),
        ok(json!({"title": "t", "secret": ""})),
        ok(json!({"title": "t", "secret": s(2000)})),
        ok(json!({"title": "  spaces kept  "})),
        ok(json!({"title": "é".repeat(200)})),
        ok(json!({"title": "🦀".repeat(200)})),
        ok(json!({"title": "t", "body": s(10_000)})),
        ok(json!({"title": "t", "tags": [s(32)]})),
        ok(json!({"title": "t", "tags": ["a", "a"]})),
        ok(json!({"title": "t", "tags": ["", "b"]})),
        ok_as(
            json!({"title": "t", "priority": 4.0}),
            json!({"title": "t", "body": "", "tags": [], "priority": 4}),
        ),
        ok(
            json!({"title": "t", "body": "", "tags": [], "priority": 3, "due": "2030-12-31T00:00:00-12:00", "secret": "s"}),
        ),
        // Missing or null required fields.
        err(json!({}), &[("/title", "required")]),
        err(json!({"body": "b"}), &[("/title", "required")]),
        err(json!({"title": null}), &[("/title", "not_nullable")]),
        err(
            json!({"title": "t", "body": null}),
            &[("/body", "not_nullable")],
        ),
        err(
            json!({"title": "t", "tags": null}),
            &[("/tags", "not_nullable")],
        ),
        err(
            json!({"title": "t", "priority": null}),
            &[("/priority", "not_nullable")],
        ),
        err(
            json!({"title": "t", "due": null}),
            &[("/due", "not_nullable")],
        ),
        err(
            json!({"title": "t", "secret": null}),
            &[("/secret", "not_nullable")],
        ),
        // Wrong types.
        err(json!({"title": 5}), &[("/title", "type")]),
        err(json!({"title": true}), &[("/title", "type")]),
        err(json!({"title": ["a"]}), &[("/title", "type")]),
        err(json!({"title": {"a": 1}}), &[("/title", "type")]),
        err(json!({"title": "t", "body": 1}), &[("/body", "type")]),
        err(json!({"title": "t", "tags": "a"}), &[("/tags", "type")]),
        err(
            json!({"title": "t", "tags": {"0": "a"}}),
            &[("/tags", "type")],
        ),
        err(json!({"title": "t", "tags": [1]}), &[("/tags/0", "type")]),
        err(
            json!({"title": "t", "tags": ["a", null]}),
            &[("/tags/1", "not_nullable")],
        ),
        err(
            json!({"title": "t", "tags": [["a"]]}),
            &[("/tags/0", "type")],
        ),
        err(
            json!({"title": "t", "priority": "3"}),
            &[("/priority", "type")],
        ),
        err(
            json!({"title": "t", "priority": 3.5}),
            &[("/priority", "type")],
        ),
        err(
            json!({"title": "t", "priority": true}),
            &[("/priority", "type")],
        ),
        err(
            json!({"title": "t", "due": 1_700_000_000}),
            &[("/due", "type")],
        ),
        err(
            json!({"title": "t", "secret": ["s"]}),
            &[("/secret", "type")],
        ),
        // Lengths.
        err(json!({"title": ""}), &[("/title", "too_short")]),
        err(json!({"title": s(201)}), &[("/title", "too_long")]),
        err(json!({"title": "é".repeat(201)}), &[("/title", "too_long")]),
        err(
            json!({"title": "t", "body": s(10_001)}),
            &[("/body", "too_long")],
        ),
        err(
            json!({"title": "t", "secret": s(2001)}),
            &[("/secret", "too_long")],
        ),
        err(
            json!({"title": "t", "tags": [s(33)]}),
            &[("/tags/0", "too_long")],
        ),
        err(
            json!({"title": "t", "tags": ["ok", s(33), "ok", s(40)]}),
            &[("/tags/1", "too_long"), ("/tags/3", "too_long")],
        ),
        // Bounds.
        err(
            json!({"title": "t", "priority": 0}),
            &[("/priority", "minimum")],
        ),
        err(
            json!({"title": "t", "priority": 6}),
            &[("/priority", "maximum")],
        ),
        err(
            json!({"title": "t", "priority": -1}),
            &[("/priority", "minimum")],
        ),
        err(
            json!({"title": "t", "priority": 1e3}),
            &[("/priority", "maximum")],
        ),
        err(
            json!({"title": "t", "priority": 1e300}),
            &[("/priority", "maximum")],
        ),
        err(
            json!({"title": "t", "priority": i64::MAX}),
            &[("/priority", "maximum")],
        ),
        err(
            json!({"title": "t", "priority": u64::MAX}),
            &[("/priority", "maximum")],
        ),
        err(
            json!({"title": "t", "priority": i64::MIN}),
            &[("/priority", "minimum")],
        ),
        // Formats.
        err(
            json!({"title": "t", "due": "2025-01-31"}),
            &[("/due", "format")],
        ),
        err(
            json!({"title": "t", "due": "2025-01-31T09:30:00"}),
            &[("/due", "format")],
        ),
        err(
            json!({"title": "t", "due": "2025-01-31 09:30:00Z"}),
            &[("/due", "format")],
        ),
        err(
            json!({"title": "t", "due": "2025-02-30T09:30:00Z"}),
            &[("/due", "format")],
        ),
        err(json!({"title": "t", "due": ""}), &[("/due", "format")]),
        err(
            json!({"title": "t", "due": "tomorrow"}),
            &[("/due", "format")],
        ),
        // Unknown fields, including the ones the server sets.
        err(
            json!({"title": "t", "id": "x"}),
            &[("/id", "unknown_field")],
        ),
        err(
            json!({"title": "t", "owner": "alice"}),
            &[("/owner", "unknown_field")],
        ),
        err(
            json!({"title": "t", "created_at": "2025-01-31T09:30:00Z"}),
            &[("/created_at", "unknown_field")],
        ),
        err(
            json!({"title": "t", "updated_at": 1}),
            &[("/updated_at", "unknown_field")],
        ),
        err(
            json!({"title": "t", "Title": "t"}),
            &[("/Title", "unknown_field")],
        ),
        err(
            json!({"title": "t", "a/b": 1, "c~d": 2}),
            &[("/a~1b", "unknown_field"), ("/c~0d", "unknown_field")],
        ),
        err(json!({"title": "t", "": 1}), &[("/", "unknown_field")]),
        // Not an object at all.
        err(json!(null), &[("", "type")]),
        err(json!([]), &[("", "type")]),
        err(json!([{"title": "t"}]), &[("", "type")]),
        err(json!("title"), &[("", "type")]),
        err(json!(42), &[("", "type")]),
        // Everything at once.
        err(
            json!({"title": "", "priority": 9, "tags": [1, s(40)], "due": "x", "extra": 1}),
            &[
                ("/title", "too_short"),
                ("/priority", "maximum"),
                ("/tags/0", "type"),
                ("/tags/1", "too_long"),
                ("/due", "format"),
                ("/extra", "unknown_field"),
            ],
        ),
        err(
            json!({"body": null, "tags": (0..12).map(|i| json!(i)).collect::<Vec<_>>()}),
            &[
                ("/title", "required"),
                ("/body", "not_nullable"),
                ("/tags", "too_many_items"),
                ("/tags/0", "type"),
                ("/tags/1", "type"),
                ("/tags/2", "type"),
                ("/tags/3", "type"),
                ("/tags/4", "type"),
                ("/tags/5", "type"),
                ("/tags/6", "type"),
                ("/tags/7", "type"),
                ("/tags/8", "type"),
                ("/tags/9", "type"),
                ("/tags/10", "type"),
                ("/tags/11", "type"),
            ],
        ),
        // Patch: nothing required, no defaults, null clears optional fields only.
        patch_ok(json!({})),
        patch_ok(json!({"title": "new"})),
        patch_ok(json!({"priority": 1})),
        patch_ok(json!({"tags": []})),
        patch_ok(json!({"body": ""})),
        patch_ok(json!({"due": null})),
        patch_ok(json!({"secret": null})),
        patch_ok(json!({"due": null, "secret": null, "title": "t"})),
        patch_ok(json!({"due": "2025-01-31T09:30:00Z"})),
        Case {
            mode: Mode::Patch,
            doc: json!({"priority": 2.0}),
            expected: Ok(json!({"priority": 2})),
        },
        patch_err(json!({"title": null}), &[("/title", "not_nullable")]),
        patch_err(json!({"body": null}), &[("/body", "not_nullable")]),
        patch_err(json!({"tags": null}), &[("/tags", "not_nullable")]),
        patch_err(json!({"priority": null}), &[("/priority", "not_nullable")]),
        patch_err(json!({"title": ""}), &[("/title", "too_short")]),
        patch_err(json!({"priority": 0}), &[("/priority", "minimum")]),
        patch_err(json!({"tags": [null]}), &[("/tags/0", "not_nullable")]),
        patch_err(json!({"due": "2025"}), &[("/due", "format")]),
        patch_err(json!({"id": "x"}), &[("/id", "unknown_field")]),
        patch_err(json!([]), &[("", "type")]),
        patch_err(json!(null), &[("", "type")]),
    ];

    // Every priority from -2 to 8.
    for p in -2..=8 {
        c.push(match p {
            1..=5 => ok(json!({"title": "t", "priority": p})),
            ..=0 => err(
                json!({"title": "t", "priority": p}),
                &[("/priority", "minimum")],
            ),
            _ => err(
                json!({"title": "t", "priority": p}),
                &[("/priority", "maximum")],
            ),
        });
    }
    // Title lengths around both limits.
    for n in [1, 2, 100, 199, 200] {
        c.push(ok(json!({"title": s(n)})));
    }
    for n in [201, 202, 1000] {
        c.push(err(json!({"title": s(n)}), &[("/title", "too_long")]));
    }
    // Tag counts around max_items.
    for n in 0..=12 {
        let tags: Vec<Value> = (0..n).map(|i| json!(format!("t{i}"))).collect();
        c.push(if n <= 10 {
            ok(json!({"title": "t", "tags": tags}))
        } else {
            err(
                json!({"title": "t", "tags": tags}),
                &[("/tags", "too_many_items")],
            )
        });
    }
    c
}

#[test]
fn note_documents() {
    let note = note();
    let cases = cases();
    assert!(cases.len() >= 100, "only {} cases", cases.len());
    for (i, case) in cases.iter().enumerate() {
        let got = note.validate(&case.doc, case.mode);
        if let Err(violations) = &got {
            assert!(
                pointers_resolve(&case.doc, violations),
                "case {i}: {violations:?}"
            );
        }
        let got = got.map_err(|v| pairs(&v));
        assert_eq!(
            got, case.expected,
            "case {i} ({:?}): {}",
            case.mode, case.doc
        );
        // What is accepted once is accepted again, unchanged.
        if let Ok(out) = &got {
            assert_eq!(
                note.validate(out, case.mode).as_ref(),
                Ok(out),
                "case {i} twice"
            );
        }
    }
}
