//! Tests of the validator: per keyword, the reference `Note` schema, config errors, and a
//! bounded random-input property test.

mod config_errors;
mod keywords;
mod note_table;
mod openapi;
mod random;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use super::{Schema, Schemas, Violation, compile_schemas};
use crate::config::RawField;
use crate::plan::diag::Diagnostics;

/// The notes fixture shared with the integration tests and benches; its `[schemas.Note]` is
/// the reference `nestflux.toml`'s, verbatim (`tests/it/fixtures.rs` checks that).
pub(super) const NOTE_TOML: &str = include_str!("../../../tests/fixtures/notes.toml");

#[derive(Deserialize)]
struct File {
    schemas: BTreeMap<String, BTreeMap<String, RawField>>,
}

/// Compiles the `[schemas.*]` tables of a TOML text.
pub(super) fn compile(text: &str) -> (Schemas, Diagnostics) {
    let file: File = match toml::from_str(text) {
        Ok(file) => file,
        Err(e) => panic!("test TOML does not parse: {e}\n{text}"),
    };
    let mut diags = Diagnostics::default();
    let schemas = compile_schemas(&file.schemas, &mut diags);
    (schemas, diags)
}

/// Compiles a TOML text that must be free of errors, and returns the schema `name`.
pub(super) fn schema(text: &str, name: &str) -> Arc<Schema> {
    let (schemas, diags) = compile(text);
    assert!(
        diags.errors.is_empty(),
        "unexpected errors: {:?}",
        diags.errors
    );
    schemas
        .get(name)
        .cloned()
        .unwrap_or_else(|| panic!("no schema {name}"))
}

pub(super) fn note() -> Arc<Schema> {
    schema(NOTE_TOML, "Note")
}

/// The (pointer, code) pairs of a list of violations.
pub(super) fn pairs(violations: &[Violation]) -> BTreeSet<(String, &'static str)> {
    violations
        .iter()
        .map(|v| (v.pointer.clone(), v.code))
        .collect()
}

/// The expected (pointer, code) pairs, from literals.
pub(super) fn expect(list: &[(&str, &'static str)]) -> BTreeSet<(String, &'static str)> {
    list.iter().map(|(p, c)| ((*p).to_owned(), *c)).collect()
}

/// Whether the pointers of `value`'s violations all lead into the document (or, for
/// `required`, to a missing member of an object that exists).
pub(super) fn pointers_resolve(document: &Value, violations: &[Violation]) -> bool {
    violations.iter().all(|v| {
        if v.code == "required" {
            let parent = v.pointer.rsplit_once('/').map_or("", |(parent, _)| parent);
            document.pointer(parent).is_some_and(Value::is_object)
        } else {
            document.pointer(&v.pointer).is_some()
        }
    })
}
